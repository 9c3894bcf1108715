//===- AttnOps.h - ops of the attn dialect ----------------------*- C++ -*-===//
#ifndef ATTUNE_DIALECT_ATTNOPS_H
#define ATTUNE_DIALECT_ATTNOPS_H

#include "dialect/AttnDialect.h"
#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/Interfaces/ControlFlowInterfaces.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

namespace mlir::attn {
/// The trait of the named mask and score patterns (attn.causal, attn.alibi, ...;
/// `Attn_NamedPattern` in AttnOps.td): attn-expand-patterns expands every op with it.
template <typename ConcreteType>
class NamedPattern : public OpTrait::TraitBase<ConcreteType, NamedPattern> {};
} // namespace mlir::attn

#define GET_OP_CLASSES
#include "dialect/AttnOps.h.inc"

namespace mlir {
class IRMapping;
namespace attn {
/// Tile classes yielded by `tile_class` regions.
enum TileClass : int32_t { kEmpty = 0, kPartial = 1, kFull = 2 };

/// Regions of attn ops may use constants defined above them (the canonicalizer
/// hoists constants out of non-isolated regions). Before a region is cloned
/// elsewhere, this clones those constants at `b`'s insertion point into `mapping`.
void cloneConstantsUsedIn(Region &region, OpBuilder &b, IRMapping &mapping);

/// Clones the single block of `region` at `b`'s insertion point with its arguments
/// bound to `args` (and the values it captures mapped by `mapping`); returns the
/// values its attn.yield yields. The one way every pass and back end inlines an attn
/// region (mask, score, kv_ranges, tile_class).
SmallVector<Value> inlineRegion(OpBuilder &b, Region &region, ValueRange args,
                                IRMapping mapping);
} // namespace attn
} // namespace mlir

#endif
