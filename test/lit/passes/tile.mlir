// RUN: %attn-opt %s -split-input-file -attn-analyze-blocks -attn-tile="block-m=32 block-n=16" -canonicalize -cse | FileCheck %s

// The FlashAttention loop nest for a causal mask with GQA (4 query heads, 2 kv heads).
// CHECK-LABEL: func.func @causal_gqa(
// The kernel takes buffers (strided q/k/v/o as the caller lays them out) and offsets.
// CHECK-SAME: %[[Q:.*]]: memref<?x4x?x16xf32, strided<[?, ?, ?, 1], offset: ?>>, %[[K:.*]]: memref<?x2x?x16xf32, strided<[?, ?, ?, 1], offset: ?>>, %[[V:.*]]: memref<?x2x?x16xf32, strided<[?, ?, ?, 1], offset: ?>>, %[[O:.*]]: memref<?x4x?x16xf32, strided<[?, ?, ?, 1], offset: ?>>, %[[QOFF:.*]]: i64, %[[KOFF:.*]]: i64)
// CHECK-SAME: attributes {attn.block = array<i64: 32, 16>, attn.input_names = [], attn.kernel}
// One grid item per (batch, query head, block of 32 query rows).
// CHECK: %[[NQB:.*]] = arith.ceildivui %{{.*}}, %c32 : index
// CHECK: attn.grid %{{.*}}, %c4, %[[NQB]] attributes {block_m = 32 : i64, block_n = 16 : i64} {
// CHECK-NEXT: ^bb0(%b: index, %h: index, %qb: index):
// Query head h reads kv head h / 2.
// CHECK: %[[HK:.*]] = arith.divui %h, %c2 : index
// The q tile is loaded once; m = -inf, l = 0, acc = 0.
// CHECK: attn.load_tile %[[Q]][%b, %h, %{{.*}}] valid(%{{.*}}) into %[[QT:.*]] :
// CHECK: attn.fill_tile %[[ACC:.*]], 0.000000e+00
// CHECK: attn.fill_tile %[[M:.*]], 0xFF800000
// The key loop is the schedule op: the causal key range in closed form (it ends at
// the last query row's position, min(q_hi - 1 + q_offset - kv_offset + 1, seq_kv)),
// and the tile classifier; the loop body runs once per visited, non-EMPTY block.
// CHECK: attn.for_kv_blocks batch(%{{.*}}) heads(%{{.*}}) queries(%{{.*}}, %{{.*}}) offsets(%[[QOFF]], %[[KOFF]]) sizes(%{{.*}}, %{{.*}}) block_n 16 ranges {
// CHECK-NEXT: ^bb0(%{{.*}}: i64, %{{.*}}: i64, %q_lo: i64, %q_hi: i64, %q_offset: i64, %kv_offset: i64, %seq_q: i64, %seq_kv: i64):
// CHECK: %[[LAST:.*]] = arith.subi %q_hi, %c1_i64 : i64
// CHECK: %[[POS:.*]] = arith.addi %[[LAST]], %q_offset : i64
// CHECK: %[[KV:.*]] = arith.subi %[[POS]], %kv_offset : i64
// CHECK: %[[END:.*]] = arith.addi %[[KV]], %c1_i64 : i64
// CHECK: %[[HI:.*]] = arith.minsi %[[END]], %seq_kv : i64
// CHECK: attn.yield %{{.*}}, %{{.*}} : i64, i64
// CHECK: } classes {
// CHECK: %[[C:.*]] = arith.trunci %{{.*}} : i64 to i32
// CHECK-NEXT: attn.yield %[[C]] : i32
// CHECK: } do {
// CHECK-NEXT: ^bb0(%kb: i64, %[[CLS:.*]]: i32):
// CHECK: attn.load_tile %[[K]][%b, %[[HK]], %{{.*}}] valid(%{{.*}}) into %[[KT:.*]] :
// CHECK: attn.load_tile %[[V]][%b, %[[HK]], %{{.*}}] valid(%{{.*}}) into %[[VT:.*]] :
// CHECK: attn.qk_tile %[[QT]], %[[KT]] into %[[S:.*]] {scale = 2.500000e-01 : f64}
// FULL and whole tiles run the score epilogue with no mask code at all.
// CHECK: %[[WHOLE:.*]] = arith.cmpi eq, %{{.*}}, %c16 : index
// CHECK: %[[FULL:.*]] = arith.cmpi eq, %[[CLS]], %c2_i32 : i32
// CHECK: %[[UNMASKED:.*]] = arith.andi %[[WHOLE]], %[[FULL]] : i1
// CHECK: scf.if %[[UNMASKED]] {
// CHECK-NEXT: attn.score_tile %[[S]] at
// CHECK-NOT: masked
// CHECK-SAME: mask {
// CHECK-NEXT: ^bb0
// CHECK-NEXT: attn.yield %true : i1
// CHECK: } else {
// PARTIAL tiles (and the last, cut tile) evaluate the mask: q - kv >= 0.
// CHECK-NEXT: attn.score_tile %[[S]] at{{.*}} {masked}
// CHECK: arith.subi %q, %kv : i64
// CHECK: arith.cmpi sge
// Online softmax, then acc = alpha * acc + p v.
// CHECK: attn.softmax_tile %[[S]], %[[M]], %[[L:.*]], %[[ALPHA:.*]] :
// CHECK: attn.pv_tile %[[S]], %[[VT]] into %[[ACC]] rescale(%[[ALPHA]] : memref<32xf32>)
// After the loop, o = acc / l, stored once.
// CHECK: attn.store_tile %[[ACC]] divide(%[[L]] : memref<32xf32>) into %[[O]][%b, %h, %{{.*}}] valid(%{{.*}})
func.func @causal_gqa(%q: tensor<?x4x?x16xf32>, %k: tensor<?x2x?x16xf32>, %qo: i64, %ko: i64) -> tensor<?x4x?x16xf32> {
  %o = attn.attention q(%q : tensor<?x4x?x16xf32>) k(%k : tensor<?x2x?x16xf32>) v(%k : tensor<?x2x?x16xf32>) offsets(%qo, %ko)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x4x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %c0 = arith.constant 0 : i64
    %d = arith.subi %qp, %kp : i64
    %m = arith.cmpi sge, %d, %c0 : i64
    attn.yield %m : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return %o : tensor<?x4x?x16xf32>
}

