//===- HashTest.cpp - SHA-256 and the spec hash ---------------------------===//
#include "Json.h"
#include "Sha256.h"

#include <gtest/gtest.h>

#include <random>

using namespace attune::rt;

TEST(Sha256, KnownVectors) {
  EXPECT_EQ(sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha256Hex("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopq"
                      "klmnopqrlmnopqrsmnopqrstnopqrstu"),
            "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
  EXPECT_EQ(sha256Hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, IncrementalEqualsOneShotAcrossBlockBoundaries) {
  std::mt19937 rng(7);
  for (size_t len = 0; len < 300; ++len) {
    std::string data(len, '\0');
    for (char &c : data)
      c = char(rng());
    Sha256 s;
    size_t pos = 0;
    while (pos < len) {
      size_t take = std::min<size_t>(len - pos, rng() % 70);
      s.update(data.data() + pos, take);
      pos += take;
    }
    ASSERT_EQ(s.hexDigest(), sha256Hex(data)) << "length " << len;
  }
}

namespace {
std::string specHash(const std::string &text) { return sha256Hex(Json::parse(text).canonical()); }
} // namespace

// The canonical text must be byte-identical to what the compiler (nlohmann::json's
// dump()) prints: these hashes were produced by `attnc hash`.
TEST(SpecHash, AgreesWithTheCompiler) {
  EXPECT_EQ(specHash(R"({"a":1e15,"b":1234567890123456.0,"c":0.1,"d":1e-5,"e":1e16,
                         "f":5e-324,"g":1.7976931348623157e308,"h":100000000000000000000,
                         "i":0.30000000000000004,"j":"\u00e9\u0001\u007f/"})"),
            "d0ae34cbf7cb7ef1fb2385aa62bd91aee47f99ccc178e15289e2d3c441dd7726");
}

TEST(SpecHash, CanonicalDumpOfTrickyDocuments) {
  struct Case {
    const char *in, *canonical;
  } cases[] = {
      {R"( { "z" : 1 , "a" : [ ] , "m" : { } } )", R"({"a":[],"m":{},"z":1})"},
      {R"({"scale": 0.125, "n": -0, "x": 1E+2, "y": 2.50})", R"({"n":0,"scale":0.125,"x":100.0,"y":2.5})"},
      {R"(["\u0000\u001F\"\\\/", "tab\there"])", R"(["\u0000\u001f\"\\/","tab\there"])"},
      {R"({"\u00e9": 1, "e": 2, "\u00c9": 3, "E": 4})", R"({"E":4,"e":2,"É":3,"é":1})"},
      {R"({"nested": {"b": [true, false, null], "a": [{"d": 1, "c": 2}]}})",
       R"({"nested":{"a":[{"c":2,"d":1}],"b":[true,false,null]}})"},
      {R"([1.0, 1, 1e0, 10.0e-1, 0.1e1])", R"([1.0,1,1.0,1.0,1.0])"},
      {R"([123456789012345678901234567890])", R"([1.2345678901234568e+29])"},
  };
  for (const Case &c : cases)
    EXPECT_EQ(Json::parse(c.in).canonical(), c.canonical) << c.in;
}

TEST(SpecHash, WhitespaceAndKeyOrderDoNotMatter) {
  EXPECT_EQ(specHash(R"({"heads_q": 8, "mask": {"causal": {}}, "name": "x"})"),
            specHash("{\n  \"name\": \"x\",\n  \"mask\": {\"causal\": {}},\n  \"heads_q\": 8\n}"));
  EXPECT_NE(specHash(R"({"heads_q": 8})"), specHash(R"({"heads_q": 8.0})"));
}
