module {
  func.func @prefix_lm_per_batch(%arg0: tensor<?x8x?x64xbf16>, %arg1: tensor<?x2x?x64xbf16>, %arg2: tensor<?x2x?x64xbf16>, %arg3: tensor<?xi32>, %arg4: i64, %arg5: i64) -> tensor<?x8x?x64xbf16> {
    %0 = attn.attention q(%arg0 : tensor<?x8x?x64xbf16>) k(%arg1 : tensor<?x2x?x64xbf16>) v(%arg2 : tensor<?x2x?x64xbf16>) inputs(%arg3 : tensor<?xi32>) offsets(%arg4, %arg5) {align = #attn.align<bottom_right>, input_dims = [["B"]], input_names = ["prefix"], normalizer = #attn.normalizer<softmax>, scale = 1.250000e-01 : f64} -> tensor<?x8x?x64xbf16> mask {
    ^bb0(%b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
      %value, %in_bounds = attn.lookup %arg3[%b] : tensor<?xi32> -> i64
      %1 = attn.prefix_lm %q, %kv prefix(%value)
      %2 = arith.andi %1, %in_bounds : i1
      attn.yield %2 : i1
    } score {
    ^bb0(%s: f32, %b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
      attn.yield %s : f32
    }
    return %0 : tensor<?x8x?x64xbf16>
  }
}

