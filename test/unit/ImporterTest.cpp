//===- ImporterTest.cpp - spec errors name their JSON path; fuzzing -------===//
#include "specs/Importer.h"

#include "dialect/AttnOps.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include <nlohmann/json.hpp>

#include <gtest/gtest.h>

#include <random>

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
  EXPECT_NE(r.error.message.find("duplicate key 'heads_q'"), std::string::npos);
  r = import("[1, 2]");
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error.message, "must be an object, got an array");
  r = import("");
  EXPECT_FALSE(r.ok);
  r = import("\xff\xfe");
  EXPECT_FALSE(r.ok);
}

TEST(Importer, DeepNestingIsAnError) {
  std::string mask = "{\"causal\": {}}";
  for (int i = 0; i < 200; ++i)
    mask = "{\"not\": " + mask + "}";
  auto r = import(R"({"heads_q": 1, "head_dim": 8, "mask": )" + mask + "}");
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.error.message.find("nested deeper"), std::string::npos) << r.error.str();
  // Very deep JSON that is not even a mask.
  std::string deep(100000, '[');
  deep += std::string(100000, ']');
  r = import(R"({"heads_q": 1, "head_dim": 8, "mask": )" + deep + "}");
  EXPECT_FALSE(r.ok);
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
