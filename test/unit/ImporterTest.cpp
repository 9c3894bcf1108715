//===- ImporterTest.cpp - spec errors name their JSON path; fuzzing -------===//
#include "specs/Importer.h"

#include "dialect/AttnOps.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include <nlohmann/json.hpp>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <set>
#include <sstream>

using json = nlohmann::json;
using namespace attune;

namespace {

const char *kBase = R"({
  "name": "base", "heads_q": 4, "heads_kv": 2, "head_dim": 32,
  "inputs": {"doc": {"dtype": "i32", "shape": ["B", "Sq"]},
             "cols": {"dtype": "i32", "shape": ["B", "Hq", "Nv"]},
             "tab": {"dtype": "f32", "shape": [32, "Hq"]}},
  "params": {"w": 8, "c": 2.5},
  "mask": {"all": [{"causal": {}}, {"sliding_window": {"left": 7}}]},
  "score": [{"softcap": {"cap": 30.0}}],
  "outputs": ["o", "lse"]
})";

struct Outcome {
  bool ok;
  SpecError error;
};

Outcome import(const std::string &text) {
  mlir::MLIRContext ctx;
  json spec;
  SpecError err;
  if (!parseSpecText(text, spec, err))
    return {false, err};
  SpecInfo info;
  auto module = importSpec(ctx, spec, info, err);
  if (module && mlir::failed(mlir::verify(*module)))
    ADD_FAILURE() << "imported module does not verify: " << text;
  return {static_cast<bool>(module), err};
}

/// Replaces the base spec's top-level keys by those of `patch` and imports it.
Outcome importPatched(const std::string &patch) {
  json base = json::parse(kBase);
  json p = json::parse(patch);
  for (auto it = p.begin(); it != p.end(); ++it)
    base[it.key()] = it.value();
  return import(base.dump());
}

struct Case {
  const char *patch;
  const char *path;
  const char *fragment;
};

} // namespace

TEST(Importer, BaseSpecImports) {
  auto r = import(kBase);
  EXPECT_TRUE(r.ok) << r.error.str();
}

