//===- Expr.cpp - grid and size expressions of manifest.json --------------===//
#include "Expr.h"

#include <cctype>
#include <limits>

namespace attune::rt {

namespace {

using Node = Expr::Node;

int64_t evalNode(const Node &n, const std::map<std::string, int64_t> &names,
                 const std::string &text);
bool hasNames(const Node &n) {
  return n.kind == Node::Name || (n.lhs && hasNames(*n.lhs)) || (n.rhs && hasNames(*n.rhs));
}

/// Recursive descent over:
///   sum     := product (('+' | '-') product)*
///   product := atom (('*' | '/') atom)*
///   atom    := integer | name | name '(' sum ',' sum ')' | '(' sum ')'
class ExprParser {
public:
  explicit ExprParser(const std::string &text) : text_(text) {}

  std::unique_ptr<Node> parse() {
    auto root = sum(0);
    skipSpace();
    if (pos_ < text_.size())
      fail(std::string("unexpected '") + text_[pos_] + "'");
    return root;
  }

private:
  static constexpr int kMaxDepth = 100;

  [[noreturn]] void fail(const std::string &message) const {
    throw ExprError("expression '" + text_ + "': column " + std::to_string(pos_ + 1) + ": " +
                    message);
  }

  void skipSpace() {
    while (pos_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[pos_])))
      ++pos_;
  }

  bool accept(char c) {
    skipSpace();
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }

  void expect(char c, const char *what) {
    if (!accept(c))
      fail(pos_ < text_.size() ? std::string("expected ") + what + ", got '" + text_[pos_] + "'"
                               : std::string("expected ") + what + " at the end");
  }

  static std::unique_ptr<Node> binary(Node::Kind kind, std::unique_ptr<Node> lhs,
                                      std::unique_ptr<Node> rhs) {
    auto n = std::make_unique<Node>();
    n->kind = kind;
    n->lhs = std::move(lhs);
    n->rhs = std::move(rhs);
    return n;
  }

  std::unique_ptr<Node> sum(int depth) {
    auto lhs = product(depth);
    while (true) {
      if (accept('+'))
        lhs = binary(Node::Add, std::move(lhs), product(depth));
      else if (accept('-'))
        lhs = binary(Node::Sub, std::move(lhs), product(depth));
      else
        return lhs;
    }
  }

  std::unique_ptr<Node> product(int depth) {
    auto lhs = atom(depth);
    while (true) {
      if (accept('*'))
        lhs = binary(Node::Mul, std::move(lhs), atom(depth));
      else if (accept('/')) {
        skipSpace();
        size_t at = pos_;
        auto rhs = atom(depth);
        checkDivisor(*rhs, at, "/");
        lhs = binary(Node::Div, std::move(lhs), std::move(rhs));
      }
      else
        return lhs;
    }
  }

  std::unique_ptr<Node> atom(int depth) {
    if (depth > kMaxDepth)
      fail("nested too deeply");
    skipSpace();
    if (pos_ >= text_.size())
      fail("expected an operand at the end");
    char c = text_[pos_];
    if (c == '(') {
      ++pos_;
      auto inner = sum(depth + 1);
      expect(')', "')'");
      return inner;
    }
    if (std::isdigit(static_cast<unsigned char>(c)))
      return literal();
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_')
      return nameOrCall(depth);
    fail(std::string("expected an operand, got '") + c + "'");
  }

  std::unique_ptr<Node> literal() {
    size_t start = pos_;
    int64_t v = 0;
    while (pos_ < text_.size() && std::isdigit(static_cast<unsigned char>(text_[pos_]))) {
      int d = text_[pos_] - '0';
      if (v > (std::numeric_limits<int64_t>::max() - d) / 10) {
        pos_ = start;
        fail("integer literal too large");
      }
      v = v * 10 + d;
      ++pos_;
    }
    auto n = std::make_unique<Node>();
    n->kind = Node::Literal;
    n->value = v;
    return n;
  }

