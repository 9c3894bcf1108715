//===- Json.cpp - a small JSON value, reader and writer -------------------===//
#include "Json.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <locale.h>
#include <unordered_map>

namespace attune::rt {

//===----------------------------------------------------------------------===//
// Value
//===----------------------------------------------------------------------===//

Json::Json(uint64_t u) {
  // Keep small non-negative values as Int so that equal numbers compare equal
  // regardless of how they were produced.
  if (u <= uint64_t(std::numeric_limits<int64_t>::max())) {
    kind_ = Kind::Int;
    int_ = int64_t(u);
  } else {
    kind_ = Kind::UInt;
    uint_ = u;
  }
}

int64_t Json::asInt() const {
  switch (kind_) {
  case Kind::Int:
    return int_;
  case Kind::UInt:
    return std::numeric_limits<int64_t>::max();
  case Kind::Double:
    // Saturating: converting a double outside int64 (or NaN) is undefined behaviour.
    if (!(double_ > -9223372036854775808.0))
      return double_ != double_ ? 0 : std::numeric_limits<int64_t>::min();
    if (double_ >= 9223372036854775808.0)
      return std::numeric_limits<int64_t>::max();
    return int64_t(double_);
  default:
    return 0;
  }
}

double Json::asDouble() const {
  switch (kind_) {
  case Kind::Int:
    return double(int_);
  case Kind::UInt:
    return double(uint_);
  case Kind::Double:
    return double_;
  default:
    return 0;
  }
}

size_t Json::size() const {
  if (kind_ == Kind::Array)
    return array_.size();
  if (kind_ == Kind::Object)
    return object_.size();
  return 0;
}

void Json::push_back(Json v) {
  if (kind_ == Kind::Null)
    kind_ = Kind::Array;
  array_.push_back(std::move(v));
}

const Json *Json::find(const std::string &key) const {
  for (const JsonMember &m : object_)
    if (m.key == key)
      return &m.value;
  return nullptr;
}

Json *Json::find(const std::string &key) {
  for (JsonMember &m : object_)
    if (m.key == key)
      return &m.value;
  return nullptr;
}

void Json::set(const std::string &key, Json value) {
  if (kind_ == Kind::Null)
    kind_ = Kind::Object;
  if (Json *existing = find(key)) {
    *existing = std::move(value);
    return;
  }
  object_.push_back({key, std::move(value)});
}

void Json::append(std::string key, Json value) {
  if (kind_ == Kind::Null)
    kind_ = Kind::Object;
  object_.push_back({std::move(key), std::move(value)});
}

bool Json::erase(const std::string &key) {
  auto it = std::find_if(object_.begin(), object_.end(),
                         [&](const JsonMember &m) { return m.key == key; });
  if (it == object_.end())
    return false;
  object_.erase(it);
  return true;
}

bool Json::operator==(const Json &o) const {
  if (isNumber() && o.isNumber()) {
    if (kind_ == Kind::Double || o.kind_ == Kind::Double)
      return kind_ == o.kind_ && double_ == o.double_;
    return kind_ == o.kind_ && (kind_ == Kind::Int ? int_ == o.int_ : uint_ == o.uint_);
  }
  if (kind_ != o.kind_)
    return false;
  switch (kind_) {
  case Kind::Null:
    return true;
  case Kind::Bool:
    return bool_ == o.bool_;
  case Kind::String:
    return string_ == o.string_;
  case Kind::Array:
    return array_ == o.array_;
  case Kind::Object: {
    // Member order does not matter for equality.
    if (object_.size() != o.object_.size())
      return false;
    for (const JsonMember &m : object_) {
      const Json *other = o.find(m.key);
      if (!other || *other != m.value)
        return false;
    }
    return true;
  }
  default:
    return false;
  }
}

//===----------------------------------------------------------------------===//
// Numbers
//===----------------------------------------------------------------------===//

namespace {

// strtod reads the decimal point of the process locale, which a host application may
// have changed; numbers in JSON always use '.'.
locale_t cLocale() {
  static locale_t loc = newlocale(LC_ALL_MASK, "C", static_cast<locale_t>(nullptr));
  return loc;
}

double parseDoubleC(const char *text) { return strtod_l(text, nullptr, cLocale()); }

/// The `precision` significant digits of d (correctly rounded) and the decimal
/// exponent of the first one: d ~= 0.DIGITS * 10^(exp10 + 1).
void scientificDigits(double d, int precision, std::string &digits, int &exp10) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*e", precision - 1, d);
  // "d.ddde[+-]XX", where '.' may be the locale's separator: keep only the digits
  // before 'e'.
  digits.clear();
  const char *p = buf;
  for (; *p && *p != 'e'; ++p)
    if (*p >= '0' && *p <= '9')
      digits.push_back(*p);
  exp10 = *p == 'e' ? std::atoi(p + 1) : 0;
}

} // namespace

