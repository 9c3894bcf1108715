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
//===----------------------------------------------------------------------===//
#include "passes/Passes.h"

#include "dialect/AttnOps.h"
#include "passes/IntervalEmitter.h"

#include "mlir/IR/Builders.h"

namespace mlir::attn {
#define GEN_PASS_DEF_ATTNANALYZEBLOCKS
#include "passes/Passes.h.inc"
} // namespace mlir::attn

using namespace mlir;
using namespace mlir::attn;
using P = arith::CmpIPredicate;

namespace {

constexpr int64_t kInf = int64_t(1) << 60;
constexpr size_t kMaxRanges = 4;

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

/// The predicate of swapped operands: x op y <=> y mirror(op) x.
P mirror(P p) {
  switch (p) {
  case P::slt: return P::sgt;
  case P::sle: return P::sge;
  case P::sgt: return P::slt;
  case P::sge: return P::sle;
  default: return p; // eq, ne; unsigned predicates are not analysed
  }
}

/// Closed key-index intervals (emitted values); [kInf, -kInf] is empty.
using Ranges = SmallVector<std::pair<Value, Value>, 4>;

class RangeBuilder {
public:
  RangeBuilder(IntervalEmitter &e, MaskArgs args, Value kvOffset)
      : e(e), args(args), kvOffset(kvOffset) {}

  Ranges ranges(Value cond, bool negated) {
    Operation *op = cond.getDefiningOp();
    if (auto c = cond.getDefiningOp<arith::ConstantIntOp>())
      return ((c.value() != 0) != negated) ? all() : none();
    if (op && isa<arith::AndIOp, arith::OrIOp>(op)) {
      bool conj = isa<arith::AndIOp>(op) != negated; // De Morgan
      Ranges x = ranges(op->getOperand(0), negated), y = ranges(op->getOperand(1), negated);
      return conj ? intersect(x, y) : unite(x, y);
    }
    if (auto x = dyn_cast_or_null<arith::XOrIOp>(op)) {
      for (int side = 0; side < 2; ++side)
        if (auto c = x->getOperand(side).getDefiningOp<arith::ConstantIntOp>())
          return ranges(x->getOperand(1 - side), c.value() != 0 ? !negated : negated);
    }
    if (!dependsOn(cond, {args.kvIdx, args.kv})) {
      // Decided by the query block alone: everything or nothing.
      BoolRange r = e.boolOf(cond);
      return guarded(negated ? r.mayFalse : r.mayTrue);
    }
    if (auto c = dyn_cast_or_null<arith::CmpIOp>(op))
      if (auto r = atom(c, negated))
        return *r;
    return all();
  }

  Ranges all() { return {{e.i64(-kInf), e.i64(kInf)}}; }
  Ranges none() { return {{e.i64(kInf), e.i64(-kInf)}}; }

private:
  /// all() when `cond`, else an empty interval.
  Ranges guarded(Value cond) {
    return {{e.select(cond, e.i64(-kInf), e.i64(kInf)), e.select(cond, e.i64(kInf), e.i64(-kInf))}};
  }

  Ranges intersect(const Ranges &x, const Ranges &y) {
    Ranges out;
    for (auto &a : x)
      for (auto &c : y)
        out.push_back({e.max(a.first, c.first), e.min(a.second, c.second)});
    return cap(out);
  }
  Ranges unite(const Ranges &x, const Ranges &y) {
    Ranges out(x);
    out.append(y.begin(), y.end());
    return cap(out);
  }
  /// Keeps at most kMaxRanges intervals by joining the tail into a hull.
  Ranges cap(Ranges r) {
    while (r.size() > kMaxRanges) {
      auto last = r.pop_back_val();
      // Hull of two, where an empty one (lo > hi) must not widen the other.
      auto &prev = r.back();
      Value lastEmpty = e.cmp(int(P::sgt), last.first, last.second);
      Value prevEmpty = e.cmp(int(P::sgt), prev.first, prev.second);
      Value lo = e.select(lastEmpty, prev.first,
                          e.select(prevEmpty, last.first, e.min(prev.first, last.first)));
      Value hi = e.select(lastEmpty, prev.second,
                          e.select(prevEmpty, last.second, e.max(prev.second, last.second)));
      prev = {lo, hi};
    }
    return r;
  }

  /// A linear form g * kv_idx + [rest.lo, rest.hi].
  struct Linear {
    int64_t g = 0;
    IntRange rest;
  };

