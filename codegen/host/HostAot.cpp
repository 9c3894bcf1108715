//===- HostAot.cpp - a bundle's host variant: the kernels as a shared object ===//
#include "codegen/host/HostAot.h"

#include "codegen/Diagnostics.h"
#include "codegen/host/HostProgram.h"

#include "mlir/ExecutionEngine/OptUtils.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Export.h"
#include "llvm/IR/LegacyPassManager.h"
#include "llvm/IR/Module.h"
#include "llvm/Linker/Linker.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Target/TargetMachine.h"
#include "llvm/Target/TargetOptions.h"
#include "llvm/TargetParser/Host.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>

using namespace mlir;

namespace attune {

std::string findHostLinker() {
  if (const char *env = std::getenv("ATTUNE_HOST_CC"))
    return llvm::sys::fs::can_execute(env) ? env : "";
  for (const char *name : {"cc", "gcc", "clang", "clang-22"})
    if (auto path = llvm::sys::findProgramByName(name))
      return *path;
  return "";
}

FailureOr<HostLibrary> compileHostLibrary(ModuleOp l1, int64_t blockM, int64_t blockN,
                                          const std::string &path) {
  auto t0 = std::chrono::steady_clock::now();
  MLIRContext *ctx = l1.getContext();
  HostLibrary lib;
  HostCompileOptions options;
  options.blockM = blockM;
  options.blockN = blockN;
  options.forceLse = true;
  FailureOr<HostProgram> forward = lowerHostProgram(l1, options, "attn_host_forward");
  if (failed(forward))
    return failure();
  lib.forward = {forward->entry, forward->items, forward->serialGrids, forward->lse,
                 forward->sequences};
  // The backward is part of the variant when it compiles; a spec whose backward the
  // compiler refuses still gets its forward (the runtime says why at a backward call).
  options.backward = true;
  FailureOr<HostProgram> backward = failure();
  {
    DiagnosticCollector quiet(ctx);
    backward = lowerHostProgram(l1, options, "attn_host_backward");
    if (failed(backward))
      lib.backwardError = quiet.message("the backward does not compile");
  }
  if (succeeded(backward))
    lib.backward = {backward->entry, backward->items, backward->serialGrids, backward->lse,
                    backward->sequences};

  initHostTarget();
  registerBuiltinDialectTranslation(*ctx);
  registerLLVMDialectTranslation(*ctx);
  llvm::LLVMContext llvmContext;
  std::unique_ptr<llvm::Module> module = translateModuleToLLVMIR(*forward->module, llvmContext, "attn_host");
  if (!module)
    return l1.emitError("translating the host forward kernel to LLVM IR failed");
  if (succeeded(backward)) {
    std::unique_ptr<llvm::Module> b = translateModuleToLLVMIR(*backward->module, llvmContext, "attn_host_backward");
    if (!b || llvm::Linker::linkModules(*module, std::move(b)))
      return l1.emitError("linking the host backward kernel failed");
  }

  // This machine's CPU: the library is for the machine that compiles it (bundles
  // are cached per machine), with every vector extension it has.
  llvm::Triple triple(llvm::sys::getProcessTriple());
  std::string error;
  const llvm::Target *target = llvm::TargetRegistry::lookupTarget(triple, error);
  if (!target)
    return l1.emitError("no LLVM target for ") << triple.str() << ": " << error;
  lib.cpu = llvm::sys::getHostCPUName().str();
  // The target gets every feature, on or off; the manifest lists those on (what a
  // machine running the library must have: the runtime checks the ones it can).
  std::string all;
  std::vector<std::string> on;
  for (const auto &f : llvm::sys::getHostCPUFeatures()) {
    all += (all.empty() ? "" : ",") + std::string(f.second ? "+" : "-") + f.first().str();
    if (f.second)
      on.push_back("+" + f.first().str());
  }
  std::sort(on.begin(), on.end());
  for (const std::string &f : on)
    lib.features += (lib.features.empty() ? "" : ",") + f;
  std::unique_ptr<llvm::TargetMachine> machine(target->createTargetMachine(
      triple, lib.cpu, all, llvm::TargetOptions(), llvm::Reloc::PIC_, std::nullopt,
      llvm::CodeGenOptLevel::Aggressive));
  if (!machine)
    return l1.emitError("cannot create a target machine for ") << lib.cpu;
  module->setDataLayout(machine->createDataLayout());
  module->setTargetTriple(triple);
  auto optimize = makeOptimizingTransformer(3, 0, machine.get());
  if (llvm::Error e = optimize(module.get()))
    return l1.emitError("optimising the host kernels failed: ") << llvm::toString(std::move(e));

  std::string object = path + ".o";
  {
    std::error_code ec;
    llvm::raw_fd_ostream out(object, ec, llvm::sys::fs::OF_None);
    if (ec)
      return l1.emitError("cannot write ") << object << ": " << ec.message();
    llvm::legacy::PassManager emit;
    if (machine->addPassesToEmitFile(emit, out, nullptr, llvm::CodeGenFileType::ObjectFile))
      return l1.emitError("the target cannot emit an object file");
    emit.run(*module);
  }
  std::string linker = findHostLinker();
  if (linker.empty()) {
    std::filesystem::remove(object);
    return l1.emitError("no C compiler driver to link the host library (set $ATTUNE_HOST_CC, "
                        "or install cc/gcc/clang)");
  }
  std::string log = path + ".link.log";
  llvm::SmallVector<llvm::StringRef> args{linker, "-shared", "-o", path, object, "-lm"};
  std::optional<llvm::StringRef> redirects[] = {std::nullopt, llvm::StringRef(log), llvm::StringRef(log)};
  std::string message;
  int rc = llvm::sys::ExecuteAndWait(linker, args, std::nullopt, redirects, 0, 0, &message);
  std::string text;
  if (auto buffer = llvm::MemoryBuffer::getFile(log))
    text = (*buffer)->getBuffer().str();
  std::filesystem::remove(object);
  std::filesystem::remove(log);
  if (rc != 0)
    return l1.emitError("linking the host library with ") << linker << " failed"
           << (message.empty() ? "" : ": " + message) << "\n" << text;
  lib.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return lib;
}

} // namespace attune
