//===- rt_manifest.cpp - fuzz the bundle manifest reader -------------------===//
//
// Input: the text of a manifest.json (seeds: runtime/test/data manifests and variants
// of them). What loadManifest does after reading the file: Json::parse, then
// parseManifest; bad input throws JsonError or ManifestError and nothing else. On an
// accepted manifest the helpers the loader and `attune-rt info` use run too: the free
// symbols, the variant and input look-ups, the config summaries and every grid and
// scratch expression evaluated at a few shapes.
//
//===----------------------------------------------------------------------===//
#include "FuzzSupport.h"

#include "Json.h"
#include "Manifest.h"

#include <cstdint>
#include <map>
#include <string>

using namespace attune::rt;

static void evalAll(const Expr *grid, const std::map<std::string, int64_t> &names) {
  for (int i = 0; i < 3; ++i) {
    try {
      (void)grid[i].eval(names);
    } catch (const ExprError &) {
    }
  }
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string text(reinterpret_cast<const char *>(data), size);
  Manifest m;
  try {
    m = parseManifest(Json::parse(text), "manifest.json");
  } catch (const JsonError &) {
    return 0;
  } catch (const ManifestError &) {
    return 0;
  }
  std::vector<std::string> free = m.freeSymbols();
  std::map<std::string, int64_t> names = {
      {"batch", 2},  {"heads_q", m.headsQ},  {"heads_kv", m.headsKv}, {"seq_q", 1000},
      {"seq_kv", 17}, {"head_dim", m.headDim}, {"head_dim_v", m.headDimV},
      {"num_splits", 4}};
  for (const std::string &s : free)
    names[s] = 5;
  for (const Variant &v : m.variants) {
    FUZZ_CHECK(m.findVariant(v.name) >= 0, "variant '%s' not found by name", v.name.c_str());
    (void)v.configSummary();
    evalAll(v.grid, names);
    if (v.splitKv) {
      evalAll(v.splitKv->grid, names);
      for (const Expr &bytes : v.splitKv->scratchBytes) {
        try {
          (void)bytes.eval(names);
        } catch (const ExprError &) {
        }
      }
    }
    for (int major : {7, 8, 9, 10})
      (void)archRunsOn(v, major, 0);
  }
  for (const InputDecl &in : m.inputs)
    FUZZ_CHECK(m.findInput(in.name) >= 0, "input '%s' not found by name", in.name.c_str());
  return 0;
}
