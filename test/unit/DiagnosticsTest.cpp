//===- DiagnosticsTest.cpp - DiagnosticCollector's text ------------------===//
#include "codegen/Diagnostics.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"

#include <gtest/gtest.h>

namespace {

using attune::DiagnosticCollector;

TEST(Diagnostics, ImporterLocationsPrintAsTheirJsonPath) {
  mlir::MLIRContext ctx;
  // What the importer gives ops: the JSON path (or the spec's name) at 1:1.
  EXPECT_EQ(DiagnosticCollector::describe(mlir::FileLineColLoc::get(&ctx, "mask.causal", 1, 1)),
            "mask.causal");
  // A real file position keeps its line and column.
  EXPECT_EQ(DiagnosticCollector::describe(mlir::FileLineColLoc::get(&ctx, "k.mlir", 7, 3)),
            "k.mlir:7:3");
  EXPECT_EQ(DiagnosticCollector::describe(
                mlir::NameLoc::get(mlir::StringAttr::get(&ctx, "score"))),
            "score");
  EXPECT_EQ(DiagnosticCollector::describe(mlir::UnknownLoc::get(&ctx)), "");
}

TEST(Diagnostics, CollectsEveryMessageWhileInScope) {
  mlir::MLIRContext ctx;
  auto at = mlir::FileLineColLoc::get(&ctx, "spec", 1, 1);
  {
    DiagnosticCollector diags(&ctx);
    EXPECT_EQ(diags.message("nothing"), "nothing");
    mlir::emitError(at, "first");
    mlir::emitError(mlir::UnknownLoc::get(&ctx), "second ") << 2;
    EXPECT_EQ(diags.text(), "spec: first\nsecond 2\n");
    EXPECT_EQ(diags.message("nothing"), "spec: first\nsecond 2");
  }
  // Out of scope, nothing is collected any more (the default handler takes over).
  DiagnosticCollector later(&ctx);
  EXPECT_EQ(later.text(), "");
}

} // namespace
