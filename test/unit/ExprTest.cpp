//===- ExprTest.cpp - the expression language: parse, check, errors -------===//
#include "specs/Expr.h"

#include <gtest/gtest.h>

#include <map>

using namespace attune::expr;

namespace {

/// Names known to the tests: the region variables, two params and two tensors.
std::optional<NameInfo> resolve(const std::string &n) {
  static const std::map<std::string, NameInfo> names = [] {
    std::map<std::string, NameInfo> m;
    for (const char *v : {"b", "h", "q", "kv", "q_idx", "kv_idx", "seq_q", "seq_kv"})
      m[v] = NameInfo{};
    NameInfo s;
    s.type = Type::Float;
    m["s"] = s;
    NameInfo w;
    w.kind = NameInfo::Kind::Param;
    w.intValue = 4;
    m["w"] = w;
    NameInfo zero = w;
    zero.intValue = 0;
    m["zero"] = zero;
    NameInfo doc;
    doc.kind = NameInfo::Kind::Tensor;
    doc.dims = {-1, -1};
    m["doc"] = doc;
    NameInfo tab;
    tab.kind = NameInfo::Kind::Tensor;
    tab.type = Type::Float;
    tab.dims = {32, 8};
    m["tab"] = tab;
    return m;
  }();
  auto it = names.find(n);
  if (it == names.end())
    return std::nullopt;
  return it->second;
}

struct Checked {
  std::unique_ptr<Node> tree;
  Error error;
};

Checked parseAndCheck(const std::string &src) {
  Checked c;
  c.tree = parse(src, c.error);
  if (c.tree && !check(*c.tree, resolve, c.error))
    c.tree.reset();
  return c;
}

void expectType(const std::string &src, Type t) {
  auto c = parseAndCheck(src);
  ASSERT_TRUE(c.tree) << src << ": " << c.error.message;
  EXPECT_EQ(c.tree->type, t) << src;
}

void expectError(const std::string &src, int column, const std::string &fragment) {
  auto c = parseAndCheck(src);
  ASSERT_FALSE(c.tree) << src << " should be rejected";
  EXPECT_EQ(c.error.column, column) << src << ": " << c.error.message;
  EXPECT_NE(c.error.message.find(fragment), std::string::npos)
      << src << ": '" << c.error.message << "' lacks '" << fragment << "'";
}

} // namespace

TEST(Expr, FloorDivisionAndModuloFollowPython) {
  EXPECT_EQ(floorDiv(-7, 2), -4);
  EXPECT_EQ(floorMod(-7, 2), 1);
  EXPECT_EQ(floorDiv(7, -2), -4);
  EXPECT_EQ(floorMod(7, -2), -1);
  EXPECT_EQ(floorDiv(-7, -2), 3);
  EXPECT_EQ(floorMod(-7, -2), -1);
  EXPECT_EQ(floorDiv(6, 3), 2);
  EXPECT_EQ(floorMod(6, 3), 0);
  // Run-time division by zero gives 0, never a trap.
  EXPECT_EQ(floorDiv(5, 0), 0);
  EXPECT_EQ(floorMod(5, 0), 0);
  EXPECT_EQ(floorDiv(INT64_MIN, -1), INT64_MIN);
  EXPECT_EQ(floorMod(INT64_MIN, -1), 0);
}

TEST(Expr, TypesFollowPromotionRules) {
  expectType("q - kv", Type::Int);
  expectType("q / 2", Type::Float);
  expectType("q // 2", Type::Int);
  expectType("s * 2", Type::Float);
  expectType("q + 0.5", Type::Float);
  expectType("q >= kv && kv < w", Type::Bool);
  expectType("select(q > kv, 1, 2)", Type::Int);
  expectType("select(q > kv, 1, 2.5)", Type::Float);
  expectType("min(q, kv, 3)", Type::Int);
  expectType("max(q, 1.5)", Type::Float);
  expectType("abs(q - kv)", Type::Int);
  expectType("abs(s)", Type::Float);
  expectType("exp(q)", Type::Float);
  expectType("floor(q / 3)", Type::Float);
  expectType("doc[b, q_idx]", Type::Int);
  expectType("tab[3, h]", Type::Float);
  expectType("!(q < kv)", Type::Bool);
  expectType("true || false", Type::Bool);
  expectType("0 <= q - kv <= w", Type::Bool);
  expectType("sigmoid(s) * tanh(s) + sqrt(2) - log(3) + log2(4) + ceil(s)", Type::Float);
}

