//===- Expr.cpp - parser and type checker of the expression language ------===//
#include "specs/Expr.h"

#include "Json.h" // rt::kMaxJsonDepth, the one nesting limit of a spec

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <set>
#include <sstream>

namespace attune::expr {

const char *typeName(Type t) {
  switch (t) {
  case Type::Int:
    return "integer";
  case Type::Float:
    return "float";
  case Type::Bool:
    return "boolean";
  }
  return "?";
}

int64_t floorDiv(int64_t a, int64_t b) {
  if (b == 0)
    return 0;
  if (b == -1) // avoids the INT64_MIN / -1 trap; wraps like the generated code
    return static_cast<int64_t>(0ull - static_cast<uint64_t>(a));
  int64_t q = a / b, r = a % b;
  return (r != 0 && ((r < 0) != (b < 0))) ? q - 1 : q;
}

int64_t floorMod(int64_t a, int64_t b) {
  if (b == 0 || b == -1)
    return 0;
  int64_t r = a % b;
  return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r;
}

//===----------------------------------------------------------------------===//
// Lexer
//===----------------------------------------------------------------------===//

namespace {

struct Token {
  enum Kind { End, Int, Float, Ident, Op } kind = End;
  std::string text;
  int column = 0;
  int64_t intValue = 0;
  double floatValue = 0.0;
};

constexpr size_t kMaxLength = 16384;
// Parentheses, unary operators and the height of the tree (a + b + c + ... nests to
// the left without any parenthesis) are held to the nesting limit of the JSON the
// expression sits in: the checker, the printer and the emitter recurse over the tree.
constexpr int kMaxDepth = attune::rt::kMaxJsonDepth;

class Lexer {
public:
  explicit Lexer(const std::string &s) : src(s) {}

  bool run(std::vector<Token> &out, Error &error) {
    size_t i = 0;
    while (i < src.size()) {
      char c = src[i];
      int column = static_cast<int>(i) + 1;
      if (std::isspace(static_cast<unsigned char>(c))) {
        ++i;
        continue;
      }
      if (std::isdigit(static_cast<unsigned char>(c)) ||
          (c == '.' && i + 1 < src.size() &&
           std::isdigit(static_cast<unsigned char>(src[i + 1])))) {
        if (!number(i, out, error))
          return false;
        continue;
      }
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t j = i;
        while (j < src.size() &&
               (std::isalnum(static_cast<unsigned char>(src[j])) || src[j] == '_'))
          ++j;
        out.push_back({Token::Ident, src.substr(i, j - i), column});
        i = j;
        continue;
      }
      static const char *kTwo[] = {"//", "==", "!=", "<=", ">=", "&&", "||"};
      bool matched = false;
      for (const char *op : kTwo)
        if (src.compare(i, 2, op) == 0) {
          out.push_back({Token::Op, op, column});
          i += 2;
          matched = true;
          break;
        }
      if (matched)
        continue;
      if (std::string("+-*/%<>!()[],").find(c) != std::string::npos) {
        out.push_back({Token::Op, std::string(1, c), column});
        ++i;
        continue;
      }
      error = {column, c == '=' ? "unexpected '='; comparison is '=='"
                       : c == '&' ? "unexpected '&'; logical and is '&&'"
                       : c == '|' ? "unexpected '|'; logical or is '||'"
                                  : std::string("unexpected character '") + c + "'"};
      return false;
    }
    out.push_back({Token::End, "", static_cast<int>(src.size()) + 1});
    return true;
  }

private:
  bool number(size_t &i, std::vector<Token> &out, Error &error) {
    size_t j = i;
    bool isFloat = false;
    auto digits = [&] {
      while (j < src.size() && std::isdigit(static_cast<unsigned char>(src[j])))
        ++j;
    };
    digits();
    if (j < src.size() && src[j] == '.') {
      isFloat = true;
      ++j;
      digits();
    }
    if (j < src.size() && (src[j] == 'e' || src[j] == 'E')) {
      size_t k = j + 1;
      if (k < src.size() && (src[k] == '+' || src[k] == '-'))
        ++k;
      if (k < src.size() && std::isdigit(static_cast<unsigned char>(src[k]))) {
        isFloat = true;
        j = k;
        digits();
      }
    }
    int column = static_cast<int>(i) + 1;
    if (j < src.size() &&
        (std::isalpha(static_cast<unsigned char>(src[j])) || src[j] == '_')) {
      error = {column, "malformed number '" + src.substr(i, j - i + 1) + "'"};
      return false;
    }
    std::string text = src.substr(i, j - i);
    Token t{isFloat ? Token::Float : Token::Int, text, column};
    errno = 0;
    if (isFloat) {
      t.floatValue = std::strtod(text.c_str(), nullptr);
      if (!std::isfinite(t.floatValue)) {
        error = {column, "float literal '" + text + "' is out of range"};
        return false;
      }
    } else {
      unsigned long long v = std::strtoull(text.c_str(), nullptr, 10);
      if (errno == ERANGE || v > static_cast<unsigned long long>(
                                     std::numeric_limits<int64_t>::max())) {
        error = {column, "integer literal '" + text + "' does not fit in 64 bits"};
        return false;
      }
      t.intValue = static_cast<int64_t>(v);
    }
    out.push_back(t);
    i = j;
    return true;
  }

