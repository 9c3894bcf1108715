

func.func @sliding_window(%q: tensor<?x4x?x16xf32>, %k: tensor<?x4x?x16xf32>, %o: i64) -> tensor<?x4x?x16xf32> {
  %r = attn.attention q(%q : tensor<?x4x?x16xf32>) k(%k : tensor<?x4x?x16xf32>) v(%k : tensor<?x4x?x16xf32>) offsets(%o, %o)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x4x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %m = attn.sliding_window %qp, %kp {left = 127, right = 3}
    attn.yield %m : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return %r : tensor<?x4x?x16xf32>
}

