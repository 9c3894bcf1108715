//===- NvidiaPipeline.cpp - spec -> PTX through LLVM's NVPTX back end -----===//
#include "codegen/nvidia/NvidiaPipeline.h"
#include "codegen/nvidia/KernelAbi.h"
#include "codegen/nvidia/NvidiaPasses.h"

#include "codegen/Diagnostics.h"
#include "codegen/TensorReads.h"
#include "dialect/AttnOps.h"
#include "passes/Passes.h"

#include "mlir/Conversion/ArithToLLVM/ArithToLLVM.h"
#include "mlir/Conversion/ControlFlowToLLVM/ControlFlowToLLVM.h"
#include "mlir/Conversion/FuncToLLVM/ConvertFuncToLLVM.h"
#include "mlir/Conversion/NVVMToLLVM/NVVMToLLVM.h"
#include "mlir/Conversion/UBToLLVM/UBToLLVM.h"
#include "mlir/Conversion/GPUToNVVM/GPUToNVVMPass.h"
#include "mlir/Conversion/IndexToLLVM/IndexToLLVM.h"
#include "mlir/Conversion/MathToLLVM/MathToLLVM.h"
#include "mlir/Conversion/MemRefToLLVM/MemRefToLLVM.h"
#include "mlir/Conversion/ReconcileUnrealizedCasts/ReconcileUnrealizedCasts.h"
#include "mlir/Conversion/SCFToControlFlow/SCFToControlFlow.h"
#include "mlir/Dialect/Arith/Transforms/Passes.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/GPU/Transforms/Passes.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Target/LLVM/NVVM/Target.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/GPU/GPUToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "llvm/Support/CommandLine.h"

#include <mutex>
#include "mlir/Target/LLVMIR/Dialect/NVVM/NVVMToLLVMIRTranslation.h"
#include "mlir/Transforms/Passes.h"
#include "llvm/Support/raw_ostream.h"

#include <chrono>

using namespace mlir;

