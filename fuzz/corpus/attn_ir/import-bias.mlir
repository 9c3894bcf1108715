module {
  func.func @bias(%arg0: tensor<?x8x?x64xbf16>, %arg1: tensor<?x2x?x64xbf16>, %arg2: tensor<?x2x?x64xbf16>, %arg3: tensor<1x8x?x?xf32>, %arg4: i64, %arg5: i64) -> tensor<?x8x?x64xbf16> {
    %0 = attn.attention q(%arg0 : tensor<?x8x?x64xbf16>) k(%arg1 : tensor<?x2x?x64xbf16>) v(%arg2 : tensor<?x2x?x64xbf16>) inputs(%arg3 : tensor<1x8x?x?xf32>) offsets(%arg4, %arg5) {align = #attn.align<bottom_right>, input_dims = [[1, "Hq", "Sq", "Skv"]], input_names = ["bias"], normalizer = #attn.normalizer<softmax>, scale = 1.250000e-01 : f64} -> tensor<?x8x?x64xbf16> mask {
    ^bb0(%b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
      %true = arith.constant true
      attn.yield %true : i1
    } score {
    ^bb0(%s: f32, %b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
      %c0_i64 = arith.constant 0 : i64
      %value, %in_bounds = attn.lookup %arg3[%c0_i64, %h, %q_idx, %kv_idx] : tensor<1x8x?x?xf32> -> f32
      %1 = arith.addf %s, %value : f32
      %2 = arith.select %in_bounds, %1, %s : f32
      attn.yield %2 : f32
    }
    return %0 : tensor<?x8x?x64xbf16>
  }
}

