//===- Tile.cpp - attn.attention (L1) -> the tiled program (L2) -----------===//
//
// The function holding an attn.attention becomes a kernel over buffers:
//
//   func @f(q, k, v, <inputs>, o, [lse], q_offset, kv_offset)   // memrefs, i64
//     attn.grid B, Hq, ceil(Sq / BM) {                          // (b, h, qb)
//       q tile <- q[b, h, qb*BM ...]  (rotated when q_rope)
//       m = -inf, l = 0, acc = 0
//       attn.for_kv_blocks (kb, cls) ranges {kv_ranges} classes {tile_class}:
//         (the schedule: each key range [lo, hi) of kv_ranges(q block) in closed
//          form, blocks [lo / BN, ceil(hi / BN)) that an earlier range did not
//          have and whose tile_class is not EMPTY)
//           k, v tiles <- k[b, h / G, kb*BN ...], v[...]
//           s = scale * q k^T
//           FULL tile and whole: s = score(s)      (no mask code)
//           otherwise:           s = mask ? score(s) : -inf
//           online softmax (m, l, alpha), acc = alpha acc + p v
//       o <- acc / l, lse <- m + log l
//
// A per-sequence kernel (ragged or paged storage, or sequence-lengths) takes the
// sequence arguments after the offsets; each grid item then works in its
// sequence's logical indices (lengths, q_offset_b, positions) and only the tile
// loads and stores see where the rows lie (a row base for ragged buffers, the page
// table for paged ones). Items past their sequence's last query block do nothing.
//
// With a block list (kv_list_*) whose blocks the tiles match, the key blocks are the
// listed ones instead of the ranges. Back ends lower attn.for_kv_blocks through
// passes/KvSchedule.h, the one implementation of the schedule.
//
//===----------------------------------------------------------------------===//
#include "passes/Passes.h"
#include "passes/TileCommon.h"

#include "dialect/AttnOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"

#include <limits>

namespace mlir::attn {
#define GEN_PASS_DEF_ATTNTILE
#include "passes/Passes.h.inc"
} // namespace mlir::attn

using namespace mlir;
using namespace mlir::attn;

namespace {

MemRefType stridedType(RankedTensorType t) {
  MLIRContext *ctx = t.getContext();
  int64_t dyn = ShapedType::kDynamic;
  SmallVector<int64_t> strides(t.getRank(), dyn);
  strides.back() = 1;
  return MemRefType::get(t.getShape(), t.getElementType(),
                         StridedLayoutAttr::get(ctx, dyn, strides));
}

MemRefType contiguousType(RankedTensorType t) {
  return MemRefType::get(t.getShape(), t.getElementType());
}

/// The physical buffer of a logical [B, H, S, D] tensor under `storage`: ragged
/// [total, H, D], paged [pages, page_size, H, D], padded as it is.
MemRefType storedType(RankedTensorType t, Storage storage) {
  MLIRContext *ctx = t.getContext();
  int64_t dyn = ShapedType::kDynamic;
  SmallVector<int64_t> shape;
  if (storage == Storage::ragged)
    shape = {dyn, t.getDimSize(1), t.getDimSize(3)};
  else if (storage == Storage::paged)
    shape = {dyn, dyn, t.getDimSize(1), t.getDimSize(3)};
  else
    return stridedType(t);
  SmallVector<int64_t> strides(shape.size(), dyn);
  strides.back() = 1;
  return MemRefType::get(shape, t.getElementType(), StridedLayoutAttr::get(ctx, dyn, strides));
}

class KernelBuilder {
public:
  KernelBuilder(AttentionOp op, int64_t bm, int64_t bn, bool lengths)
      : op(op), bm(bm), bn(bn), b(op.getContext()), loc(op.getLoc()),
        qStorage(op.getQStorage().value_or(Storage::padded)),
        kvStorage(op.getKvStorage().value_or(Storage::padded)),
        perSequence(lengths || qStorage != Storage::padded || kvStorage != Storage::padded) {}

  LogicalResult build(func::FuncOp oldFunc);

private:
  Value idx(int64_t v) { return arith::ConstantIndexOp::create(b, loc, v); }
  Value i64(int64_t v) { return arith::ConstantIntOp::create(b, loc, v, 64); }
  Value toI64(Value v) { return arith::IndexCastOp::create(b, loc, b.getI64Type(), v); }
  Value toIndex(Value v) { return arith::IndexCastOp::create(b, loc, b.getIndexType(), v); }
  Value tile(ArrayRef<int64_t> shape) {
    return memref::AllocaOp::create(b, loc, MemRefType::get(shape, b.getF32Type()));
  }