TEST(Importer, ErrorsNameTheirJsonPath) {
  const Case cases[] = {
      {R"({"heads_q": 0})", "/heads_q", "must be >= 1"},
      {R"({"heads_q": 4.5})", "/heads_q", "must be an integer"},
      {R"({"heads_q": "4"})", "/heads_q", "must be an integer, got a string"},
      {R"({"heads_q": 1e30})", "/heads_q", "must be an integer"},
      {R"({"heads_q": 99999999999})", "/heads_q", "at most"},
      {R"({"heads_kv": 3})", "/heads_kv", "multiple of heads_kv"},
      {R"({"head_dim": -64})", "/head_dim", "must be >= 1"},
      {R"({"head_dim": 100000})", "/head_dim", "at most 512"},
      {R"({"dtype": "int8"})", "/dtype", "must be one of"},
      {R"({"scale": "x"})", "/scale", "must be a number"},
      {R"({"align": "middle"})", "/align", "must be one of"},
      {R"({"bogus": 1})", "/bogus", "unknown key 'bogus'"},
      {R"({"mask": {"all": [{"causal": {}}, {"sliding_window": {"left": -5}}]}})",
       "/mask/all/1/sliding_window/left", "must be >= -1"},
      {R"({"mask": {"all": [{"causal": {}}, {"sliding_window": {}}]}})",
       "/mask/all/1/sliding_window", "missing required key 'left'"},
      {R"({"mask": {"sliding_window": {"left": 4, "rigth": 2}}})",
       "/mask/sliding_window/rigth", "unknown key 'rigth'"},
      {R"({"mask": {"causal": {}, "full": {}}})", "/mask", "exactly one key"},
      {R"({"mask": "causal"})", "/mask", "exactly one key"},
      {R"({"mask": {"casual": {}}})", "/mask/casual", "unknown mask 'casual'"},
      {R"({"mask": {"causal": []}})", "/mask/causal", "must be an object"},
      {R"({"mask": {"any": []}})", "/mask/any", "non-empty array"},
      {R"({"mask": {"not": {"sinks": {"count": -1}}}})", "/mask/not/sinks/count",
       "must be >= 0"},
      {R"({"mask": {"document": {"q_ids": "nope"}}})", "/mask/document/q_ids",
       "not a declared input"},
      {R"({"mask": {"document": {"q_ids": "tab"}}})", "/mask/document/q_ids",
       "must be i32"},
      {R"({"mask": {"keep": {"kv_keep": "doc"}}})", "/mask/keep/kv_keep", "must have rank 3"},
      {R"({"mask": {"strided": {"stride": 0}}})", "/mask/strided/stride", "must be >= 1"},
      {R"({"mask": {"fixed": {"stride": 4, "summary": 5}}})", "/mask/fixed/summary",
       "at most 4"},
      {R"({"mask": {"dilated_segments": {"segment": 8, "dilation": 2, "head_offset": 2}}})",
       "/mask/dilated_segments/head_offset", "at most 1"},
      {R"({"mask": {"shifted_groups": {"group": 8, "shifted_heads": [0, 7]}}})",
       "/mask/shifted_groups/shifted_heads/1", "at most 3"},
      {R"({"mask": {"global_tokens": {"count": 2, "tokens": [1]}}})", "/mask/global_tokens",
       "exactly one of"},
      {R"({"mask": {"block_list": {"block": [64], "kv_blocks": "cols"}}})",
       "/mask/block_list/block", "must be [BM, BN]"},
      {R"({"mask": {"causal": {"align": "top_left"}}, "align": "bottom_right"})",
       "/mask/causal/align", "conflicts"},
      {R"({"mask": {"expr": "q >= kv +"}})", "/mask/expr", "column 10: unexpected end"},
      {R"({"mask": {"expr": "q - kv"}})", "/mask/expr", "must be boolean"},
      {R"({"mask": {"expr": "s > 0"}})", "/mask/expr", "only in score expressions"},
      {R"({"mask": {"expr": "doc[b, q_idx] == doc[b]"}})", "/mask/expr",
       "column 18: tensor 'doc' has 2 dimensions"},
      {R"({"mask": {"expr": "q // (w - 8) == 0"}})", "/mask/expr", "division by zero"},
      {R"({"mask": {"expr": 5}})", "/mask/expr", "must be a string"},
      {R"({"score": {"softcap": {"cap": 1}}})", "/score", "must be an array"},
      {R"({"score": [{"softcap": {"cap": 0}}]})", "/score/0/softcap/cap", "must be > 0"},
      {R"({"score": [{"softcap": {}}]})", "/score/0/softcap", "missing required key 'cap'"},
      {R"({"score": [{"alibi": {"slopes": [1, 2]}}]})", "/score/0/alibi/slopes",
       "one value per query head (4)"},
      {R"({"score": [{"t5_bias": {"table": "tab", "num_buckets": 16}}]})",
       "/score/0/t5_bias/table", "num_buckets (16)"},
      {R"({"score": [{"kerple_log": {"r1": [1, 1, 1, -1], "r2": [1, 1, 1, 1]}}]})",
       "/score/0/kerple_log/r1/3", "must be > 0"},
      {R"({"score": [{"log_length_scale": {"base": 1}}]})",
       "/score/0/log_length_scale/base", "must be > 1"},
      {R"({"score": [{"expr": "q < kv"}]})", "/score/0/expr", "must be a float"},
      {R"({"score": [{"bias": {"tensor": "doc"}}]})", "/score/0/bias/tensor", "must be f32"},
      {R"({"score": [{"nope": {}}]})", "/score/0/nope", "unknown score transform"},
      {R"({"normalizer": "tanh"})", "/normalizer", "must be one of"},
      {R"({"normalizer": {"sigmoid": {"beta": "x"}}})", "/normalizer/sigmoid/beta",
       "must be a number"},
      {R"({"normalizer": "relu"})", "/outputs", "only defined for the softmax"},
      {R"({"outputs": ["lse"]})", "/outputs", "must contain \"o\""},
      {R"({"outputs": ["o", "o"]})", "/outputs/1", "listed twice"},
      {R"({"rope": {"rotary_dim": 7}})", "/rope/rotary_dim", "must be even"},
      {R"({"rope": {"rotary_dim": 64}})", "/rope/rotary_dim", "at most 32"},
      {R"({"rope": {"theta": 0.5}})", "/rope/theta", "must be > 1"},
      {R"({"rope": {"scaling": {"yarn": {"factor": 4}}}})", "/rope/scaling/yarn",
       "missing required key 'original_max_position'"},
      {R"({"rope": {"scaling": {"dynamic": 2}}})", "/rope/scaling/dynamic", "unknown scaling"},
      {R"({"inputs": {"q": {"dtype": "i32", "shape": ["B"]}}})", "/inputs/q", "reserved"},
      {R"({"inputs": {"x-y": {"dtype": "i32", "shape": ["B"]}}})", "/inputs/x-y",
       "must be an identifier"},
      {R"({"inputs": {"x": {"dtype": "i8", "shape": ["B"]}}})", "/inputs/x/dtype",
       "must be one of"},
      {R"({"inputs": {"x": {"dtype": "i32", "shape": []}}})", "/inputs/x/shape",
       "1 to 4 dimensions"},
      {R"({"inputs": {"x": {"dtype": "i32", "shape": [0]}}})", "/inputs/x/shape/0",
       "must be >= 1"},
      {R"({"inputs": {"x": {"dtype": "i32", "shape": ["a b"]}}})", "/inputs/x/shape/0",
       "identifier"},
      {R"({"params": {"w": "eight"}})", "/params/w", "number or a boolean"},
      {R"({"params": {"doc": 1}})", "/params/doc", "already an input"},
  };
  for (const Case &c : cases) {
    auto r = importPatched(c.patch);
    EXPECT_FALSE(r.ok) << c.patch;
    EXPECT_EQ(r.error.path, c.path) << c.patch << " -> " << r.error.str();
    EXPECT_NE(r.error.message.find(c.fragment), std::string::npos)
        << c.patch << " -> '" << r.error.str() << "' lacks '" << c.fragment << "'";
  }
}

TEST(Importer, MalformedJsonIsReportedWithItsPlace) {
  auto r = import("{\"heads_q\": 4,, }");
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.error.message.find("not valid JSON"), std::string::npos) << r.error.str();
  EXPECT_NE(r.error.message.find("line 1"), std::string::npos) << r.error.str();
  r = import("{\"heads_q\": 4, \"heads_q\": 8, \"head_dim\": 8}");
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.error.message.find("duplicate key \"heads_q\""), std::string::npos)
      << r.error.str();
  r = import("[1, 2]");
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error.message, "must be an object, got an array");
  r = import("");
  EXPECT_FALSE(r.ok);
  r = import("\xff\xfe");
  EXPECT_FALSE(r.ok);
}

