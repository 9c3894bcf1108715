// RUN: %attn-opt %s -split-input-file -attn-to-tiled="block-m=64 block-n=64" -attn-gpu-assign-layouts="arch=sm_80" | FileCheck %s --check-prefix=MMA
// RUN: %attn-opt %s -split-input-file -attn-to-tiled="block-m=128 block-n=64" -attn-gpu-assign-layouts="arch=sm_90a wgmma=true" | FileCheck %s --check-prefix=WG
// RUN: %attn-opt %s -split-input-file -attn-to-tiled="block-m=128 block-n=128" -attn-gpu-assign-layouts="arch=sm_90a wgmma=true" | FileCheck %s --check-prefix=WG128
// RUN: %attn-opt %s -split-input-file -attn-to-tiled="block-m=64 block-n=64" -attn-gpu-assign-layouts="arch=sm_80 pack-gqa=true" | FileCheck %s --check-prefix=PACK

// The grid gets its target (warps = block_m / 16; mma.sync or wgmma; pipelining only
// for wgmma with block_n <= 64) and every tile buffer a register layout as its memory
// space: q the A operand of Q K^T, k and v B operands, S and O accumulators, m/l/alpha
// per-row vectors of the accumulator layout.

// MMA-LABEL: func.func @causal
// MMA: attn.grid {{.*}}gpu = #attn.gpu_target<arch = "sm_80", warps = 4, mma = mma_sync, pack_gqa = false, pipelined = false>
// MMA: %[[Q:.*]] = memref.alloca() : memref<64x64xf32, #attn.dot_operand<index = 0, parent = <kind = mma_sync, warps = 4>>>
// MMA: %[[K:.*]] = memref.alloca() : memref<64x64xf32, #attn.dot_operand<index = 1, parent = <kind = mma_sync, warps = 4>>>
// MMA: %[[V:.*]] = memref.alloca() : memref<64x64xf32, #attn.dot_operand<index = 1, parent = <kind = mma_sync, warps = 4>>>
// MMA: %[[S:.*]] = memref.alloca() : memref<64x64xf32, #attn.mma<kind = mma_sync, warps = 4>>
// MMA: %[[O:.*]] = memref.alloca() : memref<64x64xf32, #attn.mma<kind = mma_sync, warps = 4>>
// MMA: attn.load_tile %{{.*}} into %[[Q]]
// MMA: memref.alloca() : memref<64xf32, #attn.rows<parent = <kind = mma_sync, warps = 4>>>
// MMA: attn.for_kv_blocks
// MMA: attn.qk_tile %[[Q]], %[[K]] into %[[S]]
// MMA: attn.pv_tile %[[S]], %[[V]] into %[[O]]
// MMA: attn.store_tile %[[O]]

// WG-LABEL: func.func @causal
// WG: gpu = #attn.gpu_target<arch = "sm_90a", warps = 8, mma = wgmma, pack_gqa = false, pipelined = true>
// WG: memref.alloca() : memref<128x64xf32, #attn.dot_operand<index = 0, parent = <kind = wgmma, warps = 8>>>
// WG: memref.alloca() : memref<128x64xf32, #attn.mma<kind = wgmma, warps = 8>>
// WG128-LABEL: func.func @causal
// WG128: gpu = #attn.gpu_target<arch = "sm_90a", warps = 8, mma = wgmma, pack_gqa = false, pipelined = false>

// PACK-LABEL: func.func @causal
// PACK: gpu = #attn.gpu_target<arch = "sm_80", warps = 4, mma = mma_sync, pack_gqa = true, pipelined = false>

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

// -----

// Head dims 128 / 64 (d != dv): the operand tiles take their own widths.
// MMA-LABEL: func.func @gqa
// MMA: memref.alloca() : memref<64x128xf32, #attn.dot_operand<index = 0, parent = <kind = mma_sync, warps = 4>>>
// MMA: memref.alloca() : memref<64x128xf32, #attn.dot_operand<index = 1, parent = <kind = mma_sync, warps = 4>>>
// MMA: memref.alloca() : memref<64x64xf32, #attn.dot_operand<index = 1, parent = <kind = mma_sync, warps = 4>>>
// MMA: memref.alloca() : memref<64x64xf32, #attn.mma<kind = mma_sync, warps = 4>>
// MMA: memref.alloca() : memref<64x64xf32, #attn.mma<kind = mma_sync, warps = 4>>
// WG-LABEL: func.func @gqa
// WG: memref.alloca() : memref<128x128xf32, #attn.dot_operand<index = 0, parent = <kind = wgmma, warps = 8>>>
// PACK-LABEL: func.func @gqa
// PACK: gpu = #attn.gpu_target<arch = "sm_80", warps = 4, mma = mma_sync, pack_gqa = true, pipelined = false>
func.func @gqa(%q: tensor<?x8x?x128xbf16>, %k: tensor<?x2x?x128xbf16>, %v: tensor<?x2x?x64xbf16>, %o0: i64) -> tensor<?x8x?x64xbf16> {
  %o = attn.attention q(%q : tensor<?x8x?x128xbf16>) k(%k : tensor<?x2x?x128xbf16>) v(%v : tensor<?x2x?x64xbf16>) offsets(%o0, %o0)
      {scale = 0.125 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x8x?x64xbf16>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %c = attn.causal %qp, %kp
    attn.yield %c : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return %o : tensor<?x8x?x64xbf16>
}
