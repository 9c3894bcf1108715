//===- ManifestTest.cpp - manifest.json validation ------------------------===//
#include "Manifest.h"
#include "TestUtil.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <sys/stat.h>
#include <unistd.h>

using namespace attune::rt;
using namespace attune::rt::test;

namespace {

Json &at(Json &root, const std::string &pointer) {
  Json *j = &root;
  size_t pos = 1;
  while (pos <= pointer.size() && pointer.size() > 1) {
    size_t slash = pointer.find('/', pos);
    std::string token = pointer.substr(pos, slash == std::string::npos ? std::string::npos : slash - pos);
    j = j->isArray() ? &(*j)[size_t(std::stoul(token))] : j->find(token);
    if (!j)
      throw std::runtime_error("no " + pointer);
    if (slash == std::string::npos)
      break;
    pos = slash + 1;
  }
  return *j;
}

std::pair<std::string, std::string> splitLast(const std::string &pointer) {
  size_t slash = pointer.rfind('/');
  return {pointer.substr(0, slash), pointer.substr(slash + 1)};
}

void setAt(Json &root, const std::string &pointer, Json value) {
  auto [parent, key] = splitLast(pointer);
  Json &p = parent.empty() ? root : at(root, parent);
  if (p.isArray())
    p[size_t(std::stoul(key))] = std::move(value);
  else
    p.set(key, std::move(value));
}

void removeAt(Json &root, const std::string &pointer) {
  auto [parent, key] = splitLast(pointer);
  (parent.empty() ? root : at(root, parent)).erase(key);
}

Json baseline() { return Json::parse(testManifestText()); }

std::string errorOf(const Json &doc) {
  try {
    parseManifest(doc);
    return "";
  } catch (const ManifestError &e) {
    return e.what();
  }
}

std::string errorWith(const std::string &pointer, Json value) {
  Json doc = baseline();
  setAt(doc, pointer, std::move(value));
  return errorOf(doc);
}

std::string errorWithout(const std::string &pointer) {
  Json doc = baseline();
  removeAt(doc, pointer);
  return errorOf(doc);
}

} // namespace

TEST(Manifest, BaselineParses) {
  Manifest m = parseManifest(baseline());
  EXPECT_EQ(m.specName, "test-spec");
  EXPECT_EQ(m.headsQ, 8);
  EXPECT_EQ(m.headsKv, 2);
  EXPECT_EQ(m.headDim, 128);
  EXPECT_EQ(m.dtype, DType::BF16);
  EXPECT_EQ(m.align, "bottom_right");
  EXPECT_FALSE(m.qOffset);
  EXPECT_TRUE(m.hasLse);
  EXPECT_EQ(m.alignment, 16);
  ASSERT_EQ(m.inputs.size(), 3u);
  EXPECT_EQ(m.inputs[1].name, "idx");
  EXPECT_EQ(m.inputs[1].shape[1].symbol, "Nv");
  EXPECT_EQ(m.inputs[2].shape[1].size, 4);
  EXPECT_EQ(m.freeSymbols(), std::vector<std::string>{"Nv"});
  ASSERT_EQ(m.variants.size(), 3u);
  const Variant &v = m.variants[0];
  EXPECT_EQ(v.name, "sm80_bm64");
  EXPECT_EQ(v.archCapability, 80);
  EXPECT_FALSE(v.archExact);
  EXPECT_TRUE(v.isDefault);
  EXPECT_EQ(v.grid[0].text(), "ceil_div(seq_q, 64)");
  EXPECT_EQ(v.params.size(), 29u);
  EXPECT_EQ(v.params[5].source.kind, ParamSource::InputPtr);
  EXPECT_EQ(v.params.back().source.kind, ParamSource::InputDim);
  EXPECT_EQ(v.configSummary(), "block_m=64 block_n=64 warps=4 stages=2");
  EXPECT_TRUE(v.ptxas);
  EXPECT_EQ(v.ptxas->registers, 168);
  EXPECT_EQ(m.variants[2].archCapability, 90);
  EXPECT_TRUE(m.variants[2].archExact);
}

