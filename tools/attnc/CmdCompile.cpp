//===- CmdCompile.cpp - attnc compile: a spec to a kernel bundle ----------===//
#include "tools/attnc/Driver.h"

#include "codegen/bundle/BundleWriter.h"
#include "specs/SpecHash.h"

#include "llvm/Support/raw_ostream.h"
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <unistd.h>

#ifndef ATTUNE_VERSION_STRING
#define ATTUNE_VERSION_STRING "0.1.0"
#endif

namespace attune::attnc {

static std::vector<std::string> splitList(const std::string &s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty())
      out.push_back(item);
  return out;
}

/// Default tile configurations per head dim: the first is the default variant.
/// (When ptxas is available, the bundle's default is the first that does not spill.)
static std::vector<std::pair<int64_t, int64_t>> defaultConfigs(int64_t headDim) {
  if (headDim <= 64)
    return {{64, 64}, {128, 64}, {64, 32}, {128, 128}};
  if (headDim <= 128)
    return {{64, 64}, {128, 64}, {64, 32}, {128, 32}};
  return {{64, 32}, {128, 32}, {64, 16}, {128, 16}};
}

/// The cache root of docs/bundle-and-abi.md section 4.
static std::string cacheRoot() {
  if (const char *dir = std::getenv("ATTUNE_CACHE_DIR"); dir && *dir)
    return dir;
  if (const char *xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg)
    return std::string(xdg) + "/attune";
  if (const char *home = std::getenv("HOME"); home && *home)
    return std::string(home) + "/.cache/attune";
  throw Failure{"no cache directory: set ATTUNE_CACHE_DIR (or HOME)"};
}

/// sha256 of "<spec hash>\n<compiler version>\n<sorted archs>\n<configs or default>",
/// the key the Python package computes too.
static std::string bundleKey(const std::string &specHashHex, std::vector<std::string> archs,
                             const std::optional<std::string> &configs) {
  std::sort(archs.begin(), archs.end());
  std::string joined;
  for (const std::string &a : archs)
    joined += (joined.empty() ? "" : ",") + a;
  std::string text = specHashHex + "\n" + ATTUNE_VERSION_STRING + "\n" + joined + "\n" +
                     configs.value_or("default");
  return sha256Hex(text);
}

