//===- Tile.cpp - attn.attention (L1) -> the tiled program (L2) -----------===//
//
// The function holding an attn.attention becomes a kernel over buffers:
//
//   func @f(q, k, v, <inputs>, o, [lse], q_offset, kv_offset)   // memrefs, i64
//     attn.grid B, Hq, ceil(Sq / BM) {                          // (b, h, qb)
//       q tile <- q[b, h, qb*BM ...]  (rotated when q_rope)
//       m = -inf, l = 0, acc = 0
//       for each key range [lo, hi) of kv_ranges(q block):       // closed form
//         for kb in [lo / BN, ceil(hi / BN)):
//           skip kb if an earlier range had it, or tile_class == EMPTY
//           k, v tiles <- k[b, h / G, kb*BN ...], v[...]
//           s = scale * q k^T
//           FULL tile and whole: s = score(s)      (no mask code)
//           otherwise:           s = mask ? score(s) : -inf
//           online softmax (m, l, alpha), acc = alpha acc + p v
//       o <- acc / l, lse <- m + log l
//
// With a block list (kv_list_*) whose blocks the tiles match, the key blocks are the
// listed ones instead of the ranges.
//
//===----------------------------------------------------------------------===//
#include "passes/Passes.h"

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

/// Clones the single block of `region` inline, with its arguments bound to `args`;
/// returns the values it yields.
SmallVector<Value> inlineRegion(OpBuilder &b, Region &region, ValueRange args,
                                IRMapping mapping) {
  Block &block = region.front();
  cloneConstantsUsedIn(region, b, mapping);
  for (auto [arg, v] : llvm::zip(block.getArguments(), args))
    mapping.map(arg, v);
  for (Operation &op : block.without_terminator())
    b.clone(op, mapping);
  SmallVector<Value> results;
  for (Value v : cast<YieldOp>(block.getTerminator()).getValues())
    results.push_back(mapping.lookupOrDefault(v));
  return results;
}

class KernelBuilder {
public:
  KernelBuilder(AttentionOp op, int64_t bm, int64_t bn)
      : op(op), bm(bm), bn(bn), b(op.getContext()), loc(op.getLoc()) {}

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
  void processTile(Value kb, Value cls);
  void rangeLoops();
  void listLoop();

  AttentionOp op;
  int64_t bm, bn;
  OpBuilder b;
  Location loc;
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
  SmallVector<Type> argTypes{stridedType(qType), stridedType(kType), stridedType(vType)};
  for (Value in : op.getInputs())
    argTypes.push_back(contiguousType(cast<RankedTensorType>(in.getType())));
  argTypes.push_back(stridedType(oType));
  if (Value l1Lse = op.getLse())
    argTypes.push_back(contiguousType(cast<RankedTensorType>(l1Lse.getType())));
  argTypes.push_back(b.getI64Type());
  argTypes.push_back(b.getI64Type());

  b.setInsertionPoint(oldFunc);
  auto func = func::FuncOp::create(b, oldFunc.getLoc(), oldFunc.getName(),
                                   b.getFunctionType(argTypes, {}));
  func->setAttr("attn.kernel", b.getUnitAttr());
  func->setAttr("attn.block", b.getDenseI64ArrayAttr({bm, bn}));
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

