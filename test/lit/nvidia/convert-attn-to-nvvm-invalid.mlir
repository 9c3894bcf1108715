// The conversion reads the layouts and places the two passes before it write; run
// without them it says which is missing, at the attention.
// RUN: split-file %s %t
// RUN: %attn-opt %t/unassigned.mlir -attn-to-tiled="block-m=64 block-n=64" -convert-attn-to-nvvm -verify-diagnostics
// RUN: %attn-opt %t/unplanned.mlir -attn-to-tiled="block-m=64 block-n=64" -attn-gpu-assign-layouts -convert-attn-to-nvvm -verify-diagnostics
// RUN: %attn-opt %t/unassigned.mlir -attn-to-tiled="block-m=64 block-n=64" -attn-gpu-plan-shared-memory -verify-diagnostics

//--- unassigned.mlir
func.func @unassigned(%q: tensor<?x2x?x64xbf16>, %k: tensor<?x1x?x64xbf16>, %v: tensor<?x1x?x64xbf16>, %o0: i64) -> tensor<?x2x?x64xbf16> {
  // expected-error @+1 {{no #attn.gpu_target: run attn-gpu-assign-layouts first}}
  %o = attn.attention q(%q : tensor<?x2x?x64xbf16>) k(%k : tensor<?x1x?x64xbf16>) v(%v : tensor<?x1x?x64xbf16>) offsets(%o0, %o0)
      {scale = 0.125 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x2x?x64xbf16>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %c = attn.causal %qp, %kp
    attn.yield %c : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return %o : tensor<?x2x?x64xbf16>
}

//--- unplanned.mlir
func.func @unplanned(%q: tensor<?x2x?x64xbf16>, %k: tensor<?x1x?x64xbf16>, %v: tensor<?x1x?x64xbf16>, %o0: i64) -> tensor<?x2x?x64xbf16> {
  // expected-error @+1 {{the staged tiles have no #attn.shared places: run attn-gpu-plan-shared-memory first}}
  %o = attn.attention q(%q : tensor<?x2x?x64xbf16>) k(%k : tensor<?x1x?x64xbf16>) v(%v : tensor<?x1x?x64xbf16>) offsets(%o0, %o0)
      {scale = 0.125 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x2x?x64xbf16>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %c = attn.causal %qp, %kp
    attn.yield %c : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return %o : tensor<?x2x?x64xbf16>
}
