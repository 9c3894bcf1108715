

func.func @f(%a: i64, %b: i64) {
  %m = attn.sinks %a {count = -1}
  return
}