TEST(Manifest, OptionalAndUnknownKeys) {
  Json doc = baseline();
  removeAt(doc, "/q_offset");
  removeAt(doc, "/kv_offset");
  removeAt(doc, "/alignment");
  removeAt(doc, "/variants/0/ptxas");
  doc.set("compile_notes", "ignored");
  at(doc, "/variants/1").set("compile_seconds", 1.5);
  setAt(doc, "/variants/1/cubin", "sm80_bm128.cubin");
  Manifest m = parseManifest(doc);
  EXPECT_FALSE(m.qOffset);
  EXPECT_EQ(m.alignment, 0);
  EXPECT_FALSE(m.variants[0].ptxas);
  EXPECT_EQ(*m.variants[1].cubin, "sm80_bm128.cubin");
  setAt(doc, "/q_offset", Json(int64_t(-7)));
  EXPECT_EQ(*parseManifest(doc).qOffset, -7);
}

TEST(Manifest, MissingKeysNameTheirPath) {
  for (const char *key : {"/format", "/compiler_version", "/spec_name", "/spec_hash", "/spec",
                          "/heads_q", "/heads_kv", "/head_dim", "/head_dim_v", "/dtype", "/align",
                          "/outputs", "/inputs", "/variants", "/inputs/1/shape",
                          "/variants/2/grid/x", "/variants/1/params", "/variants/0/kernel",
                          "/variants/0/threads", "/variants/0/smem_bytes", "/variants/0/default",
                          "/variants/0/config", "/variants/0/ptx", "/variants/0/arch",
                          "/variants/1/params/3/type", "/variants/0/ptxas/registers"})
    EXPECT_EQ(errorWithout(key), std::string("manifest.json: ") + key + ": missing");
}

TEST(Manifest, IllTypedKeysNameTheirPath) {
  EXPECT_EQ(errorWith("/variants/2/grid/x", 64), "manifest.json: /variants/2/grid/x: expected a string");
  EXPECT_EQ(errorWith("/heads_q", "8"), "manifest.json: /heads_q: expected an integer");
  EXPECT_EQ(errorWith("/heads_q", 8.0), "manifest.json: /heads_q: expected an integer");
  EXPECT_EQ(errorWith("/heads_q", 0), "manifest.json: /heads_q: expected an integer >= 1, got 0");
  EXPECT_EQ(errorWith("/variants", Json::object()), "manifest.json: /variants: expected an array");
  EXPECT_EQ(errorWith("/variants/0/config", Json::array()),
            "manifest.json: /variants/0/config: expected an object");
  EXPECT_EQ(errorWith("/variants/0/default", 1),
            "manifest.json: /variants/0/default: expected true or false");
  EXPECT_EQ(errorWith("/q_offset", "3"), "manifest.json: /q_offset: expected an integer");
  EXPECT_EQ(errorWith("/spec", "x"), "manifest.json: /spec: expected an object");
  EXPECT_EQ(errorWith("/variants/0/cubin", 3), "manifest.json: /variants/0/cubin: expected a string");
  EXPECT_EQ(errorWith("/variants/0/ptxas/registers", "many"),
            "manifest.json: /variants/0/ptxas/registers: expected an integer");
  EXPECT_EQ(errorWith("/inputs/0", "doc"), "manifest.json: /inputs/0: expected an object");
  EXPECT_EQ(errorWith("/variants/0/params/0", "q"),
            "manifest.json: /variants/0/params/0: expected an object");
  EXPECT_EQ(errorOf(Json::array()), "manifest.json: /: expected a JSON object");
}