  const std::string &src;
};

//===----------------------------------------------------------------------===//
// Parser (recursive descent, loosest first: || && ! comparisons + - * / // % unary)
//===----------------------------------------------------------------------===//

class Parser {
public:
  Parser(std::vector<Token> toks, Error &err) : tokens(std::move(toks)), error(err) {}

  std::unique_ptr<Node> parseAll() {
    auto node = parseOr();
    if (!node)
      return nullptr;
    if (peek().kind != Token::End)
      return fail(peek().column, "unexpected '" + peek().text + "' after the expression");
    return node;
  }

private:
  const Token &peek() const { return tokens[pos]; }
  bool isOp(const char *op) const {
    return peek().kind == Token::Op && peek().text == op;
  }
  std::unique_ptr<Node> fail(int column, std::string message) {
    if (error.message.empty())
      error = {column, std::move(message)};
    return nullptr;
  }
  static std::unique_ptr<Node> make(Node::Kind kind, int column) {
    auto n = std::make_unique<Node>();
    n->kind = kind;
    n->column = column;
    return n;
  }

  /// Sets `n`'s height from its arguments; null (an error) when it exceeds kMaxDepth.
  std::unique_ptr<Node> sized(std::unique_ptr<Node> n) {
    int h = 0;
    for (const auto &arg : n->args)
      h = std::max(h, arg->height);
    n->height = h + 1;
    if (n->height > kMaxDepth)
      return fail(n->column, "expression nested too deeply (more than " +
                                 std::to_string(kMaxDepth) + " levels of operations)");
    return n;
  }

  struct DepthGuard {
    int &d;
    explicit DepthGuard(int &depth) : d(depth) { ++d; }
    ~DepthGuard() { --d; }
  };

  std::unique_ptr<Node> binaryChain(std::unique_ptr<Node> (Parser::*next)(),
                                    std::initializer_list<const char *> ops) {
    auto lhs = (this->*next)();
    while (lhs) {
      const char *found = nullptr;
      for (const char *op : ops)
        if (isOp(op))
          found = op;
      if (!found)
        break;
      int column = peek().column;
      ++pos;
      auto rhs = (this->*next)();
      if (!rhs)
        return nullptr;
      auto n = make(Node::Kind::Binary, column);
      n->op = found;
      n->args.push_back(std::move(lhs));
      n->args.push_back(std::move(rhs));
      lhs = sized(std::move(n));
    }
    return lhs;
  }

  std::unique_ptr<Node> parseOr() { return binaryChain(&Parser::parseAnd, {"||"}); }
  std::unique_ptr<Node> parseAnd() { return binaryChain(&Parser::parseNot, {"&&"}); }

  std::unique_ptr<Node> parseNot() {
    if (isOp("!")) {
      DepthGuard g(depth);
      if (depth > kMaxDepth)
        return fail(peek().column, "expression nested too deeply (more than " +
                                       std::to_string(kMaxDepth) + " levels)");
      int column = peek().column;
      ++pos;
      auto operand = parseNot();
      if (!operand)
        return nullptr;
      auto n = make(Node::Kind::Not, column);
      n->args.push_back(std::move(operand));
      return sized(std::move(n));
    }
    return parseCompare();
  }

