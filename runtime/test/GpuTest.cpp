//===- GpuTest.cpp - loading, packing, launching and tuning on a real GPU -===//
//
// Uses data/copy_bundle: a hand-written PTX kernel (o = q; lse = s + q_offset +
// doc[b, s]) with variants that run, one that needs too much shared memory, one whose
// kernel symbol does not exist and one that opts in to 64 KiB of dynamic shared
// memory. Exits 77 (ctest: skipped) where there is no driver or no device.
//
#include "Cuda.h"
#include "Json.h"
#include "TestUtil.h"
#include "attune/runtime.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <random>

using namespace attune::rt;
using namespace attune::rt::test;

namespace {

const std::string kBundle = std::string(ATTUNE_RT_TEST_DATA) + "/copy_bundle";

/// Device memory freed on scope exit.
struct DeviceBuffer {
  explicit DeviceBuffer(size_t bytes) : bytes(bytes) {
    cu::check(cu::driver().cuMemAlloc(&ptr, bytes), "cuMemAlloc");
    cu::check(cu::driver().cuMemsetD8(ptr, 0, bytes), "cuMemsetD8");
  }
  ~DeviceBuffer() { cu::driver().cuMemFree(ptr); }
  void *data() const { return reinterpret_cast<void *>(ptr); }
  template <typename T> void upload(const std::vector<T> &v) {
    cu::check(cu::driver().cuMemcpyHtoD(ptr, v.data(), v.size() * sizeof(T)), "cuMemcpyHtoD");
  }
  template <typename T> std::vector<T> download() const {
    std::vector<T> v(bytes / sizeof(T));
    cu::check(cu::driver().cuMemcpyDtoH(v.data(), ptr, bytes), "cuMemcpyDtoH");
    return v;
  }
  cu::CUdeviceptr ptr = 0;
  size_t bytes;
};

/// B = 2, Hq = 4, Hkv = 2, Sq = 37, Skv = 50, D = Dv = 64; q has padded rows
/// (stride_s = 80) to exercise strides.
struct Problem {
  static constexpr int64_t B = 2, Hq = 4, Hkv = 2, Sq = 37, Skv = 50, D = 64, Pad = 80;
  DeviceBuffer q{size_t(B * Hq * Sq * Pad * 2)}, k{size_t(B * Hkv * Skv * D * 2)},
      v{size_t(B * Hkv * Skv * D * 2)}, o{size_t(B * Hq * Sq * D * 2)}, lse{size_t(B * Hq * Sq * 4)},
      doc{size_t(B * Sq * 4)};
  std::vector<uint16_t> qHost;
  std::vector<int32_t> docHost;
  TestCall t;

  Problem() {
    std::mt19937 rng(1);
    qHost.resize(q.bytes / 2);
    for (auto &x : qHost)
      x = uint16_t(rng());
    docHost.resize(size_t(B * Sq));
    for (auto &x : docHost)
      x = int32_t(rng() % 1000);
    q.upload(qHost);
    doc.upload(docHost);
    t.call.q = tensor(q.data(), ATTN_BF16, {B, Hq, Sq, D}, {Hq * Sq * Pad, Sq * Pad, Pad, 1});
    t.call.k = tensor(k.data(), ATTN_BF16, {B, Hkv, Skv, D});
    t.call.v = tensor(v.data(), ATTN_BF16, {B, Hkv, Skv, D});
    t.call.o = tensor(o.data(), ATTN_BF16, {B, Hq, Sq, D});
    t.call.lse = tensor(lse.data(), ATTN_F32, {B, Hq, Sq});
    t.names = {"doc"};
    t.inputs = {tensor(doc.data(), ATTN_I32, {B, Sq})};
    t.sync();
  }

  /// o == q (where q has data) and lse == s + qOffset + doc[b, s].
  void expectResult(int64_t qOffset, bool withLse = true) {
    cu::check(cu::driver().cuCtxSynchronize(), "cuCtxSynchronize");
    std::vector<uint16_t> out = o.download<uint16_t>();
    std::vector<float> l = lse.download<float>();
    int bad = 0;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < Hq; ++h)
        for (int64_t s = 0; s < Sq; ++s) {
          for (int64_t d = 0; d < D; ++d)
            bad += out[size_t(((b * Hq + h) * Sq + s) * D + d)] !=
                   qHost[size_t(((b * Hq + h) * Sq + s) * Pad + d)];
          float want = withLse ? float(s + qOffset + docHost[size_t(b * Sq + s)]) : 0.0f;
          bad += l[size_t((b * Hq + h) * Sq + s)] != want;
        }
    EXPECT_EQ(bad, 0);
  }

  void clear() {
    cu::check(cu::driver().cuMemsetD8(o.ptr, 0, o.bytes), "cuMemsetD8");
    cu::check(cu::driver().cuMemsetD8(lse.ptr, 0, lse.bytes), "cuMemsetD8");
  }
};

struct BundleHandle {
  BundleHandle() {
    if (attn_bundle_load(kBundle.c_str(), &b) != 0)
      ADD_FAILURE() << attn_last_error();
  }
  ~BundleHandle() { attn_bundle_free(b); }
  attn_bundle *b = nullptr;
};

} // namespace

TEST(Gpu, LaunchDefaultVariant) {
  BundleHandle h;
  Problem p;
  ASSERT_EQ(attn_launch(h.b, &p.t.call), 0) << attn_last_error();
  p.expectResult(Problem::Skv - Problem::Sq); // bottom_right default
  char name[64];
  ASSERT_EQ(attn_select_variant(h.b, &p.t.call, name, sizeof name), 0) << attn_last_error();
  std::printf("default variant here: %s\n", name);
}

