module {
  func.func @fire(%arg0: tensor<?x8x?x64xbf16>, %arg1: tensor<?x2x?x64xbf16>, %arg2: tensor<?x2x?x64xbf16>, %arg3: tensor<?xf32>, %arg4: tensor<8xf32>, %arg5: tensor<?xf32>, %arg6: tensor<8x?xf32>, %arg7: i64, %arg8: i64) -> tensor<?x8x?x64xbf16> {
    %0 = attn.attention q(%arg0 : tensor<?x8x?x64xbf16>) k(%arg1 : tensor<?x2x?x64xbf16>) v(%arg2 : tensor<?x2x?x64xbf16>) inputs(%arg3, %arg4, %arg5, %arg6 : tensor<?xf32>, tensor<8xf32>, tensor<?xf32>, tensor<8x?xf32>) offsets(%arg7, %arg8) {align = #attn.align<bottom_right>, input_dims = [["Hid"], ["Hq"], ["Hid"], ["Hq", "Hid"]], input_names = ["b1", "b2", "w1", "w2"], normalizer = #attn.normalizer<softmax>, scale = 1.250000e-01 : f64} -> tensor<?x8x?x64xbf16> mask {
    ^bb0(%b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
      %1 = attn.causal %q, %kv
      attn.yield %1 : i1
    } score {
    ^bb0(%s: f32, %b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
      %1 = attn.fire %s, %h, %q, %kv weights(%arg5, %arg3, %arg6, %arg4 : tensor<?xf32>, tensor<?xf32>, tensor<8x?xf32>, tensor<8xf32>) {L = 6.400000e+01 : f64, c = 1.000000e+00 : f64}
      attn.yield %1 : f32
    }
    return %0 : tensor<?x8x?x64xbf16>
  }
}

