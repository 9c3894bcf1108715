// RUN: %attn-opt %s -split-input-file -attn-analyze-blocks -canonicalize -cse | FileCheck %s

// Causal, q - kv >= 0: the key range of a query block ends where its last
// query's position is, hi = (q_hi - 1) + q_offset - kv_offset + 1, in closed form.
// CHECK-LABEL: func.func @causal
// CHECK: kv_ranges {
// CHECK-NEXT: ^bb0(%b: i64, %h: i64, %q_lo: i64, %q_hi: i64, %q_offset: i64, %kv_offset: i64, %seq_q: i64, %seq_kv: i64):
// CHECK-NEXT:   %[[LAST:.*]] = arith.subi %q_hi, %{{.*}} : i64
// CHECK-NEXT:   %[[POS:.*]] = arith.addi %[[LAST]], %q_offset : i64
// CHECK-NEXT:   %[[KV:.*]] = arith.subi %[[POS]], %kv_offset : i64
// CHECK-NEXT:   %[[LO:.*]] = arith.minsi %seq_kv, %{{.*}} : i64
// CHECK-NEXT:   %[[END:.*]] = arith.addi %[[KV]], %{{.*}} : i64
// CHECK-NEXT:   %[[HI:.*]] = arith.minsi %[[END]], %seq_kv : i64
// CHECK-NEXT:   %[[HI2:.*]] = arith.maxsi %[[HI]], %[[LO]] : i64
// CHECK-NEXT:   attn.yield %[[LO]], %[[HI2]] : i64, i64
// The tile class: d = q - kv over the tile is [min_q - max_kv, max_q - min_kv];
// FULL (2) when its minimum is >= 0, EMPTY (0) when its maximum is < 0.
// CHECK: tile_class {
// CHECK: %[[MAYT:.*]] = arith.cmpi sge, %{{.*}}, %{{.*}} : i64
// CHECK: %[[MAYF:.*]] = arith.cmpi slt, %{{.*}}, %{{.*}} : i64
// CHECK: %[[PF:.*]] = arith.select %[[MAYF]], %{{.*}}, %{{.*}} : i64
// CHECK: %[[C:.*]] = arith.select %[[MAYT]], %[[PF]], %{{.*}} : i64
// CHECK: %[[C32:.*]] = arith.trunci %[[C]] : i64 to i32
// CHECK: attn.yield %[[C32]] : i32
func.func @causal(%q: tensor<?x2x?x16xf32>, %qo: i64, %ko: i64) -> tensor<?x2x?x16xf32> {
  %o = attn.attention q(%q : tensor<?x2x?x16xf32>) k(%q : tensor<?x2x?x16xf32>) v(%q : tensor<?x2x?x16xf32>) offsets(%qo, %ko)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x2x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %c0 = arith.constant 0 : i64
    %d = arith.subi %qp, %kp : i64
    %m = arith.cmpi sge, %d, %c0 : i64
    attn.yield %m : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return %o : tensor<?x2x?x16xf32>
}

// -----

// StreamingLLM, causal and (sinks or window): two key ranges, [0, 4) and the
// window [q_lo - 63, ...), each cut by causality.
// CHECK-LABEL: func.func @streaming
// CHECK: kv_ranges {
// CHECK: attn.yield %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} : i64, i64, i64, i64
// CHECK: tile_class {
func.func @streaming(%q: tensor<?x2x?x16xf32>, %qo: i64, %ko: i64) -> tensor<?x2x?x16xf32> {
  %o = attn.attention q(%q : tensor<?x2x?x16xf32>) k(%q : tensor<?x2x?x16xf32>) v(%q : tensor<?x2x?x16xf32>) offsets(%qo, %ko)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x2x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %c0 = arith.constant 0 : i64
    %c4 = arith.constant 4 : i64
    %c63 = arith.constant 63 : i64
    %d = arith.subi %qp, %kp : i64
    %causal = arith.cmpi sge, %d, %c0 : i64
    %sink = arith.cmpi slt, %kp, %c4 : i64
    %near = arith.cmpi sle, %d, %c63 : i64
    %any = arith.ori %sink, %near : i1
    %m = arith.andi %causal, %any : i1
    attn.yield %m : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return %o : tensor<?x2x?x16xf32>
}

// -----