// Whatever parses within the nesting limit prints to text that parses again (a fuzz
// finding: a long chain of minus signs printed as `-(-(...))`, twice as deep).
TEST(Expr, DeepestChainsPrintToTextThatParses) {
  for (const char *op : {"-", "!"}) {
    std::string source;
    int n = 0;
    for (;; ++n) {
      std::string longer = std::string(op) + " " + source;
      Error error;
      if (!parse(longer + (op[0] == '!' ? "true" : "0"), error))
        break;
      source = longer;
    }
    ASSERT_GT(n, 400) << op;
    source += op[0] == '!' ? "true" : "0";
    Error error;
    auto tree = parse(source, error);
    ASSERT_TRUE(tree) << error.message;
    auto again = parse(print(*tree), error);
    ASSERT_TRUE(again) << op << ": " << error.message;
    EXPECT_EQ(print(*again), print(*tree));
  }
}

TEST(Expr, PrecedenceIsLoosestFirst) {
  auto c = parseAndCheck("q - kv * 2 >= 1 + w // 2 || !(q == kv) && kv < 3");
  ASSERT_TRUE(c.tree);
  EXPECT_EQ(print(*c.tree),
            "(((q - (kv * 2)) >= (1 + (w // 2))) || (!(q == kv) && (kv < 3)))");
  auto neg = parseAndCheck("-q // 2");
  ASSERT_TRUE(neg.tree);
  EXPECT_EQ(print(*neg.tree), "(-q // 2)");
  auto negs = parseAndCheck("- -(-q) * 2 + -(2 - q)");
  ASSERT_TRUE(negs.tree);
  EXPECT_EQ(print(*negs.tree), "((---q * 2) + -(2 - q))");
  auto nots = parseAndCheck("!!(kv < 1) && !(-q < 0)");
  ASSERT_TRUE(nots.tree);
  EXPECT_EQ(print(*nots.tree), "(!!(kv < 1) && !(-q < 0))");
  auto chain = parseAndCheck("0 <= q - kv < w");
  ASSERT_TRUE(chain.tree);
  EXPECT_EQ(print(*chain.tree), "(0 <= (q - kv) < w)");
}

TEST(Expr, ConstantsFold) {
  auto c = parseAndCheck("w * 3 - 2 // -3 + (-7) % 2");
  ASSERT_TRUE(c.tree);
  EXPECT_EQ(constantInt(*c.tree, resolve), 4 * 3 - (-1) + 1);
  auto notConst = parseAndCheck("q + 1");
  ASSERT_TRUE(notConst.tree);
  EXPECT_FALSE(constantInt(*notConst.tree, resolve).has_value());
}

