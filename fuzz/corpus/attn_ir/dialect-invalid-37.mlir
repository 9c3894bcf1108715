

func.func @f(%s: f32, %a: i64, %t: tensor<?x?xi32>) {
  %v, %ok = attn.lookup %t[%a] : tensor<?x?xi32> -> i64
  return
}

