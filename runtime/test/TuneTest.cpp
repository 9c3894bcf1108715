//===- TuneTest.cpp - the tuner's rule on a fake device (no GPU) ----------===//
//
// The copy test bundle (data/copy_bundle: o = q, lse = s + q_offset + doc[b, s]) on a
// Device that runs the copy kernel on the host, with per-variant breakage: the
// default variant runs first and is the reference; a candidate whose output differs
// is dropped (Disagrees, with the first differing element), NaN never passes, a fault
// ends the run on a device that cannot survive it and is reported on one that can.
//
//===----------------------------------------------------------------------===//
#include "Bundle.h"
#include "TestUtil.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

using namespace attune::rt;
using namespace attune::rt::test;

namespace {

uint16_t bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return uint16_t((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}
float fromBf16(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

/// Runs the copy kernel on host memory. `mode[variant]`: "wrong" (o's last element off
/// by one), "nan" (it is NaN), "lse" (lse's last element off by 0.5), "fault" (the
/// next synchronisation reports a fault), "refuse" (cannot be loaded).
class CopyDevice final : public Device {
public:
  std::map<std::string, std::string> mode;
  bool survives = false;
  int launches = 0;

  explicit CopyDevice(int major = 8) {
    info_.name = "fake copy device";
    info_.major = major;
    info_.minor = 0;
    info_.smCount = 108;
    info_.maxThreadsPerBlock = 1024;
    info_.maxSmemOptin = 227 * 1024;
    info_.l2Bytes = 0;
    info_.maxGrid[0] = 2147483647;
    info_.maxGrid[1] = info_.maxGrid[2] = 65535;
  }
  const cu::DeviceInfo &open(const CheckedCall &) override { return info_; }
  void checkMemory(const Manifest &, const CheckedCall &, const cu::DeviceInfo &,
                   const char *) override {}
  void prepare(const Manifest &m, const std::string &, int index,
               const cu::DeviceInfo &) override {
    const Variant &v = m.variants[size_t(index)];
    if (mode[v.name] == "refuse" || v.kernel != "attn_copy")
      throw cu::CudaError("variant " + v.name + ": no kernel '" + v.kernel + "'");
  }
  void launch(const Manifest &m, const Launch &l) override {
    ++launches;
    const Variant &v = m.variants[size_t(l.variant)];
    std::map<std::string, uint64_t> slot, bytes;
    for (size_t i = 0; i < l.params->size(); ++i) {
      slot[(*l.params)[i].name] = l.slots[i];
      bytes[(*l.params)[i].name] = l.bytes[i];
    }
    auto *q = reinterpret_cast<const uint16_t *>(uintptr_t(slot["q"]));
    auto *o = reinterpret_cast<uint16_t *>(uintptr_t(slot["o"]));
    auto *lse = reinterpret_cast<float *>(uintptr_t(slot["lse"]));
    auto *doc = reinterpret_cast<const int32_t *>(uintptr_t(slot["input:doc"]));
    int64_t hq = int32_t(slot["heads_q"]), sq = int64_t(slot["seq_q"]);
    int64_t qOff = int64_t(slot["q_offset"]);
    int64_t B = l.grid[2];
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < hq; ++h)
        for (int64_t s = 0; s < sq; ++s) {
          for (int64_t d = 0; d < 64; ++d)
            o[b * int64_t(slot["o_stride_b"]) + h * int64_t(slot["o_stride_h"]) +
              s * int64_t(slot["o_stride_s"]) + d] =
                q[b * int64_t(slot["q_stride_b"]) + h * int64_t(slot["q_stride_h"]) +
                  s * int64_t(slot["q_stride_s"]) + d];
          if (lse)
            lse[(b * hq + h) * sq + s] = float(s + qOff + doc[b * sq + s]);
        }
    // The extents the runtime computed are those of the tensors.
    lastOBytes = bytes["o"];
    const std::string &how = mode[v.name];
    size_t lastO = size_t(bytes["o"] / 2 - 1), lastLse = size_t(bytes["lse"] / 4 - 1);
    if (how == "wrong")
      o[lastO] = bf16(fromBf16(o[lastO]) + 1.0f);
    else if (how == "nan")
      o[lastO] = 0x7fc0;
    else if (how == "lse")
      lse[lastLse] += 0.5f;
    else if (how == "fault")
      fault_ = "an illegal memory access was encountered";
  }
  uint64_t allocScratch(size_t bytes, void *, const std::string &) override { return alloc(bytes); }
  void freeScratch(uint64_t p, void *) override { free(p); }
  uint64_t alloc(size_t bytes) override {
    buffers_.emplace_back(bytes);
    return uint64_t(uintptr_t(buffers_.back().data()));
  }
  void free(uint64_t) override {}
  void copy(uint64_t dst, uint64_t src, size_t n) override {
    std::memcpy(reinterpret_cast<void *>(uintptr_t(dst)), reinterpret_cast<void *>(uintptr_t(src)), n);
  }
  void download(void *dst, uint64_t src, size_t n) override {
    std::memcpy(dst, reinterpret_cast<void *>(uintptr_t(src)), n);
  }
  size_t freeMemory() override { return size_t(1) << 30; }
  std::string synchronize(void *) override {
    std::string f;
    f.swap(fault_);
    return f;
  }
  void synchronizeAll() override {}
  bool survivesFaults() const override { return survives; }
  bool hostAddressable() const override { return true; }
  int warmupRuns() const override { return 2; }
  std::vector<double> time(void *, int repeats, const std::function<void(int)> &run) override {
    std::vector<double> ms;
    for (int r = 0; r < repeats; ++r) {
      run(r);
      ms.push_back(1.0 + 0.1 * launches); // later variants "slower": deterministic
    }
    return ms;
  }
  uint64_t lastOBytes = 0;

private:
  cu::DeviceInfo info_;
  std::string fault_;
  std::vector<std::vector<uint8_t>> buffers_;
};

std::string copyBundleDir() { return std::string(ATTUNE_RT_TEST_DATA) + "/copy_bundle"; }

/// A copy-bundle call with B = 2, Hq = 4, Sq = 37, Skv = 40 on host memory.
struct CopyCall {
  std::vector<uint16_t> q, k, v, o;
  std::vector<float> lse;
  std::vector<int32_t> doc;
  std::vector<const char *> names{"doc"};
  std::vector<attn_tensor> inputs;
  attn_call call{};

  CopyCall() {
    std::mt19937 rng(7);
    std::normal_distribution<float> normal;
    q.resize(2 * 4 * 37 * 64);
    for (uint16_t &x : q)
      x = bf16(normal(rng));
    k.assign(2 * 2 * 40 * 64, 0);
    v.assign(2 * 2 * 40 * 64, 0);
    o.assign(q.size(), 0);
    lse.assign(2 * 4 * 37, 0);
    doc.resize(2 * 37);
    for (size_t i = 0; i < doc.size(); ++i)
      doc[i] = int32_t(i % 5);
    call.q = tensor(q.data(), ATTN_BF16, {2, 4, 37, 64});
    call.k = tensor(k.data(), ATTN_BF16, {2, 2, 40, 64});
    call.v = tensor(v.data(), ATTN_BF16, {2, 2, 40, 64});
    call.o = tensor(o.data(), ATTN_BF16, {2, 4, 37, 64});
    call.lse = tensor(lse.data(), ATTN_F32, {2, 4, 37});
    inputs.push_back(tensor(doc.data(), ATTN_I32, {2, 37}));
    call.num_inputs = 1;
    call.input_names = names.data();
    call.inputs = inputs.data();
  }
};

struct Tuned {
  CopyDevice *device;
  std::unique_ptr<Bundle> bundle;
};

Tuned makeBundle(int major = 8) {
  auto device = std::make_unique<CopyDevice>(major);
  CopyDevice *raw = device.get();
  return {raw, std::make_unique<Bundle>(loadManifest(copyBundleDir()), copyBundleDir(),
                                        std::move(device))};
}

const TuneResult &resultOf(const TuneReport &r, const std::string &name) {
  for (const TuneResult &x : r.results)
    if (x.variant == name)
      return x;
  throw std::runtime_error("no result for " + name);
}

TEST(Tune, DefaultFirstAndEveryAgreeingCandidateTimed) {
  Tuned t = makeBundle();
  CopyCall c;
  TuneReport r = t.bundle->measure(c.call, 3, false);
  ASSERT_FALSE(r.results.empty());
  EXPECT_EQ(r.defaultVariant, "copy_sm80_a");
  EXPECT_EQ(r.results.front().variant, "copy_sm80_a");
  EXPECT_EQ(resultOf(r, "copy_sm80_a").status, TuneResult::Timed);
  EXPECT_EQ(resultOf(r, "copy_sm80_b").status, TuneResult::Timed);
  EXPECT_EQ(resultOf(r, "copy_big_smem").status, TuneResult::Timed);
  EXPECT_EQ(resultOf(r, "copy_huge_smem").status, TuneResult::Rejected);
  EXPECT_NE(resultOf(r, "copy_huge_smem").why.find("shared memory"), std::string::npos);
  EXPECT_EQ(resultOf(r, "copy_bad_kernel").status, TuneResult::Rejected);
  // sm_90a does not run on 8.0: not a candidate at all.
  EXPECT_THROW(resultOf(r, "copy_sm90a"), std::runtime_error);
  EXPECT_EQ(t.device->lastOBytes, c.o.size() * 2);
}

TEST(Tune, TheDevicesDefaultIsTheReferenceEvenWhenNotFirstInTheManifest) {
  // On 9.0 the default is sm_90a's (copy_sm90a, third in the manifest).
  Tuned t = makeBundle(9);
  t.device->mode["copy_sm80_a"] = "wrong";
  CopyCall c;
  TuneReport r = t.bundle->measure(c.call, 1, false);
  EXPECT_EQ(r.defaultVariant, "copy_sm90a");
  ASSERT_FALSE(r.results.empty());
  EXPECT_EQ(r.results.front().variant, "copy_sm90a");
  EXPECT_EQ(resultOf(r, "copy_sm80_a").status, TuneResult::Disagrees);
  EXPECT_EQ(resultOf(r, "copy_sm80_b").status, TuneResult::Timed);
}

TEST(Tune, WrongCandidateIsDroppedWithTheElement) {
  Tuned t = makeBundle();
  t.device->mode["copy_sm80_b"] = "wrong";
  CopyCall c;
  TuneReport r = t.bundle->measure(c.call, 3, false);
  const TuneResult &b = resultOf(r, "copy_sm80_b");
  EXPECT_EQ(b.status, TuneResult::Disagrees);
  EXPECT_EQ(b.why.find("o[1, 3, 36, 63] = "), 0u) << b.why;
  EXPECT_NE(b.why.find("where the default variant gives"), std::string::npos);
  EXPECT_NE(r.results[size_t(r.best())].variant, "copy_sm80_b");
  TuningEntry e = r.entry();
  bool listed = false;
  for (const auto &[name, why] : e.rejected)
    listed |= name == "copy_sm80_b" && why.rfind("disagrees: o[1, 3, 36, 63]", 0) == 0;
  EXPECT_TRUE(listed);
  for (const auto &[name, ms] : e.candidates)
    EXPECT_NE(name, "copy_sm80_b");
  EXPECT_NE(tuneTable(r, t.bundle->manifest()).find("copy_sm80_b                    sm_80      "
                                                    "dropped, disagrees: o[1, 3, 36, 63]"),
            std::string::npos)
      << tuneTable(r, t.bundle->manifest());
}

TEST(Tune, NanAndLseDisagreementsAreDropped) {
  Tuned t = makeBundle();
  t.device->mode["copy_sm80_b"] = "nan";
  t.device->mode["copy_big_smem"] = "lse";
  CopyCall c;
  TuneReport r = t.bundle->measure(c.call, 1, false);
  EXPECT_EQ(resultOf(r, "copy_sm80_b").status, TuneResult::Disagrees);
  EXPECT_NE(resultOf(r, "copy_sm80_b").why.find("NaN never passes"), std::string::npos);
  EXPECT_EQ(resultOf(r, "copy_big_smem").status, TuneResult::Disagrees);
  EXPECT_EQ(resultOf(r, "copy_big_smem").why.find("lse[1, 3, 36] = "), 0u)
      << resultOf(r, "copy_big_smem").why;
}

TEST(Tune, TuneStoresOnlyAnAgreeingWinnerAndLeavesItsOutput) {
  TempDir cache;
  ScopedEnv env("ATTUNE_CACHE_DIR", cache.path().c_str());
  Tuned t = makeBundle();
  // copy_sm80_a (the default) is timed first, so it is the fastest on this device;
  // make the other agreeing ones wrong to check that the winner is never dropped one.
  t.device->mode["copy_sm80_b"] = "wrong";
  t.device->mode["copy_big_smem"] = "nan";
  CopyCall c;
  t.bundle->tune(c.call, 2, false);
  TuningDb db = TuningDb::atDefaultLocation();
  auto entries = db.entries();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].second.variant, "copy_sm80_a");
  EXPECT_EQ(entries[0].second.rejected.size(), 4u); // b, big_smem, huge_smem, bad_kernel
  EXPECT_EQ(c.o, c.q); // the winner's output
}