// Fuzz finding 2: one nesting limit (rt::kMaxJsonDepth = 512) for the reader and the
// importer's mask trees; 100000 levels are an error, never a stack overflow.
TEST(Importer, DeepNestingIsAnError) {
  auto nots = [](int n) {
    std::string mask = "{\"causal\": {}}";
    for (int i = 0; i < n; ++i)
      mask = "{\"not\": " + mask + "}";
    return mask;
  };
  // 508 nots: 511 containers with the spec and the causal mask's parameters. Fine.
  auto r = import(R"({"heads_q": 1, "head_dim": 8, "mask": )" + nots(508) + "}");
  EXPECT_TRUE(r.ok) << r.error.str();
  r = import(R"({"heads_q": 1, "head_dim": 8, "mask": )" + nots(510) + "}");
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.error.message.find("not valid JSON: line 1, column "), std::string::npos);
  EXPECT_NE(r.error.message.find("arrays and objects nested deeper than 512 levels"),
            std::string::npos)
      << r.error.str();
  for (const char *open : {"[", "{\"not\": "}) {
    std::string deep;
    for (int i = 0; i < 100000; ++i)
      deep += open;
    r = import(R"({"heads_q": 1, "head_dim": 8, "mask": )" + deep);
    EXPECT_FALSE(r.ok);
    EXPECT_NE(r.error.message.find("nested deeper than 512 levels"), std::string::npos)
        << r.error.str();
  }
  // A tree built in memory, deeper than any text may be, meets the same limit.
  json mask = json::parse(R"({"causal": {}})");
  for (int i = 0; i < 600; ++i)
    mask = json{{"not", std::move(mask)}};
  json spec = json::parse(R"({"heads_q": 1, "head_dim": 8})");
  spec["mask"] = std::move(mask);
  mlir::MLIRContext ctx;
  SpecInfo info;
  SpecError err;
  EXPECT_FALSE(importSpec(ctx, spec, info, err));
  EXPECT_NE(err.message.find("masks nested deeper than 512 levels"), std::string::npos)
      << err.str();
}

// Fuzz finding 4: what nlohmann let through (a NUL byte and garbage after the document,
// integers beyond 64 bits read as doubles or wrapped) is refused with its place.
TEST(Importer, NothingAfterTheDocumentAndNoIntegerBeyond64Bits) {
  const char *ok = R"({"heads_q": 2, "head_dim": 16})";
  auto r = import(std::string(ok) + std::string("\0garbage", 8));
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error.message,
            "not valid JSON: line 1, column 31: unexpected '\\x00' after the JSON value");
  r = import(std::string(ok) + " {}");
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.error.message.find("after the JSON value"), std::string::npos);
  r = import(R"({"heads_q": 2, "head_dim": 16, "q_offset": 99999999999999999999999})");
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.error.message.find("integer out of range at /q_offset: 99999999999999999999999"),
            std::string::npos)
      << r.error.str();
  // uint64 values above INT64_MAX used to wrap: q_offset 18446744073709551615 was -1.
  r = import(R"({"heads_q": 2, "head_dim": 16, "q_offset": 18446744073709551615})");
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error.str(), "/q_offset: must be at most 1099511627776, got 18446744073709551615");
  r = import(R"({"heads_q": 2, "head_dim": 16, "params": {"k": 9223372036854775808}})");
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error.path, "/params/k");
  r = import(R"({"heads_q": 2, "head_dim": 16, "params": {"k": -9223372036854775808}})");
  EXPECT_TRUE(r.ok) << r.error.str();
}