// Document masks read data: the tile class bounds the ids of the tile's rows and
// columns by box summaries (min, max over the block). The key range is all keys,
// or none when the query rows lie outside the id tensor (their reads would fail).
// CHECK-LABEL: func.func @document
// CHECK: kv_ranges {
// CHECK-NOT: attn.box_summary
// CHECK: attn.yield %{{.*}}, %{{.*}} : i64, i64
// CHECK: tile_class {
// CHECK-DAG: attn.box_summary %{{.*}} lo(%b, %q_lo) hi(%b, %{{.*}}) : tensor<?x?xi32>
// CHECK-DAG: attn.box_summary %{{.*}} lo(%b, %kv_lo) hi(%b, %{{.*}}) : tensor<?x?xi32>
// CHECK: attn.yield %{{.*}} : i32
func.func @document(%q: tensor<?x2x?x16xf32>, %doc: tensor<?x?xi32>, %qo: i64, %ko: i64) -> tensor<?x2x?x16xf32> {
  %o = attn.attention q(%q : tensor<?x2x?x16xf32>) k(%q : tensor<?x2x?x16xf32>) v(%q : tensor<?x2x?x16xf32>) inputs(%doc : tensor<?x?xi32>) offsets(%qo, %ko)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>, input_names = ["doc"]} -> tensor<?x2x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %a, %oka = attn.lookup %doc[%b, %qi] : tensor<?x?xi32> -> i64
    %c, %okc = attn.lookup %doc[%b, %ki] : tensor<?x?xi32> -> i64
    %eq = arith.cmpi eq, %a, %c : i64
    %m1 = arith.andi %eq, %oka : i1
    %m = arith.andi %m1, %okc : i1
    attn.yield %m : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return %o : tensor<?x2x?x16xf32>
}

// -----

// A sorted document id input (sorted_dims, "sorted": true in the spec): the key range
// is solved by binary search for the query block's ids, whose min and max are the
// block's end rows (box_summary sorted_dim: two reads, not BM). Positions outside
// the id tensor (which read 0) would join as two more intervals, but the key
// lookup's in_bounds is a conjunct: one interval, cut to [0, size - 1].
// CHECK-LABEL: func.func @document_sorted
// CHECK: kv_ranges {
// CHECK: %[[MIN:.*]], %[[MAX:.*]], %{{.*}}, %[[IN:.*]] = attn.box_summary %[[DOC:[a-z0-9_]+]] lo(%b, %q_lo) hi(%b, %{{.*}}) {sorted_dim = 1 : i64} : tensor<?x?xi32>
// CHECK-DAG: %[[HI:.*]] = arith.select %[[IN]], %[[MAX]], %{{.*}} : i64
// CHECK-DAG: %[[LO:.*]] = arith.select %[[IN]], %[[MIN]], %{{.*}} : i64
// CHECK: %[[FIRST:.*]], %[[END:.*]] = attn.search_sorted %[[DOC]][%b, %{{.*}}] dim 1 value(%[[LO]], %[[HI]]) : tensor<?x?xi32>
// CHECK: %[[LAST:.*]] = arith.subi %[[END]], %{{.*}} : i64
// CHECK: %[[SIZE:.*]] = attn.size %[[DOC]][1] : tensor<?x?xi32>
// CHECK: arith.maxsi %[[FIRST]], %{{.*}} : i64
// CHECK: arith.minsi %[[LAST]], %{{.*}} : i64
// CHECK: attn.yield %{{.*}}, %{{.*}} : i64, i64
// CHECK: tile_class {
// CHECK-NOT: attn.search_sorted
// CHECK-DAG: attn.box_summary %{{.*}} lo(%b, %q_lo) hi(%b, %{{.*}}) {sorted_dim = 1 : i64} : tensor<?x?xi32>
// CHECK-DAG: attn.box_summary %{{.*}} lo(%b, %kv_lo) hi(%b, %{{.*}}) {sorted_dim = 1 : i64} : tensor<?x?xi32>
// CHECK: attn.yield %{{.*}} : i32
func.func @document_sorted(%q: tensor<?x2x?x16xf32>, %doc: tensor<?x?xi32>, %qo: i64, %ko: i64) -> tensor<?x2x?x16xf32> {
  %o = attn.attention q(%q : tensor<?x2x?x16xf32>) k(%q : tensor<?x2x?x16xf32>) v(%q : tensor<?x2x?x16xf32>) inputs(%doc : tensor<?x?xi32>) offsets(%qo, %ko)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>, input_names = ["doc"], sorted_dims = array<i64: 1>} -> tensor<?x2x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %a, %oka = attn.lookup %doc[%b, %qi] : tensor<?x?xi32> -> i64
    %c, %okc = attn.lookup %doc[%b, %ki] : tensor<?x?xi32> -> i64
    %eq = arith.cmpi eq, %a, %c : i64
    %m1 = arith.andi %eq, %oka : i1
    %m = arith.andi %m1, %okc : i1
    attn.yield %m : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return %o : tensor<?x2x?x16xf32>
}

// -----

