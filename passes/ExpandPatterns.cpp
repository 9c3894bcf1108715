//===- ExpandPatterns.cpp - named patterns -> arith/math ------------------===//
//
// Each named pattern op becomes the ops of its definition in PATTERNS.md. The
// integer forms are chosen so that block analysis can read them: comparisons of
// differences of positions against constants, floor division by constants, and
// floor modulo by a positive constant c written as
//   r = remsi(a, c); select(r < 0, r + c, r).
//
//===----------------------------------------------------------------------===//
#include "passes/Passes.h"

#include "dialect/AttnOps.h"
#include "dialect/AttnSemantics.h"

#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/Builders.h"

#include <cmath>

namespace mlir::attn {
#define GEN_PASS_DEF_ATTNEXPANDPATTERNS
#include "passes/Passes.h.inc"
} // namespace mlir::attn

using namespace mlir;
using namespace mlir::attn;

namespace {

/// Builds the arith/math form of one pattern at the builder's insertion point.
class Expander {
public:
  Expander(OpBuilder &b, Location loc) : b(b), loc(loc) {}

  Value i64(int64_t v) { return arith::ConstantIntOp::create(b, loc, v, 64); }
  Value f32(double v) {
    return arith::ConstantFloatOp::create(b, loc, b.getF32Type(),
                                          APFloat(static_cast<float>(v)));
  }
  Value boolean(bool v) { return arith::ConstantIntOp::create(b, loc, v ? 1 : 0, 1); }
  Value cmp(arith::CmpIPredicate p, Value x, Value y) {
    return arith::CmpIOp::create(b, loc, p, x, y);
  }
  Value andi(Value x, Value y) { return arith::AndIOp::create(b, loc, x, y); }
  Value ori(Value x, Value y) { return arith::OrIOp::create(b, loc, x, y); }
  Value sub(Value x, Value y) { return arith::SubIOp::create(b, loc, x, y); }
  Value add(Value x, Value y) { return arith::AddIOp::create(b, loc, x, y); }
  Value floorDiv(Value x, int64_t c) {
    return arith::FloorDivSIOp::create(b, loc, x, i64(c));
  }
  /// Floor modulo by a positive constant.
  Value floorMod(Value x, int64_t c) {
    Value r = arith::RemSIOp::create(b, loc, x, i64(c));
    Value neg = cmp(arith::CmpIPredicate::slt, r, i64(0));
    return arith::SelectOp::create(b, loc, neg, add(r, i64(c)), r);
  }
  Value toF32(Value x) { return arith::SIToFPOp::create(b, loc, b.getF32Type(), x); }

  /// lo <= x <= hi for each sorted run [lo, hi] of `values`.
  Value inSet(Value x, SmallVector<int64_t> values) {
    llvm::sort(values);
    values.erase(std::unique(values.begin(), values.end()), values.end());
    Value any = boolean(false);
    for (size_t i = 0; i < values.size();) {
      size_t j = i;
      while (j + 1 < values.size() && values[j + 1] == values[j] + 1)
        ++j;
      Value inside;
      if (values[i] == values[j]) {
        inside = cmp(arith::CmpIPredicate::eq, x, i64(values[i]));
      } else {
        Value atLeast = cmp(arith::CmpIPredicate::sge, x, i64(values[i]));
        Value atMost = cmp(arith::CmpIPredicate::sle, x, i64(values[j]));
        inside = andi(atLeast, atMost);
      }
      any = ori(any, inside);
      i = j + 1;
    }
    return any;
  }

  /// d <= left (left >= 0) and d >= -right (right >= 0), d = q - kv.
  Value window(Value d, int64_t left, int64_t right) {
    Value ok = boolean(true);
    if (left >= 0)
      ok = andi(ok, cmp(arith::CmpIPredicate::sle, d, i64(left)));
    if (right >= 0)
      ok = andi(ok, cmp(arith::CmpIPredicate::sge, d, i64(-right)));
    return ok;
  }

  Value expand(Operation *op);

private:
  Value t5(T5BiasOp op);
  Value fire(FireOp op);

