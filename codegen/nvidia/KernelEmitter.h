//===- KernelEmitter.h - analysed attention -> an sm_80+ kernel -*- C++ -*-===//
//
// L3gpu. Emits a gpu.module holding one FlashAttention-2 style kernel for an
// analysed attn.attention (after attn-expand-patterns, attn-fuse and
// attn-analyze-blocks) and a tile configuration:
//
//   - a CTA per (query block, query head, batch), or with pack_gqa per (query block,
//     kv head, batch) holding the rows of every query head that shares the kv head
//     (row r is query qLo + r / G of head G hk + r % G), so that each K/V tile is
//     loaded once per group and short query blocks (decoding) still fill the tile;
//     warps split the rows, 16 each;
//   - Q, K and V tiles staged in shared memory by cp.async (16-byte chunks, zero-filled
//     past the sequence ends), K/V double-buffered: the next visited tile's loads are
//     in flight while the current one is computed;
//   - S = Q K^T and O += P V on tensor cores: mma.sync m16n8k16 (bf16 or fp16 in, f32
//     accumulate), fragments read by ldmatrix (.trans for V); P stays in registers as
//     the A operand of P V; or on sm_90a with `wgmma`, wgmma.mma_async m64nNk16 per
//     warpgroup of 64 rows, Q and K (K-major) and V (MN-major) read from shared tiles
//     in the 128-byte swizzle by matrix descriptors, P from registers;
//   - the mask and score regions cloned per accumulator element with its (q, kv)
//     coordinates; FULL tiles run no mask code; online softmax with row max and sum
//     by quad shuffles (exp2, scale and log2(e) folded by attn-fuse);
//   - the key blocks visited are those of the kv_ranges (or block list) that
//     tile_class does not call EMPTY, the same schedule as attn-tile's L2 loops;
//   - O normalised once, staged through shared memory and stored in 16-byte chunks;
//     LSE per row;
//   - split-KV: grid z = batch x num_splits; with several splits, split s visits run s
//     of the key schedule and writes f32 partials (O / l, lse) to scratch buffers that
//     a second kernel, attn_combine, merges by lse.
//
// It starts from the tiled program (L2, see KernelPlan.h): the tile ops say what each
// step computes, attn.for_kv_blocks which key blocks are visited (walked through
// passes/KvSchedule.h one tile ahead, for prefetching).
//
//===----------------------------------------------------------------------===//
#ifndef ATTUNE_CODEGEN_NVIDIA_KERNELEMITTER_H
#define ATTUNE_CODEGEN_NVIDIA_KERNELEMITTER_H

#include "mlir/IR/Diagnostics.h"
#include "mlir/Support/LLVM.h"

#include <cstdint>
#include <string>
#include <vector>

namespace mlir {
class ModuleOp;
} // namespace mlir

namespace attune {

struct KernelPlan;

struct GpuConfig {
  int64_t blockM = 64; // rows per CTA: 16 per warp
  int64_t blockN = 64; // keys per tile
  bool packGqa = false; // rows from all query heads of a kv head (blockM / G queries each)
  /// sm_90a: both matmuls on wgmma (a warpgroup per 64 rows; Q, K and V read by the
  /// tensor cores from 128-byte-swizzled shared tiles, P from registers).
  bool wgmma = false;
  /// wgmma with block_n <= 64: compute S of the next tile on the tensor cores while
  /// this tile's softmax runs (a second S tile live: block_n / 2 more registers).
  bool pipeline = true;
  bool pipelined() const { return wgmma && pipeline && blockN <= 64; }
  std::string arch = "sm_80";
  int64_t warps() const { return blockM / 16; }
  std::string name() const;
};

struct KernelParam {
  std::string name;
  std::string type; // "ptr" | "i64"
};

struct GpuKernelInfo {
  std::string symbol;
  int64_t threads = 0;
  int64_t smemBytes = 0;
  std::vector<KernelParam> params;
  std::string gridX, gridY, gridZ;
  /// The grid in numbers: x = ceil(seq_q / queriesPerCta), y = heads_kv when
  /// perKvHead else heads_q, z = batch.
  int64_t queriesPerCta = 0;
  bool perKvHead = false;
  /// Split-KV: grid z is batch * num_splits; with num_splits > 1 each CTA writes f32
  /// partials into the scratch buffers (name -> byte-size expression) and
  /// `combineSymbol` (grid x = combineGridX, y = z = 1) reduces them into o and lse.
  std::string combineSymbol;
  int64_t combineThreads = 0;
  std::vector<KernelParam> combineParams;
  std::string combineGridX;
  std::vector<std::pair<std::string, std::string>> scratch;
};

/// Whether the configuration can run this attention; else the reason, streamed into
/// the diagnostic `emitError` starts (the caller says where and for which config).
mlir::LogicalResult checkGpuConfig(const KernelPlan &plan, const GpuConfig &config,
                                   llvm::function_ref<mlir::InFlightDiagnostic()> emitError);

/// Adds `gpu.module @attn_kernels` with the kernel of the L2 program `plan` to
/// `target` (a module marked gpu.container_module).
/// Errors are emitted at the plan's attn.grid.
mlir::LogicalResult emitNvidiaKernel(KernelPlan &plan, const GpuConfig &config,
                                     mlir::ModuleOp target, GpuKernelInfo &info);

} // namespace attune

#endif
