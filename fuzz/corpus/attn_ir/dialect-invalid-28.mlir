

func.func @f(%a: i64, %b: i64) {
  %m = attn.fixed %a, %b {stride = 4, summary = 5}
  return
}

