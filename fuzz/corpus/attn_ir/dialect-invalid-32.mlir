

func.func @f(%s: f32, %a: i64) {
  %m = attn.log_length_scale %s, %a {base = 1.0 : f64}
  return
}