  std::unique_ptr<Node> parseCompare() {
    auto first = parseSum();
    if (!first)
      return nullptr;
    static const char *kOps[] = {"==", "!=", "<=", ">=", "<", ">"};
    std::unique_ptr<Node> chain;
    while (true) {
      const char *found = nullptr;
      for (const char *op : kOps)
        if (isOp(op))
          found = op;
      if (!found)
        break;
      if (!chain) {
        chain = make(Node::Kind::Compare, peek().column);
        chain->args.push_back(std::move(first));
      }
      chain->compareOps.push_back(found);
      ++pos;
      auto rhs = parseSum();
      if (!rhs)
        return nullptr;
      chain->args.push_back(std::move(rhs));
    }
    return chain ? sized(std::move(chain)) : std::move(first);
  }

  std::unique_ptr<Node> parseSum() { return binaryChain(&Parser::parseTerm, {"+", "-"}); }
  std::unique_ptr<Node> parseTerm() {
    return binaryChain(&Parser::parseUnary, {"*", "/", "//", "%"});
  }

  std::unique_ptr<Node> parseUnary() {
    DepthGuard g(depth);
    if (depth > kMaxDepth)
      return fail(peek().column, "expression nested too deeply (more than " +
                                     std::to_string(kMaxDepth) + " levels)");
    if (isOp("-") || isOp("+")) {
      bool neg = isOp("-");
      int column = peek().column;
      ++pos;
      auto operand = parseUnary();
      if (!operand || !neg)
        return operand;
      auto n = make(Node::Kind::Neg, column);
      n->args.push_back(std::move(operand));
      return sized(std::move(n));
    }
    if (isOp("!"))
      return fail(peek().column, "'!' applies to a whole comparison here; "
                                 "write !(...) around it");
    return parsePrimary();
  }

  std::unique_ptr<Node> parsePrimary() {
    const Token &t = peek();
    switch (t.kind) {
    case Token::Int: {
      auto n = make(Node::Kind::IntLit, t.column);
      n->intValue = t.intValue;
      ++pos;
      return n;
    }
    case Token::Float: {
      auto n = make(Node::Kind::FloatLit, t.column);
      n->floatValue = t.floatValue;
      ++pos;
      return n;
    }
    case Token::Ident:
      return parseName();
    case Token::End:
      return fail(t.column, "unexpected end of the expression");
    case Token::Op:
      break;
    }
    if (isOp("(")) {
      int column = t.column;
      ++pos; // parseUnary has counted this level
      auto inner = parseOr();
      if (!inner)
        return nullptr;
      if (!isOp(")"))
        return fail(peek().column, "expected ')' to close the '(' at column " +
                                       std::to_string(column));
      ++pos;
      return inner;
    }
    return fail(t.column, "unexpected '" + t.text + "'");
  }

  std::unique_ptr<Node> parseName() {
    Token t = peek();
    ++pos;
    if (t.text == "true" || t.text == "false") {
      auto n = make(Node::Kind::BoolLit, t.column);
      n->boolValue = t.text == "true";
      return n;
    }
    bool call = isOp("("), index = isOp("[");
    if (!call && !index) {
      auto n = make(Node::Kind::Name, t.column);
      n->name = t.text;
      return n;
    }
    const char *close = call ? ")" : "]";
    int open = peek().column;
    ++pos;
    auto n = make(call ? Node::Kind::Call : Node::Kind::Index, t.column);
    n->name = t.text;
    if (!isOp(close)) {
      while (true) {
        auto arg = parseOr();
        if (!arg)
          return nullptr;
        n->args.push_back(std::move(arg));
        if (isOp(",")) {
          ++pos;
          continue;
        }
        break;
      }
    }
    if (!isOp(close))
      return fail(peek().column, std::string("expected '") + close +
                                     "' to close the one at column " +
                                     std::to_string(open));
    ++pos;
    return sized(std::move(n));
  }

