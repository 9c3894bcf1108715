//===- ExprEmitter.cpp - checked expression trees -> arith/math -----------===//
#include "specs/ExprEmitter.h"

#include "dialect/AttnOps.h"

using namespace mlir;

namespace attune::expr {

static Value constI64(OpBuilder &b, Location loc, int64_t v) {
  return arith::ConstantIntOp::create(b, loc, v, 64);
}

Value toFloat(OpBuilder &b, Location loc, Value v) {
  if (v.getType().isF32())
    return v;
  return arith::SIToFPOp::create(b, loc, b.getF32Type(), v);
}

/// A divisor that is never 0 or -1, and whether the original was one of those.
static std::pair<Value, Value> safeDivisor(OpBuilder &b, Location loc, Value d) {
  Value isZero = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, d,
                                       constI64(b, loc, 0));
  Value isMinusOne = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, d,
                                           constI64(b, loc, -1));
  Value bad = arith::OrIOp::create(b, loc, isZero, isMinusOne);
  Value safe = arith::SelectOp::create(b, loc, bad, constI64(b, loc, 1), d);
  return {safe, isZero};
}

static bool isConstantNotIn(Value d, std::initializer_list<int64_t> values) {
  auto cst = d.getDefiningOp<arith::ConstantIntOp>();
  if (!cst)
    return false;
  for (int64_t v : values)
    if (cst.value() == v)
      return false;
  return true;
}

Value emitFloorDiv(OpBuilder &b, Location loc, Value a, Value d) {
  if (isConstantNotIn(d, {0, -1}))
    return arith::FloorDivSIOp::create(b, loc, a, d);
  auto [safe, isZero] = safeDivisor(b, loc, d);
  Value q = arith::FloorDivSIOp::create(b, loc, a, safe);
  // d == -1: -a (wrapping), without the INT64_MIN / -1 trap.
  Value isMinusOne = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, d,
                                           constI64(b, loc, -1));
  Value neg = arith::SubIOp::create(b, loc, constI64(b, loc, 0), a);
  q = arith::SelectOp::create(b, loc, isMinusOne, neg, q);
  return arith::SelectOp::create(b, loc, isZero, constI64(b, loc, 0), q);
}

Value emitFloorMod(OpBuilder &b, Location loc, Value a, Value d) {
  bool simple = isConstantNotIn(d, {0, -1});
  Value safe = d, bad;
  if (!simple) {
    Value isZero;
    std::tie(safe, isZero) = safeDivisor(b, loc, d);
    Value isMinusOne = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, d,
                                             constI64(b, loc, -1));
    bad = arith::OrIOp::create(b, loc, isZero, isMinusOne);
  }
  Value zero = constI64(b, loc, 0);
  Value rem = arith::RemSIOp::create(b, loc, a, safe);
  // C's remainder takes the sign of a; Python's takes the sign of d.
  Value nonZero = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ne, rem, zero);
  Value remNeg = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::slt, rem, zero);
  Value dNeg = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::slt, safe, zero);
  Value signsDiffer = arith::XOrIOp::create(b, loc, remNeg, dNeg);
  Value fix = arith::AndIOp::create(b, loc, nonZero, signsDiffer);
  Value fixed = arith::AddIOp::create(b, loc, rem, safe);
  Value r = arith::SelectOp::create(b, loc, fix, fixed, rem);
  if (!simple)
    r = arith::SelectOp::create(b, loc, bad, zero, r);
  return r;
}

namespace {

class Emitter {
public:
  Emitter(OpBuilder &b, Location l, const EmitEnv &e) : b(b), loc(l), env(e) {}

  Value emit(const Node &n) {
    switch (n.kind) {
    case Node::Kind::IntLit:
      return constI64(b, loc, n.intValue);
    case Node::Kind::FloatLit:
      return arith::ConstantFloatOp::create(b, loc, b.getF32Type(),
                                            APFloat(static_cast<float>(n.floatValue)));
    case Node::Kind::BoolLit:
      return arith::ConstantIntOp::create(b, loc, n.boolValue ? 1 : 0, 1);
    case Node::Kind::Name:
      return name(n);
    case Node::Kind::Neg: {
      Value x = emit(*n.args[0]);
      if (x.getType().isF32())
        return arith::NegFOp::create(b, loc, x);
      return arith::SubIOp::create(b, loc, constI64(b, loc, 0), x);
    }
    case Node::Kind::Not: {
      Value x = emit(*n.args[0]);
      return arith::XOrIOp::create(b, loc, x, arith::ConstantIntOp::create(b, loc, 1, 1));
    }
    case Node::Kind::Binary:
      return binary(n);
    case Node::Kind::Compare:
      return compare(n);
    case Node::Kind::Call:
      return call(n);
    case Node::Kind::Index:
      return index(n);
    }
    return {};
  }

private:
  Value name(const Node &n) {
    auto info = env.resolve(n.name);
    if (info && info->kind == NameInfo::Kind::Param) {
      if (info->type == Type::Float)
        return arith::ConstantFloatOp::create(
            b, loc, b.getF32Type(), APFloat(static_cast<float>(info->floatValue)));
      if (info->type == Type::Bool)
        return arith::ConstantIntOp::create(b, loc, info->intValue ? 1 : 0, 1);
      return constI64(b, loc, info->intValue);
    }
    return env.variable(n.name);
  }

  /// Both operands as floats when either is one.
  std::pair<Value, Value> promote(Value x, Value y) {
    if (x.getType().isF32() || y.getType().isF32())
      return {toFloat(b, loc, x), toFloat(b, loc, y)};
    return {x, y};
  }

