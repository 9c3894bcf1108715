//===- TileCommon.h - what attn-tile and attn-tile-backward share -*- C++ -*-===//
#ifndef ATTUNE_PASSES_TILECOMMON_H
#define ATTUNE_PASSES_TILECOMMON_H

#include "dialect/AttnOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"

namespace mlir::attn {

/// The block list buffer the key loop iterates (kv_list_*), or null when the list's
/// blocks do not match the tiles (BM a multiple of the list's rows, BN its columns).
Value kvListFor(AttentionOp op, ArrayRef<Value> inputBuffers, int64_t bm, int64_t bn);

/// An attn.for_kv_blocks over `op`'s kv_ranges (or `list`) and tile_class, cloned
/// with the L1 tensors mapped to the kernel's buffers by `inputs`; its body is empty.
ForKvBlocksOp createKvBlockLoop(OpBuilder &b, Location loc, AttentionOp op,
                                const IRMapping &inputs, Value batch, ValueRange heads,
                                Value qLo, Value qHi, Value qOffset, Value kvOffset, Value seqQ,
                                Value seqKv, Value list, int64_t bn);

} // namespace mlir::attn

#endif
