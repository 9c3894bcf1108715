//===- spec_importer.cpp - fuzz the JSON spec importer ---------------------===//
//
// Input: a JSON spec (seeds: specs/examples, the specs in test/lit/specs). What `attnc
// import` / `attnc explain` do: parse the text (nlohmann, duplicate keys rejected),
// import it into attn L1 IR, then run the attn-to-tiled pipeline on what imported. An
// error anywhere is a clean outcome. Invariant: a spec the importer accepts gives IR
// that verifies (the importer, not the user, would be at fault otherwise).
//
//===----------------------------------------------------------------------===//
#include "FuzzSupport.h"

#include "dialect/AttnOps.h"
#include "passes/Passes.h"
#include "specs/Importer.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Pass/PassManager.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

using namespace mlir;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string text(reinterpret_cast<const char *>(data), size);
  nlohmann::json spec;
  attune::SpecError error;
  if (!attune::parseSpecText(text, spec, error))
    return 0;

  MLIRContext context(MLIRContext::Threading::DISABLED);
  context.loadDialect<attn::AttnDialect, func::FuncDialect, arith::ArithDialect,
                      math::MathDialect, tensor::TensorDialect, scf::SCFDialect>();
  std::string diagnostics;
  ScopedDiagnosticHandler handler(&context, [&](Diagnostic &d) {
    diagnostics += d.str() + "\n";
    return success();
  });

  attune::SpecInfo info;
  OwningOpRef<ModuleOp> module = attune::importSpec(context, spec, info, error);
  if (!module)
    return 0;
  FUZZ_CHECK(succeeded(verify(*module)), "an accepted spec imported to invalid IR:\n%s",
             diagnostics.c_str());

  PassManager pm(&context);
  attn::buildTilePipeline(pm, attn::TilePipelineOptions{});
  (void)pm.run(*module);
  return 0;
}
