//===- AttnTileOps.td - L2: the tiled FlashAttention program -*- tablegen -*-===//
//
// `attn-tile` turns an attn.attention into a loop nest over these ops: a grid over
// (batch, head, query block), a loop over the key blocks that are not EMPTY, and tile
// ops that read and write small f32 tile buffers (memref<BM x N x f32>) in
// destination-passing style. The program is target-independent: the host back end
// lowers each op to loops, the NVIDIA back end maps tiles onto warps, registers and
// shared memory.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_TILE_OPS_TD
#define ATTN_TILE_OPS_TD

include "dialect/AttnBase.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "mlir/IR/OpAsmInterface.td"

def Attn_Tile2D : MemRefRankOf<[F32], [2]>;
def Attn_Tile1D : MemRefRankOf<[F32], [1]>;

def Attn_GridOp : Attn_Op<"grid", [
    DeclareOpInterfaceMethods<OpAsmOpInterface, ["getAsmBlockArgumentNames"]>]> {
  let summary = "independent work items over (batch, head, query block)";
  let description = [{
    Runs the body once for every (b, h, qb) in [0, batch) x [0, heads) x
    [0, q_blocks), in any order or in parallel: a CPU loop nest, a GPU grid.
  }];
  let arguments = (ins Index:$batch, Index:$heads, Index:$q_blocks,
                       I64Attr:$block_m, I64Attr:$block_n);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = "$batch `,` $heads `,` $q_blocks attr-dict-with-keyword custom<GridBody>($body)";
  let hasRegionVerifier = 1;
}

def Attn_ForKvBlocksOp : Attn_Op<"for_kv_blocks", [AttrSizedOperandSegments,
    DeclareOpInterfaceMethods<OpAsmOpInterface, ["getAsmBlockArgumentNames"]>]> {
  let summary = "the key-block schedule of one query block, and the loop over it";
  let description = [{
    Runs `body(kb, cls)` for every key block kb (of `block_n` keys) that the query
    rows [q_lo, q_hi) of batch `batch` visit, in schedule order, with cls its tile
    class (attn.tile_class: EMPTY 0, PARTIAL 1, FULL 2; EMPTY blocks are never
    visited). This op is the one definition of the schedule: every back end lowers it
    through `mlir::attn::KvSchedule` (passes/KvSchedule.h), the host to an scf.while,
    the NVIDIA lowering to its prefetching key loop.

    For each head h of `heads` in order, `ranges(batch, h, q_lo, q_hi, q_offset,
    kv_offset, seq_q, seq_kv)` yields key intervals [lo_r, hi_r) (clamped to
    [0, seq_kv)); interval r covers the blocks [floor(lo_r / BN), ceil(hi_r / BN))
    (none when hi_r <= lo_r). The positions of all intervals laid end to end form the
    schedule; a block that an earlier interval covered is not visited again.
    With `list` (i32 [B, H, R, K], -1 padded; one head only) the schedule is instead
    the entries of list[batch, heads[0], q_lo / list_rows] (none when that row is
    outside the list), entries outside [0, ceil(seq_kv / BN)) and repeats of earlier
    entries skipped. Both visit the same non-EMPTY blocks (the classes region reads
    the same list); a lowering that gives a block the rows of several heads drops
    the list, which is per head, and walks the ranges.

    The class of block kb is `tile_class(batch, h, q_lo, q_hi, kb BN, min(kb BN + BN,
    seq_kv), q_offset, kv_offset, seq_q, seq_kv)` when it is the same for every head
    of `heads`, else PARTIAL (a CTA holding the rows of several heads: GQA packing).

    With `split(s of n)`, only the positions [s c, min((s + 1) c, total)) of the
    schedule are visited, c = ceil(total / n): the splits of split-KV share the work
    evenly whatever the mask, and every block is visited by exactly one split.
  }];
  let arguments = (ins I64:$batch, Variadic<I64>:$heads, I64:$q_lo, I64:$q_hi,
                       I64:$q_offset, I64:$kv_offset, I64:$seq_q, I64:$seq_kv,
                       Optional<AnyMemRef>:$list, Optional<I64>:$split,
                       Optional<I64>:$num_splits, I64Attr:$block_n,
                       OptionalAttr<I64Attr>:$list_rows);
  let regions = (region SizedRegion<1>:$ranges, SizedRegion<1>:$tile_class,
                        SizedRegion<1>:$body);
  let assemblyFormat = [{
    `batch` `(` $batch `)` `heads` `(` $heads `)` `queries` `(` $q_lo `,` $q_hi `)`
    `offsets` `(` $q_offset `,` $kv_offset `)` `sizes` `(` $seq_q `,` $seq_kv `)`
    (`list` `(` $list^ `:` type($list) `)`)? (`split` `(` $split^ `of` $num_splits `)`)?
    `block_n` $block_n attr-dict-with-keyword
    custom<KvScheduleRegions>($ranges, $tile_class, $body)
  }];
  let hasRegionVerifier = 1;
}

