//===- Driver.h - shared pieces of the attnc commands -----------*- C++ -*-===//
#ifndef ATTUNE_TOOLS_ATTNC_DRIVER_H
#define ATTUNE_TOOLS_ATTNC_DRIVER_H

#include "specs/Importer.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/OwningOpRef.h"

#include <map>
#include <optional>
#include <string>
#include <vector>

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

int cmdExplain(int argc, char **argv);
int cmdImport(int argc, char **argv);
int cmdRun(int argc, char **argv);
int cmdHash(int argc, char **argv);
int cmdCompile(int argc, char **argv);

} // namespace attune::attnc

#endif
