func.func @f(%n: index) {
  %x = arith.addi %qb, %qb : index
  attn.grid %n, %n, %n attributes {block_m = 64 : i64, block_n = 64 : i64} {
  ^bb0(%b: index, %h: index, %qb: index):
    %y = arith.addi %b, %h : index
  ^bb1:
  ^bb1:
  }
  return
}
