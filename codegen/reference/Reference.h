//===- Reference.h - the float64 reference back end -------------*- C++ -*-===//
//
// The oracle of every other back end: evaluates an L1 function (attn.rope ops and one
// attn.attention) literally, for every (b, h, i, j), in double precision. It is
// written to be obviously right, not fast.
//
//===----------------------------------------------------------------------===//
#ifndef ATTUNE_CODEGEN_REFERENCE_REFERENCE_H
#define ATTUNE_CODEGEN_REFERENCE_REFERENCE_H

#include "codegen/Arguments.h"

#include "mlir/Support/LLVM.h"
#include "llvm/Support/LogicalResult.h"

namespace mlir {
class ModuleOp;
}

namespace attune {

struct AttentionResult {
  HostTensor o;    // [B, Hq, Sq, Dv]
  HostTensor lse;  // [B, Hq, Sq] natural log; -inf for rows with no allowed key
};

/// Runs the single function of `module`. Fails with an error at the op the reference
/// cannot evaluate, or (without a location) on arguments that do not fit the function.
mlir::FailureOr<AttentionResult> runReference(mlir::ModuleOp module, const AttentionArgs &args,
                                              int threads = 0);

/// The gradients of a scalar loss L through the attention, given dO = dL/do (and
/// optionally dlse = dL/dlse, softmax only): dq, dk, dv of the function's q, k, v
/// (before any attn.rope; dk, dv summed over the query heads of each kv head) and
/// dL/dt for every float extra input t, by name (zero where the score never reads
/// t). Recomputes the forward itself; the derivatives of the named score transforms
/// are its own (RegionProgram::runGrad), not the compiler's. Fully masked rows give
/// zero gradients.
struct AttentionGradients {
  HostTensor dq, dk, dv;
  std::map<std::string, HostTensor> dinputs;
};
mlir::FailureOr<AttentionGradients> runReferenceBackward(mlir::ModuleOp module,
                                                         const AttentionArgs &args,
                                                         const HostTensor &dO,
                                                         const HostTensor *dlse,
                                                         int threads = 0);

/// Applies rotary embedding to a [B, H, S, D] tensor at positions row + offset,
/// with the parameters of an attn.rope op.
struct RopeParams {
  double theta = 10000.0;
  bool interleaved = false;
  int64_t rotaryDim = 0;
  enum class Scaling { None, Linear, Ntk, Yarn } scaling = Scaling::None;
  double factor = 1.0;
  int64_t originalMaxPosition = 0;
  double betaFast = 32.0, betaSlow = 1.0, mscale = 1.0;
};
void applyRope(HostTensor &x, int64_t offset, const RopeParams &params);
/// The transpose of applyRope (the map a gradient goes back through).
void applyRopeTranspose(HostTensor &g, int64_t offset, const RopeParams &params);
/// Per-pair inverse frequencies (radians per position) after scaling; pair m
/// rotates features (m, m + R/2) or (2m, 2m + 1).
std::vector<double> ropeFrequencies(const RopeParams &params);

} // namespace attune

#endif