int cmdCompile(int argc, char **argv) {
  Options opts(argc, argv, 2, {"o", "arch", "configs", "emit"}, {"no-ptxas", "verbose", "cache"});
  if (opts.positional.size() != 1)
    throw Failure{"compile takes one SPEC (a JSON spec)", 2};
  std::optional<std::string> emit = opts.get("emit");
  if (emit && *emit != "gpu-ir" && *emit != "ptx")
    throw Failure{"--emit must be gpu-ir or ptx, got '" + *emit + "'", 2};
  bool useCache = opts.flag("cache");
  std::string out = emit || useCache ? opts.get("o").value_or("") : opts.require("o");
  std::vector<std::string> archs = splitList(opts.get("arch").value_or("sm_80,sm_90a"));
  if (archs.empty())
    throw Failure{"--arch lists no architecture", 2};

  mlir::MLIRContext context;
  LoadedSpec spec = loadSpec(context, opts.positional[0]);
  if (!spec.fromJson)
    throw Failure{"compile needs a JSON spec (bundles record the spec)", 2};
  nlohmann::json json;
  SpecError err;
  if (!loadSpecFile(opts.positional[0], json, err))
    throw Failure{err.message};

  std::vector<std::pair<int64_t, int64_t>> configs;
  if (auto list = opts.get("configs")) {
    for (const std::string &c : splitList(*list)) {
      auto x = c.find('x');
      char *end = nullptr;
      long long m = x == std::string::npos ? 0 : std::strtoll(c.c_str(), &end, 10);
      long long n = x == std::string::npos ? 0 : std::strtoll(c.c_str() + x + 1, &end, 10);
      if (m <= 0 || n <= 0 || !end || *end)
        throw Failure{"--configs takes BMxBN pairs like 64x64,128x64; got '" + c + "'", 2};
      configs.push_back({m, n});
    }
  } else {
    configs = defaultConfigs(spec.info.headDim);
  }

  if (emit) {
    // The first variant only, to standard output (for lit tests and inspection).
    BundleVariant v;
    v.config.blockM = configs.front().first;
    v.config.blockN = configs.front().second;
    v.config.arch = archs.front();
    std::string error;
    if (!compileToPtx(*spec.module, v.config, v.kernel, error, /*keepGpuIr=*/*emit == "gpu-ir"))
      throw Failure{"variant " + v.config.name() + ": " + error};
    llvm::outs() << (*emit == "gpu-ir" ? v.kernel.gpuIr : v.kernel.ptx);
    return 0;
  }
  // A bundle compiled before for the same spec, compiler version, archs and configs
  // is reused: the second call compiles nothing.
  namespace fs = std::filesystem;
  std::string cached;
  if (useCache) {
    std::string key = bundleKey(specHash(json), archs, opts.get("configs"));
    cached = cacheRoot() + "/bundles/" + key;
    if (fs::exists(fs::path(cached) / "manifest.json")) {
      if (!out.empty()) {
        std::error_code ec;
        fs::create_directories(out, ec);
        fs::copy(cached, out, fs::copy_options::recursive | fs::copy_options::overwrite_existing, ec);
        if (ec)
          throw Failure{"cannot copy the cached bundle to '" + out + "': " + ec.message()};
      }
      llvm::outs() << "cached bundle: " << cached << "\n";
      return 0;
    }
  }
  std::vector<BundleVariant> variants;
  for (const std::string &arch : archs) {
    bool first = true;
    for (auto [bm, bn] : configs) {
      BundleVariant v;
      v.config.blockM = bm;
      v.config.blockN = bn;
      v.config.arch = arch;
      std::string error;
      if (!compileToPtx(*spec.module, v.config, v.kernel, error))
        throw Failure{"variant " + v.config.name() + ": " + error};
      v.isDefault = first;
      first = false;
      if (opts.flag("verbose"))
        llvm::errs() << "attnc compile: " << v.config.name() << " in " << v.kernel.seconds << " s\n";
      variants.push_back(std::move(v));
    }
  }
  std::string error;
  std::string target = out;
  if (useCache) {
    // Written beside its final place, then renamed: readers never see half a bundle,
    // and of two concurrent compilers one wins and the other's copy is dropped.
    target = cached + ".tmp-" + std::to_string(getpid());
  }
  if (!writeBundle(target, json, spec.info, variants, !opts.flag("no-ptxas"), error))
    throw Failure{error};
  if (useCache) {
    std::error_code ec;
    fs::rename(target, cached, ec);
    if (ec)
      fs::remove_all(target, ec);
    if (!out.empty()) {
      fs::create_directories(out, ec);
      fs::copy(cached, out, fs::copy_options::recursive | fs::copy_options::overwrite_existing, ec);
      if (ec)
        throw Failure{"cannot copy the cached bundle to '" + out + "': " + ec.message()};
    }
  }
  for (const BundleVariant &v : variants) {
    llvm::outs() << v.config.name() << ": " << v.kernel.ptx.size() << " bytes of PTX";
    if (v.ptxas)
      llvm::outs() << ", ptxas: " << v.ptxas->registers << " registers, "
                   << v.ptxas->spillStores << "/" << v.ptxas->spillLoads << " bytes spilled";
    llvm::outs() << (v.isDefault ? " (default)" : "") << "\n";
  }
  if (useCache)
    llvm::outs() << "bundle cached: " << cached << "\n";
  if (!out.empty())
    llvm::outs() << "bundle written to " << out << "\n";
  return 0;
}

int cmdHash(int argc, char **argv) {
  Options opts(argc, argv, 2, {}, {});
  if (opts.positional.size() != 1)
    throw Failure{"hash takes one SPEC", 2};
  nlohmann::json json;
  SpecError err;
  if (!loadSpecFile(opts.positional[0], json, err))
    throw Failure{err.message};
  llvm::outs() << specHash(json) << "\n";
  return 0;
}

} // namespace attune::attnc
