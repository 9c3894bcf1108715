//===- PtxMath.h - f32 transcendentals as PTX approximations ----*- C++ -*-===//
//
// The kernels need no libdevice: convert-attn-to-nvvm rewrites f32 math.exp2, log2,
// sin and cos into PTX's ex2/lg2/sin/cos.approx.ftz.f32 (as NVVM intrinsic calls) and
// builds exp, log and tanh from them. Only these four instructions reach the
// simulator, which models them as the hardware computes them (PtxMathModel.cpp).
//
//===----------------------------------------------------------------------===//
#ifndef ATTUNE_CODEGEN_NVIDIA_PTXMATH_H
#define ATTUNE_CODEGEN_NVIDIA_PTXMATH_H

namespace mlir {
class Operation;
} // namespace mlir

namespace attune {
namespace ptx {
/// The NVVM intrinsics of the four instructions.
inline constexpr const char *kEx2 = "llvm.nvvm.ex2.approx.ftz.f";
inline constexpr const char *kLg2 = "llvm.nvvm.lg2.approx.ftz.f";
inline constexpr const char *kSin = "llvm.nvvm.sin.approx.ftz.f";
inline constexpr const char *kCos = "llvm.nvvm.cos.approx.ftz.f";
} // namespace ptx

/// Rewrites every f32 math.exp, exp2, log, log2, tanh, sin and cos under `root`.
void lowerMathToPtxApprox(mlir::Operation *root);

/// The four instructions as the simulator runs them (PtxMathModel.cpp): flushed
/// subnormals, the instructions' special values, an error at the documented bound.
namespace ptxmath {
float ex2(float x);
float lg2(float x);
float sin(float x);
float cos(float x);
} // namespace ptxmath

} // namespace attune

#endif
