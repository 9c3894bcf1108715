

func.func @kerple(%q: tensor<?x4x?x16xf32>, %k: tensor<?x4x?x16xf32>, %o: i64) -> tensor<?x4x?x16xf32> {
  %r = attn.attention q(%q : tensor<?x4x?x16xf32>) k(%k : tensor<?x4x?x16xf32>) v(%k : tensor<?x4x?x16xf32>) offsets(%o, %o)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x4x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %t = arith.constant true
    attn.yield %t : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %r = attn.kerple_log %s, %h, %qp, %kp {r1 = array<f64: 1.0, 1.0, 1.0, 1.0>, r2 = array<f64: 2.0, 2.0, 2.0, 2.0>}
    %r2 = attn.log_length_scale %r, %qp {base = 64.0 : f64}
    attn.yield %r2 : f32
  }
  return %r : tensor<?x4x?x16xf32>
}