// Fuzz finding 4: PATTERNS.md's rule, a score expression is a float and a mask
// expression a boolean, with the column.
TEST(Importer, ExpressionTypesAreChecked) {
  const Case cases[] = {
      {R"({"score": [{"expr": "1"}]})", "/score/0/expr",
       "column 1: a score expression must be a float, this one is an integer"},
      {R"({"score": [{"expr": "-h"}]})", "/score/0/expr",
       "column 1: a score expression must be a float, this one is an integer"},
      {R"({"score": [{"expr": "q - kv"}]})", "/score/0/expr",
       "column 3: a score expression must be a float, this one is an integer"},
      {R"J({"score": [{"expr": "max(q, kv)"}]})J", "/score/0/expr", "this one is an integer"},
      {R"({"score": [{"expr": "q < kv"}]})", "/score/0/expr", "column 3: a score expression "
                                                                "must be a float, this one is a boolean"},
      {R"({"mask": {"expr": "q - kv"}})", "/mask/expr",
       "column 3: a mask expression must be boolean, this one is an integer"},
      {R"({"mask": {"expr": "0.5"}})", "/mask/expr",
       "column 1: a mask expression must be boolean, this one is a float"},
  };
  for (const Case &c : cases) {
    auto r = importPatched(c.patch);
    EXPECT_FALSE(r.ok) << c.patch;
    EXPECT_EQ(r.error.path, c.path) << c.patch << " -> " << r.error.str();
    EXPECT_NE(r.error.message.find(c.fragment), std::string::npos)
        << c.patch << " -> '" << r.error.str() << "' lacks '" << c.fragment << "'";
  }
  for (const char *fine : {R"J({"score": [{"expr": "s + 0.5 * (q - kv)"}]})J",
                           R"({"score": [{"expr": "1.0"}]})", R"({"score": [{"expr": "q / kv"}]})"}) {
    auto r = importPatched(fine);
    EXPECT_TRUE(r.ok) << fine << " -> " << r.error.str();
  }
}

// Part 4 of the hardening issue: sizes are checked before anything is sized by them.
TEST(Importer, SizesAreCheckedBeforeUse) {
  const Case cases[] = {
      // Four dimensions of 2^31 multiply past 64 bits.
      {R"({"inputs": {"x": {"dtype": "f32", "shape": [2147483648, 2147483648, 2147483648, 2147483648]}}})",
       "/inputs/x/shape", "more than 2^40 elements"},
      {R"({"inputs": {"x": {"dtype": "f32", "shape": [1048576, 1048577]}}})", "/inputs/x/shape",
       "more than 2^40 elements ([1048576, 1048577])"},
      {R"({"inputs": {"x": {"dtype": "f32", "shape": [2147483648, "Hq", 1024]}}})",
       "/inputs/x/shape", "more than 2^40"},
      {R"({"mask": {"shifted_groups": {"group": 8, "shifted_heads": [0, 1, 2, 3, 0]}}})",
       "/mask/shifted_groups/shifted_heads", "lists 5 heads but the spec has 4 query heads"},
      {R"({"mask": {"shifted_groups": {"group": 8, "shifted_heads": [1, 1]}}})",
       "/mask/shifted_groups/shifted_heads/1", "head 1 is listed twice"},
  };
  for (const Case &c : cases) {
    auto r = importPatched(c.patch);
    EXPECT_FALSE(r.ok) << c.patch;
    EXPECT_EQ(r.error.path, c.path) << c.patch << " -> " << r.error.str();
    EXPECT_NE(r.error.message.find(c.fragment), std::string::npos)
        << c.patch << " -> '" << r.error.str() << "' lacks '" << c.fragment << "'";
  }
  // Free symbols and the largest allowed product are fine.
  auto r = importPatched(
      R"({"inputs": {"x": {"dtype": "f32", "shape": [1048576, 1048576, "N", "M"]}}})");
  EXPECT_TRUE(r.ok) << r.error.str();
  // FIRE: one hidden size for w1, b1 and w2 (declared sizes or the same symbol).
  auto fire = [](const char *w1, const char *b1, const char *w2) {
    return std::string(R"({"heads_q": 4, "head_dim": 32, "inputs": {"w1": {"dtype": "f32", "shape": [)") +
           w1 + R"(]}, "b1": {"dtype": "f32", "shape": [)" + b1 +
           R"(]}, "w2": {"dtype": "f32", "shape": ["Hq", )" + w2 +
           R"(]}, "b2": {"dtype": "f32", "shape": [4]}}, "score": [{"fire": {"w1": "w1",
           "b1": "b1", "w2": "w2", "b2": "b2", "c": 1.0, "L": 64.0}}]})";
  };
  EXPECT_TRUE(import(fire("\"Hid\"", "\"Hid\"", "\"Hid\"")).ok);
  EXPECT_TRUE(import(fire("32", "32", "32")).ok);
  EXPECT_TRUE(import(fire("4", "\"Hq\"", "4")).ok);
  r = import(fire("32", "16", "32"));
  EXPECT_EQ(r.error.str(), "/score/0/fire/b1: input 'b1' dimension 0 must be w1's hidden size "
                           "(32), got 16");
  r = import(fire("\"Hid\"", "\"Hid\"", "\"H2\""));
  EXPECT_EQ(r.error.str(), "/score/0/fire/w2: input 'w2' dimension 1 must be w1's hidden size "
                           "(Hid), got H2");
}

