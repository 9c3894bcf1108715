//===- AttnGpuAttrs.td - how L2 maps onto an NVIDIA GPU -----*- tablegen -*-===//
//
// The NVIDIA lowering's decisions, as attributes on the L2 program, so that each step
// of it can be read and tested on its own (codegen/nvidia, `attn-opt --help`):
// attn-gpu-assign-layouts puts a #attn.gpu_target on the grid and a register layout
// on every tile buffer (as the memref's memory space, the way Triton puts encodings on
// tensor types); attn-gpu-plan-shared-memory gives the tiles that are staged through
// shared memory their #attn.shared place; convert-attn-to-nvvm builds the kernel from
// them.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_GPU_ATTRS_TD
#define ATTN_GPU_ATTRS_TD

def Attn_MmaKind : I32EnumAttr<"MmaKind", "a tensor-core instruction family", [
    I32EnumAttrCase<"mma_sync", 0>, I32EnumAttrCase<"wgmma", 1>]> {
  let cppNamespace = "::mlir::attn";
  let genSpecializedAttr = 0;
}
def Attn_MmaKindAttr : EnumAttr<Attn_Dialect, Attn_MmaKind, "mma_kind">;

def Attn_GpuTargetAttr : Attn_Attr<"GpuTarget", "gpu_target"> {
  let summary = "how an attn.grid maps onto an NVIDIA GPU";
  let description = [{
    One CTA per grid item (with `pack_gqa`, per (query block, kv head, batch), holding
    the rows of every query head of the group: row r is query q_lo + r / G of head
    G hk + r % G); `warps` warps of 16 query rows each; both matmuls on `mma`
    (mma.sync m16n8k16 on sm_80+, or wgmma m64nNk16 per warpgroup of 4 warps on
    sm_90a); with `pipelined` (wgmma, block_n <= 64) S of the next key tile is
    computed on the tensor cores while this tile's softmax runs.
  }];
  let parameters = (ins "::mlir::StringAttr":$arch, "int64_t":$warps,
                        "::mlir::attn::MmaKind":$mma, "bool":$pack_gqa, "bool":$pipelined);
  let assemblyFormat = "`<` struct(params) `>`";
}

def Attn_MmaEncodingAttr : Attn_Attr<"MmaEncoding", "mma"> {
  let summary = "the accumulator layout of a register tile";
  let description = [{
    Warp w of the CTA holds rows [16 w, 16 w + 16). Within a warp, lane t holds, for
    every 8-column block n of the tile, the elements (g, 8 n + 2 c), (g, 8 n + 2 c + 1),
    (g + 8, 8 n + 2 c), (g + 8, 8 n + 2 c + 1), g = t / 4, c = t % 4: mma.sync
    m16n8k16's C fragment. wgmma's m64nN accumulators have this layout per warp of
    the warpgroup, so `kind` says only which instruction produces them. A row's values
    are spread over the 4 lanes of a quad (row maxima and sums: quad shuffles). The
    score tile in this layout is also the A operand of P V: its m16n8 fragments, packed
    to 16 bits, are mma.sync's (and wgmma's register-A) m16k16 fragments.
  }];
  let parameters = (ins "::mlir::attn::MmaKind":$kind, "int64_t":$warps);
  let assemblyFormat = "`<` struct(params) `>`";
}

def Attn_DotOperandEncodingAttr : Attn_Attr<"DotOperandEncoding", "dot_operand"> {
  let summary = "a tile as operand `index` (0: A, 1: B) of a matmul with layout `parent`";
  let description = [{
    mma.sync: A (q rows, 16 x 16 per warp and k-step) and B (k or v, 16 x 8) fragments
    as ldmatrix reads them (.trans for v). wgmma: B always, and A for Q, are read by
    the tensor cores from shared memory through matrix descriptors (the tile's
    #attn.shared place says where and in which swizzle).
  }];
  let parameters = (ins "int64_t":$index, "MmaEncodingAttr":$parent);
  let assemblyFormat = "`<` struct(params) `>`";
}

def Attn_RowsEncodingAttr : Attn_Attr<"RowsEncoding", "rows"> {
  let summary = "per-row values (m, l, alpha) of a tile in layout `parent`";
  let description = [{
    Each thread holds the values of its two rows (g and g + 8 of its warp); l is kept
    as a per-thread partial sum, reduced over the quad once at the end.
  }];
  let parameters = (ins "MmaEncodingAttr":$parent);
  let assemblyFormat = "`<` struct(params) `>`";
}

def Attn_SharedEncodingAttr : Attn_Attr<"SharedEncoding", "shared"> {
  let summary = "where a staged tile lies in the CTA's dynamic shared memory";
  let description = [{
    `stages` buffers of `stage_bytes` bytes from byte `offset`. With `swizzle` 0, rows
    of `row_stride` 16-bit elements (padded past the tile's width so that ldmatrix is
    conflict-free). With `swizzle` 128 (or 64): slabs of 64 (or 32) columns, row r at
    128 r (64 r) bytes of its slab, its 16-byte chunks permuted by XOR with r mod 8
    (r / 2 mod 4): the layout a wgmma matrix descriptor names (and conflict-free for
    the row-wise cp.async writes).
  }];
  let parameters = (ins "int64_t":$offset, "int64_t":$stage_bytes, "int64_t":$stages,
                        "int64_t":$row_stride, "int64_t":$swizzle);
  let assemblyFormat = "`<` struct(params) `>`";
}

#endif // ATTN_GPU_ATTRS_TD
