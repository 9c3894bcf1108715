//===- TileBackward.cpp - attn.attention (L1) -> the tiled backward (L2) ---===//
//
// FlashAttention-2's backward as two grids over the same tiles, deterministic by
// construction (no accumulation is shared between grid items but the tensor
// gradients, which a back end sums in a fixed order):
//
//   func @f(q, k, v, <inputs>, o, lse, dO, dlse, dq, dk, dv, <float input grads>,
//           q_offset, kv_offset)
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
//       for each query head of the kv head, for each query block whose schedule
//       visits this key block (its kv_ranges cover it and tile_class is not EMPTY):
//         the same tile recomputation, then
//         ds = scale * score_grad(dS', s), adding into the float inputs' gradients
//         dv += p^T dO, dk += ds^T q
//       dk <- R^T dk (RoPE); store dk, dv (summed over the kv head's query heads)
//
// The key-major grid finds the query blocks of a key block by evaluating the
// forward's kv_ranges and tile_class for each query block (the transpose of the
// schedule by search, O(Sq / BM) cheap evaluations per key block; EMPTY tiles are
// never loaded). Runs after attn-differentiate-score and attn-analyze-blocks, and
// after attn-fuse without base 2 (the backward works in natural-log units).
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
  buildQueryGrid();
  buildKeyGrid();
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

void BackwardBuilder::buildQueryGrid() {
  Value qBlocks = arith::CeilDivUIOp::create(b, loc, seqQ, idx(bm));
  auto grid = GridOp::create(b, loc, batch, idx(op.getHeadsQ()), qBlocks, bm, bn);
  Block *body = new Block();
  grid.getBody().push_back(body);
  for (int i = 0; i < 3; ++i)
    body->addArgument(b.getIndexType(), loc);
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
                                kvListFor(op, inputBuffers, bm, bn), bn);
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

void BackwardBuilder::buildKeyGrid() {
  Value kvBlocks = arith::CeilDivUIOp::create(b, loc, seqKv, idx(bn));
  auto grid = GridOp::create(b, loc, batch, idx(op.getHeadsKv()), kvBlocks, bm, bn);
  Block *body = new Block();
  grid.getBody().push_back(body);
  for (int i = 0; i < 3; ++i)
    body->addArgument(b.getIndexType(), loc);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(body);
  Value bIdx = body->getArgument(0), hkIdx = body->getArgument(1), kb = body->getArgument(2);
  int64_t group = op.getHeadsQ() / op.getHeadsKv();
  Value b64 = toI64(bIdx);
  Value kvLo = arith::MulIOp::create(b, loc, kb, idx(bn));
  Value kvRows = minIdx(idx(bn), arith::SubIOp::create(b, loc, seqKv, kvLo));
  Value kvLo64 = toI64(kvLo);
  Value kvEnd64 = toI64(arith::AddIOp::create(b, loc, kvLo, idx(bn)));
  Value kvHi64 = toI64(arith::AddIOp::create(b, loc, kvLo, kvRows));
  int64_t d = op.getHeadDim(), dvDim = op.getHeadDimV();
  allocateTiles();
  Value dkAcc = tile({bn, d}), dvAcc = tile({bn, dvDim});
  LoadTileOp::create(b, loc, k, bIdx, hkIdx, kvLo, kvRows, kt,
                     op.getKRope() ? kvOffset : Value(), op.getKRopeAttr());
  LoadTileOp::create(b, loc, v, bIdx, hkIdx, kvLo, kvRows, vt, Value(), RopeAttr());
  FillTileOp::create(b, loc, dkAcc, b.getF32FloatAttr(0.0f));
  FillTileOp::create(b, loc, dvAcc, b.getF32FloatAttr(0.0f));
  Value qBlocks = arith::CeilDivUIOp::create(b, loc, seqQ, idx(bm));
  Value whole = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, kvRows, idx(bn));

  auto heads = scf::ForOp::create(b, loc, idx(0), idx(group), idx(1));
  b.setInsertionPointToStart(heads.getBody());
  Value hIdx = arith::AddIOp::create(
      b, loc, arith::MulIOp::create(b, loc, hkIdx, idx(group)), heads.getInductionVar());
  Value h64 = toI64(hIdx);
  auto blocks = scf::ForOp::create(b, loc, idx(0), qBlocks, idx(1));
  b.setInsertionPointToStart(blocks.getBody());
  Value qLo = arith::MulIOp::create(b, loc, blocks.getInductionVar(), idx(bm));
  Value qRows = minIdx(idx(bm), arith::SubIOp::create(b, loc, seqQ, qLo));
  Value qLo64 = toI64(qLo);
  Value qHi64 = toI64(arith::AddIOp::create(b, loc, qLo, qRows));

  // Does the forward's schedule of this query block visit this key block? Its
  // intervals, clamped to [0, seq_kv), cover blocks [lo / BN, ceil(hi / BN)).
  IRMapping rangeMap = inputs, classMap = inputs;
  cloneConstantsUsedIn(op.getKvRanges(), b, rangeMap);
  SmallVector<Value> ranges =
      inlineRegion(b, op.getKvRanges(),
                   {b64, h64, qLo64, qHi64, qOffset, kvOffset, seqQ64, seqKv64}, rangeMap);
  Value covered = arith::ConstantIntOp::create(b, loc, 0, 1);
  for (size_t r = 0; r + 1 < ranges.size(); r += 2) {
    Value lo = arith::MaxSIOp::create(b, loc, ranges[r], i64(0));
    Value hi = arith::MinSIOp::create(b, loc, ranges[r + 1], seqKv64);
    Value nonEmpty = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::slt, lo, hi);
    Value startsBefore = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::slt, lo, kvEnd64);
    Value endsAfter = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::sgt, hi, kvLo64);
    Value hit = arith::AndIOp::create(b, loc, nonEmpty,
                                      arith::AndIOp::create(b, loc, startsBefore, endsAfter));
    covered = arith::OrIOp::create(b, loc, covered, hit);
  }
  cloneConstantsUsedIn(op.getTileClass(), b, classMap);
  Value cls = inlineRegion(b, op.getTileClass(),
                           {b64, h64, qLo64, qHi64, kvLo64, kvHi64, qOffset, kvOffset, seqQ64,
                            seqKv64},
                           classMap)[0];
  Value notEmpty = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ne, cls, i32(kEmpty));
  auto visit = scf::IfOp::create(b, loc, arith::AndIOp::create(b, loc, covered, notEmpty),
                                 /*withElseRegion=*/false);
  b.setInsertionPointToStart(visit.thenBlock());
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
