//===- HalfFloat.h - bf16 and fp16 conversions on the host ------*- C++ -*-===//
//
// The kernels store q, k, v and o as bf16 or fp16; the host sides that feed them or
// imitate them (the simulator, `attnc run --backend gpu`, the runtime's host variants)
// convert with these, rounding
// to nearest even as the hardware's cvt.rn does, so host and device agree bit for bit.
//
//===----------------------------------------------------------------------===//
#ifndef ATTUNE_RUNTIME_HALFFLOAT_H
#define ATTUNE_RUNTIME_HALFFLOAT_H

#include <cmath>
#include <cstdint>
#include <cstring>

namespace attune::half {

inline uint32_t floatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

inline float bitsFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t toBf16(float f) {
  uint32_t x = floatBits(f);
  if ((x & 0x7f800000u) == 0x7f800000u && (x & 0x7fffffu))
    return 0x7fc0; // a quiet NaN: rounding could otherwise carry a NaN into infinity
  x += 0x7fffu + ((x >> 16) & 1u);
  return uint16_t(x >> 16);
}

inline float fromBf16(uint16_t h) { return bitsFloat(uint32_t(h) << 16); }

inline uint16_t toF16(float f) {
  uint32_t x = floatBits(f);
  uint32_t sign = (x >> 16) & 0x8000u;
  int32_t exp = int32_t((x >> 23) & 0xff) - 127 + 15;
  uint32_t mant = x & 0x7fffffu;
  if (((x >> 23) & 0xff) == 0xff)
    return uint16_t(sign | 0x7c00u | (mant ? 0x200u : 0));
  if (exp >= 31)
    return uint16_t(sign | 0x7c00u);
  if (exp <= 0) { // subnormal in fp16 (or zero)
    if (exp < -10)
      return uint16_t(sign);
    mant |= 0x800000u;
    uint32_t shift = uint32_t(14 - exp);
    uint32_t half = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1), mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1)))
      ++half;
    return uint16_t(sign | half);
  }
  uint32_t half = (uint32_t(exp) << 10) | (mant >> 13);
  uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (half & 1)))
    ++half; // a carry into the exponent is the right rounding, up to infinity
  return uint16_t(sign | half);
}

inline float fromF16(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ffu;
  if (exp == 0) {
    if (!mant)
      return bitsFloat(sign);
    float v = std::ldexp(float(mant), -24);
    return sign ? -v : v;
  }
  if (exp == 31)
    return bitsFloat(sign | 0x7f800000u | (mant << 13));
  return bitsFloat(sign | ((exp - 15 + 127) << 23) | (mant << 13));
}

} // namespace attune::half

#endif
