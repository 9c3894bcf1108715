//===- BundleWriter.cpp - kernel bundles: manifest.json + PTX (+ cubin) ----===//
#include "codegen/bundle/BundleWriter.h"

#include "Json.h"
#include "codegen/nvidia/PtxLint.h"
#include "specs/SpecHash.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <sys/wait.h>
#include <unistd.h>

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace attune {

#ifndef ATTUNE_VERSION_STRING
#define ATTUNE_VERSION_STRING "0.2.0"
#endif

std::string findPtxas() {
  if (const char *env = std::getenv("ATTUNE_PTXAS"))
    return access(env, X_OK) == 0 ? env : "";
  if (access("/usr/local/cuda/bin/ptxas", X_OK) == 0)
    return "/usr/local/cuda/bin/ptxas";
  if (const char *path = std::getenv("PATH")) {
    std::stringstream ss(path);
    std::string dir;
    while (std::getline(ss, dir, ':'))
      if (!dir.empty() && access((dir + "/ptxas").c_str(), X_OK) == 0)
        return dir + "/ptxas";
  }
  return "";
}

bool runPtxas(const std::string &ptxas, const std::string &ptx, const std::string &arch,
              const std::string &cubinPath, const std::string &kernel, PtxasReport &report,
              std::string &error) {
  char tmpl[] = "/tmp/attune-ptx-XXXXXX";
  char *dir = mkdtemp(tmpl);
  if (!dir) {
    error = "cannot create a temporary directory for ptxas";
    return false;
  }
  std::string in = std::string(dir) + "/kernel.ptx", log = std::string(dir) + "/ptxas.log";
  std::string out = cubinPath.empty() ? std::string(dir) + "/kernel.cubin" : cubinPath;
  {
    std::ofstream f(in);
    f << ptx;
  }
  // Arguments are passed as a list (no shell), so paths need no quoting.
  pid_t pid = fork();
  if (pid == 0) {
    FILE *l = std::freopen(log.c_str(), "w", stderr);
    (void)l;
    if (!std::freopen(log.c_str(), "a", stdout))
      _exit(127);
    execl(ptxas.c_str(), ptxas.c_str(), "-v", ("-arch=" + arch).c_str(), in.c_str(), "-o",
          out.c_str(), static_cast<char *>(nullptr));
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  std::ifstream lf(log);
  std::stringstream text;
  text << lf.rdbuf();
  report.log = text.str();
  fs::remove_all(dir);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    error = "ptxas rejected the PTX for " + arch + ":\n" + report.log;
    return false;
  }
  // The module also holds attn_combine: read the section of `kernel` only.
  std::string section = report.log;
  size_t at = section.find("Compiling entry function '" + kernel + "'");
  if (at != std::string::npos) {
    section = section.substr(at);
    size_t next = section.find("Compiling entry function", 1);
    if (next != std::string::npos)
      section = section.substr(0, next);
  }
  std::smatch m;
  if (std::regex_search(section, m, std::regex(R"(Used (\d+) registers)")))
    report.registers = std::stoi(m[1]);
  if (std::regex_search(section, m, std::regex(R"((\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads)"))) {
    report.stackFrame = std::stoi(m[1]);
    report.spillStores = std::stoi(m[2]);
    report.spillLoads = std::stoi(m[3]);
  }
  if (std::regex_search(section, m, std::regex(R"((\d+) bytes smem)")))
    report.smemStatic = std::stoi(m[1]);
  // Warnings, and the coded diagnostics ptxas prints as info: "(C7511) Potential
  // Performance Loss: wgmma.mma_async instructions are serialized ...".
  std::stringstream lines(report.log);
  std::regex warning(R"(^ptxas\s+(warning\s*:\s*(.*)|info\s*:\s*(\(C\d+\).*))$)");
  for (std::string line; std::getline(lines, line);)
    if (std::regex_search(line, m, warning))
      report.warnings.push_back(m[2].matched ? m[2].str() : m[3].str());
  return true;
}

rt::Json toRuntimeJson(const json &j) {
  // Through text: nlohmann prints doubles with max_digits10 digits, which read back to
  // the same double, and integers exactly; the runtime's reader keeps int64/uint64.
  return rt::Json::parse(j.dump());
}

rt::Manifest bundleManifest(const rt::Json &spec, const SpecInfo &info,
                            const std::vector<BundleVariant> &variants,
                            const std::vector<HostBundleVariant> &host) {
  rt::Manifest m;
  m.format = "attune-bundle/1";
  m.compilerVersion = ATTUNE_VERSION_STRING;
  m.specName = info.name;
  m.spec = spec;
  m.specHash = rt::specHashOf(spec);
  m.headsQ = info.headsQ;
  m.headsKv = info.headsKv;
  m.headDim = info.headDim;
  m.headDimV = info.headDimV;
  auto dtype = rt::parseDType(info.dtype);
  if (!dtype)
    throw rt::ManifestError("the spec's dtype '" + info.dtype + "' has no bundle dtype");
  m.dtype = *dtype;
  m.align = info.align;
  m.qStorage = info.qStorage;
  m.kvStorage = info.kvStorage;
  m.qOffset = info.qOffset;
  m.kvOffset = info.kvOffset;
  m.hasLse = info.lse;
  m.alignment = 16; // bytes: q, k, v, o pointers and row strides (cp.async)
  for (const InputDecl &in : info.inputs) {
    rt::InputDecl decl;
    decl.name = in.name;
    auto t = rt::parseDType(in.dtype);
    if (!t)
      throw rt::ManifestError("input '" + in.name + "': unknown dtype '" + in.dtype + "'");
    decl.dtype = *t;
    for (const Dim &d : in.shape) {
      rt::Dim dim;
      if (auto *i = std::get_if<int64_t>(&d))
        dim.size = *i;
      else
        dim.symbol = std::get<std::string>(d);
      decl.shape.push_back(dim);
    }
    m.inputs.push_back(std::move(decl));
  }
  auto params = [](const std::vector<KernelParam> &list) {
    std::vector<rt::Param> out;
    for (const KernelParam &p : list) {
      rt::Param param;
      param.name = p.name;
      param.type = p.type == "ptr" ? rt::ParamType::Ptr
                   : p.type == "i32" ? rt::ParamType::I32
                   : p.type == "f32" ? rt::ParamType::F32
                                     : rt::ParamType::I64;
      out.push_back(param);
    }
    return out;
  };
  auto expr = [](const std::string &text) { return rt::Expr::parse(text); };
  for (const BundleVariant &v : variants) {
    const GpuKernelInfo &k = v.kernel.info;
    rt::Variant out;
    out.name = v.config.name();
    out.arch = v.config.arch;
    rt::Json config = rt::Json::object();
    config.set("block_m", v.config.blockM);
    config.set("block_n", v.config.blockN);
    config.set("warps", v.config.warps());
    config.set("stages", 2);
    config.set("pack_gqa", v.config.packGqa);
    config.set("mma", v.config.wgmma ? "wgmma" : "mma.sync");
    config.set("pipelined", v.config.pipelined());
    out.config = config;
    out.isDefault = v.isDefault;
    out.ptx = out.name + ".ptx";
    out.kernel = k.symbol;
    out.threads = k.threads;
    out.smemBytes = k.smemBytes;
    out.grid[0] = expr(k.gridX);
    out.grid[1] = expr(k.gridY);
    out.grid[2] = expr(k.gridZ);
    out.params = params(k.params);
    if (!k.combineSymbol.empty()) {
      rt::SplitKv split;
      split.kernel = k.combineSymbol;
      split.threads = k.combineThreads;
      split.grid[0] = expr(k.combineGridX);
      split.grid[1] = expr("1");
      split.grid[2] = expr("1");
      split.params = params(k.combineParams);
      for (const auto &[name, bytes] : k.scratch) {
        split.scratchNames.push_back(name);
        split.scratchBytes.push_back(expr(bytes));
      }
      out.splitKv = std::move(split);
    }
    out.compileSeconds = v.kernel.seconds;
    if (v.ptxas) {
      out.cubin = out.name + ".cubin";
      rt::PtxasReport report;
      report.registers = v.ptxas->registers;
      report.spillStores = v.ptxas->spillStores;
      report.spillLoads = v.ptxas->spillLoads;
      report.stackFrame = v.ptxas->stackFrame;
      report.smemStatic = v.ptxas->smemStatic;
      out.ptxas = report;
      out.ptxasWarnings = v.ptxas->warnings;
    }
    m.variants.push_back(std::move(out));
  }
  for (const HostBundleVariant &h : host) {
    rt::HostVariant out;
    out.name = h.name;
    out.library = h.name + ".so";
    rt::Json config = rt::Json::object();
    config.set("block_m", h.blockM);
    config.set("block_n", h.blockN);
    out.config = config;
    out.isDefault = h.isDefault;
    out.cpu = h.library.cpu;
    out.features = h.library.features;
    auto kernel = [](const HostLibraryKernel &k) {
      rt::HostKernelDecl d;
      d.entry = k.entry;
      d.items = k.items;
      d.serialGrids = k.serialGrids;
      d.lse = k.lse;
      d.sequences = k.sequences;
      return d;
    };
    out.forward = kernel(h.library.forward);
    if (!h.library.backward.entry.empty())
      out.backward = kernel(h.library.backward);
    out.backwardError = h.library.backwardError;
    out.compileSeconds = h.library.seconds;
    m.hostVariants.push_back(std::move(out));
  }
  // Through the runtime's writer and reader: what is returned is what a loaded bundle
  // holds (parameter sources resolved, every rule of the reader checked).
  return rt::parseManifest(rt::manifestJson(m), "the manifest of " + info.name);
}

bool writeBundle(const std::string &dir, const json &spec, const SpecInfo &info,
                 std::vector<BundleVariant> &variants, bool assemble, std::string &error,
                 const std::vector<HostBundleVariant> &host) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    error = "cannot create '" + dir + "': " + ec.message();
    return false;
  }
  for (const BundleVariant &v : variants) {
    std::vector<std::string> issues = lintWgmmaRegisters(v.kernel.ptx);
    if (!issues.empty()) {
      error = "variant " + v.config.name() + ": the PTX breaks the wgmma register discipline:";
      for (const std::string &i : issues)
        error += "\n  " + i;
      return false;
    }
  }
  std::string ptxas = assemble ? findPtxas() : "";
  // Assemble first: the default of each arch becomes the first variant that does not
  // spill, when the preferred one does.
  if (!ptxas.empty()) {
    for (BundleVariant &v : variants) {
      PtxasReport report;
      std::string cubin = v.config.name() + ".cubin";
      if (!runPtxas(ptxas, v.kernel.ptx, v.config.arch, (fs::path(dir) / cubin).string(),
                    v.kernel.info.symbol, report, error))
        return false;
      v.ptxas = report;
      v.hasCubin = true;
    }
    auto spills = [](const BundleVariant &v) {
      return v.ptxas->spillStores > 0 || v.ptxas->spillLoads > 0;
    };
    for (BundleVariant &d : variants) {
      if (!d.isDefault || !spills(d))
        continue;
      for (BundleVariant &alt : variants)
        if (alt.config.arch == d.config.arch && !spills(alt)) {
          d.isDefault = false;
          alt.isDefault = true;
          break;
        }
    }
  }
  for (BundleVariant &v : variants) {
    fs::path ptxFile = fs::path(dir) / (v.config.name() + ".ptx");
    std::ofstream f(ptxFile);
    f << v.kernel.ptx;
    if (!f) {
      error = "cannot write " + ptxFile.string();
      return false;
    }
  }
  rt::Manifest manifest;
  try {
    manifest = bundleManifest(toRuntimeJson(spec), info, variants, host);
  } catch (const std::exception &e) {
    error = std::string("internal error: the bundle's manifest does not validate: ") + e.what();
    return false;
  }
  std::ofstream f(fs::path(dir) / "manifest.json");
  // Keys sorted, as manifests have always been written (tools and tests read them so).
  f << rt::manifestJson(manifest).pretty(/*sortKeys=*/true) << "\n";
  if (!f) {
    error = "cannot write " + (fs::path(dir) / "manifest.json").string();
    return false;
  }
  return true;
}

} // namespace attune
