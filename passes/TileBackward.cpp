//===- TileBackward.cpp - attn.attention (L1) -> the tiled backward (L2) ---===//
//
// FlashAttention-2's backward as two grids over the same tiles, deterministic by
// construction (no accumulation is shared between grid items but the tensor
// gradients, which a back end sums in a fixed order):
//
//   func @f(q, k, v, <inputs>, o, lse, dO, dlse, dq, dk, dv, <float input grads>,
//           q_offset, kv_offset)
//     [block list: its transpose, see below]
//     attn.grid B, Hq, ceil(Sq / BM) {                      // query-major: dq
//       q, dO, o, lse, dlse tiles; delta = rowsum(dO o)
//       attn.for_kv_blocks (the forward's schedule):
//         k, v tiles; s = scale q k^T; s' = score(s) (mask on PARTIAL tiles)
//         dp = dO v^T; p, dS' from s', dp, lse, delta, dlse (the normaliser's rule)
//         ds = scale * score_grad(dS', s)   (its accumulate_grad ops dropped)
//         dq += ds k
//       dq <- R^T dq (RoPE)
//     attn.grid B, Hkv, ceil(Skv / BN) {                    // key-major: dk, dv
//       k, v tiles of the key block
//       for each query head of the kv head, for each query block of the transposed
//       schedule whose tile_class is not EMPTY:
//         the same tile recomputation, then
//         ds = scale * score_grad(dS', s), adding into the float inputs' gradients
//         dv += p^T dO, dk += ds^T q
//       dk <- R^T dk (RoPE); store dk, dv (summed over the kv head's query heads)
//
// The transposed schedule: the query blocks whose rows may see a key block.
//  - Ranges: the mask solved for the query index over the key block's intervals
//    (passes/MaskRanges.h, the algorithm that gives the forward's kv_ranges solved
//    the other way round): causal gives q >= kv_lo + kv_offset - q_offset, a window
//    q - kv <= left gives q <= kv_hi - 1 + kv_offset - q_offset + left. The intervals
//    (at most 4, computed at run time from the offsets and sizes) are clamped to
//    [0, seq_q) and give query blocks [lo / BM, ceil(hi / BM)); a block an earlier
//    interval had is not visited again (it would add its tile to dk twice). A mask
//    without a closed form keeps every query block, and the tile class decides.
//    The work per key block is O(visited blocks + intervals), not O(Sq / BM).
//  - Block list (the forward iterates list[b, h, q block row]): the key grid needs
//    the rows that list each key block, so the kernel's prologue transposes the
//    list once, a counting sort over its entries (count per (b, h, key block),
//    prefix sums, scatter of row numbers in row order): O(B H R K) for the whole
//    kernel, where asking every row for every key block is O(R K) per key block.
//    A row that lists a block twice is kept once (the forward skips the repeat).
//    The buffers are allocated and freed by the kernel (host: malloc; a GPU
//    lowering would run the prologue as a kernel of its own before the grids).
// Either way tiles the class calls EMPTY are never loaded, and FULL whole tiles run
// no mask code. Runs after attn-differentiate-score and attn-analyze-blocks, and
// after attn-fuse without base 2 (the backward works in natural-log units).
//
//===----------------------------------------------------------------------===//
#include "passes/IntervalEmitter.h"
#include "passes/MaskRanges.h"
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
#define GEN_PASS_DEF_ATTNTILEBACKWARD
#include "passes/Passes.h.inc"
} // namespace mlir::attn

using namespace mlir;
using namespace mlir::attn;

namespace {

MemRefType stridedType(ArrayRef<int64_t> shape, Type elt) {
  MLIRContext *ctx = elt.getContext();
  int64_t dyn = ShapedType::kDynamic;
  SmallVector<int64_t> strides(shape.size(), dyn);
  strides.back() = 1;
  return MemRefType::get(shape, elt, StridedLayoutAttr::get(ctx, dyn, strides));
}

class BackwardBuilder {
public:
  BackwardBuilder(AttentionOp op, int64_t bm, int64_t bn)
      : op(op), bm(bm), bn(bn), b(op.getContext()), loc(op.getLoc()) {}

  LogicalResult build(func::FuncOp oldFunc);

private:
  Value idx(int64_t v) { return arith::ConstantIndexOp::create(b, loc, v); }
  Value i64(int64_t v) { return arith::ConstantIntOp::create(b, loc, v, 64); }
  Value i32(int64_t v) { return arith::ConstantIntOp::create(b, loc, v, 32); }
  Value toI64(Value v) { return arith::IndexCastOp::create(b, loc, b.getI64Type(), v); }
  Value toIndex(Value v) { return arith::IndexCastOp::create(b, loc, b.getIndexType(), v); }
  Value tile(ArrayRef<int64_t> shape) {
    return memref::AllocaOp::create(b, loc, MemRefType::get(shape, b.getF32Type()));
  }
  Value minIdx(Value x, Value y) { return arith::MinUIOp::create(b, loc, x, y); }

