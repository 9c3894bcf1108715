module {
  func.func @expr_score(%arg0: tensor<?x8x?x64xbf16>, %arg1: tensor<?x2x?x64xbf16>, %arg2: tensor<?x2x?x64xbf16>, %arg3: i64, %arg4: i64) -> tensor<?x8x?x64xbf16> {
    %0 = attn.attention q(%arg0 : tensor<?x8x?x64xbf16>) k(%arg1 : tensor<?x2x?x64xbf16>) v(%arg2 : tensor<?x2x?x64xbf16>) offsets(%arg3, %arg4) {align = #attn.align<bottom_right>, normalizer = #attn.normalizer<softmax>, scale = 1.250000e-01 : f64} -> tensor<?x8x?x64xbf16> mask {
    ^bb0(%b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
      %1 = attn.causal %q, %kv
      attn.yield %1 : i1
    } score {
    ^bb0(%s: f32, %b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
      %cst = arith.constant 1.250000e-01 : f32
      %1 = arith.subi %kv, %q : i64
      %2 = arith.sitofp %1 : i64 to f32
      %3 = arith.mulf %cst, %2 : f32
      %c1_i64 = arith.constant 1 : i64
      %4 = arith.addi %h, %c1_i64 : i64
      %5 = arith.sitofp %4 : i64 to f32
      %6 = arith.divf %3, %5 : f32
      %7 = arith.addf %s, %6 : f32
      %c2_i64 = arith.constant 2 : i64
      %c0_i64 = arith.constant 0 : i64
      %8 = arith.remsi %h, %c2_i64 : i64
      %9 = arith.cmpi ne, %8, %c0_i64 : i64
      %10 = arith.cmpi slt, %8, %c0_i64 : i64
      %11 = arith.cmpi slt, %c2_i64, %c0_i64 : i64
      %12 = arith.xori %10, %11 : i1
      %13 = arith.andi %9, %12 : i1
      %14 = arith.addi %8, %c2_i64 : i64
      %15 = arith.select %13, %14, %8 : i64
      %c0_i64_0 = arith.constant 0 : i64
      %16 = arith.cmpi eq, %15, %c0_i64_0 : i64
      %cst_1 = arith.constant 2.000000e+01 : f32
      %cst_2 = arith.constant 2.000000e+01 : f32
      %17 = arith.divf %7, %cst_2 : f32
      %18 = math.tanh %17 : f32
      %19 = arith.mulf %cst_1, %18 : f32
      %20 = arith.select %16, %19, %7 : f32
      attn.yield %20 : f32
    }
    return %0 : tensor<?x8x?x64xbf16>
  }
}

