module {
  func.func @rope_half(%arg0: tensor<?x8x?x64xbf16>, %arg1: tensor<?x2x?x64xbf16>, %arg2: tensor<?x2x?x64xbf16>, %arg3: i64, %arg4: i64) -> tensor<?x8x?x64xbf16> {
    %0 = attn.rope %arg0 offset(%arg3) {rotary_dim = 64 : i64, scaling = #attn.rope_scaling<none>, style = #attn.rope_style<half>, theta = 1.000000e+04 : f64} : tensor<?x8x?x64xbf16>
    %1 = attn.rope %arg1 offset(%arg4) {rotary_dim = 64 : i64, scaling = #attn.rope_scaling<none>, style = #attn.rope_style<half>, theta = 1.000000e+04 : f64} : tensor<?x2x?x64xbf16>
    %2 = attn.attention q(%0 : tensor<?x8x?x64xbf16>) k(%1 : tensor<?x2x?x64xbf16>) v(%arg2 : tensor<?x2x?x64xbf16>) offsets(%arg3, %arg4) {align = #attn.align<bottom_right>, normalizer = #attn.normalizer<softmax>, scale = 1.250000e-01 : f64} -> tensor<?x8x?x64xbf16> mask {
    ^bb0(%b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
      %3 = attn.causal %q, %kv
      attn.yield %3 : i1
    } score {
    ^bb0(%s: f32, %b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
      attn.yield %s : f32
    }
    return %2 : tensor<?x8x?x64xbf16>
  }
}

