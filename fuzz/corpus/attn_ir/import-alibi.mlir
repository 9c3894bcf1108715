module {
  func.func @alibi(%arg0: tensor<?x8x?x64xbf16>, %arg1: tensor<?x2x?x64xbf16>, %arg2: tensor<?x2x?x64xbf16>, %arg3: i64, %arg4: i64) -> (tensor<?x8x?x64xbf16>, tensor<?x8x?xf32>) {
    %0:2 = attn.attention q(%arg0 : tensor<?x8x?x64xbf16>) k(%arg1 : tensor<?x2x?x64xbf16>) v(%arg2 : tensor<?x2x?x64xbf16>) offsets(%arg3, %arg4) {align = #attn.align<bottom_right>, normalizer = #attn.normalizer<softmax>, scale = 1.250000e-01 : f64} -> tensor<?x8x?x64xbf16>, tensor<?x8x?xf32> mask {
    ^bb0(%b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
      %1 = attn.causal %q, %kv
      attn.yield %1 : i1
    } score {
    ^bb0(%s: f32, %b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
      %1 = attn.alibi %s, %h, %q, %kv {slopes = array<f64: 5.000000e-01, 2.500000e-01, 1.250000e-01, 6.250000e-02, 3.125000e-02, 1.562500e-02, 7.812500e-03, 3.906250e-03>}
      attn.yield %1 : f32
    }
    return %0#0, %0#1 : tensor<?x8x?x64xbf16>, tensor<?x8x?xf32>
  }
}

