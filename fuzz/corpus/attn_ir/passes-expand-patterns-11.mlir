

func.func @alibi(%q: tensor<?x4x?x16xf32>, %k: tensor<?x4x?x16xf32>, %o: i64) -> tensor<?x4x?x16xf32> {
  %r = attn.attention q(%q : tensor<?x4x?x16xf32>) k(%k : tensor<?x4x?x16xf32>) v(%k : tensor<?x4x?x16xf32>) offsets(%o, %o)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x4x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %t = arith.constant true
    attn.yield %t : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %r = attn.alibi %s, %h, %qp, %kp {slopes = array<f64: 0.5, 0.25, 0.125, 0.0625>}
    attn.yield %r : f32
  }
  return %r : tensor<?x4x?x16xf32>
}