  std::unique_ptr<Node> nameOrCall(int depth) {
    size_t start = pos_;
    while (pos_ < text_.size() &&
           (std::isalnum(static_cast<unsigned char>(text_[pos_])) || text_[pos_] == '_'))
      ++pos_;
    std::string name = text_.substr(start, pos_ - start);
    skipSpace();
    if (pos_ < text_.size() && text_[pos_] == '(') {
      Node::Kind kind;
      if (name == "ceil_div")
        kind = Node::CeilDiv;
      else if (name == "min")
        kind = Node::Min;
      else if (name == "max")
        kind = Node::Max;
      else {
        pos_ = start;
        fail("unknown function '" + name + "' (expected ceil_div, min or max)");
      }
      ++pos_;
      auto a = sum(depth + 1);
      expect(',', "',' between the two arguments of " + name);
      skipSpace();
      size_t at = pos_;
      auto b = sum(depth + 1);
      if (kind == Node::CeilDiv)
        checkDivisor(*b, at, "ceil_div");
      expect(')', "')' after the two arguments of " + name);
      return binary(kind, std::move(a), std::move(b));
    }
    auto n = std::make_unique<Node>();
    n->kind = Node::Name;
    n->name = name;
    return n;
  }

  /// A divisor without names is known now: zero (or negative, or overflowing) would
  /// fail at every call, so the manifest is refused when it is read instead.
  void checkDivisor(const Node &divisor, size_t at, const char *op) {
    if (hasNames(divisor))
      return;
    int64_t value = 0;
    try {
      value = evalNode(divisor, {}, text_);
    } catch (const ExprError &e) {
      pos_ = at;
      std::string why = e.what();
      std::string prefix = "expression '" + text_ + "': ";
      fail("the divisor of " + std::string(op) + ": " +
           (why.compare(0, prefix.size(), prefix) == 0 ? why.substr(prefix.size()) : why));
    }
    if (value <= 0) {
      pos_ = at;
      fail(value == 0 ? std::string("division by the constant 0 in ") + op
                      : std::string("the divisor of ") + op + " is the constant " +
                            std::to_string(value) + " (divisors must be positive)");
    }
  }

  // `expect` with a std::string description.
  void expect(char c, const std::string &what) { expect(c, what.c_str()); }

  const std::string &text_;
  size_t pos_ = 0;
};

int64_t evalNode(const Node &n, const std::map<std::string, int64_t> &names,
                 const std::string &text) {
  auto fail = [&](const std::string &message) -> int64_t {
    throw ExprError("expression '" + text + "': " + message);
  };
  if (n.kind == Node::Literal)
    return n.value;
  if (n.kind == Node::Name) {
    auto it = names.find(n.name);
    if (it == names.end())
      return fail("unknown name '" + n.name + "'");
    return it->second;
  }
  int64_t a = evalNode(*n.lhs, names, text), b = evalNode(*n.rhs, names, text), r = 0;
  switch (n.kind) {
  case Node::Add:
    if (__builtin_add_overflow(a, b, &r))
      fail("overflow in +");
    return r;
  case Node::Sub:
    if (__builtin_sub_overflow(a, b, &r))
      fail("overflow in -");
    return r;
  case Node::Mul:
    if (__builtin_mul_overflow(a, b, &r))
      fail("overflow in *");
    return r;
  case Node::Div:
  case Node::CeilDiv: {
    const char *op = n.kind == Node::Div ? "/" : "ceil_div";
    if (b == 0)
      fail(std::string("division by zero in ") + op);
    if (a < 0 || b < 0)
      fail(std::string(op) + " of a negative value (" + std::to_string(a) + ", " +
           std::to_string(b) + ")");
    return n.kind == Node::Div ? a / b : a / b + (a % b != 0);
  }
  case Node::Min:
    return a < b ? a : b;
  case Node::Max:
    return a > b ? a : b;
  default:
    return fail("internal error: bad node");
  }
}

void collectNames(const Node &n, std::vector<std::string> &out) {
  if (n.kind == Node::Name) {
    for (const std::string &s : out)
      if (s == n.name)
        return;
    out.push_back(n.name);
    return;
  }
  if (n.lhs)
    collectNames(*n.lhs, out);
  if (n.rhs)
    collectNames(*n.rhs, out);
}

} // namespace

Expr Expr::parse(const std::string &text) {
  // Chains like 1+1+...+1 nest one node per operator, without parentheses: the bound
  // keeps evaluation and destruction (both recursive) far from the stack's end.
  if (text.size() > kMaxLength)
    throw ExprError("expression '" + text.substr(0, 40) + "...': longer than " +
                    std::to_string(kMaxLength) + " characters");
  Expr e;
  e.text_ = text;
  e.root_ = ExprParser(text).parse();
  return e;
}

int64_t Expr::eval(const std::map<std::string, int64_t> &names) const {
  return evalNode(*root_, names, text_);
}

std::vector<std::string> Expr::names() const {
  std::vector<std::string> out;
  collectNames(*root_, out);
  return out;
}

} // namespace attune::rt
