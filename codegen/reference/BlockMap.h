//===- BlockMap.h - which tiles a kernel visits, and their classes -*- C++ -*-===//
//
// Runs an analysed attn.attention's kv_ranges and tile_class regions (with the
// region interpreter) for concrete sizes and tile shape, iterating key blocks the
// way attn-tile's loops do. `attnc explain` prints the result; tests check that it
// is sound against the mask element by element.
//
//===----------------------------------------------------------------------===//
#ifndef ATTUNE_CODEGEN_REFERENCE_BLOCKMAP_H
#define ATTUNE_CODEGEN_REFERENCE_BLOCKMAP_H

#include "mlir/Support/LLVM.h"
#include "llvm/Support/LogicalResult.h"

#include <cstdint>
#include <string>
#include <vector>

namespace mlir::attn {
class AttentionOp;
}

namespace attune {

struct HostTensor;

struct BlockMapQuery {
  int64_t blockM = 64, blockN = 64;
  int64_t seqQ = 0, seqKv = 0, qOffset = 0, kvOffset = 0;
  int64_t batch = 0, head = 0;
};

/// Per tile: ' ' not visited (outside the key ranges or lists), 'e' visited but
/// classified EMPTY (skipped before loading), 'P' PARTIAL (mask evaluated), 'F' FULL
/// (no mask code).
struct BlockMap {
  int64_t qBlocks = 0, kvBlocks = 0;
  std::vector<char> tiles; // row-major [qBlocks][kvBlocks]
  bool listMode = false;
  char at(int64_t qb, int64_t kb) const { return tiles[qb * kvBlocks + kb]; }
  int64_t count(char c) const;
};

/// `op` must have its block analysis (attn-analyze-blocks). `inputs` are the extra
/// tensors in the op's order (needed when the analysis reads them).
/// Errors (no analysis, a region the interpreter cannot run) are emitted at the op.
mlir::FailureOr<BlockMap> computeBlockMap(mlir::attn::AttentionOp op,
                                          const std::vector<const HostTensor *> &inputs,
                                          const BlockMapQuery &query);

} // namespace attune

#endif
