//===- ExprEmitter.h - checked expression trees -> arith/math ---*- C++ -*-===//
#ifndef ATTUNE_SPECS_EXPREMITTER_H
#define ATTUNE_SPECS_EXPREMITTER_H

#include "specs/Expr.h"

#include "mlir/IR/Builders.h"
#include "llvm/ADT/SmallVector.h"

namespace attune::expr {

/// What the emitter needs from its surroundings.
struct EmitEnv {
  Resolver resolve;                                          // names -> kinds/types
  std::function<mlir::Value(const std::string &)> variable;  // b, h, q, kv, s, ...
  std::function<mlir::Value(const std::string &)> tensor;    // declared inputs
  /// Receives the in-bounds flag of every tensor lookup.
  llvm::SmallVectorImpl<mlir::Value> *inBounds = nullptr;
};

/// Emits `node` (already type-checked) at the builder's insertion point. Integers
/// are i64, floats f32, booleans i1. Integer `//` and `%` follow Python and give 0 for
/// a zero divisor at run time.
mlir::Value emit(mlir::OpBuilder &builder, mlir::Location loc, const Node &node,
                 const EmitEnv &env);

/// Converts an i64 to f32 (identity on f32).
mlir::Value toFloat(mlir::OpBuilder &builder, mlir::Location loc, mlir::Value v);

/// Python floor division / modulo of i64 values, 0 when the divisor is 0.
mlir::Value emitFloorDiv(mlir::OpBuilder &b, mlir::Location loc, mlir::Value a,
                         mlir::Value d);
mlir::Value emitFloorMod(mlir::OpBuilder &b, mlir::Location loc, mlir::Value a,
                         mlir::Value d);

} // namespace attune::expr

#endif