TEST(Manifest, BadValues) {
  EXPECT_EQ(errorWith("/format", "attune-bundle/2"),
            "manifest.json: /format: unsupported bundle format \"attune-bundle/2\" (this runtime "
            "reads \"attune-bundle/1\")");
  EXPECT_EQ(errorWith("/spec_hash", "ABC"), "manifest.json: /spec_hash: expected 64 lower-case hex characters");
  EXPECT_EQ(errorWith("/heads_kv", 3),
            "manifest.json: /heads_kv: heads_q (8) is not a multiple of heads_kv (3)");
  EXPECT_EQ(errorWith("/dtype", "f64"),
            "manifest.json: /dtype: expected \"bf16\", \"fp16\" or \"f32\", got \"f64\"");
  EXPECT_EQ(errorWith("/dtype", "i32"),
            "manifest.json: /dtype: expected \"bf16\", \"fp16\" or \"f32\", got \"i32\"");
  EXPECT_EQ(errorWith("/align", "center"),
            "manifest.json: /align: expected \"bottom_right\" or \"top_left\", got \"center\"");
  EXPECT_EQ(errorWith("/outputs/1", "attn"),
            "manifest.json: /outputs/1: unknown output \"attn\" (expected \"o\" or \"lse\")");
  EXPECT_EQ(errorWith("/outputs", Json::parse("[\"lse\"]")),
            "manifest.json: /outputs: expected \"o\" among the outputs");
  EXPECT_EQ(errorWith("/alignment", 12), "manifest.json: /alignment: expected a power of two, got 12");
  EXPECT_EQ(errorWith("/variants", Json::array()), "manifest.json: /variants: the bundle has no variants");
}

TEST(Manifest, BadInputs) {
  EXPECT_EQ(errorWith("/inputs/1/shape/1", 0),
            "manifest.json: /inputs/1/shape/1: expected an integer >= 1, got 0");
  EXPECT_EQ(errorWith("/inputs/1/shape/1", "1x"),
            "manifest.json: /inputs/1/shape/1: expected a size symbol (an identifier), got '1x'");
  EXPECT_EQ(errorWith("/inputs/1/shape/1", 1.5),
            "manifest.json: /inputs/1/shape/1: expected a positive integer or a size symbol");
  EXPECT_EQ(errorWith("/inputs/1/shape", Json::array()),
            "manifest.json: /inputs/1/shape: expected 1 to 8 dimensions, got 0");
  EXPECT_EQ(errorWith("/inputs/1/name", "doc"), "manifest.json: /inputs/1/name: duplicate input 'doc'");
  EXPECT_EQ(errorWith("/inputs/1/name", "a-b"),
            "manifest.json: /inputs/1/name: expected an identifier, got 'a-b'");
  EXPECT_EQ(errorWith("/inputs/1/dtype", "u8"),
            "manifest.json: /inputs/1/dtype: expected \"i32\", \"f32\", \"bf16\" or \"fp16\", got \"u8\"");
}

TEST(Manifest, BadVariants) {
  EXPECT_EQ(errorWith("/variants/1/name", "sm80_bm64"),
            "manifest.json: /variants/1/name: duplicate variant name 'sm80_bm64'");
  EXPECT_EQ(errorWith("/variants/1/default", true),
            "manifest.json: /variants/1/default: a second default variant for sm_80 (the first is "
            "'sm80_bm64')");
  EXPECT_EQ(errorWith("/variants/0/arch", "sm80"),
            "manifest.json: /variants/0/arch: expected an architecture like \"sm_80\" or "
            "\"sm_90a\", got \"sm80\"");
  EXPECT_EQ(errorWith("/variants/0/arch", "sm_90x"),
            "manifest.json: /variants/0/arch: expected an architecture like \"sm_80\" or "
            "\"sm_90a\", got \"sm_90x\"");
  EXPECT_EQ(errorWith("/variants/0/ptx", "../x.ptx"),
            "manifest.json: /variants/0/ptx: expected a file name inside the bundle, got '../x.ptx'");
  EXPECT_EQ(errorWith("/variants/0/threads", 2048),
            "manifest.json: /variants/0/threads: expected at most 1024 threads, got 2048");
  EXPECT_EQ(errorWith("/variants/0/smem_bytes", -1),
            "manifest.json: /variants/0/smem_bytes: expected an integer >= 0, got -1");
  EXPECT_EQ(errorWith("/variants/0/kernel", ""),
            "manifest.json: /variants/0/kernel: expected the kernel's entry symbol, got \"\"");
}

