//===- HostProgram.h - the host back end's lowering, shared by JIT and AOT -*- C++ -*-===//
//
// One lowering for both ways a host kernel runs: in process (HostKernel, the JIT of
// `attnc run --backend cpu`) and ahead of time (compileHostLibrary, the shared object
// of a bundle's host variant that the runtime dlopens). Either way the kernel is
// called through the packed entries of runtime/src/HostLaunch.h, over threads.
//
//===----------------------------------------------------------------------===//
#ifndef ATTUNE_CODEGEN_HOST_HOSTPROGRAM_H
#define ATTUNE_CODEGEN_HOST_HOSTPROGRAM_H

#include "codegen/host/HostJit.h"

#include "HostLaunch.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

#include <string>
#include <vector>

namespace attune {

/// A kernel lowered to the LLVM dialect, with its packed entries.
struct HostProgram {
  mlir::OwningOpRef<mlir::ModuleOp> module;
  /// The packed entry (rt::HostEntryFn) and the item count (rt::HostItemsFn).
  std::string entry, items;
  /// The grids that accumulate into tensor gradients (run serially), and how many
  /// grids there are.
  std::vector<int64_t> serialGrids;
  int64_t gridCount = 0;
  /// The forward: whether it writes lse (an argument after o). The backward: whether
  /// it reads the forward's lse (softmax).
  bool lse = false;
  /// The kernel takes the per-sequence arguments after the offsets (attn-tile's
  /// sequence-lengths; every host forward): the sequence buffers, then
  /// q_offset_from_lengths and max_seq_q (int64).
  bool sequences = false;
};

/// L1 (`l1` is cloned) -> the tile pipeline (forward or backward per `options`) ->
/// loops over one flat item range -> LLVM dialect, with the packed entries named
/// `entryName` and `entryName`_items. Everything else in the module gets internal
/// linkage. Errors are emitted at the ops.
mlir::FailureOr<HostProgram> lowerHostProgram(mlir::ModuleOp l1, const HostCompileOptions &options,
                                              llvm::StringRef entryName);

/// Runs a host program's items over `threads` threads (rt::hostThreads(threads)),
/// its serial grids each in one thread. `args`: the tensor descriptors' pointers, then
/// the addresses of q_offset and kv_offset.
void runHostProgram(rt::HostEntryFn entry, rt::HostItemsFn items,
                    const std::vector<int64_t> &serialGrids, std::vector<void *> args,
                    int threads);

/// LLVM's native target, initialised once.
void initHostTarget();

} // namespace attune

#endif