namespace attune {

static void registerNvidiaTranslations(MLIRContext *ctx) {
  DialectRegistry registry;
  NVVM::registerNVVMTargetInterfaceExternalModels(registry);
  registerBuiltinDialectTranslation(registry);
  registerLLVMDialectTranslation(registry);
  registerGPUDialectTranslation(registry);
  registerNVVMDialectTranslation(registry);
  // convert-gpu-to-nvvm converts the dialects that provide these interfaces.
  arith::registerConvertArithToLLVMInterface(registry);
  cf::registerConvertControlFlowToLLVMInterface(registry);
  registerConvertMathToLLVMInterface(registry);
  registerConvertMemRefToLLVMInterface(registry);
  index::registerConvertIndexToLLVMInterface(registry);
  registerConvertFuncToLLVMInterface(registry);
  ub::registerConvertUBToLLVMInterface(registry);
  registerConvertNVVMToLLVMInterface(registry);
  ctx->appendDialectRegistry(registry);
  ctx->loadDialect<gpu::GPUDialect, NVVM::NVVMDialect, LLVM::LLVMDialect>();
}

FailureOr<KernelModule> buildKernelModule(ModuleOp l1, const GpuConfig &config) {
  MLIRContext *ctx = l1.getContext();
  registerNvidiaTranslations(ctx);
  KernelModule out;
  out.module = cast<ModuleOp>(l1->clone());
  // attn-to-nvvm, exactly as attn-opt runs it.
  PassManager pm(ctx);
  attn::NvvmPipelineOptions options;
  options.arch = config.arch;
  options.blockM = config.blockM;
  options.blockN = config.blockN;
  options.wgmma = config.wgmma;
  options.packGqa = config.packGqa;
  options.pipeline = config.pipeline;
  attn::buildNvvmPipeline(pm, options);
  if (failed(pm.run(*out.module)))
    return failure(); // the passes said why, at the ops
  auto gpuModules = out.module->getOps<gpu::GPUModuleOp>();
  if (gpuModules.empty())
    return l1.emitError("the module holds no attn.attention");
  FailureOr<GpuKernelInfo> abi = readKernelAbi(*gpuModules.begin());
  if (failed(abi))
    return failure();
  out.info = *abi;
  if (failed(verify(*out.module)))
    return l1.emitError("internal error: the emitted kernel does not verify");
  return out;
}

/// 32-bit shared-memory pointers in the NVPTX back end. With the default 64-bit ones,
/// every shared address (ldmatrix, cp.async, st.shared) is a 64-bit sum of its own and
/// nothing folds into the instructions' immediate offsets; with 32-bit ones the dense
/// d128 kernel's PTX has 16% fewer instructions and ptxas uses 236 registers instead of
/// 255. The back end has no per-module switch, only this process-wide option (what
/// clang's -fcuda-short-ptr sets); Attune is its only NVPTX user in the process.
static void useShortSharedPointers() {
  static std::once_flag once;
  std::call_once(once, [] {
    auto &options = llvm::cl::getRegisteredOptions();
    auto it = options.find("nvptx-short-ptr");
    if (it != options.end())
      static_cast<llvm::cl::opt<bool> *>(it->second)->setValue(true);
  });
}

FailureOr<PtxResult> compileToPtx(ModuleOp l1, const GpuConfig &config, bool keepGpuIr) {
  useShortSharedPointers();
  auto t0 = std::chrono::steady_clock::now();
  MLIRContext *ctx = l1.getContext();
  FailureOr<KernelModule> kernelModule = buildKernelModule(l1, config);
  if (failed(kernelModule))
    return failure();
  OwningOpRef<ModuleOp> container = std::move(kernelModule->module);
  PtxResult result;
  result.info = kernelModule->info;
  if (keepGpuIr) {
    llvm::raw_string_ostream os(result.gpuIr);
    container->print(os);
  }
  // Only the division forms LLVM lacks are expanded: arith-expand would also turn
  // every max into compare-and-select chains, where PTX has max.f32.
  {
    RewritePatternSet patterns(ctx);
    arith::populateCeilFloorDivExpandOpsPatterns(patterns);
    if (failed(applyPatternsGreedily(*container, std::move(patterns))))
      return l1.emitError("internal error: expanding divisions failed");
  }

  PassManager pm(ctx);
  OpPassManager &kernel = pm.nest<gpu::GPUModuleOp>();
  kernel.addPass(createCanonicalizerPass());
  kernel.addPass(createCSEPass());
  kernel.addPass(memref::createExpandStridedMetadataPass());
  kernel.addPass(createSCFToControlFlowPass());
  kernel.addPass(createConvertMathToLLVMPass());
  ConvertGpuOpsToNVVMOpsOptions nvvm;
  nvvm.useBarePtrCallConv = true;
  kernel.addPass(createConvertGpuOpsToNVVMOps(nvvm));
  kernel.addPass(createReconcileUnrealizedCastsPass());
  kernel.addPass(createCanonicalizerPass());
  GpuNVVMAttachTargetOptions target;
  target.chip = config.arch;
  target.optLevel = 3;
  if (config.arch == "sm_90a" || config.arch == "sm_90")
    target.features = "+ptx80";
  pm.addPass(createGpuNVVMAttachTarget(target));
  GpuModuleToBinaryPassOptions toBinary;
  toBinary.compilationTarget = "isa";
  pm.addPass(createGpuModuleToBinaryPass(toBinary));
  if (failed(pm.run(*container)))
    return l1.emitError("lowering the kernel to PTX failed (an internal error; the passes' "
                        "diagnostics say where)");
  for (auto binary : container->getOps<gpu::BinaryOp>())
    for (Attribute a : binary.getObjects())
      if (auto object = dyn_cast<gpu::ObjectAttr>(a))
        result.ptx = object.getObject().getValue().str();
  if (result.ptx.empty())
    return l1.emitError("internal error: no PTX was produced");
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return result;
}

} // namespace attune