TEST(Manifest, BadGridExpressions) {
  EXPECT_EQ(errorWith("/variants/0/grid/x", "ceil_div(seq_q,"),
            "manifest.json: /variants/0/grid/x: expression 'ceil_div(seq_q,': column 16: expected "
            "an operand at the end");
  EXPECT_EQ(errorWith("/variants/0/grid/y", "heads"),
            "manifest.json: /variants/0/grid/y: expression 'heads' uses unknown name 'heads' "
            "(known: batch, seq_q, seq_kv, heads_q, heads_kv, head_dim, head_dim_v, num_splits, Nv)");
  // Free symbols of the inputs are allowed.
  EXPECT_EQ(errorWith("/variants/0/grid/z", "batch * Nv"), "");
}

TEST(Manifest, BadParams) {
  auto param = [](const char *name, const char *type) {
    Json p = Json::object();
    p.set("name", name);
    p.set("type", type);
    return p;
  };
  EXPECT_EQ(errorWith("/variants/0/params/0", param("query", "ptr")),
            "manifest.json: /variants/0/params/0: parameter 'query' (ptr): unknown parameter "
            "(docs/bundle-and-abi.md section 2 lists the names)");
  EXPECT_EQ(errorWith("/variants/0/params/0", param("q", "i64")),
            "manifest.json: /variants/0/params/0: parameter 'q' (i64): a tensor parameter must have "
            "type ptr");
  EXPECT_EQ(errorWith("/variants/0/params/8", param("batch", "ptr")),
            "manifest.json: /variants/0/params/8: parameter 'batch' (ptr): an integer parameter "
            "must have type i64 or i32");
  EXPECT_EQ(errorWith("/variants/0/params/8", param("batch", "f32")),
            "manifest.json: /variants/0/params/8: parameter 'batch' (f32): an integer parameter "
            "must have type i64 or i32");
  EXPECT_EQ(errorWith("/variants/0/params/8", param("batch", "u8")),
            "manifest.json: /variants/0/params/8/type: expected \"ptr\", \"i64\", \"i32\" or "
            "\"f32\", got \"u8\"");
  EXPECT_EQ(errorWith("/variants/0/params/5", param("input:nope", "ptr")),
            "manifest.json: /variants/0/params/5: parameter 'input:nope' (ptr): names no declared "
            "input 'nope'");
  EXPECT_EQ(errorWith("/variants/0/params/27", param("input:idx:dim2", "i32")),
            "manifest.json: /variants/0/params/27: parameter 'input:idx:dim2' (i32): input 'idx' "
            "has 2 dimensions");
  EXPECT_EQ(errorWith("/variants/0/params/27", param("input:idx:d1", "i32")),
            "manifest.json: /variants/0/params/27: parameter 'input:idx:d1' (i32): expected "
            "input:<name>:dim<k>");
  EXPECT_EQ(errorWith("/variants/0/params/27", param("scratch:buf", "ptr")),
            "manifest.json: /variants/0/params/27: parameter 'scratch:buf' (ptr): the variant "
            "declares no scratch buffers (split_kv.scratch)");
  EXPECT_EQ(errorWith("/variants/0/params/1", param("q", "ptr")),
            "manifest.json: /variants/0/params/1/name: duplicate parameter 'q'");
}

