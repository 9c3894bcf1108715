// RUN: %attn-opt %s -split-input-file -attn-expand-patterns -verify-diagnostics
// The pass fails (attn-opt exits non-zero) as well as reporting:
// RUN: not %attn-opt %s -split-input-file -attn-expand-patterns -o /dev/null 2>&1 | FileCheck %s
// CHECK: error: 'attn.t5_bias' op cannot be expanded by attn-expand-patterns: num_buckets = 4097

// T5 compares the distance against one threshold per bucket: more than 4096 buckets
// (kMaxT5Buckets, the importer's limit) is refused at the op; 2^40 used to keep the
// pass building thresholds until killed. The verifier accepts these ops: the table's
// bucket dimension is dynamic.
func.func @t5_too_many_buckets(%q: tensor<?x4x?x16xf32>, %k: tensor<?x4x?x16xf32>, %tab: tensor<?x4xf32>, %o: i64) -> tensor<?x4x?x16xf32> {
  %r = attn.attention q(%q : tensor<?x4x?x16xf32>) k(%k : tensor<?x4x?x16xf32>) v(%k : tensor<?x4x?x16xf32>) inputs(%tab : tensor<?x4xf32>) offsets(%o, %o)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>, input_names = ["t"]} -> tensor<?x4x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %t = arith.constant true
    attn.yield %t : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    // expected-error @+1 {{'attn.t5_bias' op cannot be expanded by attn-expand-patterns: num_buckets = 4097 is more than the 4096 the expansion supports}}
    %r = attn.t5_bias %s, %h, %qp, %kp table(%tab : tensor<?x4xf32>) {num_buckets = 4097, max_distance = 128, bidirectional = false}
    attn.yield %r : f32
  }
  return %r : tensor<?x4x?x16xf32>
}

// -----
// 2^40 buckets: refused at once (the threshold search never starts).

func.func @t5_huge(%q: tensor<?x4x?x16xf32>, %k: tensor<?x4x?x16xf32>, %tab: tensor<?x4xf32>, %o: i64) -> tensor<?x4x?x16xf32> {
  %r = attn.attention q(%q : tensor<?x4x?x16xf32>) k(%k : tensor<?x4x?x16xf32>) v(%k : tensor<?x4x?x16xf32>) inputs(%tab : tensor<?x4xf32>) offsets(%o, %o)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>, input_names = ["t"]} -> tensor<?x4x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %t = arith.constant true
    attn.yield %t : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    // expected-error @+1 {{num_buckets = 1099511627776 is more than the 4096}}
    %r = attn.t5_bias %s, %h, %qp, %kp table(%tab : tensor<?x4xf32>) {num_buckets = 1099511627776, max_distance = 1099511627776, bidirectional = true}
    attn.yield %r : f32
  }
  return %r : tensor<?x4x?x16xf32>
}

// -----
// 4096 buckets, the limit itself, expand (no diagnostic).

func.func @t5_at_the_limit(%q: tensor<?x4x?x16xf32>, %k: tensor<?x4x?x16xf32>, %tab: tensor<4096x4xf32>, %o: i64) -> tensor<?x4x?x16xf32> {
  %r = attn.attention q(%q : tensor<?x4x?x16xf32>) k(%k : tensor<?x4x?x16xf32>) v(%k : tensor<?x4x?x16xf32>) inputs(%tab : tensor<4096x4xf32>) offsets(%o, %o)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>, input_names = ["t"]} -> tensor<?x4x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %t = arith.constant true
    attn.yield %t : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %r = attn.t5_bias %s, %h, %qp, %kp table(%tab : tensor<4096x4xf32>) {num_buckets = 4096, max_distance = 100000, bidirectional = true}
    attn.yield %r : f32
  }
  return %r : tensor<?x4x?x16xf32>
}