  void buildGridBody(Block *body);
  void readSequence();
  void viewInputs();
  Value viewRows(Value buffer, Storage storage);
  void processTile(Value kb, Value cls);
  void schedule();

  AttentionOp op;
  int64_t bm, bn;
  OpBuilder b;
  Location loc;
  Storage qStorage, kvStorage;
  bool perSequence;
  // The sequence arguments (per-sequence kernels) and the row views of ragged and
  // paged buffers as [1, H, rows, D].
  Value qLens, cuQ, kvLens, cuKv, pageTable, offsetFromLengths, maxSeqQ;
  Value qView, kView, vView, oView, lseView;
  // Per grid item: where its sequence's rows are, and its q_offset.
  Value qBatch, kvBatch, qRow0, kvRow0, seqQOffset, pageSize;
  IRMapping inputs; // L1 tensors -> kernel buffers

  // Kernel arguments and per-grid-item values.
  Value q, k, v, o, lse, qOffset, kvOffset;
  SmallVector<Value> inputBuffers;
  Value seqQ, seqKv, seqQ64, seqKv64;
  Value bIdx, hIdx, hkIdx, b64, h64, qLo, qLo64, qHi64, qRows;
  Value qt, kt, vt, s, m, l, alpha, acc;
};

LogicalResult KernelBuilder::build(func::FuncOp oldFunc) {
  auto qType = cast<RankedTensorType>(op.getQ().getType());
  auto kType = cast<RankedTensorType>(op.getK().getType());
  auto vType = cast<RankedTensorType>(op.getV().getType());
  auto oType = cast<RankedTensorType>(op.getO().getType());
  SmallVector<Type> argTypes{storedType(qType, qStorage), storedType(kType, kvStorage),
                             storedType(vType, kvStorage)};
  for (Value in : op.getInputs())
    argTypes.push_back(contiguousType(cast<RankedTensorType>(in.getType())));
  argTypes.push_back(storedType(oType, qStorage));
  if (Value l1Lse = op.getLse()) {
    auto lseType = cast<RankedTensorType>(l1Lse.getType());
    argTypes.push_back(qStorage == Storage::ragged
                           ? MemRefType::get({ShapedType::kDynamic, lseType.getDimSize(1)},
                                             lseType.getElementType())
                           : contiguousType(lseType));
  }
  argTypes.push_back(b.getI64Type());
  argTypes.push_back(b.getI64Type());
  auto lensType = MemRefType::get({ShapedType::kDynamic}, b.getI32Type());
  if (perSequence) {
    argTypes.push_back(lensType); // q_lens or cu_seqlens_q
    if (kvStorage == Storage::paged)
      argTypes.push_back(
          MemRefType::get({ShapedType::kDynamic, ShapedType::kDynamic}, b.getI32Type()));
    argTypes.push_back(lensType); // kv_lens or cu_seqlens_kv
    argTypes.push_back(b.getI64Type());
    argTypes.push_back(b.getI64Type());
  }

  b.setInsertionPoint(oldFunc);
  auto func = func::FuncOp::create(b, oldFunc.getLoc(), oldFunc.getName(),
                                   b.getFunctionType(argTypes, {}));
  func->setAttr("attn.kernel", b.getUnitAttr());
  func->setAttr("attn.block", b.getDenseI64ArrayAttr({bm, bn}));
  // Back ends name the inputs in their ABI (the NVIDIA kernel's "input:<name>").
  func->setAttr("attn.input_names", op.getInputNamesAttr());
  if (perSequence) {
    // Back ends that build their own addressing (the NVIDIA kernels) read how the
    // buffers hold the batch, and which input dims are per-sequence, off the kernel.
    func->setAttr("attn.sequences", b.getUnitAttr());
    func->setAttr("attn.q_storage", StorageAttr::get(b.getContext(), qStorage));
    func->setAttr("attn.kv_storage", StorageAttr::get(b.getContext(), kvStorage));
    func->setAttr("attn.input_dims", op.getInputDimsAttr());
  }
  Block *entry = func.addEntryBlock();
  b.setInsertionPointToStart(entry);
  unsigned a = 0;
  q = entry->getArgument(a++);
  k = entry->getArgument(a++);
  v = entry->getArgument(a++);
  for (Value in : op.getInputs()) {
    inputBuffers.push_back(entry->getArgument(a));
    inputs.map(in, entry->getArgument(a++));
  }
  o = entry->getArgument(a++);
  if (op.getLse())
    lse = entry->getArgument(a++);
  qOffset = entry->getArgument(a++);
  kvOffset = entry->getArgument(a++);
  if (perSequence) {
    (qStorage == Storage::ragged ? cuQ : qLens) = entry->getArgument(a++);
    if (kvStorage == Storage::paged)
      pageTable = entry->getArgument(a++);
    (kvStorage == Storage::ragged ? cuKv : kvLens) = entry->getArgument(a++);
    offsetFromLengths = entry->getArgument(a++);
    maxSeqQ = entry->getArgument(a++);
  }

  Value batch, qBlocks;
  if (!perSequence) {
    batch = memref::DimOp::create(b, loc, q, 0);
    seqQ = memref::DimOp::create(b, loc, q, 2);
    seqKv = memref::DimOp::create(b, loc, k, 2);
    seqQ64 = toI64(seqQ);
    seqKv64 = toI64(seqKv);
    qBlocks = arith::CeilDivUIOp::create(b, loc, seqQ, idx(bm));
  } else {
    // The batch: cu_seqlens has B + 1 entries, a page table B rows, a padded buffer B.
    batch = qStorage == Storage::ragged
                ? arith::SubIOp::create(b, loc, memref::DimOp::create(b, loc, cuQ, 0), idx(1))
                      .getResult()
                : memref::DimOp::create(b, loc, q, 0).getResult();
    qBlocks = arith::CeilDivUIOp::create(b, loc, toIndex(maxSeqQ), idx(bm));
    qView = viewRows(q, qStorage);
    oView = viewRows(o, qStorage);
    kView = viewRows(k, kvStorage);
    vView = viewRows(v, kvStorage);
    if (lse)
      lseView = viewRows(lse, qStorage);
  }
  auto grid = GridOp::create(b, loc, batch, idx(op.getHeadsQ()), qBlocks, bm, bn);
  Block *body = new Block();
  grid.getBody().push_back(body);
  for (int i = 0; i < 3; ++i)
    body->addArgument(b.getIndexType(), loc);
  b.setInsertionPointToStart(body);
  buildGridBody(body);
  YieldOp::create(b, loc);
  b.setInsertionPointToEnd(entry);
  func::ReturnOp::create(b, loc);
  oldFunc.erase();
  return success();
}

/// A ragged [total, H, D] or paged [pages, page_size, H, D] buffer as the rows of one
/// [1, H, rows, D] tensor (lse: [total, H] as [1, H, total]), so that the tile ops
/// address sequence rows by a row index. Pages must lie page_size rows apart (the
/// caller's contiguity rule for paged caches). Padded buffers are returned as they are.
Value KernelBuilder::viewRows(Value buffer, Storage storage) {
  if (storage == Storage::padded)
    return buffer;
  auto type = cast<MemRefType>(buffer.getType());
  auto meta = memref::ExtractStridedMetadataOp::create(b, loc, buffer);
  auto sizes = meta.getSizes();
  auto strides = meta.getStrides();
  OpFoldResult one = b.getIndexAttr(1);
  SmallVector<OpFoldResult> newSizes, newStrides;
  SmallVector<int64_t> shape;
  int64_t dyn = ShapedType::kDynamic;
  // Head counts and head dims are static in the type: static sizes in the view too.
  auto fixed = [&](int64_t n) -> OpFoldResult { return b.getIndexAttr(n); };
  if (type.getRank() == 2) { // lse [total, H]
    newSizes = {one, fixed(type.getDimSize(1)), sizes[0]};
    newStrides = {strides[0], strides[1], strides[0]};
    shape = {1, type.getDimSize(1), dyn};
  } else if (storage == Storage::ragged) { // [total, H, D]
    newSizes = {one, fixed(type.getDimSize(1)), sizes[0], fixed(type.getDimSize(2))};
    newStrides = {strides[0], strides[1], strides[0], one};
    shape = {1, type.getDimSize(1), dyn, type.getDimSize(2)};
  } else { // paged [pages, page_size, H, D]: rows pages x page_size
    Value rows = arith::MulIOp::create(b, loc, sizes[0], sizes[1]);
    newSizes = {one, fixed(type.getDimSize(2)), rows, fixed(type.getDimSize(3))};
    newStrides = {strides[1], strides[2], strides[1], one};
    shape = {1, type.getDimSize(2), dyn, type.getDimSize(3)};
  }
  SmallVector<int64_t> layout(shape.size(), dyn);
  if (type.getRank() != 2)
    layout.back() = 1;
  auto viewType = MemRefType::get(shape, type.getElementType(),
                                  StridedLayoutAttr::get(b.getContext(), dyn, layout));
  return memref::ReinterpretCastOp::create(b, loc, viewType, meta.getBaseBuffer(),
                                           meta.getConstifiedMixedOffset(), newSizes,
                                           newStrides);
}

/// The inputs as the item's sequence sees them: a dim declared Sq or Skv holds the
/// batch's longest length, and the sequence's own is its extent (so that a read past
/// it is out of bounds, masked, as for the sequence run alone). The regions and the
/// block list read the views.
void KernelBuilder::viewInputs() {
  auto dims = op.getInputDims();
  for (auto [n, in] : llvm::enumerate(op.getInputs())) {
    auto decl = dims.empty() ? ArrayAttr() : dyn_cast<ArrayAttr>(dims[n]);
    if (!decl)
      continue;
    auto type = cast<MemRefType>(inputBuffers[n].getType());
    SmallVector<OpFoldResult> sizes;
    bool changed = false;
    auto meta = memref::ExtractStridedMetadataOp::create(b, loc, inputBuffers[n]);
    for (int64_t r = 0; r < type.getRank(); ++r) {
      auto sym = r < int64_t(decl.size()) ? dyn_cast<StringAttr>(decl[r]) : StringAttr();
      if (sym && sym.getValue() == "Sq") {
        sizes.push_back(seqQ);
        changed = true;
      } else if (sym && sym.getValue() == "Skv") {
        sizes.push_back(seqKv);
        changed = true;
      } else if (!type.isDynamicDim(r)) {
        sizes.push_back(b.getIndexAttr(type.getDimSize(r)));
      } else {
        sizes.push_back(meta.getSizes()[r]);
      }
    }
    if (!changed) {
      meta.erase();
      continue;
    }
    SmallVector<int64_t> shape(type.getShape());
    for (int64_t r = 0; r < type.getRank(); ++r)
      if (auto sym = r < int64_t(decl.size()) ? dyn_cast<StringAttr>(decl[r]) : StringAttr())
        if (sym.getValue() == "Sq" || sym.getValue() == "Skv")
          shape[r] = ShapedType::kDynamic;
    SmallVector<int64_t> layout(type.getRank(), ShapedType::kDynamic);
    auto viewType = MemRefType::get(shape, type.getElementType(),
                                    StridedLayoutAttr::get(b.getContext(), ShapedType::kDynamic, layout));
    SmallVector<OpFoldResult> strides(meta.getStrides().begin(), meta.getStrides().end());
    Value view = memref::ReinterpretCastOp::create(b, loc, viewType, meta.getBaseBuffer(),
                                                   meta.getConstifiedMixedOffset(), sizes, strides);
    inputBuffers[n] = view;
    inputs.map(in, view);
  }
}

/// The grid item's sequence: its lengths (seqQ, seqKv), where its rows are (the
/// batch index and row base of each buffer) and its q_offset. Lengths are clamped to
/// what the buffers hold (the callers check them; a kernel never reads past them).
void KernelBuilder::readSequence() {
  auto loadIndex = [&](Value lens, Value at) -> Value {
    Value x = memref::LoadOp::create(b, loc, lens, ValueRange{at});
    return arith::MaxSIOp::create(b, loc, toIndex(x), idx(0));
  };
  // An optional length: lens[b] when lens is not empty, else `full`, at most `full`.
  auto optionalLength = [&](Value lens, Value full) -> Value {
    Value given = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ne,
                                        memref::DimOp::create(b, loc, lens, 0), idx(0));
    auto ifGiven = scf::IfOp::create(b, loc, b.getIndexType(), given, /*withElse=*/true);
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(ifGiven.thenBlock());
    scf::YieldOp::create(b, loc, arith::MinSIOp::create(b, loc, loadIndex(lens, bIdx), full).getResult());
    b.setInsertionPointToStart(ifGiven.elseBlock());
    scf::YieldOp::create(b, loc, full);
    return ifGiven.getResult(0);
  };
  Value next = arith::AddIOp::create(b, loc, bIdx, idx(1));
  if (qStorage == Storage::ragged) {
    qRow0 = loadIndex(cuQ, bIdx);
    Value end = arith::MinSIOp::create(b, loc, loadIndex(cuQ, next),
                                       memref::DimOp::create(b, loc, q, 0));
    seqQ = arith::MaxSIOp::create(b, loc, arith::SubIOp::create(b, loc, end, qRow0), idx(0));
    qBatch = idx(0);
  } else {
    qRow0 = idx(0);
    seqQ = optionalLength(qLens, memref::DimOp::create(b, loc, q, 2));
    qBatch = bIdx;
  }
  if (kvStorage == Storage::ragged) {
    kvRow0 = loadIndex(cuKv, bIdx);
    Value end = arith::MinSIOp::create(b, loc, loadIndex(cuKv, next),
                                       memref::DimOp::create(b, loc, k, 0));
    seqKv = arith::MaxSIOp::create(b, loc, arith::SubIOp::create(b, loc, end, kvRow0), idx(0));
    kvBatch = idx(0);
  } else if (kvStorage == Storage::paged) {
    kvRow0 = idx(0);
    kvBatch = idx(0);
    pageSize = memref::DimOp::create(b, loc, k, 1);
    Value pages = memref::DimOp::create(b, loc, pageTable, 1);
    Value capacity = arith::MulIOp::create(b, loc, pages, pageSize);
    seqKv = arith::MinSIOp::create(b, loc, loadIndex(kvLens, bIdx), capacity);
  } else {
    kvRow0 = idx(0);
    kvBatch = bIdx;
    seqKv = optionalLength(kvLens, memref::DimOp::create(b, loc, k, 2));
  }
  seqQ64 = toI64(seqQ);
  seqKv64 = toI64(seqKv);
  Value fromLengths = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ne, offsetFromLengths, i64(0));
  Value own = arith::AddIOp::create(b, loc, qOffset, arith::SubIOp::create(b, loc, seqKv64, seqQ64));
  seqQOffset = arith::SelectOp::create(b, loc, fromLengths, own, qOffset);
}

