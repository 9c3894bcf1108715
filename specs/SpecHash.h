//===- SpecHash.h - the content hash bundles and caches are keyed by -*- C++ -*-===//
#ifndef ATTUNE_SPECS_SPECHASH_H
#define ATTUNE_SPECS_SPECHASH_H

#include <nlohmann/json_fwd.hpp>

#include <string>

namespace attune {

/// SHA-256 of `data`, lower-case hex.
std::string sha256Hex(const std::string &data);

/// The canonical text of a spec (docs/bundle-and-abi.md section 5): keys sorted, no
/// whitespace, shortest round-trip numbers, UTF-8 kept.
std::string canonicalJson(const nlohmann::json &spec);

/// sha256Hex(canonicalJson(spec)).
std::string specHash(const nlohmann::json &spec);

} // namespace attune

#endif
