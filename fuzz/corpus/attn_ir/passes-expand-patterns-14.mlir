

func.func @fire(%q: tensor<?x4x?x16xf32>, %k: tensor<?x4x?x16xf32>, %w1: tensor<?xf32>, %w2: tensor<4x?xf32>, %b2: tensor<4xf32>, %o: i64) -> tensor<?x4x?x16xf32> {
  %r = attn.attention q(%q : tensor<?x4x?x16xf32>) k(%k : tensor<?x4x?x16xf32>) v(%k : tensor<?x4x?x16xf32>) inputs(%w1, %w2, %b2 : tensor<?xf32>, tensor<4x?xf32>, tensor<4xf32>) offsets(%o, %o)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>, input_names = ["w1", "w2", "b2"]} -> tensor<?x4x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %t = arith.constant true
    attn.yield %t : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %r = attn.fire %s, %h, %qp, %kp weights(%w1, %w1, %w2, %b2 : tensor<?xf32>, tensor<?xf32>, tensor<4x?xf32>, tensor<4xf32>) {c = 1.0 : f64, L = 64.0 : f64}
    attn.yield %r : f32
  }
  return %r : tensor<?x4x?x16xf32>
}
