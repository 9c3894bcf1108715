

func.func @all_ops(%q: tensor<?x4x?x64xbf16>, %k: tensor<?x2x?x64xbf16>,
                   %v: tensor<?x2x?x32xbf16>, %doc: tensor<?x?xi32>,
                   %tab: tensor<32x4xf32>, %cols: tensor<?x4x?xi32>,
                   %w1: tensor<?xf32>, %w2: tensor<4x?xf32>, %b2: tensor<4xf32>,
                   %qo: i64, %ko: i64) -> (tensor<?x4x?x32xbf16>, tensor<?x4x?xf32>) {
  %qr = attn.rope %q offset(%qo) {theta = 1.0e4 : f64, style = #attn.rope_style<interleaved>,
                                  rotary_dim = 32 : i64, scaling = #attn.rope_scaling<yarn>,
                                  factor = 4.0 : f64, original_max_position = 4096 : i64} : tensor<?x4x?x64xbf16>
  %o, %lse = attn.attention q(%qr : tensor<?x4x?x64xbf16>) k(%k : tensor<?x2x?x64xbf16>)
      v(%v : tensor<?x2x?x32xbf16>)
      inputs(%doc, %tab, %cols, %w1, %w2, %b2 : tensor<?x?xi32>, tensor<32x4xf32>, tensor<?x4x?xi32>, tensor<?xf32>, tensor<4x?xf32>, tensor<4xf32>)
      offsets(%qo, %ko)
      {scale = 0.125 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>,
       input_names = ["doc", "tab", "cols", "w1", "w2", "b2"]}
      -> tensor<?x4x?x32xbf16>, tensor<?x4x?xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %0 = attn.causal %qp, %kp
    %1 = attn.sliding_window %qp, %kp {left = 127, right = -1}
    %2 = attn.dilated_window %qp, %kp {left = 10, right = 0, dilation = 2}
    %3 = attn.sinks %kp {count = 4}
    %4 = attn.global_tokens %qp, %kp {tokens = array<i64: 0, 7>}
    %c8 = arith.constant 8 : i64
    %5 = attn.prefix_lm %qp, %kp prefix(%c8)
    %6 = attn.strided %qp, %kp {stride = 16}
    %7 = attn.fixed %qp, %kp {stride = 16, summary = 2}
    %8 = attn.dilated_segments %h, %qp, %kp {segment = 32, dilation = 2}
    %9 = attn.shifted_groups %h, %qp, %kp {group = 16, shifted_heads = array<i64: 2, 3>}
    %d, %ok = attn.lookup %doc[%b, %qi] : tensor<?x?xi32> -> i64
    %10 = attn.contains %ki in %cols[%b, %h] : tensor<?x4x?xi32>
    %a = arith.andi %0, %1 : i1
    %r = arith.andi %a, %ok : i1
    attn.yield %r : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %0 = attn.softcap %s {cap = 30.0 : f64}
    %1 = attn.alibi %0, %h, %qp, %kp {slopes = array<f64: 0.5, 0.25, 0.125, 0.0625>}
    %2 = attn.t5_bias %1, %h, %qp, %kp table(%tab : tensor<32x4xf32>) {num_buckets = 32, max_distance = 128, bidirectional = true}
    %3 = attn.fire %2, %h, %qp, %kp weights(%w1, %w1, %w2, %b2 : tensor<?xf32>, tensor<?xf32>, tensor<4x?xf32>, tensor<4xf32>) {c = 1.0 : f64, L = 512.0 : f64}
    %4 = attn.kerple_log %3, %h, %qp, %kp {r1 = array<f64: 1.0, 1.0, 1.0, 1.0>, r2 = array<f64: 0.5, 0.5, 0.5, 0.5>}
    %5 = attn.log_length_scale %4, %qp {base = 512.0 : f64}
    attn.yield %5 : f32
  }
  return %o, %lse : tensor<?x4x?x32xbf16>, tensor<?x4x?xf32>
}
