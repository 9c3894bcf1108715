

func.func @sigmoid_untouched(%q: tensor<?x2x?x16xf32>, %o0: i64) -> tensor<?x2x?x16xf32> {
  %o = attn.attention q(%q : tensor<?x2x?x16xf32>) k(%q : tensor<?x2x?x16xf32>) v(%q : tensor<?x2x?x16xf32>) offsets(%o0, %o0)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<sigmoid>, align = #attn.align<bottom_right>} -> tensor<?x2x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %t = arith.constant true
    attn.yield %t : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return %o : tensor<?x2x?x16xf32>
}

