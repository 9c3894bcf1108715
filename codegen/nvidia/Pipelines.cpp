//===- Pipelines.cpp - attn-to-nvvm: L1 -> the structured kernel module ---===//
#include "codegen/nvidia/NvidiaPasses.h"

#include "passes/Passes.h"

#include "mlir/Pass/PassRegistry.h"

namespace mlir::attn {

void buildNvvmPipeline(OpPassManager &pm, const NvvmPipelineOptions &options) {
  buildAnalysisPipeline(pm);
  // No clean-ups after attn-tile: the lowering reads the tile ops as attn-tile wrote them.
  AttnTileOptions tile;
  tile.blockM = options.blockM;
  tile.blockN = options.blockN;
  // Every NVIDIA kernel is a per-sequence kernel: a padded bundle takes q_lens and
  // kv_lens too (null: the whole buffers), ragged and paged ones their buffers.
  tile.sequenceLengths = true;
  pm.addPass(createAttnTile(tile));
  AttnGpuAssignLayoutsOptions layouts;
  layouts.arch = options.arch;
  layouts.wgmma = options.wgmma;
  layouts.packGqa = options.packGqa;
  layouts.pipeline = options.pipeline;
  pm.addPass(createAttnGpuAssignLayouts(layouts));
  pm.addPass(createAttnGpuPlanSharedMemory());
  pm.addPass(createConvertAttnToNVVM());
}

namespace {
struct NvvmPipelineCliOptions : public PassPipelineOptions<NvvmPipelineCliOptions> {
  Option<std::string> arch{*this, "arch", llvm::cl::desc("sm_80, sm_86, sm_89, sm_90, sm_90a"),
                           llvm::cl::init("sm_80")};
  Option<int64_t> blockM{*this, "block-m", llvm::cl::desc("query rows per CTA (16 per warp)"),
                         llvm::cl::init(64)};
  Option<int64_t> blockN{*this, "block-n", llvm::cl::desc("keys per tile"), llvm::cl::init(64)};
  Option<bool> wgmma{*this, "wgmma", llvm::cl::desc("both matmuls on wgmma (sm_90a)"),
                     llvm::cl::init(false)};
  Option<bool> packGqa{*this, "pack-gqa",
                       llvm::cl::desc("a CTA per (query block, kv head) with every head's rows"),
                       llvm::cl::init(false)};
  Option<bool> pipeline{*this, "pipeline",
                        llvm::cl::desc("wgmma, block_n <= 64: S(j+1) under softmax(j)"),
                        llvm::cl::init(true)};
};
} // namespace

void registerAttnNvidiaPipeline() {
  registerAttnNvidiaPasses();
  PassPipelineRegistration<NvvmPipelineCliOptions>(
      "attn-to-nvvm",
      "L1 -> the NVIDIA kernel module: analysis, attn-tile, attn-gpu-assign-layouts, "
      "attn-gpu-plan-shared-memory, convert-attn-to-nvvm (what attnc compile --emit gpu-ir "
      "prints)",
      [](OpPassManager &pm, const NvvmPipelineCliOptions &cli) {
        NvvmPipelineOptions options;
        options.arch = cli.arch;
        options.blockM = cli.blockM;
        options.blockN = cli.blockN;
        options.wgmma = cli.wgmma;
        options.packGqa = cli.packGqa;
        options.pipeline = cli.pipeline;
        buildNvvmPipeline(pm, options);
      });
}

} // namespace mlir::attn