TEST(Expr, ErrorsNameTheColumn) {
  expectError("q = kv", 3, "'=='");
  expectError("q & kv", 3, "'&&'");
  expectError("q | kv", 3, "'||'");
  expectError("qq < kv", 1, "unknown name 'qq'");
  expectError("q < kv and kv > 0", 8, "unexpected 'and'");
  expectError("q + (kv", 8, "expected ')'");
  expectError("", 1, "empty expression");
  expectError("q <", 4, "unexpected end");
  expectError("q # 2", 3, "unexpected character '#'");
  expectError("3abc", 1, "malformed number");
  expectError("99999999999999999999", 1, "does not fit");
  expectError("q // 0", 6, "division by zero");
  expectError("q % (w - 4)", 8, "modulo by zero");
  expectError("q // zero", 6, "division by zero");
  expectError("s // 2", 3, "needs integers");
  expectError("q && kv", 3, "needs booleans");
  expectError("!q", 1, "needs a boolean");
  expectError("-(q < kv)", 1, "needs a number");
  expectError("(q < kv) + 1", 10, "needs numbers");
  expectError("(q < kv) < true", 10, "does not order booleans");
  expectError("q == true", 3, "compares integer with boolean");
  expectError("foo(q)", 1, "unknown function 'foo'");
  expectError("where(q > 0, 1, 2)", 1, "use select");
  expectError("exp(q, kv)", 1, "takes 1 argument");
  expectError("min(q)", 1, "at least 2");
  expectError("select(q, 1, 2)", 8, "boolean condition");
  expectError("select(q > 0, q > 1, 2)", 1, "both be booleans or both numbers");
  expectError("doc[b]", 1, "has 2 dimensions, got 1 indices");
  expectError("doc[b, 1.5]", 8, "must be an integer");
  expectError("tab[32, h]", 5, "outside dimension 0");
  expectError("tab[-1, h]", 5, "outside dimension 0");
  expectError("doc", 1, "is a tensor");
  expectError("q[1]", 1, "is not a tensor");
  expectError("exp", 1, "is a function");
  expectError("q + )", 5, "unexpected ')'");
  expectError("q kv", 3, "after the expression");
}

TEST(Expr, DeepNestingIsAnErrorNotACrash) {
  std::string deep(5000, '(');
  deep += "q";
  deep += std::string(5000, ')');
  Error e;
  EXPECT_EQ(parse(deep, e), nullptr);
  EXPECT_NE(e.message.find("nested too deeply"), std::string::npos);
  std::string negs(5000, '-');
  EXPECT_EQ(parse(negs + "q", e), nullptr);
  std::string nots;
  for (int i = 0; i < 5000; ++i)
    nots += "!";
  EXPECT_EQ(parse(nots + "(q < kv)", e), nullptr);
  std::string huge(20000, '1');
  EXPECT_EQ(parse(huge, e), nullptr);
  EXPECT_NE(e.message.find("longer than"), std::string::npos);
  // Parentheses and unary operators: 511 levels parse, the 513th is refused (one
  // level is the operand's own).
  EXPECT_NE(parse(std::string(511, '(') + "q" + std::string(511, ')'), e), nullptr)
      << e.message;
  EXPECT_EQ(parse(std::string(512, '(') + "q" + std::string(512, ')'), e), nullptr);
  EXPECT_NE(e.message.find("nested too deeply (more than 512 levels)"), std::string::npos);
  // A flat chain parses without recursion, but its tree is as deep as it is long and
  // the checker, printer and emitter recurse over the tree: it is held to the same
  // limit (fuzz finding 2's rule: one nesting limit, rt::kMaxJsonDepth).
  auto chain = [](int terms) {
    std::string flat = "q";
    for (int i = 1; i < terms; ++i)
      flat += " + 1";
    return flat;
  };
  auto c = parseAndCheck(chain(512)); // 511 '+': height 512
  EXPECT_TRUE(c.tree) << c.error.message;
  c = parseAndCheck(chain(513));
  EXPECT_FALSE(c.tree);
  EXPECT_EQ(c.error.column, int(chain(513).size()) - 2); // the 512th '+'
  EXPECT_NE(c.error.message.find("more than 512 levels of operations"), std::string::npos)
      << c.error.message;
  c = parseAndCheck(chain(4000));
  EXPECT_FALSE(c.tree);
  // Nested calls count their own level: max(max(max(...))).
  std::string calls = "q";
  for (int i = 0; i < 600; ++i)
    calls = "max(" + calls + ", 1)";
  EXPECT_EQ(parse(calls, e), nullptr);
  EXPECT_NE(e.message.find("nested too deeply"), std::string::npos);
}
