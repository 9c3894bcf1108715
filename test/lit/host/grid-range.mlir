// RUN: %attn-opt %s -attn-analyze-blocks -attn-tile="block-m=32 block-n=16" -attn-lower-kv-schedule -attn-lower-tiles-to-loops=grid-range=true -canonicalize -cse | FileCheck %s

// grid-range: the grid's work items as one flat range [begin, end) (two more index
// arguments), so that threads share a launch; <kernel>_grid_items counts the items of
// the first `upto` grids from what the grid sizes depend on.

// CHECK-LABEL: func.func @doc_causal_grid_items(
// CHECK-SAME: %{{.*}}: i64, %{{.*}}: i64, %[[UPTO:.*]]: index) -> index
// CHECK: %[[B:.*]] = memref.dim %arg0, %c0
// CHECK: %[[S:.*]] = memref.dim %arg0, %c2
// CHECK: %[[QB:.*]] = arith.ceildivui %[[S]], %c32
// CHECK: %[[BH:.*]] = arith.muli %[[B]], %c2
// CHECK: %[[N:.*]] = arith.muli %[[BH]], %[[QB]]
// CHECK: %[[FIRST:.*]] = arith.cmpi sgt, %[[UPTO]], %c0
// CHECK: %[[R:.*]] = arith.select %[[FIRST]], %[[N]], %c0
// CHECK: return %[[R]]

// CHECK-LABEL: func.func @doc_causal(
// CHECK-SAME: %[[BEGIN:[a-z0-9]+]]: index, %[[END:[a-z0-9]+]]: index)
// CHECK-SAME: attn.grid_count = 1 : i64
// CHECK-SAME: attn.serial_grids = array<i64>
// The range clamped to this grid's items, then item f = (b, h, qb) with qb fastest.
// CHECK: %[[LO0:.*]] = arith.maxsi %[[BEGIN]], %c0
// CHECK: %[[LO:.*]] = arith.minsi %[[LO0]], %[[ITEMS:.*]] : index
// CHECK: %[[HI0:.*]] = arith.maxsi %[[END]], %c0
// CHECK: %[[HI:.*]] = arith.minsi %[[HI0]], %[[ITEMS]] : index
// CHECK: scf.for %[[F:.*]] = %[[LO]] to %[[HI]] step %c1 {
// CHECK-NEXT: %[[QBI:.*]] = arith.remui %[[F]], %[[NQB:.*]] : index
// CHECK-NEXT: %[[REST:.*]] = arith.divui %[[F]], %[[NQB]] : index
// CHECK-NEXT: arith.remui %[[REST]], %c2 : index
// CHECK-NEXT: arith.divui %[[REST]], %c2 : index
// CHECK-NOT: attn.
// CHECK: return
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
