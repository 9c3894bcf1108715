

func.func @f(%s: f32, %a: i64, %t: tensor<?x?xf32>) {
  %v = attn.contains %a in %t[%a] : tensor<?x?xf32>
  return
}