void KernelBuilder::buildGridBody(Block *body) {
  bIdx = body->getArgument(0);
  hIdx = body->getArgument(1);
  Value qb = body->getArgument(2);
  int64_t group = op.getHeadsQ() / op.getHeadsKv();
  hkIdx = arith::DivUIOp::create(b, loc, hIdx, idx(group));
  b64 = toI64(bIdx);
  h64 = toI64(hIdx);
  qLo = arith::MulIOp::create(b, loc, qb, idx(bm));
  std::optional<OpBuilder::InsertionGuard> inSequence;
  if (perSequence) {
    readSequence();
    viewInputs();
    // The batch's longest sequence sets the grid; a shorter one's extra items stop.
    Value inside = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, qLo, seqQ);
    auto ifInside = scf::IfOp::create(b, loc, inside, /*withElseRegion=*/false);
    inSequence.emplace(b);
    b.setInsertionPointToStart(ifInside.thenBlock());
  } else {
    qBatch = kvBatch = bIdx;
    qRow0 = kvRow0 = idx(0);
    seqQOffset = qOffset;
    qView = q;
    kView = k;
    vView = v;
    oView = o;
    lseView = lse;
  }
  qRows = arith::MinUIOp::create(b, loc, idx(bm), arith::SubIOp::create(b, loc, seqQ, qLo));
  qLo64 = toI64(qLo);
  qHi64 = toI64(arith::AddIOp::create(b, loc, qLo, qRows));
  Value qRow = arith::AddIOp::create(b, loc, qRow0, qLo);

  int64_t d = op.getHeadDim(), dv = op.getHeadDimV();
  qt = tile({bm, d});
  kt = tile({bn, d});
  vt = tile({bn, dv});
  s = tile({bm, bn});
  acc = tile({bm, dv});
  // RoPE rotates row x of the buffer at position x + (q_offset_b - row base).
  Value qPositions;
  if (op.getQRope())
    qPositions = perSequence ? arith::SubIOp::create(b, loc, seqQOffset, toI64(qRow0)).getResult()
                             : qOffset;
  LoadTileOp::create(b, loc, qView, qBatch, hIdx, qRow, qRows, qt, qPositions, op.getQRopeAttr());
  FillTileOp::create(b, loc, acc, b.getF32FloatAttr(0.0f));
  if (op.getNormalizer() == Normalizer::softmax) {
    m = tile({bm});
    l = tile({bm});
    alpha = tile({bm});
    FillTileOp::create(b, loc, m, b.getF32FloatAttr(-std::numeric_limits<float>::infinity()));
    FillTileOp::create(b, loc, l, b.getF32FloatAttr(0.0f));
  }

  schedule();

  if (op.getNormalizer() == Normalizer::softmax) {
    StoreTileOp::create(b, loc, acc, l, oView, qBatch, hIdx, qRow, qRows);
    if (lseView)
      StoreLseOp::create(b, loc, m, l, lseView, qBatch, hIdx, qRow, qRows, op.getSoftmaxBase2());
  } else {
    StoreTileOp::create(b, loc, acc, Value(), oView, qBatch, hIdx, qRow, qRows);
  }
}

