//===- CmdCompile.cpp - attnc compile: a spec to a kernel bundle ----------===//
#include "tools/attnc/Driver.h"

#include "codegen/Diagnostics.h"
#include "codegen/nvidia/PtxLint.h"

#include "codegen/bundle/BundleWriter.h"
#include "specs/SpecHash.h"

// The runtime's cache rules (docs/bundle-and-abi.md section 4), shared so that the
// compiler, the runtime and the Python package find the same directories.
#include "TuningDb.h"

#include "llvm/Support/raw_ostream.h"
#include <nlohmann/json.hpp>

#include <filesystem>
#include <sstream>
#include <unistd.h>

#ifndef ATTUNE_VERSION_STRING
#define ATTUNE_VERSION_STRING "0.2.0"
#endif

namespace fs = std::filesystem;

namespace attune::attnc {

std::vector<std::string> splitList(const std::string &s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty())
      out.push_back(item);
  return out;
}

/// A tile configuration: BM x BN, packed (all query heads of a kv head per CTA) or not,
/// on mma.sync or (sm_90a) wgmma.
struct TileConfig {
  int64_t blockM, blockN;
  bool packGqa = false;
  bool wgmma = false;
};

/// Default tile configurations per head dim: the first is the default variant.
/// (When ptxas is available, the bundle's default is the first that does not spill.)
/// With grouped query heads the first two also come packed, for the tuner to weigh
/// (they win where queries are few per head: decoding, short chunks).
static std::vector<TileConfig> defaultConfigs(const SpecInfo &info) {
  std::vector<TileConfig> configs;
  if (info.headDim <= 64)
    configs = {{64, 64}, {128, 64}, {64, 32}, {128, 128}};
  else if (info.headDim <= 128)
    configs = {{64, 64}, {128, 64}, {64, 32}, {128, 32}};
  else
    configs = {{64, 32}, {128, 32}, {64, 16}, {128, 16}};
  int64_t group = info.headsKv > 0 ? info.headsQ / info.headsKv : 1;
  for (int i = 0; i < 2; ++i)
    if (group > 1 && configs[size_t(i)].blockM % group == 0)
      configs.push_back({configs[size_t(i)].blockM, configs[size_t(i)].blockN, true});
  return configs;
}

/// "64x64,128x64g,128x128w": BMxBN pairs; suffixes g for pack_gqa, w for wgmma;
/// `default` stands for the default list. Without `info` only the syntax is checked.
static std::vector<TileConfig> parseConfigs(const std::string &list, const SpecInfo *info) {
  std::vector<TileConfig> configs;
  for (const std::string &c : splitList(list)) {
    if (c == "default") {
      if (info)
        for (const TileConfig &d : defaultConfigs(*info))
          configs.push_back(d);
      continue;
    }
    std::string pair = c;
    bool packed = false, wgmma = false;
    while (!pair.empty() && (pair.back() == 'g' || pair.back() == 'w')) {
      bool &flag = pair.back() == 'g' ? packed : wgmma;
      if (flag)
        pair.clear(); // a repeated suffix is malformed
      else
        flag = true, pair.pop_back();
    }
    auto x = pair.find('x');
    char *end = nullptr;
    long long m = x == std::string::npos ? 0 : std::strtoll(pair.c_str(), &end, 10);
    long long n = x == std::string::npos ? 0 : std::strtoll(pair.c_str() + x + 1, &end, 10);
    if (m <= 0 || n <= 0 || !end || *end)
      throw Failure{"--configs takes BMxBN pairs like 64x64,128x64 (suffix g packs the "
                    "query heads of each kv head: 64x64g; w runs the matmuls on sm_90a's "
                    "wgmma: 128x128w; `default` adds the default list); got '" + c + "'",
                    2};
    configs.push_back({m, n, packed, wgmma});
  }
  if (configs.empty() && list.find("default") == std::string::npos)
    throw Failure{"--configs lists no configuration", 2};
  return configs;
}

