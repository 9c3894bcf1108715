//===- KernelPlan.h - what the NVIDIA lowering reads off the L2 program -*- C++ -*-===//
//
// The NVIDIA lowering starts from the tiled program (L2) that attn-tile builds: one
// kernel function holding an attn.grid whose body loads the q tile, walks the key
// schedule (attn.for_kv_blocks) and scores, weighs and accumulates each tile. A
// KernelPlan collects what the lowering needs from it: shapes and element type from
// the buffer types, the scale (attn.qk_tile), the mask and score regions (the masked
// attn.score_tile), the normaliser (attn.softmax_tile / attn.weights_tile), RoPE
// (attn.load_tile), the inputs and their names, lse, and the schedule op. Anything
// the lowering does not understand is an error at the op, never a guess.
//
//===----------------------------------------------------------------------===//
#ifndef ATTUNE_CODEGEN_NVIDIA_KERNELPLAN_H
#define ATTUNE_CODEGEN_NVIDIA_KERNELPLAN_H

#include "codegen/nvidia/SharedMemoryPlan.h"
#include "dialect/AttnOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"

#include <optional>
#include <string>

namespace attune {

struct KernelPlan {
  // Op handles are mutable: reading a region off a handle is not a const method.
  mutable mlir::func::FuncOp kernel;
  mutable mlir::attn::GridOp grid;
  mutable mlir::attn::ForKvBlocksOp schedule;
  /// The PARTIAL-tile epilogue: its mask and score regions are the attention's.
  mutable mlir::attn::ScoreTileOp scoreTile;
  /// The tile loads and the output store (where the GPU passes put their decisions).
  mutable mlir::attn::LoadTileOp qLoad, kLoad, vLoad;
  mutable mlir::attn::StoreTileOp oStore;

  int64_t blockM = 0, blockN = 0;
  int64_t headsQ = 0, headsKv = 0, headDim = 0, headDimV = 0;
  mlir::Type elementType; // of q, k, v (and o)
  double scale = 1.0;
  mlir::attn::Normalizer normalizer = mlir::attn::Normalizer::softmax;
  std::optional<double> sigmoidBeta;
  bool softmaxBase2 = false;
  bool identityScore = false;
  bool lse = false;
  mlir::attn::RopeAttr qRope, kRope;

  /// The kernel's tensor inputs (function arguments, in order) and their names.
  llvm::SmallVector<mlir::Value> inputs;
  llvm::SmallVector<std::string> inputNames;
  /// A per-sequence kernel (attn-tile's `attn.sequences`): how q/o and k/v hold the
  /// batch, and per input and dim whether it is declared Sq or Skv (its extent is then
  /// the sequence's length). The regions read each input through `inputViews[i]`
  /// (the input itself, or attn-tile's per-sequence view of it).
  bool sequences = false;
  mlir::attn::Storage qStorage = mlir::attn::Storage::padded;
  mlir::attn::Storage kvStorage = mlir::attn::Storage::padded;
  enum class SeqDim { none, q, kv };
  llvm::SmallVector<llvm::SmallVector<SeqDim>> inputSeqDims;
  llvm::SmallVector<mlir::Value> inputViews;

  /// With a block list: the position of the list among the inputs, and the query
  /// rows per list row.
  std::optional<unsigned> listInput;
  int64_t listRows = 0;

  /// What attn-gpu-assign-layouts decided (#attn.gpu_target on the grid), and where
  /// attn-gpu-plan-shared-memory put the staged tiles (#attn.shared); absent before.
  mlir::attn::GpuTargetAttr target;
  std::optional<SharedMemoryPlan> smem;

  mlir::Region &mask() const { return scoreTile.getMask(); }
  mlir::Region &score() const { return scoreTile.getScore(); }
  mlir::Region &ranges() const { return schedule.getRanges(); }
  mlir::Region &tileClass() const { return schedule.getTileClass(); }
  mlir::Location loc() const { return grid.getLoc(); }

  /// The plan of `kernel` (an L2 function marked attn.kernel); on failure an error
  /// has been emitted at the op that does not fit.
  static mlir::FailureOr<KernelPlan> of(mlir::func::FuncOp kernel);

  /// The L2 kernel functions (`attn.kernel`, what attn-tile builds) in `module`, in
  /// order: what each NVIDIA pass works on.
  static llvm::SmallVector<mlir::func::FuncOp> kernelsIn(mlir::ModuleOp module);
};

} // namespace attune

#endif