std::string formatDouble(double d) {
  if (!std::isfinite(d))
    return "null";
  if (d == 0)
    return std::signbit(d) ? "-0.0" : "0.0";
  bool negative = d < 0;
  double a = std::fabs(d);

  // The fewest significant digits that read back to the same double, and of those the
  // nearest. For each length the candidates are the decimals just below and just above
  // `a`; the correctly rounded one is the nearer. Usually it reads back if either does,
  // but not always: the doubles that read back to a power of two span half as far below
  // it as above, so the nearer candidate can lie just outside below while the one above
  // is inside (2^-1017 is 7.120236347223045e-307, not ...0444e-307). The candidate
  // above is tried too; the one below the nearer never needs to be (it is farther than
  // the nearer, which already fell outside the wider side).
  auto readsBack = [a](const std::string &digits, int exp10, int precision, double *back) {
    // Read back as an integer mantissa with an exponent: no decimal point involved.
    std::string probe = digits + "e" + std::to_string(exp10 - (precision - 1));
    *back = parseDoubleC(probe.c_str());
    return *back == a;
  };
  std::string digits;
  int exp10 = 0;
  for (int precision = 1; precision <= 17; ++precision) {
    scientificDigits(a, precision, digits, exp10);
    double back;
    if (readsBack(digits, exp10, precision, &back))
      break;
    if (back > a)
      continue;
    std::string up = digits; // digits + 1 in the last place
    int upExp = exp10;
    size_t i = up.size();
    while (i > 0 && up[i - 1] == '9')
      up[--i] = '0';
    if (i == 0) {
      up = "1" + std::string(size_t(precision - 1), '0'); // 99.9 + 0.1 = 100
      ++upExp;
    } else {
      ++up[i - 1];
    }
    if (readsBack(up, upExp, precision, &back)) {
      digits = up;
      exp10 = upExp;
      break;
    }
  }
  while (digits.size() > 1 && digits.back() == '0')
    digits.pop_back();

  // Lay the digits out as nlohmann::json's dtoa does (format_buffer with min_exp = -4,
  // max_exp = 15): k digits, the decimal point after n of them.
  const int k = int(digits.size());
  const int n = exp10 + 1;
  std::string out = negative ? "-" : "";
  if (k <= n && n <= 15) {
    out += digits + std::string(size_t(n - k), '0') + ".0"; // 1234000.0
  } else if (0 < n && n <= 15) {
    out += digits.substr(0, size_t(n)) + "." + digits.substr(size_t(n)); // 12.34
  } else if (-4 < n && n <= 0) {
    out += "0." + std::string(size_t(-n), '0') + digits; // 0.001234
  } else {
    out += digits.substr(0, 1);
    if (k > 1)
      out += "." + digits.substr(1);
    int e = n - 1;
    char buf[16];
    std::snprintf(buf, sizeof buf, "e%c%02d", e < 0 ? '-' : '+', e < 0 ? -e : e);
    out += buf;
  }
  return out;
}