namespace {

/// A random JSON value, sometimes absurd.
json randomValue(std::mt19937_64 &rng, int depth = 0) {
  std::uniform_int_distribution<int> kind(0, 9);
  switch (depth > 3 ? kind(rng) % 6 : kind(rng)) {
  case 0: return nullptr;
  case 1: return bool(rng() & 1);
  case 2: return int64_t(rng() % 200) - 100;
  case 3: return std::vector<int64_t>{-1, 0, 1, INT64_MAX, INT64_MIN}[rng() % 5];
  case 4: return std::vector<double>{0.5, -1e300, 1e-300, 3.25, -0.0}[rng() % 5];
  case 5: return std::vector<std::string>{"", "causal", "doc", "q >= kv", "x[", "s*"}[rng() % 6];
  case 6: {
    json a = json::array();
    for (int i = rng() % 4; i > 0; --i)
      a.push_back(randomValue(rng, depth + 1));
    return a;
  }
  default: {
    json o = json::object();
    static const char *keys[] = {"causal", "all", "any", "not", "left", "count", "expr",
                                 "sliding_window", "softcap", "cap", "q_ids", "zz"};
    for (int i = rng() % 3; i > 0; --i)
      o[keys[rng() % 12]] = randomValue(rng, depth + 1);
    return o;
  }
  }
}

/// Every JSON pointer to a value inside `j`.
void pointers(const json &j, const std::string &path, std::vector<std::string> &out) {
  out.push_back(path);
  if (j.is_object())
    for (auto it = j.begin(); it != j.end(); ++it)
      pointers(it.value(), path + "/" + it.key(), out);
  else if (j.is_array())
    for (size_t i = 0; i < j.size(); ++i)
      pointers(j[i], path + "/" + std::to_string(i), out);
}

} // namespace

TEST(Importer, FuzzedSpecsNeverCrashAndErrorsPointIntoTheSpec) {
  std::random_device rd;
  uint64_t seed = (uint64_t(rd()) << 32) | rd();
  if (const char *s = std::getenv("ATTUNE_TEST_SEED"))
    seed = std::strtoull(s, nullptr, 10);
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  json base = json::parse(kBase);
  base["mask"] = json::parse(R"({"all": [{"causal": {}}, {"any": [{"sinks": {"count": 4}},
      {"sliding_window": {"left": 7, "right": 2}}]}, {"document": {"q_ids": "doc"}},
      {"expr": "q - kv < w"}]})");
  base["score"] = json::parse(R"([{"alibi": {}}, {"softcap": {"cap": 30.0}},
      {"t5_bias": {"table": "tab"}}, {"expr": "s * c"}])");
  int imported = 0, rejected = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    json spec = base;
    std::vector<std::string> ptrs;
    pointers(spec, "", ptrs);
    for (int m = 1 + rng() % 3; m > 0; --m) {
      std::string p = ptrs[rng() % ptrs.size()];
      if (p.empty())
        continue;
      json::json_pointer ptr(p);
      if (!spec.contains(ptr))
        continue;
      if (rng() % 4 == 0) {
        spec[ptr.parent_pointer()].is_object()
            ? (void)spec[ptr.parent_pointer()].erase(ptr.back())
            : (void)(spec[ptr] = randomValue(rng));
      } else {
        spec[ptr] = randomValue(rng);
      }
    }
    mlir::MLIRContext ctx;
    SpecInfo info;
    SpecError err;
    auto module = importSpec(ctx, spec, info, err);
    if (module) {
      ++imported;
      EXPECT_TRUE(mlir::succeeded(mlir::verify(*module))) << spec.dump();
      continue;
    }
    ++rejected;
    ASSERT_FALSE(err.message.empty()) << spec.dump();
    EXPECT_EQ(err.message.find("internal error"), std::string::npos)
        << spec.dump() << " -> " << err.str();
    // The path points at a value in the spec, or names a key missing from one.
    if (!err.path.empty()) {
      json::json_pointer ptr(err.path);
      bool inside = spec.contains(ptr) || spec.contains(ptr.parent_pointer());
      EXPECT_TRUE(inside) << spec.dump() << " -> " << err.str();
    }
  }
  EXPECT_GT(rejected, 100);
  EXPECT_GT(imported, 10);
}

