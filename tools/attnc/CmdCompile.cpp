//===- CmdCompile.cpp - attnc compile: a spec to a kernel bundle ----------===//
#include "tools/attnc/Driver.h"

#include "codegen/bundle/BundleWriter.h"
#include "specs/SpecHash.h"

#include "llvm/Support/raw_ostream.h"
#include <nlohmann/json.hpp>

#include <sstream>

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

int cmdCompile(int argc, char **argv) {
  Options opts(argc, argv, 2, {"o", "arch", "configs", "emit"}, {"no-ptxas", "verbose"});
  if (opts.positional.size() != 1)
    throw Failure{"compile takes one SPEC (a JSON spec)", 2};
  std::optional<std::string> emit = opts.get("emit");
  if (emit && *emit != "gpu-ir" && *emit != "ptx")
    throw Failure{"--emit must be gpu-ir or ptx, got '" + *emit + "'", 2};
  std::string out = emit ? "" : opts.require("o");
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
  if (!writeBundle(out, json, spec.info, variants, !opts.flag("no-ptxas"), error))
    throw Failure{error};
  for (const BundleVariant &v : variants) {
    llvm::outs() << v.config.name() << ": " << v.kernel.ptx.size() << " bytes of PTX";
    if (v.ptxas)
      llvm::outs() << ", ptxas: " << v.ptxas->registers << " registers, "
                   << v.ptxas->spillStores << "/" << v.ptxas->spillLoads << " bytes spilled";
    llvm::outs() << (v.isDefault ? " (default)" : "") << "\n";
  }
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
