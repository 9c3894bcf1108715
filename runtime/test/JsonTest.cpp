//===- JsonTest.cpp - the JSON reader and writer --------------------------===//
#include "Json.h"

#include <gtest/gtest.h>

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

using namespace attune::rt;

namespace {

/// The error message of parsing `text`, or "" when it parses.
std::string parseError(const std::string &text) {
  try {
    Json::parse(text);
    return "";
  } catch (const JsonError &e) {
    return e.what();
  }
}

} // namespace

TEST(Json, ParsesScalarsAndContainers) {
  Json j = Json::parse(R"( {"a": [1, -2, 3.5, true, false, null, "s"], "b": {}, "c": []} )");
  ASSERT_TRUE(j.isObject());
  const Json &a = *j.find("a");
  ASSERT_EQ(a.size(), 7u);
  EXPECT_EQ(a[0].asInt(), 1);
  EXPECT_EQ(a[1].asInt(), -2);
  EXPECT_DOUBLE_EQ(a[2].asDouble(), 3.5);
  EXPECT_TRUE(a[3].asBool());
  EXPECT_FALSE(a[4].asBool());
  EXPECT_TRUE(a[5].isNull());
  EXPECT_EQ(a[6].asString(), "s");
  EXPECT_TRUE(j.find("b")->isObject());
  EXPECT_EQ(j.find("b")->size(), 0u);
  EXPECT_TRUE(j.find("c")->isArray());
  EXPECT_EQ(j.find("missing"), nullptr);
}

