module {
  func.func @gemma2_local(%arg0: tensor<?x8x?x128xbf16>, %arg1: tensor<?x4x?x128xbf16>, %arg2: tensor<?x4x?x128xbf16>, %arg3: i64, %arg4: i64) -> (tensor<?x8x?x128xbf16>, tensor<?x8x?xf32>) {
    %0 = attn.rope %arg0 offset(%arg3) {rotary_dim = 128 : i64, scaling = #attn.rope_scaling<none>, style = #attn.rope_style<half>, theta = 1.000000e+04 : f64} : tensor<?x8x?x128xbf16>
    %1 = attn.rope %arg1 offset(%arg4) {rotary_dim = 128 : i64, scaling = #attn.rope_scaling<none>, style = #attn.rope_style<half>, theta = 1.000000e+04 : f64} : tensor<?x4x?x128xbf16>
    %2:2 = attn.attention q(%0 : tensor<?x8x?x128xbf16>) k(%1 : tensor<?x4x?x128xbf16>) v(%arg2 : tensor<?x4x?x128xbf16>) offsets(%arg3, %arg4) {align = #attn.align<bottom_right>, normalizer = #attn.normalizer<softmax>, scale = 6.250000e-02 : f64} -> tensor<?x8x?x128xbf16>, tensor<?x8x?xf32> mask {
    ^bb0(%b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
      %3 = attn.causal %q, %kv
      %4 = attn.sliding_window %q, %kv {left = 255 : i64, right = 0 : i64}
      %5 = arith.andi %3, %4 : i1
      attn.yield %5 : i1
    } score {
    ^bb0(%s: f32, %b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
      %3 = attn.softcap %s {cap = 5.000000e+01 : f64}
      attn.yield %3 : f32
    }
    return %2#0, %2#1 : tensor<?x8x?x128xbf16>, tensor<?x8x?xf32>
  }
}

