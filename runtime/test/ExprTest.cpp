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
  EXPECT_EQ(evalError("ceil_div(seq_q, 0)"), "expression 'ceil_div(seq_q, 0)': division by zero in ceil_div");
  EXPECT_EQ(evalError("(1 - 5) / 2"), "expression '(1 - 5) / 2': / of a negative value (-4, 2)");
  EXPECT_EQ(evalError("9223372036854775807 + 1"), "expression '9223372036854775807 + 1': overflow in +");
  EXPECT_EQ(evalError("4611686018427387904 * 2"), "expression '4611686018427387904 * 2': overflow in *");
}
