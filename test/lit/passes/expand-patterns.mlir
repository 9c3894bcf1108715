// RUN: %attn-opt %s -split-input-file -attn-expand-patterns -cse | FileCheck %s

// Each named pattern becomes the arith/math of its definition in PATTERNS.md.
// causal: q - kv >= 0

// CHECK-LABEL: func.func @causal
func.func @causal(%q: tensor<?x4x?x16xf32>, %k: tensor<?x4x?x16xf32>, %o: i64) -> tensor<?x4x?x16xf32> {
  %r = attn.attention q(%q : tensor<?x4x?x16xf32>) k(%k : tensor<?x4x?x16xf32>) v(%k : tensor<?x4x?x16xf32>) offsets(%o, %o)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x4x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %m = attn.causal %qp, %kp
    attn.yield %m : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return %r : tensor<?x4x?x16xf32>
}
// CHECK-NOT: attn.causal
// CHECK: %[[D:.*]] = arith.subi %q, %kv : i64
// CHECK: %[[M:.*]] = arith.cmpi sge, %[[D]], %{{.*}} : i64
// CHECK: attn.yield %[[M]] : i1

// -----
// sliding window: d <= left and d >= -right

// CHECK-LABEL: func.func @sliding_window
func.func @sliding_window(%q: tensor<?x4x?x16xf32>, %k: tensor<?x4x?x16xf32>, %o: i64) -> tensor<?x4x?x16xf32> {
  %r = attn.attention q(%q : tensor<?x4x?x16xf32>) k(%k : tensor<?x4x?x16xf32>) v(%k : tensor<?x4x?x16xf32>) offsets(%o, %o)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x4x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %m = attn.sliding_window %qp, %kp {left = 127, right = 3}
    attn.yield %m : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return %r : tensor<?x4x?x16xf32>
}
// CHECK: %[[D:.*]] = arith.subi %q, %kv : i64
// CHECK: %[[L:.*]] = arith.constant 127 : i64
// CHECK: arith.cmpi sle, %[[D]], %[[L]] : i64
// CHECK: %[[R:.*]] = arith.constant -3 : i64
// CHECK: arith.cmpi sge, %[[D]], %[[R]] : i64

// -----
// an unbounded side (-1) adds no comparison

// CHECK-LABEL: func.func @window_unbounded
func.func @window_unbounded(%q: tensor<?x4x?x16xf32>, %k: tensor<?x4x?x16xf32>, %o: i64) -> tensor<?x4x?x16xf32> {
  %r = attn.attention q(%q : tensor<?x4x?x16xf32>) k(%k : tensor<?x4x?x16xf32>) v(%k : tensor<?x4x?x16xf32>) offsets(%o, %o)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x4x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %m = attn.sliding_window %qp, %kp {left = -1, right = 0}
    attn.yield %m : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return %r : tensor<?x4x?x16xf32>
}
// CHECK: %[[D:.*]] = arith.subi %q, %kv : i64
// CHECK-NOT: arith.cmpi sle
// CHECK: arith.cmpi sge, %[[D]]

// -----
// dilated window: floor(d mod r) == 0 as remsi + select (readable by block analysis)

// CHECK-LABEL: func.func @dilated_window
func.func @dilated_window(%q: tensor<?x4x?x16xf32>, %k: tensor<?x4x?x16xf32>, %o: i64) -> tensor<?x4x?x16xf32> {
  %r = attn.attention q(%q : tensor<?x4x?x16xf32>) k(%k : tensor<?x4x?x16xf32>) v(%k : tensor<?x4x?x16xf32>) offsets(%o, %o)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x4x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %m = attn.dilated_window %qp, %kp {left = 8, right = 0, dilation = 3}
    attn.yield %m : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return %r : tensor<?x4x?x16xf32>
}
// CHECK: %[[D:.*]] = arith.subi %q, %kv : i64
// CHECK: %[[R:.*]] = arith.remsi %[[D]], %[[C3:.*]] : i64
// CHECK: %[[NEG:.*]] = arith.cmpi slt, %[[R]], %{{.*}} : i64
// CHECK: %[[FIX:.*]] = arith.addi %[[R]], %[[C3]] : i64
// CHECK: %[[MOD:.*]] = arith.select %[[NEG]], %[[FIX]], %[[R]] : i64
// CHECK: arith.cmpi eq, %[[MOD]]

