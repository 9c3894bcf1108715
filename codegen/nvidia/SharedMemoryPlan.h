//===- SharedMemoryPlan.h - where staged tiles lie in shared memory -*- C++ -*-===//
//
// The CTA's dynamic shared memory: the Q tile, K and V double-buffered (the next
// visited tile's copies land while this one is computed), the score tile when the
// epilogue is evaluated over a staged copy, and O staged over the Q area at the end.
// attn-gpu-plan-shared-memory computes it and writes it into the IR (#attn.shared);
// convert-attn-to-nvvm reads it back from there.
//
//===----------------------------------------------------------------------===//
#ifndef ATTUNE_CODEGEN_NVIDIA_SHAREDMEMORYPLAN_H
#define ATTUNE_CODEGEN_NVIDIA_SHAREDMEMORYPLAN_H

#include "dialect/AttnOps.h"

#include <cstdint>
#include <optional>

namespace attune {

struct KernelPlan;

/// One staged tile: `stages` buffers of `stageBytes` from byte `offset`; rows of
/// `rowStride` 16-bit elements (padded) when `swizzle` is 0, else swizzled slabs
/// (#attn.shared).
struct SmemBuffer {
  int64_t offset = 0, stageBytes = 0, stages = 1, rowStride = 0, swizzle = 0;

  mlir::attn::SharedEncodingAttr toAttr(mlir::MLIRContext *ctx) const;
  static SmemBuffer fromAttr(mlir::attn::SharedEncodingAttr attr);
};

struct SharedMemoryPlan {
  SmemBuffer q, k, v, o;
  std::optional<SmemBuffer> s; // f32 rows of block_n + 1 (the staged epilogue)
  int64_t bytes = 0;           // what the kernel uses (wgmma asks 1 KiB more to align)
};

/// Whether a mask or score region is evaluated over a staged copy of the score tile
/// (regions with loops or index-list scans, or long ones) rather than cloned per
/// accumulator element.
bool isHeavyRegion(mlir::Region &region);

/// The plan for `plan`'s kernel with tiles of bm x bn on mma.sync or wgmma.
SharedMemoryPlan planSharedMemory(const KernelPlan &plan, int64_t bm, int64_t bn, bool wgmma);

} // namespace attune

#endif
