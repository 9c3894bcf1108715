//===- PtxMathModel.cpp - PTX's approximate f32 transcendentals, modelled --===//
#include "codegen/nvidia/PtxMath.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace attune {

namespace {

uint32_t bitsOf(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

//===----------------------------------------------------------------------===//
// PTX's approximate f32 transcendentals
//===----------------------------------------------------------------------===//
// convert-attn-to-nvvm turns f32 math.exp2/log2/sin/cos into ex2/lg2/sin/cos.approx.ftz.f32
// (NVVM intrinsic calls, PtxMath.h) and builds exp, log and tanh from them, so these
// four instructions are all the simulator models. It models what they do differently
// from libm: .ftz flushes subnormal inputs and results to
// a zero of the same sign; the special values are the instructions' own (ex2(-inf) =
// +0, lg2(+-0) = -inf, lg2(x < 0) = NaN, sin/cos(+-inf) = NaN); sin and cos see the
// argument the way the hardware reduces it (x times 1/(2 pi), rounded toward zero to
// f32, in turns), so large arguments lose accuracy as on the device; and every other
// result carries an error at the documented bound, its sign alternating with the
// input's last mantissa bit, so that a kernel that needs exact transcendentals fails
// here rather than on the device.

/// .ftz: a subnormal is a zero of the same sign.
float ftz(float x) { return std::fpclassify(x) == FP_SUBNORMAL ? std::copysign(0.0f, x) : x; }

double approxError(float input, double bound) { return (bitsOf(input) & 1) ? -bound : bound; }

/// ex2.approx.ftz.f32: at most 2 ulp (relative 2^-22) from 2^x.
float ex2Approx(float x) {
  x = ftz(x);
  if (std::isnan(x))
    return NAN;
  if (std::isinf(x))
    return x < 0 ? 0.0f : INFINITY;
  if (x == 0.0f)
    return 1.0f;
  return ftz(float(std::exp2(double(x)) * (1.0 + approxError(x, 0x1p-22))));
}

/// lg2.approx.ftz.f32: within 2^-22 (absolute, relative beyond |log2 x| > 1).
float lg2Approx(float x) {
  x = ftz(x);
  if (std::isnan(x) || x < 0.0f)
    return NAN; // -inf included
  if (x == 0.0f)
    return -INFINITY;
  if (std::isinf(x))
    return INFINITY;
  double r = std::log2(double(x));
  return float(r + approxError(x, 0x1p-22 * std::max(1.0, std::fabs(r))));
}

/// x * 1/(2 pi) rounded toward zero to f32: the argument in turns, as the hardware
/// takes it (FMUL.RZ before MUFU.SIN/COS).
double turnsOf(float x) {
  double exact = double(x) * double(float(0.15915494309189535));
  float f = float(exact);
  if (std::fabs(double(f)) > std::fabs(exact))
    f = std::nextafter(f, 0.0f);
  return double(f);
}

/// sin/cos.approx.ftz.f32: absolute error 2^-20.5 (within [-pi, pi]).
float sinCosApprox(float x, bool cosine) {
  x = ftz(x);
  if (std::isnan(x) || std::isinf(x))
    return NAN;
  if (x == 0.0f)
    return cosine ? 1.0f : x;
  double a = 6.283185307179586 * turnsOf(x);
  double r = (cosine ? std::cos(a) : std::sin(a)) + approxError(x, 0x1.6a09e6p-21);
  return ftz(float(std::clamp(r, -1.0, 1.0)));
}

float sinApprox(float x) { return sinCosApprox(x, false); }
float cosApprox(float x) { return sinCosApprox(x, true); }

} // namespace

namespace ptxmath {
float ex2(float x) { return ex2Approx(x); }
float lg2(float x) { return lg2Approx(x); }
float sin(float x) { return sinApprox(x); }
float cos(float x) { return cosApprox(x); }
} // namespace ptxmath

} // namespace attune
