//===- Diagnostics.h - collect a context's diagnostics as text --*- C++ -*-===//
//
// Library code reports errors through MLIR's diagnostics (emitError at the op they are
// about, LogicalResult / FailureOr to the caller). A tool that wants the messages as
// text, to print them in its own words or to put them in an exception, collects them
// with a DiagnosticCollector for the duration of a call.
//
//===----------------------------------------------------------------------===//
#ifndef ATTUNE_CODEGEN_DIAGNOSTICS_H
#define ATTUNE_CODEGEN_DIAGNOSTICS_H

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/Location.h"

#include <string>

namespace attune {

class DiagnosticCollector {
public:
  explicit DiagnosticCollector(mlir::MLIRContext *ctx)
      : handler(ctx, [this](mlir::Diagnostic &d) {
          append(d);
          return mlir::success();
        }) {}

  /// Every diagnostic so far, one per line, "location: message" (the location left out
  /// when it says nothing, e.g. for errors about the caller's arguments).
  const std::string &text() const { return collected; }
  /// text() without its last newline, or `fallback` when nothing was reported.
  std::string message(const std::string &fallback) const {
    std::string s = collected.empty() ? fallback : collected;
    while (!s.empty() && s.back() == '\n')
      s.pop_back();
    return s;
  }

  /// The importer gives every op the JSON path it came from as a file name at 1:1 (the
  /// attention: the spec's name): printed as just the path; an unknown location as "".
  static std::string describe(mlir::Location loc);

private:
  void append(mlir::Diagnostic &d);

  std::string collected;
  mlir::ScopedDiagnosticHandler handler;
};

} // namespace attune

#endif
