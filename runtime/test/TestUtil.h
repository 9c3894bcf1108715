//===- TestUtil.h - helpers shared by the runtime tests ---------*- C++ -*-===//
//
// Only the C API and the standard library: the C API tests link the shared library,
// whose C++ internals are hidden.
//
#ifndef ATTUNE_RUNTIME_TEST_TESTUTIL_H
#define ATTUNE_RUNTIME_TEST_TESTUTIL_H

#include "attune/runtime.h"

#include <cstdint>
#include <string>
#include <vector>

namespace attune::rt::test {

/// A fresh directory under $TMPDIR (or /tmp), removed by the destructor.
class TempDir {
public:
  TempDir();
  ~TempDir();
  const std::string &path() const { return path_; }

private:
  std::string path_;
};

void writeFile(const std::string &path, const std::string &text);
std::string readFile(const std::string &path);
bool fileExists(const std::string &path);
std::vector<std::string> listDir(const std::string &dir);

/// Sets an environment variable for the object's lifetime (nullptr unsets it).
class ScopedEnv {
public:
  ScopedEnv(const char *name, const char *value);
  ~ScopedEnv();

private:
  std::string name_, old_;
  bool had_;
};

/// A tensor descriptor; contiguous row-major strides unless `strides` is given.
attn_tensor tensor(void *data, attn_dtype dtype, std::vector<int64_t> shape,
                   std::vector<int64_t> strides = {});

/// The manifest text of the test bundle used by the argument and API tests:
/// bf16, heads_q 8, heads_kv 2, head_dim 128, head_dim_v 128, bottom_right, o + lse,
/// inputs doc i32 [B, Sq], idx i32 [Hq, Nv], val f32 [Nv, 4], alignment 16, variants
/// sm80_bm64 (default), sm80_bm128, sm90a_bm128 (default).
std::string testManifestText();

/// A bundle directory holding testManifestText() (and empty PTX files) in `dir`.
void writeTestBundle(const std::string &dir);

/// A valid call for the test manifest with fake (never dereferenced) pointers:
/// B = 2, Sq = 100, Skv = 300, Nv = 5.
struct TestCall {
  TestCall();
  // Copies re-point the call at their own arrays.
  TestCall(const TestCall &o) : call(o.call), names(o.names), inputs(o.inputs) { sync(); }
  TestCall &operator=(const TestCall &o) {
    call = o.call;
    names = o.names;
    inputs = o.inputs;
    sync();
    return *this;
  }
  attn_call call{};
  std::vector<const char *> names;
  std::vector<attn_tensor> inputs;
  void sync(); // point call's input arrays at `names` / `inputs` after edits
};

} // namespace attune::rt::test

#endif