// -----
// a dilation of 1 is the plain window: no modulo

// CHECK-LABEL: func.func @dilated_window_one
func.func @dilated_window_one(%q: tensor<?x4x?x16xf32>, %k: tensor<?x4x?x16xf32>, %o: i64) -> tensor<?x4x?x16xf32> {
  %r = attn.attention q(%q : tensor<?x4x?x16xf32>) k(%k : tensor<?x4x?x16xf32>) v(%k : tensor<?x4x?x16xf32>) offsets(%o, %o)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x4x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %m = attn.dilated_window %qp, %kp {left = 8, right = 0, dilation = 1}
    attn.yield %m : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return %r : tensor<?x4x?x16xf32>
}
// CHECK: %[[D:.*]] = arith.subi %q, %kv : i64
// CHECK: arith.cmpi sle, %[[D]], %{{.*}} : i64
// CHECK: arith.cmpi sge, %[[D]], %{{.*}} : i64
// CHECK-NOT: arith.remsi
// CHECK: attn.yield
// -----
// sinks: kv < count

// CHECK-LABEL: func.func @sinks
func.func @sinks(%q: tensor<?x4x?x16xf32>, %k: tensor<?x4x?x16xf32>, %o: i64) -> tensor<?x4x?x16xf32> {
  %r = attn.attention q(%q : tensor<?x4x?x16xf32>) k(%k : tensor<?x4x?x16xf32>) v(%k : tensor<?x4x?x16xf32>) offsets(%o, %o)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x4x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %m = attn.sinks %kp {count = 4}
    attn.yield %m : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return %r : tensor<?x4x?x16xf32>
}
// CHECK: %[[C:.*]] = arith.constant 4 : i64
// CHECK: arith.cmpi slt, %kv, %[[C]] : i64

// -----
// global tokens from a list: runs of consecutive positions become ranges

// CHECK-LABEL: func.func @global_list
func.func @global_list(%q: tensor<?x4x?x16xf32>, %k: tensor<?x4x?x16xf32>, %o: i64) -> tensor<?x4x?x16xf32> {
  %r = attn.attention q(%q : tensor<?x4x?x16xf32>) k(%k : tensor<?x4x?x16xf32>) v(%k : tensor<?x4x?x16xf32>) offsets(%o, %o)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x4x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %m = attn.global_tokens %qp, %kp {tokens = array<i64: 9, 0, 1, 2>}
    attn.yield %m : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return %r : tensor<?x4x?x16xf32>
}
// CHECK: arith.cmpi sge, %q, %{{.*}}
// CHECK: arith.cmpi sle, %q, %{{.*}}
// CHECK: arith.cmpi eq, %q, %{{.*}}
// CHECK: arith.cmpi sge, %kv

// -----
// global tokens from a count: 0 <= q < count or 0 <= kv < count

