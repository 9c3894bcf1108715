// RUN: %attn-opt %s -attn-to-tiled-backward="block-m=16 block-n=16" | FileCheck %s
// RUN: not %attn-opt %s -attn-tile-backward -o /dev/null 2>&1 | FileCheck %s --check-prefix=ERR
//
// attn-tile-backward (through the attn-to-tiled-backward pipeline) on a T5-biased
// attention with GQA (2 query heads, 1 kv head); input from `attnc import`.

// ERR: attn-tile-backward: run attn-analyze-blocks first

// CHECK-LABEL: func.func @t5(
// The signature: q, k, v, table, o, lse, dO, dlse, dq, dk, dv, dtable, offsets.
// CHECK-SAME: %[[TABLE:arg3]]: memref<8x2xf32>
// CHECK-SAME: %[[DTABLE:arg11]]: memref<8x2xf32>
// CHECK-SAME: attn.backward
// The query-major grid: the forward's key schedule, dq += ds k, no tensor gradient.
// CHECK: attn.grid %{{.*}}, %c2,
// CHECK: attn.rowdot_tile
// CHECK: attn.for_kv_blocks
// CHECK: attn.grad_weights_tile {{.*}} lse({{.*}}) delta({{.*}}) dlse(
// CHECK: attn.score_grad_tile
// CHECK-NOT: attn.accumulate_grad
// CHECK: attn.pv_tile
// CHECK: attn.store_tile %{{.*}} into %arg8
// The key-major grid over (b, kv head, key block): each query head of the group,
// each query block of the transposed schedule (all of them: the mask is `true`;
// tile-backward-transposed.mlir shows the closed forms of causal and windows).
// CHECK: attn.grid %{{.*}}, %c1,
// CHECK: scf.for %{{.*}} = %c0 to %c2 step %c1 {
// CHECK: scf.for
// CHECK: scf.if
// CHECK: attn.score_grad_tile
// CHECK: attn.accumulate_grad %{{.*}} into %[[DTABLE]][
// CHECK: attn.tn_tile
// CHECK: attn.tn_tile
// CHECK: attn.store_tile %{{.*}} into %arg9
// CHECK: attn.store_tile %{{.*}} into %arg10

module {
  func.func @t5(%arg0: tensor<?x2x?x16xf32>, %arg1: tensor<?x1x?x16xf32>, %arg2: tensor<?x1x?x16xf32>, %arg3: tensor<8x2xf32>, %arg4: i64, %arg5: i64) -> tensor<?x2x?x16xf32> {
    %0 = attn.attention q(%arg0 : tensor<?x2x?x16xf32>) k(%arg1 : tensor<?x1x?x16xf32>) v(%arg2 : tensor<?x1x?x16xf32>) inputs(%arg3 : tensor<8x2xf32>) offsets(%arg4, %arg5) {align = #attn.align<bottom_right>, input_dims = [[8, "Hq"]], input_names = ["table"], normalizer = #attn.normalizer<softmax>, scale = 2.500000e-01 : f64} -> tensor<?x2x?x16xf32> mask {
    ^bb0(%b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
      %true = arith.constant true
      attn.yield %true : i1
    } score {
    ^bb0(%s: f32, %b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
      %1 = attn.t5_bias %s, %h, %q, %kv table(%arg3 : tensor<8x2xf32>) {bidirectional = true, max_distance = 16 : i64, num_buckets = 8 : i64}
      attn.yield %1 : f32
    }
    return %0 : tensor<?x2x?x16xf32>
  }
}