// Sorted ids with causal (all): the search's interval is cut by causality. A one-sided
// comparison (kv ids at most the query's, t[kv] <= R) bounds the key from above only:
// the search's `end` of R's maximum. Separate key ids (kv_ids) that are not declared
// sorted keep today's form (no search). No in_bounds conjunct guards the key lookup
// here, so positions outside the tensor (reading 0) stay possible: 4 intervals.
// CHECK-LABEL: func.func @document_causal_sorted
// CHECK: kv_ranges {
// CHECK: attn.search_sorted %[[DOC:[a-z0-9_]+]][%b, %{{.*}}] dim 1 value(%[[LO:.*]], %[[HI:.*]]) :
// CHECK: attn.size %[[DOC]][1]
// CHECK: attn.search_sorted %[[DOC]][%b, %{{.*}}] dim 1 value(%[[HI]], %[[HI]]) :
// CHECK-NOT: attn.search_sorted
// CHECK: attn.yield %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} : i64, i64, i64, i64, i64, i64, i64, i64
// CHECK: tile_class {
func.func @document_causal_sorted(%q: tensor<?x2x?x16xf32>, %doc: tensor<?x?xi32>, %other: tensor<?x?xi32>, %qo: i64, %ko: i64) -> tensor<?x2x?x16xf32> {
  %o = attn.attention q(%q : tensor<?x2x?x16xf32>) k(%q : tensor<?x2x?x16xf32>) v(%q : tensor<?x2x?x16xf32>) inputs(%doc, %other : tensor<?x?xi32>, tensor<?x?xi32>) offsets(%qo, %ko)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>, input_names = ["doc", "other"], sorted_dims = array<i64: 1, -1>} -> tensor<?x2x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %c0 = arith.constant 0 : i64
    %a, %oka = attn.lookup %doc[%b, %qi] : tensor<?x?xi32> -> i64
    %c, %okc = attn.lookup %doc[%b, %ki] : tensor<?x?xi32> -> i64
    %x, %okx = attn.lookup %other[%b, %ki] : tensor<?x?xi32> -> i64
    %eq = arith.cmpi eq, %a, %c : i64
    %le = arith.cmpi sle, %c, %a : i64
    %ox = arith.cmpi eq, %x, %a : i64
    %d = arith.subi %qp, %kp : i64
    %causal = arith.cmpi sge, %d, %c0 : i64
    %m1 = arith.andi %eq, %causal : i1
    %m2 = arith.andi %m1, %le : i1
    %m = arith.andi %m2, %ox : i1
    attn.yield %m : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return %o : tensor<?x2x?x16xf32>
}

// -----

// A block list conjunct is recorded so that attn-tile can iterate the listed blocks.
// CHECK-LABEL: func.func @block_list
// CHECK: kv_list_block = array<i64: 64, 32>, kv_list_input = 0 : i64
// CHECK: tile_class {
// CHECK: attn.box_contains %{{.*}} lo(%b, %h, %{{.*}}) hi(%b, %h, %{{.*}}) value(%{{.*}}, %{{.*}}) : tensor<?x2x?x?xi32>
func.func @block_list(%q: tensor<?x2x?x16xf32>, %list: tensor<?x2x?x?xi32>, %qo: i64, %ko: i64) -> tensor<?x2x?x16xf32> {
  %o = attn.attention q(%q : tensor<?x2x?x16xf32>) k(%q : tensor<?x2x?x16xf32>) v(%q : tensor<?x2x?x16xf32>) inputs(%list : tensor<?x2x?x?xi32>) offsets(%qo, %ko)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>, input_names = ["list"]} -> tensor<?x2x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %c64 = arith.constant 64 : i64
    %c32 = arith.constant 32 : i64
    %qb = arith.floordivsi %qi, %c64 : i64
    %kb = arith.floordivsi %ki, %c32 : i64
    %m = attn.contains %kb in %list[%b, %h, %qb] : tensor<?x2x?x?xi32>
    attn.yield %m : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return %o : tensor<?x2x?x16xf32>
}

// -----

// An atom of the query alone (global queries) keeps all keys or none, decided per
// query block at run time.
// CHECK-LABEL: func.func @global_queries
// CHECK: kv_ranges {
// CHECK: arith.select
// CHECK: attn.yield
func.func @global_queries(%q: tensor<?x2x?x16xf32>, %qo: i64, %ko: i64) -> tensor<?x2x?x16xf32> {
  %o = attn.attention q(%q : tensor<?x2x?x16xf32>) k(%q : tensor<?x2x?x16xf32>) v(%q : tensor<?x2x?x16xf32>) offsets(%qo, %ko)
      {scale = 0.25 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x2x?x16xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %c8 = arith.constant 8 : i64
    %c0 = arith.constant 0 : i64
    %d = arith.subi %qp, %kp : i64
    %g = arith.cmpi slt, %qp, %c8 : i64
    %causal = arith.cmpi sge, %d, %c0 : i64
    %m = arith.andi %g, %causal : i1
    attn.yield %m : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return %o : tensor<?x2x?x16xf32>
}