/// One (query block, key block) tile: everything between the loads and the
/// accumulation, with the mask only where the tile is not known FULL and whole.
void KernelBuilder::processTile(Value kb, Value cls) {
  Value kvLo = arith::MulIOp::create(b, loc, kb, idx(bn));
  Value kvRows = arith::MinUIOp::create(b, loc, idx(bn), arith::SubIOp::create(b, loc, seqKv, kvLo));
  Value kvRow = arith::AddIOp::create(b, loc, kvRow0, kvLo);
  Value kPositions;
  if (op.getKRope())
    kPositions = perSequence ? arith::SubIOp::create(b, loc, kvOffset, toI64(kvRow0)).getResult()
                             : kvOffset;
  Value pageRow = pageTable ? bIdx : Value();
  LoadTileOp::create(b, loc, kView, kvBatch, hkIdx, kvRow, kvRows, kt, kPositions, pageTable,
                     pageRow, pageSize, op.getKRopeAttr());
  LoadTileOp::create(b, loc, vView, kvBatch, hkIdx, kvRow, kvRows, vt, Value(), pageTable,
                     pageRow, pageSize, RopeAttr());
  // The host kernels compute only the tile's valid query rows (decoding: 1 of 64); the
  // NVIDIA kernels, which never see per-sequence kernels, compute whole tiles.
  Value rows = perSequence ? qRows : Value();
  QkTileOp::create(b, loc, qt, kt, s, op.getScaleAttr(), rows);

  Value kvLo64 = toI64(kvLo);
  Value whole = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, kvRows, idx(bn));
  Value full = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, cls,
                                     arith::ConstantIntOp::create(b, loc, kFull, 32));
  Value unmasked = arith::AndIOp::create(b, loc, whole, full);
  auto epilogue = [&](bool masked) {
    auto score = ScoreTileOp::create(b, loc, s, b64, h64, qLo64, kvLo64, seqQOffset,
                                     kvOffset, seqQ64, seqKv64, inputBuffers, rows, masked);
    IRMapping mapping = inputs;
    {
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPoint(score);
      if (masked)
        cloneConstantsUsedIn(op.getMask(), b, mapping);
      cloneConstantsUsedIn(op.getScore(), b, mapping);
    }
    if (masked) {
      op.getMask().cloneInto(&score.getMask(), mapping);
    } else {
      // A FULL tile carries no mask code: its mask region is just `true`.
      OpBuilder::InsertionGuard guard(b);
      Block *maskBlock = new Block();
      score.getMask().push_back(maskBlock);
      for (int a = 0; a < 8; ++a)
        maskBlock->addArgument(b.getI64Type(), loc);
      b.setInsertionPointToStart(maskBlock);
      YieldOp::create(b, loc, ValueRange{arith::ConstantIntOp::create(b, loc, 1, 1).getResult()});
    }
    op.getScore().cloneInto(&score.getScore(), mapping);
  };
  auto ifFull = scf::IfOp::create(b, loc, unmasked, /*withElseRegion=*/true);
  {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(ifFull.thenBlock());
    epilogue(/*masked=*/false);
    b.setInsertionPointToStart(ifFull.elseBlock());
    epilogue(/*masked=*/true);
  }
  if (op.getNormalizer() == Normalizer::softmax) {
    SoftmaxTileOp::create(b, loc, s, m, l, alpha, rows, op.getSoftmaxBase2());
    PvTileOp::create(b, loc, s, vt, acc, alpha, rows);
  } else {
    WeightsTileOp::create(b, loc, s, seqKv64, op.getNormalizerAttr(), op.getSigmoidBetaAttr());
    PvTileOp::create(b, loc, s, vt, acc, Value(), rows);
  }
}

