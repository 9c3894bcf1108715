

func.func @f(%a: i64, %b: i64) {
  %m = attn.dilated_window %a, %b {left = 4, right = 0, dilation = 0}
  return
}

