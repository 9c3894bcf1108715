//===- KvSchedule.h - the key-block schedule, one implementation -*- C++ -*-===//
//
// The schedule of attn.for_kv_blocks (dialect/AttnTileOps.td says what it means):
// which key blocks a query block visits, in what order, with what tile class, and
// which of them one split of split-KV visits. Every back end walks it through this
// class: the host by lowering the op to an scf.while (attn-lower-kv-schedule), the
// NVIDIA kernel by asking for the next visited block one tile ahead of the one it
// computes, so that the next tile's loads are in flight.
//
// A cursor (a, b) names a position: with ranges, a is the interval and b the key
// block; with a list, a is the entry and b is unused. `first()` and `next(v)` emit an
// scf.while that steps over blocks that are out of range, already visited, EMPTY, or
// past the split's end, and stops at the next visited block (or the end).
//
//===----------------------------------------------------------------------===//
#ifndef ATTUNE_PASSES_KVSCHEDULE_H
#define ATTUNE_PASSES_KVSCHEDULE_H

#include "dialect/AttnOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "llvm/ADT/DenseSet.h"

namespace mlir::attn {

/// What a schedule is built from: the operands and regions of an attn.for_kv_blocks,
/// or the same taken from elsewhere (values at the use site; `captured` maps what the
/// regions capture to values at the use site).
struct KvScheduleSource {
  Region *ranges = nullptr; // always; the list, when given, takes its place
  Region *tileClass = nullptr;
  Value batch;                // i64
  SmallVector<Value> heads;   // i64, one or more
  Value qLo, qHi, qOffset, kvOffset, seqQ, seqKv; // i64
  Value list;                 // i32 memref [B, H, R, K], or null
  int64_t listRows = 0;       // query rows per list row
  Value split, numSplits;     // i64, or null for one split
  int64_t blockN = 0;
  IRMapping captured;

  /// The schedule `op` describes, for code emitted in op's block (or below it).
  static KvScheduleSource of(ForKvBlocksOp op);
};

/// The location of every op a KvSchedule emits (its walk, the inlined kv_ranges and
/// tile_class regions): a NameLoc of this name around the use site's location.
constexpr const char *kKvScheduleLocName = "attn.kv_schedule";
Location kvScheduleLoc(Location loc);

class KvSchedule {
public:
  /// Emits the per-query-block set-up (key-block intervals of every head, the split's
  /// share) at `b`'s insertion point.
  KvSchedule(OpBuilder &b, Location loc, KvScheduleSource source);

  /// A visited block: kb (i64) of class cls (i32) at cursor (a, b) (i64), when
  /// `valid` (i1); past the end of the schedule otherwise.
  struct Visit {
    Value valid, a, b, kb, cls;
  };
  /// The first block the schedule visits.
  Visit first();
  /// The block visited after `v`.
  Visit next(const Visit &v);
  /// The tile class of key block kb (i64) for the source's rows.
  Value classify(Value kb);

  /// Replaces `op` by an scf.while over its schedule whose body is op's body.
  static void lowerToLoop(ForKvBlocksOp op);

private:
  Visit advance(Value a, Value b);
  Value rangeBound(ArrayRef<Value> values, Value r);
  void hoistClassPrefix();

  /// tile_class split by what its ops depend on: those free of the key block's
  /// bounds (kv_lo, kv_hi) are the query block's part (its ids' summary, say), emitted
  /// once in the set-up (classPrefix: per head, the mapping they were cloned into);
  /// classify(kb) clones only the rest (classPerTile) per visited block.
  SmallVector<IRMapping> classPrefix;
  llvm::DenseSet<Operation *> classPerTile;

  OpBuilder &b;
  Location loc;
  KvScheduleSource src;
  SmallVector<Value> blockLo, blockHi; // per interval, blockLo has one more (0)
  SmallVector<Value> rangeStart;       // schedule position of each interval, + total
  Value listRow, listEntries, kvBlocks;
  Value splitEnd, startA, startB;
};

} // namespace mlir::attn

#endif
