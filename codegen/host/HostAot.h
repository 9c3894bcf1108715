//===- HostAot.h - a bundle's host variant: the kernels as a shared object -*- C++ -*-===//
//
// `attnc compile --arch host` puts a host variant in the bundle: the forward kernel
// (lse always written for softmax, which the backward reads) and the backward
// kernel, lowered as the JIT lowers them (HostProgram.h), optimised for this machine's
// CPU and linked into one shared object that the runtime dlopens (no LLVM at run
// time). The linker is the system's C compiler driver ($ATTUNE_HOST_CC, else cc,
// gcc or clang on PATH).
//
//===----------------------------------------------------------------------===//
#ifndef ATTUNE_CODEGEN_HOST_HOSTAOT_H
#define ATTUNE_CODEGEN_HOST_HOSTAOT_H

#include "mlir/Support/LLVM.h"

#include <cstdint>
#include <string>
#include <vector>

namespace mlir {
class ModuleOp;
}

namespace attune {

/// One kernel of a host library.
struct HostLibraryKernel {
  std::string entry, items;
  std::vector<int64_t> serialGrids;
  bool lse = false;
  bool sequences = false; // takes the per-sequence arguments (HostProgram::sequences)
};

struct HostLibrary {
  HostLibraryKernel forward;
  /// Empty entry: the spec has no backward (none is built when it fails to lower;
  /// `backwardError` says why).
  HostLibraryKernel backward;
  std::string backwardError;
  std::string cpu, features; // what the code was compiled for
  double seconds = 0;
};

/// Compiles `l1` (imported with f32 element types) with BM x BN tiles into the
/// shared object `path`. Errors are emitted at the ops, or at `l1` for the
/// toolchain (no linker, a failed link).
mlir::FailureOr<HostLibrary> compileHostLibrary(mlir::ModuleOp l1, int64_t blockM, int64_t blockN,
                                                const std::string &path);

/// The C compiler driver that links host libraries, or "" when there is none.
std::string findHostLinker();

} // namespace attune

#endif
