// RUN: %attn-opt %s -split-input-file -allow-unregistered-dialect -attn-lower-kv-schedule -canonicalize -cse | FileCheck %s
// RUN: %attn-opt %s -split-input-file -allow-unregistered-dialect | %attn-opt -allow-unregistered-dialect | FileCheck %s --check-prefix=ROUND

// attn.for_kv_blocks is the one definition of the key-block schedule; for the host
// it becomes an scf.while stepping a cursor (interval, key block) through it.

// Two key intervals (a sink of 4 keys, and a window ending at q_hi): blocks of 16.
// ROUND-LABEL: func.func @two_ranges
// ROUND: attn.for_kv_blocks batch(%{{.*}}) heads(%{{.*}}) queries(%{{.*}}, %{{.*}}) offsets(%{{.*}}, %{{.*}}) sizes(%{{.*}}, %{{.*}}) block_n 16 ranges {
// CHECK-LABEL: func.func @two_ranges
// CHECK-NOT: attn.for_kv_blocks
// Each interval is clamped to the keys that exist, [0, seq_kv), then counted in
// blocks: [floor(lo / 16), ceil(hi / 16)), none when hi <= lo. The sink [0, 4):
// CHECK: %[[W:.*]] = arith.subi %{{.*}}, %c64_i64 : i64
// CHECK: %[[HI0:.*]] = arith.minsi %[[SKV:[^,]*]], %c4_i64 : i64
// CHECK: arith.ceildivsi %[[HI0]], %c16_i64 : i64
// The window [q_lo - 64, q_hi):
// CHECK: %[[LO1:.*]] = arith.maxsi %[[W]], %c0_i64 : i64
// CHECK: %[[HI1:.*]] = arith.minsi %{{.*}}, %[[SKV]] : i64
// CHECK: %[[BLO1:.*]] = arith.floordivsi %[[LO1]], %c16_i64 : i64
// CHECK: %[[CEIL1:.*]] = arith.ceildivsi %[[HI1]], %c16_i64 : i64
// CHECK: arith.maxsi %[[CEIL1]], %[[BLO1]] : i64
// CHECK: arith.cmpi sle, %[[HI1]], %[[LO1]] : i64
// The first visited block: a search over the cursor (interval a, block kb).
// CHECK: %[[FIRST:.*]]:4 = scf.while (%[[A:.*]] = %{{.*}}, %[[KB:.*]] = %{{.*}}) : (i64, i64) -> (i64, i64, i32, i1) {
// Past the last interval (2), the schedule is exhausted.
// CHECK: arith.cmpi sge, %[[A]], %c2_i64 : i64
// A block interval 0 covered is not visited again in interval 1 (a > 0 and kb
// inside interval 0's blocks).
// CHECK: scf.if
// CHECK: arith.cmpi sgt, %[[A]], %c0_i64 : i64
// Only blocks whose class is not EMPTY (0) stop the search.
// CHECK: arith.cmpi ne, %{{.*}}, %c0_i32 : i32
// CHECK: scf.condition
// The key loop proper: the body once per visited block, then the next one.
// CHECK: scf.while (%{{.*}} = %[[FIRST]]#3, {{.*}}) : (i1, i64, i64, i32) -> (i64, i64, i32) {
// CHECK: scf.condition
// CHECK: } do {
// CHECK-NEXT: ^bb0(%{{.*}}: i64, %[[VKB:.*]]: i64, %[[VCLS:.*]]: i32):
// CHECK: "test.visit"(%[[VKB]], %[[VCLS]]) : (i64, i32) -> ()
// CHECK: scf.while
// CHECK: scf.yield
func.func @two_ranges(%b: i64, %h: i64, %qlo: i64, %qhi: i64, %qo: i64, %ko: i64, %sq: i64, %skv: i64) {
  attn.for_kv_blocks batch(%b) heads(%h) queries(%qlo, %qhi) offsets(%qo, %ko) sizes(%sq, %skv) block_n 16 ranges {
  ^bb0(%b0: i64, %h0: i64, %lo: i64, %hi: i64, %qoff: i64, %kvoff: i64, %s0: i64, %s1: i64):
    %c0 = arith.constant 0 : i64
    %c4 = arith.constant 4 : i64
    %c64 = arith.constant 64 : i64
    %w = arith.subi %lo, %c64 : i64
    attn.yield %c0, %c4, %w, %hi : i64, i64, i64, i64
  } classes {
  ^bb0(%b0: i64, %h0: i64, %lo: i64, %hi: i64, %klo: i64, %khi: i64, %qoff: i64, %kvoff: i64, %s0: i64, %s1: i64):
    %p = arith.constant 1 : i32
    attn.yield %p : i32
  } do {
  ^bb0(%kb: i64, %cls: i32):
    "test.visit"(%kb, %cls) : (i64, i32) -> ()
    attn.yield
  }
  return
}

