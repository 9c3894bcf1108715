// RUN: %attn-opt %s -attn-to-tiled="block-m=128 block-n=128" -attn-gpu-assign-layouts="arch=sm_90a wgmma=true" -attn-gpu-plan-shared-memory -verify-diagnostics

// Head dim 256 with 128 x 128 tiles: Q 64 KiB + K and V 2 x 2 x 64 KiB, over Hopper's
// 227 KiB per CTA. The error is at the attention whose grid it is.
func.func @d256(%q: tensor<?x2x?x256xbf16>, %k: tensor<?x1x?x256xbf16>, %v: tensor<?x1x?x256xbf16>, %o0: i64) -> tensor<?x2x?x256xbf16> {
  // expected-error @+1 {{the tiles need 328704 bytes of shared memory per CTA, over Hopper's 232448 (smaller block_m or block_n)}}
  %o = attn.attention q(%q : tensor<?x2x?x256xbf16>) k(%k : tensor<?x1x?x256xbf16>) v(%v : tensor<?x1x?x256xbf16>) offsets(%o0, %o0)
      {scale = 0.125 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x2x?x256xbf16>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %c = attn.causal %qp, %kp
    attn.yield %c : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return %o : tensor<?x2x?x256xbf16>
}