  /// The tiles of the recomputation, in the current grid body.
  void allocateTiles();
  void buildQueryGrid();
  void buildKeyGrid();
  /// The block list's transpose (kernel prologue): listStart/listEnd/listRows.
  void transposeList();
  /// Calls `visit(qb)` (index) for every query block of the transposed schedule of
  /// key rows [kvLo64, kvHi64) for query head h64 / hIdx, in the current block.
  void forQueryBlocks(Region &queryRanges, Value b64, Value bIdx, Value h64, Value hIdx,
                      Value kb, Value kvLo64, Value kvHi64,
                      llvm::function_ref<void(Value)> visit);
  /// The recomputed tile for query rows [qLo, qLo + qRows) and keys [kvLo, kvLo +
  /// kvRows): leaves p in `st` and ds (scaled) in `dp`.
  void recomputeTile(Value b64, Value h64, Value qLo64, Value kvLo64, Value unmasked,
                     bool tensorGrads);
  void cloneRegion(Region &from, Region &to, bool tensorGrads);

  AttentionOp op;
  int64_t bm, bn;
  OpBuilder b;
  Location loc;
  IRMapping inputs; // L1 tensors -> kernel buffers
  SmallVector<Value> inputBuffers;
  DenseMap<Value, Value> gradOf; // input buffer -> its gradient buffer

