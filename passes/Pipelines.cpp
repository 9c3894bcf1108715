//===- Pipelines.cpp - named pipelines ------------------------------------===//
#include "passes/Passes.h"

#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"

namespace mlir::attn {

void buildAnalysisPipeline(OpPassManager &pm) {
  pm.addPass(createAttnExpandPatterns());
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createAttnFuse());
  pm.addPass(createAttnAnalyzeBlocks());
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());
}

void buildTilePipeline(OpPassManager &pm, const TilePipelineOptions &options) {
  buildAnalysisPipeline(pm);
  AttnTileOptions tile;
  tile.blockM = options.blockM;
  tile.blockN = options.blockN;
  tile.sequenceLengths = options.sequenceLengths;
  pm.addPass(createAttnTile(tile));
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());
  pm.addPass(createLoopInvariantCodeMotionPass());
}

void buildBackwardTilePipeline(OpPassManager &pm, const TilePipelineOptions &options) {
  pm.addPass(createAttnExpandPatterns());
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createAttnDifferentiateScore());
  AttnFuseOptions fuse;
  fuse.base2 = false;
  pm.addPass(createAttnFuse(fuse));
  pm.addPass(createAttnAnalyzeBlocks());
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());
  AttnTileBackwardOptions tile;
  tile.blockM = options.blockM;
  tile.blockN = options.blockN;
  pm.addPass(createAttnTileBackward(tile));
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());
  pm.addPass(createLoopInvariantCodeMotionPass());
}

namespace {
struct TilePipelineCliOptions : public PassPipelineOptions<TilePipelineCliOptions> {
  Option<int64_t> blockM{*this, "block-m", llvm::cl::desc("rows of q per tile"),
                         llvm::cl::init(64)};
  Option<int64_t> blockN{*this, "block-n", llvm::cl::desc("rows of k/v per tile"),
                         llvm::cl::init(64)};
};
} // namespace

void registerAttnPipelines() {
  registerAttnPasses();
  PassPipelineRegistration<TilePipelineCliOptions>(
      "attn-to-tiled",
      "L1 -> L2: expand patterns, fuse, analyze blocks, tile (FlashAttention loop nest)",
      [](OpPassManager &pm, const TilePipelineCliOptions &cli) {
        TilePipelineOptions options;
        options.blockM = cli.blockM;
        options.blockN = cli.blockN;
        buildTilePipeline(pm, options);
      });
  PassPipelineRegistration<TilePipelineCliOptions>(
      "attn-to-tiled-backward",
      "L1 -> L2 backward: expand patterns, differentiate the score, fold RoPE, analyze "
      "blocks, tile the backward (dq query-major, dk/dv/tensor gradients key-major)",
      [](OpPassManager &pm, const TilePipelineCliOptions &cli) {
        TilePipelineOptions options;
        options.blockM = cli.blockM;
        options.blockN = cli.blockN;
        buildBackwardTilePipeline(pm, options);
      });
}

} // namespace mlir::attn
