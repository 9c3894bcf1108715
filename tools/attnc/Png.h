//===- Png.h - a minimal RGB PNG writer (stored deflate) --------*- C++ -*-===//
#ifndef ATTUNE_TOOLS_ATTNC_PNG_H
#define ATTUNE_TOOLS_ATTNC_PNG_H

#include <cstdint>
#include <string>
#include <vector>

namespace attune::attnc {

/// Writes `rgb` (width * height * 3 bytes, row-major) as a PNG file.
bool writePng(const std::string &path, int width, int height, const std::vector<uint8_t> &rgb,
              std::string &error);

} // namespace attune::attnc

#endif
