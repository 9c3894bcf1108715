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

/// L1 module (imported with the GPU dtype) -> analysis -> the kernel as a
/// container module holding `gpu.module @attn_kernels` (structured: scf, arith,
/// math, llvm, nvvm ops), before any lowering to LLVM. The simulator runs this form.
mlir::OwningOpRef<mlir::ModuleOp> buildKernelModule(mlir::ModuleOp l1, const GpuConfig &config,
                                                    GpuKernelInfo &info, std::string &error);

/// L1 module (imported with the GPU dtype) -> analysis -> kernel -> PTX for
/// `config.arch`. Needs no GPU and no CUDA runtime.
bool compileToPtx(mlir::ModuleOp l1, const GpuConfig &config, PtxResult &result,
                  std::string &error, bool keepGpuIr = false);

} // namespace attune

#endif