// CHECK-LABEL: func.func @global_count
func.func @global_count(%q: tensor<?x4x?x16xf32>, %k: tensor<?x4x?x16xf32>, %o: i64) -> tensor<?x4x?x16xf32> {
  %r = attn.attention q(%q : tensor<?x4x?x16xf32>) k(%k : tensor<?x4x?x16xf32>) v(%k : tensor<?x4x?x16xf32>) offsets(%o, %o)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x4x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %m = attn.global_tokens %qp, %kp {count = 2}
    attn.yield %m : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return %r : tensor<?x4x?x16xf32>
}
// CHECK: %[[C0:.*]] = arith.constant 0 : i64
// CHECK: %[[QLO:.*]] = arith.cmpi sge, %q, %[[C0]] : i64
// CHECK: %[[G:.*]] = arith.constant 2 : i64
// CHECK: %[[QHI:.*]] = arith.cmpi slt, %q, %[[G]] : i64
// CHECK: %[[QG:.*]] = arith.andi %[[QLO]], %[[QHI]] : i1
// CHECK: %[[KLO:.*]] = arith.cmpi sge, %kv, %[[C0]] : i64
// CHECK: %[[KHI:.*]] = arith.cmpi slt, %kv, %[[G]] : i64
// CHECK: %[[KG:.*]] = arith.andi %[[KLO]], %[[KHI]] : i1
// CHECK: %[[M:.*]] = arith.ori %[[QG]], %[[KG]] : i1
// CHECK: attn.yield %[[M]] : i1
// -----
// prefix LM: kv < prefix or d >= 0

// CHECK-LABEL: func.func @prefix_lm
func.func @prefix_lm(%q: tensor<?x4x?x16xf32>, %k: tensor<?x4x?x16xf32>, %o: i64) -> tensor<?x4x?x16xf32> {
  %r = attn.attention q(%q : tensor<?x4x?x16xf32>) k(%k : tensor<?x4x?x16xf32>) v(%k : tensor<?x4x?x16xf32>) offsets(%o, %o)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x4x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %c = arith.constant 16 : i64
    %m = attn.prefix_lm %qp, %kp prefix(%c)
    attn.yield %m : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return %r : tensor<?x4x?x16xf32>
}
// CHECK: %[[P:.*]] = arith.cmpi slt, %kv, %{{.*}} : i64
// CHECK: %[[D:.*]] = arith.subi %q, %kv : i64
// CHECK: %[[C:.*]] = arith.cmpi sge, %[[D]]
// CHECK: arith.ori %[[P]], %[[C]] : i1

// -----
// strided: d >= 0 and (d < stride or d mod stride == 0)

// CHECK-LABEL: func.func @strided
func.func @strided(%q: tensor<?x4x?x16xf32>, %k: tensor<?x4x?x16xf32>, %o: i64) -> tensor<?x4x?x16xf32> {
  %r = attn.attention q(%q : tensor<?x4x?x16xf32>) k(%k : tensor<?x4x?x16xf32>) v(%k : tensor<?x4x?x16xf32>) offsets(%o, %o)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x4x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %m = attn.strided %qp, %kp {stride = 4}
    attn.yield %m : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return %r : tensor<?x4x?x16xf32>
}
// CHECK: %[[D:.*]] = arith.subi %q, %kv : i64
// CHECK: %[[C0:.*]] = arith.constant 0 : i64
// CHECK: %[[CAUSAL:.*]] = arith.cmpi sge, %[[D]], %[[C0]] : i64
// CHECK: %[[L:.*]] = arith.constant 4 : i64
// CHECK: %[[NEAR:.*]] = arith.cmpi slt, %[[D]], %[[L]] : i64
// CHECK: %[[R:.*]] = arith.remsi %[[D]], %[[L]] : i64
// CHECK: %[[NEG:.*]] = arith.cmpi slt, %[[R]], %[[C0]] : i64
// CHECK: %[[FIX:.*]] = arith.addi %[[R]], %[[L]] : i64
// CHECK: %[[MOD:.*]] = arith.select %[[NEG]], %[[FIX]], %[[R]] : i64
// CHECK: %[[STRIPE:.*]] = arith.cmpi eq, %[[MOD]], %[[C0]] : i64
// CHECK: %[[EITHER:.*]] = arith.ori %[[NEAR]], %[[STRIPE]] : i1
// CHECK: %[[M:.*]] = arith.andi %[[CAUSAL]], %[[EITHER]] : i1
// CHECK: attn.yield %[[M]] : i1
// -----
// fixed: same block of `stride` or one of the last `summary` columns, causal

