// RUN: %attn-opt %s -split-input-file -attn-to-tiled="block-m=64 block-n=64" -attn-gpu-assign-layouts="arch=sm_80" -attn-gpu-plan-shared-memory -convert-attn-to-nvvm | FileCheck %s --check-prefix=MMA
// RUN: %attn-opt %s -split-input-file -attn-to-tiled="block-m=128 block-n=64" -attn-gpu-assign-layouts="arch=sm_90a wgmma=true" -attn-gpu-plan-shared-memory -convert-attn-to-nvvm | FileCheck %s --check-prefix=WG
// RUN: %attn-opt %s -split-input-file -attn-to-tiled="block-m=64 block-n=64" -attn-gpu-assign-layouts="arch=sm_80 pack-gqa=true" -attn-gpu-plan-shared-memory -convert-attn-to-nvvm | FileCheck %s --check-prefix=PACK

// The planned L2 function becomes gpu.module @attn_kernels: the attention kernel and the
// split-KV combine kernel, and `attn.abi`, the bundle ABI the runtime binds arguments
// and launches by (docs/bundle-and-abi.md). The L2 function is gone.

// MMA-NOT: func.func
// MMA-LABEL: gpu.module @attn_kernels attributes {attn.abi = {
// MMA-SAME: combine = {grid_x = "ceil_div(batch * heads_q * seq_q, 4)", params = {{\[\[}}"scratch:o_partial", "ptr"], ["scratch:lse_partial", "ptr"], ["o", "ptr"], ["lse", "ptr"], ["batch", "i64"], ["seq_q", "i64"], ["num_splits", "i64"], ["o_stride_b", "i64"], ["o_stride_h", "i64"], ["o_stride_s", "i64"]]
// MMA-SAME: scratch = {{\[\[}}"o_partial", "num_splits * batch * heads_q * seq_q * 256"], ["lse_partial", "num_splits * batch * heads_q * seq_q * 4"]], symbol = "attn_combine", threads = 128 : i64}
// MMA-SAME: grid = ["ceil_div(seq_q, 64)", "heads_q", "batch * num_splits"]
// MMA-SAME: params = {{\[\[}}"q", "ptr"], ["k", "ptr"], ["v", "ptr"], ["o", "ptr"], ["lse", "ptr"], ["batch", "i64"], ["seq_q", "i64"], ["seq_kv", "i64"], ["q_offset", "i64"], ["kv_offset", "i64"], ["q_stride_b", "i64"], ["q_stride_h", "i64"], ["q_stride_s", "i64"], ["k_stride_b", "i64"], ["k_stride_h", "i64"], ["k_stride_s", "i64"], ["v_stride_b", "i64"], ["v_stride_h", "i64"], ["v_stride_s", "i64"], ["o_stride_b", "i64"], ["o_stride_h", "i64"], ["o_stride_s", "i64"], ["num_splits", "i64"], ["scratch:o_partial", "ptr"], ["scratch:lse_partial", "ptr"]]
// MMA-SAME: per_kv_head = false, queries_per_cta = 64 : i64, smem_bytes = 46080 : i64, symbol = "attn_kernel", threads = 128 : i64}}
// MMA: llvm.mlir.global external @attn_smem() {addr_space = 3 : i32, alignment = 16 : i64} : !llvm.array<0 x i8>
// MMA: gpu.func @attn_kernel(
// MMA-SAME: kernel
// MMA-SAME: nvvm.maxntid = array<i32: 128, 1, 1>
// Q is copied in with cp.async before the key loop; the loop is the lowered for_kv_blocks.
// MMA: nvvm.cp.async.shared.global
// MMA: nvvm.cp.async.commit.group
// MMA: scf.while
// MMA: nvvm.cp.async.wait.group
// MMA: nvvm.ldmatrix
// MMA: nvvm.mma.sync {{.*}}shape = #nvvm.shape<m = 16, n = 8, k = 16>
// Online softmax: row max and sum across the four lanes of a quad.
// MMA: nvvm.shfl.sync {{ *}}bfly
// MMA: gpu.return
// MMA: gpu.func @attn_combine(
// MMA-SAME: kernel

// WG-LABEL: gpu.module @attn_kernels
// WG-SAME: grid = ["ceil_div(seq_q, 128)", "heads_q", "batch * num_splits"]
// The 1 KiB the 128-byte swizzle needs for alignment comes on top of the 49152 planned.
// WG-SAME: smem_bytes = 50176 : i64, symbol = "attn_kernel", threads = 256 : i64
// WG: gpu.func @attn_kernel(
// The swizzled tiles are written by cp.async (the generic proxy) and read by wgmma (the
// async proxy): a proxy fence between.
// WG: nvvm.fence.proxy {kind = #nvvm.proxy_kind<async.shared>, space = #nvvm.shared_space<cta>}
// WG: nvvm.wgmma.fence.aligned
// WG: llvm.inline_asm has_side_effects {{.*}}wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16
// WG: nvvm.wgmma.commit.group.sync.aligned
// WG: nvvm.wgmma.wait.group.sync.aligned

// PACK-LABEL: gpu.module @attn_kernels
// PACK-SAME: grid = ["ceil_div(seq_q, 32)", "heads_kv", "batch * num_splits"]
// PACK-SAME: per_kv_head = true, queries_per_cta = 32 : i64

func.func @causal(%q: tensor<?x2x?x64xbf16>, %k: tensor<?x1x?x64xbf16>, %v: tensor<?x1x?x64xbf16>, %o0: i64) -> tensor<?x2x?x64xbf16> {
  %o = attn.attention q(%q : tensor<?x2x?x64xbf16>) k(%k : tensor<?x1x?x64xbf16>) v(%v : tensor<?x1x?x64xbf16>) offsets(%o0, %o0)
      {scale = 0.125 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x2x?x64xbf16>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %c = attn.causal %qp, %kp
    attn.yield %c : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return %o : tensor<?x2x?x64xbf16>
}
