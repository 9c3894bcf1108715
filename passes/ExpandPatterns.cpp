//===- ExpandPatterns.cpp - named patterns -> arith/math ------------------===//
//
// Each named pattern op becomes the ops of its definition in PATTERNS.md, by one
// rewrite pattern per op: declarative rules (ExpandPatterns.td) where the
// definition is one expression, the C++ patterns below where it needs computation
// (optional window sides, floor modulo, token sets, T5 thresholds, FIRE's loop).
//
// The integer forms are chosen so that block analysis can read them: comparisons
// of differences of positions against constants, floor division by constants,
// and floor modulo by a positive constant c written as
//   r = remsi(a, c); select(r < 0, r + c, r).
//
//===----------------------------------------------------------------------===//
#include "passes/Passes.h"

#include "dialect/AttnOps.h"
#include "dialect/AttnSemantics.h"

#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

#include <cassert>
#include <cmath>
#include <string>

namespace mlir::attn {
#define GEN_PASS_DEF_ATTNEXPANDPATTERNS
#include "passes/Passes.h.inc"
} // namespace mlir::attn

using namespace mlir;
using namespace mlir::attn;

namespace {

// The declarative rules: populateWithGenerated(RewritePatternSet &).
#include "passes/ExpandPatterns.inc"

using P = arith::CmpIPredicate;

/// Builds arith/math ops at the builder's insertion point (in a pattern, the
/// rewriter, so that the driver sees every op created).
///
/// Operands are built one statement at a time: C++ leaves the order of argument
/// evaluation open, and the IR must not depend on the host compiler.
struct Expander {
  Expander(OpBuilder &b, Location loc) : b(b), loc(loc) {}

  Value i64(int64_t v) { return arith::ConstantIntOp::create(b, loc, v, 64); }
  Value f32(double v) {
    return arith::ConstantFloatOp::create(b, loc, b.getF32Type(), APFloat(static_cast<float>(v)));
  }
  Value boolean(bool v) { return arith::ConstantIntOp::create(b, loc, v ? 1 : 0, 1); }
  Value cmp(P p, Value x, Value y) { return arith::CmpIOp::create(b, loc, p, x, y); }
  Value andi(Value x, Value y) { return arith::AndIOp::create(b, loc, x, y); }
  Value ori(Value x, Value y) { return arith::OrIOp::create(b, loc, x, y); }
  Value sub(Value x, Value y) { return arith::SubIOp::create(b, loc, x, y); }
  Value add(Value x, Value y) { return arith::AddIOp::create(b, loc, x, y); }
  Value select(Value c, Value x, Value y) { return arith::SelectOp::create(b, loc, c, x, y); }
  Value floorDiv(Value x, int64_t c) {
    assert(c > 0 && "divisors are verified positive");
    return arith::FloorDivSIOp::create(b, loc, x, i64(c));
  }
  /// Floor modulo by a positive constant.
  Value floorMod(Value x, int64_t c) {
    assert(c > 0 && "moduli are verified positive");
    Value r = arith::RemSIOp::create(b, loc, x, i64(c));
    Value neg = cmp(P::slt, r, i64(0));
    return select(neg, add(r, i64(c)), r);
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
        inside = cmp(P::eq, x, i64(values[i]));
      } else {
        Value atLeast = cmp(P::sge, x, i64(values[i]));
        Value atMost = cmp(P::sle, x, i64(values[j]));
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
      ok = andi(ok, cmp(P::sle, d, i64(left)));
    if (right >= 0)
      ok = andi(ok, cmp(P::sge, d, i64(-right)));
    return ok;
  }

