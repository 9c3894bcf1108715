

func.func @f(%s: f32, %a: i64, %t: tensor<?x2x?x8xf32>) {
  %r = attn.rope %t offset(%a) {theta = 1.0e4 : f64, style = #attn.rope_style<half>, rotary_dim = 8 : i64, scaling = #attn.rope_scaling<yarn>, factor = 4.0 : f64} : tensor<?x2x?x8xf32>
  return
}
