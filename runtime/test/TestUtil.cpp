//===- TestUtil.cpp - helpers shared by the runtime tests -----------------===//
#include "TestUtil.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <sys/stat.h>
#include <unistd.h>

namespace attune::rt::test {

static void removeTree(const std::string &path) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0)
    return;
  if (S_ISDIR(st.st_mode)) {
    for (const std::string &name : listDir(path))
      removeTree(path + "/" + name);
    rmdir(path.c_str());
  } else {
    unlink(path.c_str());
  }
}

TempDir::TempDir() {
  const char *tmp = std::getenv("TMPDIR");
  std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/attune-rt-test-XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data()))
    throw std::runtime_error("mkdtemp failed");
  path_ = buf.data();
}

TempDir::~TempDir() { removeTree(path_); }

void writeFile(const std::string &path, const std::string &text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
  if (!f)
    throw std::runtime_error("cannot write " + path);
}

std::string readFile(const std::string &path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

bool fileExists(const std::string &path) { return access(path.c_str(), F_OK) == 0; }

std::vector<std::string> listDir(const std::string &dir) {
  std::vector<std::string> out;
  if (DIR *d = opendir(dir.c_str())) {
    while (dirent *e = readdir(d))
      if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, ".."))
        out.push_back(e->d_name);
    closedir(d);
  }
  return out;
}

ScopedEnv::ScopedEnv(const char *name, const char *value) : name_(name) {
  const char *old = std::getenv(name);
  had_ = old != nullptr;
  if (old)
    old_ = old;
  if (value)
    setenv(name, value, 1);
  else
    unsetenv(name);
}

ScopedEnv::~ScopedEnv() {
  if (had_)
    setenv(name_.c_str(), old_.c_str(), 1);
  else
    unsetenv(name_.c_str());
}

attn_tensor tensor(void *data, attn_dtype dtype, std::vector<int64_t> shape,
                   std::vector<int64_t> strides) {
  attn_tensor t{};
  t.data = data;
  t.dtype = dtype;
  t.ndim = int32_t(shape.size());
  int64_t s = 1;
  for (int i = t.ndim - 1; i >= 0; --i) {
    t.shape[i] = shape[size_t(i)];
    t.strides[i] = strides.empty() ? s : strides[size_t(i)];
    s *= shape[size_t(i)];
  }
  return t;
}

std::string testManifestText() {
  // Parameters covering every kind of [ABI 2] name, with mixed i32/i64 types.
  const char *params = R"J([
        {"name": "q", "type": "ptr"}, {"name": "k", "type": "ptr"},
        {"name": "v", "type": "ptr"}, {"name": "o", "type": "ptr"},
        {"name": "lse", "type": "ptr"},
        {"name": "input:doc", "type": "ptr"}, {"name": "input:idx", "type": "ptr"},
        {"name": "input:val", "type": "ptr"},
        {"name": "batch", "type": "i64"}, {"name": "seq_q", "type": "i32"},
        {"name": "seq_kv", "type": "i64"}, {"name": "heads_q", "type": "i32"},
        {"name": "heads_kv", "type": "i32"},
        {"name": "q_offset", "type": "i64"}, {"name": "kv_offset", "type": "i32"},
        {"name": "q_stride_b", "type": "i64"}, {"name": "q_stride_h", "type": "i64"},
        {"name": "q_stride_s", "type": "i64"},
        {"name": "k_stride_b", "type": "i64"}, {"name": "k_stride_h", "type": "i64"},
        {"name": "k_stride_s", "type": "i64"},
        {"name": "v_stride_b", "type": "i64"}, {"name": "v_stride_h", "type": "i64"},
        {"name": "v_stride_s", "type": "i64"},
        {"name": "o_stride_b", "type": "i32"}, {"name": "o_stride_h", "type": "i32"},
        {"name": "o_stride_s", "type": "i32"},
        {"name": "input:idx:dim1", "type": "i32"}, {"name": "input:val:dim0", "type": "i64"}
      ])J";
  std::string variant = R"J({
      "name": "NAME", "arch": "ARCH",
      "config": {"block_m": BM, "block_n": 64, "warps": 4, "stages": 2},
      "default": DEFAULT, "ptx": "NAME.ptx", "kernel": "attn_kernel",
      "threads": 128, "smem_bytes": 49152,
      "grid": {"x": "ceil_div(seq_q, BM)", "y": "heads_q", "z": "batch"},
      "params": PARAMS,
      "ptxas": {"registers": 168, "spill_stores": 0, "spill_loads": 0, "smem_static": 0}
    })J";
  auto make = [&](const std::string &name, const std::string &arch, const std::string &bm,
                  bool isDefault) {
    std::string v = variant;
    auto replace = [&](const std::string &from, const std::string &to) {
      for (size_t p; (p = v.find(from)) != std::string::npos;)
        v.replace(p, from.size(), to);
    };
    replace("NAME", name);
    replace("ARCH", arch);
    replace("BM", bm);
    replace("DEFAULT", isDefault ? "true" : "false");
    replace("PARAMS", params);
    return v;
  };
  return std::string(R"J({
  "format": "attune-bundle/1",
  "compiler_version": "0.1.0",
  "spec_name": "test-spec",
  "spec_hash": "c3c0e701615033f4e3b3dd010efe62e12efe8fe97dffc601227777a46b2df0b1",
  "spec": {"name": "test-spec"},
  "heads_q": 8, "heads_kv": 2, "head_dim": 128, "head_dim_v": 128,
  "dtype": "bf16",
  "align": "bottom_right",
  "q_offset": null, "kv_offset": null,
  "outputs": ["o", "lse"],
  "alignment": 16,
  "inputs": [
    {"name": "doc", "dtype": "i32", "shape": ["B", "Sq"]},
    {"name": "idx", "dtype": "i32", "shape": ["Hq", "Nv"]},
    {"name": "val", "dtype": "f32", "shape": ["Nv", 4]}
  ],
  "variants": [
    )J") + make("sm80_bm64", "sm_80", "64", true) + ",\n    " +
         make("sm80_bm128", "sm_80", "128", false) + ",\n    " +
         make("sm90a_bm128", "sm_90a", "128", true) + R"J(
  ]
}
)J";
}

void writeTestBundle(const std::string &dir) {
  writeFile(dir + "/manifest.json", testManifestText());
  for (const char *name : {"sm80_bm64", "sm80_bm128", "sm90a_bm128"})
    writeFile(dir + "/" + name + ".ptx", "// not a real kernel\n");
}

namespace {
// Distinct, 256-byte aligned fake device addresses: checking never dereferences them.
void *fake(uintptr_t n) { return reinterpret_cast<void *>(0x7f0000000000ull + n * 0x100000ull); }
} // namespace

TestCall::TestCall() {
  call.q = tensor(fake(1), ATTN_BF16, {2, 8, 100, 128});
  call.k = tensor(fake(2), ATTN_BF16, {2, 2, 300, 128});
  call.v = tensor(fake(3), ATTN_BF16, {2, 2, 300, 128});
  call.o = tensor(fake(4), ATTN_BF16, {2, 8, 100, 128});
  call.lse = tensor(fake(5), ATTN_F32, {2, 8, 100});
  names = {"doc", "idx", "val"};
  inputs = {tensor(fake(6), ATTN_I32, {2, 100}), tensor(fake(7), ATTN_I32, {8, 5}),
            tensor(fake(8), ATTN_F32, {5, 4})};
  sync();
}

void TestCall::sync() {
  call.num_inputs = int32_t(names.size());
  call.input_names = names.data();
  call.inputs = inputs.data();
}

} // namespace attune::rt::test
