//===- AttnSemantics.h - scalar meaning of patterns with tables -*- C++ -*-===//
//
// Definitions that several parts need bit for bit: the reference evaluator and the
// pattern expansion, so that compiled kernels and the oracle agree on discrete
// choices (which T5 bucket a distance falls in) rather than merely on rounding; the
// host and NVIDIA back ends, which must rotate by the same RoPE frequencies.
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

/// How RoPE's frequencies are scaled for context extension (PATTERNS.md).
enum class RopeFrequencyScaling { none, linear, ntk, yarn };

/// The rotation frequency of feature pair m of a rotary embedding over `rotaryDim`
/// features: theta^(-2m / rotaryDim), then `linear` divides by factor (position
/// interpolation), `ntk` raises theta by factor^(rotaryDim / (rotaryDim - 2)), `yarn`
/// ramps per frequency between interpolation (f / factor) and extrapolation (f) by
/// gamma = clamp((L / wavelength - beta_slow) / (beta_fast - beta_slow), 0, 1),
/// L = originalMaxPosition (NTK-by-parts).
inline double ropeFrequency(int64_t m, int64_t rotaryDim, double theta,
                            RopeFrequencyScaling scaling, double factor,
                            int64_t originalMaxPosition, double betaFast, double betaSlow) {
  const double kPi = 3.14159265358979323846;
  if (scaling == RopeFrequencyScaling::ntk)
    theta *= std::pow(factor, double(rotaryDim) / double(rotaryDim - 2));
  double f = std::pow(theta, -2.0 * double(m) / double(rotaryDim));
  if (scaling == RopeFrequencyScaling::linear)
    return f / factor;
  if (scaling == RopeFrequencyScaling::yarn) {
    double ratio = double(originalMaxPosition) / (2.0 * kPi / f);
    double gamma = std::clamp((ratio - betaSlow) / (betaFast - betaSlow), 0.0, 1.0);
    return (1.0 - gamma) * f / factor + gamma * f;
  }
  return f;
}

} // namespace mlir::attn

#endif
