//===- AttnSemantics.h - scalar meaning of patterns with tables -*- C++ -*-===//
//
// Definitions that both the reference evaluator and the pattern expansion need
// bit for bit, so that compiled kernels and the oracle agree on discrete choices
// (which T5 bucket a distance falls in) rather than merely on rounding.
//
//===----------------------------------------------------------------------===//
#ifndef ATTUNE_DIALECT_ATTNSEMANTICS_H
#define ATTUNE_DIALECT_ATTNSEMANTICS_H

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace mlir::attn {

/// The most T5 buckets attn-expand-patterns expands (it compares the distance against
/// one threshold per bucket); also the importer's limit on num_buckets.
constexpr int64_t kMaxT5Buckets = 4096;

/// The T5 relative-position bucket of d = q - kv: mesh-tensorflow's
/// _relative_position_bucket with relative_position = kv - q; the logarithmic part in
/// double precision, truncated toward zero, clamped to the last bucket.
inline int64_t t5Bucket(int64_t d, bool bidirectional, int64_t numBuckets,
                        int64_t maxDistance) {
  int64_t ret = 0, n = d;
  if (bidirectional) {
    numBuckets /= 2;
    if (n < 0)
      ret += numBuckets;
    n = n < 0 ? -n : n;
  } else {
    n = std::max<int64_t>(n, 0);
  }
  int64_t maxExact = numBuckets / 2;
  if (n < maxExact)
    return ret + n;
  double ratio = std::log(double(maxDistance) / double(maxExact));
  if (!(ratio > 0.0))
    return ret + numBuckets - 1;
  double large = double(maxExact) + std::log(double(n) / double(maxExact)) / ratio *
                                        double(numBuckets - maxExact);
  int64_t bucket = large >= double(numBuckets - 1) ? numBuckets - 1 : int64_t(large);
  return ret + bucket;
}

} // namespace mlir::attn

#endif