  Value batch = memref::DimOp::create(b, loc, q, 0);
  seqQ = memref::DimOp::create(b, loc, q, 2);
  seqKv = memref::DimOp::create(b, loc, k, 2);
  seqQ64 = toI64(seqQ);
  seqKv64 = toI64(seqKv);
  Value qBlocks = arith::CeilDivUIOp::create(b, loc, seqQ, idx(bm));
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

void KernelBuilder::buildGridBody(Block *body) {
  bIdx = body->getArgument(0);
  hIdx = body->getArgument(1);
  Value qb = body->getArgument(2);
  int64_t group = op.getHeadsQ() / op.getHeadsKv();
  hkIdx = arith::DivUIOp::create(b, loc, hIdx, idx(group));
  b64 = toI64(bIdx);
  h64 = toI64(hIdx);
  qLo = arith::MulIOp::create(b, loc, qb, idx(bm));
  qRows = arith::MinUIOp::create(b, loc, idx(bm), arith::SubIOp::create(b, loc, seqQ, qLo));
  qLo64 = toI64(qLo);
  qHi64 = toI64(arith::AddIOp::create(b, loc, qLo, qRows));

  int64_t d = op.getHeadDim(), dv = op.getHeadDimV();
  qt = tile({bm, d});
  kt = tile({bn, d});
  vt = tile({bn, dv});
  s = tile({bm, bn});
  acc = tile({bm, dv});
  auto qLoad = LoadTileOp::create(b, loc, q, bIdx, hIdx, qLo, qRows, qt,
                                  op.getQRope() ? qOffset : Value(), op.getQRopeAttr());
  (void)qLoad;
  FillTileOp::create(b, loc, acc, b.getF32FloatAttr(0.0f));
  if (op.getNormalizer() == Normalizer::softmax) {
    m = tile({bm});
    l = tile({bm});
    alpha = tile({bm});
    FillTileOp::create(b, loc, m, b.getF32FloatAttr(-std::numeric_limits<float>::infinity()));
    FillTileOp::create(b, loc, l, b.getF32FloatAttr(0.0f));
  }

  auto listBlock = op.getKvListBlock();
  bool useList = op.getKvListInput() && listBlock && listBlock->size() == 2 &&
                 (*listBlock)[0] % bm == 0 && (*listBlock)[1] == bn;
  if (useList)
    listLoop();
  else
    rangeLoops();

  if (op.getNormalizer() == Normalizer::softmax) {
    StoreTileOp::create(b, loc, acc, l, o, bIdx, hIdx, qLo, qRows);
    if (lse)
      StoreLseOp::create(b, loc, m, l, lse, bIdx, hIdx, qLo, qRows, op.getSoftmaxBase2());
  } else {
    StoreTileOp::create(b, loc, acc, Value(), o, bIdx, hIdx, qLo, qRows);
  }
}

/// One (query block, key block) tile: everything between the loads and the
/// accumulation, with the mask only where the tile is not known FULL and whole.
void KernelBuilder::processTile(Value kb, Value cls) {
  Value kvLo = arith::MulIOp::create(b, loc, kb, idx(bn));
  Value kvRows = arith::MinUIOp::create(b, loc, idx(bn), arith::SubIOp::create(b, loc, seqKv, kvLo));
  LoadTileOp::create(b, loc, k, bIdx, hkIdx, kvLo, kvRows, kt,
                     op.getKRope() ? kvOffset : Value(), op.getKRopeAttr());
  LoadTileOp::create(b, loc, v, bIdx, hkIdx, kvLo, kvRows, vt, Value(), RopeAttr());
  QkTileOp::create(b, loc, qt, kt, s, op.getScaleAttr());

  Value whole = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, kvRows, idx(bn));
  Value full = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, cls,
                                     arith::ConstantIntOp::create(b, loc, kFull, 32));
  Value unmasked = arith::AndIOp::create(b, loc, whole, full);
  auto epilogue = [&](bool masked) {
    auto score = ScoreTileOp::create(b, loc, s, b64, h64, qLo64, toI64(kvLo), qOffset,
                                     kvOffset, seqQ64, seqKv64, inputBuffers, masked);
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
    SoftmaxTileOp::create(b, loc, s, m, l, alpha, op.getSoftmaxBase2());
    PvTileOp::create(b, loc, s, vt, acc, alpha);
  } else {
    WeightsTileOp::create(b, loc, s, seqKv64, op.getNormalizerAttr(), op.getSigmoidBetaAttr());
    PvTileOp::create(b, loc, s, vt, acc, Value());
  }
}

/// The tile class of key block kb, from the attention's tile_class region.
static Value classOf(OpBuilder &b, Location loc, AttentionOp op, IRMapping &inputs,
                     ArrayRef<Value> args) {
  return inlineRegion(b, op.getTileClass(), args, inputs)[0];
}

void KernelBuilder::rangeLoops() {
  SmallVector<Value> bounds =
      inlineRegion(b, op.getKvRanges(),
                   {b64, h64, qLo64, qHi64, qOffset, kvOffset, seqQ64, seqKv64}, inputs);
  SmallVector<std::pair<Value, Value>> blockRanges;
  for (size_t r = 0; r + 1 < bounds.size(); r += 2) {
    Value lo = toIndex(bounds[r]), hi = toIndex(bounds[r + 1]);
    Value blo = arith::DivUIOp::create(b, loc, lo, idx(bn));
    Value bhi = arith::MaxUIOp::create(b, loc, arith::CeilDivUIOp::create(b, loc, hi, idx(bn)), blo);
    // An empty key range visits nothing.
    Value empty = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ule, hi, lo);
    bhi = arith::SelectOp::create(b, loc, empty, blo, bhi);
    auto loop = scf::ForOp::create(b, loc, blo, bhi, idx(1));
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(loop.getBody());
    Value kb = loop.getInductionVar();
    // Key blocks an earlier range already covered are not visited twice.
    Value seen = arith::ConstantIntOp::create(b, loc, 0, 1);
    for (auto [plo, phi] : blockRanges) {
      Value inside = arith::AndIOp::create(
          b, loc, arith::CmpIOp::create(b, loc, arith::CmpIPredicate::uge, kb, plo),
          arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, kb, phi));
      seen = arith::OrIOp::create(b, loc, seen, inside);
    }
    Value kvLo64 = toI64(arith::MulIOp::create(b, loc, kb, idx(bn)));
    Value kvHi64 = arith::MinSIOp::create(b, loc, arith::AddIOp::create(b, loc, kvLo64, i64(bn)), seqKv64);
    Value cls = classOf(b, loc, op, inputs,
                        {b64, h64, qLo64, qHi64, kvLo64, kvHi64, qOffset, kvOffset, seqQ64, seqKv64});
    Value nonEmpty = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ne, cls,
                                           arith::ConstantIntOp::create(b, loc, kEmpty, 32));
    Value fresh = arith::XOrIOp::create(b, loc, seen, arith::ConstantIntOp::create(b, loc, 1, 1));
    auto ifVisit = scf::IfOp::create(b, loc, arith::AndIOp::create(b, loc, nonEmpty, fresh),
                                     /*withElseRegion=*/false);
    b.setInsertionPointToStart(ifVisit.thenBlock());
    processTile(kb, cls);
    blockRanges.push_back({blo, bhi});
  }
}