  Value q, k, v, o, lse, dO, dlse, dq, dk, dv, qOffset, kvOffset;
  Value batch, seqQ, seqKv, seqQ64, seqKv64;
  // The block list the forward iterates (or null), and its transpose: for the pair
  // p = b * H + h of the list and key block kb, slot = p * kvBlocks + kb, the list
  // rows naming kb are listRows[listStart[slot] .. listEnd[slot]), ascending.
  Value list, listBatch, listHeads, kvBlocks, listStart, listEnd, listRows;
  // Tiles of the tile recomputation.
  Value qt, kt, vt, dot, ot, lseT, dlseT, delta, sraw, st, dp;
};

LogicalResult BackwardBuilder::build(func::FuncOp oldFunc) {
  auto qType = cast<RankedTensorType>(op.getQ().getType());
  auto kType = cast<RankedTensorType>(op.getK().getType());
  auto vType = cast<RankedTensorType>(op.getV().getType());
  auto oType = cast<RankedTensorType>(op.getO().getType());
  Type f32 = b.getF32Type();
  int64_t dyn = ShapedType::kDynamic;
  MemRefType rowsType = MemRefType::get({dyn, op.getHeadsQ(), dyn}, f32);
  SmallVector<Type> argTypes{stridedType(qType.getShape(), qType.getElementType()),
                             stridedType(kType.getShape(), kType.getElementType()),
                             stridedType(vType.getShape(), vType.getElementType())};
  SmallVector<int> floatInputs;
  for (auto [n, in] : llvm::enumerate(op.getInputs())) {
    auto t = cast<RankedTensorType>(in.getType());
    argTypes.push_back(MemRefType::get(t.getShape(), t.getElementType()));
    if (isa<FloatType>(t.getElementType()))
      floatInputs.push_back(int(n));
  }
  argTypes.push_back(stridedType(oType.getShape(), oType.getElementType())); // o
  argTypes.push_back(rowsType);                                              // lse
  argTypes.push_back(stridedType(oType.getShape(), f32));                    // dO
  argTypes.push_back(rowsType);                                              // dlse
  argTypes.push_back(stridedType(qType.getShape(), f32));                    // dq
  argTypes.push_back(stridedType(kType.getShape(), f32));                    // dk
  argTypes.push_back(stridedType(vType.getShape(), f32));                    // dv
  for (int n : floatInputs) {
    auto t = cast<RankedTensorType>(op.getInputs()[n].getType());
    argTypes.push_back(MemRefType::get(t.getShape(), f32));
  }
  argTypes.push_back(b.getI64Type());
  argTypes.push_back(b.getI64Type());

  b.setInsertionPoint(oldFunc);
  auto func = func::FuncOp::create(b, oldFunc.getLoc(), oldFunc.getName(),
                                   b.getFunctionType(argTypes, {}));
  func->setAttr("attn.kernel", b.getUnitAttr());
  func->setAttr("attn.backward", b.getUnitAttr());
  func->setAttr("attn.block", b.getDenseI64ArrayAttr({bm, bn}));
  func->setAttr("attn.input_names", op.getInputNamesAttr());
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
  lse = entry->getArgument(a++);
  dO = entry->getArgument(a++);
  dlse = entry->getArgument(a++);
  dq = entry->getArgument(a++);
  dk = entry->getArgument(a++);
  dv = entry->getArgument(a++);
  for (int n : floatInputs)
    gradOf[inputBuffers[n]] = entry->getArgument(a++);
  qOffset = entry->getArgument(a++);
  kvOffset = entry->getArgument(a++);

  batch = memref::DimOp::create(b, loc, q, 0);
  seqQ = memref::DimOp::create(b, loc, q, 2);
  seqKv = memref::DimOp::create(b, loc, k, 2);
  seqQ64 = toI64(seqQ);
  seqKv64 = toI64(seqKv);
  list = kvListFor(op, inputBuffers, bm, bn);
  if (list)
    transposeList();
  buildQueryGrid();
  buildKeyGrid();
  if (list)
    for (Value buffer : {listStart, listEnd, listRows})
      memref::DeallocOp::create(b, loc, buffer);
  func::ReturnOp::create(b, loc);
  oldFunc.erase();
  return success();
}

/// Clones the mask or score_grad region with the kernel's buffers; the
/// accumulate_grad ops write the gradient buffers, or are dropped.
void BackwardBuilder::cloneRegion(Region &from, Region &to, bool tensorGrads) {
  IRMapping mapping = inputs;
  {
    OpBuilder::InsertionGuard guard(b);
    Operation *owner = to.getParentOp();
    b.setInsertionPoint(owner);
    cloneConstantsUsedIn(from, b, mapping);
  }
  from.cloneInto(&to, mapping);
  SmallVector<AccumulateGradOp> accs;
  to.walk([&](AccumulateGradOp acc) { accs.push_back(acc); });
  for (AccumulateGradOp acc : accs) {
    if (!tensorGrads) {
      acc.erase();
      continue;
    }
    acc.getTargetMutable().assign(gradOf.lookup(acc.getTarget()));
  }
}

void BackwardBuilder::recomputeTile(Value b64, Value h64, Value qLo64, Value kvLo64,
                                    Value unmasked, bool tensorGrads) {
  QkTileOp::create(b, loc, qt, kt, sraw, op.getScaleAttr());
  QkTileOp::create(b, loc, qt, kt, st, op.getScaleAttr());
  auto twoWays = [&](llvm::function_ref<void(bool)> emit) {
    auto ifFull = scf::IfOp::create(b, loc, unmasked, /*withElseRegion=*/true);
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(ifFull.thenBlock());
    emit(false);
    b.setInsertionPointToStart(ifFull.elseBlock());
    emit(true);
  };
  auto trueMask = [&](Region &region) {
    OpBuilder::InsertionGuard guard(b);
    Block *maskBlock = new Block();
    region.push_back(maskBlock);
    for (int i = 0; i < 8; ++i)
      maskBlock->addArgument(b.getI64Type(), loc);
    b.setInsertionPointToStart(maskBlock);
    YieldOp::create(b, loc, ValueRange{arith::ConstantIntOp::create(b, loc, 1, 1).getResult()});
  };
  twoWays([&](bool masked) {
    auto score = ScoreTileOp::create(b, loc, st, b64, h64, qLo64, kvLo64, qOffset, kvOffset,
                                     seqQ64, seqKv64, inputBuffers, masked);
    if (masked)
      cloneRegion(op.getMask(), score.getMask(), false);
    else
      trueMask(score.getMask());
    cloneRegion(op.getScore(), score.getScore(), false);
  });
  QkTileOp::create(b, loc, dot, vt, dp, b.getF64FloatAttr(1.0));
  bool softmax = op.getNormalizer() == Normalizer::softmax;
  GradWeightsTileOp::create(b, loc, st, dp, softmax ? lseT : Value(), softmax ? delta : Value(),
                            softmax ? dlseT : Value(), seqKv64, op.getNormalizerAttr(),
                            op.getSigmoidBetaAttr());
  SmallVector<Value> buffers = inputBuffers;
  if (tensorGrads)
    for (Value in : inputBuffers)
      if (Value g = gradOf.lookup(in))
        buffers.push_back(g);
  twoWays([&](bool masked) {
    auto grad = ScoreGradTileOp::create(b, loc, dp, sraw, b64, h64, qLo64, kvLo64, qOffset,
                                        kvOffset, seqQ64, seqKv64, buffers, op.getScaleAttr(),
                                        masked ? b.getUnitAttr() : UnitAttr());
    if (masked)
      cloneRegion(op.getMask(), grad.getMask(), false);
    else
      trueMask(grad.getMask());
    cloneRegion(op.getScoreGrad(), grad.getScoreGrad(), tensorGrads);
  });
}

void BackwardBuilder::allocateTiles() {
  int64_t d = op.getHeadDim(), dvDim = op.getHeadDimV();
  qt = tile({bm, d});
  kt = tile({bn, d});
  vt = tile({bn, dvDim});
  dot = tile({bm, dvDim});
  ot = tile({bm, dvDim});
  lseT = tile({bm});
  dlseT = tile({bm});
  delta = tile({bm});
  sraw = tile({bm, bn});
  st = tile({bm, bn});
  dp = tile({bm, bn});
}

/// The body block of a new attn.grid, with its (b, h, block) index arguments.
static Block *gridBody(GridOp grid) {
  Block *body = new Block();
  grid.getBody().push_back(body);
  for (int i = 0; i < 3; ++i)
    body->addArgument(IndexType::get(grid.getContext()), grid.getLoc());
  return body;
}

void BackwardBuilder::buildQueryGrid() {
  Value qBlocks = arith::CeilDivUIOp::create(b, loc, seqQ, idx(bm));
  Block *body = gridBody(GridOp::create(b, loc, batch, idx(op.getHeadsQ()), qBlocks, bm, bn));
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(body);
  Value bIdx = body->getArgument(0), hIdx = body->getArgument(1), qb = body->getArgument(2);
  int64_t group = op.getHeadsQ() / op.getHeadsKv();
  Value hkIdx = arith::DivUIOp::create(b, loc, hIdx, idx(group));
  Value b64 = toI64(bIdx), h64 = toI64(hIdx);
  Value qLo = arith::MulIOp::create(b, loc, qb, idx(bm));
  Value qRows = minIdx(idx(bm), arith::SubIOp::create(b, loc, seqQ, qLo));
  Value qLo64 = toI64(qLo);
  Value qHi64 = toI64(arith::AddIOp::create(b, loc, qLo, qRows));
  int64_t d = op.getHeadDim(), dvDim = op.getHeadDimV();
  allocateTiles();
  Value dqAcc = tile({bm, d});
  LoadTileOp::create(b, loc, q, bIdx, hIdx, qLo, qRows, qt, op.getQRope() ? qOffset : Value(),
                     op.getQRopeAttr());
  LoadTileOp::create(b, loc, dO, bIdx, hIdx, qLo, qRows, dot, Value(), RopeAttr());
  LoadTileOp::create(b, loc, o, bIdx, hIdx, qLo, qRows, ot, Value(), RopeAttr());
  LoadRowsOp::create(b, loc, lse, bIdx, hIdx, qLo, qRows, lseT);
  LoadRowsOp::create(b, loc, dlse, bIdx, hIdx, qLo, qRows, dlseT);
  RowDotTileOp::create(b, loc, dot, ot, delta);
  FillTileOp::create(b, loc, dqAcc, b.getF32FloatAttr(0.0f));

  auto loop = createKvBlockLoop(b, loc, op, inputs, b64, ValueRange{h64}, qLo64, qHi64,
                                qOffset, kvOffset, seqQ64, seqKv64,
                                list, bn);
  {
    OpBuilder::InsertionGuard g(b);
    Block *lb = b.createBlock(&loop.getBody(), {}, {b.getI64Type(), b.getI32Type()}, {loc, loc});
    b.setInsertionPointToStart(lb);
    Value kb = toIndex(lb->getArgument(0)), cls = lb->getArgument(1);
    Value kvLo = arith::MulIOp::create(b, loc, kb, idx(bn));
    Value kvRows = minIdx(idx(bn), arith::SubIOp::create(b, loc, seqKv, kvLo));
    LoadTileOp::create(b, loc, k, bIdx, hkIdx, kvLo, kvRows, kt,
                       op.getKRope() ? kvOffset : Value(), op.getKRopeAttr());
    LoadTileOp::create(b, loc, v, bIdx, hkIdx, kvLo, kvRows, vt, Value(), RopeAttr());
    Value whole = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, kvRows, idx(bn));
    Value full = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, cls, i32(kFull));
    recomputeTile(b64, h64, qLo64, toI64(kvLo), arith::AndIOp::create(b, loc, whole, full),
                  /*tensorGrads=*/false);
    PvTileOp::create(b, loc, dp, kt, dqAcc, Value());
    YieldOp::create(b, loc);
  }
  if (RopeAttr rope = op.getQRopeAttr())
    RopeGradTileOp::create(b, loc, dqAcc, qLo, qOffset, rope);
  StoreTileOp::create(b, loc, dqAcc, Value(), dq, bIdx, hIdx, qLo, qRows);
  YieldOp::create(b, loc);
}

