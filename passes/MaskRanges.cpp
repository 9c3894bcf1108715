//===- MaskRanges.cpp - a mask solved for one index, in closed form -------===//
#include "passes/MaskRanges.h"

#include "dialect/AttnOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"

using namespace mlir;
using namespace mlir::attn;
using P = arith::CmpIPredicate;

namespace {

constexpr int64_t kInf = int64_t(1) << 60;

using Ranges = SmallVector<std::pair<Value, Value>, 4>;

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

class Solver {
public:
  Solver(IntervalEmitter &e, SolvedIndex v) : e(e), v(v) {}

  Ranges ranges(Value cond, bool negated) {
    Operation *op = cond.getDefiningOp();
    if (auto c = cond.getDefiningOp<arith::ConstantIntOp>())
      return ((c.value() != 0) != negated) ? all() : none();
    if (op && isa<arith::AndIOp, arith::OrIOp>(op)) {
      bool conj = isa<arith::AndIOp>(op) != negated; // De Morgan
      size_t mark = inBoundsConjuncts.size();
      if (!negated)
        collectGuards(cond);
      Ranges x = ranges(op->getOperand(0), negated), y = ranges(op->getOperand(1), negated);
      inBoundsConjuncts.resize(mark);
      return conj ? intersect(x, y) : unite(x, y);
    }
    if (auto x = dyn_cast_or_null<arith::XOrIOp>(op)) {
      for (int side = 0; side < 2; ++side)
        if (auto c = x->getOperand(side).getDefiningOp<arith::ConstantIntOp>())
          return ranges(x->getOperand(1 - side), c.value() != 0 ? !negated : negated);
    }
    if (!dependsOn(cond, {v.index, v.position})) {
      // Decided by the other index's block alone: everything or nothing.
      BoolRange r = e.boolOf(cond);
      return guarded(negated ? r.mayFalse : r.mayTrue);
    }
    if (auto lookup = dyn_cast_or_null<LookupOp>(op); lookup && !negated &&
                                                       cond == lookup.getInBounds())
      return inBounds(lookup);
    if (auto c = dyn_cast_or_null<arith::CmpIOp>(op)) {
      if (auto r = sortedAtom(c, negated))
        return *r;
      if (auto r = atom(c, negated))
        return *r;
    }
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
  /// Keeps at most kMaxMaskRanges intervals by joining the tail into a hull.
  Ranges cap(Ranges r) {
    while (r.size() > kMaxMaskRanges) {
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

  /// A linear form g * index + [rest.lo, rest.hi].
  struct Linear {
    int64_t g = 0;
    IntRange rest;
  };

  std::optional<Linear> linear(Value x) {
    if (x == v.index)
      return Linear{1, IntRange::of(e.i64(0), e.i64(0))};
    if (x == v.position)
      return Linear{1, IntRange::of(v.offset, v.offset)};
    if (!dependsOn(x, {v.index, v.position})) {
      IntRange r = e.intOf(x);
      if (r.top)
        return std::nullopt;
      return Linear{0, r};
    }
    Operation *op = x.getDefiningOp();
    if (!op)
      return std::nullopt;
    if (isa<arith::AddIOp, arith::SubIOp>(op)) {
      auto l = linear(op->getOperand(0)), r = linear(op->getOperand(1));
      if (!l || !r)
        return std::nullopt;
      if (isa<arith::AddIOp>(op))
        return Linear{l->g + r->g, IntRange::of(e.add(l->rest.lo, r->rest.lo),
                                                e.add(l->rest.hi, r->rest.hi))};
      return Linear{l->g - r->g, IntRange::of(e.sub(l->rest.lo, r->rest.hi),
                                              e.sub(l->rest.hi, r->rest.lo))};
    }
    if (auto mul = dyn_cast<arith::MulIOp>(op)) {
      for (int side = 0; side < 2; ++side) {
        auto c = mul->getOperand(side).getDefiningOp<arith::ConstantIntOp>();
        if (!c)
          continue;
        auto l = linear(mul->getOperand(1 - side));
        if (!l)
          return std::nullopt;
        int64_t k = c.value();
        auto scale = [&](Value p) {
          return arith::MulIOp::create(e.builder(), e.location(), p, e.i64(k));
        };
        Value lo = scale(l->rest.lo), hi = scale(l->rest.hi);
        return Linear{l->g * k, k >= 0 ? IntRange::of(lo, hi) : IntRange::of(hi, lo)};
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

  /// Lookups whose in_bounds is a conjunct of an enclosing conjunction (an andi chain,
  /// not negated): wherever that conjunction may hold they read inside the tensor,
  /// and the conjunct's own range (inBounds) is intersected with the rest.
  SmallVector<LookupOp> inBoundsConjuncts;

  void collectGuards(Value cond) {
    if (auto a = cond.getDefiningOp<arith::AndIOp>()) {
      collectGuards(a.getLhs());
      collectGuards(a.getRhs());
    } else if (auto l = cond.getDefiningOp<LookupOp>(); l && cond == l.getInBounds()) {
      inBoundsConjuncts.push_back(l);
    }
  }

  /// The solved index as a tensor position: index + shift == position, or nullopt
  /// when `at` is neither the index nor its position.
  std::optional<Value> shiftOf(Value at) {
    if (at == v.index)
      return e.i64(0);
    if (at == v.position)
      return v.offset;
    return std::nullopt;
  }

  /// lookup(t, idx).in_bounds: every index whose position is the solved index lies
  /// within its dimension, [0, size_d - 1] (whatever t holds; sound for any input).
  Ranges inBounds(LookupOp lookup) {
    Ranges out = all();
    for (auto [d, at] : llvm::enumerate(lookup.getIndices())) {
      auto shift = shiftOf(at);
      if (!shift)
        continue;
      Value size = SizeOp::create(e.builder(), e.location(), lookup.getTensor(), d);
      out = intersect(out, {{e.sub(e.i64(0), *shift), e.sub(e.sub(size, e.i64(1)), *shift)}});
    }
    return out;
  }

  /// t[.., i, ..] op R (either side) where t is declared sorted along the dimension
  /// indexed by the solved index, and R and t's other indices are free of it (the
  /// other indices single values): the keys whose value satisfies op against some R
  /// in [R.lo, R.hi] form one interval, found by binary search (attn.search_sorted),
  /// e.g. doc[b, kv_idx] == doc[b, q_idx] over a query block: the keys whose id lies
  /// in [min, max] of the block's ids. Positions outside t read 0, so they join when
  /// 0 may satisfy op against R.
  std::optional<Ranges> sortedAtom(arith::CmpIOp c, bool negated) {
    for (int side = 0; side < 2; ++side)
      if (auto r = sortedSide(c, side, negated))
        return r;
    return std::nullopt;
  }

  std::optional<Ranges> sortedSide(arith::CmpIOp c, int side, bool negated) {
    P pred = negated ? arith::invertPredicate(c.getPredicate()) : c.getPredicate();
    auto lookup = c->getOperand(side).getDefiningOp<LookupOp>();
    if (!lookup || c->getOperand(side) != lookup.getValue())
      return std::nullopt;
    auto dim = e.sortedDim(lookup.getTensor());
    if (!dim)
      return std::nullopt;
    Value other = c->getOperand(1 - side);
    if (dependsOn(other, {v.index, v.position}))
      return std::nullopt;
    auto indices = lookup.getIndices();
    auto shift = shiftOf(indices[*dim]);
    if (!shift)
      return std::nullopt;
    SmallVector<Value> point;
    for (auto [d, at] : llvm::enumerate(indices)) {
      if (static_cast<int64_t>(d) == *dim) {
        point.push_back(e.i64(0)); // ignored by the search
        continue;
      }
      if (dependsOn(at, {v.index, v.position}))
        return std::nullopt;
      IntRange r = e.intOf(at);
      if (r.top || r.lo != r.hi) // one row of t: b, h bound to single values
        return std::nullopt;
      point.push_back(r.lo);
    }
    IntRange r = e.intOf(other);
    if (r.top)
      return std::nullopt;
    P p = side == 0 ? pred : mirror(pred); // now t[i] p R
    if (p != P::eq && p != P::sle && p != P::slt && p != P::sge && p != P::sgt)
      return std::nullopt;
    // One search; [first, end) are the positions whose value is in [value_lo, value_hi].
    bool upper = p == P::sle || p == P::slt; // bounds the index from above only
    Value vlo = p == P::eq ? r.lo : upper ? r.hi : r.lo;
    Value vhi = p == P::eq ? r.hi : upper ? r.hi : r.lo;
    Type i64 = e.builder().getI64Type();
    auto search = SearchSortedOp::create(e.builder(), e.location(), i64, i64,
                                         lookup.getTensor(), point,
                                         static_cast<int64_t>(*dim), vlo, vhi);
    Value first = search.getFirst(), end = search.getEnd(), one = e.i64(1), zero = e.i64(0);
    Value s = *shift; // index = position - shift
    Value lo = e.i64(-kInf), hi = e.i64(kInf), zeroMay;
    switch (p) {
    case P::eq: // R.lo <= t[i] <= R.hi
      lo = e.sub(first, s);
      hi = e.sub(e.sub(end, one), s);
      zeroMay = e.andi(e.cmp(int(P::sle), r.lo, zero), e.cmp(int(P::sle), zero, r.hi));
      break;
    case P::sle: // t[i] <= R.hi: positions before end
      hi = e.sub(e.sub(end, one), s);
      zeroMay = e.cmp(int(P::sle), zero, r.hi);
      break;
    case P::slt: // t[i] < R.hi: positions before first
      hi = e.sub(e.sub(first, one), s);
      zeroMay = e.cmp(int(P::slt), zero, r.hi);
      break;
    case P::sge: // t[i] >= R.lo: positions from first
      lo = e.sub(first, s);
      zeroMay = e.cmp(int(P::sge), zero, r.lo);
      break;
    default: // sgt, t[i] > R.lo: positions from end
      lo = e.sub(end, s);
      zeroMay = e.cmp(int(P::sgt), zero, r.lo);
      break;
    }
    Ranges out{{lo, hi}};
    // Positions outside t (< 0 or >= size) read 0: they join when 0 may satisfy p,
    // unless the lookup's in_bounds is a conjunct around this atom (the importer's
    // masks: `document` ands both lookups' in_bounds), which rules them out.
    if (llvm::is_contained(inBoundsConjuncts, lookup))
      return out;
    Value size = SizeOp::create(e.builder(), e.location(), lookup.getTensor(), *dim);
    out.push_back({e.select(zeroMay, e.i64(-kInf), e.i64(kInf)),
                   e.select(zeroMay, e.sub(e.i64(-1), s), e.i64(-kInf))});
    out.push_back({e.select(zeroMay, e.sub(size, s), e.i64(kInf)),
                   e.select(zeroMay, e.i64(kInf), e.i64(-kInf))});
    return out;
  }

  /// Indices for which g*i + R (R in [lo, hi]) satisfies `pred` against 0 for some R.
  std::optional<Ranges> atom(arith::CmpIOp c, bool negated) {
    P pred = negated ? arith::invertPredicate(c.getPredicate()) : c.getPredicate();
    auto x = linear(c.getLhs()), y = linear(c.getRhs());
    if (!x || !y)
      return std::nullopt;
    int64_t g = x->g - y->g;
    if (g == 0)
      return std::nullopt; // handled as index-free by the caller when possible
    Value rlo = e.sub(x->rest.lo, y->rest.hi), rhi = e.sub(x->rest.hi, y->rest.lo);
    // Normalise to g > 0: g*i + R op 0  <=>  (-g)*i + (-R) mirror(op) 0.
    if (g < 0) {
      g = -g;
      Value nlo = e.sub(e.i64(0), rhi), nhi = e.sub(e.i64(0), rlo);
      rlo = nlo;
      rhi = nhi;
      pred = mirror(pred);
    }
    switch (pred) {
    case P::sge: // i >= -R / g for the largest R
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
  SolvedIndex v;
};

} // namespace

SmallVector<std::pair<Value, Value>, 4> mlir::attn::solveMask(IntervalEmitter &e, Value cond,
                                                              SolvedIndex solved) {
  return Solver(e, solved).ranges(cond, /*negated=*/false);
}