def Attn_FillTileOp : Attn_Op<"fill_tile"> {
  let summary = "sets every element of a tile buffer";
  let arguments = (ins AnyTypeOf<[Attn_Tile2D, Attn_Tile1D]>:$tile, F32Attr:$value);
  let assemblyFormat = "$tile `,` $value attr-dict `:` type($tile)";
}

def Attn_LoadTileOp : Attn_Op<"load_tile", [AttrSizedOperandSegments]> {
  let summary = "rows [row, row + R) of source[b, h] into a tile, zero past valid_rows";
  let description = [{
    Converts to f32. With `rope`, rotates each row r at position
    row + r + position_offset as it is read (q and k after `attn-fuse`).

    With `pages(table[s], page_size)` (a paged KV cache seen as source [1, H, pages x
    page_size, D], table the [B, max_pages] page table, s the sequence), row
    x = row + r is read from source row table[s, x / page_size] * page_size +
    x mod page_size; a page id outside [0, pages) reads zeros, never memory outside
    the cache.
  }];
  let arguments = (ins AnyStridedMemRef:$source, Index:$batch, Index:$head, Index:$row,
                       Index:$valid_rows, Attn_Tile2D:$tile,
                       Optional<I64>:$position_offset, Optional<AnyMemRef>:$page_table,
                       Optional<Index>:$page_row, Optional<Index>:$page_size,
                       OptionalAttr<Attn_RopeAttr>:$rope);
  let assemblyFormat = [{
    $source `[` $batch `,` $head `,` $row `]` `valid` `(` $valid_rows `)` `into` $tile
    (`positions` `(` $position_offset^ `)`)?
    (`pages` `(` $page_table^ `[` $page_row `]` `:` type($page_table) `,` $page_size `)`)?
    attr-dict `:` type($source) `,` type($tile)
  }];
  let builders = [OpBuilder<(ins "Value":$source, "Value":$batch, "Value":$head,
      "Value":$row, "Value":$valid_rows, "Value":$tile, "Value":$position_offset,
      "RopeAttr":$rope), [{
    build($_builder, $_state, source, batch, head, row, valid_rows, tile, position_offset,
          Value(), Value(), Value(), rope);
  }]>];
  let hasVerifier = 1;
}

def Attn_QkTileOp : Attn_Op<"qk_tile"> {
  let summary = "s = scale * q k^T over one (query block, key block) tile";
  let description = [{
    s[r, c] = scale * sum_d q[r, d] k[c, d].

    With `rows(n)`, only the first n rows are computed (the tile's valid queries, which
    may be far fewer than its height when decoding); the others are left as they are.
  }];
  let arguments = (ins Attn_Tile2D:$q, Attn_Tile2D:$k, Attn_Tile2D:$s, F64Attr:$scale,
                       Optional<Index>:$rows);
  let assemblyFormat = [{
    $q `,` $k `into` $s (`rows` `(` $rows^ `)`)? attr-dict `:` type($q) `,` type($k) `,` type($s)
  }];
  let builders = [OpBuilder<(ins "Value":$q, "Value":$k, "Value":$s, "FloatAttr":$scale), [{
    build($_builder, $_state, q, k, s, scale, Value());
  }]>];
  let hasVerifier = 1;
}