TEST(Manifest, LoadReportsSyntaxErrorsWithPositions) {
  TempDir dir;
  writeFile(dir.path() + "/manifest.json", "{\n  \"format\": \"attune-bundle/1\",\n  oops\n}\n");
  try {
    loadManifest(dir.path());
    FAIL() << "expected an error";
  } catch (const ManifestError &e) {
    EXPECT_EQ(std::string(e.what()),
              dir.path() + "/manifest.json: line 3, column 3: expected a string key, got 'o'");
  }
  try {
    loadManifest(dir.path() + "/nope");
    FAIL() << "expected an error";
  } catch (const ManifestError &e) {
    EXPECT_EQ(std::string(e.what()), dir.path() + "/nope/manifest.json: cannot read (is '" +
                                         dir.path() + "/nope' a kernel bundle directory?)");
  }
  writeTestBundle(dir.path());
  EXPECT_EQ(loadManifest(dir.path()).variants.size(), 3u);
}

TEST(Manifest, SpecHashMustBeTheHashOfTheSpec) {
  Json base = baseline();
  EXPECT_EQ(specHashOf(*base.find("spec")),
            "c3c0e701615033f4e3b3dd010efe62e12efe8fe97dffc601227777a46b2df0b1");
  std::string zeros(64, '0');
  EXPECT_EQ(errorWith("/spec_hash", zeros),
            "manifest.json: /spec_hash: \"" + zeros + "\" is not the hash of /spec (its canonical "
            "JSON hashes to \"c3c0e701615033f4e3b3dd010efe62e12efe8fe97dffc601227777a46b2df0b1\"): "
            "the manifest was edited, or written by a compiler whose spec hash differs from this "
            "runtime's");
  // The spec edited, the hash left alone.
  std::string edited = errorWith("/spec/name", "other-spec");
  EXPECT_EQ(edited.rfind("manifest.json: /spec_hash: \"c3c0e701", 0), 0u) << edited;
  // Key order and white space do not matter: the hash is of the canonical form.
  Json doc = baseline();
  Json spec = Json::object();
  spec.set("heads_q", int64_t(8));
  spec.set("name", "test-spec");
  setAt(doc, "/spec", spec);
  Json reordered = Json::object();
  reordered.set("name", "test-spec");
  reordered.set("heads_q", int64_t(8));
  setAt(doc, "/spec_hash", specHashOf(reordered));
  EXPECT_EQ(errorOf(doc), "");
}

TEST(Manifest, EveryArchitectureNeedsADefault) {
  EXPECT_EQ(errorWith("/variants/2/default", false),
            "manifest.json: /variants: no default variant for sm_90a (one variant of each "
            "architecture must have \"default\": true; 'sm90a_bm128' is the first of sm_90a)");
  EXPECT_EQ(errorWith("/variants/0/default", false),
            "manifest.json: /variants: no default variant for sm_80 (one variant of each "
            "architecture must have \"default\": true; 'sm80_bm64' is the first of sm_80)");
  // The default need not be the first of its architecture.
  Json doc = baseline();
  setAt(doc, "/variants/0/default", false);
  setAt(doc, "/variants/1/default", true);
  EXPECT_EQ(errorOf(doc), "");
}

