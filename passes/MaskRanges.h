//===- MaskRanges.h - a mask solved for one index, in closed form -*- C++ -*-===//
//
// The mask region as a formula over atoms, negations pushed to the atoms, solved for
// one of its two indices (the key, or the query) while the other ranges over the
// intervals bound in an IntervalEmitter (a block of queries, or a block of keys).
// An atom cmpi(x, y) whose x - y is linear in the solved index, g * i + R with R free
// of it, bounds the index by R's interval (causal solved for the key: kv <= q_max;
// for the query: q >= kv_min). `all` intersects the interval lists of its terms,
// `any` joins them; atoms that do not depend on the solved index keep everything or
// nothing by their interval truth; anything else keeps everything (sound: the
// result contains every index for which the mask may be true).
//
// attn-analyze-blocks solves for the key (kv_ranges: the forward's schedule per query
// block; its own copy of this algorithm, AnalyzeBlocks.cpp); attn-tile-backward
// solves for the query (the transposed schedule: per key block, the query blocks
// whose rows may see it).
//
//===----------------------------------------------------------------------===//
#ifndef ATTUNE_PASSES_MASKRANGES_H
#define ATTUNE_PASSES_MASKRANGES_H

#include "passes/IntervalEmitter.h"

#include "mlir/IR/Value.h"
#include "llvm/ADT/SmallVector.h"

namespace mlir::attn {

/// At most this many intervals come out (the tail is joined into a hull).
constexpr size_t kMaxMaskRanges = 4;

/// The index the mask is solved for: its index argument, its position argument
/// (index + offset) and the offset (an emitted i64).
struct SolvedIndex {
  Value index, position, offset;
};

/// Closed intervals [lo, hi] (emitted i64) of the solved index outside which the
/// mask `cond` (an i1 of the mask region) is false, given the bindings of `e`.
/// An empty interval has lo > hi. At most kMaxMaskRanges intervals.
SmallVector<std::pair<Value, Value>, 4> solveMask(IntervalEmitter &e, Value cond,
                                                  SolvedIndex solved);

} // namespace mlir::attn

#endif
