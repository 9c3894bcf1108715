

func.func @rope_other_offset(%q: tensor<?x2x?x16xf32>, %qo: i64, %other: i64) -> tensor<?x2x?x16xf32> {
  %qr = attn.rope %q offset(%other) {theta = 1.0e4 : f64, style = #attn.rope_style<half>, rotary_dim = 16 : i64, scaling = #attn.rope_scaling<none>} : tensor<?x2x?x16xf32>
  %o = attn.attention q(%qr : tensor<?x2x?x16xf32>) k(%q : tensor<?x2x?x16xf32>) v(%q : tensor<?x2x?x16xf32>) offsets(%qo, %qo)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x2x?x16xf32>
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