  OpBuilder &b;
  Location loc;
};

//===----------------------------------------------------------------------===//
// The expansions that need computation, one `expand` per op. I64Attr getters
// read as unsigned; the verifiers have checked the signs.
//===----------------------------------------------------------------------===//

Value expand(SlidingWindowOp o, Expander &e) {
  Value d = e.sub(o.getQ(), o.getKv());
  return e.window(d, static_cast<int64_t>(o.getLeft()), static_cast<int64_t>(o.getRight()));
}

Value expand(DilatedWindowOp o, Expander &e) {
  Value d = e.sub(o.getQ(), o.getKv());
  Value ok = e.window(d, static_cast<int64_t>(o.getLeft()), static_cast<int64_t>(o.getRight()));
  int64_t r = static_cast<int64_t>(o.getDilation());
  if (r == 1)
    return ok;
  Value mod = e.floorMod(d, r);
  Value onStride = e.cmp(P::eq, mod, e.i64(0));
  return e.andi(ok, onStride);
}

Value expand(GlobalTokensOp o, Expander &e) {
  if (auto count = o.getCount()) {
    int64_t g = static_cast<int64_t>(*count);
    auto inRange = [&](Value x) {
      Value atLeast = e.cmp(P::sge, x, e.i64(0));
      Value below = e.cmp(P::slt, x, e.i64(g));
      return e.andi(atLeast, below);
    };
    Value qGlobal = inRange(o.getQ());
    Value kvGlobal = inRange(o.getKv());
    return e.ori(qGlobal, kvGlobal);
  }
  assert(o.getTokens() && "GlobalTokensOp::verify: exactly one of count and tokens");
  SmallVector<int64_t> tokens(o.getTokens()->begin(), o.getTokens()->end());
  Value qGlobal = e.inSet(o.getQ(), tokens);
  Value kvGlobal = e.inSet(o.getKv(), tokens);
  return e.ori(qGlobal, kvGlobal);
}

Value expand(StridedOp o, Expander &e) {
  int64_t l = static_cast<int64_t>(o.getStride());
  Value d = e.sub(o.getQ(), o.getKv());
  Value causal = e.cmp(P::sge, d, e.i64(0));
  Value near = e.cmp(P::slt, d, e.i64(l));
  Value mod = e.floorMod(d, l);
  Value stripe = e.cmp(P::eq, mod, e.i64(0));
  Value either = e.ori(near, stripe);
  return e.andi(causal, either);
}

Value expand(FixedOp o, Expander &e) {
  int64_t l = static_cast<int64_t>(o.getStride()), c = static_cast<int64_t>(o.getSummary());
  Value d = e.sub(o.getQ(), o.getKv());
  Value causal = e.cmp(P::sge, d, e.i64(0));
  Value kvBlock = e.floorDiv(o.getKv(), l);
  Value qBlock = e.floorDiv(o.getQ(), l);
  Value sameBlock = e.cmp(P::eq, kvBlock, qBlock);
  Value kvMod = e.floorMod(o.getKv(), l);
  Value summary = e.cmp(P::sge, kvMod, e.i64(l - c));
  Value either = e.ori(sameBlock, summary);
  return e.andi(causal, either);
}

Value expand(DilatedSegmentsOp o, Expander &e) {
  int64_t w = static_cast<int64_t>(o.getSegment()), r = static_cast<int64_t>(o.getDilation());
  Value offset =
      o.getHeadOffset() ? e.i64(static_cast<int64_t>(*o.getHeadOffset())) : e.floorMod(o.getH(), r);
  Value qSeg = e.floorDiv(o.getQ(), w);
  Value kvSeg = e.floorDiv(o.getKv(), w);
  Value same = e.cmp(P::eq, qSeg, kvSeg);
  Value qMod = e.floorMod(o.getQ(), r);
  Value qSel = e.cmp(P::eq, qMod, offset);
  Value kvMod = e.floorMod(o.getKv(), r);
  Value kvSel = e.cmp(P::eq, kvMod, offset);
  Value both = e.andi(qSel, kvSel);
  return e.andi(same, both);
}

Value expand(ShiftedGroupsOp o, Expander &e) {
  int64_t g = static_cast<int64_t>(o.getGroup());
  SmallVector<int64_t> heads(o.getShiftedHeads().begin(), o.getShiftedHeads().end());
  Value shifted = e.inSet(o.getH(), heads);
  Value half = e.i64(g / 2);
  Value none = e.i64(0);
  Value shift = e.select(shifted, half, none);
  Value qShifted = e.add(o.getQ(), shift);
  Value kvShifted = e.add(o.getKv(), shift);
  Value qGroup = e.floorDiv(qShifted, g);
  Value kvGroup = e.floorDiv(kvShifted, g);
  return e.cmp(P::eq, qGroup, kvGroup);
}

/// The bucket as integer compares: exact below max_exact, then the number of
/// precomputed thresholds n has reached (the thresholds reproduce t5Bucket exactly).
Value expand(T5BiasOp op, Expander &e) {
  OpBuilder &b = e.b;
  int64_t nb = static_cast<int64_t>(op.getNumBuckets());
  int64_t maxDist = static_cast<int64_t>(op.getMaxDistance());
  assert(nb >= 2 && nb <= kMaxT5Buckets && maxDist > 0 &&
         "T5BiasOp::verify and the pattern's precondition bound the buckets");
  bool bidir = op.getBidirectional();
  Value d = e.sub(op.getQ(), op.getKv());
  Value ret = e.i64(0), n = d;
  int64_t half = nb;
  if (bidir) {
    half = nb / 2;
    Value negative = e.cmp(P::slt, d, e.i64(0));
    Value upper = e.i64(half);
    Value lower = e.i64(0);
    ret = e.select(negative, upper, lower);
    n = math::AbsIOp::create(b, e.loc, d);
  } else {
    n = arith::MaxSIOp::create(b, e.loc, d, e.i64(0));
  }
  int64_t maxExact = half / 2;
  Value large = e.i64(maxExact);
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
    Value atThreshold = e.cmp(P::sge, n, e.i64(lo));
    Value reached = arith::ExtUIOp::create(b, e.loc, b.getI64Type(), atThreshold);
    large = e.add(large, reached);
  }
  Value exact = e.cmp(P::slt, n, e.i64(maxExact));
  Value inHalf = e.select(exact, n, large);
  Value bucket = e.add(ret, inHalf);
  auto lookup = LookupOp::create(b, e.loc, b.getF32Type(), b.getI1Type(), op.getTable(),
                                 ValueRange{bucket, op.getH()});
  Value biased = arith::AddFOp::create(b, e.loc, op.getS(), lookup.getValue());
  return e.select(lookup.getInBounds(), biased, op.getS());
}