/// The configurations that `arch` can run: wgmma ones are for sm_90a only, so one
/// list serves a bundle for several archs.
static std::vector<TileConfig> configsFor(const CompileRequest &req, const SpecInfo &info,
                                          const std::string &arch) {
  if (arch == "host")
    return {};
  std::vector<TileConfig> all = req.configs ? parseConfigs(*req.configs, &info) : defaultConfigs(info);
  std::vector<TileConfig> out;
  for (const TileConfig &c : all)
    if (!c.wgmma || arch == "sm_90a")
      out.push_back(c);
  if (out.empty())
    throw Failure{"no tile configuration for " + arch +
                  ": wgmma configurations (suffix w) need sm_90a", 2};
  return out;
}

CompileRequest CompileRequest::fromOptions(const Options &opts, const std::string &specPath,
                                           const std::string &defaultArchs) {
  CompileRequest req;
  req.specPath = specPath;
  req.archs = splitList(opts.get("arch").value_or(defaultArchs));
  if (req.archs.empty())
    throw Failure{"--arch lists no architecture", 2};
  req.configs = opts.get("configs");
  if (req.configs)
    parseConfigs(*req.configs, nullptr); // reject a bad list before any work
  return req;
}

/// The spec as JSON and as attn IR.
static LoadedSpec loadJsonSpec(mlir::MLIRContext &context, const std::string &path,
                               nlohmann::json &json) {
  LoadedSpec spec = loadSpec(context, path);
  if (!spec.fromJson)
    throw Failure{"a bundle needs a JSON spec (bundles record the spec): " + path, 2};
  SpecError err;
  if (!loadSpecFile(path, json, err))
    throw Failure{err.message};
  return spec;
}

/// A pipelined wgmma kernel that spills is rebuilt without the pipeline, and the one
/// that spills less is kept: a second S tile in registers is not worth local memory.
static void unpipelineIfSpilling(mlir::ModuleOp module, BundleVariant &v) {
  std::string ptxas = findPtxas(), error;
  // Spilled bytes (stores + loads), or -1 when ptxas fails (the bundle writer reports it).
  auto spilled = [&](const PtxResult &k) -> int64_t {
    PtxasReport r;
    if (!runPtxas(ptxas, k.ptx, v.config.arch, "", k.info.symbol, r, error))
      return -1;
    return r.spillStores + r.spillLoads;
  };
  int64_t pipelined = ptxas.empty() ? 0 : spilled(v.kernel);
  if (pipelined <= 0)
    return;
  BundleVariant plain = v;
  plain.config.pipeline = false;
  // It compiled pipelined, so it compiles plain; if not, the pipelined one is kept.
  DiagnosticCollector quiet(module.getContext());
  mlir::FailureOr<PtxResult> plainPtx = compileToPtx(module, plain.config);
  if (mlir::failed(plainPtx))
    return;
  plain.kernel = std::move(*plainPtx);
  int64_t plainSpill = spilled(plain.kernel);
  if (plainSpill >= 0 && plainSpill < pipelined)
    v = std::move(plain);
}

std::vector<GpuConfig> bundleConfigs(const CompileRequest &req, const SpecInfo &info) {
  std::vector<GpuConfig> out;
  for (const std::string &arch : req.archs)
    if (arch != "host")
    for (const TileConfig &c : configsFor(req, info, arch)) {
      GpuConfig config;
      config.blockM = c.blockM;
      config.blockN = c.blockN;
      config.packGqa = c.packGqa;
      config.wgmma = c.wgmma;
      config.arch = arch;
      out.push_back(config);
    }
  return out;
}

