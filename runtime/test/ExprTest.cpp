//===- ExprTest.cpp - grid and size expressions ---------------------------===//
#include "Expr.h"

#include <gtest/gtest.h>

using namespace attune::rt;

namespace {

const std::map<std::string, int64_t> kNames = {
    {"batch", 2},     {"seq_q", 1000}, {"seq_kv", 4096}, {"heads_q", 32},
    {"heads_kv", 8}, {"head_dim", 128}, {"head_dim_v", 64}, {"Nv", 7}};

int64_t eval(const std::string &text) { return Expr::parse(text).eval(kNames); }

std::string parseError(const std::string &text) {
  try {
    Expr::parse(text);
    return "";
  } catch (const ExprError &e) {
    return e.what();
  }
}

std::string evalError(const std::string &text) {
  try {
    eval(text);
    return "";
  } catch (const ExprError &e) {
    return e.what();
  }
}

} // namespace

TEST(Expr, GridRules) {
  EXPECT_EQ(eval("ceil_div(seq_q, 64)"), 16);
  EXPECT_EQ(eval("ceil_div(seq_q, 128)"), 8);
  EXPECT_EQ(eval("ceil_div(1024, 64)"), 16);
  EXPECT_EQ(eval("heads_q"), 32);
  EXPECT_EQ(eval("batch"), 2);
  EXPECT_EQ(eval("batch * heads_q"), 64);
  EXPECT_EQ(eval("ceil_div(seq_q, 64) * heads_q"), 512);
  EXPECT_EQ(eval("min(ceil_div(seq_kv, 64), 132)"), 64);
  EXPECT_EQ(eval("max(1, seq_q / 4096)"), 1);
  EXPECT_EQ(eval("Nv * 2 + 1"), 15);
  EXPECT_EQ(eval("heads_q / heads_kv"), 4);
}

TEST(Expr, PrecedenceAssociativityAndFloorDivision) {
  EXPECT_EQ(eval("1 + 2 * 3"), 7);
  EXPECT_EQ(eval("(1 + 2) * 3"), 9);
  EXPECT_EQ(eval("10 - 4 - 3"), 3);
  EXPECT_EQ(eval("100 / 10 / 3"), 3);
  EXPECT_EQ(eval("7 / 2"), 3);
  EXPECT_EQ(eval("ceil_div(7, 2)"), 4);
  EXPECT_EQ(eval("ceil_div(8, 2)"), 4);
  EXPECT_EQ(eval("ceil_div(0, 2)"), 0);
  EXPECT_EQ(eval("2 - 5"), -3);
  EXPECT_EQ(eval("  min( 3 ,max(1,2) )  "), 2);
  EXPECT_EQ(eval("((((seq_q))))"), 1000);
}

TEST(Expr, Names) {
  std::vector<std::string> names = Expr::parse("ceil_div(seq_q, 64) * seq_q + Nv").names();
  EXPECT_EQ(names, (std::vector<std::string>{"seq_q", "Nv"}));
  EXPECT_TRUE(Expr::parse("64").names().empty());
}

TEST(Expr, SyntaxErrorsNameTheExpression) {
  EXPECT_EQ(parseError(""), "expression '': column 1: expected an operand at the end");
  EXPECT_EQ(parseError("ceil_div(seq_q, )"),
            "expression 'ceil_div(seq_q, )': column 17: expected an operand, got ')'");
  EXPECT_EQ(parseError("ceil_div(seq_q)"),
            "expression 'ceil_div(seq_q)': column 15: expected ',' between the two arguments of "
            "ceil_div, got ')'");
  EXPECT_EQ(parseError("min(1, 2, 3)"),
            "expression 'min(1, 2, 3)': column 9: expected ')' after the two arguments of min, "
            "got ','");
  EXPECT_EQ(parseError("floor(1, 2)"),
            "expression 'floor(1, 2)': column 1: unknown function 'floor' (expected ceil_div, "
            "min or max)");
  EXPECT_EQ(parseError("seq_q +"), "expression 'seq_q +': column 8: expected an operand at the end");
  EXPECT_EQ(parseError("(seq_q"), "expression '(seq_q': column 7: expected ')' at the end");
  EXPECT_EQ(parseError("seq_q 64"), "expression 'seq_q 64': column 7: unexpected '6'");
  EXPECT_EQ(parseError("1 % 2"), "expression '1 % 2': column 3: unexpected '%'");
  EXPECT_EQ(parseError("-1"), "expression '-1': column 1: expected an operand, got '-'");
  EXPECT_EQ(parseError("99999999999999999999"),
            "expression '99999999999999999999': column 1: integer literal too large");
}

