//===- Passes.h - the attn compiler passes ----------------------*- C++ -*-===//
#ifndef ATTUNE_PASSES_PASSES_H
#define ATTUNE_PASSES_PASSES_H

#include "mlir/Pass/Pass.h"
#include "mlir/Pass/PassManager.h"

#include <cstdint>

namespace mlir {
class ModuleOp;
namespace attn {

#define GEN_PASS_DECL
#include "passes/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "passes/Passes.h.inc"

/// Options of the L1 -> L2 pipeline.
struct TilePipelineOptions {
  int64_t blockM = 64;
  int64_t blockN = 64;
  /// attn-tile's sequence-lengths: per-sequence arguments for padded kernels too.
  bool sequenceLengths = false;
};

/// attn-expand-patterns, attn-fuse, attn-analyze-blocks (and clean-ups): L1 with
/// its block analysis filled in.
void buildAnalysisPipeline(OpPassManager &pm);

/// The analysis pipeline, then attn-tile: L1 -> L2.
void buildTilePipeline(OpPassManager &pm, const TilePipelineOptions &options);

/// The same for the backward: attn-differentiate-score after the expansion,
/// attn-fuse without base 2, attn-tile-backward in place of attn-tile.
void buildBackwardTilePipeline(OpPassManager &pm, const TilePipelineOptions &options);

/// Registers the passes and the named pipeline `attn-to-tiled` with the global
/// registry (for attn-opt).
void registerAttnPipelines();

} // namespace attn
} // namespace mlir

#endif
