//===- BundleWriter.cpp - kernel bundles: manifest.json + PTX (+ cubin) ----===//
#include "codegen/bundle/BundleWriter.h"

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

static json shapeJson(const InputDecl &in) {
  json shape = json::array();
  for (const Dim &d : in.shape) {
    if (auto *i = std::get_if<int64_t>(&d))
      shape.push_back(*i);
    else
      shape.push_back(std::get<std::string>(d));
  }
  return shape;
}

bool writeBundle(const std::string &dir, const json &spec, const SpecInfo &info,
                 std::vector<BundleVariant> &variants, bool assemble, std::string &error) {
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
  json manifest;
  manifest["format"] = "attune-bundle/1";
  manifest["compiler_version"] = ATTUNE_VERSION_STRING;
  manifest["spec_name"] = info.name;
  manifest["spec_hash"] = specHash(spec);
  manifest["spec"] = spec;
  manifest["heads_q"] = info.headsQ;
  manifest["heads_kv"] = info.headsKv;
  manifest["head_dim"] = info.headDim;
  manifest["head_dim_v"] = info.headDimV;
  manifest["dtype"] = info.dtype;
  manifest["align"] = info.align;
  manifest["q_offset"] = info.qOffset ? json(*info.qOffset) : json(nullptr);
  manifest["kv_offset"] = info.kvOffset ? json(*info.kvOffset) : json(nullptr);
  manifest["outputs"] = info.lse ? json::array({"o", "lse"}) : json::array({"o"});
  manifest["alignment"] = 16; // bytes: q, k, v, o pointers and row strides (cp.async)
  json inputs = json::array();
  for (const InputDecl &in : info.inputs)
    inputs.push_back({{"name", in.name}, {"dtype", in.dtype}, {"shape", shapeJson(in)}});
  manifest["inputs"] = inputs;
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
  json list = json::array();
  for (BundleVariant &v : variants) {
    std::string name = v.config.name();
    std::string ptxFile = name + ".ptx";
    {
      std::ofstream f(fs::path(dir) / ptxFile);
      f << v.kernel.ptx;
      if (!f) {
        error = "cannot write " + (fs::path(dir) / ptxFile).string();
        return false;
      }
    }
    json variant;
    variant["name"] = name;
    variant["arch"] = v.config.arch;
    variant["config"] = {{"block_m", v.config.blockM}, {"block_n", v.config.blockN},
                         {"warps", v.config.warps()}, {"stages", 2},
                         {"pack_gqa", v.config.packGqa},
                         {"mma", v.config.wgmma ? "wgmma" : "mma.sync"},
                         {"pipelined", v.config.pipelined()}};
    variant["default"] = v.isDefault;
    variant["ptx"] = ptxFile;
    variant["kernel"] = v.kernel.info.symbol;
    variant["threads"] = v.kernel.info.threads;
    variant["smem_bytes"] = v.kernel.info.smemBytes;
    variant["grid"] = {{"x", v.kernel.info.gridX}, {"y", v.kernel.info.gridY},
                       {"z", v.kernel.info.gridZ}};
    json params = json::array();
    for (const KernelParam &p : v.kernel.info.params)
      params.push_back({{"name", p.name}, {"type", p.type}});
    variant["params"] = params;
    if (!v.kernel.info.combineSymbol.empty()) {
      const GpuKernelInfo &k = v.kernel.info;
      json combineParams = json::array();
      for (const KernelParam &p : k.combineParams)
        combineParams.push_back({{"name", p.name}, {"type", p.type}});
      json scratch = json::object();
      for (const auto &[name, bytes] : k.scratch)
        scratch[name] = bytes;
      variant["split_kv"] = {{"scratch", scratch},
                             {"combine", {{"kernel", k.combineSymbol},
                                          {"threads", k.combineThreads},
                                          {"grid", {{"x", k.combineGridX}, {"y", "1"}, {"z", "1"}}},
                                          {"params", combineParams}}}};
    }
    variant["compile_seconds"] = v.kernel.seconds;
    if (v.ptxas) {
      const PtxasReport &report = *v.ptxas;
      variant["cubin"] = name + ".cubin";
      variant["ptxas"] = {{"registers", report.registers},
                          {"spill_stores", report.spillStores},
                          {"spill_loads", report.spillLoads},
                          {"stack_frame", report.stackFrame},
                          {"smem_static", report.smemStatic}};
      variant["ptxas_warnings"] = report.warnings;
    }
    list.push_back(variant);
  }
  manifest["variants"] = list;
  std::ofstream f(fs::path(dir) / "manifest.json");
  f << manifest.dump(2) << "\n";
  if (!f) {
    error = "cannot write " + (fs::path(dir) / "manifest.json").string();
    return false;
  }
  return true;
}

} // namespace attune
