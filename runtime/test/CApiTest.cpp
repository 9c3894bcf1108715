//===- CApiTest.cpp - the C API through the shared library ----------------===//
#include "TestUtil.h"
#include "attune/runtime.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

using namespace attune::rt::test;

namespace {

bool driverPresent() {
  char buf[1024];
  return attn_device_info(0, buf, sizeof buf) == 0 ||
         std::string(attn_last_error()).find("no CUDA driver") == std::string::npos;
}

struct BundleHandle {
  attn_bundle *b = nullptr;
  ~BundleHandle() { attn_bundle_free(b); }
};

} // namespace

TEST(CApi, Version) { EXPECT_STREQ(attn_version(), ATTUNE_RT_EXPECTED_VERSION); }

TEST(CApi, LoadFailuresSayWhy) {
  attn_bundle *b = reinterpret_cast<attn_bundle *>(1);
  EXPECT_NE(attn_bundle_load("/nonexistent/bundle", &b), 0);
  EXPECT_EQ(b, nullptr);
  EXPECT_STREQ(attn_last_error(), "attn_bundle_load: /nonexistent/bundle/manifest.json: cannot read "
                                  "(is '/nonexistent/bundle' a kernel bundle directory?)");
  EXPECT_NE(attn_bundle_load(nullptr, &b), 0);
  EXPECT_STREQ(attn_last_error(), "attn_bundle_load: dir is NULL");
  EXPECT_NE(attn_bundle_load("/tmp", nullptr), 0);

  TempDir dir;
  writeFile(dir.path() + "/manifest.json", "{\"format\": \"attune-bundle/1\"}");
  EXPECT_NE(attn_bundle_load(dir.path().c_str(), &b), 0);
  EXPECT_EQ(std::string(attn_last_error()),
            "attn_bundle_load: " + dir.path() + "/manifest.json: /compiler_version: missing");

  // A file the manifest names is missing: refused at load, not at the first launch.
  writeTestBundle(dir.path());
  std::remove((dir.path() + "/sm90a_bm128.ptx").c_str());
  EXPECT_NE(attn_bundle_load(dir.path().c_str(), &b), 0);
  EXPECT_EQ(b, nullptr);
  EXPECT_EQ(std::string(attn_last_error()),
            "attn_bundle_load: " + dir.path() + "/manifest.json: /variants/2/ptx: variant "
            "'sm90a_bm128': " + dir.path() + "/sm90a_bm128.ptx: No such file or directory");
}

TEST(CApi, BundleIntrospection) {
  BundleHandle h;
  std::string dir = std::string(ATTUNE_RT_TEST_DATA) + "/copy_bundle";
  ASSERT_EQ(attn_bundle_load(dir.c_str(), &h.b), 0) << attn_last_error();
  EXPECT_EQ(attn_bundle_num_variants(h.b), 6);
  EXPECT_STREQ(attn_bundle_variant_name(h.b, 0), "copy_sm80_a");
  EXPECT_STREQ(attn_bundle_variant_name(h.b, 2), "copy_sm90a");
  EXPECT_EQ(attn_bundle_variant_name(h.b, 6), nullptr);
  EXPECT_EQ(attn_bundle_variant_name(h.b, -1), nullptr);
  EXPECT_EQ(attn_bundle_num_variants(nullptr), 0);
  std::string info = attn_bundle_info_json(h.b);
  EXPECT_NE(info.find("\"spec_name\":\"copy-test\""), std::string::npos) << info;
  EXPECT_NE(info.find("\"inputs\":[{\"name\":\"doc\",\"dtype\":\"i32\",\"shape\":[\"B\",\"Sq\"]}]"),
            std::string::npos)
      << info;
  EXPECT_NE(info.find("\"cubin\":\"copy_sm90a.cubin\""), std::string::npos) << info;
}

TEST(CApi, CheckAndLaunchRefuseBadArgumentsFirst) {
  TempDir dir;
  writeTestBundle(dir.path());
  BundleHandle h;
  ASSERT_EQ(attn_bundle_load(dir.path().c_str(), &h.b), 0) << attn_last_error();
  TestCall t;
  EXPECT_EQ(attn_check(h.b, &t.call), 0) << attn_last_error();
  t.inputs[0].dtype = ATTN_F32;
  t.sync();
  EXPECT_NE(attn_check(h.b, &t.call), 0);
  EXPECT_STREQ(attn_last_error(), "attn_check: input doc: expected dtype i32, got f32");
  EXPECT_NE(attn_launch(h.b, &t.call), 0);
  EXPECT_STREQ(attn_last_error(), "attn_launch: input doc: expected dtype i32, got f32");
  EXPECT_NE(attn_tune(h.b, &t.call, 3, 0), 0);
  EXPECT_STREQ(attn_last_error(), "attn_tune: input doc: expected dtype i32, got f32");
  EXPECT_NE(attn_launch(h.b, nullptr), 0);
  EXPECT_STREQ(attn_last_error(), "attn_launch: call is NULL");
  EXPECT_NE(attn_launch(nullptr, &t.call), 0);
  EXPECT_STREQ(attn_last_error(), "attn_launch: bundle is NULL");
}

