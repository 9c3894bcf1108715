//===- Fuse.cpp - RoPE into the q/k reads, log2(e) into the score ---------===//
#include "passes/Passes.h"

#include "dialect/AttnOps.h"

#include "mlir/IR/Builders.h"

#include <cmath>

namespace mlir::attn {
#define GEN_PASS_DEF_ATTNFUSE
#include "passes/Passes.h.inc"
} // namespace mlir::attn

using namespace mlir;
using namespace mlir::attn;

namespace {

RopeAttr ropeAttrOf(RopeOp rope) {
  MLIRContext *ctx = rope.getContext();
  return RopeAttr::get(ctx, rope.getThetaAttr(), rope.getStyle(),
                       static_cast<int64_t>(rope.getRotaryDim()), rope.getScaling(),
                       rope.getFactorAttr(),
                       static_cast<int64_t>(rope.getOriginalMaxPosition()),
                       rope.getBetaFastAttr(), rope.getBetaSlowAttr(), rope.getMscaleAttr());
}

/// Folds a single attn.rope producing `operand` (rotating at `offset`) into the op.
/// Returns the rope attribute, or null when there is nothing (or nothing safe) to fold.
RopeAttr foldRope(AttentionOp op, OpOperand &operand, Value offset) {
  auto rope = operand.get().getDefiningOp<RopeOp>();
  if (!rope || rope.getOffset() != offset)
    return {};
  // A chain of two rotations stays as ops: there is no single fused form.
  if (rope.getInput().getDefiningOp<RopeOp>())
    return {};
  RopeAttr attr = ropeAttrOf(rope);
  operand.set(rope.getInput());
  if (rope->use_empty())
    rope->erase();
  return attr;
}

void moveScoreToBase2(AttentionOp op) {
  constexpr double kLog2e = 1.4426950408889634;
  if (op.getNormalizer() != Normalizer::softmax || op.getSoftmaxBase2())
    return;
  if (op.hasIdentityScore()) {
    // One multiply before exp2: scale * log2(e).
    op.setScaleAttr(FloatAttr::get(Float64Type::get(op.getContext()),
                                   op.getScale().convertToDouble() * kLog2e));
  } else {
    auto yield = cast<YieldOp>(op.getScore().front().getTerminator());
    OpBuilder b(yield);
    Value log2e = arith::ConstantFloatOp::create(b, yield.getLoc(), b.getF32Type(),
                                                 APFloat(static_cast<float>(kLog2e)));
    Value scaled = arith::MulFOp::create(b, yield.getLoc(), yield.getValues()[0], log2e);
    yield->setOperand(0, scaled);
  }
  op.setSoftmaxBase2(true);
}

struct FusePass : public mlir::attn::impl::AttnFuseBase<FusePass> {
  using AttnFuseBase::AttnFuseBase;

  void runOnOperation() override {
    getOperation().walk([&](AttentionOp op) {
      if (!op.getQRope())
        if (RopeAttr r = foldRope(op, op.getQMutable(), op.getQOffset()))
          op.setQRopeAttr(r);
      if (!op.getKRope())
        if (RopeAttr r = foldRope(op, op.getKMutable(), op.getKvOffset()))
          op.setKRopeAttr(r);
      if (base2)
        moveScoreToBase2(op);
    });
  }
};

} // namespace
