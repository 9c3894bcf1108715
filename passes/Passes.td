//===- Passes.td - the attn compiler passes ----------------*- tablegen -*-===//
//
// The pipeline, in order: attn-expand-patterns, attn-fuse, attn-analyze-blocks,
// attn-tile (L1 -> L2); for the backward, attn-differentiate-score after the
// expansion and attn-tile-backward in place of attn-tile. Back ends lower L2 (codegen/); attn-lower-kv-schedule turns
// L2's key-block schedule into loops for those without a key loop of their own.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_PASSES_TD
#define ATTN_PASSES_TD

include "mlir/Pass/PassBase.td"

def AttnExpandPatterns : Pass<"attn-expand-patterns", "::mlir::ModuleOp"> {
  let summary = "Replace named mask and score patterns by plain arith/math ops";
  let description = [{
    Every named pattern op in a mask or score region (attn.causal, attn.alibi, ...)
    becomes the arith/math ops of its definition (PATTERNS.md), so that every later
    pass sees one form. Per-head constants become attn.constant_table, T5 buckets
    integer comparisons against thresholds computed here, FIRE an scf.for over its
    hidden units.

    One rewrite pattern per op: declarative rules (passes/ExpandPatterns.td) for the
    one-expression definitions, C++ patterns for the others, applied by the greedy
    driver to the pattern ops alone, with no folding and no constant CSE. A pattern op
    that remains is an error at the op that says why (a T5 bias with more than 4096
    buckets, the importer's limit).
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect", "::mlir::math::MathDialect",
                           "::mlir::scf::SCFDialect"];
}

def AttnDifferentiateScore : Pass<"attn-differentiate-score", "::mlir::ModuleOp"> {
  let summary = "Build the reverse derivative of the score region (score_grad)";
  let description = [{
    Fills the `score_grad` region of every attn.attention, for the backward pass:
    given g = dL/ds' at the score s' = score(s, ...), it yields dL/ds = g ds'/ds and
    adds g ds'/dt[idx] to the gradient of every float input t the score reads
    (attn.accumulate_grad), so that every named pattern and every `expr` score gets
    its backward with no rule per pattern. Reverse mode over the region's ops after
    attn-expand-patterns: arith and math ops, select, attn.lookup, and loops whose
    carried float values are sums (FIRE's hidden units). An op without a derivative
    is an error at the op. Runs before attn-fuse, so the derivative is that of the
    score PATTERNS.md defines (natural-log units).
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect", "::mlir::scf::SCFDialect"];
}

def AttnFuse : Pass<"attn-fuse", "::mlir::ModuleOp"> {
  let summary = "Fold RoPE into the q/k reads and log2(e) into the score";
  let description = [{
    attn.rope ops feeding an attn.attention become its q_rope / k_rope attributes
    (the kernel rotates each tile as it loads it). For softmax, the score is moved to
    base 2 (`softmax_base2`): with an identity score region scale * log2(e) becomes
    the single multiply before exp2, otherwise the region's result is multiplied by
    log2(e) once. With base2=false only RoPE is folded (the backward pass works
    in natural-log units).
  }];
  let options = [
    Option<"base2", "base2", "bool", "true", "move the softmax to base 2">,
  ];
}

def AttnAnalyzeBlocks : Pass<"attn-analyze-blocks", "::mlir::ModuleOp"> {
  let summary = "Derive key ranges and a tile classifier from the mask";
  let description = [{
    Fills the `kv_ranges` and `tile_class` regions of every attn.attention:
    kv_ranges gives, in closed form, the key intervals a block of query rows can see
    (from the linear constraints of affine masks: causal, windows, sinks, prefixes,
    ...); tile_class evaluates the mask region over intervals (per-tile boxes of the
    indices; min/max summaries of the tensors the mask reads) and says EMPTY, FULL
    or PARTIAL, soundly. Block lists are recognised and recorded (kv_list_*).
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect"];
}

def AttnTile : Pass<"attn-tile", "::mlir::ModuleOp"> {
  let summary = "Lower attn.attention (L1) to the tiled FlashAttention program (L2)";
  let description = [{
    Replaces each function holding an attn.attention by a kernel function over
    buffers: attn.grid over (batch, head, query block); per query block the kv
    loops over the ranges of `kv_ranges`, skipping EMPTY tiles, evaluating the mask
    only on PARTIAL ones; online softmax (or sigmoid/relu weights); o and lse stored
    once. Runs attn-analyze-blocks' results; tile sizes are options.

    A kernel over ragged or paged storage (the attention's q_storage / kv_storage),
    or any kernel with `sequence-lengths`, is a per-sequence kernel: after the
    offsets it takes the sequence arguments
      q:  padded: q_lens i32 [B] (empty: every sequence has Sq rows);
          ragged: cu_seqlens_q i32 [B + 1]
      kv: padded: kv_lens i32 [B] (empty: Skv); ragged: cu_seqlens_kv i32 [B + 1];
          paged: page_table i32 [B, max_pages], kv_lens i32 [B]
      q_offset_from_lengths i64 (1: q_offset_b = q_offset + kv_len_b - q_len_b),
      max_seq_q i64 (the grid's query blocks)
    and each grid item reads its sequence's lengths and row bases from them; ragged
    buffers are [total, H, D] (o [total, Hq, Dv], lse [total, Hq]), paged k/v
    [pages, page_size, Hkv, D] read through attn.load_tile's page table.
  }];
  let options = [
    Option<"blockM", "block-m", "int64_t", "64", "rows of q per tile (BM)">,
    Option<"blockN", "block-n", "int64_t", "64", "rows of k/v per tile (BN)">,
    Option<"sequenceLengths", "sequence-lengths", "bool", "false",
           "give padded kernels the per-sequence arguments too (q_lens, kv_lens)">,
  ];
  let dependentDialects = ["::mlir::arith::ArithDialect", "::mlir::scf::SCFDialect",
                           "::mlir::memref::MemRefDialect", "::mlir::func::FuncDialect"];
}

def AttnTileBackward : Pass<"attn-tile-backward", "::mlir::ModuleOp"> {
  let summary = "Lower attn.attention (L1) to the tiled backward program (L2)";
  let description = [{
    Replaces each function holding an attn.attention by a kernel function that
    computes dq, dk, dv and the gradients of the float inputs the score reads,
    from q, k, v, the inputs, o, lse, dO and dlse (FlashAttention-2's algorithm):
    a query-major attn.grid (the forward's key schedule) accumulates dq; a
    key-major attn.grid over (batch, kv head, key block) visits, for each query
    head of the kv head, the query blocks of the transposed schedule (the mask
    solved for the query index in closed form, as the forward's kv_ranges are for
    the key index; a block list transposed in the prologue by a counting sort;
    every query block where neither applies) whose tile_class is not EMPTY (EMPTY
    tiles are never loaded) and accumulates dk, dv and, through score_grad's
    accumulate_grad, the tensor gradients. No gradient is shared between grid items but the tensor
    gradients, which the back end sums in a fixed order. Needs score_grad
    (attn-differentiate-score), the block analysis, and natural-log scores.
  }];
  let options = [
    Option<"blockM", "block-m", "int64_t", "64", "rows of q per tile (BM)">,
    Option<"blockN", "block-n", "int64_t", "64", "rows of k/v per tile (BN)">,
  ];
  let dependentDialects = ["::mlir::arith::ArithDialect", "::mlir::scf::SCFDialect",
                           "::mlir::memref::MemRefDialect", "::mlir::func::FuncDialect"];
}

def AttnLowerKvSchedule : Pass<"attn-lower-kv-schedule", "::mlir::ModuleOp"> {
  let summary = "Lower attn.for_kv_blocks (the key-block schedule) to an scf.while";
  let description = [{
    For back ends without a key loop of their own (the host): every
    attn.for_kv_blocks becomes an scf.while that steps through its schedule with
    `mlir::attn::KvSchedule` (passes/KvSchedule.h), the same walker the NVIDIA
    lowering uses: intervals of the ranges region end to end (or the list's entries),
    blocks visited once, EMPTY tiles skipped, the split's share only. The body runs
    once per visited block with its index and tile class.
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect", "::mlir::scf::SCFDialect",
                           "::mlir::memref::MemRefDialect"];
}

#endif // ATTN_PASSES_TD
