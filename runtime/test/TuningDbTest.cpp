//===- TuningDbTest.cpp - cache roots, keys and the tuning database -------===//
#include "Sha256.h"
#include "TestUtil.h"
#include "TuningDb.h"

#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

using namespace attune::rt;
using namespace attune::rt::test;

TEST(TuningKeys, ShapeBuckets) {
  EXPECT_EQ(pow2Ceil(0), 0);
  EXPECT_EQ(pow2Ceil(1), 1);
  EXPECT_EQ(pow2Ceil(2), 2);
  EXPECT_EQ(pow2Ceil(3), 4);
  EXPECT_EQ(pow2Ceil(1000), 1024);
  EXPECT_EQ(pow2Ceil(1024), 1024);
  EXPECT_EQ(pow2Ceil(1025), 2048);
  EXPECT_EQ(shapeBucket(2, 1000, 1000), "b2-q1024-kv1024");
  EXPECT_EQ(shapeBucket(1, 1, 4097), "b1-q1-kv8192");
  EXPECT_EQ(shapeBucket(16, 513, 512), "b16-q1024-kv512");
}

TEST(TuningKeys, Key) {
  EXPECT_EQ(tuningKey("NVIDIA H100 80GB HBM3", 132, std::string(64, 'a'), "b2-q1024-kv1024"),
            "NVIDIA H100 80GB HBM3|sm132|" + std::string(64, 'a') + "|b2-q1024-kv1024");
}

TEST(TuningKeys, BundleCacheKey) {
  // The text `attnc compile --cache` hashes (tools/attnc/CmdCompile.cpp).
  std::string h(64, 'f');
  std::string configs = "128x64,64x64";
  std::string expected = sha256Hex(h + "\n0.1.0\nsm_80,sm_90a\n128x64,64x64");
  EXPECT_EQ(bundleCacheKey(h, "0.1.0", "sm_90a,sm_80", &configs), expected);
  EXPECT_EQ(bundleCacheKey(h, "0.1.0", "sm_80,,sm_90a,", &configs), expected);
  // Config order matters (the first config of each arch is the default).
  std::string swapped = "64x64,128x64";
  EXPECT_NE(bundleCacheKey(h, "0.1.0", "sm_80,sm_90a", &swapped), expected);
  EXPECT_NE(bundleCacheKey(h, "0.2.0", "sm_80,sm_90a", &configs), expected);
  EXPECT_EQ(bundleCacheKey(h, "0.1.0", "sm_90a,sm_80", nullptr),
            sha256Hex(h + "\n0.1.0\nsm_80,sm_90a\ndefault"));
}

TEST(CacheRoot, EnvironmentRules) {
  {
    ScopedEnv a("ATTUNE_CACHE_DIR", "/x/attune-cache"), b("XDG_CACHE_HOME", "/xdg"), c("HOME", "/home/u");
    EXPECT_EQ(cacheRoot(), "/x/attune-cache");
    EXPECT_EQ(bundleCacheRoot(), "/x/attune-cache/bundles");
  }
  {
    ScopedEnv a("ATTUNE_CACHE_DIR", ""), b("XDG_CACHE_HOME", "/xdg"), c("HOME", "/home/u");
    EXPECT_EQ(cacheRoot(), "/xdg/attune");
  }
  {
    ScopedEnv a("ATTUNE_CACHE_DIR", nullptr), b("XDG_CACHE_HOME", nullptr), c("HOME", "/home/u");
    EXPECT_EQ(cacheRoot(), "/home/u/.cache/attune");
    EXPECT_EQ(TuningDb::atDefaultLocation().path(), "/home/u/.cache/attune/tuning.json");
  }
  {
    ScopedEnv a("ATTUNE_CACHE_DIR", nullptr), b("XDG_CACHE_HOME", nullptr), c("HOME", nullptr);
    EXPECT_THROW(cacheRoot(), CacheError);
  }
}

