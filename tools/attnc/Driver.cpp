//===- Driver.cpp - shared pieces of the attnc commands -------------------===//
#include "tools/attnc/Driver.h"

#include "dialect/AttnOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"
#include <nlohmann/json.hpp>

#include <algorithm>

namespace attune::attnc {

Options::Options(int argc, char **argv, int first, const std::vector<std::string> &valued,
                 const std::vector<std::string> &flags,
                 const std::vector<std::string> &repeated) {
  auto known = [](const std::vector<std::string> &list, const std::string &n) {
    return std::find(list.begin(), list.end(), n) != list.end();
  };
  for (int i = first; i < argc; ++i) {
    std::string a = argv[i];
    if (a.size() == 2 && a[0] == '-' && a[1] != '-')
      a = "-" + a; // -o means --o
    if (a.size() < 3 || a.compare(0, 2, "--") != 0) {
      if (a.size() > 1 && a[0] == '-')
        throw Failure{"unknown option '" + a + "'", 2};
      positional.push_back(a);
      continue;
    }
    std::string name = a.substr(2), value;
    bool hasValue = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      hasValue = true;
    }
    if (known(flags, name)) {
      if (hasValue)
        throw Failure{"option '--" + name + "' takes no value", 2};
      values[name].push_back("1");
      continue;
    }
    if (!known(valued, name) && !known(repeated, name))
      throw Failure{"unknown option '--" + name + "'", 2};
    if (!hasValue) {
      if (i + 1 >= argc)
        throw Failure{"option '--" + name + "' needs a value", 2};
      value = argv[++i];
    }
    if (!known(repeated, name) && values.count(name))
      throw Failure{"option '--" + name + "' given twice", 2};
    values[name].push_back(value);
  }
}

std::optional<std::string> Options::get(const std::string &name) const {
  auto it = values.find(name);
  if (it == values.end())
    return std::nullopt;
  return it->second.back();
}

std::string Options::require(const std::string &name) const {
  auto v = get(name);
  if (!v)
    throw Failure{"missing required option '--" + name + "'", 2};
  return *v;
}

std::vector<std::string> Options::all(const std::string &name) const {
  auto it = values.find(name);
  return it == values.end() ? std::vector<std::string>{} : it->second;
}

bool Options::flag(const std::string &name) const { return values.count(name) > 0; }

std::optional<int64_t> Options::getInt(const std::string &name, int64_t lo,
                                       int64_t hi) const {
  auto v = get(name);
  if (!v)
    return std::nullopt;
  char *end = nullptr;
  errno = 0;
  long long x = std::strtoll(v->c_str(), &end, 10);
  if (v->empty() || *end != '\0' || errno == ERANGE)
    throw Failure{"option '--" + name + "' needs an integer, got '" + *v + "'", 2};
  if (x < lo || x > hi)
    throw Failure{"option '--" + name + "' must be in [" + std::to_string(lo) + ", " +
                      std::to_string(hi) + "], got " + *v,
                  2};
  return x;
}

void registerDialects(mlir::MLIRContext &context) {
  context.loadDialect<mlir::attn::AttnDialect, mlir::func::FuncDialect,
                      mlir::arith::ArithDialect, mlir::math::MathDialect,
                      mlir::tensor::TensorDialect, mlir::scf::SCFDialect>();
}

static bool endsWith(const std::string &s, const std::string &suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

LoadedSpec loadSpec(mlir::MLIRContext &context, const std::string &path,
                    std::optional<std::string> dtypeOverride) {
  registerDialects(context);
  LoadedSpec loaded;
  if (endsWith(path, ".mlir")) {
    std::string diag;
    {
      llvm::raw_string_ostream os(diag);
      llvm::SourceMgr mgr;
      mlir::SourceMgrDiagnosticHandler handler(mgr, &context, os);
      loaded.module = mlir::parseSourceFile<mlir::ModuleOp>(path, mgr,
                                                            mlir::ParserConfig(&context));
    }
    if (!loaded.module)
      throw Failure{diag.empty() ? "cannot parse '" + path + "'" : diag};
    mlir::attn::AttentionOp op;
    loaded.module->walk([&](mlir::attn::AttentionOp a) { op = a; });
    if (!op)
      throw Failure{path + ": holds no attn.attention"};
    loaded.info.name = path;
    loaded.info.headsQ = op.getHeadsQ();
    loaded.info.headsKv = op.getHeadsKv();
    loaded.info.headDim = op.getHeadDim();
    loaded.info.headDimV = op.getHeadDimV();
    loaded.info.lse = static_cast<bool>(op.getLse());
    loaded.info.normalizer = mlir::attn::stringifyNormalizer(op.getNormalizer()).str();
    loaded.info.align = mlir::attn::stringifyAlign(op.getAlign()).str();
    loaded.info.scale = op.getScale().convertToDouble();
    loaded.info.maskSummary = "(given as IR)";
    loaded.info.scoreSummary = "(given as IR)";
    return loaded;
  }
  nlohmann::json spec;
  SpecError error;
  if (!loadSpecFile(path, spec, error))
    throw Failure{error.path.empty() ? error.message : error.str()};
  ImportOptions options;
  options.dtypeOverride = dtypeOverride;
  loaded.module = importSpec(context, spec, loaded.info, error, options);
  if (!loaded.module)
    throw Failure{path + ": " + error.str()};
  loaded.fromJson = true;
  return loaded;
}

} // namespace attune::attnc