// CHECK-LABEL: func.func @fixed
func.func @fixed(%q: tensor<?x4x?x16xf32>, %k: tensor<?x4x?x16xf32>, %o: i64) -> tensor<?x4x?x16xf32> {
  %r = attn.attention q(%q : tensor<?x4x?x16xf32>) k(%k : tensor<?x4x?x16xf32>) v(%k : tensor<?x4x?x16xf32>) offsets(%o, %o)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x4x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %m = attn.fixed %qp, %kp {stride = 8, summary = 2}
    attn.yield %m : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return %r : tensor<?x4x?x16xf32>
}
// CHECK: arith.floordivsi %kv, %[[C8:.*]] : i64
// CHECK: arith.floordivsi %q, %[[C8]] : i64
// CHECK: arith.remsi %kv, %[[C8]] : i64
// CHECK: arith.cmpi sge, %{{.*}}, %{{.*}} : i64

// -----
// dilated segments: the offset is h mod r unless fixed

// CHECK-LABEL: func.func @dilated_segments
func.func @dilated_segments(%q: tensor<?x4x?x16xf32>, %k: tensor<?x4x?x16xf32>, %o: i64) -> tensor<?x4x?x16xf32> {
  %r = attn.attention q(%q : tensor<?x4x?x16xf32>) k(%k : tensor<?x4x?x16xf32>) v(%k : tensor<?x4x?x16xf32>) offsets(%o, %o)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x4x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %m = attn.dilated_segments %h, %qp, %kp {segment = 16, dilation = 2}
    attn.yield %m : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return %r : tensor<?x4x?x16xf32>
}
// CHECK: arith.remsi %h, %{{.*}} : i64
// CHECK: arith.floordivsi %q
// CHECK: arith.floordivsi %kv

// -----
// dilated segments with a fixed head_offset: no h mod r

// CHECK-LABEL: func.func @dilated_segments_offset
func.func @dilated_segments_offset(%q: tensor<?x4x?x16xf32>, %k: tensor<?x4x?x16xf32>, %o: i64) -> tensor<?x4x?x16xf32> {
  %r = attn.attention q(%q : tensor<?x4x?x16xf32>) k(%k : tensor<?x4x?x16xf32>) v(%k : tensor<?x4x?x16xf32>) offsets(%o, %o)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x4x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %m = attn.dilated_segments %h, %qp, %kp {segment = 16, dilation = 2, head_offset = 1}
    attn.yield %m : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return %r : tensor<?x4x?x16xf32>
}
// CHECK: %[[OFF:.*]] = arith.constant 1 : i64
// CHECK-NOT: arith.remsi %h
// CHECK: %[[QM:.*]] = arith.select
// CHECK: arith.cmpi eq, %[[QM]], %[[OFF]] : i64
// CHECK: %[[KM:.*]] = arith.select
// CHECK: arith.cmpi eq, %[[KM]], %[[OFF]] : i64
// -----
// shifted groups: the shift depends on the head

// CHECK-LABEL: func.func @shifted_groups
func.func @shifted_groups(%q: tensor<?x4x?x16xf32>, %k: tensor<?x4x?x16xf32>, %o: i64) -> tensor<?x4x?x16xf32> {
  %r = attn.attention q(%q : tensor<?x4x?x16xf32>) k(%k : tensor<?x4x?x16xf32>) v(%k : tensor<?x4x?x16xf32>) offsets(%o, %o)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x4x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %m = attn.shifted_groups %h, %qp, %kp {group = 8, shifted_heads = array<i64: 2, 3>}
    attn.yield %m : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return %r : tensor<?x4x?x16xf32>
}
// CHECK: %[[IN:.*]] = arith.ori
// CHECK: %[[S:.*]] = arith.select %{{.*}}, %{{.*}}, %{{.*}} : i64
// CHECK: arith.addi %q, %[[S]] : i64

// -----
// softcap: cap * tanh(s / cap)