TEST(Gpu, ExplicitOffsetAndNoLse) {
  BundleHandle h;
  Problem p;
  p.t.call.has_q_offset = 1;
  p.t.call.q_offset = 1000;
  ASSERT_EQ(attn_launch(h.b, &p.t.call), 0) << attn_last_error();
  p.expectResult(1000);
  p.clear();
  p.t.call.lse.data = nullptr;
  ASSERT_EQ(attn_launch(h.b, &p.t.call), 0) << attn_last_error();
  p.expectResult(0, /*withLse=*/false);
}

TEST(Gpu, ForcedVariants) {
  BundleHandle h;
  Problem p;
  for (const char *name : {"copy_sm80_a", "copy_sm80_b", "copy_big_smem"}) {
    p.clear();
    p.t.call.variant = name;
    ASSERT_EQ(attn_launch(h.b, &p.t.call), 0) << name << ": " << attn_last_error();
    p.expectResult(Problem::Skv - Problem::Sq);
  }
  p.t.call.variant = "copy_huge_smem";
  EXPECT_NE(attn_launch(h.b, &p.t.call), 0);
  EXPECT_NE(std::string(attn_last_error()).find("needs 1048576 bytes of shared memory per block"),
            std::string::npos)
      << attn_last_error();
  p.t.call.variant = "copy_bad_kernel";
  EXPECT_NE(attn_launch(h.b, &p.t.call), 0);
  EXPECT_NE(std::string(attn_last_error()).find("no kernel 'no_such_kernel'"), std::string::npos)
      << attn_last_error();
}

TEST(Gpu, TuneStoresTheWinnerAndLaterLaunchesUseIt) {
  TempDir cache;
  ScopedEnv env("ATTUNE_CACHE_DIR", cache.path().c_str());
  BundleHandle h;
  Problem p;
  char name[64];
  EXPECT_EQ(attn_tuned_variant(h.b, &p.t.call, name, sizeof name), 0) << attn_last_error();
  ASSERT_EQ(attn_tune(h.b, &p.t.call, 10, /*verbose=*/1), 0) << attn_last_error();
  p.expectResult(Problem::Skv - Problem::Sq); // the winner's result is left in o / lse

  ASSERT_EQ(attn_tuned_variant(h.b, &p.t.call, name, sizeof name), 1) << attn_last_error();
  std::string winner = name;
  ASSERT_EQ(attn_select_variant(h.b, &p.t.call, name, sizeof name), 0);
  EXPECT_EQ(winner, name);

  Json db = Json::parse(readFile(cache.path() + "/tuning.json"));
  const Json &entries = *db.find("entries");
  ASSERT_EQ(entries.size(), 1u);
  const std::string &key = entries.members()[0].key;
  EXPECT_NE(key.find("|a911df9866fb1951239ef97ee5249607e763e999e1df679f1bd2f2c4baa1b8c6|b2-q64-kv64"),
            std::string::npos)
      << key;
  const Json &e = entries.members()[0].value;
  EXPECT_EQ(e.find("variant")->asString(), winner);
  const Json *rejected = e.find("rejected");
  ASSERT_TRUE(rejected);
  EXPECT_TRUE(rejected->contains("copy_huge_smem"));
  EXPECT_TRUE(rejected->contains("copy_bad_kernel"));
  EXPECT_GE(e.find("candidates")->size(), 3u);

  // A fresh bundle object (another process, say) finds the entry in the database.
  BundleHandle again;
  ASSERT_EQ(attn_tuned_variant(again.b, &p.t.call, name, sizeof name), 1) << attn_last_error();
  EXPECT_EQ(winner, name);
  p.clear();
  ASSERT_EQ(attn_launch(again.b, &p.t.call), 0) << attn_last_error();
  p.expectResult(Problem::Skv - Problem::Sq);
}

TEST(Gpu, HostMemoryIsRefusedBeforeTheLaunch) {
  BundleHandle h;
  Problem p;
  std::vector<uint16_t> host(p.q.bytes / 2 + 8);
  // 16-byte aligned, like the device buffer, so that only the kind of memory differs.
  auto *aligned = reinterpret_cast<uint16_t *>((reinterpret_cast<uintptr_t>(host.data()) + 15) &
                                               ~uintptr_t(15));
  p.t.call.k.data = aligned;
  EXPECT_NE(attn_launch(h.b, &p.t.call), 0);
  EXPECT_NE(std::string(attn_last_error()).find("attn_launch: k is not device memory"),
            std::string::npos)
      << attn_last_error();
  // The context is still usable: a correct launch afterwards works.
  p.t.call.k = tensor(p.k.data(), ATTN_BF16, {Problem::B, Problem::Hkv, Problem::Skv, Problem::D});
  ASSERT_EQ(attn_launch(h.b, &p.t.call), 0) << attn_last_error();
  p.expectResult(Problem::Skv - Problem::Sq);
}

TEST(Gpu, DeviceInfo) {
  char buf[1024];
  ASSERT_EQ(attn_device_info(0, buf, sizeof buf), 0) << attn_last_error();
  Json j = Json::parse(buf);
  EXPECT_GT(j.find("sm_count")->asInt(), 0);
  std::printf("%s\n", buf);
}

int main(int argc, char **argv) {
  const cu::Driver *d = nullptr;
  try {
    d = &cu::driver();
  } catch (const std::exception &e) {
    bool missing = std::string(e.what()).rfind("no CUDA driver", 0) == 0;
    std::printf("SKIPPED: %s\n  (%s)\n",
                missing ? "no CUDA driver (libcuda.so.1 not found)" : "CUDA driver unusable",
                e.what());
    return 77;
  }
  int count = 0;
  if (d->cuDeviceGetCount(&count) != cu::CUDA_SUCCESS || count == 0) {
    std::printf("SKIPPED: no CUDA device\n");
    return 77;
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
