// RUN: %attn-opt %s | %attn-opt | FileCheck %s
// RUN: %attn-opt %s --mlir-print-op-generic | %attn-opt | FileCheck %s

// Printing then parsing gives the same IR, for every L1 op.

// CHECK-LABEL: func.func @all_ops
func.func @all_ops(%q: tensor<?x4x?x64xbf16>, %k: tensor<?x2x?x64xbf16>,
                   %v: tensor<?x2x?x32xbf16>, %doc: tensor<?x?xi32>,
                   %tab: tensor<32x4xf32>, %cols: tensor<?x4x?xi32>,
                   %w1: tensor<?xf32>, %w2: tensor<4x?xf32>, %b2: tensor<4xf32>,
                   %qo: i64, %ko: i64) -> (tensor<?x4x?x32xbf16>, tensor<?x4x?xf32>) {
  // CHECK: attn.rope %{{.*}} offset(%{{.*}}) {factor = 4.000000e+00 : f64, original_max_position = 4096 : i64, rotary_dim = 32 : i64, scaling = #attn.rope_scaling<yarn>, style = #attn.rope_style<interleaved>
  %qr = attn.rope %q offset(%qo) {theta = 1.0e4 : f64, style = #attn.rope_style<interleaved>,
                                  rotary_dim = 32 : i64, scaling = #attn.rope_scaling<yarn>,
                                  factor = 4.0 : f64, original_max_position = 4096 : i64} : tensor<?x4x?x64xbf16>
  // CHECK: attn.attention q(%{{.*}} : tensor<?x4x?x64xbf16>) k(%{{.*}} : tensor<?x2x?x64xbf16>) v(%{{.*}} : tensor<?x2x?x32xbf16>)
  // CHECK-SAME: inputs(
  // CHECK-SAME: offsets(
  // CHECK-SAME: normalizer = #attn.normalizer<softmax>
  // CHECK-SAME: -> tensor<?x4x?x32xbf16>, tensor<?x4x?xf32> mask {
  %o, %lse = attn.attention q(%qr : tensor<?x4x?x64xbf16>) k(%k : tensor<?x2x?x64xbf16>)
      v(%v : tensor<?x2x?x32xbf16>)
      inputs(%doc, %tab, %cols, %w1, %w2, %b2 : tensor<?x?xi32>, tensor<32x4xf32>, tensor<?x4x?xi32>, tensor<?xf32>, tensor<4x?xf32>, tensor<4xf32>)
      offsets(%qo, %ko)
      {scale = 0.125 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>,
       input_names = ["doc", "tab", "cols", "w1", "w2", "b2"]}
      -> tensor<?x4x?x32xbf16>, tensor<?x4x?xf32>
  mask {
  // CHECK: ^bb0(%b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    // CHECK: attn.causal %q, %kv
    %0 = attn.causal %qp, %kp
    // CHECK: attn.sliding_window %q, %kv {left = 127 : i64, right = -1 : i64}
    %1 = attn.sliding_window %qp, %kp {left = 127, right = -1}
    // CHECK: attn.dilated_window %q, %kv {dilation = 2 : i64, left = 10 : i64, right = 0 : i64}
    %2 = attn.dilated_window %qp, %kp {left = 10, right = 0, dilation = 2}
    // CHECK: attn.sinks %kv {count = 4 : i64}
    %3 = attn.sinks %kp {count = 4}
    // CHECK: attn.global_tokens %q, %kv {tokens = array<i64: 0, 7>}
    %4 = attn.global_tokens %qp, %kp {tokens = array<i64: 0, 7>}
    // CHECK: attn.prefix_lm %q, %kv prefix(%{{.*}})
    %c8 = arith.constant 8 : i64
    %5 = attn.prefix_lm %qp, %kp prefix(%c8)
    // CHECK: attn.strided %q, %kv {stride = 16 : i64}
    %6 = attn.strided %qp, %kp {stride = 16}
    // CHECK: attn.fixed %q, %kv {stride = 16 : i64, summary = 2 : i64}
    %7 = attn.fixed %qp, %kp {stride = 16, summary = 2}
    // CHECK: attn.dilated_segments %h, %q, %kv {dilation = 2 : i64, segment = 32 : i64}
    %8 = attn.dilated_segments %h, %qp, %kp {segment = 32, dilation = 2}
    // CHECK: attn.shifted_groups %h, %q, %kv {group = 16 : i64, shifted_heads = array<i64: 2, 3>}
    %9 = attn.shifted_groups %h, %qp, %kp {group = 16, shifted_heads = array<i64: 2, 3>}
    // CHECK: attn.lookup %{{.*}}[%b, %q_idx] : tensor<?x?xi32> -> i64
    %d, %ok = attn.lookup %doc[%b, %qi] : tensor<?x?xi32> -> i64
    // CHECK: attn.contains %kv_idx in %{{.*}}[%b, %h] : tensor<?x4x?xi32>
    %10 = attn.contains %ki in %cols[%b, %h] : tensor<?x4x?xi32>
    %a = arith.andi %0, %1 : i1
    %r = arith.andi %a, %ok : i1
    attn.yield %r : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    // CHECK: attn.softcap %s {cap = 3.000000e+01 : f64}
    %0 = attn.softcap %s {cap = 30.0 : f64}
    // CHECK: attn.alibi %{{.*}}, %h, %q, %kv {slopes = array<f64: 5.000000e-01, 2.500000e-01, 1.250000e-01, 6.250000e-02>}
    %1 = attn.alibi %0, %h, %qp, %kp {slopes = array<f64: 0.5, 0.25, 0.125, 0.0625>}
    // CHECK: attn.t5_bias %{{.*}}, %h, %q, %kv table(%{{.*}} : tensor<32x4xf32>) {bidirectional = true, max_distance = 128 : i64, num_buckets = 32 : i64}
    %2 = attn.t5_bias %1, %h, %qp, %kp table(%tab : tensor<32x4xf32>) {num_buckets = 32, max_distance = 128, bidirectional = true}
    // CHECK: attn.fire %{{.*}}, %h, %q, %kv weights(
    %3 = attn.fire %2, %h, %qp, %kp weights(%w1, %w1, %w2, %b2 : tensor<?xf32>, tensor<?xf32>, tensor<4x?xf32>, tensor<4xf32>) {c = 1.0 : f64, L = 512.0 : f64}
    // CHECK: attn.kerple_log
    %4 = attn.kerple_log %3, %h, %qp, %kp {r1 = array<f64: 1.0, 1.0, 1.0, 1.0>, r2 = array<f64: 0.5, 0.5, 0.5, 0.5>}
    // CHECK: attn.log_length_scale %{{.*}}, %q {base = 5.120000e+02 : f64}
    %5 = attn.log_length_scale %4, %qp {base = 512.0 : f64}
    attn.yield %5 : f32
  }
  return %o, %lse : tensor<?x4x?x32xbf16>, tensor<?x4x?xf32>
}