/// The transposed schedule's ranges: a region (b, h, kv_lo, kv_hi, q_offset,
/// kv_offset, seq_q, seq_kv) -> [lo, hi) query-index intervals within [0, seq_q),
/// the mask solved for the query over key rows [kv_lo, kv_hi) (passes/MaskRanges.h).
/// It is built from the L1 mask and reads the L1 tensors (their sizes, summaries of
/// their boxes), which inlining it maps to the kernel's buffers.
void buildQueryRanges(AttentionOp op, Region &region) {
  OpBuilder b(op.getContext());
  Location loc = op.getLoc();
  Block *block = new Block();
  region.push_back(block);
  for (int i = 0; i < 8; ++i)
    block->addArgument(b.getI64Type(), loc);
  b.setInsertionPointToEnd(block);
  Value tb = block->getArgument(0), th = block->getArgument(1), kvLo = block->getArgument(2),
        kvHi = block->getArgument(3), qOff = block->getArgument(4),
        kvOff = block->getArgument(5), seqQ = block->getArgument(6),
        seqKv = block->getArgument(7);
  Block &mask = op.getMask().front();
  // Mask arguments: (b, h, q_idx, kv_idx, q, kv, seq_q, seq_kv).
  IntervalEmitter e(b, loc);
  markSortedInputs(e, op);
  Value kvLast = e.sub(kvHi, e.i64(1));
  e.bind(mask.getArgument(0), IntRange::of(tb, tb));
  e.bind(mask.getArgument(1), IntRange::of(th, th));
  e.bind(mask.getArgument(3), IntRange::of(kvLo, kvLast));
  e.bind(mask.getArgument(5), IntRange::of(e.add(kvLo, kvOff), e.add(kvLast, kvOff)));
  e.bind(mask.getArgument(6), IntRange::of(seqQ, seqQ));
  e.bind(mask.getArgument(7), IntRange::of(seqKv, seqKv));
  Value cond = cast<YieldOp>(mask.getTerminator()).getValues()[0];
  auto ranges = solveMask(e, cond, {mask.getArgument(2), mask.getArgument(4), qOff});
  SmallVector<Value> bounds;
  for (auto [lo, hi] : ranges) {
    // Closed [lo, hi] -> half-open [lo, hi + 1) within [0, seq_q).
    Value l = e.min(e.max(lo, e.i64(0)), seqQ);
    Value h = e.max(e.min(e.add(hi, e.i64(1)), seqQ), l);
    bounds.push_back(l);
    bounds.push_back(h);
  }
  YieldOp::create(b, loc, bounds);
}

