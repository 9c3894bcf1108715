//===- Manifest.h - manifest.json of a kernel bundle ------------*- C++ -*-===//
//
// Reads and validates the bundle manifest of docs/bundle-and-abi.md section 1. Every
// missing or ill-typed key is an error naming its JSON pointer:
//   manifest.json: /variants/2/grid/x: expected a string
// Keys this runtime does not know are ignored, so the compiler may add some.
//
//===----------------------------------------------------------------------===//
#ifndef ATTUNE_RUNTIME_MANIFEST_H
#define ATTUNE_RUNTIME_MANIFEST_H

#include "Expr.h"
#include "Json.h"

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace attune::rt {

class ManifestError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

enum class DType { BF16, FP16, F32, I32 };

/// "bf16" -> BF16 ...; nullopt for anything else.
std::optional<DType> parseDType(const std::string &s);
const char *dtypeName(DType t);
size_t dtypeSize(DType t);

/// A dimension of an extra input: a literal size or a symbol (B, Hq, ..., or free).
struct Dim {
  int64_t size = 0;   // when symbol is empty
  std::string symbol; // "B", "Sq", "Nv", ...
  bool isSymbol() const { return !symbol.empty(); }
};

struct InputDecl {
  std::string name;
  DType dtype = DType::I32;
  std::vector<Dim> shape;
};

enum class ParamType { Ptr, I64, I32, F32 };
const char *paramTypeName(ParamType t);

/// What a kernel parameter is filled with (docs/bundle-and-abi.md section 2).
struct ParamSource {
  enum Kind {
    TensorPtr,   // q, k, v, o, lse: `tensor` = 0..4
    InputPtr,    // input:<name>: `input` indexes Manifest::inputs
    Size,        // batch, seq_q, ...: `name`
    Offset,      // q_offset, kv_offset: `name`
    Stride,      // <t>_stride_{b,h,s}: `tensor` (0..3 = q, k, v, o), `dim` (0..2)
    InputDim,    // input:<name>:dim<k>: `input`, `dim`
    Scratch,     // scratch:<name>: `input` indexes SplitKv::scratchNames
    SequencePtr, // cu_seqlens_q, cu_seqlens_kv, page_table, kv_lens, q_lens: `tensor` 0..4
  } kind = Size;
  int tensor = 0, input = 0, dim = 0;
};

struct Param {
  std::string name;
  ParamType type = ParamType::I64;
  ParamSource source;
};

struct PtxasReport {
  int64_t registers = 0, spillStores = 0, spillLoads = 0, smemStatic = 0, stackFrame = 0;
};

/// Split-KV (docs/bundle-and-abi.md section 2): the variant's kernel takes num_splits;
/// with more than one, the runtime allocates the scratch buffers, launches the kernel
/// with grid z over batch * num_splits, then `kernel` (same PTX module) to combine.
struct SplitKv {
  std::string kernel;
  int64_t threads = 0;
  Expr grid[3];
  std::vector<Param> params;
  std::vector<std::string> scratchNames;
  std::vector<Expr> scratchBytes; // byte sizes, over the grid names and num_splits
};

struct Variant {
  std::string name, arch, ptx, kernel;
  std::optional<std::string> cubin;
  Json config; // object, as written (block_m, block_n, warps, stages, ...)
  bool isDefault = false;
  int64_t threads = 0, smemBytes = 0;
  Expr grid[3];
  std::vector<Param> params;
  std::optional<PtxasReport> ptxas;
  /// ptxas's warnings when the compiler assembled the variant (optional key).
  std::vector<std::string> ptxasWarnings;
  std::optional<SplitKv> splitKv;
  /// The compiler's time for this variant (informational; "compile_seconds").
  std::optional<double> compileSeconds;
  /// Compute capability the arch needs: sm_80 -> 80; `exact` for arch-specific
  /// targets (sm_90a) that run only on that capability.
  int archCapability = 0;
  bool archExact = false;

  /// "block_m=64 block_n=64 warps=4 stages=2" for tables.
  std::string configSummary() const;
};

/// One kernel of a host variant's library (runtime/src/HostLaunch.h): the packed
/// entry and item-count symbols, the grids that run serially, and `lse`: the forward
/// writes lse / the backward reads it (softmax).
struct HostKernelDecl {
  std::string entry, items;
  std::vector<int64_t> serialGrids;
  bool lse = false;
  /// The entry takes the per-sequence arguments after the offsets (the sequence
  /// buffers, q_offset_from_lengths, max_seq_q): "sequences" in the manifest.
  bool sequences = false;
};

/// A host (CPU) variant (`attnc compile --arch host`): the tiled kernels compiled
/// ahead of time for the compiling machine's CPU, in a shared object of the bundle.
/// They compute in float32 over contiguous tensors (the runtime converts).
struct HostVariant {
  std::string name, library;
  Json config; // block_m, block_n
  bool isDefault = false;
  std::string cpu, features;
  HostKernelDecl forward;
  std::optional<HostKernelDecl> backward;
  std::string backwardError; // why there is no backward, when there is none
  std::optional<double> compileSeconds;
};

struct Manifest {
  std::string format, compilerVersion, specName, specHash;
  Json spec;
  int64_t headsQ = 0, headsKv = 0, headDim = 0, headDimV = 0;
  DType dtype = DType::BF16;
  std::string align; // "bottom_right" | "top_left"
  std::optional<int64_t> qOffset, kvOffset;
  /// "storage" (optional, default padded): q "padded" | "ragged", kv "padded" |
  /// "ragged" | "paged" (runtime/src/Sequences.h).
  std::string qStorage = "padded", kvStorage = "padded";
  bool hasLse = false;
  std::vector<InputDecl> inputs;
  std::vector<Variant> variants;
  /// Optional "host": host variants (a bundle may have only those).
  std::vector<HostVariant> hostVariants;
  /// Optional "alignment" (bytes) the kernels need of q/k/v/o pointers and row strides.
  int64_t alignment = 0;

  /// Free symbols of the inputs (not B, Hq, Hkv, Sq, Skv, D, Dv), in order of first use.
  std::vector<std::string> freeSymbols() const;
  int findInput(const std::string &name) const;
  int findVariant(const std::string &name) const;
  int findHostVariant(const std::string &name) const;
};

/// Validates a parsed manifest. `where` prefixes messages ("manifest.json"). Besides
/// types and values: spec_hash must be the runtime's hash of `spec` (specHashOf),
/// every architecture must have a default variant, sizes are bounded (heads 4096,
/// head dims 512, shared memory 2^31 - 1), grid expressions have no constant zero
/// divisor.
Manifest parseManifest(const Json &doc, const std::string &where = "manifest.json");

/// The manifest as JSON, the inverse of parseManifest: the one writer of the bundle
/// ABI. The compiler fills a Manifest and writes this (codegen/bundle/BundleWriter.cpp),
/// so that no key is spelled twice. Parameters are written by name and type (their
/// sources follow from the names); archCapability/archExact from `arch`.
Json manifestJson(const Manifest &m);

/// The largest manifest.json loadManifest reads (64 MiB).
constexpr uint64_t kMaxManifestBytes = uint64_t(64) << 20;

/// Reads and validates `<dir>/manifest.json` (JSON syntax errors carry line/column;
/// at most kMaxManifestBytes), and checks that every PTX and cubin file a variant
/// names exists in `dir` (the message names the file and the variant).
Manifest loadManifest(const std::string &dir);

/// The spec hash of docs/bundle-and-abi.md section 5: sha256 (hex) of the canonical
/// JSON of `spec`.
std::string specHashOf(const Json &spec);

/// Parses "sm_80" / "sm_90a" into a capability (80, 90) and whether it is exact.
bool parseArch(const std::string &arch, int &capability, bool &exact);

/// True when code for `v` runs on a device of compute capability major.minor.
bool archRunsOn(const Variant &v, int major, int minor);

/// The size symbols of the shape language and the grid names they correspond to.
bool isKnownShapeSymbol(const std::string &s);

} // namespace attune::rt

#endif
