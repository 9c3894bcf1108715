// RUN: %attn-opt %s -split-input-file -attn-differentiate-score -verify-diagnostics
// The pass fails (attn-opt exits non-zero) as well as reporting:
// RUN: not %attn-opt %s -split-input-file -attn-differentiate-score -o /dev/null

// A loop whose carried value is not a sum has no derivative here.
func.func @product(%q: tensor<?x1x?x16xf32>, %k: tensor<?x1x?x16xf32>, %v: tensor<?x1x?x16xf32>, %qo: i64, %ko: i64) -> tensor<?x1x?x16xf32> {
  %c0 = arith.constant 0 : index
  %c4 = arith.constant 4 : index
  %c1 = arith.constant 1 : index
  %true = arith.constant true
  %c2 = arith.constant 2.0 : f32
  %0 = attn.attention q(%q : tensor<?x1x?x16xf32>) k(%k : tensor<?x1x?x16xf32>) v(%v : tensor<?x1x?x16xf32>) offsets(%qo, %ko) {align = #attn.align<bottom_right>, normalizer = #attn.normalizer<softmax>, scale = 2.500000e-01 : f64} -> tensor<?x1x?x16xf32> mask {
  ^bb0(%b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %qp: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
    attn.yield %true : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %qp: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
    // expected-error @+1 {{attn-differentiate-score: the loop's carried value #0 is not a sum}}
    %1 = scf.for %i = %c0 to %c4 step %c1 iter_args(%acc = %s) -> (f32) {
      %2 = arith.mulf %acc, %s : f32
      scf.yield %2 : f32
    }
    attn.yield %1 : f32
  }
  return %0 : tensor<?x1x?x16xf32>
}

// -----

// An op with no derivative rule.
func.func @no_rule(%q: tensor<?x1x?x16xf32>, %k: tensor<?x1x?x16xf32>, %v: tensor<?x1x?x16xf32>, %qo: i64, %ko: i64) -> tensor<?x1x?x16xf32> {
  %true = arith.constant true
  %0 = attn.attention q(%q : tensor<?x1x?x16xf32>) k(%k : tensor<?x1x?x16xf32>) v(%v : tensor<?x1x?x16xf32>) offsets(%qo, %ko) {align = #attn.align<bottom_right>, normalizer = #attn.normalizer<softmax>, scale = 2.500000e-01 : f64} -> tensor<?x1x?x16xf32> mask {
  ^bb0(%b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %qp: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
    attn.yield %true : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %qp: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
    // expected-error @+1 {{attn-differentiate-score: no derivative for 'math.sin'}}
    %1 = math.sin %s : f32
    attn.yield %1 : f32
  }
  return %0 : tensor<?x1x?x16xf32>
}

// -----

// Named patterns are differentiated after attn-expand-patterns.
func.func @named(%q: tensor<?x1x?x16xf32>, %k: tensor<?x1x?x16xf32>, %v: tensor<?x1x?x16xf32>, %qo: i64, %ko: i64) -> tensor<?x1x?x16xf32> {
  %true = arith.constant true
  %0 = attn.attention q(%q : tensor<?x1x?x16xf32>) k(%k : tensor<?x1x?x16xf32>) v(%v : tensor<?x1x?x16xf32>) offsets(%qo, %ko) {align = #attn.align<bottom_right>, normalizer = #attn.normalizer<softmax>, scale = 2.500000e-01 : f64} -> tensor<?x1x?x16xf32> mask {
  ^bb0(%b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %qp: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
    attn.yield %true : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %qp: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
    // expected-error @+1 {{attn-differentiate-score: run attn-expand-patterns first ('attn.softcap' is a named pattern)}}
    %1 = attn.softcap %s {cap = 3.000000e+01 : f64}
    attn.yield %1 : f32
  }
  return %0 : tensor<?x1x?x16xf32>
}
