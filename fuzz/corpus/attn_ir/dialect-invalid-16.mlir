

func.func @f(%q: tensor<?x4x?x64xbf16>, %k: tensor<?x2x?x64xbf16>, %v: tensor<?x2x?x64xbf16>, %o0: i64, %d: tensor<?x?xi32>) {
  %o = attn.attention q(%q : tensor<?x4x?x64xbf16>) k(%k : tensor<?x2x?x64xbf16>) v(%v : tensor<?x2x?x64xbf16>) inputs(%d, %d : tensor<?x?xi32>, tensor<?x?xi32>) offsets(%o0, %o0) {scale = 1.0 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>, input_names = ["x", "x"]} -> tensor<?x4x?x64xbf16>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %t = arith.constant true
    attn.yield %t : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return
}

