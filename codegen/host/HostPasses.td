//===- HostPasses.td - the host (CPU) back end --------------*- tablegen -*-===//
#ifndef ATTN_HOST_PASSES_TD
#define ATTN_HOST_PASSES_TD

include "mlir/Pass/PassBase.td"

def AttnLowerTilesToLoops : Pass<"attn-lower-tiles-to-loops", "::mlir::ModuleOp"> {
  let summary = "L2 -> L3cpu: the tiled program as scalar loops over buffers";
  let description = [{
    attn.grid becomes a sequential loop nest; every tile op becomes scf.for loops
    of memref loads and stores (mask and score regions inlined per element); tensor
    reads (attn.lookup, attn.contains, attn.box_*) become bounds-checked loads. Tile
    buffers move to the function entry so that the stack does not grow per
    iteration. The result lowers to LLVM with the upstream conversions.
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect", "::mlir::math::MathDialect",
                           "::mlir::scf::SCFDialect", "::mlir::memref::MemRefDialect"];
}

#endif
