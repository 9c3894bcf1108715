//===- Driver.h - shared pieces of the attnc commands -----------*- C++ -*-===//
#ifndef ATTUNE_TOOLS_ATTNC_DRIVER_H
#define ATTUNE_TOOLS_ATTNC_DRIVER_H

#include "codegen/Arguments.h"
#include "codegen/nvidia/KernelEmitter.h"
#include "specs/Importer.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/OwningOpRef.h"

namespace llvm {
class raw_ostream;
}

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace attune {
struct AttentionResult;
} // namespace attune

namespace attune::attnc {

/// A usage or input error: printed as one line, exit code 1 (2 for usage).
struct Failure {
  std::string message;
  int code = 1;
};

/// Command-line options: `--name value`, `--name=value`, repeatable, and flags.
class Options {
public:
  /// Parses argv[first..]; `flags` take no value, `repeated` may appear many times.
  Options(int argc, char **argv, int first, const std::vector<std::string> &valued,
          const std::vector<std::string> &flags,
          const std::vector<std::string> &repeated = {});
  std::vector<std::string> positional;
  std::optional<std::string> get(const std::string &name) const;
  std::string require(const std::string &name) const;
  std::vector<std::string> all(const std::string &name) const;
  bool flag(const std::string &name) const;
  std::optional<int64_t> getInt(const std::string &name, int64_t lo, int64_t hi) const;

private:
  std::map<std::string, std::vector<std::string>> values;
};

/// A spec (.json) or L1 IR (.mlir) loaded into a module.
struct LoadedSpec {
  mlir::OwningOpRef<mlir::ModuleOp> module;
  SpecInfo info;           // filled for JSON specs; sizes only for .mlir input
  bool fromJson = false;
};

/// Loads and verifies SPEC. `dtypeOverride` as in ImportOptions.
LoadedSpec loadSpec(mlir::MLIRContext &context, const std::string &path,
                    std::optional<std::string> dtypeOverride = std::nullopt);

void registerDialects(mlir::MLIRContext &context);

/// The --input NAME=FILE.npy bindings, read.
std::map<std::string, HostTensor> readInputs(const Options &opts);

/// "a,b,,c" -> {"a", "b", "c"}.
std::vector<std::string> splitList(const std::string &s);

/// What to compile into a bundle: a JSON spec, target archs, and the tile configs
/// (`--configs` text, "BMxBN,..."; none: the defaults for the head dim).
struct CompileRequest {
  std::string specPath;
  std::vector<std::string> archs;
  std::optional<std::string> configs;
  bool ptxas = true;
  bool verbose = false;
  /// From --arch (default `defaultArchs`) and --configs, both checked.
  static CompileRequest fromOptions(const Options &opts, const std::string &specPath,
                                    const std::string &defaultArchs = "sm_80,sm_90a,host");
};

/// Compiles every (arch, config) variant into the bundle directory `dir`; a line per
/// variant (PTX size, ptxas report) goes to `log` when given.
/// The variants' configurations of a bundle for `req`, arch by arch (the first of each
/// arch is its default), as `attnc compile` builds them.
std::vector<GpuConfig> bundleConfigs(const CompileRequest &req, const SpecInfo &info);

void compileBundle(const CompileRequest &req, const std::string &dir, llvm::raw_ostream *log);

/// The bundle cache's directory for `req` (docs/bundle-and-abi.md section 4), compiled
/// into the cache first when it is not there yet.
std::string cachedBundle(const CompileRequest &req, llvm::raw_ostream *log);

int cmdExplain(int argc, char **argv);
int cmdImport(int argc, char **argv);
int cmdRun(int argc, char **argv);
int cmdHash(int argc, char **argv);
int cmdCompile(int argc, char **argv);
int cmdTune(int argc, char **argv);

/// `attnc run --backend gpu`: args through the runtime on the GPU (opts: --bundle,
/// --arch, --configs, --variant); fills `result` (and its lse when `wantLse`).
void runOnGpu(const Options &opts, const std::string &specPath, const AttentionArgs &args,
              bool wantLse, AttentionResult &result);

} // namespace attune::attnc

#endif
