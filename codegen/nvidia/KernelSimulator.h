//===- KernelSimulator.h - run the emitted GPU kernel on the CPU --*- C++ -*-===//
//
// A functional SIMT simulator for the structured kernel IR of buildKernelModule
// (scf, arith, math, llvm and nvvm ops): all threads of a CTA step through each op
// in lockstep with per-lane activity masks; ldmatrix, mma.sync and shfl act on whole
// warps with the PTX fragment layouts; cp.async lands at cp.async.wait_group in
// commit-group order, and its destination bytes are in flight from the issue to that
// wait (any access to them in between, by any thread, is a race); shared-memory
// accesses are checked for races between barriers; every global access is checked
// against the bounds of the tensor its address derives from; f32 ex2/lg2/sin/cos (and
// exp/log/tanh built on them) follow PTX's .approx.ftz semantics.
// It proves the GPU kernel's logic (fragment layouts, the key schedule, masking,
// online softmax, stores) where there is no GPU; it says nothing about speed.
//
//===----------------------------------------------------------------------===//
#ifndef ATTUNE_CODEGEN_NVIDIA_KERNELSIMULATOR_H
#define ATTUNE_CODEGEN_NVIDIA_KERNELSIMULATOR_H

#include "codegen/Arguments.h"
#include "codegen/nvidia/KernelEmitter.h"
#include "codegen/reference/Reference.h"

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace mlir {
class ModuleOp;
}

namespace attune {

/// One kernel argument, as the runtime packed it (codegen/bundle/SimDevice.cpp fills
/// these from rt::packParams).
struct SimArg {
  bool pointer = false;
  void *ptr = nullptr;
  int64_t value = 0;
  /// Pointers: the bytes the tensor spans from `ptr` (every global access through it
  /// must stay inside), or -1 when unknown (then unchecked); its name for messages.
  int64_t bytes = -1;
  std::string name;
};


/// Runs `kernel` (gpu.func named `symbol` in `module`) for the whole grid.
bool simulateKernel(mlir::ModuleOp module, const std::string &symbol,
                    std::array<int64_t, 3> grid, int64_t threads, int64_t smemBytes,
                    const std::vector<SimArg> &args, std::string &error);

// The launch of whole variants (manifest, arguments, grid, split-KV) is the runtime's:
// codegen/bundle/SimDevice.h puts this simulator behind the runtime's Device.

} // namespace attune

#endif