TEST(Manifest, SizesAreBounded) {
  EXPECT_EQ(errorWith("/heads_q", 8192), "manifest.json: /heads_q: expected at most 4096, got 8192");
  EXPECT_EQ(errorWith("/heads_kv", int64_t(1) << 40),
            "manifest.json: /heads_kv: expected at most 4096, got 1099511627776");
  EXPECT_EQ(errorWith("/head_dim", 1024), "manifest.json: /head_dim: expected at most 512, got 1024");
  EXPECT_EQ(errorWith("/head_dim_v", 513), "manifest.json: /head_dim_v: expected at most 512, got 513");
  EXPECT_EQ(errorWith("/variants/0/smem_bytes", int64_t(1) << 31),
            "manifest.json: /variants/0/smem_bytes: expected at most 2147483647 bytes, got "
            "2147483648");
  EXPECT_EQ(errorWith("/variants/1/ptxas/smem_static", INT64_MAX),
            "manifest.json: /variants/1/ptxas/smem_static: expected at most 2147483647 bytes, got "
            "9223372036854775807");
  Json p = Json::object();
  p.set("name", "input:idx:dim99999999999999999999");
  p.set("type", "i32");
  EXPECT_EQ(errorWith("/variants/0/params/27", p),
            "manifest.json: /variants/0/params/27: parameter 'input:idx:dim99999999999999999999' "
            "(i32): input 'idx' has 2 dimensions");
  p.set("name", "input:idx:dim00001");
  EXPECT_EQ(errorWith("/variants/0/params/27", p),
            "manifest.json: /variants/0/params/27: parameter 'input:idx:dim00001' (i32): input "
            "'idx' has 2 dimensions");
}

TEST(Manifest, GridWithAConstantZeroDivisor) {
  EXPECT_EQ(errorWith("/variants/0/grid/x", "seq_q / 0"),
            "manifest.json: /variants/0/grid/x: expression 'seq_q / 0': column 9: division by the "
            "constant 0 in /");
  EXPECT_EQ(errorWith("/variants/1/grid/y", "ceil_div(heads_q, 4 - 4)"),
            "manifest.json: /variants/1/grid/y: expression 'ceil_div(heads_q, 4 - 4)': column 19: "
            "division by the constant 0 in ceil_div");
}

TEST(Manifest, LoadRefusesMissingFiles) {
  TempDir dir;
  writeTestBundle(dir.path());
  std::string manifest = dir.path() + "/manifest.json";
  auto loadError = [&]() -> std::string {
    try {
      loadManifest(dir.path());
      return "";
    } catch (const ManifestError &e) {
      return e.what();
    }
  };
  EXPECT_EQ(loadError(), "");
  std::remove((dir.path() + "/sm80_bm128.ptx").c_str());
  EXPECT_EQ(loadError(), manifest + ": /variants/1/ptx: variant 'sm80_bm128': " + dir.path() +
                             "/sm80_bm128.ptx: No such file or directory");
  writeFile(dir.path() + "/sm80_bm128.ptx", "// back\n");
  Json doc = baseline();
  setAt(doc, "/variants/2/cubin", "sm90a_bm128.cubin");
  writeFile(manifest, doc.dump());
  EXPECT_EQ(loadError(), manifest + ": /variants/2/cubin: variant 'sm90a_bm128': " + dir.path() +
                             "/sm90a_bm128.cubin: No such file or directory");
  ASSERT_EQ(::mkdir((dir.path() + "/sm90a_bm128.cubin").c_str(), 0755), 0);
  EXPECT_EQ(loadError(), manifest + ": /variants/2/cubin: variant 'sm90a_bm128': " + dir.path() +
                             "/sm90a_bm128.cubin is not a regular file");
}

TEST(Manifest, LoadRefusesHugeOrOddManifests) {
  TempDir dir;
  writeTestBundle(dir.path());
  std::string manifest = dir.path() + "/manifest.json";
  // Sparse: no disk is written, and the reader must not read it.
  ASSERT_EQ(::truncate(manifest.c_str(), off_t(kMaxManifestBytes) + 1), 0);
  try {
    loadManifest(dir.path());
    FAIL() << "expected an error";
  } catch (const ManifestError &e) {
    EXPECT_EQ(std::string(e.what()), manifest + ": 67108865 bytes is too large for a manifest "
                                                "(at most 67108864)");
  }
  std::remove(manifest.c_str());
  ASSERT_EQ(::mkdir(manifest.c_str(), 0755), 0);
  try {
    loadManifest(dir.path());
    FAIL() << "expected an error";
  } catch (const ManifestError &e) {
    EXPECT_EQ(std::string(e.what()), manifest + ": not a regular file");
  }
}