  std::vector<Token> tokens;
  size_t pos = 0;
  int depth = 0;
  Error &error;
};

} // namespace

std::unique_ptr<Node> parse(const std::string &source, Error &error) {
  error = {};
  if (source.size() > kMaxLength) {
    error = {1, "expression longer than " + std::to_string(kMaxLength) + " characters"};
    return nullptr;
  }
  std::vector<Token> tokens;
  if (!Lexer(source).run(tokens, error))
    return nullptr;
  if (tokens.size() == 1) {
    error = {1, "empty expression"};
    return nullptr;
  }
  return Parser(std::move(tokens), error).parseAll();
}

//===----------------------------------------------------------------------===//
// Type checking
//===----------------------------------------------------------------------===//

namespace {

const std::set<std::string> kFloatFunctions = {"exp",  "log",   "log2",  "sqrt",
                                                "tanh", "sigmoid", "floor", "ceil"};

class Checker {
public:
  Checker(const Resolver &r, Error &e) : resolve(r), error(e) {}

  bool check(Node &n) {
    switch (n.kind) {
    case Node::Kind::IntLit:
      n.type = Type::Int;
      return true;
    case Node::Kind::FloatLit:
      n.type = Type::Float;
      return true;
    case Node::Kind::BoolLit:
      n.type = Type::Bool;
      return true;
    case Node::Kind::Name:
      return checkName(n);
    case Node::Kind::Neg:
      if (!check(*n.args[0]))
        return false;
      if (n.args[0]->type == Type::Bool)
        return fail(n.column, "'-' needs a number, got a boolean");
      n.type = n.args[0]->type;
      return true;
    case Node::Kind::Not:
      if (!check(*n.args[0]))
        return false;
      if (n.args[0]->type != Type::Bool)
        return fail(n.column, std::string("'!' needs a boolean, got an ") +
                                  typeName(n.args[0]->type));
      n.type = Type::Bool;
      return true;
    case Node::Kind::Binary:
      return checkBinary(n);
    case Node::Kind::Compare:
      return checkCompare(n);
    case Node::Kind::Call:
      return checkCall(n);
    case Node::Kind::Index:
      return checkIndex(n);
    }
    return false;
  }

private:
  bool fail(int column, std::string message) {
    error = {column, std::move(message)};
    return false;
  }

  bool checkName(Node &n) {
    auto info = resolve(n.name);
    if (!info) {
      if (kFloatFunctions.count(n.name) || n.name == "min" || n.name == "max" ||
          n.name == "abs" || n.name == "select")
        return fail(n.column, "'" + n.name + "' is a function; call it as " + n.name +
                                  "(...)");
      if (n.name == "where")
        return fail(n.column, "'where' is not a name; use select(c, a, b)");
      if (n.name == "and" || n.name == "or" || n.name == "not")
        return fail(n.column, "unknown name '" + n.name + "'; use && || !");
      return fail(n.column, "unknown name '" + n.name + "'");
    }
    if (info->kind == NameInfo::Kind::Tensor)
      return fail(n.column, "'" + n.name + "' is a tensor; index it as " + n.name +
                                "[...]");
    n.type = info->type;
    return true;
  }

  bool checkBinary(Node &n) {
    if (!check(*n.args[0]) || !check(*n.args[1]))
      return false;
    Type a = n.args[0]->type, b = n.args[1]->type;
    if (n.op == "&&" || n.op == "||") {
      if (a != Type::Bool || b != Type::Bool)
        return fail(n.column, "'" + n.op + "' needs booleans, got " + typeName(a) +
                                  " and " + typeName(b));
      n.type = Type::Bool;
      return true;
    }
    if (a == Type::Bool || b == Type::Bool)
      return fail(n.column, "'" + n.op + "' needs numbers, got " +
                                std::string(typeName(a)) + " and " + typeName(b));
    if (n.op == "//" || n.op == "%") {
      if (a != Type::Int || b != Type::Int)
        return fail(n.column, "'" + n.op +
                                  "' needs integers (floor division and modulo); for "
                                  "floats use floor(a / b)");
      if (auto divisor = constantInt(*n.args[1], resolve); divisor && *divisor == 0)
        return fail(n.args[1]->column, "integer " +
                                           std::string(n.op == "%" ? "modulo" : "division") +
                                           " by zero");
      n.type = Type::Int;
      return true;
    }
    if (n.op == "/") {
      n.type = Type::Float;
      return true;
    }
    n.type = (a == Type::Float || b == Type::Float) ? Type::Float : Type::Int;
    return true;
  }