TEST(Tune, FaultEndsTheRunOnCudaLikeDevices) {
  Tuned t = makeBundle();
  t.device->mode["copy_sm80_b"] = "fault";
  CopyCall c;
  try {
    t.bundle->measure(c.call, 1, false);
    FAIL() << "no error";
  } catch (const cu::CudaError &e) {
    std::string what = e.what();
    EXPECT_NE(what.find("variant copy_sm80_b failed while running: an illegal memory access"),
              std::string::npos)
        << what;
    EXPECT_NE(what.find("no longer usable"), std::string::npos) << what;
  }
}

TEST(Tune, FaultIsReportedWhereTheDeviceSurvives) {
  Tuned t = makeBundle();
  t.device->survives = true;
  t.device->mode["copy_sm80_b"] = "fault";
  CopyCall c;
  TuneReport r = t.bundle->measure(c.call, 1, false);
  EXPECT_EQ(resultOf(r, "copy_sm80_b").status, TuneResult::Faulted);
  EXPECT_EQ(resultOf(r, "copy_big_smem").status, TuneResult::Timed); // the next one ran
}

TEST(Tune, DefaultThatCannotRunIsAnError) {
  Tuned t = makeBundle();
  t.device->survives = true;
  t.device->mode["copy_sm80_a"] = "fault";
  CopyCall c;
  try {
    t.bundle->measure(c.call, 1, false);
    FAIL() << "no error";
  } catch (const cu::CudaError &e) {
    EXPECT_NE(std::string(e.what()).find("the default variant copy_sm80_a failed while running"),
              std::string::npos)
        << e.what();
  }
  Tuned u = makeBundle();
  u.device->mode["copy_sm80_a"] = "refuse";
  EXPECT_THROW(u.bundle->measure(c.call, 1, false), cu::CudaError);
}

