//===- DifferentiateScore.cpp - the reverse derivative of the score region -===//
//
// Fills the `score_grad` region of every attn.attention from its `score` region,
// after attn-expand-patterns (so the region holds arith, math, select, attn.lookup,
// attn.constant_table and FIRE's scf.for only):
//
//   score_grad(g, s, b, h, q_idx, kv_idx, q, kv, seq_q, seq_kv):
//     <the score region's ops, recomputed>
//     <their adjoints in reverse order, seeded with g at the yielded value>
//     attn.accumulate_grad <adjoint of each float lookup> into <its tensor>[<indices>]
//     yield <adjoint of s>
//
// Reverse mode over SSA: every value's adjoint is the sum of what its users pass
// back. Integer and boolean values carry none (masks, indices, comparisons, floor and
// ceil are piecewise constant). A loop is differentiated when each float value it
// carries is a sum (`acc + t`, t independent of what the loop carries, FIRE's
// hidden-unit sum): the adjoint of every term is the adjoint of the loop's result,
// and a second loop over the same range recomputes each iteration's term and passes
// its adjoints back, summing those that leave the loop. Anything else is refused at
// the op, with why.
//
//===----------------------------------------------------------------------===//
#include "passes/Passes.h"

#include "dialect/AttnOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "llvm/ADT/MapVector.h"
#include "llvm/ADT/SetVector.h"
#include "llvm/ADT/TypeSwitch.h"

#include <cmath>

namespace mlir::attn {
#define GEN_PASS_DEF_ATTNDIFFERENTIATESCORE
#include "passes/Passes.h.inc"
} // namespace mlir::attn

using namespace mlir;
using namespace mlir::attn;

namespace {

/// Reverse-mode differentiation of straight-line code (and additive loops) at the
/// builder's insertion point. Adjoints are keyed by the values of the code being
/// differentiated.
class Differentiator {
public:
  Differentiator(OpBuilder &b, Location loc) : b(b), loc(loc) {}

  /// Adds `g` to the adjoint of `v` (floats only; constants have none).
  void add(Value v, Value g) {
    if (!isa<FloatType>(v.getType()))
      return;
    if (Operation *def = v.getDefiningOp(); def && def->hasTrait<OpTrait::ConstantLike>())
      return;
    auto [it, inserted] = adjoints.try_emplace(v, g);
    if (!inserted)
      it->second = arith::AddFOp::create(b, loc, it->second, g);
  }

  Value adjoint(Value v) const { return adjoints.lookup(v); }
  const llvm::MapVector<Value, Value> &all() const { return adjoints; }

  /// Passes the adjoints of `ops`' results back to their operands, last op first.
  LogicalResult reverse(ArrayRef<Operation *> ops) {
    for (Operation *op : llvm::reverse(ops))
      if (failed(reverseOp(op)))
        return failure();
    return success();
  }

  Value f32(double x) { return arith::ConstantFloatOp::create(b, loc, b.getF32Type(), APFloat(float(x))); }

private:
  Value neg(Value x) { return arith::NegFOp::create(b, loc, x); }
  Value mul(Value x, Value y) { return arith::MulFOp::create(b, loc, x, y); }
  Value div(Value x, Value y) { return arith::DivFOp::create(b, loc, x, y); }
  Value sub(Value x, Value y) { return arith::SubFOp::create(b, loc, x, y); }
  Value select(Value c, Value x, Value y) { return arith::SelectOp::create(b, loc, c, x, y); }
  Value cmp(arith::CmpFPredicate p, Value x, Value y) {
    return arith::CmpFOp::create(b, loc, p, x, y);
  }

  LogicalResult reverseOp(Operation *op);
  LogicalResult reverseLoop(scf::ForOp loop);

