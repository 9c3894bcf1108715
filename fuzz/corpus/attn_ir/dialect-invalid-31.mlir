

func.func @f(%s: f32, %a: i64) {
  %m = attn.softcap %s {cap = 0.0 : f64}
  return
}

