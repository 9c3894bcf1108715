

func.func @f(%s: f32, %a: i64, %t: tensor<?x?xf16>) {
  %v, %ok = attn.lookup %t[%a, %a] : tensor<?x?xf16> -> f32
  return
}

