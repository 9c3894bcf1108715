//===- Sha256.h - SHA-256 (FIPS 180-4) --------------------------*- C++ -*-===//
#ifndef ATTUNE_RUNTIME_SHA256_H
#define ATTUNE_RUNTIME_SHA256_H

#include <cstddef>
#include <cstdint>
#include <string>

namespace attune::rt {

/// Incremental SHA-256.
class Sha256 {
public:
  Sha256();
  void update(const void *data, size_t size);
  void update(const std::string &s) { update(s.data(), s.size()); }
  /// The digest as 64 lower-case hex characters; the object must not be updated after.
  std::string hexDigest();

private:
  void block(const uint8_t *p);
  uint32_t h_[8];
  uint8_t buffer_[64];
  size_t buffered_ = 0;
  uint64_t length_ = 0; // bytes hashed so far
};

/// SHA-256 of `data` in lower-case hex.
std::string sha256Hex(const std::string &data);

} // namespace attune::rt

#endif
