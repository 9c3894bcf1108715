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

    With `grid-range`, the work items of the function's grids, laid end to end in
    (batch, head, block) order (grid after grid), form one flat range: the kernel
    function takes two more index arguments [begin, end) and runs only those items,
    so that threads can share a launch, and a function `<kernel>_grid_items` with
    the kernel's arguments (without the range) returns how many items there are. Items
    are independent except where they accumulate into a tensor gradient
    (attn.accumulate_grad): the caller runs such a range in one thread, in order.
  }];
  let options = [
    Option<"gridRange", "grid-range", "bool", "false",
           "the grids as one flat range [begin, end) of work items, given as two more "
           "arguments; adds <kernel>_grid_items">,
  ];
  let dependentDialects = ["::mlir::arith::ArithDialect", "::mlir::math::MathDialect",
                           "::mlir::scf::SCFDialect", "::mlir::memref::MemRefDialect"];
}

#endif