// CHECK-LABEL: func.func @softcap
func.func @softcap(%q: tensor<?x4x?x16xf32>, %k: tensor<?x4x?x16xf32>, %o: i64) -> tensor<?x4x?x16xf32> {
  %r = attn.attention q(%q : tensor<?x4x?x16xf32>) k(%k : tensor<?x4x?x16xf32>) v(%k : tensor<?x4x?x16xf32>) offsets(%o, %o)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x4x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %t = arith.constant true
    attn.yield %t : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %r = attn.softcap %s {cap = 50.0 : f64}
    attn.yield %r : f32
  }
  return %r : tensor<?x4x?x16xf32>
}
// CHECK: %[[INV:.*]] = arith.constant 2.000000e-02 : f32
// CHECK: %[[X:.*]] = arith.mulf %s, %[[INV]] : f32
// CHECK: %[[T:.*]] = math.tanh %[[X]] : f32
// CHECK: arith.mulf %{{.*}}, %[[T]] : f32

// -----
// alibi: the per-head slope is a constant table indexed by h

// CHECK-LABEL: func.func @alibi
func.func @alibi(%q: tensor<?x4x?x16xf32>, %k: tensor<?x4x?x16xf32>, %o: i64) -> tensor<?x4x?x16xf32> {
  %r = attn.attention q(%q : tensor<?x4x?x16xf32>) k(%k : tensor<?x4x?x16xf32>) v(%k : tensor<?x4x?x16xf32>) offsets(%o, %o)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x4x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %t = arith.constant true
    attn.yield %t : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %r = attn.alibi %s, %h, %qp, %kp {slopes = array<f64: 0.5, 0.25, 0.125, 0.0625>}
    attn.yield %r : f32
  }
  return %r : tensor<?x4x?x16xf32>
}
// CHECK: %[[M:.*]] = attn.constant_table %h {values = array<f64: 5.000000e-01, 2.500000e-01, 1.250000e-01, 6.250000e-02>}
// CHECK: %[[D:.*]] = arith.subi %q, %kv : i64
// CHECK: %[[DF:.*]] = arith.sitofp %[[D]] : i64 to f32
// CHECK: %[[B:.*]] = arith.mulf %[[M]], %[[DF]] : f32
// CHECK: arith.subf %s, %[[B]] : f32

// -----
// T5: exact buckets below max_exact, then thresholds counted (no log in the kernel)

// CHECK-LABEL: func.func @t5
func.func @t5(%q: tensor<?x4x?x16xf32>, %k: tensor<?x4x?x16xf32>, %tab: tensor<8x4xf32>, %o: i64) -> tensor<?x4x?x16xf32> {
  %r = attn.attention q(%q : tensor<?x4x?x16xf32>) k(%k : tensor<?x4x?x16xf32>) v(%k : tensor<?x4x?x16xf32>) inputs(%tab : tensor<8x4xf32>) offsets(%o, %o)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>, input_names = ["t"]} -> tensor<?x4x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %t = arith.constant true
    attn.yield %t : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %r = attn.t5_bias %s, %h, %qp, %kp table(%tab : tensor<8x4xf32>) {num_buckets = 8, max_distance = 64, bidirectional = false}
    attn.yield %r : f32
  }
  return %r : tensor<?x4x?x16xf32>
}
// CHECK-NOT: math.log
// CHECK: arith.maxsi
// CHECK-COUNT-3: arith.extui
// CHECK: %[[V:.*]], %[[OK:.*]] = attn.lookup %{{.*}}[%{{.*}}, %h] : tensor<8x4xf32> -> f32
// CHECK: arith.select %[[OK]]

// -----
// T5, bidirectional: keys after the query take the upper half of the buckets. With 8
// buckets and max_distance 64: half = 4, max_exact = 2, and bucket 3 from |d| = 12 on
// (2 + 2 log(n / 2) / log(32) >= 3 from n >= 2 sqrt(32) = 11.3).