void compileBundle(const CompileRequest &req, const std::string &dir, llvm::raw_ostream *log) {
  mlir::MLIRContext context;
  nlohmann::json json;
  LoadedSpec spec = loadJsonSpec(context, req.specPath, json);
  std::vector<BundleVariant> variants;
  std::string lastArch;
  for (const GpuConfig &config : bundleConfigs(req, spec.info)) {
    {
      bool first = config.arch != lastArch;
      lastArch = config.arch;
      BundleVariant v;
      v.config = config;
      DiagnosticCollector diags(spec.module->getContext());
      mlir::FailureOr<PtxResult> ptx = compileToPtx(*spec.module, v.config);
      if (mlir::failed(ptx))
        throw Failure{"variant " + v.config.name() + ": " + diags.message("compilation failed")};
      v.kernel = std::move(*ptx);
      if (v.config.pipelined() && req.ptxas)
        unpipelineIfSpilling(*spec.module, v);
      v.isDefault = first;
      if (req.verbose)
        llvm::errs() << "attnc compile: " << v.config.name() << " in " << v.kernel.seconds << " s\n";
      variants.push_back(std::move(v));
    }
  }
  // The host variant: the first plain (not packed, not wgmma) configuration, compiled
  // for this machine's CPU; its libraries go straight into the bundle directory.
  std::vector<HostBundleVariant> host;
  if (std::find(req.archs.begin(), req.archs.end(), "host") != req.archs.end()) {
    std::vector<TileConfig> all =
        req.configs ? parseConfigs(*req.configs, &spec.info) : defaultConfigs(spec.info);
    auto plain = std::find_if(all.begin(), all.end(),
                              [](const TileConfig &c) { return !c.packGqa && !c.wgmma; });
    TileConfig c = plain != all.end() ? *plain : TileConfig{64, 64};
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec)
      throw Failure{"cannot create '" + dir + "': " + ec.message()};
    LoadedSpec f32 = loadSpec(context, req.specPath, std::string("f32"));
    HostBundleVariant h;
    h.name = "host_" + std::to_string(c.blockM) + "x" + std::to_string(c.blockN);
    h.blockM = c.blockM;
    h.blockN = c.blockN;
    h.isDefault = true;
    DiagnosticCollector diags(&context);
    auto lib = compileHostLibrary(*f32.module, c.blockM, c.blockN,
                                  (fs::path(dir) / (h.name + ".so")).string());
    if (mlir::failed(lib))
      throw Failure{"host variant " + h.name + ": " + diags.message("compilation failed")};
    h.library = std::move(*lib);
    if (req.verbose)
      llvm::errs() << "attnc compile: " << h.name << " in " << h.library.seconds << " s\n";
    host.push_back(std::move(h));
  }
  std::string error;
  if (!writeBundle(dir, json, spec.info, variants, req.ptxas, error, host))
    throw Failure{error};
  if (!log)
    return;
  for (const HostBundleVariant &h : host)
    *log << h.name << ": host library for " << h.library.cpu
         << (h.library.backward.entry.empty() ? " (forward only: " + h.library.backwardError + ")"
                                              : " (forward and backward)")
         << "\n";
  for (const BundleVariant &v : variants) {
    *log << v.config.name() << ": " << v.kernel.ptx.size() << " bytes of PTX";
    if (v.ptxas)
      *log << ", ptxas: " << v.ptxas->registers << " registers, " << v.ptxas->spillStores << "/"
           << v.ptxas->spillLoads << " bytes spilled";
    *log << (v.isDefault ? " (default)" : "") << "\n";
  }
}

std::string cachedBundle(const CompileRequest &req, llvm::raw_ostream *log) {
  nlohmann::json json;
  SpecError err;
  if (!loadSpecFile(req.specPath, json, err))
    throw Failure{err.message};
  std::string archs;
  for (const std::string &a : req.archs)
    archs += (archs.empty() ? "" : ",") + a;
  std::string dir = rt::bundleCacheRoot() + "/" +
                    rt::bundleCacheKey(specHash(json), ATTUNE_VERSION_STRING, archs,
                                       req.configs ? &*req.configs : nullptr);
  if (fs::exists(fs::path(dir) / "manifest.json")) {
    if (log)
      *log << "cached bundle: " << dir << "\n";
    return dir;
  }
  // Written beside its final place, then renamed: readers never see half a bundle,
  // and of two concurrent compilers one wins and the other's copy is dropped.
  rt::makeDirs(rt::bundleCacheRoot());
  std::string tmp = dir + ".tmp-" + std::to_string(getpid());
  compileBundle(req, tmp, log);
  std::error_code ec;
  fs::rename(tmp, dir, ec);
  if (ec)
    fs::remove_all(tmp, ec);
  if (log)
    *log << "bundle cached: " << dir << "\n";
  return dir;
}

