//===- IntervalEmitter.h - interval form of a mask region ----------*- C++ -*-===//
//
// Evaluates the ops of a mask region over intervals instead of points: it emits,
// at a builder's insertion point, the code that computes for each integer value a
// closed interval [lo, hi] containing every value it can take, and for each boolean
// whether it may be true and whether it may be false, when the region's arguments
// range over given intervals (a tile: a block of query rows by a block of keys).
// Tensor reads become min/max summaries over boxes of indices (attn.box_summary).
// Unknown ops give "anything" (top), so the result is always sound.
//
//===----------------------------------------------------------------------===//
#ifndef ATTUNE_PASSES_INTERVALEMITTER_H
#define ATTUNE_PASSES_INTERVALEMITTER_H

#include "mlir/IR/Builders.h"
#include "llvm/ADT/DenseMap.h"

#include <optional>

namespace mlir::attn {

/// A closed integer interval of emitted i64 values; `top` means unknown.
struct IntRange {
  Value lo, hi;
  bool top = true;
  static IntRange unknown() { return {}; }
  static IntRange of(Value lo, Value hi) { return {lo, hi, false}; }
};

/// Whether a boolean may be true and may be false (emitted i1 values).
struct BoolRange {
  Value mayTrue, mayFalse;
};

class IntervalEmitter {
public:
  IntervalEmitter(OpBuilder &builder, Location loc) : b(builder), loc(loc) {}

  /// Binds a region value (block argument) to an interval.
  void bind(Value v, IntRange r) { ints[v] = r; }

  /// Declares `tensor` non-decreasing along `dim` (a spec input with "sorted": true):
  /// summaries of its boxes read only the end points along dim, and MaskRanges
  /// solves equalities on it by binary search (attn.search_sorted).
  void markSorted(Value tensor, int64_t dim) { sorted[tensor] = dim; }
  /// The dimension `tensor` is sorted along, if declared.
  std::optional<int64_t> sortedDim(Value tensor) const {
    auto it = sorted.find(tensor);
    return it == sorted.end() ? std::nullopt : std::optional<int64_t>(it->second);
  }

  IntRange intOf(Value v);
  BoolRange boolOf(Value v);

  // Small emission helpers, shared with the kv-range derivation.
  Value i64(int64_t v);
  Value i1(bool v);
  Value add(Value x, Value y);
  Value sub(Value x, Value y);
  Value min(Value x, Value y);
  Value max(Value x, Value y);
  Value select(Value c, Value x, Value y);
  Value cmp(int predicate, Value x, Value y); // arith::CmpIPredicate
  Value andi(Value x, Value y);
  Value ori(Value x, Value y);
  Value noti(Value x);

  OpBuilder &builder() { return b; }
  Location location() const { return loc; }

private:
  IntRange computeInt(Value v);
  BoolRange computeBool(Value v);
  std::optional<IntRange> floorModRange(Value v);
  IntRange lookupRange(Operation *lookup, BoolRange *inBounds);

  OpBuilder &b;
  Location loc;
  llvm::DenseMap<Value, IntRange> ints;
  llvm::DenseMap<Value, BoolRange> bools;
  llvm::DenseMap<Value, int64_t> sorted;
};

class AttentionOp;
/// Marks the inputs `op`'s sorted_dims declares sorted (every analysis of its mask
/// calls it, so that the forward and the backward schedules agree on what they know).
void markSortedInputs(IntervalEmitter &e, AttentionOp op);

/// Whether `v` depends on any of `args` (through its defining ops, including ops
/// nested in regions such as scf.for bodies).
bool dependsOn(Value v, llvm::ArrayRef<Value> args);

/// If `v` computes floor(a mod c) for a constant c > 0 in the form
/// attn-expand-patterns emits, returns (a, c).
std::optional<std::pair<Value, int64_t>> matchFloorMod(Value v);

} // namespace mlir::attn

#endif
