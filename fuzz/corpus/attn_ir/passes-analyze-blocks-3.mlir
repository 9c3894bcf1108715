

func.func @block_list(%q: tensor<?x2x?x16xf32>, %list: tensor<?x2x?x?xi32>, %qo: i64, %ko: i64) -> tensor<?x2x?x16xf32> {
  %o = attn.attention q(%q : tensor<?x2x?x16xf32>) k(%q : tensor<?x2x?x16xf32>) v(%q : tensor<?x2x?x16xf32>) inputs(%list : tensor<?x2x?x?xi32>) offsets(%qo, %ko)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>, input_names = ["list"]} -> tensor<?x2x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %c64 = arith.constant 64 : i64
    %c32 = arith.constant 32 : i64
    %qb = arith.floordivsi %qi, %c64 : i64
    %kb = arith.floordivsi %ki, %c32 : i64
    %m = attn.contains %kb in %list[%b, %h, %qb] : tensor<?x2x?x?xi32>
    attn.yield %m : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return %o : tensor<?x2x?x16xf32>
}

