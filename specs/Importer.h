//===- Importer.h - JSON spec -> attn L1 IR ---------------------*- C++ -*-===//
//
// A spec (PATTERNS.md, specs/attn-spec.schema.json) becomes a module with one
// function:
//
//   func.func @<name>(%q, %k, %v, <extra inputs...>, %q_offset: i64,
//                     %kv_offset: i64) -> (o[, lse])
//
// holding attn.rope ops (when the spec has "rope") and one attn.attention. Every
// error names the JSON path that is wrong (e.g. `/mask/all/1/sliding_window/left:
// must be >= -1, got -5`); nothing in a malformed spec crashes the importer.
//
//===----------------------------------------------------------------------===//
#ifndef ATTUNE_SPECS_IMPORTER_H
#define ATTUNE_SPECS_IMPORTER_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"
#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace attune {

struct SpecError {
  std::string path;     // JSON pointer, "" for the whole document
  std::string message;
  std::string str() const { return (path.empty() ? "spec" : path) + ": " + message; }
};

/// One dimension of a declared input: a size or a symbol (B, Hq, Hkv, Sq, Skv, D, Dv
/// or a free symbol).
using Dim = std::variant<int64_t, std::string>;

struct InputDecl {
  std::string name;
  std::string dtype;          // "i32" | "f32"
  std::vector<Dim> shape;
  /// "sorted": true: non-decreasing along this dimension (the one named Sq or Skv)
  /// for every choice of the other indices; -1 when not declared sorted.
  int64_t sortedDim = -1;
};

/// The compile-time facts of a spec, with defaults resolved.
struct SpecInfo {
  std::string name;
  int64_t headsQ = 0, headsKv = 0, headDim = 0, headDimV = 0;
  std::string dtype;          // "bf16" | "fp16" | "f32"
  double scale = 0.0;
  std::string align;          // "bottom_right" | "top_left"
  std::optional<int64_t> qOffset, kvOffset;
  std::vector<InputDecl> inputs;
  std::string normalizer;     // "softmax" | "sigmoid" | "relu"
  bool lse = false;
  bool rope = false;
  /// "storage": "padded" | "ragged" (q), "padded" | "ragged" | "paged" (kv).
  std::string qStorage = "padded", kvStorage = "padded";
  std::string maskSummary;    // human-readable, for `attnc explain`
  std::string scoreSummary;
  std::string functionName;
};

struct ImportOptions {
  /// Element type of q, k, v and o in the IR; the spec's dtype when unset. The host
  /// back end imports with "f32": it runs the program in fp32 whatever the storage
  /// type on a GPU.
  std::optional<std::string> dtypeOverride;
};

/// Parses JSON text with the runtime's reader (runtime/src/Json.h), the one attune-rt and
/// the Python package use: a syntax error, anything after the document (a NUL byte
/// included), a duplicated key, an integer outside 64 bits or nesting deeper than
/// rt::kMaxJsonDepth (512) is an error with its line and column.
bool parseSpecText(const std::string &text, nlohmann::json &out, SpecError &error);
/// Reads and parses a spec file.
bool loadSpecFile(const std::string &path, nlohmann::json &out, SpecError &error);

/// Imports a parsed spec. Returns null and fills `error` on failure.
mlir::OwningOpRef<mlir::ModuleOp> importSpec(mlir::MLIRContext &context,
                                             const nlohmann::json &spec,
                                             SpecInfo &info, SpecError &error,
                                             const ImportOptions &options = {});

/// ALiBi's default slopes for `heads` heads (ofirpress/attention_with_linear_biases).
std::vector<double> alibiDefaultSlopes(int64_t heads);

} // namespace attune

#endif
