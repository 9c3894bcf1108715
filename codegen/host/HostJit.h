//===- HostJit.h - compile a spec for the host and run it -------*- C++ -*-===//
//
// The host back end end to end: L1 -> attn-to-tiled (L2) -> attn-lower-tiles-to-loops
// -> LLVM -> in-process JIT (mlir::ExecutionEngine). The compiled kernel runs in
// fp32 on the host; it is the proof that tiling, block skipping, masks, score
// transforms and fusion are right, on machines without a GPU.
//
//===----------------------------------------------------------------------===//
#ifndef ATTUNE_CODEGEN_HOST_HOSTJIT_H
#define ATTUNE_CODEGEN_HOST_HOSTJIT_H

#include "codegen/Arguments.h"
#include "codegen/reference/Reference.h"

#include <memory>
#include <string>

namespace mlir {
class ModuleOp;
class MLIRContext;
} // namespace mlir

namespace attune {

struct HostCompileOptions {
  int64_t blockM = 64, blockN = 64;
  int optLevel = 2;
  /// When set, receives the L2 (tiled) IR and the lowered LLVM-dialect IR.
  std::string *tiledIr = nullptr;
  /// Compile the backward program (attn-to-tiled-backward) instead of the forward.
  bool backward = false;
  /// The forward also writes lse when the spec does not ask for it (the backward
  /// reads it).
  bool forceLse = false;
  /// Threads of a run (rt::hostThreads: 0 = $ATTUNE_NUM_THREADS or the cores).
  int threads = 0;
};

struct HostCompileStats {
  double pipelineSeconds = 0; // L1 -> LLVM dialect
  double jitSeconds = 0;      // LLVM dialect -> machine code
};

class HostKernel {
public:
  /// Compiles the L1 module (imported with f32 element types). The module is
  /// cloned; `context` must outlive the kernel. Errors are emitted at the ops (a pass
  /// that refuses) or at `l1`.
  static mlir::FailureOr<std::unique_ptr<HostKernel>>
  compile(mlir::ModuleOp l1, const HostCompileOptions &options, HostCompileStats *stats = nullptr);
  ~HostKernel();

  /// Runs the kernel on host tensors (o in fp32, lse when the spec asks for it).
  mlir::FailureOr<AttentionResult> run(const AttentionArgs &args);

  /// Runs a backward kernel: the gradients given the forward's o and lse (lse may be
  /// empty for sigmoid and relu), dO and optionally dlse. The same shape checks
  /// as the reference's.
  mlir::FailureOr<AttentionGradients> runBackward(const AttentionArgs &args,
                                                  const AttentionResult &forward,
                                                  const HostTensor &dO, const HostTensor *dlse);

  struct Impl;

private:
  explicit HostKernel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl;
};

/// Registers the host back end's passes (for attn-opt).
void registerHostPasses();

} // namespace attune

#endif
