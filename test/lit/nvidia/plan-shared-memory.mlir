// RUN: %attn-opt %s -split-input-file -attn-to-tiled="block-m=64 block-n=64" -attn-gpu-assign-layouts="arch=sm_80" -attn-gpu-plan-shared-memory | FileCheck %s --check-prefix=MMA
// RUN: %attn-opt %s -split-input-file -attn-to-tiled="block-m=128 block-n=64" -attn-gpu-assign-layouts="arch=sm_90a wgmma=true" -attn-gpu-plan-shared-memory | FileCheck %s --check-prefix=WG
// RUN: %attn-opt %s -split-input-file -attn-to-tiled="block-m=128 block-n=128" -attn-gpu-assign-layouts="arch=sm_90a wgmma=true" -attn-gpu-plan-shared-memory | FileCheck %s --check-prefix=WG128

// mma.sync: rows padded by 8 elements (ldmatrix reads 8 rows on distinct banks): Q once
// (64 x 72 bf16 = 9216 bytes), K and V double-buffered behind it, O staged over Q at the
// end; K is copied one visited tile ahead.
// MMA-LABEL: func.func @causal
// MMA: attn.grid {{.*}}smem_bytes = 46080
// MMA: attn.load_tile %arg0{{.*}} {smem = #attn.shared<offset = 0, stage_bytes = 9216, stages = 1, row_stride = 72, swizzle = 0>}
// MMA: attn.for_kv_blocks {{.*}} attributes {lookahead = 1 : i64}
// MMA: attn.load_tile %arg1{{.*}} {smem = #attn.shared<offset = 9216, stage_bytes = 9216, stages = 2, row_stride = 72, swizzle = 0>}
// MMA: attn.load_tile %arg2{{.*}} {smem = #attn.shared<offset = 27648, stage_bytes = 9216, stages = 2, row_stride = 72, swizzle = 0>}
// MMA-NOT: attn.score_tile {{.*}}smem
// MMA: attn.store_tile {{.*}} {smem = #attn.shared<offset = 0, stage_bytes = 9216, stages = 1, row_stride = 72, swizzle = 0>}

// wgmma: dense 128-byte-swizzled tiles (what the matrix descriptors read), no padding;
// the pipelined loop (block_n <= 64) issues S(j+1) under softmax(j): K two tiles ahead.
// WG-LABEL: func.func @causal
// WG: smem_bytes = 49152
// WG: attn.load_tile %arg0{{.*}} {smem = #attn.shared<offset = 0, stage_bytes = 16384, stages = 1, row_stride = 0, swizzle = 128>}
// WG: lookahead = 2
// WG: attn.load_tile %arg1{{.*}} {smem = #attn.shared<offset = 16384, stage_bytes = 8192, stages = 2, row_stride = 0, swizzle = 128>}
// WG: attn.load_tile %arg2{{.*}} {smem = #attn.shared<offset = 32768, stage_bytes = 8192, stages = 2, row_stride = 0, swizzle = 128>}
// WG: attn.store_tile {{.*}} {smem = #attn.shared<offset = 0, stage_bytes = 18432, stages = 1, row_stride = 72, swizzle = 0>}
// WG128-LABEL: func.func @causal
// WG128: smem_bytes = 81920
// WG128: lookahead = 1

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

// A mask region with a table lookup (attn.contains) is evaluated once per tile over a
// staged score tile (block_n + 1 floats per row against bank conflicts) after the K/V
// buffers, not per accumulator element in registers.
// MMA-LABEL: func.func @block_list
// MMA: smem_bytes = 62720
// MMA: attn.score_tile {{.*}} {masked, smem = #attn.shared<offset = 46080, stage_bytes = 16640, stages = 1, row_stride = 65, swizzle = 0>}
// WG-LABEL: func.func @block_list
// WG: attn.score_tile {{.*}} {masked, smem = #attn.shared<offset = 49152, stage_bytes = 33280, stages = 1, row_stride = 65, swizzle = 0>}
func.func @block_list(%arg0: tensor<?x8x?x64xbf16>, %arg1: tensor<?x2x?x64xbf16>, %arg2: tensor<?x2x?x64xbf16>, %arg3: tensor<?x8x?x?xi32>, %arg4: i64, %arg5: i64) -> tensor<?x8x?x64xbf16> {
  %0 = attn.attention q(%arg0 : tensor<?x8x?x64xbf16>) k(%arg1 : tensor<?x2x?x64xbf16>) v(%arg2 : tensor<?x2x?x64xbf16>) inputs(%arg3 : tensor<?x8x?x?xi32>) offsets(%arg4, %arg5) {align = #attn.align<bottom_right>, input_dims = [["B", "Hq", "NQB", "K"]], input_names = ["blocks"], normalizer = #attn.normalizer<softmax>, scale = 1.250000e-01 : f64} -> tensor<?x8x?x64xbf16> mask {
  ^bb0(%b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
    %c64 = arith.constant 64 : i64
    %1 = arith.floordivsi %q_idx, %c64 : i64
    %2 = arith.floordivsi %kv_idx, %c64 : i64
    %3 = attn.contains %2 in %arg3[%b, %h, %1] : tensor<?x8x?x?xi32>
    attn.yield %3 : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
    attn.yield %s : f32
  }
  return %0 : tensor<?x8x?x64xbf16>
}