/// The key loop: attn.for_kv_blocks over the attention's kv_ranges (or its block
/// list) and tile_class, with processTile as its body.
void KernelBuilder::schedule() {
  auto loop = createKvBlockLoop(b, loc, op, inputs, b64, ValueRange{h64}, qLo64, qHi64,
                                seqQOffset, kvOffset, seqQ64, seqKv64,
                                kvListFor(op, inputBuffers, bm, bn), bn);
  OpBuilder::InsertionGuard guard(b);
  Block *body = b.createBlock(&loop.getBody(), {}, {b.getI64Type(), b.getI32Type()}, {loc, loc});
  b.setInsertionPointToStart(body);
  processTile(toIndex(body->getArgument(0)), body->getArgument(1));
  YieldOp::create(b, loc);
}

struct TilePass : public mlir::attn::impl::AttnTileBase<TilePass> {
  using AttnTileBase::AttnTileBase;

  void runOnOperation() override {
    if (blockM <= 0 || blockN <= 0 || blockM > 1024 || blockN > 1024) {
      getOperation().emitError("attn-tile: block-m and block-n must be in [1, 1024]");
      return signalPassFailure();
    }
    SmallVector<AttentionOp> ops;
    getOperation().walk([&](AttentionOp op) { ops.push_back(op); });
    for (AttentionOp op : ops) {
      auto func = dyn_cast<func::FuncOp>(op->getParentOp());
      if (!func || !func.getBody().hasOneBlock()) {
        op.emitError("attn-tile: attn.attention must sit directly in a function body");
        return signalPassFailure();
      }
      if (!op.hasBlockAnalysis()) {
        op.emitError("attn-tile: run attn-analyze-blocks first (kv_ranges are missing)");
        return signalPassFailure();
      }
      for (Value operand : {op.getQ(), op.getK(), op.getV()})
        if (!isa<BlockArgument>(operand)) {
          op.emitError("attn-tile: q, k and v must be function arguments (run attn-fuse "
                       "to fold attn.rope)");
          return signalPassFailure();
        }
      for (Value in : op.getInputs())
        if (!isa<BlockArgument>(in)) {
          op.emitError("attn-tile: extra inputs must be function arguments");
          return signalPassFailure();
        }
      KernelBuilder builder(op, blockM, blockN, sequenceLengths);
      if (failed(builder.build(func)))
        return signalPassFailure();
    }
  }
};

} // namespace

