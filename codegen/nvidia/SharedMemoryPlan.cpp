//===- SharedMemoryPlan.cpp - where staged tiles lie in shared memory -----===//
#include "codegen/nvidia/SharedMemoryPlan.h"

#include "codegen/nvidia/KernelPlan.h"

#include <algorithm>

using namespace mlir;
using namespace mlir::attn;

namespace attune {

SharedEncodingAttr SmemBuffer::toAttr(MLIRContext *ctx) const {
  return SharedEncodingAttr::get(ctx, offset, stageBytes, stages, rowStride, swizzle);
}

SmemBuffer SmemBuffer::fromAttr(SharedEncodingAttr a) {
  return {a.getOffset(), a.getStageBytes(), a.getStages(), a.getRowStride(), a.getSwizzle()};
}

bool isHeavyRegion(Region &region) {
  bool heavy = false;
  int ops = 0;
  region.walk([&](Operation *inner) {
    ++ops;
    if (inner->getNumRegions() || isa<ContainsOp, BoxContainsOp, BoxSummaryOp, SearchSortedOp>(inner))
      heavy = true;
  });
  return heavy || ops > 48;
}

SharedMemoryPlan planSharedMemory(const KernelPlan &plan, int64_t bm, int64_t bn, bool wgmma) {
  int64_t d = plan.headDim, dv = plan.headDimV;
  SharedMemoryPlan p;
  // Padded rows: 8 more elements keep ldmatrix's eight row reads on distinct banks.
  int64_t qStride = std::max(d, dv) + 8;
  if (wgmma) {
    // 128-byte rows when both head dims allow (fewer, wider wgmma steps), else 64.
    int64_t swizzle = d % 64 == 0 && dv % 64 == 0 ? 128 : 64;
    p.q = {0, bm * d * 2, 1, 0, swizzle};
    p.k = {0, bn * d * 2, 2, 0, swizzle};
    p.v = {0, bn * dv * 2, 2, 0, swizzle};
  } else {
    p.q = {0, bm * qStride * 2, 1, qStride, 0};
    p.k = {0, bn * (d + 8) * 2, 2, d + 8, 0};
    p.v = {0, bn * (dv + 8) * 2, 2, dv + 8, 0};
  }
  // Swizzled slabs are whole swizzle atoms (8 rows), so every tile starts on a
  // swizzle-pattern boundary of the 1024-aligned base.
  p.k.offset = p.q.stageBytes;
  p.v.offset = p.k.offset + p.k.stages * p.k.stageBytes;
  int64_t end = p.v.offset + p.v.stages * p.v.stageBytes;
  // O is staged (padded rows) over the Q area and beyond once the key loop is done.
  p.o = {0, bm * qStride * 2, 1, qStride, 0};
  end = std::max(end, p.o.stageBytes);
  if (isHeavyRegion(plan.mask()) || isHeavyRegion(plan.score())) {
    p.s = SmemBuffer{end, bm * (bn + 1) * 4, 1, bn + 1, 0};
    end += p.s->stageBytes;
  }
  p.bytes = end;
  return p;
}

} // namespace attune
