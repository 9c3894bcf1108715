

func.func @f(%s: f32, %a: i64) {
  %m = attn.kerple_log %s, %a, %a, %a {r1 = array<f64: 1.0>, r2 = array<f64: 1.0, 2.0>}
  return
}