void BackwardBuilder::transposeList() {
  using P = arith::CmpIPredicate;
  Type index = b.getIndexType();
  auto dim = [&](int64_t d) { return memref::DimOp::create(b, loc, list, d).getResult(); };
  auto add = [&](Value x, Value y) { return arith::AddIOp::create(b, loc, x, y).getResult(); };
  auto mul = [&](Value x, Value y) { return arith::MulIOp::create(b, loc, x, y).getResult(); };
  auto load = [&](Value m, Value i) { return memref::LoadOp::create(b, loc, m, ValueRange{i}).getResult(); };
  auto store = [&](Value x, Value m, Value i) { memref::StoreOp::create(b, loc, x, m, ValueRange{i}); };
  auto loop = [&](Value lo, Value hi, llvm::function_ref<void(Value)> body) {
    auto f = scf::ForOp::create(b, loc, lo, hi, idx(1));
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(f.getBody());
    body(f.getInductionVar());
  };
  auto when = [&](Value cond, llvm::function_ref<void()> body) {
    auto ifOp = scf::IfOp::create(b, loc, cond, /*withElseRegion=*/false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(ifOp.thenBlock());
    body();
  };
  listBatch = dim(0);
  listHeads = dim(1);
  Value listRowCount = dim(2), listEntries = dim(3);
  kvBlocks = arith::CeilDivUIOp::create(b, loc, seqKv, idx(bn));
  Value pairs = mul(listBatch, listHeads);
  Value slots = mul(pairs, kvBlocks);
  // Every entry of the list in (pair, row, entry) order: fn(slot, row) for the
  // entries naming a key block that exists (the forward skips the others).
  auto forEachEntry = [&](llvm::function_ref<void(Value, Value)> fn) {
    loop(idx(0), pairs, [&](Value pair) {
      Value bi = arith::DivUIOp::create(b, loc, pair, listHeads);
      Value hi = arith::RemUIOp::create(b, loc, pair, listHeads);
      loop(idx(0), listRowCount, [&](Value row) {
        loop(idx(0), listEntries, [&](Value entry) {
          Value kb32 = memref::LoadOp::create(b, loc, list, ValueRange{bi, hi, row, entry});
          Value kb = arith::IndexCastOp::create(b, loc, index, kb32);
          Value exists = arith::AndIOp::create(
              b, loc, arith::CmpIOp::create(b, loc, P::sge, kb, idx(0)),
              arith::CmpIOp::create(b, loc, P::slt, kb, kvBlocks));
          when(exists, [&] { fn(add(mul(pair, kvBlocks), kb), row); });
        });
      });
    });
  };
  MemRefType vec = MemRefType::get({ShapedType::kDynamic}, index);
  Value slotsPlus1 = add(slots, idx(1));
  listStart = memref::AllocOp::create(b, loc, vec, ValueRange{slotsPlus1});
  listEnd = memref::AllocOp::create(b, loc, vec, ValueRange{slotsPlus1});
  // Counts (repeats included: an upper bound of each slot's rows) at slot + 1, then
  // their prefix sums: listStart[slot] is where the slot's rows begin.
  loop(idx(0), slotsPlus1, [&](Value i) { store(idx(0), listStart, i); });
  forEachEntry([&](Value slot, Value) {
    Value at = add(slot, idx(1));
    store(add(load(listStart, at), idx(1)), listStart, at);
  });
  loop(idx(0), slots, [&](Value i) {
    Value next = add(i, idx(1));
    store(add(load(listStart, next), load(listStart, i)), listStart, next);
  });
  loop(idx(0), slotsPlus1, [&](Value i) { store(load(listStart, i), listEnd, i); });
  Value total = load(listStart, slots);
  listRows = memref::AllocOp::create(b, loc, vec,
                                     ValueRange{arith::MaxUIOp::create(b, loc, total, idx(1))});
  // The scatter, rows in ascending order per slot: a repeat within a row is the
  // slot's last row so far, and is dropped.
  forEachEntry([&](Value slot, Value row) {
    Value at = load(listEnd, slot);
    Value some = arith::CmpIOp::create(b, loc, P::ugt, at, load(listStart, slot));
    auto repeat = scf::IfOp::create(b, loc, TypeRange{b.getI1Type()}, some, true);
    {
      OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(repeat.thenBlock());
      Value last = load(listRows, arith::SubIOp::create(b, loc, at, idx(1)));
      scf::YieldOp::create(b, loc, ValueRange{arith::CmpIOp::create(b, loc, P::eq, last, row)});
      b.setInsertionPointToStart(repeat.elseBlock());
      scf::YieldOp::create(b, loc, ValueRange{arith::ConstantIntOp::create(b, loc, 0, 1)});
    }
    Value fresh = arith::XOrIOp::create(b, loc, repeat.getResult(0),
                                        arith::ConstantIntOp::create(b, loc, 1, 1));
    when(fresh, [&] {
      store(row, listRows, at);
      store(add(at, idx(1)), listEnd, slot);
    });
  });
}

void BackwardBuilder::forQueryBlocks(Region &queryRanges, Value b64, Value bIdx, Value h64,
                                     Value hIdx, Value kb, Value kvLo64, Value kvHi64,
                                     llvm::function_ref<void(Value)> visit) {
  using P = arith::CmpIPredicate;
  auto loop = [&](Value lo, Value hi, llvm::function_ref<void(Value)> body) {
    auto f = scf::ForOp::create(b, loc, lo, hi, idx(1));
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(f.getBody());
    body(f.getInductionVar());
  };
  Value qBlocks = arith::CeilDivUIOp::create(b, loc, seqQ, idx(bm));
  if (list) {
    // The rows of the list that name this key block, then their query blocks (a list
    // row holds list_rows / BM whole query blocks). A (b, h) outside the list has
    // no rows, as in the forward.
    int64_t perRow = (*op.getKvListBlock())[0] / bm;
    Value inList = arith::AndIOp::create(
        b, loc, arith::CmpIOp::create(b, loc, P::ult, bIdx, listBatch),
        arith::CmpIOp::create(b, loc, P::ult, hIdx, listHeads));
    auto span = scf::IfOp::create(b, loc, TypeRange{b.getIndexType(), b.getIndexType()},
                                  inList, true);
    {
      OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(span.thenBlock());
      Value pair = arith::AddIOp::create(b, loc, arith::MulIOp::create(b, loc, bIdx, listHeads),
                                         hIdx);
      Value slot = arith::AddIOp::create(b, loc, arith::MulIOp::create(b, loc, pair, kvBlocks), kb);
      scf::YieldOp::create(
          b, loc,
          ValueRange{memref::LoadOp::create(b, loc, listStart, ValueRange{slot}).getResult(),
                     memref::LoadOp::create(b, loc, listEnd, ValueRange{slot}).getResult()});
      b.setInsertionPointToStart(span.elseBlock());
      scf::YieldOp::create(b, loc, ValueRange{idx(0), idx(0)});
    }
    loop(span.getResult(0), span.getResult(1), [&](Value at) {
      Value row = memref::LoadOp::create(b, loc, listRows, ValueRange{at});
      Value first = arith::MulIOp::create(b, loc, row, idx(perRow));
      Value last = minIdx(arith::AddIOp::create(b, loc, first, idx(perRow)), qBlocks);
      loop(first, last, visit);
    });
    return;
  }
  SmallVector<Value> bounds =
      inlineRegion(b, queryRanges,
                   {b64, h64, kvLo64, kvHi64, qOffset, kvOffset, seqQ64, seqKv64}, inputs);
  // Interval r (within [0, seq_q)) covers query blocks [blockLo[r], blockHi[r]).
  SmallVector<Value> blockLo, blockHi;
  for (size_t r = 0; r + 1 < bounds.size(); r += 2) {
    Value lo = toIndex(bounds[r]), hi = toIndex(bounds[r + 1]);
    Value blo = arith::DivUIOp::create(b, loc, lo, idx(bm));
    Value bhi = arith::SelectOp::create(b, loc,
                                        arith::CmpIOp::create(b, loc, P::ule, hi, lo), blo,
                                        arith::CeilDivUIOp::create(b, loc, hi, idx(bm)));
    blockLo.push_back(blo);
    blockHi.push_back(bhi);
  }
  if (blockLo.size() == 1)
    return loop(blockLo[0], blockHi[0], visit);
  // Several intervals, one loop (one copy of the tile code) in one of two ways,
  // whichever has fewer steps at run time:
  //  - positions: the intervals end to end, position p of interval r being block
  //    blockLo[r] + p - start[r], a block that an earlier interval covered skipped
  //    (disjoint intervals far apart: sinks and a window);
  //  - hull: every block of [min blockLo, max blockHi) that some interval covers
  //    (intervals that overlap, whose positions would repeat blocks).
  // Either way a block is visited once, and the steps are at most ceil(Sq / BM).
  size_t n = blockLo.size();
  auto inside = [&](Value qb, size_t r) {
    return arith::AndIOp::create(b, loc, arith::CmpIOp::create(b, loc, P::uge, qb, blockLo[r]),
                                 arith::CmpIOp::create(b, loc, P::ult, qb, blockHi[r]))
        .getResult();
  };
  SmallVector<Value> start{idx(0)};
  Value hullLo = qBlocks, hullHi = idx(0);
  for (size_t r = 0; r < n; ++r) {
    Value size = arith::SubIOp::create(b, loc, blockHi[r], blockLo[r]);
    start.push_back(arith::AddIOp::create(b, loc, start.back(), size));
    Value some = arith::CmpIOp::create(b, loc, P::ugt, size, idx(0));
    hullLo = arith::SelectOp::create(b, loc, some, arith::MinUIOp::create(b, loc, hullLo, blockLo[r]),
                                     hullLo);
    hullHi = arith::SelectOp::create(b, loc, some, arith::MaxUIOp::create(b, loc, hullHi, blockHi[r]),
                                     hullHi);
  }
  Value hull = arith::SubIOp::create(
      b, loc, hullHi, arith::MinUIOp::create(b, loc, hullLo, hullHi)); // 0 when none
  Value byPosition = arith::CmpIOp::create(b, loc, P::ule, start.back(), hull);
  Value steps = arith::SelectOp::create(b, loc, byPosition, start.back(), hull);
  loop(idx(0), steps, [&](Value p) {
    auto at = [&](size_t r) {
      return arith::AddIOp::create(b, loc, blockLo[r], arith::SubIOp::create(b, loc, p, start[r]))
          .getResult();
    };
    Value qbPos = at(n - 1);
    for (size_t r = n - 1; r-- > 0;)
      qbPos = arith::SelectOp::create(
          b, loc, arith::CmpIOp::create(b, loc, P::ult, p, start[r + 1]), at(r), qbPos);
    Value qbHull = arith::AddIOp::create(b, loc, hullLo, p);
    Value qb = arith::SelectOp::create(b, loc, byPosition, qbPos, qbHull);
    // positions: no earlier interval covers qb; hull: some interval covers qb.
    Value earlier = arith::ConstantIntOp::create(b, loc, 0, 1);
    Value any = arith::ConstantIntOp::create(b, loc, 0, 1);
    for (size_t r = 0; r < n; ++r) {
      Value in = inside(qb, r);
      any = arith::OrIOp::create(b, loc, any, in);
      if (r + 1 < n)
        earlier = arith::OrIOp::create(
            b, loc, earlier,
            arith::AndIOp::create(b, loc, arith::CmpIOp::create(b, loc, P::uge, p, start[r + 1]),
                                  in));
    }
    Value fresh = arith::SelectOp::create(
        b, loc, byPosition,
        arith::XOrIOp::create(b, loc, earlier, arith::ConstantIntOp::create(b, loc, 1, 1)), any);
    auto ifFresh = scf::IfOp::create(b, loc, fresh, /*withElseRegion=*/false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(ifFresh.thenBlock());
    visit(qb);
  });
}

void BackwardBuilder::buildKeyGrid() {
  Value kvBlockCount = arith::CeilDivUIOp::create(b, loc, seqKv, idx(bn));
  Block *body =
      gridBody(GridOp::create(b, loc, batch, idx(op.getHeadsKv()), kvBlockCount, bm, bn));
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(body);
  Value bIdx = body->getArgument(0), hkIdx = body->getArgument(1), kb = body->getArgument(2);
  int64_t group = op.getHeadsQ() / op.getHeadsKv();
  Value b64 = toI64(bIdx);
  Value kvLo = arith::MulIOp::create(b, loc, kb, idx(bn));
  Value kvRows = minIdx(idx(bn), arith::SubIOp::create(b, loc, seqKv, kvLo));
  Value kvLo64 = toI64(kvLo);
  Value kvHi64 = toI64(arith::AddIOp::create(b, loc, kvLo, kvRows));
  int64_t d = op.getHeadDim(), dvDim = op.getHeadDimV();
  allocateTiles();
  Value dkAcc = tile({bn, d}), dvAcc = tile({bn, dvDim});
  LoadTileOp::create(b, loc, k, bIdx, hkIdx, kvLo, kvRows, kt,
                     op.getKRope() ? kvOffset : Value(), op.getKRopeAttr());
  LoadTileOp::create(b, loc, v, bIdx, hkIdx, kvLo, kvRows, vt, Value(), RopeAttr());
  FillTileOp::create(b, loc, dkAcc, b.getF32FloatAttr(0.0f));
  FillTileOp::create(b, loc, dvAcc, b.getF32FloatAttr(0.0f));
  Value whole = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, kvRows, idx(bn));

  auto heads = scf::ForOp::create(b, loc, idx(0), idx(group), idx(1));
  b.setInsertionPointToStart(heads.getBody());
  Value hIdx = arith::AddIOp::create(
      b, loc, arith::MulIOp::create(b, loc, hkIdx, idx(group)), heads.getInductionVar());
  Value h64 = toI64(hIdx);

  // The tile of query block qb, unless its class is EMPTY (then nothing is loaded).
  auto visit = [&](Value qb) {
    Value qLo = arith::MulIOp::create(b, loc, qb, idx(bm));
    Value qRows = minIdx(idx(bm), arith::SubIOp::create(b, loc, seqQ, qLo));
    Value qLo64 = toI64(qLo);
    Value qHi64 = toI64(arith::AddIOp::create(b, loc, qLo, qRows));
    IRMapping classMap = inputs;
    cloneConstantsUsedIn(op.getTileClass(), b, classMap);
    Value cls = inlineRegion(b, op.getTileClass(),
                             {b64, h64, qLo64, qHi64, kvLo64, kvHi64, qOffset, kvOffset, seqQ64,
                              seqKv64},
                             classMap)[0];
    Value notEmpty = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ne, cls, i32(kEmpty));
    auto ifVisit = scf::IfOp::create(b, loc, notEmpty, /*withElseRegion=*/false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(ifVisit.thenBlock());
    LoadTileOp::create(b, loc, q, bIdx, hIdx, qLo, qRows, qt, op.getQRope() ? qOffset : Value(),
                       op.getQRopeAttr());
    LoadTileOp::create(b, loc, dO, bIdx, hIdx, qLo, qRows, dot, Value(), RopeAttr());
    LoadTileOp::create(b, loc, o, bIdx, hIdx, qLo, qRows, ot, Value(), RopeAttr());
    LoadRowsOp::create(b, loc, lse, bIdx, hIdx, qLo, qRows, lseT);
    LoadRowsOp::create(b, loc, dlse, bIdx, hIdx, qLo, qRows, dlseT);
    RowDotTileOp::create(b, loc, dot, ot, delta);
    // Query rows past seq_q take the masked path (their scores become -inf, weight 0).
    Value wholeQ = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, qRows, idx(bm));
    Value full = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, cls, i32(kFull));
    Value unmasked =
        arith::AndIOp::create(b, loc, arith::AndIOp::create(b, loc, whole, wholeQ), full);
    recomputeTile(b64, h64, qLo64, kvLo64, unmasked, /*tensorGrads=*/true);
    TnTileOp::create(b, loc, st, dot, dvAcc);
    TnTileOp::create(b, loc, dp, qt, dkAcc);
  };
  {
    // A scratch region, dropped before the L1 function (whose tensors it reads) is.
    Region queryRanges;
    if (!list)
      buildQueryRanges(op, queryRanges);
    forQueryBlocks(queryRanges, b64, bIdx, h64, hIdx, kb, kvLo64, kvHi64, visit);
  }

  b.setInsertionPointAfter(heads);
  if (RopeAttr rope = op.getKRopeAttr())
    RopeGradTileOp::create(b, loc, dkAcc, kvLo, kvOffset, rope);
  StoreTileOp::create(b, loc, dkAcc, Value(), dk, bIdx, hkIdx, kvLo, kvRows);
  StoreTileOp::create(b, loc, dvAcc, Value(), dv, bIdx, hkIdx, kvLo, kvRows);
  YieldOp::create(b, loc);
}

