

func.func @f(%s: f32, %a: i64, %t: tensor<?x2x?x8xf32>) {
  %r = attn.rope %t offset(%a) {theta = 1.0e4 : f64, style = #attn.rope_style<half>, rotary_dim = 7 : i64, scaling = #attn.rope_scaling<none>} : tensor<?x2x?x8xf32>
  return
}