def Attn_ScoreTileOp : Attn_Op<"score_tile", [AttrSizedOperandSegments,
    DeclareOpInterfaceMethods<OpAsmOpInterface, ["getAsmBlockArgumentNames"]>]> {
  let summary = "the score epilogue: score transforms, and the mask on PARTIAL tiles";
  let description = [{
    For every element (r, c) of the tile, with i = q_lo + r and j = kv_lo + c:
    s[r, c] = score(s[r, c], b, h, i, j, i + q_offset, j + kv_offset, seq_q, seq_kv).
    With `masked`, an element whose pair the mask rejects, or with j >= seq_kv, is set
    to -inf instead. Without it the tile is known FULL and the mask region is not
    evaluated (it is kept for printing and verification only). The regions are those
    of attn.attention; `inputs` are the buffers their lookups read.

    With `rows(n)`, only the first n rows are computed (the tile's valid queries, which
    may be far fewer than its height when decoding); the others are left as they are.
  }];
  let arguments = (ins Attn_Tile2D:$s, I64:$b, I64:$h, I64:$q_lo, I64:$kv_lo,
                       I64:$q_offset, I64:$kv_offset, I64:$seq_q, I64:$seq_kv,
                       Variadic<AnyStridedMemRef>:$inputs, Optional<Index>:$rows,
                       UnitAttr:$masked);
  let regions = (region SizedRegion<1>:$mask, SizedRegion<1>:$score);
  let assemblyFormat = [{
    $s `at` `(` $b `,` $h `,` $q_lo `,` $kv_lo `)` `offsets` `(` $q_offset `,` $kv_offset `)`
    `sizes` `(` $seq_q `,` $seq_kv `)` (`inputs` `(` $inputs^ `:` type($inputs) `)`)?
    (`rows` `(` $rows^ `)`)? attr-dict `:` type($s) custom<ScoreTileRegions>($mask, $score)
  }];
  let builders = [OpBuilder<(ins "Value":$s, "Value":$b, "Value":$h, "Value":$q_lo,
      "Value":$kv_lo, "Value":$q_offset, "Value":$kv_offset, "Value":$seq_q, "Value":$seq_kv,
      "ValueRange":$inputs, "bool":$masked), [{
    build($_builder, $_state, s, b, h, q_lo, kv_lo, q_offset, kv_offset, seq_q, seq_kv, inputs,
          Value(), masked);
  }]>];
  let hasRegionVerifier = 1;
}

def Attn_SoftmaxTileOp : Attn_Op<"softmax_tile", [AllTypesMatch<["m", "l", "alpha"]>]> {
  let summary = "online softmax: new row max, weights, rescale factor and row sum";
  let description = [{
    Per row r: m' = max(m[r], max_c s[r, c]); alpha[r] = e(m[r] - m'); s[r, c] =
    e(s[r, c] - m'); l[r] = alpha[r] l[r] + sum_c s[r, c]; m[r] = m'. e is exp2 with
    `base2`, else exp. A row whose scores are all -inf keeps m = -inf, gets weights 0
    and alpha = 1: it never produces NaN.

    With `rows(n)`, only the first n rows are computed (the tile's valid queries, which
    may be far fewer than its height when decoding); the others are left as they are.
  }];
  let arguments = (ins Attn_Tile2D:$s, Attn_Tile1D:$m, Attn_Tile1D:$l,
                       Attn_Tile1D:$alpha, Optional<Index>:$rows, UnitAttr:$base2);
  let assemblyFormat = [{
    $s `,` $m `,` $l `,` $alpha (`rows` `(` $rows^ `)`)? attr-dict `:` type($s) `,` type($m)
  }];
  let builders = [OpBuilder<(ins "Value":$s, "Value":$m, "Value":$l, "Value":$alpha,
      "bool":$base2), [{
    build($_builder, $_state, s, m, l, alpha, Value(), base2);
  }]>];
}

def Attn_WeightsTileOp : Attn_Op<"weights_tile"> {
  let summary = "sigmoid or relu weights of a score tile (no running statistics)";
  let description = [{
    sigmoid: s = 1 / (1 + exp(-(s + beta))), beta = `beta` when set, else
    -log(seq_kv); relu: s = max(s, 0) / seq_kv. -inf scores (masked) give 0.
  }];
  let arguments = (ins Attn_Tile2D:$s, I64:$seq_kv, Attn_NormalizerAttr:$normalizer,
                       OptionalAttr<F64Attr>:$beta);
  let assemblyFormat = "$s `seq_kv` `(` $seq_kv `)` attr-dict `:` type($s)";
  let hasVerifier = 1;
}

