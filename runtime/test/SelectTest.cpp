//===- SelectTest.cpp - variant selection ---------------------------------===//
#include "Args.h"
#include "Bundle.h"
#include "TestUtil.h"

#include <gtest/gtest.h>

using namespace attune::rt;
using namespace attune::rt::test;

namespace {

Manifest testManifest() { return parseManifest(Json::parse(testManifestText())); }

std::string pick(const Manifest &m, int major, int minor, const std::string &forced = "",
                 const std::string &tuned = "") {
  try {
    return m.variants[size_t(selectVariant(m, major, minor, forced, tuned, "attn_launch"))].name;
  } catch (const ArgError &e) {
    return std::string("error: ") + e.what();
  }
}

} // namespace

TEST(Select, DefaultOfTheNewestArchitectureThatRuns) {
  Manifest m = testManifest();
  EXPECT_EQ(pick(m, 8, 0), "sm80_bm64");
  EXPECT_EQ(pick(m, 8, 6), "sm80_bm64");
  EXPECT_EQ(pick(m, 8, 9), "sm80_bm64");
  EXPECT_EQ(pick(m, 9, 0), "sm90a_bm128"); // sm_90a needs exactly 9.0
  EXPECT_EQ(pick(m, 10, 0), "sm80_bm64");  // only the sm_80 PTX JITs forward
  EXPECT_EQ(pick(m, 7, 5), "error: attn_launch: no variant of this bundle runs on a device of "
                           "compute capability 7.5 (the bundle has sm_80, sm_90a); recompile it "
                           "with --arch sm_75 or an older architecture");
}

