// RUN: %attn-opt %s -split-input-file -verify-diagnostics

// A value used in a region of an attn op must be defined before the use: by the region
// itself or above the op. MLIR's parser would otherwise bind the use to the next
// definition of the name, in a sibling region too, and free that definition while it
// is still used when a later part fails to parse (heap corruption: fuzz finding 3,
// ../shared/repro/hardening/abort.mlir). Each case is a parse error at the right place.

// The reproducer: a mask region with ops but no block header, a score region that
// defines ^bb0 twice (the second time with the mask's arguments).
func.func @f(%arg0: tensor<?x8x?x64xbf16>, %arg1: tensor<?x2x?x64xbf16>, %arg2: tensor<?x2x?x64xbf16>, %arg3: i64, %arg4: i64) {
  %o:2 = attn.attention q(%arg0 : tensor<?x8x?x64xbf16>) k(%arg1 : tensor<?x2x?x64xbf16>) v(%arg2 : tensor<?x2x?x64xbf16>) offsets(%arg3, %arg4) {align = #attn.align<bottom_right>, normalizer = #attn.normalizer<softmax>, scale = 1.250000e-01 : f64} -> tensor<?x8x?x64xbf16>, tensor<?x8x?xf32> mask {
    // expected-error @+1 {{use of a value not defined before it in the 'mask' region of attn.attention}}
    %1 = attn.causal %q, %kv
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
  ^bb0(%b: i64, %h: i64, %q_idx: i64, %kv_idx: i64, %q: i64, %kv: i64, %seq_q: i64, %seq_kv: i64):
  }
  return
}

// -----

// The same mask, and a score region whose entry block fails after naming %q and %kv.
func.func @f(%q: tensor<?x8x?x64xbf16>, %k: tensor<?x2x?x64xbf16>, %v: tensor<?x2x?x64xbf16>, %o0: i64) {
  %o = attn.attention q(%q : tensor<?x8x?x64xbf16>) k(%k : tensor<?x2x?x64xbf16>) v(%v : tensor<?x2x?x64xbf16>) offsets(%o0, %o0) {scale = 1.0 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x8x?x64xbf16>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    // expected-error @+1 {{use of a value not defined before it in the 'mask' region of attn.attention}}
    %c = attn.causal %qp, %later
    attn.yield %c : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %later: i64, %sq: i64, %sk: i64):
    attn.yield %s, %s : f32
  }
  return
}

// -----

// A mask that uses a value an op of the score region defines.
func.func @f(%q: tensor<?x8x?x64xbf16>, %k: tensor<?x2x?x64xbf16>, %v: tensor<?x2x?x64xbf16>, %o0: i64) {
  %o = attn.attention q(%q : tensor<?x8x?x64xbf16>) k(%k : tensor<?x2x?x64xbf16>) v(%v : tensor<?x2x?x64xbf16>) offsets(%o0, %o0) {scale = 1.0 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x8x?x64xbf16>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    // expected-error @+1 {{use of a value not defined before it in the 'mask' region of attn.attention}}
    attn.yield %flag : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %flag = arith.constant true
    attn.yield %s : f32
  }
  return
}

// -----

// A score region that uses a value only defined after the op.
func.func @f(%q: tensor<?x8x?x64xbf16>, %k: tensor<?x2x?x64xbf16>, %v: tensor<?x2x?x64xbf16>, %o0: i64) {
  %o = attn.attention q(%q : tensor<?x8x?x64xbf16>) k(%k : tensor<?x2x?x64xbf16>) v(%v : tensor<?x2x?x64xbf16>) offsets(%o0, %o0) {scale = 1.0 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x8x?x64xbf16>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %t = arith.constant true
    attn.yield %t : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    // expected-error @+1 {{use of a value not defined before it in the 'score' region of attn.attention}}
    %r = arith.addf %s, %half : f32
    attn.yield %r : f32
  }
  %half = arith.constant 0.5 : f32
  return
}

// -----

