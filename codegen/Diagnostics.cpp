//===- Diagnostics.cpp - collect a context's diagnostics as text ----------===//
#include "codegen/Diagnostics.h"

#include "mlir/IR/BuiltinAttributes.h"
#include "llvm/Support/raw_ostream.h"

namespace attune {

std::string DiagnosticCollector::describe(mlir::Location loc) {
  std::string out;
  llvm::raw_string_ostream os(out);
  if (auto file = llvm::dyn_cast<mlir::FileLineColLoc>(loc)) {
    os << file.getFilename().getValue();
    if (file.getLine() != 1 || file.getColumn() != 1)
      os << ":" << file.getLine() << ":" << file.getColumn();
  } else if (auto name = llvm::dyn_cast<mlir::NameLoc>(loc)) {
    os << name.getName().getValue();
  } else if (!llvm::isa<mlir::UnknownLoc>(loc)) {
    os << loc;
  }
  return out;
}

void DiagnosticCollector::append(mlir::Diagnostic &d) {
  std::string where = describe(d.getLocation());
  llvm::raw_string_ostream os(collected);
  if (!where.empty())
    os << where << ": ";
  os << d << "\n";
}

} // namespace attune
