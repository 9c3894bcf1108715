// Every configuration attn-gpu-assign-layouts refuses, one file per configuration
// (split-file), each error at the attention op whose grid cannot run (the grid keeps the
// attention's location; from a JSON spec that location names the spec).
// RUN: split-file %s %t
// RUN: %attn-opt %t/sm90a-wgmma-32x64.mlir -split-input-file -attn-to-tiled="block-m=32 block-n=64" -attn-gpu-assign-layouts="arch=sm_90a wgmma=true" -verify-diagnostics
// RUN: %attn-opt %t/sm90a-wgmma-64x64.mlir -split-input-file -attn-to-tiled="block-m=64 block-n=64" -attn-gpu-assign-layouts="arch=sm_90a wgmma=true" -verify-diagnostics
// RUN: %attn-opt %t/sm80-wgmma.mlir -attn-to-tiled="block-m=64 block-n=64" -attn-gpu-assign-layouts="arch=sm_80 wgmma=true" -verify-diagnostics
// RUN: %attn-opt %t/sm75.mlir -attn-to-tiled="block-m=64 block-n=64" -attn-gpu-assign-layouts="arch=sm_75" -verify-diagnostics
// RUN: %attn-opt %t/sm80-pack-gqa.mlir -split-input-file -attn-to-tiled="block-m=64 block-n=64" -attn-gpu-assign-layouts="arch=sm_80 pack-gqa=true" -verify-diagnostics
// RUN: %attn-opt %t/sm80-64x24.mlir -attn-to-tiled="block-m=64 block-n=24" -attn-gpu-assign-layouts="arch=sm_80" -verify-diagnostics
// RUN: %attn-opt %t/sm80-256x64.mlir -attn-to-tiled="block-m=256 block-n=64" -attn-gpu-assign-layouts="arch=sm_80" -verify-diagnostics