  OpBuilder &b;
  Location loc;
  llvm::MapVector<Value, Value> adjoints;
};

LogicalResult Differentiator::reverseOp(Operation *op) {
  // Only ops with a float result that received an adjoint pass anything back.
  bool any = false;
  for (Value r : op->getResults())
    any = any || (isa<FloatType>(r.getType()) && adjoints.count(r));
  if (!any)
    return success();
  if (auto loop = dyn_cast<scf::ForOp>(op))
    return reverseLoop(loop);
  Value a = op->getNumResults() ? adjoints.lookup(op->getResult(0)) : Value();
  Value out = op->getNumResults() ? op->getResult(0) : Value();
  bool known = true;
  llvm::TypeSwitch<Operation *>(op)
      .Case([&](arith::AddFOp o) {
        add(o.getLhs(), a);
        add(o.getRhs(), a);
      })
      .Case([&](arith::SubFOp o) {
        add(o.getLhs(), a);
        add(o.getRhs(), neg(a));
      })
      .Case([&](arith::MulFOp o) {
        add(o.getLhs(), mul(a, o.getRhs()));
        add(o.getRhs(), mul(a, o.getLhs()));
      })
      .Case([&](arith::DivFOp o) {
        add(o.getLhs(), div(a, o.getRhs()));
        add(o.getRhs(), neg(div(mul(a, out), o.getRhs())));
      })
      .Case([&](arith::NegFOp o) { add(o.getOperand(), neg(a)); })
      .Case<arith::MaximumFOp, arith::MaxNumFOp, arith::MinimumFOp, arith::MinNumFOp>(
          [&](Operation *o) {
            bool isMax = isa<arith::MaximumFOp, arith::MaxNumFOp>(o);
            // The adjoint goes to the operand that was chosen (the first on a tie).
            Value first = cmp(isMax ? arith::CmpFPredicate::OGE : arith::CmpFPredicate::OLE,
                              o->getOperand(0), o->getOperand(1));
            Value zero = f32(0.0);
            add(o->getOperand(0), select(first, a, zero));
            add(o->getOperand(1), select(first, zero, a));
          })
      .Case([&](arith::SelectOp o) {
        Value zero = f32(0.0);
        add(o.getTrueValue(), select(o.getCondition(), a, zero));
        add(o.getFalseValue(), select(o.getCondition(), zero, a));
      })
      .Case<arith::ExtFOp, arith::TruncFOp>([&](Operation *o) {
        if (o->getOperand(0).getType() == a.getType())
          add(o->getOperand(0), a);
        else if (isa<arith::ExtFOp>(o))
          add(o->getOperand(0), arith::TruncFOp::create(b, loc, o->getOperand(0).getType(), a));
        else
          add(o->getOperand(0), arith::ExtFOp::create(b, loc, o->getOperand(0).getType(), a));
      })
      .Case([&](math::ExpOp o) { add(o.getOperand(), mul(a, out)); })
      .Case([&](math::Exp2Op o) { add(o.getOperand(), mul(mul(a, out), f32(std::log(2.0)))); })
      .Case([&](math::LogOp o) { add(o.getOperand(), div(a, o.getOperand())); })
      .Case([&](math::Log2Op o) {
        add(o.getOperand(), div(a, mul(o.getOperand(), f32(std::log(2.0)))));
      })
      .Case([&](math::SqrtOp o) { add(o.getOperand(), div(mul(a, f32(0.5)), out)); })
      .Case([&](math::TanhOp o) {
        add(o.getOperand(), mul(a, sub(f32(1.0), mul(out, out))));
      })
      .Case([&](math::AbsFOp o) {
        Value x = o.getOperand(), zero = f32(0.0);
        Value neg0 = cmp(arith::CmpFPredicate::OLT, x, zero);
        Value pos0 = cmp(arith::CmpFPredicate::OGT, x, zero);
        add(x, select(neg0, neg(a), select(pos0, a, zero)));
      })
      .Case<math::FloorOp, math::CeilOp, arith::SIToFPOp, arith::UIToFPOp, ConstantTableOp>(
          [&](Operation *) {})
      .Case([&](LookupOp o) {
        // attn.lookup yields 0 outside the tensor; accumulate_grad adds nothing there.
        if (isa<FloatType>(o.getValue().getType()))
          AccumulateGradOp::create(b, loc, o.getTensor(), o.getIndices(), a);
      })
      .Default([&](Operation *) { known = false; });
  if (known)
    return success();
  if (op->hasTrait<mlir::attn::NamedPattern>())
    return op->emitError("attn-differentiate-score: run attn-expand-patterns first ('")
           << op->getName() << "' is a named pattern)";
  return op->emitError("attn-differentiate-score: no derivative for '")
         << op->getName() << "'";
}

/// The ops of a loop body that depend on what the loop carries (other than through
/// the sums of the carried float values).
static llvm::SmallPtrSet<Operation *, 8> carriedDependents(scf::ForOp loop) {
  llvm::SmallPtrSet<Operation *, 8> tainted;
  llvm::SmallPtrSet<Value, 8> carried(loop.getRegionIterArgs().begin(),
                                      loop.getRegionIterArgs().end());
  for (Operation &inner : loop.getBody()->without_terminator()) {
    bool depends = false;
    inner.walk([&](Operation *nested) {
      for (Value operand : nested->getOperands())
        depends = depends || carried.count(operand) ||
                  (operand.getDefiningOp() && tainted.count(operand.getDefiningOp()));
    });
    if (depends)
      tainted.insert(&inner);
  }
  return tainted;
}

/// For each carried float value of an additive loop, the term t of `yield acc + t`
/// (null for carried non-float values, which no float term may depend on).
static FailureOr<SmallVector<Value>> additiveTerms(scf::ForOp loop,
                                                  llvm::SmallPtrSetImpl<Operation *> &tainted) {
  auto yield = cast<scf::YieldOp>(loop.getBody()->getTerminator());
  SmallVector<Value> terms;
  for (auto [k, carried] : llvm::enumerate(loop.getRegionIterArgs())) {
    if (!isa<FloatType>(carried.getType())) {
      terms.push_back(Value());
      continue;
    }
    auto sum = yield.getOperand(k).getDefiningOp<arith::AddFOp>();
    Value term;
    if (sum && sum.getLhs() == carried)
      term = sum.getRhs();
    else if (sum && sum.getRhs() == carried)
      term = sum.getLhs();
    if (!term || !carried.hasOneUse())
      return loop.emitError("attn-differentiate-score: the loop's carried value #")
             << k << " is not a sum (yield acc + term, acc used nowhere else)";
    tainted.erase(sum);
    if (Operation *def = term.getDefiningOp(); def && tainted.count(def))
      return loop.emitError("attn-differentiate-score: the term summed into the loop's "
                            "carried value #")
             << k << " depends on what the loop carries";
    terms.push_back(term);
  }
  return terms;
}

LogicalResult Differentiator::reverseLoop(scf::ForOp loop) {
  llvm::SmallPtrSet<Operation *, 8> tainted = carriedDependents(loop);
  FailureOr<SmallVector<Value>> terms = additiveTerms(loop, tainted);
  if (failed(terms))
    return failure();
  Block *body = loop.getBody();
  auto yield = cast<scf::YieldOp>(body->getTerminator());
  // d result / d init = 1 for a sum.
  SmallVector<Value> resultAdjoints;
  for (auto [k, init] : llvm::enumerate(loop.getInitArgs())) {
    if (!(*terms)[k]) {
      resultAdjoints.push_back(Value());
      continue;
    }
    Value a = adjoints.lookup(loop.getResult(k));
    if (!a)
      a = f32(0.0);
    resultAdjoints.push_back(a);
    add(init, a);
  }
  // Float values from outside the loop that the body reads: their adjoints are
  // summed over the iterations by the reverse loop.
  llvm::SetVector<Value> outside;
  body->walk([&](Operation *inner) {
    for (Value operand : inner->getOperands()) {
      if (!isa<FloatType>(operand.getType()))
        continue;
      Operation *def = operand.getDefiningOp();
      if (def && def->hasTrait<OpTrait::ConstantLike>())
        continue;
      Region *where = def ? def->getParentRegion() : operand.getParentRegion();
      if (!loop.getRegion().isAncestor(where))
        outside.insert(operand);
    }
  });
  SmallVector<Value> zeros;
  for (size_t i = 0; i < outside.size(); ++i)
    zeros.push_back(f32(0.0));
  auto reverseLoop = scf::ForOp::create(b, loc, loop.getLowerBound(), loop.getUpperBound(),
                                        loop.getStep(), zeros);
  {
    OpBuilder::InsertionGuard guard(b);
    Block *rbody = reverseLoop.getBody();
    b.setInsertionPointToStart(rbody);
    IRMapping mapping;
    mapping.map(loop.getInductionVar(), reverseLoop.getInductionVar());
    // Recompute the iteration's ops but the sums of the carried values and what
    // depends on carried non-float values (flags no term reads).
    llvm::SmallPtrSet<Operation *, 4> skip;
    for (Value v : yield.getOperands())
      if (isa<FloatType>(v.getType()))
        skip.insert(v.getDefiningOp());
    SmallVector<Operation *> cloned;
    for (Operation &inner : body->without_terminator()) {
      if (skip.count(&inner) || tainted.count(&inner))
        continue;
      cloned.push_back(b.clone(inner, mapping));
    }
    Differentiator local(b, loc);
    for (auto [k, term] : llvm::enumerate(*terms))
      if (term)
        local.add(mapping.lookupOrDefault(term), resultAdjoints[k]);
    if (failed(local.reverse(cloned)))
      return failure();
    SmallVector<Value> next;
    for (auto [i, v] : llvm::enumerate(outside)) {
      Value acc = reverseLoop.getRegionIterArgs()[i];
      Value a = local.adjoint(v);
      next.push_back(a ? arith::AddFOp::create(b, loc, acc, a).getResult() : acc);
    }
    // The builder made an empty yield when the loop carries nothing; replace it.
    if (!rbody->empty() && isa<scf::YieldOp>(rbody->back()))
      rbody->back().erase();
    b.setInsertionPointToEnd(rbody);
    scf::YieldOp::create(b, loc, next);
  }
  for (auto [i, v] : llvm::enumerate(outside))
    add(v, reverseLoop.getResult(i));
  return success();
}

/// Builds `op`'s score_grad region.
LogicalResult differentiate(AttentionOp op) {
  Region &score = op.getScore();
  Region &grad = op.getScoreGrad();
  if (!grad.empty())
    grad.getBlocks().clear();
  OpBuilder b(op.getContext());
  Location loc = op.getLoc();
  Block *block = new Block();
  grad.push_back(block);
  Type f32 = b.getF32Type(), i64 = b.getI64Type();
  Value g = block->addArgument(f32, loc);
  IRMapping mapping;
  Block &forward = score.front();
  for (BlockArgument arg : forward.getArguments())
    mapping.map(arg, block->addArgument(arg.getType(), arg.getLoc()));
  (void)i64;
  b.setInsertionPointToStart(block);
  SmallVector<Operation *> cloned;
  for (Operation &inner : forward.without_terminator())
    cloned.push_back(b.clone(inner, mapping));
  auto yield = cast<YieldOp>(forward.getTerminator());
  Differentiator d(b, loc);
  Value result = mapping.lookupOrDefault(yield.getValues()[0]);
  Value s = block->getArgument(1);
  if (result == s) {
    YieldOp::create(b, loc, ValueRange{g});
    return success();
  }
  d.add(result, g);
  if (failed(d.reverse(cloned))) {
    grad.getBlocks().clear();
    return failure();
  }
  Value ds = d.adjoint(s);
  if (!ds)
    ds = d.f32(0.0);
  YieldOp::create(b, loc, ValueRange{ds});
  return success();
}

struct DifferentiateScorePass
    : public mlir::attn::impl::AttnDifferentiateScoreBase<DifferentiateScorePass> {
  using AttnDifferentiateScoreBase::AttnDifferentiateScoreBase;

  void runOnOperation() override {
    SmallVector<AttentionOp> ops;
    getOperation().walk([&](AttentionOp op) { ops.push_back(op); });
    for (AttentionOp op : ops)
      if (failed(differentiate(op)))
        return signalPassFailure();
  }
};

} // namespace
