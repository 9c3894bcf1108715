// RUN: %attn-opt %s -attn-to-tiled-backward="block-m=16 block-n=16" | FileCheck %s
//
// The key-major grid of attn-tile-backward walks the transposed schedule: for a key
// block [kv_lo, kv_hi), only the query blocks whose rows may see it, computed in
// closed form from the offsets at run time (the mask solved for the query index),
// or, for a block list, from the list's transpose (built once in the prologue).
// Inputs from `attnc import`.

// Causal (q >= kv, positions q = q_idx + q_offset): the query rows that see keys
// [kv_lo, kv_hi) start at kv_lo + kv_offset - q_offset; the query blocks are
// [first / BM, ceil(seq_q / BM)), for each query head of the GQA group.
// CHECK-LABEL: func.func @causal(
// CHECK: attn.grid %{{.*}}, %c2,
// CHECK: attn.for_kv_blocks
// The key-major grid (b, kv head, key block).
// CHECK: attn.grid %{{.*}}, %c1,
// CHECK-NEXT: ^bb0(%b: index, %h: index, %qb: index):
// CHECK: %[[KVLO:.*]] = arith.muli %qb, %c16 : index
// CHECK: %[[KVLO64:.*]] = arith.index_cast %[[KVLO]] : index to i64
// CHECK: %[[KVPOS:.*]] = arith.addi %[[KVLO64]], %arg11 : i64
// CHECK: %[[D:.*]] = arith.subi %arg10, %[[KVPOS]] : i64
// CHECK: %[[FIRST:.*]] = arith.subi %c0_i64, %[[D]] : i64
// CHECK: %[[LO0:.*]] = arith.maxsi %[[FIRST]], %c0_i64 : i64
// CHECK: %[[LO:.*]] = arith.minsi %[[LO0]], %0 : i64
// CHECK: %[[HI:.*]] = arith.maxsi %{{.*}}, %[[LO]] : i64
// CHECK: %[[LOI:.*]] = arith.index_cast %[[LO]] : i64 to index
// CHECK: %[[HII:.*]] = arith.index_cast %[[HI]] : i64 to index
// CHECK: %[[QB0:.*]] = arith.divui %[[LOI]], %c16 : index
// CHECK: %[[QB1:.*]] = arith.ceildivui %[[HII]], %c16 : index
// CHECK: %[[EMPTY:.*]] = arith.cmpi ule, %[[HII]], %[[LOI]] : index
// CHECK: %[[QBEND:.*]] = arith.select %[[EMPTY]], %[[QB0]], %[[QB1]] : index
// CHECK: scf.for %{{.*}} = %c0 to %c2 step %c1 {
// CHECK: scf.for %{{.*}} = %[[QB0]] to %[[QBEND]] step %c1 {
// The tile class still decides (EMPTY: nothing loaded), then the tile.
// CHECK: %[[CLS:.*]] = arith.trunci %{{.*}} : i64 to i32
// CHECK: %[[VISIT:.*]] = arith.cmpi ne, %[[CLS]], %c0_i32 : i32
// CHECK: scf.if %[[VISIT]] {
// CHECK: attn.load_tile %arg0[
// CHECK: attn.tn_tile
// CHECK: attn.tn_tile
// CHECK: attn.store_tile %{{.*}} into %arg8
// CHECK: return

// Sliding window (-3 <= q - kv <= 20): query rows [kv_lo + kv_offset - q_offset - 3,
// kv_hi - 1 + kv_offset - q_offset + 20], clamped to [0, seq_q): a band of blocks.
// CHECK-LABEL: func.func @window(
// CHECK: attn.grid %{{.*}}, %c1,
// CHECK: attn.grid %{{.*}}, %c1,
// CHECK-NEXT: ^bb0(%b: index, %h: index, %qb: index):
// CHECK: %[[WKVLO:.*]] = arith.muli %qb, %c16 : index
// CHECK: %[[WKVHI:.*]] = arith.addi %[[WKVLO]], %{{.*}} : index
// CHECK: %[[WKVHI64:.*]] = arith.index_cast %[[WKVHI]] : index to i64
// CHECK: %[[WLAST:.*]] = arith.subi %[[WKVHI64]], %c1_i64 : i64
// CHECK: %[[WLASTPOS:.*]] = arith.addi %[[WLAST]], %arg11 : i64
// CHECK: %[[WFIRSTPOS:.*]] = arith.addi %{{.*}}, %arg11 : i64
// CHECK: %[[WD1:.*]] = arith.subi %arg10, %[[WLASTPOS]] : i64
// CHECK: %[[WHI:.*]] = arith.subi %c20_i64, %[[WD1]] : i64
// CHECK: %[[WD0:.*]] = arith.subi %arg10, %[[WFIRSTPOS]] : i64
// CHECK: %[[WLO:.*]] = arith.subi %c-3_i64, %[[WD0]] : i64
// CHECK: arith.maxsi %[[WLO]],
// CHECK: arith.minsi %[[WHI]],
// CHECK: %[[WQB0:.*]] = arith.divui %{{.*}}, %c16 : index
// CHECK: %[[WQB1:.*]] = arith.ceildivui %{{.*}}, %c16 : index
// CHECK: %[[WQBEND:.*]] = arith.select %{{.*}}, %[[WQB0]], %[[WQB1]] : index
// CHECK: scf.for %{{.*}} = %[[WQB0]] to %[[WQBEND]] step %c1 {
// CHECK: attn.load_tile %arg0[
// CHECK: return

