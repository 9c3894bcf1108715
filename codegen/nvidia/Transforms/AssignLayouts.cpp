//===- AssignLayouts.cpp - L2 grid -> CTAs, warps, tensor cores, layouts --===//
//
// The first step of the NVIDIA lowering: decides how the grid maps onto the GPU
// (#attn.gpu_target) and says, as each tile buffer's memory space, how its values are
// spread over the threads (#attn.mma, #attn.dot_operand, #attn.rows). Refused
// configurations are errors at the attn.grid.
//
//===----------------------------------------------------------------------===//
#include "codegen/nvidia/KernelEmitter.h"
#include "codegen/nvidia/KernelPlan.h"
#include "codegen/nvidia/NvidiaPasses.h"

#include "mlir/Dialect/MemRef/IR/MemRef.h"

namespace mlir::attn {
#define GEN_PASS_DEF_ATTNGPUASSIGNLAYOUTS
#include "codegen/nvidia/NvidiaPasses.h.inc"
} // namespace mlir::attn

using namespace mlir;
using namespace mlir::attn;

namespace {

/// Gives the buffer `tile` the layout `encoding` (its memory space).
void setLayout(Value tile, Attribute encoding) {
  auto type = cast<MemRefType>(tile.getType());
  tile.setType(MemRefType::get(type.getShape(), type.getElementType(), type.getLayout(),
                               encoding));
}

struct AssignLayoutsPass
    : public mlir::attn::impl::AttnGpuAssignLayoutsBase<AssignLayoutsPass> {
  using AttnGpuAssignLayoutsBase::AttnGpuAssignLayoutsBase;

  void runOnOperation() override {
    for (func::FuncOp f : attune::KernelPlan::kernelsIn(getOperation()))
      if (failed(assign(f)))
        return signalPassFailure();
  }

  LogicalResult assign(func::FuncOp kernel) {
    FailureOr<attune::KernelPlan> plan = attune::KernelPlan::of(kernel);
    if (failed(plan))
      return failure();
    attune::GpuConfig config;
    config.blockM = plan->blockM;
    config.blockN = plan->blockN;
    config.arch = arch;
    config.wgmma = wgmma;
    config.packGqa = packGqa;
    config.pipeline = pipeline;
    auto refuse = [&] {
      return plan->grid.emitError("this kernel cannot run as ") << config.name() << ": ";
    };
    if (failed(attune::checkGpuConfig(*plan, config, refuse)))
      return failure();

    MLIRContext *ctx = &getContext();
    MmaKind kind = wgmma ? MmaKind::wgmma : MmaKind::mma_sync;
    plan->grid->setAttr("gpu", GpuTargetAttr::get(ctx, StringAttr::get(ctx, arch),
                                                  config.warps(), kind, packGqa,
                                                  config.pipelined()));
    auto mma = MmaEncodingAttr::get(ctx, kind, config.warps());
    auto a = DotOperandEncodingAttr::get(ctx, 0, mma);
    auto bOperand = DotOperandEncodingAttr::get(ctx, 1, mma);
    auto rows = RowsEncodingAttr::get(ctx, mma);
    setLayout(plan->qLoad.getTile(), a);
    setLayout(plan->kLoad.getTile(), bOperand);
    setLayout(plan->vLoad.getTile(), bOperand);
    plan->grid.walk([&](Operation *op) {
      if (auto qk = dyn_cast<QkTileOp>(op)) {
        setLayout(qk.getS(), mma);
      } else if (auto pv = dyn_cast<PvTileOp>(op)) {
        setLayout(pv.getAcc(), mma);
      } else if (auto softmax = dyn_cast<SoftmaxTileOp>(op)) {
        for (Value v : {softmax.getM(), softmax.getL(), softmax.getAlpha()})
          setLayout(v, rows);
      }
    });
    // A block list is per head; a packed CTA holds the rows of several.
    if (packGqa && plan->schedule.getList()) {
      plan->schedule.getListMutable().clear();
      plan->schedule->removeAttr("list_rows");
    }
    return success();
  }
};

} // namespace
