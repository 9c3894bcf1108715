//===- rt_tuning_db.cpp - fuzz the tuning-database reader ------------------===//
//
// Input: the contents of tuning.json (seeds: small databases as the runtime writes
// them). The input is written to a private temporary directory; then what the runtime
// does with a database it finds in the cache: entries(), lookup() of a present and an
// absent key, and store() (read, merge, atomic rewrite). A file that does not parse is
// moved aside and replaced by an empty database: never an exception or a crash.
// Invariant: after store(), lookup() of the stored key finds the stored variant.
//
//===----------------------------------------------------------------------===//
#include "FuzzSupport.h"

#include "TuningDb.h"

#include <cstdint>
#include <cstdio>
#include <dirent.h>
#include <string>
#include <unistd.h>

using namespace attune::rt;

static const std::string &workDir() {
  static std::string dir = [] {
    const char *tmp = std::getenv("TMPDIR");
    std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/attune-fuzz-tuning-XXXXXX";
    FUZZ_CHECK(::mkdtemp(templ.data()) != nullptr, "cannot create %s", templ.c_str());
    return templ;
  }();
  return dir;
}

// Everything the previous input left (the database, its lock, files moved aside).
static void clearWorkDir() {
  DIR *d = ::opendir(workDir().c_str());
  if (!d)
    return;
  while (dirent *e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != "..")
      ::unlink((workDir() + "/" + name).c_str());
  }
  ::closedir(d);
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  clearWorkDir();
  std::string path = workDir() + "/tuning.json";
  {
    FILE *f = std::fopen(path.c_str(), "wb");
    FUZZ_CHECK(f, "cannot write %s", path.c_str());
    std::fwrite(data, 1, size, f);
    std::fclose(f);
  }
  TuningDb db(path);
  try {
    auto all = db.entries();
    std::string present = all.empty() ? std::string("x") : all.front().first;
    (void)db.lookup(present);
    (void)db.lookup("NVIDIA H100|sm132|0000|b1-q1024-kv1024");
    TuningEntry e;
    e.variant = "v64x64";
    e.timeMs = 0.5;
    e.candidates = {{"v64x64", 0.5}, {"v128x64", 0.7}};
    e.rejected = {{"v128x128", "wrong output"}};
    e.when = "2025-01-31T12:34:56Z";
    db.store(present, e);
    auto back = db.lookup(present);
    FUZZ_CHECK(back && back->variant == "v64x64", "stored entry '%s' not found again",
               present.c_str());
  } catch (const CacheError &) {
    // A file system refusal (the directory is private, so it should not happen).
  }
  return 0;
}
