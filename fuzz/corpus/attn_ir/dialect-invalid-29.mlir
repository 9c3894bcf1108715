

func.func @f(%a: i64, %b: i64) {
  %m = attn.dilated_segments %a, %a, %b {segment = 8, dilation = 2, head_offset = 3}
  return
}

