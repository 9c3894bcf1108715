//===- AttnOps.td - L1: the meaning of an attention variant --*- tablegen -*-===//

#ifndef ATTN_OPS_TD
#define ATTN_OPS_TD

include "dialect/AttnBase.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "mlir/Interfaces/ControlFlowInterfaces.td"
include "mlir/IR/OpAsmInterface.td"
include "mlir/IR/RegionKindInterface.td"

//===----------------------------------------------------------------------===//
// attn.attention
//===----------------------------------------------------------------------===//

def Attn_AttentionOp : Attn_Op<"attention", [
    DeclareOpInterfaceMethods<OpAsmOpInterface, ["getAsmBlockArgumentNames"]>]> {
  let summary = "one attention variant: o = normalise(score(q k^T)) v over allowed pairs";
  let description = [{
    Computes, for every batch b, query head h, query row i and key row j:

      s(i, j)  = score(scale * <q[b,h,i], k[b,hk,j]>, b, h, i, j, P(i), K(j), Sq, Skv)
      allowed  = mask(b, h, i, j, P(i), K(j), Sq, Skv)
      o[b,h,i] = sum over allowed j of p(i, j) v[b,hk,j]

    with hk = h / (Hq / Hkv), P(i) = i + q_offset, K(j) = j + kv_offset, and p the
    normaliser's weights (softmax, sigmoid or relu; see PATTERNS.md). A row with no
    allowed key gives o = 0 and lse = -inf.

    Block arguments of `mask`: (b, h, q_idx, kv_idx, q, kv, seq_q, seq_kv), all i64,
    where q and kv are the positions. `score` takes the score s (f32) first, then the
    same eight values. Both end in `attn.yield` (i1 for the mask, f32 for the score).

    `kv_ranges` and `tile_class` are empty until `attn-analyze-blocks` fills them:
      kv_ranges(b, h, q_lo, q_hi, q_offset, kv_offset, seq_q, seq_kv) yields 2n i64
        values, n half-open key-index intervals [lo, hi) whose union holds every key
        allowed for some query row in [q_lo, q_hi);
      tile_class(b, h, q_lo, q_hi, kv_lo, kv_hi, q_offset, kv_offset, seq_q, seq_kv)
        yields an i32 class of the tile [q_lo, q_hi) x [kv_lo, kv_hi):
        0 = EMPTY (no pair allowed), 1 = PARTIAL (unknown), 2 = FULL (all allowed).

    `score_grad` is empty until `attn-differentiate-score` fills it with the reverse
    derivative of `score`:
      score_grad(g, s, b, h, q_idx, kv_idx, q, kv, seq_q, seq_kv) yields the f32
        g * d score(s, ...) / ds, and adds g * d score / d t[idx] to the gradient of
        every float input t that `score` reads, by attn.accumulate_grad.

    The op always takes both offsets. `default_q_offset` / `default_kv_offset` (from
    the spec) and `align` say which ones a caller passes when the user gives none:
    kv_offset defaults to 0; q_offset to seq_kv - seq_q (bottom_right) or 0 (top_left).

    The tensors are the logical [B, H, S, D] batch of sequences. `q_storage` and
    `kv_storage` (absent: padded) say how a call's buffers hold them, which only the
    tiled kernel's signature sees (attn-tile): padded [B, H, S, D] with optional
    per-sequence lengths; ragged [total, H, D] rows with cu_seqlens [B + 1] (sequence
    b is rows [cu[b], cu[b + 1])); paged (k/v only) [pages, page_size, H, D] pages,
    with page_table [B, max_pages] and kv_lens [B] (key j of sequence b is slot
    j mod page_size of page page_table[b, j / page_size]). Every sequence b is then an
    attention of its own lengths (seq_q, seq_kv in the regions are b's), with
    q_offset_b = kv_len_b - q_len_b under bottom_right when the caller gives none;
    tensor inputs keep [B, ..., Sq, Skv] dims over the batch's longest sequences,
    indexed by the per-sequence i and j.
  }];

  let arguments = (ins
    AnyRankedTensor:$q, AnyRankedTensor:$k, AnyRankedTensor:$v,
    Variadic<AnyRankedTensor>:$inputs,
    I64:$q_offset, I64:$kv_offset,
    F64Attr:$scale,
    Attn_NormalizerAttr:$normalizer,
    OptionalAttr<F64Attr>:$sigmoid_beta,
    Attn_AlignAttr:$align,
    OptionalAttr<I64Attr>:$default_q_offset,
    OptionalAttr<I64Attr>:$default_kv_offset,
    DefaultValuedAttr<StrArrayAttr, "{}">:$input_names,
    DefaultValuedAttr<ArrayAttr, "{}">:$input_dims,
    OptionalAttr<Attn_RopeAttr>:$q_rope,
    OptionalAttr<Attn_RopeAttr>:$k_rope,
    UnitAttr:$softmax_base2,
    OptionalAttr<I64Attr>:$kv_list_input,
    OptionalAttr<DenseI64ArrayAttr>:$kv_list_block,
    OptionalAttr<Attn_StorageAttr>:$q_storage,
    OptionalAttr<Attn_StorageAttr>:$kv_storage,
    OptionalAttr<DenseI64ArrayAttr>:$sorted_dims);
  let results = (outs AnyRankedTensor:$o, Optional<AnyRankedTensor>:$lse);
  let regions = (region SizedRegion<1>:$mask, SizedRegion<1>:$score,
                        AnyRegion:$kv_ranges, AnyRegion:$tile_class,
                        AnyRegion:$score_grad);

  let assemblyFormat = [{
    `q` `(` $q `:` type($q) `)` `k` `(` $k `:` type($k) `)` `v` `(` $v `:` type($v) `)`
    (`inputs` `(` $inputs^ `:` type($inputs) `)`)?
    `offsets` `(` $q_offset `,` $kv_offset `)`
    attr-dict `->` type(results)
    custom<AttentionRegions>($mask, $score, $kv_ranges, $tile_class, $score_grad)
  }];
  let hasVerifier = 1;
  let hasRegionVerifier = 1;

  let extraClassDeclaration = [{
    static constexpr unsigned kNumMaskArgs = 8;
    static constexpr unsigned kNumScoreArgs = 9;
    static constexpr unsigned kNumRangeArgs = 8;
    static constexpr unsigned kNumClassArgs = 10;
    static constexpr unsigned kNumScoreGradArgs = 10;
    int64_t getHeadsQ();
    int64_t getHeadsKv();
    int64_t getHeadDim();
    int64_t getHeadDimV();
    /// Index of `value` among the extra inputs, or -1.
    int getInputIndex(Value value);
    bool hasBlockAnalysis() { return !getKvRanges().empty(); }
    /// True when the score region returns its first argument unchanged.
    bool hasIdentityScore();
    /// True when the mask region yields a constant true.
    bool hasTrivialMask();
  }];
}

def Attn_YieldOp : Attn_Op<"yield", [Pure, Terminator, ReturnLike]> {
  let summary = "ends an attn region with its value(s)";
  let arguments = (ins Variadic<AnyType>:$values);
  let assemblyFormat = "($values^ `:` type($values))? attr-dict";
  let builders = [OpBuilder<(ins), [{ build($_builder, $_state, ValueRange()); }]>];
}

//===----------------------------------------------------------------------===//
// attn.rope
//===----------------------------------------------------------------------===//

def Attn_RopeOp : Attn_Op<"rope", [Pure, AllTypesMatch<["input", "result"]>]> {
  let summary = "rotary position embedding of q or k ([B, H, S, D]) at position row + offset";
  let description = [{
    For every row r (dim 2) at position pos = r + offset and m in [0, rotary_dim/2):
    angle = pos' * theta'^(-2m / rotary_dim), and the pair (x[m], x[m + rotary_dim/2])
    (`half`) or (x[2m], x[2m+1]) (`interleaved`) rotates by it. Scalings: `linear`
    uses pos / factor; `ntk` uses theta * factor^(rotary_dim / (rotary_dim - 2));
    `yarn` (YaRN, 2309.00071) blends interpolated and original frequencies by the
    ramp over r = original_max_position / wavelength between beta_slow and beta_fast,
    and multiplies the rotated features by `mscale` (0.1 ln(factor) + 1 by default).
  }];
  let arguments = (ins AnyRankedTensor:$input, I64:$offset,
    F64Attr:$theta, Attn_RopeStyleAttr:$style, I64Attr:$rotary_dim,
    Attn_RopeScalingAttr:$scaling,
    DefaultValuedAttr<F64Attr, "1.0">:$factor,
    DefaultValuedAttr<I64Attr, "0">:$original_max_position,
    DefaultValuedAttr<F64Attr, "32.0">:$beta_fast,
    DefaultValuedAttr<F64Attr, "1.0">:$beta_slow,
    DefaultValuedAttr<F64Attr, "1.0">:$mscale);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$input `offset` `(` $offset `)` attr-dict `:` type($input)";
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Named mask patterns (inside `mask` regions). Operands are positions unless
// named otherwise; each yields whether the pair is allowed.
//===----------------------------------------------------------------------===//

// Marks the named pattern ops (mask and score): attn-expand-patterns expands every op
// that carries it and reports, at the op, any that it could not.
def Attn_NamedPattern : NativeOpTrait<"NamedPattern"> {
  let cppNamespace = "::mlir::attn";
}

class Attn_MaskPattern<string mnemonic, list<Trait> traits = []>
    : Attn_Op<mnemonic, !listconcat([Pure, Attn_NamedPattern,
        Attn_ResultIs<"::mlir::IntegerType::get(context, 1)">], traits)> {
  let results = (outs I1:$allowed);
}

def Attn_CausalOp : Attn_MaskPattern<"causal"> {
  let summary = "d = q - kv >= 0 (Vaswani 2017)";
  let arguments = (ins I64:$q, I64:$kv);
  let assemblyFormat = "$q `,` $kv attr-dict";
}

def Attn_SlidingWindowOp : Attn_MaskPattern<"sliding_window"> {
  let summary = "-right <= q - kv <= left; -1 means unbounded (Longformer, FA2)";
  let arguments = (ins I64:$q, I64:$kv, I64Attr:$left, I64Attr:$right);
  let assemblyFormat = "$q `,` $kv attr-dict";
  let hasVerifier = 1;
}

def Attn_DilatedWindowOp : Attn_MaskPattern<"dilated_window"> {
  let summary = "sliding window keeping only d with d mod dilation == 0 (Longformer)";
  let arguments = (ins I64:$q, I64:$kv, I64Attr:$left, I64Attr:$right, I64Attr:$dilation);
  let assemblyFormat = "$q `,` $kv attr-dict";
  let hasVerifier = 1;
}

def Attn_SinksOp : Attn_MaskPattern<"sinks"> {
  let summary = "kv < count: the first keys are always visible (StreamingLLM)";
  let arguments = (ins I64:$kv, I64Attr:$count);
  let assemblyFormat = "$kv attr-dict";
  let hasVerifier = 1;
}

def Attn_GlobalTokensOp : Attn_MaskPattern<"global_tokens"> {
  let summary = "q or kv is a global token (Longformer, BigBird)";
  let description = [{
    The global positions are [0, count) when `count` is set, else the listed `tokens`.
  }];
  let arguments = (ins I64:$q, I64:$kv, OptionalAttr<I64Attr>:$count,
                       OptionalAttr<DenseI64ArrayAttr>:$tokens);
  let assemblyFormat = "$q `,` $kv attr-dict";
  let hasVerifier = 1;
}

def Attn_PrefixLmOp : Attn_MaskPattern<"prefix_lm"> {
  let summary = "kv < prefix or q - kv >= 0 (T5, UniLM)";
  let arguments = (ins I64:$q, I64:$kv, I64:$prefix);
  let assemblyFormat = "$q `,` $kv `prefix` `(` $prefix `)` attr-dict";
}

def Attn_StridedOp : Attn_MaskPattern<"strided"> {
  let summary = "d >= 0 and (d < stride or d mod stride == 0) (Sparse Transformer)";
  let arguments = (ins I64:$q, I64:$kv, I64Attr:$stride);
  let assemblyFormat = "$q `,` $kv attr-dict";
  let hasVerifier = 1;
}

def Attn_FixedOp : Attn_MaskPattern<"fixed"> {
  let summary = "d >= 0 and (same block of `stride`, or kv among a block's last `summary`)";
  let arguments = (ins I64:$q, I64:$kv, I64Attr:$stride, I64Attr:$summary);
  let assemblyFormat = "$q `,` $kv attr-dict";
  let hasVerifier = 1;
}

def Attn_DilatedSegmentsOp : Attn_MaskPattern<"dilated_segments"> {
  let summary = "LongNet: same segment, and q, kv both == o mod dilation";
  let description = [{
    floor(q / segment) == floor(kv / segment) and q mod dilation == o and
    kv mod dilation == o, with o = head_offset when set, else h mod dilation.
  }];
  let arguments = (ins I64:$h, I64:$q, I64:$kv, I64Attr:$segment, I64Attr:$dilation,
                       OptionalAttr<I64Attr>:$head_offset);
  let assemblyFormat = "$h `,` $q `,` $kv attr-dict";
  let hasVerifier = 1;
}

def Attn_ShiftedGroupsOp : Attn_MaskPattern<"shifted_groups"> {
  let summary = "LongLoRA S2-Attn: same group of size `group`, shifted by group/2 on some heads";
  let arguments = (ins I64:$h, I64:$q, I64:$kv, I64Attr:$group,
                       DenseI64ArrayAttr:$shifted_heads);
  let assemblyFormat = "$h `,` $q `,` $kv attr-dict";
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Named score transforms (inside `score` regions): each maps s to s'.
//===----------------------------------------------------------------------===//

class Attn_ScorePattern<string mnemonic, list<Trait> traits = []>
    : Attn_Op<mnemonic, !listconcat([Pure, Attn_NamedPattern,
        Attn_ResultIs<"::mlir::Float32Type::get(context)">], traits)> {
  let results = (outs F32:$result);
}

def Attn_SoftcapOp : Attn_ScorePattern<"softcap"> {
  let summary = "cap * tanh(s / cap) (Gemma 2)";
  let arguments = (ins F32:$s, F64Attr:$cap);
  let assemblyFormat = "$s attr-dict";
  let hasVerifier = 1;
}

def Attn_AlibiOp : Attn_ScorePattern<"alibi"> {
  let summary = "s - slopes[h] * (q - kv) (ALiBi, 2108.12409)";
  let arguments = (ins F32:$s, I64:$h, I64:$q, I64:$kv, DenseF64ArrayAttr:$slopes);
  let assemblyFormat = "$s `,` $h `,` $q `,` $kv attr-dict";
}

def Attn_T5BiasOp : Attn_ScorePattern<"t5_bias"> {
  let summary = "s + table[bucket(kv - q), h] (T5 relative position buckets)";
  let arguments = (ins F32:$s, I64:$h, I64:$q, I64:$kv, AnyRankedTensor:$table,
                       I64Attr:$num_buckets, I64Attr:$max_distance, BoolAttr:$bidirectional);
  let assemblyFormat = "$s `,` $h `,` $q `,` $kv `table` `(` $table `:` type($table) `)` attr-dict";
  let hasVerifier = 1;
}

def Attn_FireOp : Attn_ScorePattern<"fire"> {
  let summary = "s + f_h(psi(d) / psi(max(L, q))), psi(x) = log(c x + 1) (FIRE, 2310.04418)";
  let description = [{
    f_h(x) = sum_k w2[h, k] relu(w1[k] x + b1[k]) + b2[h], d = q - kv.
    For d < 0 (outside FIRE's causal use) psi(d) is taken as psi(0) = 0.
  }];
  let arguments = (ins F32:$s, I64:$h, I64:$q, I64:$kv,
                       AnyRankedTensor:$w1, AnyRankedTensor:$b1,
                       AnyRankedTensor:$w2, AnyRankedTensor:$b2,
                       F64Attr:$c, F64Attr:$L);
  let assemblyFormat = [{
    $s `,` $h `,` $q `,` $kv `weights` `(` $w1 `,` $b1 `,` $w2 `,` $b2 `:`
    type($w1) `,` type($b1) `,` type($w2) `,` type($b2) `)` attr-dict
  }];
  let hasVerifier = 1;
}

def Attn_KerpleLogOp : Attn_ScorePattern<"kerple_log"> {
  let summary = "s - r1[h] * log(1 + r2[h] * |q - kv|) (KERPLE, 2205.09921)";
  let arguments = (ins F32:$s, I64:$h, I64:$q, I64:$kv,
                       DenseF64ArrayAttr:$r1, DenseF64ArrayAttr:$r2);
  let assemblyFormat = "$s `,` $h `,` $q `,` $kv attr-dict";
  let hasVerifier = 1;
}

def Attn_LogLengthScaleOp : Attn_ScorePattern<"log_length_scale"> {
  let summary = "s * max(1, log(q + 1) / log(base)) (Chiang & Cholak, 2202.12172)";
  let arguments = (ins F32:$s, I64:$q, F64Attr:$base);
  let assemblyFormat = "$s `,` $q attr-dict";
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Reads of extra tensors, safe at any index. In L1 they read tensors, in L2 the
// memrefs those tensors became.
//===----------------------------------------------------------------------===//

def Attn_Shaped : AnyTypeOf<[AnyRankedTensor, AnyStridedMemRef]>;

def Attn_SizeOp : Attn_Op<"size", [Pure,
    Attn_ResultIs<"::mlir::IntegerType::get(context, 64)">]> {
  let summary = "size of one dimension of an extra tensor, as i64";
  let arguments = (ins Attn_Shaped:$tensor, I64Attr:$dim);
  let results = (outs I64:$size);
  let assemblyFormat = "$tensor `[` $dim `]` attr-dict `:` type($tensor)";
  let hasVerifier = 1;
}

def Attn_ConstantTableOp : Attn_Op<"constant_table", [Pure,
    Attn_ResultIs<"::mlir::Float32Type::get(context)">]> {
  let summary = "values[index] from a constant list (0 outside it): per-head slopes";
  let arguments = (ins I64:$index, DenseF64ArrayAttr:$values);
  let results = (outs F32:$result);
  let assemblyFormat = "$index attr-dict";
}

def Attn_BoxSummaryOp : Attn_Op<"box_summary", [Pure, AttrSizedOperandSegments]> {
  let summary = "min and max of an integer tensor over a box of indices";
  let description = [{
    The box is [lo_d, hi_d] (inclusive) in every dimension d. Yields the min and max
    of the elements inside both the box and the tensor (0, 0 when none), whether any
    box index lies inside the tensor, and whether all do. Block analysis uses it to
    bound lookups over a whole tile (e.g. the document ids of a block of rows).

    With `sorted_dim = d` the tensor is declared non-decreasing along d (a spec
    input with "sorted": true): the min and max along d are those of the box's two
    end points there (clipped to the tensor), so the summary reads 2 elements per
    combination of the other indices instead of hi_d - lo_d + 1.
  }];
  let arguments = (ins Attn_Shaped:$tensor, Variadic<I64>:$lo, Variadic<I64>:$hi,
                       OptionalAttr<I64Attr>:$sorted_dim);
  let results = (outs I64:$min, I64:$max, I1:$any_inside, I1:$all_inside);
  let assemblyFormat = [{
    $tensor `lo` `(` $lo `)` `hi` `(` $hi `)` attr-dict `:` type($tensor)
  }];
  let hasVerifier = 1;
}

def Attn_SearchSortedOp : Attn_Op<"search_sorted", [Pure]> {
  let summary = "binary search of a value interval along a sorted dimension";
  let description = [{
    `tensor` is non-decreasing along dimension `dim` (a spec input declared
    "sorted": true). With the other indices fixed by `indices` (the entry at `dim` is
    ignored), yields `first`, the number of positions p along dim with
    tensor[.., p, ..] < value_lo, and `end`, the number with tensor[.., p, ..] <=
    value_hi, by binary search: the positions whose value lies in [value_lo,
    value_hi] are exactly [first, end). When another index lies outside the tensor,
    yields first = 0 and end = size(dim) (every position: a sound answer). Block
    analysis uses it to solve `t[b, kv_idx] == x` for the key: the key range of a
    query block over packed documents, in O(log N).
  }];
  let arguments = (ins Attn_Shaped:$tensor, Variadic<I64>:$indices, I64Attr:$dim,
                       I64:$value_lo, I64:$value_hi);
  let results = (outs I64:$first, I64:$end);
  let assemblyFormat = [{
    $tensor `[` $indices `]` `dim` $dim `value` `(` $value_lo `,` $value_hi `)`
    attr-dict `:` type($tensor)
  }];
  let hasVerifier = 1;
}

def Attn_BoxContainsOp : Attn_Op<"box_contains", [Pure, AttrSizedOperandSegments]> {
  let summary = "whether values in [value_lo, value_hi] occur in rows of an index list";
  let description = [{
    Rows are tensor[idx, :] for every idx in the box [lo, hi] (all dimensions but the
    last). `any` is true when some row holds some value in [value_lo, value_hi];
    `all` when value_lo == value_hi and every row of the box (all inside the tensor)
    holds it. The interval form of attn.contains.
  }];
  let arguments = (ins Attn_Shaped:$tensor, Variadic<I64>:$lo, Variadic<I64>:$hi,
                       I64:$value_lo, I64:$value_hi);
  let results = (outs I1:$any, I1:$all);
  let assemblyFormat = [{
    $tensor `lo` `(` $lo `)` `hi` `(` $hi `)` `value` `(` $value_lo `,` $value_hi `)`
    attr-dict `:` type($tensor)
  }];
  let hasVerifier = 1;
}

def Attn_LookupOp : Attn_Op<"lookup", [Pure]> {
  let summary = "element of an extra tensor, and whether the index was inside it";
  let description = [{
    Yields tensor[indices] (int elements sign-extended to i64, float elements as f32)
    and `in_bounds`. Outside the tensor the value is 0 and `in_bounds` false: the
    importer makes such a pair masked (mask) or leaves s unchanged (score).
  }];
  let arguments = (ins Attn_Shaped:$tensor, Variadic<I64>:$indices);
  let results = (outs AnyTypeOf<[I64, F32]>:$value, I1:$in_bounds);
  let assemblyFormat = "$tensor `[` $indices `]` attr-dict `:` type($tensor) `->` type($value)";
  let hasVerifier = 1;
}

def Attn_ContainsOp : Attn_Op<"contains", [Pure,
    Attn_ResultIs<"::mlir::IntegerType::get(context, 1)">]> {
  let summary = "whether `value` occurs in tensor[indices, :] (the last dimension)";
  let description = [{
    The index list names every dimension but the last. Used for index lists
    (MInference vertical/slash lines, block lists). An index outside the tensor gives
    false.
  }];
  let arguments = (ins I64:$value, Attn_Shaped:$tensor, Variadic<I64>:$indices);
  let results = (outs I1:$found);
  let assemblyFormat = "$value `in` $tensor `[` $indices `]` attr-dict `:` type($tensor)";
  let hasVerifier = 1;
}

def Attn_AccumulateGradOp : Attn_Op<"accumulate_grad", [
    MemoryEffects<[MemRead, MemWrite]>]> {
  let summary = "adds `value` to the gradient of a float tensor at [indices]";
  let description = [{
    In a `score_grad` region (L1), `target` is the extra input whose gradient
    receives the value; after tiling for the backward pass it is the gradient buffer
    itself. An index outside the tensor adds nothing (the forward's lookup read
    nothing there either). The order of the additions is the back end's to fix: the
    deterministic schedules sum per-tile partials in a fixed order.
  }];
  let arguments = (ins Attn_Shaped:$target, Variadic<I64>:$indices, F32:$value);
  let assemblyFormat = [{
    $value `into` $target `[` $indices `]` attr-dict `:` type($target)
  }];
  let hasVerifier = 1;
}

include "dialect/AttnTileOps.td"

#endif // ATTN_OPS_TD
