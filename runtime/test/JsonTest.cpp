//===- JsonTest.cpp - the JSON reader and writer --------------------------===//
#include "Json.h"

#include <gtest/gtest.h>

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>

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

TEST(Json, IntegersFollowNlohmannsModel) {
  Json j = Json::parse("[9223372036854775807, -9223372036854775808, 18446744073709551615, "
                       "18446744073709551616, -9223372036854775809, -0, 1.0, 1e2]");
  EXPECT_EQ(j[0].kind(), Json::Kind::Int);
  EXPECT_EQ(j[0].asInt(), std::numeric_limits<int64_t>::max());
  EXPECT_EQ(j[1].kind(), Json::Kind::Int);
  EXPECT_EQ(j[1].asInt(), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(j[2].kind(), Json::Kind::UInt);
  EXPECT_EQ(j[2].asUInt(), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(j[3].kind(), Json::Kind::Double); // beyond uint64: a double
  EXPECT_EQ(j[4].kind(), Json::Kind::Double);
  EXPECT_EQ(j[5].kind(), Json::Kind::Int);
  EXPECT_EQ(j[5].asInt(), 0);
  EXPECT_EQ(j[6].kind(), Json::Kind::Double);
  EXPECT_EQ(j[7].kind(), Json::Kind::Double);
  EXPECT_EQ(j.dump(), "[9223372036854775807,-9223372036854775808,18446744073709551615,"
                      "1.8446744073709552e+19,-9.223372036854776e+18,0,1.0,100.0]");
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

TEST(Json, DeepNestingIsAnErrorNotACrash) {
  std::string deep(100000, '[');
  EXPECT_NE(parseError(deep).find("nesting deeper than 512 levels"), std::string::npos);
  std::string ok = std::string(500, '[') + std::string(500, ']');
  EXPECT_EQ(parseError(ok), "");
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

TEST(Json, CanonicalSortsKeysByBytes) {
  Json j = Json::parse(R"({"b": 1, "a": {"z": [3, {"y": 1, "x": 2}], "é": 0, "B": 0}, "A": 0.5})");
  EXPECT_EQ(j.canonical(), R"({"A":0.5,"a":{"B":0,"z":[3,{"x":2,"y":1}],"é":0},"b":1})");
}
