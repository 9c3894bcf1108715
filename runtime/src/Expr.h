//===- Expr.h - grid and size expressions of manifest.json ------*- C++ -*-===//
//
// docs/bundle-and-abi.md section 1: integer expressions over size names and free
// symbols, with integer literals, + - * / (floor division of non-negative values),
// parentheses and ceil_div(a, b), min(a, b), max(a, b).
//
//===----------------------------------------------------------------------===//
#ifndef ATTUNE_RUNTIME_EXPR_H
#define ATTUNE_RUNTIME_EXPR_H

#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace attune::rt {

/// A malformed expression, or one that cannot be evaluated (unknown name, division by
/// zero, overflow). The message quotes the expression.
class ExprError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

class Expr {
public:
  /// The longest expression parse accepts.
  static constexpr size_t kMaxLength = 4096;

  /// Parses `text`; throws ExprError ("expression 'ceil_div(seq_q, )': column 16:
  /// expected an operand"). A divisor without names (of / or ceil_div) is evaluated
  /// here and must be positive: `seq_q / 0` is refused when the manifest is read.
  static Expr parse(const std::string &text);

  /// Evaluates with `names` binding every name used; throws ExprError naming the
  /// expression on an unbound name, division by zero, negative division or overflow.
  int64_t eval(const std::map<std::string, int64_t> &names) const;

  /// The distinct names the expression uses, in order of first use.
  std::vector<std::string> names() const;

  const std::string &text() const { return text_; }

  struct Node {
    enum Kind { Literal, Name, Add, Sub, Mul, Div, CeilDiv, Min, Max } kind;
    int64_t value = 0;
    std::string name;
    std::unique_ptr<Node> lhs, rhs;
  };

private:
  std::string text_;
  std::shared_ptr<const Node> root_;
};

} // namespace attune::rt

#endif
