//===- Json.h - a small JSON value, reader and writer -----------*- C++ -*-===//
//
// Enough JSON for manifest.json, the tuning database and the canonical spec text
// (docs/bundle-and-abi.md section 5). Written for this runtime: it must build where
// no third-party JSON library exists.
//
// This is the one JSON reader for everything a user hands the tools: attnc reads spec
// files with it too (specs/Importer.cpp converts the result for the importer), and the
// spec hash of attnc, the runtime and the Python package is canonical() + sha256Hex.
//
// Numbers:
//   - a literal without fraction or exponent is an integer: int64 when it fits, else
//     uint64 when it is non-negative and fits; any other integer literal is refused
//     (never silently read as a double or wrapped);
//   - any other literal is a double; one outside the double range is refused.
//
// Nesting deeper than kMaxJsonDepth arrays and objects is refused (the reader and every
// consumer recurse).
//
//===----------------------------------------------------------------------===//
#ifndef ATTUNE_RUNTIME_JSON_H
#define ATTUNE_RUNTIME_JSON_H

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace attune::rt {

/// The nesting limit of everything a spec nests: JSON arrays and objects in any document
/// these tools read (specs, manifests, tuning databases), mask trees in the importer and
/// expressions in `"expr"` strings. Deep enough for any real spec, shallow enough that
/// the recursive readers and the passes after them never exhaust a thread's stack.
constexpr int kMaxJsonDepth = 512;

/// A parse failure, with the 1-based line and column (in characters) where it happened.
class JsonError : public std::runtime_error {
public:
  JsonError(const std::string &message, int line, int column)
      : std::runtime_error("line " + std::to_string(line) + ", column " + std::to_string(column) +
                           ": " + message),
        line(line), column(column) {}
  int line, column;
};

class Json;

struct JsonMember; // {key, value}; defined below, after Json is complete

class Json {
public:
  enum class Kind { Null, Bool, Int, UInt, Double, String, Array, Object };

  Json() = default;
  Json(std::nullptr_t) {}
  Json(bool b) : kind_(Kind::Bool), bool_(b) {}
  Json(int i) : kind_(Kind::Int), int_(i) {}
  Json(int64_t i) : kind_(Kind::Int), int_(i) {}
  Json(uint64_t u);
  Json(double d) : kind_(Kind::Double), double_(d) {}
  Json(const char *s) : kind_(Kind::String), string_(s) {}
  Json(std::string s) : kind_(Kind::String), string_(std::move(s)) {}

  static Json array() { Json j; j.kind_ = Kind::Array; return j; }
  static Json object() { Json j; j.kind_ = Kind::Object; return j; }

  Kind kind() const { return kind_; }
  bool isNull() const { return kind_ == Kind::Null; }
  bool isBool() const { return kind_ == Kind::Bool; }
  bool isString() const { return kind_ == Kind::String; }
  bool isArray() const { return kind_ == Kind::Array; }
  bool isObject() const { return kind_ == Kind::Object; }
  /// An integer (int64 or uint64).
  bool isInteger() const { return kind_ == Kind::Int || kind_ == Kind::UInt; }
  bool isNumber() const { return isInteger() || kind_ == Kind::Double; }

  bool asBool() const { return bool_; }
  /// The integer value; a uint64 above INT64_MAX is clamped (callers range-check).
  int64_t asInt() const;
  uint64_t asUInt() const { return kind_ == Kind::UInt ? uint_ : uint64_t(int_); }
  double asDouble() const;
  const std::string &asString() const { return string_; }

  // Arrays.
  size_t size() const;
  const Json &operator[](size_t i) const { return array_[i]; }
  Json &operator[](size_t i) { return array_[i]; }
  const std::vector<Json> &items() const { return array_; }
  void push_back(Json v);

  // Objects keep insertion order (pretty output stays as written); setting an existing
  // key replaces its value in place.
  const std::vector<JsonMember> &members() const { return object_; }
  const Json *find(const std::string &key) const;
  Json *find(const std::string &key);
  bool contains(const std::string &key) const { return find(key) != nullptr; }
  void set(const std::string &key, Json value);
  /// Appends a member without looking for an existing one (the caller knows it is new).
  void append(std::string key, Json value);
  bool erase(const std::string &key);

  bool operator==(const Json &other) const;
  bool operator!=(const Json &other) const { return !(*this == other); }

  /// Parses a whole document (trailing whitespace only: a NUL byte or anything else
  /// after the value is an error). Rejects duplicate keys when `rejectDuplicateKeys`
  /// (the spec importer does the same), else the last one wins.
  static Json parse(const std::string &text, bool rejectDuplicateKeys = true);

  /// Compact text, members in stored order.
  std::string dump() const;
  /// Indented text (two spaces), members in stored order, for files people read.
  std::string pretty() const;
  /// The same with every object's keys sorted by bytes (manifest.json's layout).
  std::string pretty(bool sortKeys) const;
  /// The canonical text of docs/bundle-and-abi.md section 5: keys sorted by bytes, no
  /// whitespace, shortest round-trip numbers, non-ASCII kept as UTF-8.
  std::string canonical() const;

private:
  void write(std::string &out, int indent, int depth, bool sortKeys) const;

  Kind kind_ = Kind::Null;
  bool bool_ = false;
  int64_t int_ = 0;
  uint64_t uint_ = 0;
  double double_ = 0;
  std::string string_;
  std::vector<Json> array_;
  std::vector<JsonMember> object_;
};

struct JsonMember {
  std::string key;
  Json value;
};

/// The canonical text of a double (docs/bundle-and-abi.md section 5): the shortest
/// decimal digits that read back to `d` (of those, the nearest to `d`), in fixed
/// notation while 1e-4 <= |d| < 1e15 (with ".0" added to integral values), else
/// d[.ddd]e+XX / e-XX (at least two exponent digits); zero is "0.0" or "-0.0". NaN and
/// infinities have no JSON form: "null".
std::string formatDouble(double d);

/// `s` as a JSON string literal: quotes, backslash and control characters escaped
/// (\b \f \n \r \t, else \u00xx), everything else (UTF-8 included) kept.
std::string quoteJson(const std::string &s);

} // namespace attune::rt

#endif
