module {
  func.func @bigbird(%arg0: tensor<?x8x?x64xbf16>, %arg1: tensor<?x2x?x64xbf16>, %arg2: tensor<?x2x?x64xbf16>, %arg3: tensor<?x8x?x?xi32>, %arg4: i64, %arg5: i64) -> tensor<?x8x?x64xbf16> {
    %0 = attn.attention q(%arg0 : tensor<?x8x?x64xbf16>) k(%arg1 : tensor<?x2x?x64xbf16>) v(%arg2 : tensor<?x2x?x64xbf16>) inputs(%arg3 : tensor<?x8x?x?xi32>) offsets(%arg4, %arg5) {align = #attn.align<bottom_right>, input_dims = [["B", "Hq", "NQB", "K"]], input_names = ["blocks"], normalizer = #attn.normalizer<softmax>, scale = 1.250000e-01 : f64} -> tensor<?x8x?x64xbf16> mask {
    ^bb0(%b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
      %1 = attn.sliding_window %q, %kv {left = 64 : i64, right = 64 : i64}
      %2 = attn.global_tokens %q, %kv {count = 16 : i64}
      %3 = arith.ori %1, %2 : i1
      %c64_i64 = arith.constant 64 : i64
      %4 = arith.floordivsi %q_idx, %c64_i64 : i64
      %c64_i64_0 = arith.constant 64 : i64
      %5 = arith.floordivsi %kv_idx, %c64_i64_0 : i64
      %6 = attn.contains %5 in %arg3[%b, %h, %4] : tensor<?x8x?x?xi32>
      %7 = arith.ori %3, %6 : i1
      attn.yield %7 : i1
    } score {
    ^bb0(%s: f32, %b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
      attn.yield %s : f32
    }
    return %0 : tensor<?x8x?x64xbf16>
  }
}

