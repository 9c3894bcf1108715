//===- MathToPtxApprox.cpp - f32 transcendentals as PTX approximations ---===//
#include "codegen/nvidia/PtxMath.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/IR/Builders.h"

using namespace mlir;

namespace attune {

/// f32 transcendental functions as PTX approximations (ex2, lg2, sin, cos, tanh):
/// the kernel needs no libdevice.
void lowerMathToPtxApprox(Operation *root) {
  SmallVector<Operation *> ops;
  root->walk([&](Operation *op) {
    if (isa<math::ExpOp, math::Exp2Op, math::LogOp, math::Log2Op, math::TanhOp, math::SinOp,
            math::CosOp>(op) &&
        op->getResult(0).getType().isF32())
      ops.push_back(op);
  });
  for (Operation *op : ops) {
    OpBuilder b(op);
    Location loc = op->getLoc();
    FloatType f32 = b.getF32Type();
    auto call = [&](StringRef name, Value x) -> Value {
      return LLVM::CallIntrinsicOp::create(b, loc, f32, b.getStringAttr(name), ValueRange{x})
          .getResult(0);
    };
    auto cst = [&](double v) -> Value {
      return arith::ConstantFloatOp::create(b, loc, f32, APFloat(float(v)));
    };
    Value x = op->getOperand(0), r;
    if (isa<math::Exp2Op>(op))
      r = call(ptx::kEx2, x);
    else if (isa<math::ExpOp>(op))
      r = call(ptx::kEx2, arith::MulFOp::create(b, loc, x, cst(1.4426950408889634)));
    else if (isa<math::Log2Op>(op))
      r = call(ptx::kLg2, x);
    else if (isa<math::LogOp>(op))
      r = arith::MulFOp::create(b, loc, call(ptx::kLg2, x), cst(0.69314718055994531));
    else if (isa<math::TanhOp>(op)) {
      // tanh(x) = 1 - 2 / (exp(2x) + 1): exact limits at +-inf, bf16-grade accuracy.
      Value e = call(ptx::kEx2,
                     arith::MulFOp::create(b, loc, x, cst(2.0 * 1.4426950408889634)));
      Value denom = arith::AddFOp::create(b, loc, e, cst(1.0));
      r = arith::SubFOp::create(b, loc, cst(1.0),
                                arith::DivFOp::create(b, loc, cst(2.0), denom));
    }
    else if (isa<math::SinOp>(op))
      r = call(ptx::kSin, x);
    else
      r = call(ptx::kCos, x);
    op->getResult(0).replaceAllUsesWith(r);
    op->erase();
  }
}


} // namespace attune
