

func.func @f(%a: i64, %b: i64) {
  %m = attn.sliding_window %a, %b {left = -2, right = 0}
  return
}