TEST(Select, WithoutADefaultTheFirstThatRuns) {
  Manifest m = testManifest();
  for (Variant &v : m.variants)
    v.isDefault = false;
  EXPECT_EQ(pick(m, 9, 0), "sm80_bm64");
  EXPECT_EQ(compatibleVariants(m, 9, 0), (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(compatibleVariants(m, 8, 0), (std::vector<int>{0, 1}));
}

TEST(Select, TunedChoiceWhenItRunsHere) {
  Manifest m = testManifest();
  EXPECT_EQ(pick(m, 8, 0, "", "sm80_bm128"), "sm80_bm128");
  EXPECT_EQ(pick(m, 8, 0, "", "sm90a_bm128"), "sm80_bm64"); // tuned elsewhere: ignored
  EXPECT_EQ(pick(m, 8, 0, "", "gone_variant"), "sm80_bm64"); // from an older bundle
}

TEST(Select, ForcedVariant) {
  Manifest m = testManifest();
  EXPECT_EQ(pick(m, 9, 0, "sm80_bm128", "sm80_bm64"), "sm80_bm128");
  EXPECT_EQ(pick(m, 8, 0, "nope"), "error: attn_launch: unknown variant 'nope' (the bundle has: "
                                   "sm80_bm64, sm80_bm128, sm90a_bm128)");
  EXPECT_EQ(pick(m, 8, 0, "sm90a_bm128"), "error: attn_launch: variant 'sm90a_bm128' is for sm_90a "
                                          "and does not run on a device of compute capability 8.0");
}

TEST(Select, CubinOnlyForTheExactCapability) {
  Manifest m = testManifest();
  m.variants[0].cubin = "sm80_bm64.cubin";
  EXPECT_TRUE(prefersCubin(m.variants[0], 8, 0));
  EXPECT_FALSE(prefersCubin(m.variants[0], 8, 6)); // PTX, JIT-compiled for 8.6
  EXPECT_FALSE(prefersCubin(m.variants[1], 8, 0)); // has no cubin
}

TEST(Select, ATunedVariantTheBundleDoesNotHaveIsIgnoredWithAWarning) {
  Manifest m = testManifest();
  testing::internal::CaptureStderr();
  EXPECT_EQ(checkTunedVariant(m, "/b", "GPU|sm132|h|b1-q1-kv1", "sm80_bm128", "/c/tuning.json"),
            "sm80_bm128");
  EXPECT_EQ(checkTunedVariant(m, "/b", "GPU|sm132|h|b1-q1-kv1", "", "/c/tuning.json"), "");
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
  testing::internal::CaptureStderr();
  EXPECT_EQ(checkTunedVariant(m, "/b", "GPU|sm132|h|b1-q1-kv1", "gone_variant", "/c/tuning.json"),
            "");
  EXPECT_EQ(testing::internal::GetCapturedStderr(),
            "attune: warning: the tuning database /c/tuning.json chose variant 'gone_variant' for "
            "\"GPU|sm132|h|b1-q1-kv1\", which the bundle /b does not have; ignoring it (the "
            "default variant runs; tune again to replace the entry)\n");
  // And what selection makes of the (cleared) choice: the default.
  EXPECT_EQ(pick(m, 8, 0, "", ""), "sm80_bm64");
}

TEST(Launch, EmptyCallsLaunchNothingAndSucceed) {
  // B = 0 or Sq = 0: nothing to compute, so no grid, no device, no driver: this passes
  // on machines without a GPU because launch returns before looking for one.
  TempDir dir;
  writeTestBundle(dir.path());
  Bundle bundle(dir.path());
  for (int dim : {0, 2}) {
    TestCall e;
    for (attn_tensor *t : {&e.call.q, &e.call.o, &e.call.lse})
      t->shape[dim] = 0;
    if (dim == 0) {
      e.call.k.shape[0] = e.call.v.shape[0] = 0;
      e.inputs[0].shape[0] = 0;
    } else {
      e.inputs[0].shape[1] = 0;
    }
    // An empty tensor needs no memory.
    e.call.q.data = e.call.o.data = e.call.lse.data = nullptr;
    e.inputs[0].data = nullptr;
    e.sync();
    EXPECT_TRUE(bundle.check(e.call, "attn_launch").empty);
    EXPECT_NO_THROW(bundle.launch(e.call)) << "dim " << dim;
    EXPECT_NO_THROW(bundle.tune(e.call, 3, false)) << "dim " << dim;
  }
}

TEST(Select, UntunedDecodingPrefersTheGqaPackedVariant) {
  Manifest m = testManifest();
  // Two more sm_80 variants: 64x64 packed, and a 16-row packed one.
  Variant packed = m.variants[0];
  packed.name = "sm80_bm64_g";
  packed.isDefault = false;
  packed.config = Json::parse(R"({"block_m": 64, "block_n": 64, "pack_gqa": true})");
  m.variants.push_back(packed);
  m.variants[0].config = Json::parse(R"({"block_m": 64, "block_n": 64, "pack_gqa": false})");
  int chosen = selectVariant(m, 8, 0, "", "", "attn_launch");
  ASSERT_EQ(m.variants[size_t(chosen)].name, "sm80_bm64");
  CheckedCall c;
  c.headsQ = 32;
  c.headsKv = 8;
  auto pickFor = [&](int64_t seqQ, bool perSequence) {
    c.perSequence = perSequence;
    c.seqQ = perSequence ? 4096 : seqQ; // a padded buffer's Sq vs the longest sequence
    c.maxSeqQ = seqQ;
    return m.variants[size_t(decodeVariant(m, chosen, c))].name;
  };
  EXPECT_EQ(pickFor(1, false), "sm80_bm64_g");   // decoding: 1 query x 4 heads
  EXPECT_EQ(pickFor(16, false), "sm80_bm64_g");  // 16 x 4 = 64 rows: still one CTA
  EXPECT_EQ(pickFor(17, false), "sm80_bm64");    // prefill: the default
  EXPECT_EQ(pickFor(3, true), "sm80_bm64_g");    // ragged: the longest sequence counts
  EXPECT_EQ(pickFor(100, true), "sm80_bm64");
  c.headsKv = 32; // no groups: nothing to pack
  EXPECT_EQ(pickFor(1, false), "sm80_bm64");
  // A packed choice stays; no packed variant of the arch: the choice stays.
  c.headsKv = 8;
  EXPECT_EQ(m.variants[size_t(decodeVariant(m, 3, c))].name, "sm80_bm64_g");
  int sm90 = selectVariant(m, 9, 0, "", "", "attn_launch");
  EXPECT_EQ(m.variants[size_t(decodeVariant(m, sm90, c))].name, m.variants[size_t(sm90)].name);
}
