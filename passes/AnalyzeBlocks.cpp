//===- AnalyzeBlocks.cpp - key ranges and tile classes from the mask ------===//
//
// Fills attn.attention's `kv_ranges` and `tile_class` regions.
//
// tile_class: the mask region evaluated over a tile's intervals by IntervalEmitter:
//   EMPTY when the mask cannot be true, FULL when it cannot be false, else PARTIAL.
//
// kv_ranges: the mask as a formula over atoms, negations pushed to the atoms. An
//   atom cmpi(x, y) whose x - y is linear in the key, g * kv + R with R free of the
//   key, bounds the key by R's interval over the query block (e.g. causal: kv <=
//   q_max). `all` intersects the interval lists of its terms, `any` joins them;
//   atoms that do not depend on the key keep everything or nothing by their interval
//   truth; anything else keeps everything. The result is at most kMaxRanges
//   half-open [lo, hi) key intervals, clamped to [0, seq_kv).
//
// Sorted inputs (sorted_dims, from "sorted": true in the spec): an atom t[.., kv_idx]
// op R on a tensor non-decreasing along the key's dimension is solved by binary
// search (attn.search_sorted): for a document mask the keys of the query block's
// documents, [first key with id >= min id, last key with id <= max id]. Summaries of
// the query block's ids read its two end rows (box_summary sorted_dim), so a query
// block's schedule costs O(log N) and visits only its documents' key blocks.
//
//===----------------------------------------------------------------------===//
#include "passes/Passes.h"

#include "dialect/AttnOps.h"
#include "passes/IntervalEmitter.h"
#include "passes/MaskRanges.h"

#include "mlir/IR/Builders.h"

namespace mlir::attn {
#define GEN_PASS_DEF_ATTNANALYZEBLOCKS
#include "passes/Passes.h.inc"
} // namespace mlir::attn

using namespace mlir;
using namespace mlir::attn;
using P = arith::CmpIPredicate;

