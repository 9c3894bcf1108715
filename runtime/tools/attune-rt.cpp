//===- attune-rt.cpp - look at bundles, the GPU and the tuning database ---===//
//
//   attune-rt info BUNDLE      the bundle's spec, variants, configs, ptxas reports
//   attune-rt device [N]       GPU name, compute capability, SM count (exit 1: no driver)
//   attune-rt hash SPEC.json   the spec hash (docs/bundle-and-abi.md section 5)
//   attune-rt tuning           the tuning database's entries
//   attune-rt cache-dir        the cache root
//
//===----------------------------------------------------------------------===//
#include "Bundle.h"
#include "Cuda.h"
#include "Json.h"
#include "Manifest.h"
#include "Sha256.h"
#include "TuningDb.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

using namespace attune::rt;

namespace {

const char *kUsage = R"(usage: attune-rt <command> [args]

commands:
  info BUNDLE       the bundle's spec, variants, configs and ptxas reports
  device [N]        name, compute capability and SM count of CUDA device N (default 0)
  hash SPEC.json    the spec hash (sha256 of the canonical JSON)
  tuning            the entries of the tuning database
  cache-dir         the cache root ($ATTUNE_CACHE_DIR, $XDG_CACHE_HOME/attune, ~/.cache/attune)
)";

int cmdInfo(const std::string &dir) {
  Manifest m = loadManifest(dir);
  std::printf("bundle      %s\n", dir.c_str());
  std::printf("spec        %s (hash %s)\n", m.specName.c_str(), m.specHash.c_str());
  std::printf("compiler    %s\n", m.compilerVersion.c_str());
  std::printf("shape       heads_q=%lld heads_kv=%lld head_dim=%lld head_dim_v=%lld dtype=%s\n",
              (long long)m.headsQ, (long long)m.headsKv, (long long)m.headDim,
              (long long)m.headDimV, dtypeName(m.dtype));
  std::string offsets = "align=" + m.align;
  if (m.qOffset)
    offsets += " q_offset=" + std::to_string(*m.qOffset);
  if (m.kvOffset)
    offsets += " kv_offset=" + std::to_string(*m.kvOffset);
  std::printf("positions   %s\n", offsets.c_str());
  std::printf("outputs     o%s\n", m.hasLse ? ", lse" : "");
  for (const InputDecl &in : m.inputs) {
    std::string shape;
    for (const Dim &d : in.shape)
      shape += (shape.empty() ? "" : ", ") + (d.isSymbol() ? d.symbol : std::to_string(d.size));
    std::printf("input       %s: %s [%s]\n", in.name.c_str(), dtypeName(in.dtype), shape.c_str());
  }
  std::printf("\n%-28s %-7s %-40s %7s %7s %5s %9s %s\n", "variant", "arch", "config", "threads",
              "smem", "regs", "spill st/ld", "");
  for (const Variant &v : m.variants) {
    std::string regs = v.ptxas ? std::to_string(v.ptxas->registers) : "-";
    std::string spills = v.ptxas ? std::to_string(v.ptxas->spillStores) + "/" +
                                       std::to_string(v.ptxas->spillLoads)
                                 : "-";
    std::string notes = v.isDefault ? "default" : "";
    notes += v.cubin ? (notes.empty() ? "cubin" : ", cubin") : "";
    std::printf("%-28s %-7s %-40s %7lld %7lld %5s %11s %s\n", v.name.c_str(), v.arch.c_str(),
                v.configSummary().c_str(), (long long)v.threads, (long long)v.smemBytes,
                regs.c_str(), spills.c_str(), notes.c_str());
  }
  std::printf("\ngrid of each variant:\n");
  for (const Variant &v : m.variants)
    std::printf("  %-28s (%s, %s, %s) x %lld threads\n", v.name.c_str(), v.grid[0].text().c_str(),
                v.grid[1].text().c_str(), v.grid[2].text().c_str(), (long long)v.threads);
  return 0;
}

int cmdDevice(int ordinal) {
  const cu::Driver &d = cu::driver();
  int count = 0;
  cu::check(d.cuDeviceGetCount(&count), "cuDeviceGetCount");
  if (ordinal < 0 || ordinal >= count) {
    std::fprintf(stderr, "attune-rt device: no CUDA device %d (there are %d)\n", ordinal, count);
    return 1;
  }
  cu::CUdevice dev = 0;
  cu::check(d.cuDeviceGet(&dev, ordinal), "cuDeviceGet");
  const cu::DeviceInfo &info = cu::deviceInfo(dev);
  int version = 0;
  d.cuDriverGetVersion(&version);
  std::printf("device %d: %s\n", ordinal, info.name.c_str());
  std::printf("  compute capability  %d.%d\n", info.major, info.minor);
  std::printf("  SMs                 %d\n", info.smCount);
  std::printf("  memory              %.1f GiB\n", double(info.totalMem) / (1024.0 * 1024 * 1024));
  std::printf("  shared memory/block %d bytes (opt-in)\n", info.maxSmemOptin);
  std::printf("  L2 cache            %d bytes\n", info.l2Bytes);
  std::printf("  driver              %d.%d (%d device(s))\n", version / 1000, version % 1000 / 10,
              count);
  return 0;
}

int cmdHash(const std::string &path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    std::fprintf(stderr, "attune-rt hash: cannot read %s\n", path.c_str());
    return 1;
  }
  std::stringstream ss;
  ss << f.rdbuf();
  Json spec;
  try {
    spec = Json::parse(ss.str());
  } catch (const JsonError &e) {
    std::fprintf(stderr, "attune-rt hash: %s: %s\n", path.c_str(), e.what());
    return 1;
  }
  std::printf("%s\n", sha256Hex(spec.canonical()).c_str());
  return 0;
}

int cmdTuning() {
  TuningDb db = TuningDb::atDefaultLocation();
  auto entries = db.entries();
  std::printf("%s: %zu entr%s\n", db.path().c_str(), entries.size(),
              entries.size() == 1 ? "y" : "ies");
  for (const auto &[key, e] : entries) {
    std::printf("%s\n  -> %s (%.4f ms, %zu candidates, tuned %s)\n", key.c_str(),
                e.variant.c_str(), e.timeMs, e.candidates.size(), e.when.c_str());
    for (const auto &[name, why] : e.rejected)
      std::printf("     rejected %s: %s\n", name.c_str(), why.c_str());
  }
  return 0;
}

} // namespace

int main(int argc, char **argv) {
  if (argc < 2 || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "--help")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  std::string cmd = argv[1];
  try {
    if (cmd == "info" && argc == 3)
      return cmdInfo(argv[2]);
    if (cmd == "device" && argc <= 3)
      return cmdDevice(argc == 3 ? std::atoi(argv[2]) : 0);
    if (cmd == "hash" && argc == 3)
      return cmdHash(argv[2]);
    if (cmd == "tuning" && argc == 2)
      return cmdTuning();
    if (cmd == "cache-dir" && argc == 2) {
      std::printf("%s\n", cacheRoot().c_str());
      return 0;
    }
  } catch (const std::exception &e) {
    std::fprintf(stderr, "attune-rt %s: %s\n", cmd.c_str(), e.what());
    return 1;
  }
  std::fprintf(stderr, "attune-rt: bad command line\n%s", kUsage);
  return 2;
}
