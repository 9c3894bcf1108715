

func.func @f(%a: i64, %b: i64) {
  %m = attn.shifted_groups %a, %a, %b {group = 0, shifted_heads = array<i64>}
  return
}

