//===- AttnToNVVM.cpp - the planned L2 kernel -> gpu.module (nvvm, llvm) --===//
//
// The last step of the NVIDIA lowering: builds the kernel from the tile ops, their
// layouts (attn-gpu-assign-layouts) and shared-memory places
// (attn-gpu-plan-shared-memory) through the KernelEmitter, and records the bundle
// ABI of what it built on the gpu.module (`attn.abi`), where the bundle writer and
// the simulator read it.
//
//===----------------------------------------------------------------------===//
#include "codegen/TensorReads.h"
#include "codegen/nvidia/KernelAbi.h"
#include "codegen/nvidia/KernelEmitter.h"
#include "codegen/nvidia/KernelPlan.h"
#include "codegen/nvidia/NvidiaPasses.h"
#include "codegen/nvidia/PtxMath.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"

namespace mlir::attn {
#define GEN_PASS_DEF_CONVERTATTNTONVVM
#include "codegen/nvidia/NvidiaPasses.h.inc"
} // namespace mlir::attn

using namespace mlir;
using namespace mlir::attn;

namespace {

struct ConvertAttnToNVVMPass
    : public mlir::attn::impl::ConvertAttnToNVVMBase<ConvertAttnToNVVMPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    SmallVector<func::FuncOp> kernels = attune::KernelPlan::kernelsIn(module);
    if (kernels.size() > 1) {
      kernels[1].emitError("convert-attn-to-nvvm builds one kernel module per module; "
                           "this is the second attn kernel");
      return signalPassFailure();
    }
    for (func::FuncOp f : kernels)
      if (failed(convert(module, f)))
        return signalPassFailure();
  }

  LogicalResult convert(ModuleOp module, func::FuncOp kernel) {
    FailureOr<attune::KernelPlan> plan = attune::KernelPlan::of(kernel);
    if (failed(plan))
      return failure();
    if (!plan->target)
      return plan->grid.emitError("no #attn.gpu_target: run attn-gpu-assign-layouts first");
    if (!plan->smem)
      return plan->grid.emitError(
          "the staged tiles have no #attn.shared places: run attn-gpu-plan-shared-memory "
          "first");
    attune::GpuConfig config;
    config.blockM = plan->blockM;
    config.blockN = plan->blockN;
    config.arch = plan->target.getArch().str();
    config.wgmma = plan->target.getMma() == MmaKind::wgmma;
    config.packGqa = plan->target.getPackGqa();
    config.pipeline = plan->target.getPipelined();
    if (config.warps() != plan->target.getWarps())
      return plan->grid.emitError("#attn.gpu_target says ")
             << plan->target.getWarps() << " warps; block_m " << plan->blockM << " needs "
             << config.warps();
    attune::GpuKernelInfo info;
    if (failed(attune::emitNvidiaKernel(*plan, config, module, info)))
      return failure();
    for (auto gpuModule : module.getOps<gpu::GPUModuleOp>())
      gpuModule->setAttr("attn.abi", attune::kernelAbiAttr(info, &getContext()));
    kernel.erase();
    attune::lowerTensorReads(module);
    for (auto gpuModule : module.getOps<gpu::GPUModuleOp>())
      attune::lowerMathToPtxApprox(gpuModule);
    return success();
  }
};

} // namespace
