//===- NvidiaPipeline.h - spec -> PTX through LLVM's NVPTX back end -*- C++ -*-===//
#ifndef ATTUNE_CODEGEN_NVIDIA_NVIDIAPIPELINE_H
#define ATTUNE_CODEGEN_NVIDIA_NVIDIAPIPELINE_H

#include "codegen/nvidia/KernelEmitter.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

#include <string>

namespace mlir {
class ModuleOp;
}

namespace attune {

struct PtxResult {
  std::string ptx;
  GpuKernelInfo info;
  double seconds = 0;
  std::string gpuIr; // the kernel before lowering to LLVM (for lit tests), on request
};

/// The kernel as a container module holding `gpu.module @attn_kernels` (structured:
/// scf, arith, llvm, nvvm ops), before any lowering to LLVM, and its ABI.
struct KernelModule {
  mlir::OwningOpRef<mlir::ModuleOp> module;
  GpuKernelInfo info;
};

/// L1 module (imported with the GPU dtype) -> attn-to-nvvm for `config`: the form the
/// simulator runs. Errors are emitted at the ops (a configuration the kernel cannot
/// run: at the attention), or at `l1` for internal ones.
mlir::FailureOr<KernelModule> buildKernelModule(mlir::ModuleOp l1, const GpuConfig &config);

/// L1 module (imported with the GPU dtype) -> analysis -> kernel -> PTX for
/// `config.arch`. Needs no GPU and no CUDA runtime. Errors as buildKernelModule's.
mlir::FailureOr<PtxResult> compileToPtx(mlir::ModuleOp l1, const GpuConfig &config,
                                        bool keepGpuIr = false);

} // namespace attune

#endif