def Attn_PvTileOp : Attn_Op<"pv_tile", [AttrSizedOperandSegments]> {
  let summary = "acc = alpha * acc + p v (alpha per row; absent means 1)";
  let description = [{
    acc[r, d] = alpha[r] acc[r, d] + sum over c with p[r, c] != 0 of p[r, c] v[c, d]:
    a pair of weight 0 (masked, or a weight that underflowed float32) contributes
    nothing, even where v[c, d] is NaN or infinite (PATTERNS.md: a masked pair
    contributes nothing; 0 * NaN would make the row NaN).

    With `rows(n)`, only the first n rows are computed (the tile's valid queries, which
    may be far fewer than its height when decoding); the others are left as they are.
  }];
  let arguments = (ins Attn_Tile2D:$p, Attn_Tile2D:$v, Attn_Tile2D:$acc,
                       Optional<Attn_Tile1D>:$alpha, Optional<Index>:$rows);
  let assemblyFormat = [{
    $p `,` $v `into` $acc (`rescale` `(` $alpha^ `:` type($alpha) `)`)?
    (`rows` `(` $rows^ `)`)? attr-dict `:` type($p) `,` type($v) `,` type($acc)
  }];
  let builders = [OpBuilder<(ins "Value":$p, "Value":$v, "Value":$acc, "Value":$alpha), [{
    build($_builder, $_state, p, v, acc, alpha, Value());
  }]>];
  let hasVerifier = 1;
}

def Attn_StoreTileOp : Attn_Op<"store_tile"> {
  let summary = "o[b, h, row + r] = acc[r] / l[r] (0 when l[r] == 0), for r < valid_rows";
  let description = [{
    Without `l` the accumulator is stored as it is (sigmoid and relu weights are not
    normalised).
  }];
  let arguments = (ins Attn_Tile2D:$acc, Optional<Attn_Tile1D>:$l, AnyStridedMemRef:$dest,
                       Index:$batch, Index:$head, Index:$row, Index:$valid_rows);
  let assemblyFormat = [{
    $acc (`divide` `(` $l^ `:` type($l) `)`)? `into` $dest `[` $batch `,` $head `,` $row `]`
    `valid` `(` $valid_rows `)` attr-dict `:` type($acc) `,` type($dest)
  }];
}

def Attn_StoreLseOp : Attn_Op<"store_lse", [AllTypesMatch<["m", "l"]>]> {
  let summary = "lse[b, h, row + r] = m[r] + log(l[r]) (-inf when l[r] == 0)";
  let description = [{
    With `base2`, m is in log2 units: lse = (m + log2(l)) * ln(2).
  }];
  let arguments = (ins Attn_Tile1D:$m, Attn_Tile1D:$l, AnyStridedMemRef:$dest,
                       Index:$batch, Index:$head, Index:$row, Index:$valid_rows,
                       UnitAttr:$base2);
  let assemblyFormat = [{
    $m `,` $l `into` $dest `[` $batch `,` $head `,` $row `]` `valid` `(` $valid_rows `)`
    attr-dict `:` type($m) `,` type($dest)
  }];
}

//===----------------------------------------------------------------------===//
// The backward pass (attn-tile-backward)
//===----------------------------------------------------------------------===//

def Attn_LoadRowsOp : Attn_Op<"load_rows"> {
  let summary = "rows [row, row + R) of source[b, h] (a [B, H, S] buffer) into a 1-D tile";
  let description = [{ Zero past `valid_rows` (lse, dlse of the backward pass). }];
  let arguments = (ins AnyStridedMemRef:$source, Index:$batch, Index:$head, Index:$row,
                       Index:$valid_rows, Attn_Tile1D:$tile);
  let assemblyFormat = [{
    $source `[` $batch `,` $head `,` $row `]` `valid` `(` $valid_rows `)` `into` $tile
    attr-dict `:` type($source) `,` type($tile)
  }];
}

def Attn_RowDotTileOp : Attn_Op<"rowdot_tile"> {
  let summary = "d[r] = sum_c a[r, c] b[r, c] (D = rowsum(dO o) of the backward pass)";
  let arguments = (ins Attn_Tile2D:$a, Attn_Tile2D:$b, Attn_Tile1D:$d);
  let assemblyFormat = "$a `,` $b `into` $d attr-dict `:` type($a) `,` type($b) `,` type($d)";
}