TEST(Manifest, ArchCompatibility) {
  int cc;
  bool exact;
  ASSERT_TRUE(parseArch("sm_80", cc, exact));
  EXPECT_EQ(cc, 80);
  EXPECT_FALSE(exact);
  ASSERT_TRUE(parseArch("sm_90a", cc, exact));
  EXPECT_EQ(cc, 90);
  EXPECT_TRUE(exact);
  ASSERT_TRUE(parseArch("sm_100a", cc, exact));
  EXPECT_EQ(cc, 100);
  EXPECT_FALSE(parseArch("compute_80", cc, exact));
  EXPECT_FALSE(parseArch("sm_", cc, exact));
  EXPECT_FALSE(parseArch("sm_8", cc, exact));

  Variant sm80, sm90a;
  parseArch("sm_80", sm80.archCapability, sm80.archExact);
  parseArch("sm_90a", sm90a.archCapability, sm90a.archExact);
  EXPECT_TRUE(archRunsOn(sm80, 8, 0));
  EXPECT_TRUE(archRunsOn(sm80, 8, 6));
  EXPECT_TRUE(archRunsOn(sm80, 9, 0));
  EXPECT_TRUE(archRunsOn(sm80, 12, 0));
  EXPECT_FALSE(archRunsOn(sm80, 7, 5));
  EXPECT_TRUE(archRunsOn(sm90a, 9, 0));
  EXPECT_FALSE(archRunsOn(sm90a, 8, 9));
  EXPECT_FALSE(archRunsOn(sm90a, 10, 0));
}

TEST(Manifest, TheCopyTestBundleIsValid) {
  Manifest m = loadManifest(std::string(ATTUNE_RT_TEST_DATA) + "/copy_bundle");
  EXPECT_EQ(m.specName, "copy-test");
  EXPECT_EQ(m.variants.size(), 6u);
}

namespace {
/// The baseline's first variant made split-capable: num_splits and two scratch
/// pointers, grid z over the splits, and a combine kernel.
Json withSplitKv() {
  Json doc = baseline();
  Json &v = at(doc, "/variants/0");
  auto param = [](const char *name, const char *type) {
    Json p = Json::object();
    p.set("name", name);
    p.set("type", type);
    return p;
  };
  Json &params = at(doc, "/variants/0/params");
  params.push_back(param("num_splits", "i64"));
  params.push_back(param("scratch:o_partial", "ptr"));
  params.push_back(param("scratch:lse_partial", "ptr"));
  setAt(doc, "/variants/0/grid/z", "batch * num_splits");
  Json scratch = Json::object();
  scratch.set("o_partial", "num_splits * batch * heads_q * seq_q * head_dim_v * 4");
  scratch.set("lse_partial", "num_splits * batch * heads_q * seq_q * 4");
  Json combine = Json::object();
  combine.set("kernel", "attn_combine");
  combine.set("threads", int64_t(128));
  Json grid = Json::object();
  grid.set("x", "ceil_div(batch * heads_q * seq_q, 4)");
  grid.set("y", "1");
  grid.set("z", "1");
  combine.set("grid", grid);
  Json cparams = Json::array();
  for (const char *n : {"scratch:o_partial", "scratch:lse_partial", "o", "lse"})
    cparams.push_back(param(n, "ptr"));
  for (const char *n : {"batch", "seq_q", "num_splits", "o_stride_b", "o_stride_h", "o_stride_s"})
    cparams.push_back(param(n, "i64"));
  combine.set("params", cparams);
  Json split = Json::object();
  split.set("scratch", scratch);
  split.set("combine", combine);
  v.set("split_kv", split);
  return doc;
}
} // namespace

