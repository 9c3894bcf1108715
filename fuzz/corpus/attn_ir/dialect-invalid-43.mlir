

func.func @f(%s: f32, %a: i64, %t: tensor<?x2x?x8xf32>) {
  %r = attn.rope %t offset(%a) {theta = 0.5 : f64, style = #attn.rope_style<half>, rotary_dim = 8 : i64, scaling = #attn.rope_scaling<none>} : tensor<?x2x?x8xf32>
  return
}

