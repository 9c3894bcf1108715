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
  void schedule();

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
  // Back ends name the inputs in their ABI (the NVIDIA kernel's "input:<name>").
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

  schedule();

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

  Value kvLo64 = toI64(kvLo);
  Value whole = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, kvRows, idx(bn));
  Value full = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, cls,
                                     arith::ConstantIntOp::create(b, loc, kFull, 32));
  Value unmasked = arith::AndIOp::create(b, loc, whole, full);
  auto epilogue = [&](bool masked) {
    auto score = ScoreTileOp::create(b, loc, s, b64, h64, qLo64, kvLo64, qOffset,
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

/// The key loop: attn.for_kv_blocks over the attention's kv_ranges (or its block
/// list) and tile_class, with processTile as its body.
void KernelBuilder::schedule() {
  auto loop = createKvBlockLoop(b, loc, op, inputs, b64, ValueRange{h64}, qLo64, qHi64,
                                qOffset, kvOffset, seqQ64, seqKv64,
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
      KernelBuilder builder(op, blockM, blockN);
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
