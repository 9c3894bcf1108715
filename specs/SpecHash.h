//===- SpecHash.h - the content hash bundles and caches are keyed by -*- C++ -*-===//
#ifndef ATTUNE_SPECS_SPECHASH_H
#define ATTUNE_SPECS_SPECHASH_H

#include <nlohmann/json_fwd.hpp>

#include <string>

namespace attune {

/// The spec hash of docs/bundle-and-abi.md section 5: sha256 of the spec's canonical
/// JSON text. Computed by the runtime's canonical writer and SHA-256 (runtime/src/Json.h,
/// Sha256.h), the one implementation attnc, attune-rt and the Python package share; the
/// nlohmann tree is copied into the runtime's value exactly (int64, uint64 and double
/// kept as they are). Throws std::invalid_argument for a tree nested deeper than
/// rt::kMaxJsonDepth, which no spec file can be (the reader refuses it).
std::string specHash(const nlohmann::json &spec);

} // namespace attune

#endif