def Attn_GradWeightsTileOp : Attn_Op<"grad_weights_tile", [AttrSizedOperandSegments]> {
  let summary = "recomputed weights p and dL/ds' of a score tile";
  let description = [{
    `s` holds the scores the normaliser saw (-inf where masked), `dp` = dO v^T.
    Per element, in place: s becomes the weight p and dp becomes dL/ds':
      softmax: p = exp(s - lse[r]) (0 when lse[r] = -inf),
               dL/ds' = p (dp - delta[r] + dlse[r]) (dlse absent: 0);
      sigmoid: p = 1 / (1 + exp(-(s + beta))), dL/ds' = dp p (1 - p);
      relu:    p = max(s, 0) / seq_kv, dL/ds' = dp / seq_kv where s > 0, else 0.
    A weight of 0 gives dL/ds' = 0 whatever dp is.
  }];
  let arguments = (ins Attn_Tile2D:$s, Attn_Tile2D:$dp, Optional<Attn_Tile1D>:$lse,
                       Optional<Attn_Tile1D>:$delta, Optional<Attn_Tile1D>:$dlse,
                       I64:$seq_kv, Attn_NormalizerAttr:$normalizer,
                       OptionalAttr<F64Attr>:$beta);
  let assemblyFormat = [{
    $s `,` $dp (`lse` `(` $lse^ `:` type($lse) `)`)? (`delta` `(` $delta^ `:` type($delta) `)`)?
    (`dlse` `(` $dlse^ `:` type($dlse) `)`)? `seq_kv` `(` $seq_kv `)` attr-dict `:` type($s) `,` type($dp)
  }];
}

def Attn_ScoreGradTileOp : Attn_Op<"score_grad_tile"> {
  let summary = "dL/ds over a tile through the score region's derivative (score_grad)";
  let description = [{
    For every element (r, c), i = q_lo + r, j = kv_lo + c, of a pair inside
    [0, seq_q) x [0, seq_kv) that the mask allows (every pair without `masked`) and
    whose ds[r, c] is not 0: ds[r, c] = scale * score_grad(ds[r, c], s[r, c], b, h,
    i, j, i + q_offset, j + kv_offset, seq_q, seq_kv), where s holds the scaled dot
    products; other elements become 0 and pass nothing to the tensor gradients. The
    region's attn.accumulate_grad ops add into the gradient buffers (`grads`); those
    of a pass that must not (the dq pass) have been dropped.
  }];
  let arguments = (ins Attn_Tile2D:$ds, Attn_Tile2D:$s, I64:$b, I64:$h, I64:$q_lo,
                       I64:$kv_lo, I64:$q_offset, I64:$kv_offset, I64:$seq_q, I64:$seq_kv,
                       Variadic<AnyStridedMemRef>:$inputs, F64Attr:$scale, UnitAttr:$masked);
  let regions = (region SizedRegion<1>:$mask, SizedRegion<1>:$score_grad);
  let assemblyFormat = [{
    $ds `,` $s `at` `(` $b `,` $h `,` $q_lo `,` $kv_lo `)` `offsets` `(` $q_offset `,` $kv_offset `)`
    `sizes` `(` $seq_q `,` $seq_kv `)` (`inputs` `(` $inputs^ `:` type($inputs) `)`)?
    attr-dict `:` type($ds) `,` type($s) `mask` $mask `score_grad` $score_grad
  }];
}

def Attn_TnTileOp : Attn_Op<"tn_tile"> {
  let summary = "acc[c, d] += sum_r a[r, c] b[r, d] (dv += p^T dO, dk += ds^T q)";
  let description = [{ Terms with a[r, c] == 0 contribute nothing (as in pv_tile). }];
  let arguments = (ins Attn_Tile2D:$a, Attn_Tile2D:$b, Attn_Tile2D:$acc);
  let assemblyFormat = "$a `,` $b `into` $acc attr-dict `:` type($a) `,` type($b) `,` type($acc)";
}

def Attn_RopeGradTileOp : Attn_Op<"rope_grad_tile"> {
  let summary = "t[r] = R(row + r + position_offset)^T t[r]: a gradient back through RoPE";
  let arguments = (ins Attn_Tile2D:$tile, Index:$row, I64:$position_offset,
                       Attn_RopeAttr:$rope);
  let assemblyFormat = [{
    $tile `at` `(` $row `)` `positions` `(` $position_offset `)` attr-dict `:` type($tile)
  }];
}

#endif // ATTN_TILE_OPS_TD