/// s + sum_k w2[h, k] relu(w1[k] x + b1[k]) + b2[h]; any read outside a weight
/// leaves s unchanged.
Value expand(FireOp op, Expander &e) {
  OpBuilder &b = e.b;
  Location loc = e.loc;
  double c = op.getC().convertToDouble(), L = op.getL().convertToDouble();
  auto psi = [&](Value v) {
    Value cValue = e.f32(c);
    Value cv = arith::MulFOp::create(b, loc, cValue, v);
    Value one = e.f32(1.0);
    Value inner = arith::AddFOp::create(b, loc, cv, one);
    return math::LogOp::create(b, loc, inner);
  };
  Value di = e.sub(op.getQ(), op.getKv());
  Value d = arith::MaxSIOp::create(b, loc, di, e.i64(0));
  Value lValue = e.f32(L);
  Value qValue = e.toF32(op.getQ());
  Value denomArg = arith::MaximumFOp::create(b, loc, lValue, qValue);
  Value denom = psi(denomArg);
  Value dValue = e.toF32(d);
  Value numer = psi(dValue);
  Value x = arith::DivFOp::create(b, loc, numer, denom);
  Value hidden = SizeOp::create(b, loc, op.getW1(), 0);
  Value upper = arith::IndexCastOp::create(b, loc, b.getIndexType(), hidden);
  Value zero = arith::ConstantIndexOp::create(b, loc, 0);
  Value one = arith::ConstantIndexOp::create(b, loc, 1);
  auto loop = scf::ForOp::create(
      b, loc, zero, upper, one, ValueRange{e.f32(0.0), e.boolean(true)},
      [&](OpBuilder &nb, Location l, Value iv, ValueRange acc) {
        Expander in(nb, l);
        Value k = arith::IndexCastOp::create(nb, l, nb.getI64Type(), iv);
        auto w1 =
            LookupOp::create(nb, l, nb.getF32Type(), nb.getI1Type(), op.getW1(), ValueRange{k});
        auto b1 =
            LookupOp::create(nb, l, nb.getF32Type(), nb.getI1Type(), op.getB1(), ValueRange{k});
        auto w2 = LookupOp::create(nb, l, nb.getF32Type(), nb.getI1Type(), op.getW2(),
                                   ValueRange{op.getH(), k});
        Value pre = arith::AddFOp::create(nb, l, arith::MulFOp::create(nb, l, w1.getValue(), x),
                                          b1.getValue());
        Value relu = arith::MaximumFOp::create(nb, l, pre, in.f32(0.0));
        Value sum =
            arith::AddFOp::create(nb, l, acc[0], arith::MulFOp::create(nb, l, w2.getValue(), relu));
        Value ok =
            in.andi(acc[1], in.andi(w1.getInBounds(), in.andi(b1.getInBounds(), w2.getInBounds())));
        scf::YieldOp::create(nb, l, ValueRange{sum, ok});
      });
  auto b2 =
      LookupOp::create(b, loc, b.getF32Type(), b.getI1Type(), op.getB2(), ValueRange{op.getH()});
  Value bias = arith::AddFOp::create(b, loc, loop.getResult(0), b2.getValue());
  Value ok = e.andi(loop.getResult(1), b2.getInBounds());
  return e.select(ok, arith::AddFOp::create(b, loc, op.getS(), bias), op.getS());
}

//===----------------------------------------------------------------------===//
// The C++ patterns
//===----------------------------------------------------------------------===//