  std::optional<Linear> linear(Value v) {
    if (v == args.kvIdx)
      return Linear{1, IntRange::of(e.i64(0), e.i64(0))};
    if (v == args.kv)
      return Linear{1, IntRange::of(kvOffset, kvOffset)};
    if (!dependsOn(v, {args.kvIdx, args.kv})) {
      IntRange r = e.intOf(v);
      if (r.top)
        return std::nullopt;
      return Linear{0, r};
    }
    Operation *op = v.getDefiningOp();
    if (!op)
      return std::nullopt;
    if (isa<arith::AddIOp, arith::SubIOp>(op)) {
      auto x = linear(op->getOperand(0)), y = linear(op->getOperand(1));
      if (!x || !y)
        return std::nullopt;
      if (isa<arith::AddIOp>(op))
        return Linear{x->g + y->g, IntRange::of(e.add(x->rest.lo, y->rest.lo),
                                                e.add(x->rest.hi, y->rest.hi))};
      return Linear{x->g - y->g, IntRange::of(e.sub(x->rest.lo, y->rest.hi),
                                              e.sub(x->rest.hi, y->rest.lo))};
    }
    if (auto mul = dyn_cast<arith::MulIOp>(op)) {
      for (int side = 0; side < 2; ++side) {
        auto c = mul->getOperand(side).getDefiningOp<arith::ConstantIntOp>();
        if (!c)
          continue;
        auto x = linear(mul->getOperand(1 - side));
        if (!x)
          return std::nullopt;
        int64_t k = c.value();
        auto scale = [&](Value p) { return arith::MulIOp::create(e.builder(), e.location(), p, e.i64(k)); };
        Value lo = scale(x->rest.lo), hi = scale(x->rest.hi);
        return Linear{x->g * k, k >= 0 ? IntRange::of(lo, hi) : IntRange::of(hi, lo)};
      }
    }
    return std::nullopt;
  }

  Value floorDiv(Value x, int64_t c) {
    return arith::FloorDivSIOp::create(e.builder(), e.location(), x, e.i64(c));
  }
  Value ceilDiv(Value x, int64_t c) {
    return arith::CeilDivSIOp::create(e.builder(), e.location(), x, e.i64(c));
  }

  /// Keys for which g*kv + R (R in [lo, hi]) satisfies `pred` against 0 for some R.
  std::optional<Ranges> atom(arith::CmpIOp c, bool negated) {
    P pred = negated ? arith::invertPredicate(c.getPredicate()) : c.getPredicate();
    auto x = linear(c.getLhs()), y = linear(c.getRhs());
    if (!x || !y)
      return std::nullopt;
    int64_t g = x->g - y->g;
    if (g == 0)
      return std::nullopt; // handled as key-free by the caller when possible
    Value rlo = e.sub(x->rest.lo, y->rest.hi), rhi = e.sub(x->rest.hi, y->rest.lo);
    // Normalise to g > 0: g*kv + R op 0  <=>  (-g)*kv + (-R) mirror(op) 0, where
    // mirror (sge <-> sle, sgt <-> slt) is the predicate of swapped operands.
    if (g < 0) {
      g = -g;
      Value nlo = e.sub(e.i64(0), rhi), nhi = e.sub(e.i64(0), rlo);
      rlo = nlo;
      rhi = nhi;
      pred = mirror(pred);
    }
    // Now g > 0: g*kv + R op 0 for some R in [rlo, rhi].
    switch (pred) {
    case P::sge: // kv >= -R / g for the largest R
      return Ranges{{ceilDiv(e.sub(e.i64(0), rhi), g), e.i64(kInf)}};
    case P::sgt:
      return Ranges{{ceilDiv(e.sub(e.i64(1), rhi), g), e.i64(kInf)}};
    case P::sle:
      return Ranges{{e.i64(-kInf), floorDiv(e.sub(e.i64(0), rlo), g)}};
    case P::slt:
      return Ranges{{e.i64(-kInf), floorDiv(e.sub(e.i64(-1), rlo), g)}};
    case P::eq:
      return Ranges{{ceilDiv(e.sub(e.i64(0), rhi), g), floorDiv(e.sub(e.i64(0), rlo), g)}};
    default:
      return std::nullopt;
    }
  }

  IntervalEmitter &e;
  MaskArgs args;
  Value kvOffset;
};

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
  MaskArgs m(op.getMask().front());
  Value qLast = e.sub(qHi, e.i64(1));
  e.bind(m.b, IntRange::of(tb, tb));
  e.bind(m.h, IntRange::of(th, th));
  e.bind(m.qIdx, IntRange::of(qLo, qLast));
  e.bind(m.q, IntRange::of(e.add(qLo, qOff), e.add(qLast, qOff)));
  e.bind(m.seqQ, IntRange::of(seqQ, seqQ));
  e.bind(m.seqKv, IntRange::of(seqKv, seqKv));
  RangeBuilder rb(e, m, kvOff);
  Ranges ranges = rb.ranges(maskResult(op), /*negated=*/false);
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