TEST(Expr, EvaluationErrors) {
  EXPECT_EQ(evalError("seqq * 2"), "expression 'seqq * 2': unknown name 'seqq'");
  EXPECT_EQ(evalError("seq_q / (batch - 2)"), "expression 'seq_q / (batch - 2)': division by zero in /");
  EXPECT_EQ(evalError("ceil_div(seq_q, batch - 2)"),
            "expression 'ceil_div(seq_q, batch - 2)': division by zero in ceil_div");
  EXPECT_EQ(evalError("(1 - 5) / 2"), "expression '(1 - 5) / 2': / of a negative value (-4, 2)");
  EXPECT_EQ(evalError("9223372036854775807 + 1"), "expression '9223372036854775807 + 1': overflow in +");
  EXPECT_EQ(evalError("4611686018427387904 * 2"), "expression '4611686018427387904 * 2': overflow in *");
}

TEST(Expr, ConstantDivisorsAreCheckedWhenParsed) {
  // Known now, so refused when the manifest is read rather than at every call.
  EXPECT_EQ(parseError("seq_q / 0"),
            "expression 'seq_q / 0': column 9: division by the constant 0 in /");
  EXPECT_EQ(parseError("ceil_div(seq_q, 0)"),
            "expression 'ceil_div(seq_q, 0)': column 17: division by the constant 0 in ceil_div");
  EXPECT_EQ(parseError("seq_q / (2 - 2)"),
            "expression 'seq_q / (2 - 2)': column 9: division by the constant 0 in /");
  EXPECT_EQ(parseError("ceil_div(seq_q, 64 - 64) + 1"),
            "expression 'ceil_div(seq_q, 64 - 64) + 1': column 17: division by the constant 0 in "
            "ceil_div");
  EXPECT_EQ(parseError("seq_q / (1 - 3)"),
            "expression 'seq_q / (1 - 3)': column 9: the divisor of / is the constant -2 "
            "(divisors must be positive)");
  EXPECT_EQ(parseError("seq_q / (9223372036854775807 + 1)"),
            "expression 'seq_q / (9223372036854775807 + 1)': column 9: the divisor of /: overflow "
            "in +");
  EXPECT_EQ(parseError("1 / 0 * seq_q"),
            "expression '1 / 0 * seq_q': column 5: division by the constant 0 in /");
  // Divisors with names are known only at call time.
  EXPECT_EQ(parseError("seq_q / batch"), "");
  EXPECT_EQ(parseError("seq_q / (batch - 2)"), "");
  EXPECT_EQ(eval("seq_q / (2 * 2)"), 250);
  EXPECT_EQ(eval("ceil_div(seq_q, 3 * 3)"), 112);
}

TEST(Expr, LengthIsBounded) {
  // A chain of additions nests one node per '+': bounded so that evaluation and
  // destruction, both recursive, stay shallow.
  std::string chain = "1";
  while (chain.size() + 2 <= Expr::kMaxLength)
    chain += "+1";
  EXPECT_EQ(eval(chain), int64_t(chain.size() / 2 + 1));
  std::string longer = chain + "+1";
  EXPECT_EQ(parseError(longer), "expression '" + longer.substr(0, 40) + "...': longer than " +
                                    std::to_string(Expr::kMaxLength) + " characters");
}