//===----------------------------------------------------------------------===//
// Writer
//===----------------------------------------------------------------------===//

std::string quoteJson(const std::string &s) {
  std::string out;
  out.reserve(s.size() + 2);
  out.push_back('"');
  for (unsigned char c : s) {
    switch (c) {
    case '"':
      out += "\\\"";
      break;
    case '\\':
      out += "\\\\";
      break;
    case '\b':
      out += "\\b";
      break;
    case '\f':
      out += "\\f";
      break;
    case '\n':
      out += "\\n";
      break;
    case '\r':
      out += "\\r";
      break;
    case '\t':
      out += "\\t";
      break;
    default:
      if (c < 0x20) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\u%04x", c);
        out += buf;
      } else {
        out.push_back(char(c));
      }
    }
  }
  out.push_back('"');
  return out;
}

void Json::write(std::string &out, int indent, int depth, bool sortKeys) const {
  auto newline = [&](int d) {
    if (indent < 0)
      return;
    out.push_back('\n');
    out.append(size_t(indent * d), ' ');
  };
  switch (kind_) {
  case Kind::Null:
    out += "null";
    return;
  case Kind::Bool:
    out += bool_ ? "true" : "false";
    return;
  case Kind::Int:
    out += std::to_string(int_);
    return;
  case Kind::UInt:
    out += std::to_string(uint_);
    return;
  case Kind::Double:
    out += formatDouble(double_);
    return;
  case Kind::String:
    out += quoteJson(string_);
    return;
  case Kind::Array:
    out.push_back('[');
    for (size_t i = 0; i < array_.size(); ++i) {
      if (i)
        out.push_back(',');
      newline(depth + 1);
      array_[i].write(out, indent, depth + 1, sortKeys);
    }
    if (!array_.empty())
      newline(depth);
    out.push_back(']');
    return;
  case Kind::Object: {
    std::vector<const JsonMember *> order;
    for (const JsonMember &m : object_)
      order.push_back(&m);
    if (sortKeys) // std::string compares as unsigned bytes: UTF-8 byte order
      std::sort(order.begin(), order.end(),
                [](const JsonMember *a, const JsonMember *b) { return a->key < b->key; });
    out.push_back('{');
    for (size_t i = 0; i < order.size(); ++i) {
      if (i)
        out.push_back(',');
      newline(depth + 1);
      out += quoteJson(order[i]->key);
      out += indent < 0 ? ":" : ": ";
      order[i]->value.write(out, indent, depth + 1, sortKeys);
    }
    if (!order.empty())
      newline(depth);
    out.push_back('}');
    return;
  }
  }
}

std::string Json::dump() const {
  std::string out;
  write(out, -1, 0, false);
  return out;
}

std::string Json::pretty() const {
  std::string out;
  write(out, 2, 0, false);
  return out;
}

std::string Json::pretty(bool sortKeys) const {
  std::string out;
  write(out, 2, 0, sortKeys);
  return out;
}

std::string Json::canonical() const {
  std::string out;
  write(out, -1, 0, true);
  return out;
}

//===----------------------------------------------------------------------===//
// Reader
//===----------------------------------------------------------------------===//

namespace {

class Parser {
public:
  Parser(const std::string &text, bool rejectDuplicates)
      : text_(text), rejectDuplicates_(rejectDuplicates) {}

  Json document() {
    if (text_.compare(0, 3, "\xEF\xBB\xBF") == 0)
      fail("the text starts with a UTF-8 byte order mark, which JSON here does not allow "
           "(save the file without one)");
    skipSpace();
    Json v = value(0);
    skipSpace();
    if (pos_ < text_.size())
      fail("unexpected '" + printable(text_[pos_]) + "' after the JSON value");
    return v;
  }

private:
  /// Where the reader is, for messages: the key or index of each open container.
  struct Step {
    const std::string *key; // null in an array
    size_t index;
  };