static void copyBundle(const std::string &from, const std::string &to) {
  std::error_code ec;
  fs::create_directories(to, ec);
  fs::copy(from, to, fs::copy_options::recursive | fs::copy_options::overwrite_existing, ec);
  if (ec)
    throw Failure{"cannot copy the cached bundle to '" + to + "': " + ec.message()};
}

/// --emit: the first variant only, to standard output (for lit tests and inspection).
static int emitOne(const CompileRequest &req, const std::string &what) {
  mlir::MLIRContext context;
  LoadedSpec spec = loadSpec(context, req.specPath);
  auto configs = configsFor(req, spec.info, req.archs.front());
  BundleVariant v;
  v.config.blockM = configs.front().blockM;
  v.config.blockN = configs.front().blockN;
  v.config.packGqa = configs.front().packGqa;
  v.config.wgmma = configs.front().wgmma;
  v.config.arch = req.archs.front();
  DiagnosticCollector diags(spec.module->getContext());
  mlir::FailureOr<PtxResult> ptx = compileToPtx(*spec.module, v.config, /*keepGpuIr=*/what == "gpu-ir");
  if (mlir::failed(ptx))
    throw Failure{"variant " + v.config.name() + ": " + diags.message("compilation failed")};
  v.kernel = std::move(*ptx);
  // The PTX printed is held to the same wgmma register discipline as a bundle's.
  if (what == "ptx") {
    std::vector<std::string> issues = lintWgmmaRegisters(v.kernel.ptx);
    if (!issues.empty()) {
      std::string message = "variant " + v.config.name() +
                            ": the PTX breaks the wgmma register discipline:";
      for (const std::string &i : issues)
        message += "\n  " + i;
      throw Failure{message};
    }
  }
  // gpu-ir ends as mlir-opt's output does (the module, then a newline), so it is
  // byte-for-byte what `attn-opt -attn-to-nvvm` prints for the config.
  if (what == "gpu-ir")
    llvm::outs() << v.kernel.gpuIr << "\n";
  else
    llvm::outs() << v.kernel.ptx;
  return 0;
}

int cmdCompile(int argc, char **argv) {
  Options opts(argc, argv, 2, {"o", "arch", "configs", "emit"}, {"no-ptxas", "verbose", "cache"});
  if (opts.positional.size() != 1)
    throw Failure{"compile takes one SPEC (a JSON spec)", 2};
  CompileRequest req = CompileRequest::fromOptions(opts, opts.positional[0]);
  req.ptxas = !opts.flag("no-ptxas");
  req.verbose = opts.flag("verbose");
  if (std::optional<std::string> emit = opts.get("emit")) {
    if (*emit != "gpu-ir" && *emit != "ptx")
      throw Failure{"--emit must be gpu-ir or ptx, got '" + *emit + "'", 2};
    return emitOne(req, *emit);
  }
  if (!opts.flag("cache")) {
    std::string out = opts.require("o");
    compileBundle(req, out, &llvm::outs());
    llvm::outs() << "bundle written to " << out << "\n";
    return 0;
  }
  std::string dir = cachedBundle(req, &llvm::outs());
  if (std::optional<std::string> out = opts.get("o")) {
    copyBundle(dir, *out);
    llvm::outs() << "bundle written to " << *out << "\n";
  }
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
