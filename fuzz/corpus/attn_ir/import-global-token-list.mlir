module {
  func.func @global_token_list(%arg0: tensor<?x8x?x64xbf16>, %arg1: tensor<?x2x?x64xbf16>, %arg2: tensor<?x2x?x64xbf16>, %arg3: i64, %arg4: i64) -> tensor<?x8x?x64xbf16> {
    %0 = attn.attention q(%arg0 : tensor<?x8x?x64xbf16>) k(%arg1 : tensor<?x2x?x64xbf16>) v(%arg2 : tensor<?x2x?x64xbf16>) offsets(%arg3, %arg4) {align = #attn.align<bottom_right>, normalizer = #attn.normalizer<softmax>, scale = 1.250000e-01 : f64} -> tensor<?x8x?x64xbf16> mask {
    ^bb0(%b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
      %1 = attn.sliding_window %q, %kv {left = 16 : i64, right = 16 : i64}
      %2 = attn.global_tokens %q, %kv {tokens = array<i64: 0, 5, 40, 99>}
      %3 = arith.ori %1, %2 : i1
      attn.yield %3 : i1
    } score {
    ^bb0(%s: f32, %b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
      attn.yield %s : f32
    }
    return %0 : tensor<?x8x?x64xbf16>
  }
}