// An op above the attention that uses a name the mask region defines.
func.func @f(%q: tensor<?x8x?x64xbf16>, %k: tensor<?x2x?x64xbf16>, %v: tensor<?x2x?x64xbf16>, %o0: i64) {
  // expected-error @+1 {{uses a value defined inside the 'mask' region of a later attn.attention}}
  %x = arith.addi %qp, %qp : i64
  %o = attn.attention q(%q : tensor<?x8x?x64xbf16>) k(%k : tensor<?x2x?x64xbf16>) v(%v : tensor<?x2x?x64xbf16>) offsets(%o0, %o0) {scale = 1.0 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x8x?x64xbf16>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %t = arith.constant true
    attn.yield %t : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp2: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return
}

// -----

// attn.score_tile has the same two regions.
func.func @f(%t: memref<64x64xf32>, %i: i64) {
  attn.score_tile %t at(%i, %i, %i, %i) offsets(%i, %i) sizes(%i, %i) : memref<64x64xf32> mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    // expected-error @+1 {{use of a value not defined before it in the 'mask' region of attn.score_tile}}
    %c = attn.causal %qp, %kv
    attn.yield %c : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %q: i64, %kv: i64, %sq: i64, %sk: i64):
  ^bb0:
  }
  return
}

// -----

// attn.grid: its arguments must not stand for a name used above it.
func.func @f(%n: index) {
  // expected-error @+1 {{uses a value defined inside the 'body' region of a later attn.grid}}
  %x = arith.addi %qb, %qb : index
  attn.grid %n, %n, %n attributes {block_m = 64 : i64, block_n = 64 : i64} {
  ^bb0(%b: index, %h: index, %qb: index):
  }
  return
}

// -----

// A later block of the region fails: the argument that stands for the name used above
// loses that use before the region is freed (the error is MLIR's own).
func.func @f(%n: index) {
  %x = arith.addi %qb, %qb : index
  attn.grid %n, %n, %n attributes {block_m = 64 : i64, block_n = 64 : i64} {
  ^bb0(%b: index, %h: index, %qb: index):
    %y = arith.addi %b, %h : index
  ^bb1:
  // expected-error @+1 {{redefinition of block '^bb1'}}
  ^bb1:
  }
  return
}

// -----

// Still accepted (no diagnostic expected): a region that uses a constant defined
// above the op, where the canonicalizer hoists constants.
func.func @ok(%q: tensor<?x8x?x64xbf16>, %k: tensor<?x2x?x64xbf16>, %v: tensor<?x2x?x64xbf16>, %o0: i64) {
  %w = arith.constant 16 : i64
  %o = attn.attention q(%q : tensor<?x8x?x64xbf16>) k(%k : tensor<?x2x?x64xbf16>) v(%v : tensor<?x2x?x64xbf16>) offsets(%o0, %o0) {scale = 1.0 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x8x?x64xbf16>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %d = arith.subi %qp, %kp : i64
    %c = arith.cmpi sle, %d, %w : i64
    attn.yield %c : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return
}

// -----

// attn.for_kv_blocks parses its regions the same guarded way: a use in `ranges` of a
// name the `do` region defines is an error at the use, not a cross-region binding.
func.func @schedule_sibling(%x: i64) {
  attn.for_kv_blocks batch(%x) heads(%x) queries(%x, %x) offsets(%x, %x) sizes(%x, %x) block_n 16 ranges {
  ^bb0(%b0: i64, %h0: i64, %lo: i64, %hi: i64, %qoff: i64, %kvoff: i64, %s0: i64, %s1: i64):
    // expected-error @+1 {{use of a value not defined before it in the 'ranges' region of attn.for_kv_blocks}}
    attn.yield %kb, %hi : i64, i64
  } classes {
  ^bb0(%b1: i64, %h1: i64, %lo1: i64, %hi1: i64, %klo: i64, %khi: i64, %qoff1: i64, %kvoff1: i64, %s2: i64, %s3: i64):
    %p = arith.constant 1 : i32
    attn.yield %p : i32
  } do {
  ^bb0(%kb: i64, %cls: i32):
    attn.yield
  }
  return
}
