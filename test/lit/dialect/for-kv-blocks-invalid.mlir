// RUN: %attn-opt %s -split-input-file -verify-diagnostics

// The schedule op's structural rules (attn.for_kv_blocks).

func.func @odd_bounds(%x: i64) {
  // expected-error @+1 {{region 'ranges' must yield pairs of i64 (lo, hi)}}
  attn.for_kv_blocks batch(%x) heads(%x) queries(%x, %x) offsets(%x, %x) sizes(%x, %x) block_n 16 ranges {
  ^bb0(%b0: i64, %h0: i64, %lo: i64, %hi: i64, %qoff: i64, %kvoff: i64, %s0: i64, %s1: i64):
    attn.yield %lo : i64
  } classes {
  ^bb0(%b0: i64, %h0: i64, %lo: i64, %hi: i64, %klo: i64, %khi: i64, %qoff: i64, %kvoff: i64, %s0: i64, %s1: i64):
    %p = arith.constant 1 : i32
    attn.yield %p : i32
  } do {
  ^bb0(%kb: i64, %cls: i32):
    attn.yield
  }
  return
}

// -----

func.func @class_type(%x: i64) {
  // expected-error @+1 {{region 'classes' must yield one i32 tile class}}
  attn.for_kv_blocks batch(%x) heads(%x) queries(%x, %x) offsets(%x, %x) sizes(%x, %x) block_n 16 ranges {
  ^bb0(%b0: i64, %h0: i64, %lo: i64, %hi: i64, %qoff: i64, %kvoff: i64, %s0: i64, %s1: i64):
    attn.yield %lo, %hi : i64, i64
  } classes {
  ^bb0(%b0: i64, %h0: i64, %lo: i64, %hi: i64, %klo: i64, %khi: i64, %qoff: i64, %kvoff: i64, %s0: i64, %s1: i64):
    attn.yield %lo : i64
  } do {
  ^bb0(%kb: i64, %cls: i32):
    attn.yield
  }
  return
}

// -----

func.func @body_args(%x: i64) {
  // expected-error @+1 {{body must take (kb: i64, cls: i32)}}
  attn.for_kv_blocks batch(%x) heads(%x) queries(%x, %x) offsets(%x, %x) sizes(%x, %x) block_n 16 ranges {
  ^bb0(%b0: i64, %h0: i64, %lo: i64, %hi: i64, %qoff: i64, %kvoff: i64, %s0: i64, %s1: i64):
    attn.yield %lo, %hi : i64, i64
  } classes {
  ^bb0(%b0: i64, %h0: i64, %lo: i64, %hi: i64, %klo: i64, %khi: i64, %qoff: i64, %kvoff: i64, %s0: i64, %s1: i64):
    %p = arith.constant 1 : i32
    attn.yield %p : i32
  } do {
  ^bb0(%kb: index):
    attn.yield
  }
  return
}

// -----

func.func @list_needs_rows(%x: i64, %l: memref<?x?x?x?xi32>) {
  // expected-error @+1 {{a list needs list_rows, the query rows per list row}}
  attn.for_kv_blocks batch(%x) heads(%x) queries(%x, %x) offsets(%x, %x) sizes(%x, %x) list(%l : memref<?x?x?x?xi32>) block_n 16 ranges {
  ^bb0(%b0: i64, %h0: i64, %lo: i64, %hi: i64, %qoff: i64, %kvoff: i64, %s0: i64, %s1: i64):
    attn.yield %lo, %hi : i64, i64
  } classes {
  ^bb0(%b0: i64, %h0: i64, %lo: i64, %hi: i64, %klo: i64, %khi: i64, %qoff: i64, %kvoff: i64, %s0: i64, %s1: i64):
    %p = arith.constant 1 : i32
    attn.yield %p : i32
  } do {
  ^bb0(%kb: i64, %cls: i32):
    attn.yield
  }
  return
}

// -----

func.func @list_one_head(%x: i64, %l: memref<?x?x?x?xi32>) {
  // expected-error @+1 {{a block list is per head: exactly one head with a list}}
  attn.for_kv_blocks batch(%x) heads(%x, %x) queries(%x, %x) offsets(%x, %x) sizes(%x, %x) list(%l : memref<?x?x?x?xi32>) block_n 16 attributes {list_rows = 64 : i64} ranges {
  ^bb0(%b0: i64, %h0: i64, %lo: i64, %hi: i64, %qoff: i64, %kvoff: i64, %s0: i64, %s1: i64):
    attn.yield %lo, %hi : i64, i64
  } classes {
  ^bb0(%b0: i64, %h0: i64, %lo: i64, %hi: i64, %klo: i64, %khi: i64, %qoff: i64, %kvoff: i64, %s0: i64, %s1: i64):
    %p = arith.constant 1 : i32
    attn.yield %p : i32
  } do {
  ^bb0(%kb: i64, %cls: i32):
    attn.yield
  }
  return
}

// -----

func.func @block_n(%x: i64) {
  // expected-error @+1 {{block_n must be positive}}
  attn.for_kv_blocks batch(%x) heads(%x) queries(%x, %x) offsets(%x, %x) sizes(%x, %x) block_n 0 ranges {
  ^bb0(%b0: i64, %h0: i64, %lo: i64, %hi: i64, %qoff: i64, %kvoff: i64, %s0: i64, %s1: i64):
    attn.yield %lo, %hi : i64, i64
  } classes {
  ^bb0(%b0: i64, %h0: i64, %lo: i64, %hi: i64, %klo: i64, %khi: i64, %qoff: i64, %kvoff: i64, %s0: i64, %s1: i64):
    %p = arith.constant 1 : i32
    attn.yield %p : i32
  } do {
  ^bb0(%kb: i64, %cls: i32):
    attn.yield
  }
  return
}
