// RUN: %attn-opt %s -attn-analyze-blocks -attn-tile="block-m=32 block-n=16" -attn-lower-kv-schedule -attn-lower-tiles-to-loops -canonicalize -cse | FileCheck %s

// L2 -> L3cpu: the grid becomes a loop nest, every tile op scalar loops over the
// tile buffers, and the buffers move to the function entry.

// CHECK-LABEL: func.func @doc_causal
// Tile buffers are allocated once, at the entry, not per loop iteration.
// CHECK-COUNT-8: memref.alloca() : memref<{{.*}}xf32>
// The grid: batch, heads, query blocks.
// CHECK: scf.for %[[B:.*]] = %c0 to %{{.*}} step %c1 {
// CHECK-NEXT: scf.for %[[H:.*]] = %c0 to %c2 step %c1 {
// CHECK-NEXT: scf.for %[[QB:.*]] = %c0 to %{{.*}} step %c1 {
// Tensor reads are bounds-checked loads: the block summary of the document ids.
// CHECK: scf.for
// CHECK: memref.load %{{.*}} : memref<?x?xi32>
// CHECK: arith.minsi
// CHECK: arith.maxsi
// The score epilogue, per element, with the mask inlined on PARTIAL tiles.
// CHECK: math.exp
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
