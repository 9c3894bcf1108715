//===- NvidiaPasses.h - the NVIDIA back end's passes ------------*- C++ -*-===//
#ifndef ATTUNE_CODEGEN_NVIDIA_NVIDIAPASSES_H
#define ATTUNE_CODEGEN_NVIDIA_NVIDIAPASSES_H

#include "mlir/Pass/Pass.h"
#include "mlir/Pass/PassManager.h"

#include <cstdint>
#include <string>

namespace mlir::attn {
#define GEN_PASS_DECL
#include "codegen/nvidia/NvidiaPasses.h.inc"

#define GEN_PASS_REGISTRATION
#include "codegen/nvidia/NvidiaPasses.h.inc"

/// Options of `attn-to-nvvm`: the tile configuration of one kernel variant.
struct NvvmPipelineOptions {
  std::string arch = "sm_80";
  int64_t blockM = 64, blockN = 64;
  bool wgmma = false, packGqa = false, pipeline = true;
};

/// L1 -> the structured kernel module: the analysis pipeline, attn-tile,
/// attn-gpu-assign-layouts, attn-gpu-plan-shared-memory, convert-attn-to-nvvm.
void buildNvvmPipeline(OpPassManager &pm, const NvvmPipelineOptions &options);

/// Registers the passes and the named pipeline `attn-to-nvvm` (for attn-opt).
void registerAttnNvidiaPipeline();
} // namespace mlir::attn

#endif
