

func.func @f(%s: f32, %a: i64, %t: tensor<?x?xi32>) {
  %v = attn.contains %a in %t[%a, %a] : tensor<?x?xi32>
  return
}

