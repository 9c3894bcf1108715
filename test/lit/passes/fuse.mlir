// RUN: %attn-opt %s -split-input-file -attn-fuse | FileCheck %s

// RoPE moves into the attention (the kernel rotates each q/k tile as it loads it);
// softmax moves to base 2 so that exp2 needs one multiply.

// CHECK-LABEL: func.func @rope_and_scale
// CHECK-NOT: attn.rope
// CHECK: attn.attention q(%arg0 : tensor<?x2x?x16xf32>) k(%arg1 : tensor<?x2x?x16xf32>)
// CHECK-SAME: k_rope = #attn.rope<theta = 1.000000e+04 : f64, style = half, rotary_dim = 16, scaling = none
// CHECK-SAME: q_rope = #attn.rope<theta = 1.000000e+04 : f64, style = half, rotary_dim = 16, scaling = none
// Identity score: scale * log2(e) = 0.25 * 1.4427 is the only multiply before exp2.
// CHECK-SAME: scale = 0.36067376022224085 : f64, softmax_base2
// CHECK: score {
// CHECK-NEXT: ^bb0(%s: f32
// CHECK-NEXT: attn.yield %s : f32
func.func @rope_and_scale(%q: tensor<?x2x?x16xf32>, %k: tensor<?x2x?x16xf32>, %qo: i64, %ko: i64) -> tensor<?x2x?x16xf32> {
  %qr = attn.rope %q offset(%qo) {theta = 1.0e4 : f64, style = #attn.rope_style<half>, rotary_dim = 16 : i64, scaling = #attn.rope_scaling<none>} : tensor<?x2x?x16xf32>
  %kr = attn.rope %k offset(%ko) {theta = 1.0e4 : f64, style = #attn.rope_style<half>, rotary_dim = 16 : i64, scaling = #attn.rope_scaling<none>} : tensor<?x2x?x16xf32>
  %o = attn.attention q(%qr : tensor<?x2x?x16xf32>) k(%kr : tensor<?x2x?x16xf32>) v(%k : tensor<?x2x?x16xf32>) offsets(%qo, %ko)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x2x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %t = arith.constant true
    attn.yield %t : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return %o : tensor<?x2x?x16xf32>
}

// -----

// A score transform keeps the natural scale; its result is multiplied by log2(e).
// CHECK-LABEL: func.func @softcap_base2
// CHECK: scale = 2.500000e-01 : f64, softmax_base2
// CHECK: %[[CAP:.*]] = attn.softcap %s
// CHECK: %[[LOG2E:.*]] = arith.constant 1.44269502 : f32
// CHECK: %[[R:.*]] = arith.mulf %[[CAP]], %[[LOG2E]] : f32
// CHECK: attn.yield %[[R]] : f32
func.func @softcap_base2(%q: tensor<?x2x?x16xf32>, %o0: i64) -> tensor<?x2x?x16xf32> {
  %o = attn.attention q(%q : tensor<?x2x?x16xf32>) k(%q : tensor<?x2x?x16xf32>) v(%q : tensor<?x2x?x16xf32>) offsets(%o0, %o0)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x2x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %t = arith.constant true
    attn.yield %t : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %c = attn.softcap %s {cap = 30.0 : f64}
    attn.yield %c : f32
  }
  return %o : tensor<?x2x?x16xf32>
}

// -----

// Sigmoid weights are not a softmax: nothing moves to base 2.
// CHECK-LABEL: func.func @sigmoid_untouched
// CHECK-NOT: softmax_base2
// CHECK: scale = 2.500000e-01 : f64
func.func @sigmoid_untouched(%q: tensor<?x2x?x16xf32>, %o0: i64) -> tensor<?x2x?x16xf32> {
  %o = attn.attention q(%q : tensor<?x2x?x16xf32>) k(%q : tensor<?x2x?x16xf32>) v(%q : tensor<?x2x?x16xf32>) offsets(%o0, %o0)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<sigmoid>, align = #attn.align<bottom_right>} -> tensor<?x2x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %t = arith.constant true
    attn.yield %t : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return %o : tensor<?x2x?x16xf32>
}

// -----

// A rope at another offset than the attention's is not the attention's rope: kept.
// CHECK-LABEL: func.func @rope_other_offset
// CHECK: attn.rope
// CHECK-NOT: q_rope
func.func @rope_other_offset(%q: tensor<?x2x?x16xf32>, %qo: i64, %other: i64) -> tensor<?x2x?x16xf32> {
  %qr = attn.rope %q offset(%other) {theta = 1.0e4 : f64, style = #attn.rope_style<half>, rotary_dim = 16 : i64, scaling = #attn.rope_scaling<none>} : tensor<?x2x?x16xf32>
  %o = attn.attention q(%qr : tensor<?x2x?x16xf32>) k(%q : tensor<?x2x?x16xf32>) v(%q : tensor<?x2x?x16xf32>) offsets(%qo, %qo)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x2x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %t = arith.constant true
    attn.yield %t : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return %o : tensor<?x2x?x16xf32>
}