//===----------------------------------------------------------------------===//
// The importer against the schema: every value a spec can hold, given each JSON type
// the schema does not allow there and each value just past a bound it states, is
// refused with that value's JSON path (fuzz finding 4: "$schema": 5 was accepted).
//===----------------------------------------------------------------------===//

namespace {

#ifndef ATTUNE_SOURCE_DIR
#error "ATTUNE_SOURCE_DIR must name the source tree (test/unit/CMakeLists.txt)"
#endif

json readJsonFile(const std::string &path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  std::stringstream ss;
  ss << in.rdbuf();
  return json::parse(ss.str());
}

class SchemaWalk {
public:
  explicit SchemaWalk(json schema) : root(std::move(schema)) { allProperties(root, ""); }

  /// A value of a spec and what the schema says of it.
  struct Slot {
    std::string path;         // JSON pointer into the spec
    std::set<std::string> types; // allowed JSON types (every oneOf alternative)
    const json *chosen;       // the alternative the (valid) value matches: its bounds apply
  };

  void walk(const json &spec, std::vector<Slot> &out) { visit(root, "", spec, "", out); }

  /// Schema properties no base spec reached.
  std::vector<std::string> unvisited() const {
    std::vector<std::string> out;
    for (const std::string &p : properties)
      if (!visited.count(p))
        out.push_back(p);
    return out;
  }

  static std::string kind(const json &v) {
    if (v.is_null())
      return "null";
    if (v.is_boolean())
      return "boolean";
    if (v.is_number_integer())
      return "integer";
    if (v.is_number())
      return "number";
    if (v.is_string())
      return "string";
    return v.is_array() ? "array" : "object";
  }

  static bool allows(const std::set<std::string> &types, const json &v) {
    std::string k = kind(v);
    return types.count(k) || (k == "integer" && types.count("number"));
  }

private:
  std::pair<const json *, std::string> deref(const json *s, std::string ptr) const {
    while (s->contains("$ref")) {
      std::string ref = (*s)["$ref"].get<std::string>(); // "#/$defs/mask"
      ptr = ref.substr(1);
      s = &root[json::json_pointer(ptr)];
    }
    return {s, ptr};
  }

  std::set<std::string> typesOf(const json &s0) const {
    const json *s = deref(&s0, "").first;
    std::set<std::string> out;
    if (s->contains("type")) {
      const json &t = (*s)["type"];
      if (t.is_string())
        out.insert(t.get<std::string>());
      else
        for (const json &x : t)
          out.insert(x.get<std::string>());
    }
    if (s->contains("enum") || s->contains("const"))
      out.insert("string"); // every enum and const of the schema is a string
    if (s->contains("oneOf"))
      for (const json &alt : (*s)["oneOf"])
        for (const std::string &t : typesOf(alt))
          out.insert(t);
    return out;
  }

  bool matches(const json &alt0, const json &v) const {
    const json *alt = deref(&alt0, "").first;
    if (alt->contains("oneOf")) {
      for (const json &a : (*alt)["oneOf"])
        if (matches(a, v))
          return true;
      return false;
    }
    if (!allows(typesOf(*alt), v))
      return false;
    if (alt->contains("enum")) {
      bool found = false;
      for (const json &e : (*alt)["enum"])
        found |= e == v;
      return found;
    }
    if (alt->contains("const"))
      return (*alt)["const"] == v;
    if (v.is_object() && alt->contains("properties") &&
        alt->value("additionalProperties", json(true)) == json(false)) {
      for (auto it = v.begin(); it != v.end(); ++it)
        if (!(*alt)["properties"].contains(it.key()))
          return false;
      for (const json &r : alt->value("required", json::array()))
        if (!v.contains(r.get<std::string>()))
          return false;
    }
    return true;
  }