TEST(Tune, OnlyRestrictsTheCandidatesButTheDefaultStillRunsFirst) {
  Tuned t = makeBundle();
  t.device->mode["copy_sm80_b"] = "wrong";
  CopyCall c;
  TuneReport r = t.bundle->measure(c.call, 1, false, {"copy_sm80_b"});
  ASSERT_EQ(r.results.size(), 1u);
  EXPECT_EQ(r.results[0].status, TuneResult::Disagrees); // compared with the default's
  EXPECT_THROW(t.bundle->measure(c.call, 1, false, {"nope"}), ArgError);
}

TEST(Tune, AttuneTune0IgnoresTheTunedChoice) {
  TempDir cache;
  ScopedEnv env("ATTUNE_CACHE_DIR", cache.path().c_str());
  Tuned t = makeBundle();
  CopyCall c;
  TuningEntry e;
  e.variant = "copy_sm80_b";
  e.timeMs = 1;
  e.when = isoTimeNow();
  TuningDb::atDefaultLocation().store(t.bundle->tuningKeyOf(c.call), e);
  EXPECT_EQ(t.bundle->selected(c.call), "copy_sm80_b");
  ScopedEnv off("ATTUNE_TUNE", "0");
  EXPECT_TRUE(tuningDisabled());
  EXPECT_EQ(t.bundle->selected(c.call), "copy_sm80_a");
}

