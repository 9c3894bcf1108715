

func.func @global_queries(%q: tensor<?x2x?x16xf32>, %qo: i64, %ko: i64) -> tensor<?x2x?x16xf32> {
  %o = attn.attention q(%q : tensor<?x2x?x16xf32>) k(%q : tensor<?x2x?x16xf32>) v(%q : tensor<?x2x?x16xf32>) offsets(%qo, %ko)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x2x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %c8 = arith.constant 8 : i64
    %c0 = arith.constant 0 : i64
    %d = arith.subi %qp, %kp : i64
    %g = arith.cmpi slt, %qp, %c8 : i64
    %causal = arith.cmpi sge, %d, %c0 : i64
    %m = arith.andi %g, %causal : i1
    attn.yield %m : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return %o : tensor<?x2x?x16xf32>
}