// Block list (32 x 16 blocks; tiles 16 x 16, two query blocks per list row): the
// prologue counts the entries per (b, h, key block), takes prefix sums and
// scatters the row numbers (a repeat within a row dropped); the key-major grid
// reads its rows and visits their query blocks; the buffers are freed at the end.
// CHECK-LABEL: func.func @blocks(
// CHECK: %[[KVB:.*]] = arith.ceildivui %{{.*}}, %c16 : index
// CHECK: %[[START:.*]] = memref.alloc(%[[N:.*]]) : memref<?xindex>
// CHECK: %[[END:.*]] = memref.alloc(%[[N]]) : memref<?xindex>
// CHECK: memref.load %arg3[
// CHECK: memref.store %{{.*}}, %[[START]][
// CHECK: %[[ROWS:.*]] = memref.alloc(%{{.*}}) : memref<?xindex>
// CHECK: memref.load %arg3[
// CHECK: memref.store %{{.*}}, %[[ROWS]][
// CHECK: memref.store %{{.*}}, %[[END]][
// CHECK: attn.grid %{{.*}}, %c1, %[[QBLOCKS:.*]] attributes
// CHECK: attn.for_kv_blocks {{.*}} list(%arg3
// CHECK: attn.grid %{{.*}}, %c1, %[[KVB]] attributes
// CHECK: %[[SPAN:.*]]:2 = scf.if %{{.*}} -> (index, index) {
// CHECK: memref.load %[[START]][
// CHECK: memref.load %[[END]][
// CHECK: scf.for %[[AT:.*]] = %[[SPAN]]#0 to %[[SPAN]]#1 step %c1 {
// CHECK: %[[ROW:.*]] = memref.load %[[ROWS]][%[[AT]]] : memref<?xindex>
// CHECK: %[[QBA:.*]] = arith.muli %[[ROW]], %c2 : index
// CHECK: %[[QBB:.*]] = arith.addi %[[QBA]], %c2 : index
// CHECK: %[[QBC:.*]] = arith.minui %[[QBB]], %[[QBLOCKS]] : index
// CHECK: scf.for %{{.*}} = %[[QBA]] to %[[QBC]] step %c1 {
// CHECK: attn.box_contains
// CHECK: attn.load_tile %arg0[
// CHECK: memref.dealloc %[[START]]
// CHECK: memref.dealloc %[[END]]
// CHECK: memref.dealloc %[[ROWS]]

module {
  func.func @causal(%arg0: tensor<?x2x?x8xf32>, %arg1: tensor<?x1x?x8xf32>, %arg2: tensor<?x1x?x8xf32>, %arg3: i64, %arg4: i64) -> tensor<?x2x?x8xf32> {
    %0 = attn.attention q(%arg0 : tensor<?x2x?x8xf32>) k(%arg1 : tensor<?x1x?x8xf32>) v(%arg2 : tensor<?x1x?x8xf32>) offsets(%arg3, %arg4) {align = #attn.align<bottom_right>, normalizer = #attn.normalizer<softmax>, scale = 0.35355339059327373 : f64} -> tensor<?x2x?x8xf32> mask {
    ^bb0(%b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
      %1 = attn.causal %q, %kv
      attn.yield %1 : i1
    } score {
    ^bb0(%s: f32, %b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
      attn.yield %s : f32
    }
    return %0 : tensor<?x2x?x8xf32>
  }
  func.func @window(%arg0: tensor<?x1x?x8xf32>, %arg1: tensor<?x1x?x8xf32>, %arg2: tensor<?x1x?x8xf32>, %arg3: i64, %arg4: i64) -> tensor<?x1x?x8xf32> {
    %0 = attn.attention q(%arg0 : tensor<?x1x?x8xf32>) k(%arg1 : tensor<?x1x?x8xf32>) v(%arg2 : tensor<?x1x?x8xf32>) offsets(%arg3, %arg4) {align = #attn.align<bottom_right>, normalizer = #attn.normalizer<softmax>, scale = 0.35355339059327373 : f64} -> tensor<?x1x?x8xf32> mask {
    ^bb0(%b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
      %1 = attn.sliding_window %q, %kv {left = 20 : i64, right = 3 : i64}
      attn.yield %1 : i1
    } score {
    ^bb0(%s: f32, %b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
      attn.yield %s : f32
    }
    return %0 : tensor<?x1x?x8xf32>
  }
  func.func @blocks(%arg0: tensor<?x1x?x8xf32>, %arg1: tensor<?x1x?x8xf32>, %arg2: tensor<?x1x?x8xf32>, %arg3: tensor<?x1x?x?xi32>, %arg4: i64, %arg5: i64) -> tensor<?x1x?x8xf32> {
    %0 = attn.attention q(%arg0 : tensor<?x1x?x8xf32>) k(%arg1 : tensor<?x1x?x8xf32>) v(%arg2 : tensor<?x1x?x8xf32>) inputs(%arg3 : tensor<?x1x?x?xi32>) offsets(%arg4, %arg5) {align = #attn.align<bottom_right>, input_dims = [["B", "Hq", "R", "K"]], input_names = ["blocks"], normalizer = #attn.normalizer<softmax>, scale = 0.35355339059327373 : f64} -> tensor<?x1x?x8xf32> mask {
    ^bb0(%b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
      %c32_i64 = arith.constant 32 : i64
      %1 = arith.floordivsi %q_idx, %c32_i64 : i64
      %c16_i64 = arith.constant 16 : i64
      %2 = arith.floordivsi %kv_idx, %c16_i64 : i64
      %3 = attn.contains %2 in %arg3[%b, %h, %1] : tensor<?x1x?x?xi32>
      attn.yield %3 : i1
    } score {
    ^bb0(%s: f32, %b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
      attn.yield %s : f32
    }
    return %0 : tensor<?x1x?x8xf32>
  }
}