/// Iterates the key blocks listed for this query block (deduplicated, -1 padding and
/// out-of-range entries skipped).
void KernelBuilder::listLoop() {
  Value list = inputBuffers[*op.getKvListInput()];
  int64_t listBm = (*op.getKvListBlock())[0];
  Value row = arith::DivUIOp::create(b, loc, qLo, idx(listBm));
  Value kvBlocks = arith::CeilDivUIOp::create(b, loc, seqKv, idx(bn));
  // The list row exists only when (b, h, row) is inside the list tensor.
  auto dimOk = [&](Value i, int64_t dim) {
    return arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, i,
                                 memref::DimOp::create(b, loc, list, dim));
  };
  Value rowOk = arith::AndIOp::create(b, loc, dimOk(bIdx, 0),
                                      arith::AndIOp::create(b, loc, dimOk(hIdx, 1), dimOk(row, 2)));
  Value entries = arith::SelectOp::create(b, loc, rowOk, memref::DimOp::create(b, loc, list, 3), idx(0));
  auto loop = scf::ForOp::create(b, loc, idx(0), entries, idx(1));
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(loop.getBody());
  Value t = loop.getInductionVar();
  auto entryAt = [&](Value pos) {
    Value e = memref::LoadOp::create(b, loc, list, ValueRange{bIdx, hIdx, row, pos});
    return arith::ExtSIOp::create(b, loc, b.getI64Type(), e).getResult();
  };
  Value entry = entryAt(t);
  Value valid = arith::AndIOp::create(
      b, loc, arith::CmpIOp::create(b, loc, arith::CmpIPredicate::sge, entry, i64(0)),
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::slt, entry, toI64(kvBlocks)));
  auto dup = scf::ForOp::create(b, loc, idx(0), t, idx(1),
                                ValueRange{arith::ConstantIntOp::create(b, loc, 0, 1)},
                                [&](OpBuilder &nb, Location l, Value u, ValueRange acc) {
                                  OpBuilder::InsertionGuard g(b);
                                  b.setInsertionPointToEnd(nb.getInsertionBlock());
                                  Value same = arith::CmpIOp::create(
                                      b, l, arith::CmpIPredicate::eq, entryAt(u), entry);
                                  scf::YieldOp::create(b, l, ValueRange{
                                      arith::OrIOp::create(b, l, acc[0], same).getResult()});
                                });
  Value fresh = arith::XOrIOp::create(b, loc, dup.getResult(0),
                                      arith::ConstantIntOp::create(b, loc, 1, 1));
  auto ifVisit = scf::IfOp::create(b, loc, arith::AndIOp::create(b, loc, valid, fresh), false);
  b.setInsertionPointToStart(ifVisit.thenBlock());
  Value kb = toIndex(entry);
  Value kvLo64 = arith::MulIOp::create(b, loc, entry, i64(bn));
  Value kvHi64 = arith::MinSIOp::create(b, loc, arith::AddIOp::create(b, loc, kvLo64, i64(bn)), seqKv64);
  Value cls = classOf(b, loc, op, inputs,
                      {b64, h64, qLo64, qHi64, kvLo64, kvHi64, qOffset, kvOffset, seqQ64, seqKv64});
  Value nonEmpty = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ne, cls,
                                         arith::ConstantIntOp::create(b, loc, kEmpty, 32));
  auto ifNonEmpty = scf::IfOp::create(b, loc, nonEmpty, false);
  b.setInsertionPointToStart(ifNonEmpty.thenBlock());
  processTile(kb, cls);
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
      KernelBuilder builder(op, blockM, blockN);
      if (failed(builder.build(func)))
        return signalPassFailure();
    }
  }
};

} // namespace