TEST(CompareOutput, Tolerance) {
  std::vector<uint16_t> ref(4), got(4);
  float r[] = {1.0f, -2.0f, 0.5f, 0.0f};
  for (int i = 0; i < 4; ++i)
    ref[size_t(i)] = got[size_t(i)] = bf16(r[i]);
  attn_tensor t = tensor(ref.data(), ATTN_BF16, {2, 2});
  auto cmp = [&] {
    return compareOutput("o", t, reinterpret_cast<const uint8_t *>(ref.data()),
                         reinterpret_cast<const uint8_t *>(got.data()));
  };
  EXPECT_EQ(cmp(), "");
  // Tolerance at [1, 1] (ref 0): (0 + 2) / 64 = 0.03125.
  got[3] = bf16(0.03f);
  EXPECT_EQ(cmp(), "");
  got[3] = bf16(0.035f);
  EXPECT_EQ(cmp().rfind("o[1, 1] = 0.0349", 0), 0u) << cmp();
  got[3] = 0x7fc0;
  EXPECT_NE(cmp().find("NaN never passes"), std::string::npos);
  ref[3] = 0x7fc0; // NaN does not even agree with NaN
  EXPECT_NE(cmp().find("NaN never passes"), std::string::npos);
}

TEST(CompareOutput, InfinitiesAgreeOnlyWithThemselves) {
  float ref[] = {-INFINITY, 3.0f}, got[] = {-INFINITY, 3.0f};
  attn_tensor t = tensor(ref, ATTN_F32, {2});
  auto cmp = [&] {
    return compareOutput("lse", t, reinterpret_cast<const uint8_t *>(ref),
                         reinterpret_cast<const uint8_t *>(got));
  };
  EXPECT_EQ(cmp(), "");
  got[0] = INFINITY;
  EXPECT_EQ(cmp().rfind("lse[0] = inf", 0), 0u) << cmp();
  got[0] = -1e30f;
  EXPECT_EQ(cmp().rfind("lse[0] = -1e+30", 0), 0u) << cmp();
}

TEST(CompareOutput, StridedTensorsAreComparedAtTheirElementsOnly) {
  // A [2, 2] view with row stride 3: the gap elements may hold anything.
  std::vector<float> ref = {1, 2, 99, 3, 4}, got = {1, 2, -7, 3, 4};
  attn_tensor t = tensor(ref.data(), ATTN_F32, {2, 2}, {3, 1});
  EXPECT_EQ(compareOutput("o", t, reinterpret_cast<const uint8_t *>(ref.data()),
                          reinterpret_cast<const uint8_t *>(got.data())),
            "");
  got[4] = 5;
  EXPECT_EQ(compareOutput("o", t, reinterpret_cast<const uint8_t *>(ref.data()),
                          reinterpret_cast<const uint8_t *>(got.data()))
                .rfind("o[1, 1] = 5", 0),
            0u);
}

} // namespace
