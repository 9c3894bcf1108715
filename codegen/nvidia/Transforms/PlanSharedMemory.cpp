//===- PlanSharedMemory.cpp - place the tiles staged through shared memory -===//
//
// The second step of the NVIDIA lowering: where Q, K, V (double-buffered), the staged
// score tile and O lie in the CTA's dynamic shared memory (SharedMemoryPlan.h),
// written into the IR as #attn.shared places for the conversion to follow.
//
//===----------------------------------------------------------------------===//
#include "codegen/nvidia/KernelPlan.h"
#include "codegen/nvidia/NvidiaPasses.h"
#include "codegen/nvidia/SharedMemoryPlan.h"

namespace mlir::attn {
#define GEN_PASS_DEF_ATTNGPUPLANSHAREDMEMORY
#include "codegen/nvidia/NvidiaPasses.h.inc"
} // namespace mlir::attn

using namespace mlir;
using namespace mlir::attn;

namespace {

/// Hopper's per-CTA limit (cudaDevAttrMaxSharedMemoryPerBlockOptin on H100/H200). Other
/// archs' PTX runs on newer GPUs too: the runtime checks their size at load.
constexpr int64_t kHopperSmem = 232448;

struct PlanSharedMemoryPass
    : public mlir::attn::impl::AttnGpuPlanSharedMemoryBase<PlanSharedMemoryPass> {
  void runOnOperation() override {
    for (func::FuncOp f : attune::KernelPlan::kernelsIn(getOperation()))
      if (failed(plan(f)))
        return signalPassFailure();
  }

  LogicalResult plan(func::FuncOp kernel) {
    FailureOr<attune::KernelPlan> plan = attune::KernelPlan::of(kernel);
    if (failed(plan))
      return failure();
    if (!plan->target)
      return plan->grid.emitError("no #attn.gpu_target: run attn-gpu-assign-layouts first");
    bool wgmma = plan->target.getMma() == MmaKind::wgmma;
    attune::SharedMemoryPlan smem =
        attune::planSharedMemory(*plan, plan->blockM, plan->blockN, wgmma);
    int64_t launchBytes = smem.bytes + (wgmma ? 1024 : 0);
    if (plan->target.getArch().getValue() == "sm_90a" && launchBytes > kHopperSmem)
      return plan->grid.emitError("the tiles need ")
             << launchBytes << " bytes of shared memory per CTA, over Hopper's "
             << kHopperSmem << " (smaller block_m or block_n)";
    MLIRContext *ctx = &getContext();
    plan->qLoad->setAttr("smem", smem.q.toAttr(ctx));
    plan->kLoad->setAttr("smem", smem.k.toAttr(ctx));
    plan->vLoad->setAttr("smem", smem.v.toAttr(ctx));
    plan->oStore->setAttr("smem", smem.o.toAttr(ctx));
    if (smem.s)
      plan->scoreTile->setAttr("smem", smem.s->toAttr(ctx));
    plan->grid->setAttr("smem_bytes", IntegerAttr::get(IntegerType::get(ctx, 64), smem.bytes));
    // K is copied two tiles ahead of P V in the pipelined wgmma loop, one otherwise.
    plan->schedule->setAttr("lookahead", IntegerAttr::get(IntegerType::get(ctx, 64),
                                                          plan->target.getPipelined() ? 2 : 1));
    return success();
  }
};

} // namespace