  /// " at /json/pointer" inside a container, "" at the top level.
  std::string where() const {
    std::string out;
    for (const Step &s : trail_) {
      out.push_back('/');
      if (!s.key) {
        out += std::to_string(s.index);
        continue;
      }
      for (char c : *s.key) // RFC 6901 escapes
        out += c == '~' ? "~0" : c == '/' ? "~1" : std::string(1, c);
    }
    return out.empty() ? "" : " at " + out;
  }

  [[noreturn]] void fail(const std::string &message) const { failAt(pos_, message); }

  [[noreturn]] void failAt(size_t at, const std::string &message) const {
    int line = 1, column = 1;
    for (size_t i = 0; i < at && i < text_.size(); ++i) {
      unsigned char c = static_cast<unsigned char>(text_[i]);
      if (c == '\n') {
        ++line;
        column = 1;
      } else if ((c & 0xC0) != 0x80) { // count characters, not UTF-8 continuation bytes
        ++column;
      }
    }
    throw JsonError(message, line, column);
  }

  static std::string printable(char c) {
    unsigned char u = static_cast<unsigned char>(c);
    if (u < 0x20 || u >= 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", u);
      return buf;
    }
    return std::string(1, c);
  }

  bool atEnd() const { return pos_ >= text_.size(); }
  char peek() const { return atEnd() ? '\0' : text_[pos_]; }

  void skipSpace() {
    while (!atEnd() && (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' ||
                        text_[pos_] == '\r'))
      ++pos_;
  }

  void expectWord(const char *word) {
    size_t n = std::strlen(word);
    if (text_.compare(pos_, n, word) != 0)
      fail("invalid literal (expected '" + std::string(word) + "')");
    pos_ += n;
  }

  /// `depth`: the number of arrays and objects around this value.
  Json value(int depth) {
    if ((peek() == '{' || peek() == '[') && depth >= kMaxJsonDepth)
      fail("arrays and objects nested deeper than " + std::to_string(kMaxJsonDepth) +
           " levels");
    if (atEnd())
      fail("unexpected end of input (expected a value)");
    char c = peek();
    switch (c) {
    case '{':
      return object(depth);
    case '[':
      return array(depth);
    case '"':
      return Json(string());
    case 't':
      expectWord("true");
      return Json(true);
    case 'f':
      expectWord("false");
      return Json(false);
    case 'n':
      expectWord("null");
      return Json(nullptr);
    default:
      if (c == '-' || (c >= '0' && c <= '9'))
        return number();
      fail("unexpected '" + printable(c) + "' (expected a value)");
    }
  }

  Json object(int depth) {
    ++pos_; // '{'
    Json obj = Json::object();
    skipSpace();
    if (peek() == '}') {
      ++pos_;
      return obj;
    }
    // Key -> member index, so that large objects (the tuning database) parse in linear
    // time.
    std::unordered_map<std::string, size_t> index;
    while (true) {
      skipSpace();
      if (peek() != '"')
        fail(atEnd() ? "unexpected end of input in an object (expected a key)"
                     : "expected a string key, got '" + printable(peek()) + "'");
      size_t keyAt = pos_;
      std::string key = string();
      auto known = index.find(key);
      if (known != index.end() && rejectDuplicates_)
        failAt(keyAt, "duplicate key \"" + key + "\"");
      skipSpace();
      if (peek() != ':')
        fail(atEnd() ? "unexpected end of input (expected ':')"
                     : "expected ':' after a key, got '" + printable(peek()) + "'");
      ++pos_;
      skipSpace();
      trail_.push_back({&key, 0});
      Json v = value(depth + 1);
      trail_.pop_back();
      if (known != index.end()) {
        *obj.find(key) = std::move(v); // the last duplicate wins, as in nlohmann and Python
      } else {
        index.emplace(key, obj.size());
        obj.append(std::move(key), std::move(v));
      }
      skipSpace();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == '}') {
        ++pos_;
        return obj;
      }
      fail(atEnd() ? "unexpected end of input in an object (expected ',' or '}')"
                   : "expected ',' or '}' in an object, got '" + printable(peek()) + "'");
    }
  }