// CHECK-LABEL: func.func @t5_bidirectional
func.func @t5_bidirectional(%q: tensor<?x4x?x16xf32>, %k: tensor<?x4x?x16xf32>, %tab: tensor<8x4xf32>, %o: i64) -> tensor<?x4x?x16xf32> {
  %r = attn.attention q(%q : tensor<?x4x?x16xf32>) k(%k : tensor<?x4x?x16xf32>) v(%k : tensor<?x4x?x16xf32>) inputs(%tab : tensor<8x4xf32>) offsets(%o, %o)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>, input_names = ["t"]} -> tensor<?x4x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %t = arith.constant true
    attn.yield %t : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %r = attn.t5_bias %s, %h, %qp, %kp table(%tab : tensor<8x4xf32>) {num_buckets = 8, max_distance = 64, bidirectional = true}
    attn.yield %r : f32
  }
  return %r : tensor<?x4x?x16xf32>
}
// CHECK: %[[D:.*]] = arith.subi %q, %kv : i64
// CHECK: %[[C0:.*]] = arith.constant 0 : i64
// CHECK: %[[NEG:.*]] = arith.cmpi slt, %[[D]], %[[C0]] : i64
// CHECK: %[[HALF:.*]] = arith.constant 4 : i64
// CHECK: %[[BASE:.*]] = arith.select %[[NEG]], %[[HALF]], %[[C0]] : i64
// CHECK: %[[N:.*]] = math.absi %[[D]] : i64
// CHECK: %[[EXACT:.*]] = arith.constant 2 : i64
// CHECK: %[[T:.*]] = arith.constant 12 : i64
// CHECK: %[[GE:.*]] = arith.cmpi sge, %[[N]], %[[T]] : i64
// CHECK: %[[ONE:.*]] = arith.extui %[[GE]] : i1 to i64
// CHECK: %[[LARGE:.*]] = arith.addi %[[EXACT]], %[[ONE]] : i64
// CHECK-NOT: arith.extui
// CHECK: %[[SMALL:.*]] = arith.cmpi slt, %[[N]], %[[EXACT]] : i64
// CHECK: %[[IN:.*]] = arith.select %[[SMALL]], %[[N]], %[[LARGE]] : i64
// CHECK: %[[BUCKET:.*]] = arith.addi %[[BASE]], %[[IN]] : i64
// CHECK: %{{.*}}, %[[OK:.*]] = attn.lookup %{{.*}}[%[[BUCKET]], %h] : tensor<8x4xf32> -> f32
// CHECK: arith.select %[[OK]]
// -----
// kerple log and log-length scaling

// CHECK-LABEL: func.func @kerple
func.func @kerple(%q: tensor<?x4x?x16xf32>, %k: tensor<?x4x?x16xf32>, %o: i64) -> tensor<?x4x?x16xf32> {
  %r = attn.attention q(%q : tensor<?x4x?x16xf32>) k(%k : tensor<?x4x?x16xf32>) v(%k : tensor<?x4x?x16xf32>) offsets(%o, %o)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x4x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %t = arith.constant true
    attn.yield %t : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %r = attn.kerple_log %s, %h, %qp, %kp {r1 = array<f64: 1.0, 1.0, 1.0, 1.0>, r2 = array<f64: 2.0, 2.0, 2.0, 2.0>}
    %r2 = attn.log_length_scale %r, %qp {base = 64.0 : f64}
    attn.yield %r2 : f32
  }
  return %r : tensor<?x4x?x16xf32>
}
// CHECK: math.absi
// CHECK: math.log
// CHECK: arith.subf %s
// CHECK: arith.maxsi
// CHECK: arith.maximumf

// -----
// FIRE: a loop over the hidden units, reads checked

// CHECK-LABEL: func.func @fire
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
// CHECK: %[[H:.*]] = attn.size %{{.*}}[0] : tensor<?xf32>
// CHECK: scf.for
// CHECK: attn.lookup
// CHECK: scf.yield
// CHECK: arith.select
