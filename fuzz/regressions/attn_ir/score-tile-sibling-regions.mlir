

// attn.score_tile has the same two regions.
func.func @f(%t: memref<64x64xf32>, %i: i64) {
  attn.score_tile %t at(%i, %i, %i, %i) offsets(%i, %i) sizes(%i, %i) : memref<64x64xf32> mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %c = attn.causal %qp, %kv
    attn.yield %c : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %q: i64, %kv: i64, %sq: i64, %sk: i64):
  ^bb0:
  }
  return
}