  void visit(const json &s0, std::string ptr, const json &v, const std::string &path,
             std::vector<Slot> &out) {
    auto [s, p] = deref(&s0, ptr);
    std::set<std::string> types = typesOf(*s);
    // The alternative this value is an instance of.
    while (s->contains("oneOf")) {
      const json &alts = (*s)["oneOf"];
      size_t i = 0;
      while (i < alts.size() && !matches(alts[i], v))
        ++i;
      if (i == alts.size()) {
        ADD_FAILURE() << path << ": the base spec's value " << v.dump()
                      << " matches no alternative of " << p;
        return;
      }
      std::tie(s, p) = deref(&alts[i], p + "/oneOf/" + std::to_string(i));
    }
    out.push_back({path, types, s});
    if (v.is_object()) {
      for (auto it = v.begin(); it != v.end(); ++it) {
        std::string sub = path + "/" + it.key();
        if (s->contains("properties") && (*s)["properties"].contains(it.key())) {
          std::string q = p + "/properties/" + it.key();
          visited.insert(q);
          visit((*s)["properties"][it.key()], q, it.value(), sub, out);
        } else if (s->contains("additionalProperties") &&
                   (*s)["additionalProperties"].is_object()) {
          visit((*s)["additionalProperties"], p + "/additionalProperties", it.value(), sub,
                out);
        } else {
          ADD_FAILURE() << sub << ": the schema (" << p << ") has no such key";
        }
      }
    } else if (v.is_array() && s->contains("items")) {
      for (size_t i = 0; i < v.size(); ++i)
        visit((*s)["items"], p + "/items", v[i], path + "/" + std::to_string(i), out);
    }
  }

  void allProperties(const json &s, const std::string &ptr) {
    if (s.is_array()) {
      for (size_t i = 0; i < s.size(); ++i)
        allProperties(s[i], ptr + "/" + std::to_string(i));
      return;
    }
    if (!s.is_object())
      return;
    for (auto it = s.begin(); it != s.end(); ++it) {
      if (it.key() == "properties" && it.value().is_object())
        for (auto pr = it.value().begin(); pr != it.value().end(); ++pr)
          properties.insert(ptr + "/properties/" + pr.key());
      allProperties(it.value(), ptr + "/" + it.key());
    }
  }

  json root;
  std::set<std::string> properties, visited;
};

/// Specs that reach the schema's keys no example uses.
const char *kCoverage[] = {
    R"({"$schema": "https://attune.dev/schemas/attn-spec.schema.json", "name": "c1",
        "description": "d", "heads_q": 4, "heads_kv": 2, "head_dim": 32, "head_dim_v": 16,
        "dtype": "fp16", "scale": 0.125, "align": "top_left", "q_offset": 3, "kv_offset": 1,
        "params": {"w": 8, "c": 2.5, "on": true},
        "mask": {"any": [{"full": {}}, {"dilated_window": {"left": 8, "right": 2, "dilation": 2}},
                         {"global_tokens": {"tokens": [0, 5]}}, {"not": {"sinks": {"count": 2}}}]},
        "score": [{"softcap": {"cap": 30.0}}], "normalizer": {"sigmoid": {"beta": -2.0}},
        "outputs": ["o"]})",
    R"({"heads_q": 4, "head_dim": 32, "normalizer": {"softmax": {}}, "outputs": ["o", "lse"],
        "mask": {"causal": {"align": "top_left"}},
        "rope": {"theta": 500000.0, "style": "interleaved", "rotary_dim": 16,
                 "scaling": {"yarn": {"factor": 4.0, "original_max_position": 4096,
                                      "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 1.2}}}})",
    R"({"heads_q": 4, "head_dim": 32, "normalizer": {"relu": {}},
        "rope": {"scaling": {"ntk": 2.0}},
        "mask": {"shifted_groups": {"group": 8, "shifted_heads": [1, 3]}}})",
    R"({"heads_q": 4, "head_dim": 32,
        "inputs": {"t": {"dtype": "f32", "shape": [32, "Hq"]}},
        "mask": {"dilated_segments": {"segment": 8, "dilation": 2, "head_offset": 1}},
        "score": [{"t5_bias": {"table": "t", "num_buckets": 32, "max_distance": 64,
                               "bidirectional": true}}]})",
    R"({"heads_q": 4, "head_dim": 32, "mask": {"fixed": {"stride": 8, "summary": 2}},
        "score": [{"alibi": {"slopes": [0.5, 0.25, 0.125, 0.0625]}}]})",
    R"({"heads_q": 4, "head_dim": 32,
        "inputs": {"qd": {"dtype": "i32", "shape": ["B", "Sq"]},
                   "kd": {"dtype": "i32", "shape": ["B", "Skv"]}},
        "mask": {"document": {"q_ids": "qd", "kv_ids": "kd"}}})",
    R"({"heads_q": 4, "head_dim": 32, "mask": {"prefix_lm": {"prefix": 5}},
        "rope": {"scaling": {"linear": 2.0}}, "storage": {"q": "ragged", "kv": "paged"}})",
};

std::string replaceAt(json spec, const std::string &path, const json &value) {
  spec[json::json_pointer(path)] = value;
  return spec.dump();
}

} // namespace