TEST(CApi, WithoutADriverDeviceCallsSaySo) {
  if (driverPresent())
    GTEST_SKIP() << "a CUDA driver is present";
  char buf[256];
  EXPECT_NE(attn_device_info(0, buf, sizeof buf), 0);
  EXPECT_EQ(std::string(attn_last_error()).rfind(
                "attn_device_info: no CUDA driver: libcuda.so.1 could not be loaded: ", 0),
            0u)
      << attn_last_error();

  TempDir dir;
  writeTestBundle(dir.path());
  BundleHandle h;
  ASSERT_EQ(attn_bundle_load(dir.path().c_str(), &h.b), 0);
  TestCall t;
  EXPECT_NE(attn_launch(h.b, &t.call), 0);
  EXPECT_EQ(std::string(attn_last_error()).rfind("attn_launch: no CUDA driver: libcuda.so.1", 0), 0u)
      << attn_last_error();
  EXPECT_NE(attn_tune(h.b, &t.call, 3, 1), 0);
  EXPECT_EQ(std::string(attn_last_error()).rfind("attn_tune: no CUDA driver: libcuda.so.1", 0), 0u)
      << attn_last_error();
  EXPECT_EQ(attn_tuned_variant(h.b, &t.call, buf, sizeof buf), -1);
  EXPECT_NE(attn_select_variant(h.b, &t.call, buf, sizeof buf), 0);
  // An empty problem needs no device at all.
  t.call.q.shape[0] = t.call.k.shape[0] = t.call.v.shape[0] = t.call.o.shape[0] = 0;
  t.call.lse.data = nullptr;
  t.inputs[0].shape[0] = 0;
  t.sync();
  EXPECT_EQ(attn_launch(h.b, &t.call), 0) << attn_last_error();
}

TEST(CApi, SpecHashAndCanonicalJson) {
  char out[65];
  ASSERT_EQ(attn_spec_hash("{}", out), 0);
  EXPECT_STREQ(out, "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"); // sha256("{}")
  ASSERT_EQ(attn_spec_hash("{\"b\": 1.50, \"a\": [1e-5, \"\\u00e9\"]}", out), 0);
  EXPECT_STREQ(attn_canonical_json("{\"b\": 1.50, \"a\": [1e-5, \"\\u00e9\"]}"),
               "{\"a\":[1e-05,\"\xc3\xa9\"],\"b\":1.5}");
  EXPECT_NE(attn_spec_hash("{\"a\": }", out), 0);
  EXPECT_STREQ(attn_last_error(), "attn_spec_hash: line 1, column 7: unexpected '}' (expected a value)");
  EXPECT_NE(attn_spec_hash("{\"a\": 1, \"a\": 2}", out), 0);
  EXPECT_STREQ(attn_last_error(), "attn_spec_hash: line 1, column 10: duplicate key \"a\"");
  EXPECT_EQ(attn_canonical_json("[1,"), nullptr);
  EXPECT_NE(attn_spec_hash(nullptr, out), 0);
}

TEST(CApi, CacheKeyAndRoot) {
  char out[65];
  std::string h(64, '0');
  ASSERT_EQ(attn_bundle_cache_key(h.c_str(), "0.1.0", "sm_90a,sm_80", "64x64", out), 0);
  char again[65];
  ASSERT_EQ(attn_bundle_cache_key(h.c_str(), "0.1.0", "sm_80,sm_90a", "64x64", again), 0);
  EXPECT_STREQ(out, again);
  ASSERT_EQ(attn_bundle_cache_key(h.c_str(), "0.1.0", "sm_80,sm_90a", nullptr, again), 0);
  EXPECT_STRNE(out, again);
  EXPECT_NE(attn_bundle_cache_key(nullptr, "0.1.0", "sm_80", "64", out), 0);

  ScopedEnv env("ATTUNE_CACHE_DIR", "/some/where");
  char root[64];
  ASSERT_EQ(attn_cache_root(root, sizeof root), 0);
  EXPECT_STREQ(root, "/some/where");
  EXPECT_NE(attn_cache_root(root, 4), 0);
  EXPECT_STREQ(attn_last_error(), "attn_cache_root: buffer too small (12 bytes needed)");
}

TEST(CApi, LastErrorIsThreadLocal) {
  attn_bundle *b = nullptr;
  EXPECT_NE(attn_bundle_load("/nonexistent", &b), 0);
  std::string other = "unset";
  std::thread([&] { other = attn_last_error(); }).join();
  EXPECT_EQ(other, "");
  EXPECT_NE(std::string(attn_last_error()), "");
}