namespace {

TuningEntry entry(const std::string &variant, double ms) {
  TuningEntry e;
  e.variant = variant;
  e.timeMs = ms;
  e.candidates = {{variant, ms}, {"other", ms * 2}};
  e.when = isoTimeNow();
  return e;
}

int countWithPrefix(const std::string &dir, const std::string &prefix) {
  int n = 0;
  for (const std::string &f : listDir(dir))
    n += f.compare(0, prefix.size(), prefix) == 0;
  return n;
}

} // namespace

TEST(TuningDb, StoreAndLookup) {
  TempDir dir;
  TuningDb db(dir.path() + "/nested/cache/tuning.json"); // directories are created
  EXPECT_FALSE(db.lookup("k1"));
  TuningEntry e = entry("v1", 0.25);
  e.rejected = {{"v9", "needs 300000 bytes of shared memory"}};
  db.store("k1", e);
  db.store("k2", entry("v2", 1.5));
  auto got = db.lookup("k1");
  ASSERT_TRUE(got);
  EXPECT_EQ(got->variant, "v1");
  EXPECT_DOUBLE_EQ(got->timeMs, 0.25);
  ASSERT_EQ(got->candidates.size(), 2u);
  EXPECT_EQ(got->candidates[1].first, "other");
  ASSERT_EQ(got->rejected.size(), 1u);
  EXPECT_EQ(got->rejected[0].second, "needs 300000 bytes of shared memory");
  EXPECT_EQ(got->when.size(), 20u); // 2025-01-31T12:34:56Z
  db.store("k1", entry("v3", 0.1)); // replaces
  EXPECT_EQ(db.lookup("k1")->variant, "v3");
  EXPECT_EQ(db.lookup("k2")->variant, "v2");
  EXPECT_EQ(db.entries().size(), 2u);

  // Pretty, human-readable JSON; no temporary files left behind.
  std::string text = readFile(db.path());
  EXPECT_EQ(text.compare(0, 40, "{\n  \"format\": \"attune-tuning/1\",\n  \"entr"), 0) << text;
  EXPECT_NE(text.find("\n      \"variant\": \"v3\",\n"), std::string::npos) << text;
  EXPECT_EQ(countWithPrefix(dir.path() + "/nested/cache", "tuning.json.tmp"), 0);
}

TEST(TuningDb, UnknownContentIsKept) {
  TempDir dir;
  std::string path = dir.path() + "/tuning.json";
  writeFile(path, R"({"format": "attune-tuning/1", "note": "mine",
    "entries": {"old": {"variant": "v0", "time_ms": 1, "extra": [1, 2]}, "odd": 42}})");
  TuningDb db(path);
  EXPECT_FALSE(db.lookup("odd")); // not an entry: ignored, not fatal
  db.store("new", entry("v1", 2));
  Json doc = Json::parse(readFile(path));
  EXPECT_EQ(doc.find("entries")->size(), 3u);
  EXPECT_EQ(doc.find("entries")->find("old")->find("extra")->size(), 2u);
  EXPECT_EQ(doc.find("entries")->find("odd")->asInt(), 42);
}

TEST(TuningDb, CorruptFileIsMovedAsideReportedOnceAndRebuilt) {
  TempDir dir;
  std::string path = dir.path() + "/tuning.json";
  writeFile(path, "{\"format\": \"attune-tuning/1\", \"entries\": {\"k\": ");
  TuningDb db(path);
  testing::internal::CaptureStderr();
  EXPECT_FALSE(db.lookup("k"));
  std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("attune: the tuning database " + path + " is corrupt (line 1, column "),
            std::string::npos)
      << err;
  EXPECT_NE(err.find("moved it aside to " + path + ".corrupt-"), std::string::npos) << err;
  EXPECT_FALSE(fileExists(path));
  EXPECT_EQ(countWithPrefix(dir.path(), "tuning.json.corrupt-"), 1);

  db.store("k", entry("v1", 1));
  EXPECT_EQ(db.lookup("k")->variant, "v1");

  // Corrupt again (valid JSON, wrong format): moved aside again, not reported twice.
  writeFile(path, "[1, 2, 3]");
  testing::internal::CaptureStderr();
  db.store("k2", entry("v2", 1));
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
  EXPECT_EQ(countWithPrefix(dir.path(), "tuning.json.corrupt-"), 2);
  EXPECT_FALSE(db.lookup("k"));
  EXPECT_EQ(db.lookup("k2")->variant, "v2");
}

