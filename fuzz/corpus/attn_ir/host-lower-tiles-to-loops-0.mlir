

func.func @doc_causal(%q: tensor<?x2x?x16xf32>, %doc: tensor<?x?xi32>, %qo: i64, %ko: i64) -> tensor<?x2x?x16xf32> {
  %o = attn.attention q(%q : tensor<?x2x?x16xf32>) k(%q : tensor<?x2x?x16xf32>) v(%q : tensor<?x2x?x16xf32>) inputs(%doc : tensor<?x?xi32>) offsets(%qo, %ko)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>, input_names = ["doc"]} -> tensor<?x2x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %c0 = arith.constant 0 : i64
    %d = arith.subi %qp, %kp : i64
    %causal = arith.cmpi sge, %d, %c0 : i64
    %a, %oka = attn.lookup %doc[%b, %qi] : tensor<?x?xi32> -> i64
    %c, %okc = attn.lookup %doc[%b, %ki] : tensor<?x?xi32> -> i64
    %eq = arith.cmpi eq, %a, %c : i64
    %m0 = arith.andi %causal, %eq : i1
    %m1 = arith.andi %m0, %oka : i1
    %m = arith.andi %m1, %okc : i1
    attn.yield %m : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return %o : tensor<?x2x?x16xf32>
}
