module {
  func.func @packed_causal(%arg0: tensor<?x8x?x64xbf16>, %arg1: tensor<?x2x?x64xbf16>, %arg2: tensor<?x2x?x64xbf16>, %arg3: tensor<?x?xi32>, %arg4: i64, %arg5: i64) -> (tensor<?x8x?x64xbf16>, tensor<?x8x?xf32>) {
    %0:2 = attn.attention q(%arg0 : tensor<?x8x?x64xbf16>) k(%arg1 : tensor<?x2x?x64xbf16>) v(%arg2 : tensor<?x2x?x64xbf16>) inputs(%arg3 : tensor<?x?xi32>) offsets(%arg4, %arg5) {align = #attn.align<top_left>, input_dims = [["B", "Sq"]], input_names = ["doc"], normalizer = #attn.normalizer<softmax>, scale = 1.250000e-01 : f64} -> tensor<?x8x?x64xbf16>, tensor<?x8x?xf32> mask {
    ^bb0(%b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
      %1 = attn.causal %q, %kv
      %value, %in_bounds = attn.lookup %arg3[%b, %q_idx] : tensor<?x?xi32> -> i64
      %value_0, %in_bounds_1 = attn.lookup %arg3[%b, %kv_idx] : tensor<?x?xi32> -> i64
      %2 = arith.cmpi eq, %value, %value_0 : i64
      %3 = arith.andi %1, %2 : i1
      %4 = arith.andi %3, %in_bounds : i1
      %5 = arith.andi %4, %in_bounds_1 : i1
      attn.yield %5 : i1
    } score {
    ^bb0(%s: f32, %b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
      attn.yield %s : f32
    }
    return %0#0, %0#1 : tensor<?x8x?x64xbf16>, tensor<?x8x?xf32>
  }
}