TEST(Json, IntegersAreInt64OrUInt64) {
  Json j = Json::parse("[9223372036854775807, -9223372036854775808, 18446744073709551615, "
                       "18446744073709551616.0, -9223372036854775809.0, -0, 1.0, 1e2]");
  EXPECT_EQ(j[0].kind(), Json::Kind::Int);
  EXPECT_EQ(j[0].asInt(), std::numeric_limits<int64_t>::max());
  EXPECT_EQ(j[1].kind(), Json::Kind::Int);
  EXPECT_EQ(j[1].asInt(), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(j[2].kind(), Json::Kind::UInt);
  EXPECT_EQ(j[2].asUInt(), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(j[3].kind(), Json::Kind::Double); // written as a float: a double
  EXPECT_EQ(j[4].kind(), Json::Kind::Double);
  EXPECT_EQ(j[5].kind(), Json::Kind::Int);
  EXPECT_EQ(j[5].asInt(), 0);
  EXPECT_EQ(j[6].kind(), Json::Kind::Double);
  EXPECT_EQ(j[7].kind(), Json::Kind::Double);
  EXPECT_EQ(j.dump(), "[9223372036854775807,-9223372036854775808,18446744073709551615,"
                      "1.8446744073709552e+19,-9.223372036854776e+18,0,1.0,100.0]");
}

// Fuzz finding 4: an integer literal outside 64 bits was read as a double, so the reader,
// nlohmann and Python (which keeps big integers) disagreed on the value and the hash.
TEST(Json, IntegersOutside64BitsAreRefusedWithTheirPath) {
  EXPECT_EQ(parseError("{\"q_offset\": 99999999999999999999999}"),
            "line 1, column 14: integer out of range at /q_offset: 99999999999999999999999 "
            "(integers must fit in 64 bits; write a float such as 1e+23 where a float is "
            "meant)");
  EXPECT_NE(parseError("[18446744073709551616]").find("integer out of range at /0: "
                                                      "18446744073709551616 "),
            std::string::npos);
  EXPECT_NE(parseError("[-9223372036854775809]").find("integer out of range at /0"),
            std::string::npos);
  // Paths escape '~' and '/' (RFC 6901); long literals are shortened.
  EXPECT_NE(parseError("{\"a/b\": {\"c~\": [0, " + std::string(100, '9') + "]}}")
                .find("at /a~1b/c~0/1: 9999999999999999999999999999999999999... (integers"),
            std::string::npos);
  EXPECT_EQ(parseError("{\"x\": [1e999]}"), "line 1, column 8: number out of range at /x/0: 1e999");
  EXPECT_NE(parseError("[-18446744073709551615]").find("integer out of range at /0"),
            std::string::npos);
}

// Fuzz finding 4: nlohmann stops reading at a NUL byte, so attnc accepted garbage after
// one; this reader (attnc's too now) reads the whole text.
TEST(Json, NothingMayFollowTheDocument) {
  EXPECT_EQ(parseError(std::string("{\"a\": 1}\0garbage", 17)),
            "line 1, column 9: unexpected '\\x00' after the JSON value");
  EXPECT_EQ(parseError("{} {}"), "line 1, column 4: unexpected '{' after the JSON value");
  EXPECT_EQ(parseError("\xEF\xBB\xBF{}"),
            "line 1, column 1: the text starts with a UTF-8 byte order mark, which JSON here "
            "does not allow (save the file without one)");
  EXPECT_EQ(parseError("{}\n \t\r\n"), "");
}

TEST(Json, StringsAndEscapes) {
  Json j = Json::parse(R"(["a\"b\\c\/d\b\f\n\r\t", "\u00e9\u20ac", "\ud83d\ude00", "é€😀"])");
  EXPECT_EQ(j[0].asString(), "a\"b\\c/d\b\f\n\r\t");
  EXPECT_EQ(j[1].asString(), "\xc3\xa9\xe2\x82\xac");
  EXPECT_EQ(j[2].asString(), "\xf0\x9f\x98\x80");
  EXPECT_EQ(j[3].asString(), j[1].asString() + j[2].asString());
  // The writer escapes only what JSON requires; UTF-8 stays as it is.
  EXPECT_EQ(j.dump(), "[\"a\\\"b\\\\c/d\\b\\f\\n\\r\\t\",\"é€\",\"😀\",\"é€😀\"]");
  EXPECT_EQ(quoteJson(std::string("\x01\x1f\x7f", 3)), "\"\\u0001\\u001f\x7f\"");
}

TEST(Json, ErrorsCarryLineAndColumn) {
  EXPECT_EQ(parseError("{\n  \"a\": [1, 2,,]\n}"),
            "line 2, column 14: unexpected ',' (expected a value)");
  EXPECT_EQ(parseError("{\"a\" 1}"), "line 1, column 6: expected ':' after a key, got '1'");
  EXPECT_EQ(parseError("{\"a\": 1,}"), "line 1, column 9: expected a string key, got '}'");
  EXPECT_EQ(parseError("[1 2]"), "line 1, column 4: expected ',' or ']' in an array, got '2'");
  EXPECT_EQ(parseError("{\"a\": 1"),
            "line 1, column 8: unexpected end of input in an object (expected ',' or '}')");
  EXPECT_EQ(parseError("  \"abc"), "line 1, column 3: unterminated string");
  EXPECT_EQ(parseError("tru"), "line 1, column 1: invalid literal (expected 'true')");
  EXPECT_EQ(parseError("nul"), "line 1, column 1: invalid literal (expected 'null')");
  EXPECT_EQ(parseError("01"), "line 1, column 2: leading zeros are not allowed in numbers");
  EXPECT_EQ(parseError("1."), "line 1, column 3: invalid number (expected a digit after '.')");
  EXPECT_EQ(parseError("1e"), "line 1, column 3: invalid number (expected a digit in the exponent)");
  EXPECT_EQ(parseError("-"), "line 1, column 2: invalid number (expected a digit)");
  EXPECT_EQ(parseError("1e999"), "line 1, column 1: number out of range: 1e999");
  EXPECT_EQ(parseError("\"\\x\""), "line 1, column 2: invalid escape '\\x' in a string");
  EXPECT_EQ(parseError("\"\\u12g4\""), "line 1, column 6: invalid \\u escape (expected 4 hex digits)");
  EXPECT_EQ(parseError("\"\\ud800\""), "line 1, column 2: lone UTF-16 surrogate in a \\u escape");
  EXPECT_EQ(parseError("\"\\udc00\""), "line 1, column 2: lone UTF-16 surrogate in a \\u escape");
  EXPECT_EQ(parseError("\"a\nb\""), "line 1, column 3: control character \\x0a in a string (escape it)");
  EXPECT_EQ(parseError("{} x"), "line 1, column 4: unexpected 'x' after the JSON value");
  EXPECT_EQ(parseError(""), "line 1, column 1: unexpected end of input (expected a value)");
  EXPECT_EQ(parseError("   \n  "), "line 2, column 3: unexpected end of input (expected a value)");
  EXPECT_EQ(parseError("NaN"), "line 1, column 1: unexpected 'N' (expected a value)");
  // Columns count characters, not bytes.
  EXPECT_EQ(parseError("[\"é\", x]"), "line 1, column 7: unexpected 'x' (expected a value)");
  EXPECT_EQ(parseError("{\"k\": 1, \"k\": 2}"), "line 1, column 10: duplicate key \"k\"");
}

TEST(Json, RejectsMalformedUtf8) {
  EXPECT_EQ(parseError("\"\xff\""), "line 1, column 2: invalid UTF-8 byte \\xff in a string");
  EXPECT_EQ(parseError("\"\xc3\""), "line 1, column 2: invalid UTF-8 sequence in a string");
  EXPECT_EQ(parseError("\"\xc0\xaf\""), "line 1, column 2: invalid UTF-8 byte \\xc0 in a string");
  EXPECT_EQ(parseError("\"\xe0\x80\xaf\""), "line 1, column 2: invalid UTF-8 sequence in a string");
  EXPECT_EQ(parseError("\"\xed\xa0\x80\""), "line 1, column 2: invalid UTF-8 sequence in a string");
  EXPECT_EQ(parseError("\"\xc3"), "line 1, column 2: truncated UTF-8 sequence in a string");
}

// Fuzz finding 2: one nesting limit, kMaxJsonDepth containers, for every reader; the
// limit itself parses, one more level is an error naming the limit.
TEST(Json, DeepNestingIsAnErrorNotACrash) {
  ASSERT_EQ(kMaxJsonDepth, 512);
  for (const char *open : {"[", "{\"not\": "}) {
    std::string deep;
    for (int i = 0; i < 100000; ++i)
      deep += open;
    EXPECT_NE(parseError(deep).find("arrays and objects nested deeper than 512 levels"),
              std::string::npos)
        << open;
  }
  std::string ok = std::string(512, '[') + std::string(512, ']');
  EXPECT_EQ(parseError(ok), "");
  std::string over = std::string(513, '[') + std::string(513, ']');
  EXPECT_EQ(parseError(over),
            "line 1, column 513: arrays and objects nested deeper than 512 levels");
  std::string objects;
  for (int i = 0; i < 511; ++i)
    objects += "{\"k\": ";
  objects += "{}" + std::string(511, '}');
  EXPECT_EQ(parseError(objects), "");
  EXPECT_NE(parseError("{\"k\": " + objects + "}").find("deeper than 512"), std::string::npos);
}

TEST(Json, DuplicateKeysLastWinsWhenAllowed) {
  Json j = Json::parse("{\"k\": 1, \"j\": 0, \"k\": 2}", /*rejectDuplicateKeys=*/false);
  EXPECT_EQ(j.size(), 2u);
  EXPECT_EQ(j.find("k")->asInt(), 2);
  EXPECT_EQ(j.dump(), "{\"k\":2,\"j\":0}");
}

TEST(Json, PrettyPrinting) {
  Json j = Json::parse(R"({"b": [1, {"x": null}], "a": {}, "c": []})");
  EXPECT_EQ(j.pretty(), "{\n  \"b\": [\n    1,\n    {\n      \"x\": null\n    }\n  ],\n"
                        "  \"a\": {},\n  \"c\": []\n}");
  EXPECT_EQ(Json::parse(j.pretty()), j);
}

TEST(Json, SetAppendEraseAndEquality) {
  Json j = Json::object();
  j.set("a", 1);
  j.set("b", "x");
  j.set("a", 2); // replaces in place
  EXPECT_EQ(j.dump(), "{\"a\":2,\"b\":\"x\"}");
  EXPECT_TRUE(j.erase("a"));
  EXPECT_FALSE(j.erase("a"));
  EXPECT_EQ(j.dump(), "{\"b\":\"x\"}");
  EXPECT_EQ(Json::parse("{\"a\":1,\"b\":2}"), Json::parse("{\"b\":2,\"a\":1}"));
  EXPECT_NE(Json::parse("1"), Json::parse("1.0"));
  EXPECT_NE(Json::parse("[1,2]"), Json::parse("[2,1]"));
}

// Shortest round-trip numbers laid out as nlohmann::json and (outside [1e15, 1e16))
// Python's repr print them.
TEST(Json, FormatDoubleTable) {
  struct Case {
    double value;
    const char *text;
  } cases[] = {
      {1.0, "1.0"},
      {0.1, "0.1"},
      {-2.5, "-2.5"},
      {0.0, "0.0"},
      {-0.0, "-0.0"},
      {100.0, "100.0"},
      {123.456, "123.456"},
      {123456789.0, "123456789.0"},
      {1e-05, "1e-05"},
      {1.5e-07, "1.5e-07"},
      {0.0001, "0.0001"},
      {0.001234, "0.001234"},
      {1e20, "1e+20"},
      {1e16, "1e+16"},
      {1e14, "100000000000000.0"},
      {12345678901234.5, "12345678901234.5"},
      {123456789012345.0, "123456789012345.0"},
      // nlohmann switches to exponent form one decade before Python's repr does:
      // Python prints 1000000000000000.0 and 9007199254740992.0 here.
      {1e15, "1e+15"},
      {9007199254740992.0, "9.007199254740992e+15"},
      {0.30000000000000004, "0.30000000000000004"},
      {1.0 / 3.0, "0.3333333333333333"},
      {2.0 / 3.0, "0.6666666666666666"},
      {5e-324, "5e-324"},
      {2.2250738585072014e-308, "2.2250738585072014e-308"},
      {1.7976931348623157e308, "1.7976931348623157e+308"},
      {-1.25e-100, "-1.25e-100"},
      {3.14159, "3.14159"},
      {0.5, "0.5"},
      {1e100, "1e+100"},
      {6.02214076e23, "6.02214076e+23"},
      // Where nlohmann's Grisu2 (the compiler's old hash) printed 17 digits, not the
      // shortest: 0.13056581630546019 and 0.27040758910755047 (an ALiBi-style slope).
      {0.13056581630546019, "0.1305658163054602"},
      {std::pow(2.0, -200.0 / 106.0), "0.2704075891075505"},
      // A power of two whose nearest 16-digit decimal does not read back but the next
      // one up does (the old formatter printed 17 digits, 7.1202363472230444e-307).
      {std::ldexp(1.0, -1017), "7.120236347223045e-307"},
      {1e21, "1e+21"},
      {1e-4, "0.0001"},
      {9.999999999999999e14, "999999999999999.9"},
      {std::ldexp(1.0, -1074), "5e-324"},
      {std::ldexp(1.0, -1022), "2.2250738585072014e-308"},
      {std::ldexp(1.0, 1023), "8.98846567431158e+307"},
      {std::numeric_limits<double>::infinity(), "null"},
      {std::nan(""), "null"},
  };
  for (const Case &c : cases)
    EXPECT_EQ(formatDouble(c.value), c.text) << "value " << c.text;
}

TEST(Json, FormatDoubleRoundTripsAndIsShortest) {
  std::mt19937_64 rng(12345);
  int checked = 0;
  for (int i = 0; i < 200000; ++i) {
    uint64_t bits = rng();
    double d;
    std::memcpy(&d, &bits, sizeof d);
    if (!std::isfinite(d))
      continue;
    std::string text = formatDouble(d);
    // Reads back to the same double.
    double back = std::strtod(text.c_str(), nullptr);
    ASSERT_EQ(std::memcmp(&back, &d, sizeof d), 0) << text;
#if defined(__cpp_lib_to_chars) && __cpp_lib_to_chars >= 201611L
    // Has as many significant digits as the standard library's shortest form (an
    // independent implementation).
    char buf[64];
    auto res = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
    std::string ref(buf, res.ptr);
    std::string refDigits, ourDigits;
    for (char c : ref.substr(0, ref.find('e')))
      if (c >= '0' && c <= '9')
        refDigits += c;
    size_t e = text.find('e');
    for (char c : text.substr(0, e))
      if (c >= '0' && c <= '9')
        ourDigits += c;
    // Strip leading zeros (0.000123) and trailing zeros (1200.0).
    ourDigits.erase(0, ourDigits.find_first_not_of('0'));
    ourDigits.erase(ourDigits.find_last_not_of('0') + 1);
    refDigits.erase(refDigits.find_last_not_of('0') + 1);
    ASSERT_EQ(ourDigits, refDigits) << text << " vs " << ref;
#endif
    ++checked;
  }
  EXPECT_GT(checked, 190000);
}

namespace {

/// The number form of docs/bundle-and-abi.md section 5 built from std::to_chars's
/// shortest round-trip digits (libstdc++'s, an implementation independent of
/// formatDouble's digit search), laid out from the document's rule: exponent form when
/// the decimal exponent is below -4 or above 14.
std::string documentedForm(double d) {
  if (d == 0)
    return std::signbit(d) ? "-0.0" : "0.0";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string sci(buf, res.ptr); // -d.ddde-XX
  std::string out = sci[0] == '-' ? "-" : "";
  if (sci[0] == '-')
    sci.erase(0, 1);
  size_t e = sci.find('e');
  int exp = std::atoi(sci.c_str() + e + 1);
  std::string digits;
  for (char c : sci.substr(0, e))
    if (c != '.')
      digits += c;
  if (exp < -4 || exp > 14) {
    out += digits.substr(0, 1) + (digits.size() > 1 ? "." + digits.substr(1) : "");
    char eb[16];
    std::snprintf(eb, sizeof eb, "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
    return out + eb;
  }
  if (exp < 0)
    return out + "0." + std::string(size_t(-exp - 1), '0') + digits;
  while (digits.size() < size_t(exp) + 1)
    digits += '0';
  std::string frac = digits.substr(size_t(exp) + 1);
  return out + digits.substr(0, size_t(exp) + 1) + "." + (frac.empty() ? "0" : frac);
}

/// Doubles of the kinds whose printing differs between implementations.
std::vector<std::pair<std::string, std::vector<double>>> trickyDoubles(uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::vector<std::pair<std::string, std::vector<double>>> kinds;
  auto add = [&](const char *name) -> std::vector<double> & {
    kinds.push_back({name, {}});
    return kinds.back().second;
  };
  auto &uniform = add("uniform");
  for (int i = 0; i < 2000; ++i)
    uniform.push_back((rng() & 1 ? -1 : 1) * unit(rng) * std::pow(10.0, int(rng() % 61) - 30));
  auto &f32 = add("float32-rounded");
  for (int i = 0; i < 2000; ++i)
    f32.push_back(double(float(unit(rng) * std::pow(10.0, int(rng() % 21) - 10))));
  auto &bits = add("random bit patterns");
  while (bits.size() < 2000) {
    uint64_t b = rng();
    double d;
    std::memcpy(&d, &b, sizeof d);
    if (std::isfinite(d))
      bits.push_back(d);
  }
  auto &roots = add("2^(-k/n)");
  for (int n = 1; n <= 128; ++n)
    for (int k = 0; k <= 16 * n; k += 1 + int(rng() % 7))
      roots.push_back(std::pow(2.0, -double(k) / double(n)));
  auto &twos = add("powers of two");
  for (int e = -1074; e <= 1023; ++e)
    twos.push_back(std::ldexp(1.0, e));
  auto &edges = add("near 1e-5, 1e-4, 1e15, 1e16, 1e21 and powers of ten");
  for (int k = -323; k <= 308; ++k) {
    double p = std::strtod(("1e" + std::to_string(k)).c_str(), nullptr);
    double lo = p, hi = p;
    edges.push_back(p);
    int steps = (k == -5 || k == -4 || k == 15 || k == 16 || k == 21) ? 40 : 2;
    for (int i = 0; i < steps; ++i) {
      lo = std::nextafter(lo, 0.0);
      hi = std::nextafter(hi, HUGE_VAL);
      edges.push_back(lo);
      edges.push_back(hi);
    }
  }
  edges.push_back(9007199254740992.0);
  edges.push_back(9007199254740993.0);
  edges.push_back(std::numeric_limits<double>::max());
  auto &sub = add("subnormals");
  for (int i = 0; i < 2000; ++i) {
    uint64_t b = (rng() >> 12) | (i & 1 ? 0x8000000000000000ull : 0);
    double d;
    std::memcpy(&d, &b, sizeof d);
    sub.push_back(d);
  }
  for (uint64_t b = 1; b < 64; ++b) {
    double d;
    std::memcpy(&d, &b, sizeof d);
    sub.push_back(d);
  }
  return kinds;
}

} // namespace

// Every kind of double prints as the document says, with the shortest digits that read
// back (the nearest of them): formatDouble against std::to_chars.
TEST(Json, FormatDoubleIsTheDocumentedFormOnTrickyDoubles) {
  size_t checked = 0;
  for (const auto &[kind, values] : trickyDoubles(20240611)) {
    for (double d : values) {
      std::string text = formatDouble(d);
      ASSERT_EQ(text, documentedForm(d)) << kind;
      double back = std::strtod(text.c_str(), nullptr);
      ASSERT_EQ(std::memcmp(&back, &d, sizeof d), 0) << kind << ": " << text;
      ++checked;
    }
  }
  EXPECT_GT(checked, 20000u);
}

TEST(Json, CanonicalSortsKeysByBytes) {
  Json j = Json::parse(R"({"b": 1, "a": {"z": [3, {"y": 1, "x": 2}], "é": 0, "B": 0}, "A": 0.5})");
  EXPECT_EQ(j.canonical(), R"({"A":0.5,"a":{"B":0,"z":[3,{"x":2,"y":1}],"é":0},"b":1})");
}