  OpBuilder &b;
  Location loc;
};

Value Expander::expand(Operation *op) {
  using P = arith::CmpIPredicate;
  // Operands are built one statement at a time: C++ leaves the order of argument
  // evaluation open, and the IR must not depend on the host compiler.
  if (auto o = dyn_cast<CausalOp>(op)) {
    Value d = sub(o.getQ(), o.getKv());
    return cmp(P::sge, d, i64(0));
  }
  if (auto o = dyn_cast<SlidingWindowOp>(op)) {
    Value d = sub(o.getQ(), o.getKv());
    return window(d, static_cast<int64_t>(o.getLeft()), static_cast<int64_t>(o.getRight()));
  }
  if (auto o = dyn_cast<DilatedWindowOp>(op)) {
    Value d = sub(o.getQ(), o.getKv());
    Value ok = window(d, static_cast<int64_t>(o.getLeft()), static_cast<int64_t>(o.getRight()));
    int64_t r = static_cast<int64_t>(o.getDilation());
    if (r == 1)
      return ok;
    Value mod = floorMod(d, r);
    Value onStride = cmp(P::eq, mod, i64(0));
    return andi(ok, onStride);
  }
  if (auto o = dyn_cast<SinksOp>(op))
    return cmp(P::slt, o.getKv(), i64(static_cast<int64_t>(o.getCount())));
  if (auto o = dyn_cast<GlobalTokensOp>(op)) {
    if (auto count = o.getCount()) {
      int64_t g = static_cast<int64_t>(*count);
      auto inRange = [&](Value x) {
        Value atLeast = cmp(P::sge, x, i64(0));
        Value below = cmp(P::slt, x, i64(g));
        return andi(atLeast, below);
      };
      Value qGlobal = inRange(o.getQ());
      Value kvGlobal = inRange(o.getKv());
      return ori(qGlobal, kvGlobal);
    }
    SmallVector<int64_t> tokens(o.getTokens()->begin(), o.getTokens()->end());
    Value qGlobal = inSet(o.getQ(), tokens);
    Value kvGlobal = inSet(o.getKv(), tokens);
    return ori(qGlobal, kvGlobal);
  }
  if (auto o = dyn_cast<PrefixLmOp>(op)) {
    Value inPrefix = cmp(P::slt, o.getKv(), o.getPrefix());
    Value d = sub(o.getQ(), o.getKv());
    Value causal = cmp(P::sge, d, i64(0));
    return ori(inPrefix, causal);
  }
  if (auto o = dyn_cast<StridedOp>(op)) {
    int64_t l = static_cast<int64_t>(o.getStride());
    Value d = sub(o.getQ(), o.getKv());
    Value causal = cmp(P::sge, d, i64(0));
    Value near = cmp(P::slt, d, i64(l));
    Value mod = floorMod(d, l);
    Value stripe = cmp(P::eq, mod, i64(0));
    Value either = ori(near, stripe);
    return andi(causal, either);
  }
  if (auto o = dyn_cast<FixedOp>(op)) {
    int64_t l = static_cast<int64_t>(o.getStride()), c = static_cast<int64_t>(o.getSummary());
    Value d = sub(o.getQ(), o.getKv());
    Value causal = cmp(P::sge, d, i64(0));
    Value kvBlock = floorDiv(o.getKv(), l);
    Value qBlock = floorDiv(o.getQ(), l);
    Value sameBlock = cmp(P::eq, kvBlock, qBlock);
    Value kvMod = floorMod(o.getKv(), l);
    Value summary = cmp(P::sge, kvMod, i64(l - c));
    Value either = ori(sameBlock, summary);
    return andi(causal, either);
  }
  if (auto o = dyn_cast<DilatedSegmentsOp>(op)) {
    int64_t w = static_cast<int64_t>(o.getSegment()), r = static_cast<int64_t>(o.getDilation());
    Value offset = o.getHeadOffset() ? i64(static_cast<int64_t>(*o.getHeadOffset()))
                                     : floorMod(o.getH(), r);
    Value qSeg = floorDiv(o.getQ(), w);
    Value kvSeg = floorDiv(o.getKv(), w);
    Value same = cmp(P::eq, qSeg, kvSeg);
    Value qMod = floorMod(o.getQ(), r);
    Value qSel = cmp(P::eq, qMod, offset);
    Value kvMod = floorMod(o.getKv(), r);
    Value kvSel = cmp(P::eq, kvMod, offset);
    Value both = andi(qSel, kvSel);
    return andi(same, both);
  }
  if (auto o = dyn_cast<ShiftedGroupsOp>(op)) {
    int64_t g = static_cast<int64_t>(o.getGroup());
    SmallVector<int64_t> heads(o.getShiftedHeads().begin(), o.getShiftedHeads().end());
    Value shifted = inSet(o.getH(), heads);
    Value half = i64(g / 2);
    Value none = i64(0);
    Value shift = arith::SelectOp::create(b, loc, shifted, half, none);
    Value qShifted = add(o.getQ(), shift);
    Value kvShifted = add(o.getKv(), shift);
    Value qGroup = floorDiv(qShifted, g);
    Value kvGroup = floorDiv(kvShifted, g);
    return cmp(P::eq, qGroup, kvGroup);
  }

  // Score transforms.
  if (auto o = dyn_cast<SoftcapOp>(op)) {
    double cap = o.getCap().convertToDouble();
    Value inverse = f32(1.0 / cap);
    Value scaled = arith::MulFOp::create(b, loc, o.getS(), inverse);
    Value t = math::TanhOp::create(b, loc, scaled);
    Value capValue = f32(cap);
    return arith::MulFOp::create(b, loc, capValue, t);
  }
  if (auto o = dyn_cast<AlibiOp>(op)) {
    Value slope = ConstantTableOp::create(b, loc, o.getH(), o.getSlopesAttr());
    Value di = sub(o.getQ(), o.getKv());
    Value d = toF32(di);
    Value bias = arith::MulFOp::create(b, loc, slope, d);
    return arith::SubFOp::create(b, loc, o.getS(), bias);
  }
  if (auto o = dyn_cast<KerpleLogOp>(op)) {
    Value r1 = ConstantTableOp::create(b, loc, o.getH(), o.getR1Attr());
    Value r2 = ConstantTableOp::create(b, loc, o.getH(), o.getR2Attr());
    Value di = sub(o.getQ(), o.getKv());
    Value absolute = math::AbsIOp::create(b, loc, di);
    Value dist = toF32(absolute);
    Value one = f32(1.0);
    Value scaledDist = arith::MulFOp::create(b, loc, r2, dist);
    Value inner = arith::AddFOp::create(b, loc, one, scaledDist);
    Value logInner = math::LogOp::create(b, loc, inner);
    Value penalty = arith::MulFOp::create(b, loc, r1, logInner);
    return arith::SubFOp::create(b, loc, o.getS(), penalty);
  }
  if (auto o = dyn_cast<LogLengthScaleOp>(op)) {
    Value next = add(o.getQ(), i64(1));
    Value atLeastOne = arith::MaxSIOp::create(b, loc, next, i64(1));
    Value pos = toF32(atLeastOne);
    double inv = 1.0 / std::log(o.getBase().convertToDouble());
    Value logPos = math::LogOp::create(b, loc, pos);
    Value ratio = arith::MulFOp::create(b, loc, logPos, f32(inv));
    Value factor = arith::MaximumFOp::create(b, loc, ratio, f32(1.0));
    return arith::MulFOp::create(b, loc, o.getS(), factor);
  }
  if (auto o = dyn_cast<T5BiasOp>(op))
    return t5(o);
  if (auto o = dyn_cast<FireOp>(op))
    return fire(o);
  return {};
}

/// The bucket as integer compares: exact below max_exact, then the number of
/// precomputed thresholds n has reached (the thresholds reproduce t5Bucket exactly).
Value Expander::t5(T5BiasOp op) {
  using P = arith::CmpIPredicate;
  int64_t nb = static_cast<int64_t>(op.getNumBuckets());
  int64_t maxDist = static_cast<int64_t>(op.getMaxDistance());
  bool bidir = op.getBidirectional();
  Value d = sub(op.getQ(), op.getKv());
  Value ret = i64(0), n = d;
  int64_t half = nb;
  if (bidir) {
    half = nb / 2;
    Value negative = cmp(P::slt, d, i64(0));
    Value upper = i64(half);
    Value lower = i64(0);
    ret = arith::SelectOp::create(b, loc, negative, upper, lower);
    n = math::AbsIOp::create(b, loc, d);
  } else {
    n = arith::MaxSIOp::create(b, loc, d, i64(0));
  }
  int64_t maxExact = half / 2;
  Value large = i64(maxExact);
  for (int64_t k = 1; maxExact + k <= half - 1; ++k) {
    // Smallest n with bucket(n) >= maxExact + k; bucket is monotone in n.
    int64_t lo = maxExact, hi = int64_t(1) << 62;
    while (lo < hi) {
      int64_t mid = lo + (hi - lo) / 2;
      if (t5Bucket(mid, false, half, maxDist) >= maxExact + k)
        hi = mid;
      else
        lo = mid + 1;
    }
    Value atThreshold = cmp(P::sge, n, i64(lo));
    Value reached = arith::ExtUIOp::create(b, loc, b.getI64Type(), atThreshold);
    large = add(large, reached);
  }
  Value exact = cmp(P::slt, n, i64(maxExact));
  Value inHalf = arith::SelectOp::create(b, loc, exact, n, large);
  Value bucket = add(ret, inHalf);
  auto lookup = LookupOp::create(b, loc, b.getF32Type(), b.getI1Type(), op.getTable(),
                                 ValueRange{bucket, op.getH()});
  Value biased = arith::AddFOp::create(b, loc, op.getS(), lookup.getValue());
  return arith::SelectOp::create(b, loc, lookup.getInBounds(), biased, op.getS());
}

/// s + sum_k w2[h, k] relu(w1[k] x + b1[k]) + b2[h]; any read outside a weight
/// leaves s unchanged.
Value Expander::fire(FireOp op) {
  double c = op.getC().convertToDouble(), L = op.getL().convertToDouble();
  auto psi = [&](Value v) {
    Value cValue = f32(c);
    Value cv = arith::MulFOp::create(b, loc, cValue, v);
    Value one = f32(1.0);
    Value inner = arith::AddFOp::create(b, loc, cv, one);
    return math::LogOp::create(b, loc, inner);
  };
  Value di = sub(op.getQ(), op.getKv());
  Value d = arith::MaxSIOp::create(b, loc, di, i64(0));
  Value lValue = f32(L);
  Value qValue = toF32(op.getQ());
  Value denomArg = arith::MaximumFOp::create(b, loc, lValue, qValue);
  Value denom = psi(denomArg);
  Value dValue = toF32(d);
  Value numer = psi(dValue);
  Value x = arith::DivFOp::create(b, loc, numer, denom);
  Value hidden = SizeOp::create(b, loc, op.getW1(), 0);
  Value upper = arith::IndexCastOp::create(b, loc, b.getIndexType(), hidden);
  Value zero = arith::ConstantIndexOp::create(b, loc, 0);
  Value one = arith::ConstantIndexOp::create(b, loc, 1);
  auto loop = scf::ForOp::create(
      b, loc, zero, upper, one, ValueRange{f32(0.0), boolean(true)},
      [&](OpBuilder &nb, Location l, Value iv, ValueRange acc) {
        Expander e(nb, l);
        Value k = arith::IndexCastOp::create(nb, l, nb.getI64Type(), iv);
        auto w1 = LookupOp::create(nb, l, nb.getF32Type(), nb.getI1Type(), op.getW1(), ValueRange{k});
        auto b1 = LookupOp::create(nb, l, nb.getF32Type(), nb.getI1Type(), op.getB1(), ValueRange{k});
        auto w2 = LookupOp::create(nb, l, nb.getF32Type(), nb.getI1Type(), op.getW2(),
                                   ValueRange{op.getH(), k});
        Value pre = arith::AddFOp::create(nb, l, arith::MulFOp::create(nb, l, w1.getValue(), x),
                                          b1.getValue());
        Value relu = arith::MaximumFOp::create(nb, l, pre, e.f32(0.0));
        Value sum = arith::AddFOp::create(nb, l, acc[0],
                                          arith::MulFOp::create(nb, l, w2.getValue(), relu));
        Value ok = e.andi(acc[1], e.andi(w1.getInBounds(), e.andi(b1.getInBounds(), w2.getInBounds())));
        scf::YieldOp::create(nb, l, ValueRange{sum, ok});
      });
  auto b2 = LookupOp::create(b, loc, b.getF32Type(), b.getI1Type(), op.getB2(), ValueRange{op.getH()});
  Value bias = arith::AddFOp::create(b, loc, loop.getResult(0), b2.getValue());
  Value ok = andi(loop.getResult(1), b2.getInBounds());
  return arith::SelectOp::create(b, loc, ok, arith::AddFOp::create(b, loc, op.getS(), bias),
                                 op.getS());
}

struct ExpandPatternsPass
    : public mlir::attn::impl::AttnExpandPatternsBase<ExpandPatternsPass> {
  void runOnOperation() override {
    SmallVector<Operation *> patterns;
    getOperation().walk([&](Operation *op) {
      if (isa<CausalOp, SlidingWindowOp, DilatedWindowOp, SinksOp, GlobalTokensOp,
              PrefixLmOp, StridedOp, FixedOp, DilatedSegmentsOp, ShiftedGroupsOp,
              SoftcapOp, AlibiOp, T5BiasOp, FireOp, KerpleLogOp, LogLengthScaleOp>(op))
        patterns.push_back(op);
    });
    for (Operation *op : patterns) {
      OpBuilder b(op);
      Value replacement = Expander(b, op->getLoc()).expand(op);
      op->getResult(0).replaceAllUsesWith(replacement);
      op->erase();
    }
  }
};

} // namespace