struct TileBackwardPass : public mlir::attn::impl::AttnTileBackwardBase<TileBackwardPass> {
  using AttnTileBackwardBase::AttnTileBackwardBase;

  void runOnOperation() override {
    if (blockM <= 0 || blockN <= 0 || blockM > 1024 || blockN > 1024) {
      getOperation().emitError("attn-tile-backward: block-m and block-n must be in [1, 1024]");
      return signalPassFailure();
    }
    SmallVector<AttentionOp> ops;
    getOperation().walk([&](AttentionOp op) { ops.push_back(op); });
    for (AttentionOp op : ops) {
      auto func = dyn_cast<func::FuncOp>(op->getParentOp());
      if (!func || !func.getBody().hasOneBlock()) {
        op.emitError("attn-tile-backward: attn.attention must sit directly in a function body");
        return signalPassFailure();
      }
      if (!op.hasBlockAnalysis()) {
        op.emitError("attn-tile-backward: run attn-analyze-blocks first (kv_ranges are missing)");
        return signalPassFailure();
      }
      if (op.getScoreGrad().empty()) {
        op.emitError("attn-tile-backward: run attn-differentiate-score first (score_grad is "
                     "missing)");
        return signalPassFailure();
      }
      if (op.getQStorage() || op.getKvStorage()) {
        op.emitError("attn-tile-backward: the backward over ragged or paged storage is not "
                     "built yet (padded batches only)");
        return signalPassFailure();
      }
      if (op.getSoftmaxBase2()) {
        op.emitError("attn-tile-backward: the backward works in natural-log units (run "
                     "attn-fuse with base2=false)");
        return signalPassFailure();
      }
      for (Value operand : {op.getQ(), op.getK(), op.getV()})
        if (!isa<BlockArgument>(operand)) {
          op.emitError("attn-tile-backward: q, k and v must be function arguments (run "
                       "attn-fuse to fold attn.rope)");
          return signalPassFailure();
        }
      for (Value in : op.getInputs())
        if (!isa<BlockArgument>(in)) {
          op.emitError("attn-tile-backward: extra inputs must be function arguments");
          return signalPassFailure();
        }
      BackwardBuilder builder(op, blockM, blockN);
      if (failed(builder.build(func)))
        return signalPassFailure();
    }
  }
};

} // namespace
