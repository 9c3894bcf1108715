

func.func @f(%s: f32, %a: i64, %t: tensor<32x4xi32>) {
  %m = attn.t5_bias %s, %a, %a, %a table(%t : tensor<32x4xi32>) {num_buckets = 32, max_distance = 128, bidirectional = true}
  return
}