// -----

// Sigmoid weights need no running statistics: weights_tile, no softmax, no divide.
// CHECK-LABEL: func.func @sigmoid
// CHECK-NOT: attn.softmax_tile
// CHECK: attn.weights_tile %{{.*}} seq_kv(%{{.*}}) {normalizer = #attn.normalizer<sigmoid>}
// CHECK: attn.pv_tile %{{.*}}, %{{.*}} into %{{.*}} :
// CHECK: attn.store_tile %{{.*}} into
func.func @sigmoid(%q: tensor<?x4x?x16xf32>, %k: tensor<?x2x?x16xf32>, %qo: i64, %ko: i64) -> tensor<?x4x?x16xf32> {
  %o = attn.attention q(%q : tensor<?x4x?x16xf32>) k(%k : tensor<?x2x?x16xf32>) v(%k : tensor<?x2x?x16xf32>) offsets(%qo, %ko)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<sigmoid>, align = #attn.align<bottom_right>} -> tensor<?x4x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %c0 = arith.constant 0 : i64
    %d = arith.subi %qp, %kp : i64
    %m = arith.cmpi sge, %d, %c0 : i64
    attn.yield %m : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return %o : tensor<?x4x?x16xf32>
}

// -----

// A block list whose blocks match the tiles: the schedule is the list's row for
// the query block (list_rows 64 query rows per row); the ranges stay for lowerings
// that pack several heads into a block, and the classes region still classifies
// each listed block.
// CHECK-LABEL: func.func @block_list(
// CHECK-SAME: %[[LIST:[^:]*]]: memref<?x4x?x?xi32>
// CHECK: attn.for_kv_blocks {{.*}} list(%[[LIST]] : memref<?x4x?x?xi32>) block_n 16 attributes {list_rows = 64 : i64} ranges {
// CHECK: } classes {
// CHECK: } do {
// CHECK: attn.load_tile
func.func @block_list(%q: tensor<?x4x?x16xf32>, %k: tensor<?x2x?x16xf32>, %list: tensor<?x4x?x?xi32>, %qo: i64, %ko: i64) -> tensor<?x4x?x16xf32> {
  %o = attn.attention q(%q : tensor<?x4x?x16xf32>) k(%k : tensor<?x2x?x16xf32>) v(%k : tensor<?x2x?x16xf32>) inputs(%list : tensor<?x4x?x?xi32>) offsets(%qo, %ko)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>, input_names = ["list"]} -> tensor<?x4x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %c64 = arith.constant 64 : i64
    %c16 = arith.constant 16 : i64
    %qb = arith.floordivsi %qi, %c64 : i64
    %kb = arith.floordivsi %ki, %c16 : i64
    %m = attn.contains %kb in %list[%b, %h, %qb] : tensor<?x4x?x?xi32>
    attn.yield %m : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return %o : tensor<?x4x?x16xf32>
}
