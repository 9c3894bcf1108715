//===- IntervalEmitter.cpp - interval form of a mask region ---------------===//
#include "passes/IntervalEmitter.h"

#include "dialect/AttnOps.h"

#include "llvm/ADT/SetVector.h"

using namespace mlir;
using namespace mlir::attn;
using P = arith::CmpIPredicate;

namespace mlir::attn {

bool dependsOn(Value v, ArrayRef<Value> args) {
  llvm::SmallPtrSet<Operation *, 16> seen;
  SmallVector<Value> work{v};
  while (!work.empty()) {
    Value cur = work.pop_back_val();
    if (llvm::is_contained(args, cur))
      return true;
    Operation *def = cur.getDefiningOp();
    if (!def || !seen.insert(def).second)
      continue;
    for (Value operand : def->getOperands())
      work.push_back(operand);
    // Values used inside nested regions (loop bodies) count too.
    def->walk([&](Operation *inner) {
      if (inner != def)
        for (Value operand : inner->getOperands())
          work.push_back(operand);
    });
  }
  return false;
}

void markSortedInputs(IntervalEmitter &e, AttentionOp op) {
  auto dims = op.getSortedDims();
  if (!dims)
    return;
  for (auto [input, dim] : llvm::zip(op.getInputs(), *dims))
    if (dim >= 0)
      e.markSorted(input, dim);
}

static std::optional<int64_t> constantOf(Value v) {
  if (auto c = v.getDefiningOp<arith::ConstantIntOp>())
    return c.value();
  return std::nullopt;
}

std::optional<std::pair<Value, int64_t>> matchFloorMod(Value v) {
  // select(r < 0, r + c, r) with r = remsi(a, c), c > 0.
  auto sel = v.getDefiningOp<arith::SelectOp>();
  if (!sel)
    return std::nullopt;
  auto rem = sel.getFalseValue().getDefiningOp<arith::RemSIOp>();
  auto fixed = sel.getTrueValue().getDefiningOp<arith::AddIOp>();
  auto neg = sel.getCondition().getDefiningOp<arith::CmpIOp>();
  if (!rem || !fixed || !neg)
    return std::nullopt;
  auto c = constantOf(rem.getRhs());
  if (!c || *c <= 0)
    return std::nullopt;
  if (fixed.getLhs() != rem.getResult() || constantOf(fixed.getRhs()) != c)
    return std::nullopt;
  if (neg.getPredicate() != P::slt || neg.getLhs() != rem.getResult() ||
      constantOf(neg.getRhs()) != 0)
    return std::nullopt;
  return std::make_pair(rem.getLhs(), *c);
}

Value IntervalEmitter::i64(int64_t v) { return arith::ConstantIntOp::create(b, loc, v, 64); }
Value IntervalEmitter::i1(bool v) { return arith::ConstantIntOp::create(b, loc, v ? 1 : 0, 1); }
Value IntervalEmitter::add(Value x, Value y) { return arith::AddIOp::create(b, loc, x, y); }
Value IntervalEmitter::sub(Value x, Value y) { return arith::SubIOp::create(b, loc, x, y); }
Value IntervalEmitter::min(Value x, Value y) { return arith::MinSIOp::create(b, loc, x, y); }
Value IntervalEmitter::max(Value x, Value y) { return arith::MaxSIOp::create(b, loc, x, y); }
Value IntervalEmitter::select(Value c, Value x, Value y) {
  return arith::SelectOp::create(b, loc, c, x, y);
}
Value IntervalEmitter::cmp(int p, Value x, Value y) {
  return arith::CmpIOp::create(b, loc, static_cast<P>(p), x, y);
}
Value IntervalEmitter::andi(Value x, Value y) { return arith::AndIOp::create(b, loc, x, y); }
Value IntervalEmitter::ori(Value x, Value y) { return arith::OrIOp::create(b, loc, x, y); }
Value IntervalEmitter::noti(Value x) { return arith::XOrIOp::create(b, loc, x, i1(true)); }

IntRange IntervalEmitter::intOf(Value v) {
  auto it = ints.find(v);
  if (it != ints.end())
    return it->second;
  IntRange r = computeInt(v);
  ints[v] = r;
  return r;
}

BoolRange IntervalEmitter::boolOf(Value v) {
  auto it = bools.find(v);
  if (it != bools.end())
    return it->second;
  BoolRange r = computeBool(v);
  bools[v] = r;
  return r;
}

std::optional<IntRange> IntervalEmitter::floorModRange(Value v) {
  auto match = matchFloorMod(v);
  if (!match)
    return std::nullopt;
  auto [a, c] = *match;
  IntRange x = intOf(a);
  if (x.top)
    return IntRange::of(i64(0), i64(c - 1));
  // Within one period the result is exact; across periods it is [0, c - 1].
  Value qlo = arith::FloorDivSIOp::create(b, loc, x.lo, i64(c));
  Value qhi = arith::FloorDivSIOp::create(b, loc, x.hi, i64(c));
  Value same = cmp(int(P::eq), qlo, qhi);
  Value lo = sub(x.lo, arith::MulIOp::create(b, loc, qlo, i64(c)));
  Value hi = sub(x.hi, arith::MulIOp::create(b, loc, qhi, i64(c)));
  return IntRange::of(select(same, lo, i64(0)), select(same, hi, i64(c - 1)));
}

IntRange IntervalEmitter::lookupRange(Operation *op, BoolRange *inBounds) {
  auto lookup = cast<LookupOp>(op);
  SmallVector<Value> lo, hi;
  for (Value index : lookup.getIndices()) {
    IntRange r = intOf(index);
    if (r.top) {
      if (inBounds)
        *inBounds = {i1(true), i1(true)};
      return IntRange::unknown();
    }
    lo.push_back(r.lo);
    hi.push_back(r.hi);
  }
  if (inBounds) {
    // Some index of the box inside the tensor / all of them.
    Value any = i1(true), all = i1(true);
    for (size_t d = 0; d < lo.size(); ++d) {
      Value size = SizeOp::create(b, loc, lookup.getTensor(), d);
      Value last = sub(size, i64(1));
      any = andi(any, andi(cmp(int(P::sle), lo[d], last), cmp(int(P::sge), hi[d], i64(0))));
      all = andi(all, andi(cmp(int(P::sge), lo[d], i64(0)), cmp(int(P::sle), hi[d], last)));
    }
    *inBounds = {any, noti(all)};
  }
  if (!lookup.getValue().getType().isInteger(64))
    return IntRange::unknown(); // float elements: no range kept
  auto d = sortedDim(lookup.getTensor());
  auto summary = BoxSummaryOp::create(b, loc, b.getI64Type(), b.getI64Type(), b.getI1Type(),
                                      b.getI1Type(), lookup.getTensor(), lo, hi,
                                      d ? b.getI64IntegerAttr(*d) : IntegerAttr());
  // A read outside the tensor yields 0: include it unless the box is inside.
  Value inside = summary.getAllInside();
  return IntRange::of(select(inside, summary.getMin(), min(summary.getMin(), i64(0))),
                      select(inside, summary.getMax(), max(summary.getMax(), i64(0))));
}

IntRange IntervalEmitter::computeInt(Value v) {
  if (!v.getType().isInteger(64) && !v.getType().isIndex())
    return IntRange::unknown();
  if (auto c = constantOf(v)) {
    Value cv = i64(*c);
    return IntRange::of(cv, cv);
  }
  if (isa<BlockArgument>(v))
    return IntRange::unknown();
  if (auto r = floorModRange(v))
    return *r;
  Operation *op = v.getDefiningOp();
  auto bin = [&](auto fn) -> IntRange {
    IntRange x = intOf(op->getOperand(0)), y = intOf(op->getOperand(1));
    if (x.top || y.top)
      return IntRange::unknown();
    return fn(x, y);
  };
  if (isa<arith::AddIOp>(op))
    return bin([&](IntRange x, IntRange y) {
      return IntRange::of(add(x.lo, y.lo), add(x.hi, y.hi));
    });
  if (isa<arith::SubIOp>(op))
    return bin([&](IntRange x, IntRange y) {
      return IntRange::of(sub(x.lo, y.hi), sub(x.hi, y.lo));
    });
  if (isa<arith::MinSIOp>(op))
    return bin([&](IntRange x, IntRange y) {
      return IntRange::of(min(x.lo, y.lo), min(x.hi, y.hi));
    });
  if (isa<arith::MaxSIOp>(op))
    return bin([&](IntRange x, IntRange y) {
      return IntRange::of(max(x.lo, y.lo), max(x.hi, y.hi));
    });
  if (isa<arith::MulIOp>(op))
    return bin([&](IntRange x, IntRange y) {
      auto mul = [&](Value p, Value q) { return arith::MulIOp::create(b, loc, p, q); };
      Value a = mul(x.lo, y.lo), c = mul(x.lo, y.hi), d = mul(x.hi, y.lo), e = mul(x.hi, y.hi);
      return IntRange::of(min(min(a, c), min(d, e)), max(max(a, c), max(d, e)));
    });
  if (auto div = dyn_cast<arith::FloorDivSIOp>(op)) {
    auto c = constantOf(div.getRhs());
    IntRange x = intOf(div.getLhs());
    if (!c || *c == 0 || x.top)
      return IntRange::unknown();
    Value lo = arith::FloorDivSIOp::create(b, loc, x.lo, i64(*c));
    Value hi = arith::FloorDivSIOp::create(b, loc, x.hi, i64(*c));
    return *c > 0 ? IntRange::of(lo, hi) : IntRange::of(hi, lo);
  }
  if (auto rem = dyn_cast<arith::RemSIOp>(op)) {
    auto c = constantOf(rem.getRhs());
    if (!c || *c == 0)
      return IntRange::unknown();
    int64_t m = (*c > 0 ? *c : -*c) - 1;
    return IntRange::of(i64(-m), i64(m));
  }
  if (auto sel = dyn_cast<arith::SelectOp>(op)) {
    IntRange x = intOf(sel.getTrueValue()), y = intOf(sel.getFalseValue());
    if (x.top || y.top)
      return IntRange::unknown();
    BoolRange c = boolOf(sel.getCondition());
    Value both = andi(c.mayTrue, c.mayFalse);
    Value lo = select(both, min(x.lo, y.lo), select(c.mayTrue, x.lo, y.lo));
    Value hi = select(both, max(x.hi, y.hi), select(c.mayTrue, x.hi, y.hi));
    return IntRange::of(lo, hi);
  }
  if (isa<arith::ExtUIOp, arith::ExtSIOp>(op) && op->getOperand(0).getType().isInteger(1)) {
    BoolRange c = boolOf(op->getOperand(0));
    Value one = i64(isa<arith::ExtUIOp>(op) ? 1 : -1);
    // ext(false) = 0, ext(true) = 1 (or -1).
    Value whenT = one, whenF = i64(0);
    Value lo = select(c.mayFalse, select(c.mayTrue, min(whenT, whenF), whenF), whenT);
    Value hi = select(c.mayFalse, select(c.mayTrue, max(whenT, whenF), whenF), whenT);
    return IntRange::of(lo, hi);
  }
  if (isa<math::AbsIOp>(op)) {
    IntRange x = intOf(op->getOperand(0));
    if (x.top)
      return IntRange::unknown();
    Value zero = i64(0);
    Value nonneg = cmp(int(P::sge), x.lo, zero), nonpos = cmp(int(P::sle), x.hi, zero);
    Value negLo = sub(zero, x.lo), negHi = sub(zero, x.hi);
    Value lo = select(nonneg, x.lo, select(nonpos, negHi, zero));
    Value hi = select(nonneg, x.hi, select(nonpos, negLo, max(negLo, x.hi)));
    return IntRange::of(lo, hi);
  }
  if (isa<arith::IndexCastOp>(op))
    return intOf(op->getOperand(0));
  if (auto size = dyn_cast<SizeOp>(op)) {
    Value s = SizeOp::create(b, loc, size.getTensor(), size.getDim());
    return IntRange::of(s, s);
  }
  if (auto lookup = dyn_cast<LookupOp>(op)) {
    if (v == lookup.getValue())
      return lookupRange(op, nullptr);
  }
  return IntRange::unknown();
}

BoolRange IntervalEmitter::computeBool(Value v) {
  BoolRange unknown{i1(true), i1(true)};
  if (!v.getType().isInteger(1))
    return unknown;
  if (auto c = constantOf(v)) {
    bool t = *c != 0;
    return {i1(t), i1(!t)};
  }
  Operation *op = v.getDefiningOp();
  if (!op)
    return unknown;
  if (auto c = dyn_cast<arith::CmpIOp>(op)) {
    IntRange x = intOf(c.getLhs()), y = intOf(c.getRhs());
    if (x.top || y.top)
      return unknown;
    auto le = [&](Value p, Value q) { return cmp(int(P::sle), p, q); };
    auto lt = [&](Value p, Value q) { return cmp(int(P::slt), p, q); };
    switch (c.getPredicate()) {
    case P::eq:
    case P::ne: {
      Value overlap = andi(le(x.lo, y.hi), le(y.lo, x.hi));
      Value single = andi(andi(cmp(int(P::eq), x.lo, x.hi), cmp(int(P::eq), y.lo, y.hi)),
                          cmp(int(P::eq), x.lo, y.lo));
      BoolRange eq{overlap, noti(single)};
      return c.getPredicate() == P::eq ? eq : BoolRange{eq.mayFalse, eq.mayTrue};
    }
    case P::slt:
      return {lt(x.lo, y.hi), le(y.lo, x.hi)};
    case P::sle:
      return {le(x.lo, y.hi), lt(y.lo, x.hi)};
    case P::sgt:
      return {lt(y.lo, x.hi), le(x.lo, y.hi)};
    case P::sge:
      return {le(y.lo, x.hi), lt(x.lo, y.hi)};
    default:
      return unknown;
    }
  }
  if (isa<arith::AndIOp, arith::OrIOp, arith::XOrIOp>(op)) {
    BoolRange x = boolOf(op->getOperand(0)), y = boolOf(op->getOperand(1));
    if (isa<arith::AndIOp>(op))
      return {andi(x.mayTrue, y.mayTrue), ori(x.mayFalse, y.mayFalse)};
    if (isa<arith::OrIOp>(op))
      return {ori(x.mayTrue, y.mayTrue), andi(x.mayFalse, y.mayFalse)};
    return {ori(andi(x.mayTrue, y.mayFalse), andi(x.mayFalse, y.mayTrue)),
            ori(andi(x.mayTrue, y.mayTrue), andi(x.mayFalse, y.mayFalse))};
  }
  if (auto sel = dyn_cast<arith::SelectOp>(op)) {
    BoolRange c = boolOf(sel.getCondition());
    BoolRange x = boolOf(sel.getTrueValue()), y = boolOf(sel.getFalseValue());
    return {ori(andi(c.mayTrue, x.mayTrue), andi(c.mayFalse, y.mayTrue)),
            ori(andi(c.mayTrue, x.mayFalse), andi(c.mayFalse, y.mayFalse))};
  }
  if (auto lookup = dyn_cast<LookupOp>(op)) {
    BoolRange inBounds = unknown;
    (void)lookupRange(op, &inBounds);
    return inBounds;
  }
  if (auto contains = dyn_cast<ContainsOp>(op)) {
    IntRange value = intOf(contains.getValue());
    SmallVector<Value> lo, hi;
    if (value.top)
      return unknown;
    for (Value index : contains.getIndices()) {
      IntRange r = intOf(index);
      if (r.top)
        return unknown;
      lo.push_back(r.lo);
      hi.push_back(r.hi);
    }
    auto box = BoxContainsOp::create(b, loc, b.getI1Type(), b.getI1Type(),
                                     contains.getTensor(), lo, hi, value.lo, value.hi);
    return {box.getAny(), noti(box.getAll())};
  }
  return unknown;
}

} // namespace mlir::attn
