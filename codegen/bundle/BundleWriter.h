//===- BundleWriter.h - kernel bundles: manifest.json + PTX (+ cubin) -*- C++ -*-===//
//
// Writes the directory format of docs/bundle-and-abi.md. When ptxas is available
// ($ATTUNE_PTXAS, /usr/local/cuda/bin/ptxas or PATH), each variant's PTX is also
// assembled to a cubin and ptxas's register and spill report goes into the manifest.
//
//===----------------------------------------------------------------------===//
#ifndef ATTUNE_CODEGEN_BUNDLE_BUNDLEWRITER_H
#define ATTUNE_CODEGEN_BUNDLE_BUNDLEWRITER_H

#include "codegen/host/HostAot.h"
#include "codegen/nvidia/NvidiaPipeline.h"
#include "specs/Importer.h"

#include "Manifest.h"

#include <nlohmann/json_fwd.hpp>

#include <optional>
#include <string>
#include <vector>

namespace attune {

struct PtxasReport {
  int registers = 0;
  int spillStores = 0, spillLoads = 0;
  int stackFrame = 0;
  int smemStatic = 0;
  std::string log;
  /// ptxas's warnings for the module ("ptxas warning : ..." lines and the coded
  /// "ptxas info : (C7511) ..." diagnostics, prefix dropped), e.g. that
  /// wgmma.mma_async instructions are serialized.
  std::vector<std::string> warnings;
};

/// The ptxas executable, or "" when there is none.
std::string findPtxas();

/// Assembles `ptx` for `arch` into `cubinPath` (may be ""), parsing `ptxas -v` for the
/// entry `kernel` (the module holds attn_combine too).
bool runPtxas(const std::string &ptxas, const std::string &ptx, const std::string &arch,
              const std::string &cubinPath, const std::string &kernel, PtxasReport &report,
              std::string &error);

struct BundleVariant {
  GpuConfig config;
  PtxResult kernel;
  bool isDefault = false;
  std::optional<PtxasReport> ptxas;
  bool hasCubin = false;
};

/// A host variant: the library `<name>.so` already written into the bundle directory
/// (compileHostLibrary).
struct HostBundleVariant {
  std::string name;
  int64_t blockM = 64, blockN = 64;
  bool isDefault = false;
  HostLibrary library;
};

/// The manifest of a bundle of `variants`, as the runtime's own type, validated by the
/// runtime's reader (rt::parseManifest of rt::manifestJson): the bundle ABI (parameter
/// names, grid rule, scratch sizes) is what the emitter recorded in each variant's
/// GpuKernelInfo, written by the runtime's one writer. `spec` is the spec as given
/// (its hash is the runtime's). Variants' files are "<name>.ptx" and, with a ptxas
/// report, "<name>.cubin". Throws rt::ManifestError when the result does not validate
/// (a compiler bug: the message names the key).
rt::Manifest bundleManifest(const rt::Json &spec, const SpecInfo &info,
                            const std::vector<BundleVariant> &variants,
                            const std::vector<HostBundleVariant> &host = {});

/// nlohmann's tree as the runtime's value (numbers kept exactly).
rt::Json toRuntimeJson(const nlohmann::json &j);

/// Writes `dir` (created if needed). `spec` is the spec as given. Every variant's PTX
/// must pass the wgmma register lint (PtxLint.h) first.
bool writeBundle(const std::string &dir, const nlohmann::json &spec, const SpecInfo &info,
                 std::vector<BundleVariant> &variants, bool assemble, std::string &error,
                 const std::vector<HostBundleVariant> &host = {});

} // namespace attune

#endif