/// Whether `op` can be expanded; checked before anything is built, since a
/// pattern that fails must leave the IR untouched. Most can always be.
template <typename OpTy> LogicalResult checkExpandable(OpTy, PatternRewriter &) {
  return success();
}

/// T5 emits one threshold comparison per bucket: above kMaxT5Buckets (the
/// importer's limit too) the kernel would grow without bound, and 2^40 buckets
/// would not finish compiling.
LogicalResult checkExpandable(T5BiasOp op, PatternRewriter &rewriter) {
  int64_t nb = static_cast<int64_t>(op.getNumBuckets());
  if (nb <= kMaxT5Buckets)
    return success();
  return rewriter.notifyMatchFailure(op, [&](Diagnostic &diag) {
    diag << "num_buckets = " << nb << " is more than the " << kMaxT5Buckets
         << " the expansion supports (one comparison per bucket)";
  });
}

/// Replaces `OpTy` by what `expand(OpTy, Expander &)` builds.
template <typename OpTy> struct ExpandNamedPattern : OpRewritePattern<OpTy> {
  using OpRewritePattern<OpTy>::OpRewritePattern;

  LogicalResult matchAndRewrite(OpTy op, PatternRewriter &rewriter) const override {
    if (failed(checkExpandable(op, rewriter)))
      return failure();
    Expander e(rewriter, op.getLoc());
    Value replacement = expand(op, e);
    assert(replacement && replacement.getType() == op.getType() &&
           "an expansion yields the pattern's i1 or f32");
    rewriter.replaceOp(op, replacement);
    return success();
  }
};

/// Keeps the reasons patterns give for not rewriting, so that the error at an op
/// that stays says why.
struct MatchFailureReasons : RewriterBase::Listener {
  void notifyMatchFailure(Location loc, function_ref<void(Diagnostic &)> reasonCallback) override {
    Diagnostic diag(loc, DiagnosticSeverity::Note);
    reasonCallback(diag);
    reasons[loc] = diag.str();
  }
  DenseMap<Location, std::string> reasons;
};

struct ExpandPatternsPass : public mlir::attn::impl::AttnExpandPatternsBase<ExpandPatternsPass> {
  LogicalResult initialize(MLIRContext *ctx) override {
    RewritePatternSet set(ctx);
    populateWithGenerated(set);
    set.add<ExpandNamedPattern<SlidingWindowOp>, ExpandNamedPattern<DilatedWindowOp>,
            ExpandNamedPattern<GlobalTokensOp>, ExpandNamedPattern<StridedOp>,
            ExpandNamedPattern<FixedOp>, ExpandNamedPattern<DilatedSegmentsOp>,
            ExpandNamedPattern<ShiftedGroupsOp>, ExpandNamedPattern<T5BiasOp>,
            ExpandNamedPattern<FireOp>>(ctx);
    patterns = FrozenRewritePatternSet(std::move(set));
    return success();
  }

  void runOnOperation() override {
    SmallVector<Operation *> named;
    getOperation().walk([&](Operation *op) {
      if (op->hasTrait<NamedPattern>())
        named.push_back(op);
    });
    if (named.empty())
      return;

    // The greedy driver on the pattern ops alone (ExistingOps): an expansion makes
    // no pattern op, so one visit each suffices, and the order does not matter
    // (each expansion goes where its op was). No folding and no constant CSE: the
    // output keeps the forms block analysis reads (remsi + select for floor mod),
    // and the constants next to their uses; the pipeline canonicalizes next.
    MatchFailureReasons failures;
    GreedyRewriteConfig config;
    config.setStrictness(GreedyRewriteStrictness::ExistingOps)
        .enableFolding(false)
        .enableConstantCSE(false)
        .setListener(&failures);
    // Not converging is not itself an error here: what matters is whether any
    // pattern op is left, which the walk below reports, op by op.
    (void)applyOpPatternsGreedily(named, patterns, config);

    bool left = false;
    getOperation().walk([&](Operation *op) {
      if (!op->hasTrait<NamedPattern>())
        return;
      left = true;
      InFlightDiagnostic diag = op->emitOpError("cannot be expanded by attn-expand-patterns: ");
      auto reason = failures.reasons.find(op->getLoc());
      if (reason != failures.reasons.end())
        diag << reason->second;
      else
        diag << "no rewrite pattern matches it (every named pattern op needs one, in "
                "passes/ExpandPatterns.td or passes/ExpandPatterns.cpp)";
    });
    if (left)
      signalPassFailure();
  }

  FrozenRewritePatternSet patterns;
};

} // namespace