TEST(Manifest, SplitKv) {
  Manifest m = parseManifest(withSplitKv());
  const Variant &v = m.variants[0];
  ASSERT_TRUE(v.splitKv.has_value());
  EXPECT_FALSE(m.variants[1].splitKv.has_value());
  EXPECT_EQ(v.splitKv->kernel, "attn_combine");
  EXPECT_EQ(v.splitKv->threads, 128);
  ASSERT_EQ(v.splitKv->scratchNames.size(), 2u);
  EXPECT_EQ(v.splitKv->scratchNames[1], "lse_partial");
  EXPECT_EQ(v.splitKv->scratchBytes[0].eval({{"num_splits", 3}, {"batch", 2}, {"heads_q", 8},
                                             {"seq_q", 5}, {"head_dim_v", 64}}),
            3 * 2 * 8 * 5 * 64 * 4);
  const Param &last = v.params.back();
  EXPECT_EQ(last.source.kind, ParamSource::Scratch);
  EXPECT_EQ(last.source.input, 1);
  EXPECT_EQ(v.splitKv->params[0].source.kind, ParamSource::Scratch);
  EXPECT_EQ(v.splitKv->params[6].source.kind, ParamSource::Size); // num_splits
}

TEST(Manifest, BadSplitKv) {
  auto with = [](const std::string &pointer, Json value) {
    Json doc = withSplitKv();
    setAt(doc, pointer, std::move(value));
    return errorOf(doc);
  };
  auto without = [](const std::string &pointer) {
    Json doc = withSplitKv();
    removeAt(doc, pointer);
    return errorOf(doc);
  };
  EXPECT_EQ(with("/variants/0/split_kv/scratch/o_partial", "num_splits * rows"),
            "manifest.json: /variants/0/split_kv/scratch/o_partial: expression 'num_splits * "
            "rows' uses unknown name 'rows' (known: batch, seq_q, seq_kv, heads_q, heads_kv, "
            "head_dim, head_dim_v, num_splits, Nv)");
  EXPECT_EQ(with("/variants/0/split_kv/scratch/o_partial", int64_t(4)),
            "manifest.json: /variants/0/split_kv/scratch/o_partial: expected a byte-size "
            "expression");
  EXPECT_EQ(with("/variants/0/split_kv/combine/kernel", ""),
            "manifest.json: /variants/0/split_kv/combine/kernel: expected the combine kernel's "
            "entry symbol, got \"\"");
  EXPECT_EQ(without("/variants/0/split_kv/combine/grid"),
            "manifest.json: /variants/0/split_kv/combine/grid: missing");
  Json bad = Json::object();
  bad.set("name", "scratch:nope");
  bad.set("type", "ptr");
  EXPECT_EQ(with("/variants/0/split_kv/combine/params/0", bad),
            "manifest.json: /variants/0/split_kv/combine/params/0: parameter 'scratch:nope' "
            "(ptr): names no scratch buffer of split_kv.scratch");
  EXPECT_EQ(with("/variants/0/split_kv", "yes"),
            "manifest.json: /variants/0/split_kv: expected an object");
}

TEST(Manifest, PtxasWarnings) {
  Json doc = baseline();
  EXPECT_TRUE(parseManifest(doc).variants[0].ptxasWarnings.empty()); // optional
  Json list = Json::array();
  list.push_back(Json("(C7511) Potential Performance Loss: wgmma.mma_async instructions are serialized"));
  setAt(doc, "/variants/0/ptxas_warnings", list);
  Manifest m = parseManifest(doc);
  ASSERT_EQ(m.variants[0].ptxasWarnings.size(), 1u);
  EXPECT_NE(m.variants[0].ptxasWarnings[0].find("serialized"), std::string::npos);
  EXPECT_EQ(errorWith("/variants/0/ptxas_warnings", "none"),
            "manifest.json: /variants/0/ptxas_warnings: expected an array of strings");
  Json bad = Json::array();
  bad.push_back(Json(int64_t(3)));
  EXPECT_EQ(errorWith("/variants/0/ptxas_warnings", bad),
            "manifest.json: /variants/0/ptxas_warnings/0: expected a string");
}