  Value binary(const Node &n) {
    Value x = emit(*n.args[0]), y = emit(*n.args[1]);
    const std::string &op = n.op;
    if (op == "&&")
      return arith::AndIOp::create(b, loc, x, y);
    if (op == "||")
      return arith::OrIOp::create(b, loc, x, y);
    if (op == "//")
      return emitFloorDiv(b, loc, x, y);
    if (op == "%")
      return emitFloorMod(b, loc, x, y);
    if (op == "/")
      return arith::DivFOp::create(b, loc, toFloat(b, loc, x), toFloat(b, loc, y));
    std::tie(x, y) = promote(x, y);
    bool f = x.getType().isF32();
    if (op == "+")
      return f ? Value(arith::AddFOp::create(b, loc, x, y))
               : Value(arith::AddIOp::create(b, loc, x, y));
    if (op == "-")
      return f ? Value(arith::SubFOp::create(b, loc, x, y))
               : Value(arith::SubIOp::create(b, loc, x, y));
    return f ? Value(arith::MulFOp::create(b, loc, x, y))
             : Value(arith::MulIOp::create(b, loc, x, y));
  }

  Value compareOne(const std::string &op, Value x, Value y) {
    std::tie(x, y) = promote(x, y);
    if (x.getType().isF32()) {
      arith::CmpFPredicate p = op == "==" ? arith::CmpFPredicate::OEQ
                               : op == "!=" ? arith::CmpFPredicate::UNE
                               : op == "<"  ? arith::CmpFPredicate::OLT
                               : op == "<=" ? arith::CmpFPredicate::OLE
                               : op == ">"  ? arith::CmpFPredicate::OGT
                                            : arith::CmpFPredicate::OGE;
      return arith::CmpFOp::create(b, loc, p, x, y);
    }
    arith::CmpIPredicate p = op == "==" ? arith::CmpIPredicate::eq
                             : op == "!=" ? arith::CmpIPredicate::ne
                             : op == "<"  ? arith::CmpIPredicate::slt
                             : op == "<=" ? arith::CmpIPredicate::sle
                             : op == ">"  ? arith::CmpIPredicate::sgt
                                          : arith::CmpIPredicate::sge;
    return arith::CmpIOp::create(b, loc, p, x, y);
  }

  Value compare(const Node &n) {
    // Python chains: a < b < c means (a < b) && (b < c), b evaluated once.
    SmallVector<Value> operands;
    for (auto &arg : n.args)
      operands.push_back(emit(*arg));
    Value result;
    for (size_t i = 0; i < n.compareOps.size(); ++i) {
      Value c = compareOne(n.compareOps[i], operands[i], operands[i + 1]);
      result = result ? Value(arith::AndIOp::create(b, loc, result, c)) : c;
    }
    return result;
  }

  Value call(const Node &n) {
    SmallVector<Value> args;
    for (auto &arg : n.args)
      args.push_back(emit(*arg));
    const std::string &f = n.name;
    if (f == "select") {
      auto [x, y] = promote(args[1], args[2]);
      return arith::SelectOp::create(b, loc, args[0], x, y);
    }
    if (f == "abs")
      return args[0].getType().isF32() ? Value(math::AbsFOp::create(b, loc, args[0]))
                                       : Value(math::AbsIOp::create(b, loc, args[0]));
    if (f == "min" || f == "max") {
      bool anyFloat = llvm::any_of(args, [](Value v) { return v.getType().isF32(); });
      Value acc = anyFloat ? toFloat(b, loc, args[0]) : args[0];
      for (size_t i = 1; i < args.size(); ++i) {
        Value v = anyFloat ? toFloat(b, loc, args[i]) : args[i];
        if (anyFloat)
          acc = f == "min" ? Value(arith::MinimumFOp::create(b, loc, acc, v))
                           : Value(arith::MaximumFOp::create(b, loc, acc, v));
        else
          acc = f == "min" ? Value(arith::MinSIOp::create(b, loc, acc, v))
                           : Value(arith::MaxSIOp::create(b, loc, acc, v));
      }
      return acc;
    }
    Value x = toFloat(b, loc, args[0]);
    if (f == "exp")
      return math::ExpOp::create(b, loc, x);
    if (f == "log")
      return math::LogOp::create(b, loc, x);
    if (f == "log2")
      return math::Log2Op::create(b, loc, x);
    if (f == "sqrt")
      return math::SqrtOp::create(b, loc, x);
    if (f == "tanh")
      return math::TanhOp::create(b, loc, x);
    if (f == "floor")
      return math::FloorOp::create(b, loc, x);
    if (f == "ceil")
      return math::CeilOp::create(b, loc, x);
    // sigmoid(x) = 1 / (1 + exp(-x))
    Value one = arith::ConstantFloatOp::create(b, loc, b.getF32Type(), APFloat(1.0f));
    Value e = math::ExpOp::create(b, loc, arith::NegFOp::create(b, loc, x));
    return arith::DivFOp::create(b, loc, one, arith::AddFOp::create(b, loc, one, e));
  }

  Value index(const Node &n) {
    SmallVector<Value> indices;
    for (auto &arg : n.args)
      indices.push_back(emit(*arg));
    Value tensor = env.tensor(n.name);
    mlir::Type resultType = n.type == Type::Float ? mlir::Type(b.getF32Type()) : mlir::Type(b.getI64Type());
    auto lookup = attn::LookupOp::create(b, loc, resultType, b.getI1Type(), tensor,
                                         indices);
    if (env.inBounds)
      env.inBounds->push_back(lookup.getInBounds());
    return lookup.getValue();
  }

  OpBuilder &b;
  Location loc;
  const EmitEnv &env;
};

} // namespace

Value emit(OpBuilder &builder, Location loc, const Node &node, const EmitEnv &env) {
  return Emitter(builder, loc, env).emit(node);
}

} // namespace attune::expr
