module {
  func.func @t5_bias(%arg0: tensor<?x8x?x64xbf16>, %arg1: tensor<?x2x?x64xbf16>, %arg2: tensor<?x2x?x64xbf16>, %arg3: tensor<32x8xf32>, %arg4: i64, %arg5: i64) -> tensor<?x8x?x64xbf16> {
    %0 = attn.attention q(%arg0 : tensor<?x8x?x64xbf16>) k(%arg1 : tensor<?x2x?x64xbf16>) v(%arg2 : tensor<?x2x?x64xbf16>) inputs(%arg3 : tensor<32x8xf32>) offsets(%arg4, %arg5) {align = #attn.align<bottom_right>, input_dims = [[32, "Hq"]], input_names = ["table"], normalizer = #attn.normalizer<softmax>, scale = 1.250000e-01 : f64} -> tensor<?x8x?x64xbf16> mask {
    ^bb0(%b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
      %true = arith.constant true
      attn.yield %true : i1
    } score {
    ^bb0(%s: f32, %b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
      %1 = attn.t5_bias %s, %h, %q, %kv table(%arg3 : tensor<32x8xf32>) {bidirectional = true, max_distance = 128 : i64, num_buckets = 32 : i64}
      attn.yield %1 : f32
    }
    return %0 : tensor<?x8x?x64xbf16>
  }
}

