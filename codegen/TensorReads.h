//===- TensorReads.h - lowering of reads of extra tensors -------*- C++ -*-===//
//
// attn.lookup, attn.contains, attn.size, attn.constant_table, attn.box_summary and
// attn.box_contains on memrefs become bounds-checked memref loads in scf loops;
// attn.search_sorted becomes a binary search (scf.while).
// Shared by the host and NVIDIA back ends: both see the extra tensors as memrefs.
//
//===----------------------------------------------------------------------===//
#ifndef ATTUNE_CODEGEN_TENSORREADS_H
#define ATTUNE_CODEGEN_TENSORREADS_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/Builders.h"

#include <functional>

namespace attune {

/// Emission helpers at one insertion point, for loop-heavy lowerings.
struct Emit {
  mlir::OpBuilder &b;
  mlir::Location loc;
  mlir::Value idx(int64_t v) { return mlir::arith::ConstantIndexOp::create(b, loc, v); }
  mlir::Value i64(int64_t v) { return mlir::arith::ConstantIntOp::create(b, loc, v, 64); }
  mlir::Value i1(bool v) { return mlir::arith::ConstantIntOp::create(b, loc, v ? 1 : 0, 1); }
  mlir::Value f32(double v) {
    return mlir::arith::ConstantFloatOp::create(b, loc, b.getF32Type(), llvm::APFloat(static_cast<float>(v)));
  }
  mlir::Value f64(double v) {
    return mlir::arith::ConstantFloatOp::create(b, loc, b.getF64Type(), llvm::APFloat(v));
  }
  mlir::Value toIndex(mlir::Value v) {
    return v.getType().isIndex() ? v : mlir::arith::IndexCastOp::create(b, loc, b.getIndexType(), v);
  }
  mlir::Value toI64(mlir::Value v) {
    return v.getType().isInteger(64) ? v : mlir::arith::IndexCastOp::create(b, loc, b.getI64Type(), v);
  }
  mlir::Value load(mlir::Value mem, mlir::ValueRange idxs) { return mlir::memref::LoadOp::create(b, loc, mem, idxs); }
  void store(mlir::Value v, mlir::Value mem, mlir::ValueRange idxs) { mlir::memref::StoreOp::create(b, loc, v, mem, idxs); }
  mlir::Value cmpi(mlir::arith::CmpIPredicate p, mlir::Value x, mlir::Value y) { return mlir::arith::CmpIOp::create(b, loc, p, x, y); }
  mlir::Value andi(mlir::Value x, mlir::Value y) { return mlir::arith::AndIOp::create(b, loc, x, y); }
  mlir::Value ori(mlir::Value x, mlir::Value y) { return mlir::arith::OrIOp::create(b, loc, x, y); }
  mlir::Value select(mlir::Value c, mlir::Value x, mlir::Value y) { return mlir::arith::SelectOp::create(b, loc, c, x, y); }
  mlir::Value addf(mlir::Value x, mlir::Value y) { return mlir::arith::AddFOp::create(b, loc, x, y); }
  mlir::Value mulf(mlir::Value x, mlir::Value y) { return mlir::arith::MulFOp::create(b, loc, x, y); }
  mlir::Value dimI64(mlir::Value mem, int64_t d) { return toI64(mlir::memref::DimOp::create(b, loc, mem, d)); }

  /// for iv in [lo, hi): body(iv)
  void loop(mlir::Value lo, mlir::Value hi, llvm::function_ref<void(mlir::Value)> body) {
    auto f = mlir::scf::ForOp::create(b, loc, toIndex(lo), toIndex(hi), idx(1));
    mlir::OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(f.getBody());
    body(f.getInductionVar());
  }
  /// A loop carrying values: returns the final ones.
  llvm::SmallVector<mlir::Value> loop(mlir::Value lo, mlir::Value hi, mlir::ValueRange init,
                          llvm::function_ref<llvm::SmallVector<mlir::Value>(mlir::Value, mlir::ValueRange)> body) {
    auto f = mlir::scf::ForOp::create(b, loc, toIndex(lo), toIndex(hi), idx(1), init);
    {
      mlir::OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(f.getBody());
      llvm::SmallVector<mlir::Value> next = body(f.getInductionVar(), f.getRegionIterArgs());
      mlir::scf::YieldOp::create(b, loc, next);
    }
    return llvm::SmallVector<mlir::Value>(f.getResults());
  }
  /// if (cond) then() else zero-like: returns then's single value or `otherwise`.
  mlir::Value ifElse(mlir::Value cond, mlir::Type type, llvm::function_ref<mlir::Value()> then, mlir::Value otherwise) {
    auto op = mlir::scf::IfOp::create(b, loc, mlir::TypeRange{type}, cond, /*withElse=*/true);
    {
      mlir::OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(op.thenBlock());
      mlir::scf::YieldOp::create(b, loc, mlir::ValueRange{then()});
      b.setInsertionPointToStart(op.elseBlock());
      mlir::scf::YieldOp::create(b, loc, mlir::ValueRange{otherwise});
    }
    return op.getResult(0);
  }
  mlir::Value toF32(mlir::Value v) {
    if (v.getType().isF32())
      return v;
    return mlir::arith::ExtFOp::create(b, loc, b.getF32Type(), v);
  }
  mlir::Value fromF32(mlir::Value v, mlir::Type t) {
    if (t.isF32())
      return v;
    return mlir::arith::TruncFOp::create(b, loc, t, v);
  }
};


/// Lowers every tensor-read op under `root` (see the file comment).
void lowerTensorReads(mlir::Operation *root);

} // namespace attune

#endif