// -----

// Split-KV: split s of n visits positions [s c, min((s + 1) c, total)) of the
// schedule, c = ceil(total / n).
// CHECK-LABEL: func.func @split
// CHECK-SAME: %[[S:[a-z0-9]+]]: i64, %[[N:[a-z0-9]+]]: i64) {
// CHECK: %[[TOTAL:.*]] = arith.select %{{.*}} : i64
// CHECK: %[[CHUNK:.*]] = arith.ceildivsi %[[TOTAL]], %[[N]] : i64
// CHECK: %[[BEGIN:.*]] = arith.muli %[[S]], %[[CHUNK]] : i64
// CHECK: %[[END:.*]] = arith.addi %[[BEGIN]], %[[CHUNK]] : i64
// CHECK: %[[SPLITEND:.*]] = arith.minsi %[[TOTAL]], %[[END]] : i64
// The search stops at the split's end.
// CHECK: scf.while
// CHECK: arith.cmpi sge, %{{.*}}, %[[SPLITEND]] : i64
// ROUND-LABEL: func.func @split
// ROUND: split(%{{.*}} of %{{.*}}) block_n 64
func.func @split(%b: i64, %h: i64, %qlo: i64, %qhi: i64, %qo: i64, %ko: i64, %sq: i64, %skv: i64, %s: i64, %n: i64) {
  attn.for_kv_blocks batch(%b) heads(%h) queries(%qlo, %qhi) offsets(%qo, %ko) sizes(%sq, %skv) split(%s of %n) block_n 64 ranges {
  ^bb0(%b0: i64, %h0: i64, %lo: i64, %hi: i64, %qoff: i64, %kvoff: i64, %s0: i64, %s1: i64):
    %c0 = arith.constant 0 : i64
    attn.yield %c0, %s1 : i64, i64
  } classes {
  ^bb0(%b0: i64, %h0: i64, %lo: i64, %hi: i64, %klo: i64, %khi: i64, %qoff: i64, %kvoff: i64, %s0: i64, %s1: i64):
    %p = arith.constant 2 : i32
    attn.yield %p : i32
  } do {
  ^bb0(%kb: i64, %cls: i32):
    "test.visit"(%kb, %cls) : (i64, i32) -> ()
    attn.yield
  }
  return
}

// -----

// A block list: the entries of list[b, h, q_lo / 32], -1 padding and blocks past
// ceil(seq_kv / 16) skipped, repeats of earlier entries skipped.
// CHECK-LABEL: func.func @list
// CHECK-SAME: %[[L:[^:]*]]: memref<?x?x?x?xi32>
// CHECK: %[[ROW:.*]] = arith.floordivsi %{{.*}}, %c32_i64 : i64
// The row exists only inside the list's shape: otherwise no entries.
// CHECK: memref.dim %[[L]], %c3 : memref<?x?x?x?xi32>
// CHECK: %[[NKB:.*]] = arith.ceildivsi %{{.*}}, %c16_i64 : i64
// CHECK: scf.while
// CHECK: memref.load %[[L]][%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}] : memref<?x?x?x?xi32>
// CHECK: arith.cmpi slt, %{{.*}}, %[[NKB]] : i64
// The duplicate scan over the earlier entries.
// CHECK: scf.for
// CHECK: memref.load %[[L]]
// ROUND-LABEL: func.func @list
// ROUND: list(%{{.*}} : memref<?x?x?x?xi32>) block_n 16 attributes {list_rows = 32 : i64} ranges {
func.func @list(%b: i64, %h: i64, %qlo: i64, %qhi: i64, %qo: i64, %ko: i64, %sq: i64, %skv: i64, %l: memref<?x?x?x?xi32>) {
  attn.for_kv_blocks batch(%b) heads(%h) queries(%qlo, %qhi) offsets(%qo, %ko) sizes(%sq, %skv) list(%l : memref<?x?x?x?xi32>) block_n 16 attributes {list_rows = 32 : i64} ranges {
  ^bb0(%b0: i64, %h0: i64, %lo: i64, %hi: i64, %qoff: i64, %kvoff: i64, %s0: i64, %s1: i64):
    %c0 = arith.constant 0 : i64
    attn.yield %c0, %s1 : i64, i64
  } classes {
  ^bb0(%b0: i64, %h0: i64, %lo: i64, %hi: i64, %klo: i64, %khi: i64, %qoff: i64, %kvoff: i64, %s0: i64, %s1: i64):
    %p = arith.constant 1 : i32
    attn.yield %p : i32
  } do {
  ^bb0(%kb: i64, %cls: i32):
    "test.visit"(%kb, %cls) : (i64, i32) -> ()
    attn.yield
  }
  return
}