// Two processes each insert 50 distinct entries while a third keeps reading: every
// entry survives, and no reader ever sees a file that does not parse.
TEST(TuningDb, ConcurrentWritersKeepEachOthersEntries) {
  TempDir dir;
  std::string path = dir.path() + "/tuning.json";
  auto writer = [&](int id) {
    TuningDb db(path);
    for (int i = 0; i < 50; ++i)
      db.store("writer" + std::to_string(id) + "-" + std::to_string(i), entry("v", i));
  };
  std::vector<pid_t> children;
  for (int id = 0; id < 2; ++id) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      try {
        writer(id);
      } catch (...) {
        _exit(1);
      }
      _exit(0);
    }
    children.push_back(pid);
  }
  pid_t reader = fork();
  ASSERT_GE(reader, 0);
  if (reader == 0) {
    // Reads the file directly (no lock), as a concurrent lookup would.
    for (int i = 0; i < 400; ++i) {
      std::string text = readFile(path);
      if (text.empty())
        continue; // not created yet
      try {
        Json::parse(text, false);
      } catch (...) {
        _exit(2);
      }
    }
    _exit(0);
  }
  children.push_back(reader);
  for (pid_t pid : children) {
    int status = 0;
    waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
  }
  TuningDb db(path);
  auto all = db.entries();
  EXPECT_EQ(all.size(), 100u);
  for (int id = 0; id < 2; ++id)
    for (int i = 0; i < 50; ++i)
      EXPECT_TRUE(db.lookup("writer" + std::to_string(id) + "-" + std::to_string(i)));
  EXPECT_EQ(countWithPrefix(dir.path(), "tuning.json.corrupt-"), 0);
  EXPECT_EQ(countWithPrefix(dir.path(), "tuning.json.tmp"), 0);
}

TEST(TuningDb, UnwritableLocationIsAClearError) {
  TempDir dir;
  writeFile(dir.path() + "/file", "x");
  TuningDb db(dir.path() + "/file/tuning.json");
  try {
    db.store("k", entry("v", 1));
    FAIL();
  } catch (const CacheError &e) {
    EXPECT_NE(std::string(e.what()).find("cannot create the directory " + dir.path() + "/file"),
              std::string::npos)
        << e.what();
  }
}

TEST(TuningDb, AHugeFileIsTreatedAsCorruptWithoutReadingIt) {
  TempDir dir;
  std::string path = dir.path() + "/tuning.json";
  writeFile(path, "{");
  // Sparse: nothing is written to disk.
  ASSERT_EQ(::truncate(path.c_str(), off_t(kMaxTuningDbBytes) + 1), 0);
  TuningDb db(path);
  testing::internal::CaptureStderr();
  EXPECT_FALSE(db.lookup("k"));
  std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("attune: the tuning database " + path +
                     " is corrupt (67108865 bytes, more than the 67108864 a tuning database may "
                     "have); moved it aside"),
            std::string::npos)
      << err;
  EXPECT_FALSE(fileExists(path));
  db.store("k", entry("v1", 1));
  EXPECT_EQ(db.lookup("k")->variant, "v1");
}

TEST(TuningDb, IllFormedEntriesAreIgnored) {
  TempDir dir;
  std::string path = dir.path() + "/tuning.json";
  writeFile(path, R"({"format": "attune-tuning/1", "entries": {
    "a": {"variant": 5}, "b": {"variant": ""}, "c": {"variant": ["x"]}, "d": [],
    "e": {"variant": "ok", "time_ms": "fast", "candidates": [1], "rejected": {"x": 1}}}})");
  TuningDb db(path);
  for (const char *k : {"a", "b", "c", "d"})
    EXPECT_FALSE(db.lookup(k)) << k;
  auto e = db.lookup("e");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->variant, "ok");
  EXPECT_EQ(e->timeMs, 0);
  EXPECT_TRUE(e->candidates.empty());
  EXPECT_TRUE(e->rejected.empty());
  EXPECT_EQ(db.entries().size(), 1u);
}