Value mlir::attn::kvListFor(AttentionOp op, ArrayRef<Value> inputBuffers, int64_t bm,
                            int64_t bn) {
  auto listBlock = op.getKvListBlock();
  bool useList = op.getKvListInput() && listBlock && listBlock->size() == 2 &&
                 (*listBlock)[0] % bm == 0 && (*listBlock)[1] == bn;
  return useList ? inputBuffers[*op.getKvListInput()] : Value();
}

ForKvBlocksOp mlir::attn::createKvBlockLoop(OpBuilder &b, Location loc, AttentionOp op,
                                            const IRMapping &inputs, Value batch,
                                            ValueRange heads, Value qLo, Value qHi,
                                            Value qOffset, Value kvOffset, Value seqQ,
                                            Value seqKv, Value list, int64_t bn) {
  auto loop = ForKvBlocksOp::create(
      b, loc, batch, heads, qLo, qHi, qOffset, kvOffset, seqQ, seqKv, list,
      /*split=*/Value(), /*num_splits=*/Value(), b.getI64IntegerAttr(bn),
      list ? b.getI64IntegerAttr((*op.getKvListBlock())[0]) : IntegerAttr());
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPoint(loop);
  IRMapping ranges = inputs, classes = inputs;
  cloneConstantsUsedIn(op.getKvRanges(), b, ranges);
  op.getKvRanges().cloneInto(&loop.getRanges(), ranges);
  cloneConstantsUsedIn(op.getTileClass(), b, classes);
  op.getTileClass().cloneInto(&loop.getTileClass(), classes);
  return loop;
}