  bool checkCompare(Node &n) {
    for (auto &arg : n.args)
      if (!check(*arg))
        return false;
    for (size_t i = 0; i < n.compareOps.size(); ++i) {
      Type a = n.args[i]->type, b = n.args[i + 1]->type;
      const std::string &op = n.compareOps[i];
      bool equality = op == "==" || op == "!=";
      if ((a == Type::Bool) != (b == Type::Bool))
        return fail(n.column, "'" + op + "' compares " + typeName(a) + " with " +
                                  typeName(b));
      if (a == Type::Bool && !equality)
        return fail(n.column, "'" + op + "' does not order booleans");
    }
    n.type = Type::Bool;
    return true;
  }

  bool checkCall(Node &n) {
    for (auto &arg : n.args)
      if (!check(*arg))
        return false;
    auto arity = [&](size_t want) {
      if (n.args.size() == want)
        return true;
      return fail(n.column, n.name + "() takes " + std::to_string(want) +
                                " argument" + (want == 1 ? "" : "s") + ", got " +
                                std::to_string(n.args.size()));
    };
    auto numeric = [&](const Node &arg) {
      if (arg.type != Type::Bool)
        return true;
      return fail(arg.column, n.name + "() needs a number, got a boolean");
    };
    if (kFloatFunctions.count(n.name)) {
      if (!arity(1) || !numeric(*n.args[0]))
        return false;
      n.type = Type::Float;
      return true;
    }
    if (n.name == "abs") {
      if (!arity(1) || !numeric(*n.args[0]))
        return false;
      n.type = n.args[0]->type;
      return true;
    }
    if (n.name == "min" || n.name == "max") {
      if (n.args.size() < 2)
        return fail(n.column, n.name + "() takes at least 2 arguments, got " +
                                  std::to_string(n.args.size()));
      n.type = Type::Int;
      for (auto &arg : n.args) {
        if (!numeric(*arg))
          return false;
        if (arg->type == Type::Float)
          n.type = Type::Float;
      }
      return true;
    }
    if (n.name == "select") {
      if (!arity(3))
        return false;
      if (n.args[0]->type != Type::Bool)
        return fail(n.args[0]->column, "select() needs a boolean condition, got an " +
                                           std::string(typeName(n.args[0]->type)));
      Type a = n.args[1]->type, b = n.args[2]->type;
      if ((a == Type::Bool) != (b == Type::Bool))
        return fail(n.column, "select() branches must both be booleans or both "
                              "numbers, got " +
                                  std::string(typeName(a)) + " and " + typeName(b));
      n.type = (a == Type::Float || b == Type::Float) ? Type::Float : a;
      return true;
    }
    if (n.name == "where")
      return fail(n.column, "'where' is not a name; use select(c, a, b)");
    return fail(n.column, "unknown function '" + n.name + "'");
  }

  bool checkIndex(Node &n) {
    auto info = resolve(n.name);
    if (!info)
      return fail(n.column, "unknown tensor '" + n.name + "'");
    if (info->kind != NameInfo::Kind::Tensor)
      return fail(n.column, "'" + n.name + "' is not a tensor and cannot be indexed");
    if (n.args.size() != info->dims.size())
      return fail(n.column, "tensor '" + n.name + "' has " +
                                std::to_string(info->dims.size()) + " dimensions, got " +
                                std::to_string(n.args.size()) + " indices");
    for (size_t i = 0; i < n.args.size(); ++i) {
      Node &arg = *n.args[i];
      if (!check(arg))
        return false;
      if (arg.type != Type::Int)
        return fail(arg.column, "index " + std::to_string(i) + " of '" + n.name +
                                    "' must be an integer, got a " + typeName(arg.type));
      if (auto c = constantInt(arg, resolve)) {
        if (*c < 0 || (info->dims[i] >= 0 && *c >= info->dims[i]))
          return fail(arg.column,
                      "index " + std::to_string(*c) + " is outside dimension " +
                          std::to_string(i) + " of '" + n.name + "'" +
                          (info->dims[i] >= 0
                               ? " (size " + std::to_string(info->dims[i]) + ")"
                               : ""));
      }
    }
    n.type = info->type;
    return true;
  }