//--- sm90a-wgmma-32x64.mlir
func.func @f32(%q: tensor<?x2x?x64xf32>, %k: tensor<?x1x?x64xf32>, %v: tensor<?x1x?x64xf32>, %o0: i64) -> tensor<?x2x?x64xf32> {
  // expected-error @+1 {{this kernel cannot run as sm90a_bm32_bn64_w2_wgmma: the NVIDIA back end needs bf16 or fp16 q/k/v (the spec's dtype is f32)}}
  %o = attn.attention q(%q : tensor<?x2x?x64xf32>) k(%k : tensor<?x1x?x64xf32>) v(%v : tensor<?x1x?x64xf32>) offsets(%o0, %o0)
      {scale = 0.125 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x2x?x64xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %c = attn.causal %qp, %kp
    attn.yield %c : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return %o : tensor<?x2x?x64xf32>
}

// -----

func.func @d24(%q: tensor<?x2x?x24xbf16>, %k: tensor<?x1x?x24xbf16>, %v: tensor<?x1x?x24xbf16>, %o0: i64) -> tensor<?x2x?x24xbf16> {
  // expected-error @+1 {{this kernel cannot run as sm90a_bm32_bn64_w2_wgmma: the NVIDIA back end needs head_dim and head_dim_v multiples of 16}}
  %o = attn.attention q(%q : tensor<?x2x?x24xbf16>) k(%k : tensor<?x1x?x24xbf16>) v(%v : tensor<?x1x?x24xbf16>) offsets(%o0, %o0)
      {scale = 0.125 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x2x?x24xbf16>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %c = attn.causal %qp, %kp
    attn.yield %c : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return %o : tensor<?x2x?x24xbf16>
}

// -----

func.func @dv272(%q: tensor<?x2x?x64xbf16>, %k: tensor<?x1x?x64xbf16>, %v: tensor<?x1x?x272xbf16>, %o0: i64) -> tensor<?x2x?x272xbf16> {
  // expected-error @+1 {{this kernel cannot run as sm90a_bm32_bn64_w2_wgmma: the NVIDIA back end supports head dims up to 256}}
  %o = attn.attention q(%q : tensor<?x2x?x64xbf16>) k(%k : tensor<?x1x?x64xbf16>) v(%v : tensor<?x1x?x272xbf16>) offsets(%o0, %o0)
      {scale = 0.125 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x2x?x272xbf16>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %c = attn.causal %qp, %kp
    attn.yield %c : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return %o : tensor<?x2x?x272xbf16>
}

// -----

func.func @rows(%q: tensor<?x2x?x64xbf16>, %k: tensor<?x1x?x64xbf16>, %v: tensor<?x1x?x64xbf16>, %o0: i64) -> tensor<?x2x?x64xbf16> {
  // expected-error @+1 {{this kernel cannot run as sm90a_bm32_bn64_w2_wgmma: wgmma configurations need block_m 64 or 128 (a warpgroup per 64 rows)}}
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

//--- sm90a-wgmma-64x64.mlir
func.func @d48(%q: tensor<?x2x?x48xbf16>, %k: tensor<?x1x?x48xbf16>, %v: tensor<?x1x?x48xbf16>, %o0: i64) -> tensor<?x2x?x48xbf16> {
  // expected-error @+1 {{this kernel cannot run as sm90a_bm64_bn64_w4_wgmma: wgmma configurations need head dims that are multiples of 32 (head_dim 48, head_dim_v 48)}}
  %o = attn.attention q(%q : tensor<?x2x?x48xbf16>) k(%k : tensor<?x1x?x48xbf16>) v(%v : tensor<?x1x?x48xbf16>) offsets(%o0, %o0)
      {scale = 0.125 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x2x?x48xbf16>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %c = attn.causal %qp, %kp
    attn.yield %c : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return %o : tensor<?x2x?x48xbf16>
}

// -----

func.func @dv80(%q: tensor<?x2x?x64xbf16>, %k: tensor<?x1x?x64xbf16>, %v: tensor<?x1x?x80xbf16>, %o0: i64) -> tensor<?x2x?x80xbf16> {
  // expected-error @+1 {{wgmma configurations need head dims that are multiples of 32 (head_dim 64, head_dim_v 80)}}
  %o = attn.attention q(%q : tensor<?x2x?x64xbf16>) k(%k : tensor<?x1x?x64xbf16>) v(%v : tensor<?x1x?x80xbf16>) offsets(%o0, %o0)
      {scale = 0.125 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x2x?x80xbf16>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %c = attn.causal %qp, %kp
    attn.yield %c : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return %o : tensor<?x2x?x80xbf16>
}

//--- sm80-wgmma.mlir
func.func @arch(%q: tensor<?x2x?x64xbf16>, %k: tensor<?x1x?x64xbf16>, %v: tensor<?x1x?x64xbf16>, %o0: i64) -> tensor<?x2x?x64xbf16> {
  // expected-error @+1 {{this kernel cannot run as sm80_bm64_bn64_w4_wgmma: wgmma configurations need --arch sm_90a (got sm_80)}}
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

//--- sm75.mlir
func.func @sm75(%q: tensor<?x2x?x64xbf16>, %k: tensor<?x1x?x64xbf16>, %v: tensor<?x1x?x64xbf16>, %o0: i64) -> tensor<?x2x?x64xbf16> {
  // expected-error @+1 {{unsupported arch 'sm_75' (sm_80, sm_86, sm_89, sm_90, sm_90a)}}
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

//--- sm80-pack-gqa.mlir
func.func @odd(%q: tensor<?x6x?x64xbf16>, %k: tensor<?x2x?x64xbf16>, %v: tensor<?x2x?x64xbf16>, %o0: i64) -> tensor<?x6x?x64xbf16> {
  // expected-error @+1 {{this kernel cannot run as sm80_bm64_bn64_w4_g: pack_gqa needs query heads grouped on kv heads (heads_q / heads_kv = 3) in a number that divides block_m (64)}}
  %o = attn.attention q(%q : tensor<?x6x?x64xbf16>) k(%k : tensor<?x2x?x64xbf16>) v(%v : tensor<?x2x?x64xbf16>) offsets(%o0, %o0)
      {scale = 0.125 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x6x?x64xbf16>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %c = attn.causal %qp, %kp
    attn.yield %c : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return %o : tensor<?x6x?x64xbf16>
}

// -----

func.func @mha(%q: tensor<?x2x?x64xbf16>, %k: tensor<?x2x?x64xbf16>, %v: tensor<?x2x?x64xbf16>, %o0: i64) -> tensor<?x2x?x64xbf16> {
  // expected-error @+1 {{this kernel cannot run as sm80_bm64_bn64_w4_g: pack_gqa needs query heads grouped on kv heads}}
  %o = attn.attention q(%q : tensor<?x2x?x64xbf16>) k(%k : tensor<?x2x?x64xbf16>) v(%v : tensor<?x2x?x64xbf16>) offsets(%o0, %o0)
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

//--- sm80-64x24.mlir
func.func @bn24(%q: tensor<?x2x?x64xbf16>, %k: tensor<?x1x?x64xbf16>, %v: tensor<?x1x?x64xbf16>, %o0: i64) -> tensor<?x2x?x64xbf16> {
  // expected-error @+1 {{block_n must be a multiple of 16 in [16, 128]}}
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

//--- sm80-256x64.mlir
func.func @bm256(%q: tensor<?x2x?x64xbf16>, %k: tensor<?x1x?x64xbf16>, %v: tensor<?x1x?x64xbf16>, %o0: i64) -> tensor<?x2x?x64xbf16> {
  // expected-error @+1 {{block_m must be 16, 32, ..., 128 (16 query rows per warp)}}
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