  Json array(int depth) {
    ++pos_; // '['
    Json arr = Json::array();
    skipSpace();
    if (peek() == ']') {
      ++pos_;
      return arr;
    }
    while (true) {
      skipSpace();
      trail_.push_back({nullptr, arr.size()});
      arr.push_back(value(depth + 1));
      trail_.pop_back();
      skipSpace();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == ']') {
        ++pos_;
        return arr;
      }
      fail(atEnd() ? "unexpected end of input in an array (expected ',' or ']')"
                   : "expected ',' or ']' in an array, got '" + printable(peek()) + "'");
    }
  }

  unsigned hex4() {
    unsigned v = 0;
    for (int i = 0; i < 4; ++i) {
      char c = peek();
      int d = (c >= '0' && c <= '9')   ? c - '0'
              : (c >= 'a' && c <= 'f') ? c - 'a' + 10
              : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                       : -1;
      if (d < 0)
        fail("invalid \\u escape (expected 4 hex digits)");
      v = v * 16 + unsigned(d);
      ++pos_;
    }
    return v;
  }

  static void appendUtf8(std::string &out, unsigned cp) {
    if (cp < 0x80) {
      out.push_back(char(cp));
    } else if (cp < 0x800) {
      out.push_back(char(0xC0 | (cp >> 6)));
      out.push_back(char(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      out.push_back(char(0xE0 | (cp >> 12)));
      out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(char(0x80 | (cp & 0x3F)));
    } else {
      out.push_back(char(0xF0 | (cp >> 18)));
      out.push_back(char(0x80 | ((cp >> 12) & 0x3F)));
      out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(char(0x80 | (cp & 0x3F)));
    }
  }

  /// Copies one UTF-8 encoded character, rejecting malformed, overlong and surrogate
  /// encodings (the canonical text must be valid UTF-8).
  void utf8Char(std::string &out) {
    size_t start = pos_;
    unsigned char c = static_cast<unsigned char>(text_[pos_]);
    int extra;
    unsigned cp, min;
    if (c >= 0xC2 && c <= 0xDF) {
      extra = 1, cp = c & 0x1F, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
      extra = 2, cp = c & 0x0F, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
      extra = 3, cp = c & 0x07, min = 0x10000;
    } else {
      fail("invalid UTF-8 byte " + printable(char(c)) + " in a string");
    }
    for (int i = 1; i <= extra; ++i) {
      if (start + size_t(i) >= text_.size())
        fail("truncated UTF-8 sequence in a string");
      unsigned char cc = static_cast<unsigned char>(text_[start + size_t(i)]);
      if ((cc & 0xC0) != 0x80)
        fail("invalid UTF-8 sequence in a string");
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      fail("invalid UTF-8 sequence in a string");
    out.append(text_, start, size_t(extra) + 1);
    pos_ = start + size_t(extra) + 1;
  }

  std::string string() {
    size_t open = pos_;
    ++pos_; // '"'
    std::string out;
    while (true) {
      if (atEnd())
        failAt(open, "unterminated string");
      unsigned char c = static_cast<unsigned char>(text_[pos_]);
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c < 0x20)
        fail("control character " + printable(char(c)) + " in a string (escape it)");
      if (c >= 0x80) {
        utf8Char(out);
        continue;
      }
      if (c != '\\') {
        out.push_back(char(c));
        ++pos_;
        continue;
      }
      ++pos_;
      char e = peek();
      ++pos_;
      switch (e) {
      case '"':
        out.push_back('"');
        break;
      case '\\':
        out.push_back('\\');
        break;
      case '/':
        out.push_back('/');
        break;
      case 'b':
        out.push_back('\b');
        break;
      case 'f':
        out.push_back('\f');
        break;
      case 'n':
        out.push_back('\n');
        break;
      case 'r':
        out.push_back('\r');
        break;
      case 't':
        out.push_back('\t');
        break;
      case 'u': {
        size_t at = pos_ - 2;
        unsigned cp = hex4();
        if (cp >= 0xD800 && cp <= 0xDBFF) { // a high surrogate needs its low half
          if (text_.compare(pos_, 2, "\\u") != 0)
            failAt(at, "lone UTF-16 surrogate in a \\u escape");
          pos_ += 2;
          unsigned low = hex4();
          if (low < 0xDC00 || low > 0xDFFF)
            failAt(at, "lone UTF-16 surrogate in a \\u escape");
          cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
          failAt(at, "lone UTF-16 surrogate in a \\u escape");
        }
        appendUtf8(out, cp);
        break;
      }
      default:
        pos_ -= 2;
        fail(e ? "invalid escape '\\" + printable(e) + "' in a string"
               : "unterminated string");
      }
    }
  }

  Json number() {
    size_t start = pos_;
    bool negative = false;
    if (peek() == '-') {
      negative = true;
      ++pos_;
    }
    if (peek() == '0') {
      ++pos_;
      if (peek() >= '0' && peek() <= '9')
        fail("leading zeros are not allowed in numbers");
    } else if (peek() >= '1' && peek() <= '9') {
      while (peek() >= '0' && peek() <= '9')
        ++pos_;
    } else {
      fail("invalid number (expected a digit)");
    }
    bool integral = true;
    if (peek() == '.') {
      integral = false;
      ++pos_;
      if (!(peek() >= '0' && peek() <= '9'))
        fail("invalid number (expected a digit after '.')");
      while (peek() >= '0' && peek() <= '9')
        ++pos_;
    }
    if (peek() == 'e' || peek() == 'E') {
      integral = false;
      ++pos_;
      if (peek() == '+' || peek() == '-')
        ++pos_;
      if (!(peek() >= '0' && peek() <= '9'))
        fail("invalid number (expected a digit in the exponent)");
      while (peek() >= '0' && peek() <= '9')
        ++pos_;
    }
    std::string lexeme = text_.substr(start, pos_ - start);
    std::string shown = lexeme.size() <= 40 ? lexeme : lexeme.substr(0, 37) + "...";
    if (integral) {
      // Accumulate in uint64 and watch for overflow. An integer outside int64 and
      // uint64 is refused: read as a double it would silently lose digits (and every
      // reader would have to agree on how), and no key takes one.
      uint64_t mag = 0;
      bool overflow = false;
      for (size_t i = negative ? 1 : 0; i < lexeme.size(); ++i) {
        unsigned d = unsigned(lexeme[i] - '0');
        if (mag > (std::numeric_limits<uint64_t>::max() - d) / 10) {
          overflow = true;
          break;
        }
        mag = mag * 10 + d;
      }
      if (!overflow) {
        if (!negative)
          return Json(mag);
        if (mag <= uint64_t(std::numeric_limits<int64_t>::max()) + 1)
          return Json(mag == 0 ? int64_t(0) : int64_t(0 - mag)); // two's complement
      }
      failAt(start, "integer out of range" + where() + ": " + shown +
                        " (integers must fit in 64 bits; write a float such as 1e+23 "
                        "where a float is meant)");
    }
    double d = parseDoubleC(lexeme.c_str());
    if (!std::isfinite(d))
      failAt(start, "number out of range" + where() + ": " + shown);
    return Json(d);
  }

  const std::string &text_;
  bool rejectDuplicates_;
  size_t pos_ = 0;
  std::vector<Step> trail_;
};

} // namespace

Json Json::parse(const std::string &text, bool rejectDuplicateKeys) {
  return Parser(text, rejectDuplicateKeys).document();
}

} // namespace attune::rt