TEST(Importer, EveryTypeAndBoundTheSchemaStatesIsChecked) {
  std::string src = ATTUNE_SOURCE_DIR;
  SchemaWalk schema(readJsonFile(src + "/specs/attn-spec.schema.json"));
  std::vector<json> bases;
  for (const auto &entry : std::filesystem::directory_iterator(src + "/specs/examples"))
    if (entry.path().extension() == ".json")
      bases.push_back(readJsonFile(entry.path().string()));
  for (const char *c : kCoverage)
    bases.push_back(json::parse(c));
  ASSERT_GT(bases.size(), 40u);

  int refused = 0;
  auto expectRefused = [&](const std::string &text, const std::string &path,
                           const std::string &what) {
    auto r = import(text);
    EXPECT_FALSE(r.ok) << path << " = " << what << ": accepted";
    if (r.ok)
      return;
    ++refused;
    // A number no 64-bit integer holds is refused by the reader, which names the path.
    bool reader = r.error.path.empty() && r.error.message.find(" at " + path + ":") != std::string::npos;
    EXPECT_TRUE(r.error.path == path || reader)
        << path << " = " << what << ": refused at '" << r.error.path << "': " << r.error.str();
  };
  const json wrong[] = {nullptr, true, 7, 2.5, "zz", json::array(), json::object()};
  for (const json &base : bases) {
    {
      auto r = import(base.dump());
      ASSERT_TRUE(r.ok) << base.dump() << " -> " << r.error.str();
    }
    std::vector<SchemaWalk::Slot> slots;
    schema.walk(base, slots);
    for (const SchemaWalk::Slot &slot : slots) {
      if (slot.path.empty())
        continue;
      for (const json &w : wrong)
        if (!SchemaWalk::allows(slot.types, w))
          expectRefused(replaceAt(base, slot.path, w), slot.path, w.dump());
      const json &s = *slot.chosen;
      const json &v = base[json::json_pointer(slot.path)];
      if (s.contains("minimum"))
        expectRefused(replaceAt(base, slot.path, s["minimum"].get<int64_t>() - 1), slot.path,
                      "minimum - 1");
      if (s.contains("maximum"))
        expectRefused(replaceAt(base, slot.path, s["maximum"].get<int64_t>() + 1), slot.path,
                      "maximum + 1");
      if (s.contains("exclusiveMinimum"))
        expectRefused(replaceAt(base, slot.path, s["exclusiveMinimum"]), slot.path,
                      "exclusiveMinimum");
      if (s.contains("enum") || s.contains("const"))
        expectRefused(replaceAt(base, slot.path, "zz-none"), slot.path, "not in the enum");
      if (s.contains("minLength"))
        expectRefused(replaceAt(base, slot.path, ""), slot.path, "too short");
      if (s.contains("maxLength"))
        expectRefused(replaceAt(base, slot.path,
                                std::string(s["maxLength"].get<size_t>() + 1, 'a')),
                      slot.path, "too long");
      if (s.contains("minItems") && v.is_array())
        expectRefused(replaceAt(base, slot.path, json::array()), slot.path, "too few items");
      if (s.contains("maxItems") && v.is_array() && !v.empty()) {
        json more = json::array();
        while (more.size() <= s["maxItems"].get<size_t>())
          more.push_back(v[0]);
        expectRefused(replaceAt(base, slot.path, more), slot.path, "too many items");
      }
      if (s.contains("maxProperties") && v.is_object() && !v.empty()) {
        json more = v;
        for (size_t i = 0; more.size() <= s["maxProperties"].get<size_t>(); ++i)
          more["extra" + std::to_string(i)] = v.begin().value();
        expectRefused(replaceAt(base, slot.path, more), slot.path, "too many properties");
      }
      // Integers at the edges of 64 bits, where nlohmann wraps or rounds: every integer
      // key refuses them (params, "number" in the schema, take any int64).
      if (slot.types.count("integer")) {
        expectRefused(replaceAt(base, slot.path, std::numeric_limits<uint64_t>::max()),
                      slot.path, "UINT64_MAX");
        expectRefused(replaceAt(base, slot.path, uint64_t(1) << 63), slot.path, "2^63");
        std::string big = replaceAt(base, slot.path, "@@BIG@@");
        big.replace(big.find("\"@@BIG@@\""), 9, "99999999999999999999999");
        expectRefused(big, slot.path, "99999999999999999999999");
      }
    }
  }
  EXPECT_EQ(schema.unvisited(), std::vector<std::string>{})
      << "schema keys no base spec holds: add them to kCoverage";
  EXPECT_GT(refused, 1000);
  std::printf("%d mutated specs refused with the mutated value's path\n", refused);
}
