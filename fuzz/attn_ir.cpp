//===- attn_ir.cpp - fuzz the attn IR parser, verifier and attn-to-tiled ---===//
//
// Input: MLIR text (seeds: test/lit/dialect, test/lit/passes). What `attn-opt FILE
// -attn-to-tiled` does: parse with the attn, func, arith, math, tensor, scf and memref
// dialects (the parser runs the verifier), then the L1 -> L2 pipeline with the pass
// manager's verifier after every pass. Diagnostics are dropped: an error is a clean
// outcome. One invariant besides "no crash": IR that parsed prints to text that parses
// again (the custom directives of the dialect read what they write).
//
//===----------------------------------------------------------------------===//
#include "FuzzSupport.h"

#include "dialect/AttnOps.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdint>
#include <string>

using namespace mlir;

static const DialectRegistry &registry() {
  static DialectRegistry *r = [] {
    auto *reg = new DialectRegistry;
    reg->insert<attn::AttnDialect, func::FuncDialect, arith::ArithDialect,
                math::MathDialect, tensor::TensorDialect, scf::SCFDialect,
                memref::MemRefDialect>();
    return reg;
  }();
  return *r;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  // A std::string keeps the NUL terminator after the text, as a file read would.
  std::string text(reinterpret_cast<const char *>(data), size);
  // A fresh context per input: no state carries over, so every crash reproduces alone.
  MLIRContext context(registry(), MLIRContext::Threading::DISABLED);
  context.loadAllAvailableDialects();
  std::string diagnostics;
  ScopedDiagnosticHandler handler(&context, [&](Diagnostic &d) {
    if (d.getSeverity() == DiagnosticSeverity::Error)
      diagnostics += d.str() + "\n";
    return success();
  });

  OwningOpRef<ModuleOp> module = parseSourceString<ModuleOp>(text, ParserConfig(&context));
  if (!module)
    return 0;

  std::string printed;
  {
    llvm::raw_string_ostream os(printed);
    module->print(os);
  }
  {
    diagnostics.clear();
    OwningOpRef<ModuleOp> again = parseSourceString<ModuleOp>(printed, ParserConfig(&context));
    FUZZ_CHECK(again, "printed IR does not parse again:\n%s\n--- diagnostics:\n%s",
               printed.c_str(), diagnostics.c_str());
  }

  PassManager pm(&context);
  attn::buildTilePipeline(pm, attn::TilePipelineOptions{});
  (void)pm.run(*module);
  return 0;
}
