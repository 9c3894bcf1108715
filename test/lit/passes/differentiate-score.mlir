// RUN: %attn-opt %s -split-input-file -attn-differentiate-score -canonicalize | FileCheck %s
//
// attn-differentiate-score on score regions as attn-expand-patterns leaves them
// (inputs made by `attnc import | attn-opt -attn-expand-patterns -canonicalize`).

// ALiBi then softcap: d/ds cap tanh((s - m d) / cap) = 1 - tanh^2; the per-head
// slope is a constant and passes nothing back.
// CHECK-LABEL: func.func @softcap_alibi
// CHECK: score_grad {
// CHECK-NEXT: ^bb0(%[[G:.*]]: f32, %[[S:.*]]: f32,
// CHECK: %[[T:.*]] = math.tanh
// CHECK: %[[GC:.*]] = arith.mulf %[[G]], %[[CAP:.*]] : f32
// CHECK: %[[T2:.*]] = arith.mulf %[[T]], %[[T]] : f32
// CHECK: %[[ONE_MINUS:.*]] = arith.subf %{{.*}}, %[[T2]] : f32
// CHECK: %[[D:.*]] = arith.mulf %[[GC]], %[[ONE_MINUS]] : f32
// CHECK: %[[DS:.*]] = arith.mulf %[[D]], %{{.*}} : f32
// CHECK-NOT: accumulate_grad
// CHECK: attn.yield %[[DS]] : f32
  func.func @softcap_alibi(%arg0: tensor<?x2x?x16xf32>, %arg1: tensor<?x1x?x16xf32>, %arg2: tensor<?x1x?x16xf32>, %arg3: i64, %arg4: i64) -> tensor<?x2x?x16xf32> {
    %cst = arith.constant 3.000000e+01 : f32
    %cst_0 = arith.constant 0.0333333351 : f32
    %c0_i64 = arith.constant 0 : i64
    %0 = attn.attention q(%arg0 : tensor<?x2x?x16xf32>) k(%arg1 : tensor<?x1x?x16xf32>) v(%arg2 : tensor<?x1x?x16xf32>) offsets(%arg3, %arg4) {align = #attn.align<bottom_right>, normalizer = #attn.normalizer<softmax>, scale = 2.500000e-01 : f64} -> tensor<?x2x?x16xf32> mask {
    ^bb0(%b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
      %1 = arith.subi %q, %kv : i64
      %2 = arith.cmpi sge, %1, %c0_i64 : i64
      attn.yield %2 : i1
    } score {
    ^bb0(%s: f32, %b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
      %1 = attn.constant_table %h {values = array<f64: 6.250000e-02, 3.906250e-03>}
      %2 = arith.subi %q, %kv : i64
      %3 = arith.sitofp %2 : i64 to f32
      %4 = arith.mulf %1, %3 : f32
      %5 = arith.subf %s, %4 : f32
      %6 = arith.mulf %5, %cst_0 : f32
      %7 = math.tanh %6 : f32
      %8 = arith.mulf %7, %cst : f32
      attn.yield %8 : f32
    }
    return %0 : tensor<?x2x?x16xf32>
  }

// -----

// T5: the table entry of the pair's bucket receives g where the lookup was in
// bounds; s receives g either way (through both arms of the select).
// CHECK-LABEL: func.func @t5
// CHECK: score_grad {
// CHECK-NEXT: ^bb0(%[[G:.*]]: f32, %[[S:.*]]: f32,
// CHECK: %{{.*}}, %[[IN:.*]] = attn.lookup %[[TABLE:.*]][%[[BUCKET:.*]], %{{.*}}] : tensor<8x2xf32> -> f32
// CHECK: %[[GT:.*]] = arith.select %[[IN]], %[[G]], %{{.*}} : f32
// CHECK: attn.accumulate_grad %[[GT]] into %[[TABLE]][%[[BUCKET]], %{{.*}}] : tensor<8x2xf32>
  func.func @t5(%arg0: tensor<?x2x?x16xf32>, %arg1: tensor<?x1x?x16xf32>, %arg2: tensor<?x1x?x16xf32>, %arg3: tensor<8x2xf32>, %arg4: i64, %arg5: i64) -> tensor<?x2x?x16xf32> {
    %c6_i64 = arith.constant 6 : i64
    %c2_i64 = arith.constant 2 : i64
    %c4_i64 = arith.constant 4 : i64
    %c0_i64 = arith.constant 0 : i64
    %true = arith.constant true
    %0 = attn.attention q(%arg0 : tensor<?x2x?x16xf32>) k(%arg1 : tensor<?x1x?x16xf32>) v(%arg2 : tensor<?x1x?x16xf32>) inputs(%arg3 : tensor<8x2xf32>) offsets(%arg4, %arg5) {align = #attn.align<bottom_right>, input_dims = [[8, "Hq"]], input_names = ["table"], normalizer = #attn.normalizer<softmax>, scale = 2.500000e-01 : f64} -> tensor<?x2x?x16xf32> mask {
    ^bb0(%b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
      attn.yield %true : i1
    } score {
    ^bb0(%s: f32, %b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
      %1 = arith.subi %q, %kv : i64
      %2 = arith.cmpi slt, %1, %c0_i64 : i64
      %3 = arith.select %2, %c4_i64, %c0_i64 : i64
      %4 = math.absi %1 : i64
      %5 = arith.cmpi sge, %4, %c6_i64 : i64
      %6 = arith.extui %5 : i1 to i64
      %7 = arith.addi %6, %c2_i64 : i64
      %8 = arith.cmpi slt, %4, %c2_i64 : i64
      %9 = arith.select %8, %4, %7 : i64
      %10 = arith.addi %3, %9 : i64
      %value, %in_bounds = attn.lookup %arg3[%10, %h] : tensor<8x2xf32> -> f32
      %11 = arith.addf %s, %value : f32
      %12 = arith.select %in_bounds, %11, %s : f32
      attn.yield %12 : f32
    }
    return %0 : tensor<?x2x?x16xf32>
  }

// -----

// An expr score reading a table: rb[h, min(q - kv, 63)] gets g at the same index.
// CHECK-LABEL: func.func @expr_table
// CHECK: score_grad {
// CHECK: %[[IDX:.*]] = arith.minsi
// CHECK: %{{.*}}, %[[IN:.*]] = attn.lookup %[[RB:.*]][%[[H:.*]], %[[IDX]]] : tensor<2x64xf32> -> f32
// CHECK: %[[GT:.*]] = arith.select %[[IN]], %{{.*}}, %{{.*}} : f32
// CHECK: attn.accumulate_grad %[[GT]] into %[[RB]][%[[H]], %[[IDX]]] : tensor<2x64xf32>
  func.func @expr_table(%arg0: tensor<?x2x?x16xf32>, %arg1: tensor<?x1x?x16xf32>, %arg2: tensor<?x1x?x16xf32>, %arg3: tensor<2x64xf32>, %arg4: i64, %arg5: i64) -> tensor<?x2x?x16xf32> {
    %c63_i64 = arith.constant 63 : i64
    %c0_i64 = arith.constant 0 : i64
    %0 = attn.attention q(%arg0 : tensor<?x2x?x16xf32>) k(%arg1 : tensor<?x1x?x16xf32>) v(%arg2 : tensor<?x1x?x16xf32>) inputs(%arg3 : tensor<2x64xf32>) offsets(%arg4, %arg5) {align = #attn.align<bottom_right>, input_dims = [["Hq", 64]], input_names = ["rb"], normalizer = #attn.normalizer<softmax>, scale = 2.500000e-01 : f64} -> tensor<?x2x?x16xf32> mask {
    ^bb0(%b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
      %1 = arith.subi %q, %kv : i64
      %2 = arith.cmpi sge, %1, %c0_i64 : i64
      attn.yield %2 : i1
    } score {
    ^bb0(%s: f32, %b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
      %1 = arith.subi %q, %kv : i64
      %2 = arith.minsi %1, %c63_i64 : i64
      %value, %in_bounds = attn.lookup %arg3[%h, %2] : tensor<2x64xf32> -> f32
      %3 = arith.addf %s, %value : f32
      %4 = arith.select %in_bounds, %3, %s : f32
      attn.yield %4 : f32
    }
    return %0 : tensor<?x2x?x16xf32>
  }

// -----

// FIRE: the hidden-unit sum is an additive loop. b2[h] gets g; a second loop over
// the units recomputes each unit and passes g back to w2[h, k] (times relu), and
// through the relu (where it is active) to b1[k] and w1[k] (times x).
// CHECK-LABEL: func.func @fire
// CHECK: score_grad {
// CHECK: scf.for {{.*}} -> (f32, i1)
// CHECK: %[[GB:.*]] = arith.select %{{.*}}, %{{.*}}, %{{.*}} : f32
// CHECK: attn.accumulate_grad %[[GB]] into %{{.*}}[%{{.*}}] : tensor<8xf32>
// CHECK: scf.for {{.*}} -> (f32) {
// CHECK: %[[PRE:.*]] = arith.addf
// CHECK: %[[RELU:.*]] = arith.maximumf %[[PRE]]
// CHECK: %[[DW2:.*]] = arith.mulf %[[GB]], %[[RELU]] : f32
// CHECK: %[[ACTIVE:.*]] = arith.cmpf oge, %[[PRE]]
// CHECK: %[[DPRE:.*]] = arith.select %[[ACTIVE]]
// CHECK: attn.accumulate_grad %[[DW2]] into %{{.*}} : tensor<8x?xf32>
// CHECK: attn.accumulate_grad %[[DPRE]] into %{{.*}} : tensor<?xf32>
// CHECK: attn.accumulate_grad %{{.*}} into %{{.*}} : tensor<?xf32>
// CHECK: scf.yield
  func.func @fire(%arg0: tensor<?x8x?x64xbf16>, %arg1: tensor<?x2x?x64xbf16>, %arg2: tensor<?x2x?x64xbf16>, %arg3: tensor<?xf32>, %arg4: tensor<8xf32>, %arg5: tensor<?xf32>, %arg6: tensor<8x?xf32>, %arg7: i64, %arg8: i64) -> tensor<?x8x?x64xbf16> {
    %true = arith.constant true
    %cst = arith.constant 0.000000e+00 : f32
    %c1 = arith.constant 1 : index
    %c0 = arith.constant 0 : index
    %cst_0 = arith.constant 1.000000e+00 : f32
    %cst_1 = arith.constant 6.400000e+01 : f32
    %c0_i64 = arith.constant 0 : i64
    %0 = attn.attention q(%arg0 : tensor<?x8x?x64xbf16>) k(%arg1 : tensor<?x2x?x64xbf16>) v(%arg2 : tensor<?x2x?x64xbf16>) inputs(%arg3, %arg4, %arg5, %arg6 : tensor<?xf32>, tensor<8xf32>, tensor<?xf32>, tensor<8x?xf32>) offsets(%arg7, %arg8) {align = #attn.align<bottom_right>, input_dims = [["Hid"], ["Hq"], ["Hid"], ["Hq", "Hid"]], input_names = ["b1", "b2", "w1", "w2"], normalizer = #attn.normalizer<softmax>, scale = 1.250000e-01 : f64} -> tensor<?x8x?x64xbf16> mask {
    ^bb0(%b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
      %1 = arith.subi %q, %kv : i64
      %2 = arith.cmpi sge, %1, %c0_i64 : i64
      attn.yield %2 : i1
    } score {
    ^bb0(%s: f32, %b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
      %1 = arith.subi %q, %kv : i64
      %2 = arith.maxsi %1, %c0_i64 : i64
      %3 = arith.sitofp %q : i64 to f32
      %4 = arith.maximumf %3, %cst_1 : f32
      %5 = arith.addf %4, %cst_0 : f32
      %6 = math.log %5 : f32
      %7 = arith.sitofp %2 : i64 to f32
      %8 = arith.addf %7, %cst_0 : f32
      %9 = math.log %8 : f32
      %10 = arith.divf %9, %6 : f32
      %11 = attn.size %arg5[0] : tensor<?xf32>
      %12 = arith.index_cast %11 : i64 to index
      %13:2 = scf.for %arg9 = %c0 to %12 step %c1 iter_args(%arg10 = %cst, %arg11 = %true) -> (f32, i1) {
        %18 = arith.index_cast %arg9 : index to i64
        %value_2, %in_bounds_3 = attn.lookup %arg5[%18] : tensor<?xf32> -> f32
        %value_4, %in_bounds_5 = attn.lookup %arg3[%18] : tensor<?xf32> -> f32
        %value_6, %in_bounds_7 = attn.lookup %arg6[%h, %18] : tensor<8x?xf32> -> f32
        %19 = arith.mulf %value_2, %10 : f32
        %20 = arith.addf %19, %value_4 : f32
        %21 = arith.maximumf %20, %cst : f32
        %22 = arith.mulf %value_6, %21 : f32
        %23 = arith.addf %arg10, %22 : f32
        %24 = arith.andi %in_bounds_5, %in_bounds_7 : i1
        %25 = arith.andi %in_bounds_3, %24 : i1
        %26 = arith.andi %arg11, %25 : i1
        scf.yield %23, %26 : f32, i1
      }
      %value, %in_bounds = attn.lookup %arg4[%h] : tensor<8xf32> -> f32
      %14 = arith.addf %13#0, %value : f32
      %15 = arith.andi %13#1, %in_bounds : i1
      %16 = arith.addf %s, %14 : f32
      %17 = arith.select %15, %16, %s : f32
      attn.yield %17 : f32
    }
    return %0 : tensor<?x8x?x64xbf16>
  }
