module {
  func.func @vertical_slash(%arg0: tensor<?x8x?x64xbf16>, %arg1: tensor<?x2x?x64xbf16>, %arg2: tensor<?x2x?x64xbf16>, %arg3: tensor<?x8x?xi32>, %arg4: tensor<?x8x?xi32>, %arg5: i64, %arg6: i64) -> tensor<?x8x?x64xbf16> {
    %0 = attn.attention q(%arg0 : tensor<?x8x?x64xbf16>) k(%arg1 : tensor<?x2x?x64xbf16>) v(%arg2 : tensor<?x2x?x64xbf16>) inputs(%arg3, %arg4 : tensor<?x8x?xi32>, tensor<?x8x?xi32>) offsets(%arg5, %arg6) {align = #attn.align<bottom_right>, input_dims = [["B", "Hq", "Nv"], ["B", "Hq", "Ns"]], input_names = ["cols", "diags"], normalizer = #attn.normalizer<softmax>, scale = 1.250000e-01 : f64} -> tensor<?x8x?x64xbf16> mask {
    ^bb0(%b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
      %1 = attn.causal %q, %kv
      %2 = attn.contains %kv_idx in %arg3[%b, %h] : tensor<?x8x?xi32>
      %3 = arith.subi %q, %kv : i64
      %4 = attn.contains %3 in %arg4[%b, %h] : tensor<?x8x?xi32>
      %5 = arith.ori %2, %4 : i1
      %6 = arith.andi %1, %5 : i1
      attn.yield %6 : i1
    } score {
    ^bb0(%s: f32, %b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
      attn.yield %s : f32
    }
    return %0 : tensor<?x8x?x64xbf16>
  }
}