namespace {


/// Mask block arguments, by meaning.
struct MaskArgs {
  Value b, h, qIdx, kvIdx, q, kv, seqQ, seqKv;
  explicit MaskArgs(Block &block)
      : b(block.getArgument(0)), h(block.getArgument(1)), qIdx(block.getArgument(2)),
        kvIdx(block.getArgument(3)), q(block.getArgument(4)), kv(block.getArgument(5)),
        seqQ(block.getArgument(6)), seqKv(block.getArgument(7)) {}
};

/// The yielded i1 of the mask region.
Value maskResult(AttentionOp op) {
  return cast<YieldOp>(op.getMask().front().getTerminator()).getValues()[0];
}

Block *newBlock(Region &region, unsigned numArgs, OpBuilder &b, Location loc) {
  Block *block = new Block();
  region.push_back(block);
  for (unsigned i = 0; i < numArgs; ++i)
    block->addArgument(b.getI64Type(), loc);
  b.setInsertionPointToEnd(block);
  return block;
}

//===----------------------------------------------------------------------===//
// tile_class
//===----------------------------------------------------------------------===//

void buildTileClass(AttentionOp op) {
  OpBuilder b(op.getContext());
  Location loc = op.getLoc();
  Block *block = newBlock(op.getTileClass(), AttentionOp::kNumClassArgs, b, loc);
  // (b, h, q_lo, q_hi, kv_lo, kv_hi, q_offset, kv_offset, seq_q, seq_kv)
  Value tb = block->getArgument(0), th = block->getArgument(1), qLo = block->getArgument(2),
        qHi = block->getArgument(3), kvLo = block->getArgument(4),
        kvHi = block->getArgument(5), qOff = block->getArgument(6),
        kvOff = block->getArgument(7), seqQ = block->getArgument(8),
        seqKv = block->getArgument(9);
  IntervalEmitter e(b, loc);
  markSortedInputs(e, op);
  MaskArgs m(op.getMask().front());
  Value qLast = e.sub(qHi, e.i64(1)), kvLast = e.sub(kvHi, e.i64(1));
  e.bind(m.b, IntRange::of(tb, tb));
  e.bind(m.h, IntRange::of(th, th));
  e.bind(m.qIdx, IntRange::of(qLo, qLast));
  e.bind(m.kvIdx, IntRange::of(kvLo, kvLast));
  e.bind(m.q, IntRange::of(e.add(qLo, qOff), e.add(qLast, qOff)));
  e.bind(m.kv, IntRange::of(e.add(kvLo, kvOff), e.add(kvLast, kvOff)));
  e.bind(m.seqQ, IntRange::of(seqQ, seqQ));
  e.bind(m.seqKv, IntRange::of(seqKv, seqKv));
  BoolRange r = e.boolOf(maskResult(op));
  // EMPTY (0) unless it may be true; FULL (2) when it cannot be false; else PARTIAL.
  Value cls = e.select(r.mayTrue, e.select(r.mayFalse, e.i64(kPartial), e.i64(kFull)),
                       e.i64(kEmpty));
  Value cls32 = arith::TruncIOp::create(b, loc, b.getI32Type(), cls);
  YieldOp::create(b, loc, ValueRange{cls32});
}

//===----------------------------------------------------------------------===//
// kv_ranges
//===----------------------------------------------------------------------===//

void buildKvRanges(AttentionOp op) {
  OpBuilder b(op.getContext());
  Location loc = op.getLoc();
  Block *block = newBlock(op.getKvRanges(), AttentionOp::kNumRangeArgs, b, loc);
  // (b, h, q_lo, q_hi, q_offset, kv_offset, seq_q, seq_kv)
  Value tb = block->getArgument(0), th = block->getArgument(1), qLo = block->getArgument(2),
        qHi = block->getArgument(3), qOff = block->getArgument(4),
        kvOff = block->getArgument(5), seqQ = block->getArgument(6),
        seqKv = block->getArgument(7);
  IntervalEmitter e(b, loc);
  markSortedInputs(e, op);
  MaskArgs m(op.getMask().front());
  Value qLast = e.sub(qHi, e.i64(1));
  e.bind(m.b, IntRange::of(tb, tb));
  e.bind(m.h, IntRange::of(th, th));
  e.bind(m.qIdx, IntRange::of(qLo, qLast));
  e.bind(m.q, IntRange::of(e.add(qLo, qOff), e.add(qLast, qOff)));
  e.bind(m.seqQ, IntRange::of(seqQ, seqQ));
  e.bind(m.seqKv, IntRange::of(seqKv, seqKv));
  auto ranges = solveMask(e, maskResult(op), {m.kvIdx, m.kv, kvOff});
  SmallVector<Value> bounds;
  for (auto [lo, hi] : ranges) {
    // Closed [lo, hi] -> half-open [lo, hi + 1) within [0, seq_kv).
    Value l = e.min(e.max(lo, e.i64(0)), seqKv);
    Value h = e.max(e.min(e.add(hi, e.i64(1)), seqKv), l);
    bounds.push_back(l);
    bounds.push_back(h);
  }
  YieldOp::create(b, loc, bounds);
}

//===----------------------------------------------------------------------===//
// Block lists
//===----------------------------------------------------------------------===//

/// `floordiv(arg, c)` with c a positive constant: returns c.
std::optional<int64_t> blockOf(Value v, Value arg) {
  auto div = v.getDefiningOp<arith::FloorDivSIOp>();
  if (!div || div.getLhs() != arg)
    return std::nullopt;
  auto c = div.getRhs().getDefiningOp<arith::ConstantIntOp>();
  if (!c || c.value() <= 0)
    return std::nullopt;
  return c.value();
}

/// Finds a conjunct of the mask of the form
///   floordiv(kv_idx, BN) in T[b, h, floordiv(q_idx, BM), :]
/// so that the kernel may iterate the listed key blocks instead of all of them.
void recordBlockList(AttentionOp op) {
  MaskArgs m(op.getMask().front());
  SmallVector<Value> work{maskResult(op)};
  while (!work.empty()) {
    Value v = work.pop_back_val();
    if (auto andOp = v.getDefiningOp<arith::AndIOp>()) {
      work.push_back(andOp.getLhs());
      work.push_back(andOp.getRhs());
      continue;
    }
    auto contains = v.getDefiningOp<ContainsOp>();
    if (!contains || contains.getIndices().size() != 3)
      continue;
    auto idx = contains.getIndices();
    auto bn = blockOf(contains.getValue(), m.kvIdx);
    auto bm = blockOf(idx[2], m.qIdx);
    int input = op.getInputIndex(contains.getTensor());
    if (!bn || !bm || idx[0] != m.b || idx[1] != m.h || input < 0)
      continue;
    OpBuilder b(op);
    op.setKvListInputAttr(b.getI64IntegerAttr(input));
    op.setKvListBlockAttr(b.getDenseI64ArrayAttr({*bm, *bn}));
    return;
  }
}

struct AnalyzeBlocksPass
    : public mlir::attn::impl::AttnAnalyzeBlocksBase<AnalyzeBlocksPass> {
  void runOnOperation() override {
    getOperation().walk([](AttentionOp op) {
      if (op.hasBlockAnalysis())
        return;
      buildTileClass(op);
      buildKvRanges(op);
      recordBlockList(op);
    });
  }
};

} // namespace
