

func.func @f(%s: f32, %a: i64, %w: tensor<8xf32>) {
  %m = attn.fire %s, %a, %a, %a weights(%w, %w, %w, %w : tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) {c = 1.0 : f64, L = 1.0 : f64}
  return
}