  const Resolver &resolve;
  Error &error;
};

} // namespace

bool check(Node &root, const Resolver &resolve, Error &error) {
  error = {};
  return Checker(resolve, error).check(root);
}

std::optional<int64_t> constantInt(const Node &n, const Resolver &resolve) {
  switch (n.kind) {
  case Node::Kind::IntLit:
    return n.intValue;
  case Node::Kind::Name: {
    auto info = resolve(n.name);
    if (info && info->kind == NameInfo::Kind::Param && info->type == Type::Int)
      return info->intValue;
    return std::nullopt;
  }
  case Node::Kind::Neg: {
    auto a = constantInt(*n.args[0], resolve);
    if (!a)
      return std::nullopt;
    return static_cast<int64_t>(0ull - static_cast<uint64_t>(*a));
  }
  case Node::Kind::Binary: {
    auto a = constantInt(*n.args[0], resolve);
    auto b = constantInt(*n.args[1], resolve);
    if (!a || !b)
      return std::nullopt;
    uint64_t ua = static_cast<uint64_t>(*a), ub = static_cast<uint64_t>(*b);
    if (n.op == "+")
      return static_cast<int64_t>(ua + ub);
    if (n.op == "-")
      return static_cast<int64_t>(ua - ub);
    if (n.op == "*")
      return static_cast<int64_t>(ua * ub);
    if (n.op == "//")
      return floorDiv(*a, *b);
    if (n.op == "%")
      return floorMod(*a, *b);
    return std::nullopt;
  }
  default:
    return std::nullopt;
  }
}

std::string print(const Node &n) {
  std::ostringstream os;
  switch (n.kind) {
  case Node::Kind::IntLit:
    os << n.intValue;
    break;
  case Node::Kind::FloatLit: {
    std::ostringstream f;
    f.precision(9);
    f << n.floatValue;
    std::string s = f.str();
    if (s.find_first_of(".einf") == std::string::npos)
      s += ".0";
    os << s;
    break;
  }
  case Node::Kind::BoolLit:
    os << (n.boolValue ? "true" : "false");
    break;
  case Node::Kind::Name:
    os << n.name;
    break;
  // Binary and Compare print their own parentheses, and `-` / `!` bind tighter than
  // everything that could follow their operand, so the operand needs none of its own:
  // every node adds at most one level of nesting to the text, and whatever parsed
  // within the nesting limit prints to text that parses within it again (a fuzz
  // finding: `-(-(...))` doubled the nesting of a long chain of minus signs).
  case Node::Kind::Neg: {
    const Node &arg = *n.args[0];
    bool wrap = arg.kind == Node::Kind::Not; // `-!x` does not parse
    os << "-" << (wrap ? "(" : "") << print(arg) << (wrap ? ")" : "");
    break;
  }
  case Node::Kind::Not:
    os << "!" << print(*n.args[0]);
    break;
  case Node::Kind::Binary:
    os << "(" << print(*n.args[0]) << " " << n.op << " " << print(*n.args[1]) << ")";
    break;
  case Node::Kind::Compare:
    os << "(" << print(*n.args[0]);
    for (size_t i = 0; i < n.compareOps.size(); ++i)
      os << " " << n.compareOps[i] << " " << print(*n.args[i + 1]);
    os << ")";
    break;
  case Node::Kind::Call:
  case Node::Kind::Index: {
    bool call = n.kind == Node::Kind::Call;
    os << n.name << (call ? "(" : "[");
    for (size_t i = 0; i < n.args.size(); ++i)
      os << (i ? ", " : "") << print(*n.args[i]);
    os << (call ? ")" : "]");
    break;
  }
  }
  return os.str();
}

} // namespace attune::expr
