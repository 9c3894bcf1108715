//===- Expr.h - the spec's expression language ------------------*- C++ -*-===//
//
// `{"expr": "..."}` masks and score transforms: a small language written the way
// FlexAttention users write mask_mod / score_mod, following Python where C and Python
// differ (floor division and modulo, chained comparisons). Parsing and type checking
// need no MLIR; ExprEmitter.h turns a checked tree into arith/math ops.
//
//===----------------------------------------------------------------------===//
#ifndef ATTUNE_SPECS_EXPR_H
#define ATTUNE_SPECS_EXPR_H

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace attune::expr {

enum class Type { Int, Float, Bool };
const char *typeName(Type t);

struct Node {
  enum class Kind { IntLit, FloatLit, BoolLit, Name, Neg, Not, Binary, Compare, Call, Index };
  Kind kind;
  int column = 0;              // 1-based column in the source string
  int height = 1;              // 1 + the largest height of args (at most the nesting limit)
  int64_t intValue = 0;
  double floatValue = 0.0;
  bool boolValue = false;
  std::string name;            // Name, Call (function), Index (tensor)
  std::string op;              // Binary: + - * / // % && ||
  std::vector<std::string> compareOps;   // Compare: a op0 b op1 c ...
  std::vector<std::unique_ptr<Node>> args;
  Type type = Type::Int;       // filled by check()
};

/// An error in an expression: the 1-based column and what is wrong.
struct Error {
  int column = 0;
  std::string message;
};

/// Parses `source`; on failure returns nullptr and fills `error`.
std::unique_ptr<Node> parse(const std::string &source, Error &error);

/// What a name in an expression refers to.
struct NameInfo {
  enum class Kind { Variable, Param, Tensor } kind = Kind::Variable;
  Type type = Type::Int;           // Variable/Param type, Tensor element type
  int64_t intValue = 0;            // Param
  double floatValue = 0.0;         // Param
  std::vector<int64_t> dims;       // Tensor: static size or -1 per dimension
};
using Resolver = std::function<std::optional<NameInfo>(const std::string &)>;

/// Type-checks `root` (filling Node::type) against the names `resolve` knows, and
/// rejects at compile time what can be decided then: integer division or modulo by a
/// constant zero and constant indices outside a static tensor dimension.
bool check(Node &root, const Resolver &resolve, Error &error);

/// Value of an integer expression made only of literals and parameters.
std::optional<int64_t> constantInt(const Node &node, const Resolver &resolve);

/// Prints the tree back as source text (fully parenthesised), for `attnc explain`.
std::string print(const Node &node);

/// Python's floor division and modulo on integers; division by zero gives 0 (the
/// run-time rule of the language).
int64_t floorDiv(int64_t a, int64_t b);
int64_t floorMod(int64_t a, int64_t b);

} // namespace attune::expr

#endif
