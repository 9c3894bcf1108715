// RUN: %attn-opt %s -split-input-file -verify-diagnostics

// Every structural rule of the attn ops rejects bad IR with a message.
func.func @f(%q: tensor<?x4x64xbf16>, %k: tensor<?x2x?x64xbf16>, %v: tensor<?x2x?x64xbf16>, %o0: i64) {
  // expected-error @+1 {{q must be a rank-4 tensor [B, H, S, D]}}
  %o = attn.attention q(%q : tensor<?x4x64xbf16>) k(%k : tensor<?x2x?x64xbf16>) v(%v : tensor<?x2x?x64xbf16>) offsets(%o0, %o0) {scale = 1.0 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x4x?x64xbf16>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %t = arith.constant true
    attn.yield %t : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return
}

// -----

func.func @f(%q: tensor<?x4x?x64xi32>, %k: tensor<?x2x?x64xbf16>, %v: tensor<?x2x?x64xbf16>, %o0: i64) {
  // expected-error @+1 {{q must hold bf16, f16 or f32}}
  %o = attn.attention q(%q : tensor<?x4x?x64xi32>) k(%k : tensor<?x2x?x64xbf16>) v(%v : tensor<?x2x?x64xbf16>) offsets(%o0, %o0) {scale = 1.0 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x4x?x64xbf16>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %t = arith.constant true
    attn.yield %t : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return
}

// -----

func.func @f(%q: tensor<?x?x?x64xbf16>, %k: tensor<?x2x?x64xbf16>, %v: tensor<?x2x?x64xbf16>, %o0: i64) {
  // expected-error @+1 {{q must have a static, positive head count}}
  %o = attn.attention q(%q : tensor<?x?x?x64xbf16>) k(%k : tensor<?x2x?x64xbf16>) v(%v : tensor<?x2x?x64xbf16>) offsets(%o0, %o0) {scale = 1.0 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x4x?x64xbf16>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %t = arith.constant true
    attn.yield %t : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return
}

// -----

func.func @f(%q: tensor<?x4x?x?xbf16>, %k: tensor<?x2x?x64xbf16>, %v: tensor<?x2x?x64xbf16>, %o0: i64) {
  // expected-error @+1 {{q must have a static head_dim (dim 3) in [1, 512]}}
  %o = attn.attention q(%q : tensor<?x4x?x?xbf16>) k(%k : tensor<?x2x?x64xbf16>) v(%v : tensor<?x2x?x64xbf16>) offsets(%o0, %o0) {scale = 1.0 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x4x?x64xbf16>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %t = arith.constant true
    attn.yield %t : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return
}

// -----

func.func @f(%q: tensor<?x4x?x64xbf16>, %k: tensor<?x2x?x64xf16>, %v: tensor<?x2x?x64xf16>, %o0: i64) {
  // expected-error @+1 {{q, k and v must share one element type}}
  %o = attn.attention q(%q : tensor<?x4x?x64xbf16>) k(%k : tensor<?x2x?x64xf16>) v(%v : tensor<?x2x?x64xf16>) offsets(%o0, %o0) {scale = 1.0 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x4x?x64xbf16>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %t = arith.constant true
    attn.yield %t : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return
}

// -----

func.func @f(%q: tensor<?x4x?x64xbf16>, %k: tensor<?x3x?x64xbf16>, %v: tensor<?x3x?x64xbf16>, %o0: i64) {
  // expected-error @+1 {{heads_q (4) must be a multiple of heads_kv (3)}}
  %o = attn.attention q(%q : tensor<?x4x?x64xbf16>) k(%k : tensor<?x3x?x64xbf16>) v(%v : tensor<?x3x?x64xbf16>) offsets(%o0, %o0) {scale = 1.0 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x4x?x64xbf16>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %t = arith.constant true
    attn.yield %t : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return
}

// -----

func.func @f(%q: tensor<?x4x?x64xbf16>, %k: tensor<?x2x?x64xbf16>, %v: tensor<?x1x?x64xbf16>, %o0: i64) {
  // expected-error @+1 {{k and v must have the same head count}}
  %o = attn.attention q(%q : tensor<?x4x?x64xbf16>) k(%k : tensor<?x2x?x64xbf16>) v(%v : tensor<?x1x?x64xbf16>) offsets(%o0, %o0) {scale = 1.0 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x4x?x64xbf16>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %t = arith.constant true
    attn.yield %t : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return
}

// -----

func.func @f(%q: tensor<?x4x?x64xbf16>, %k: tensor<?x2x?x32xbf16>, %v: tensor<?x2x?x64xbf16>, %o0: i64) {
  // expected-error @+1 {{q and k must have the same head_dim}}
  %o = attn.attention q(%q : tensor<?x4x?x64xbf16>) k(%k : tensor<?x2x?x32xbf16>) v(%v : tensor<?x2x?x64xbf16>) offsets(%o0, %o0) {scale = 1.0 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x4x?x64xbf16>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %t = arith.constant true
    attn.yield %t : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return
}

// -----

func.func @f(%q: tensor<2x4x?x64xbf16>, %k: tensor<3x2x?x64xbf16>, %v: tensor<3x2x?x64xbf16>, %o0: i64) {
  // expected-error @+1 {{q, k and v must have the same batch size}}
  %o = attn.attention q(%q : tensor<2x4x?x64xbf16>) k(%k : tensor<3x2x?x64xbf16>) v(%v : tensor<3x2x?x64xbf16>) offsets(%o0, %o0) {scale = 1.0 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x4x?x64xbf16>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %t = arith.constant true
    attn.yield %t : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return
}

// -----

func.func @f(%q: tensor<?x4x?x64xbf16>, %k: tensor<?x2x10x64xbf16>, %v: tensor<?x2x11x64xbf16>, %o0: i64) {
  // expected-error @+1 {{k and v must have the same sequence length}}
  %o = attn.attention q(%q : tensor<?x4x?x64xbf16>) k(%k : tensor<?x2x10x64xbf16>) v(%v : tensor<?x2x11x64xbf16>) offsets(%o0, %o0) {scale = 1.0 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x4x?x64xbf16>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %t = arith.constant true
    attn.yield %t : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return
}

// -----

func.func @f(%q: tensor<?x4x?x64xbf16>, %k: tensor<?x2x?x64xbf16>, %v: tensor<?x2x?x64xbf16>, %o0: i64) {
  // expected-error @+1 {{result o must be [B, 4, Sq, 64]}}
  %o = attn.attention q(%q : tensor<?x4x?x64xbf16>) k(%k : tensor<?x2x?x64xbf16>) v(%v : tensor<?x2x?x64xbf16>) offsets(%o0, %o0) {scale = 1.0 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x4x?x32xbf16>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %t = arith.constant true
    attn.yield %t : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return
}

// -----

func.func @f(%q: tensor<?x4x?x64xbf16>, %k: tensor<?x2x?x64xbf16>, %v: tensor<?x2x?x64xbf16>, %o0: i64) {
  // expected-error @+1 {{result lse must be an f32 tensor [B, 4, Sq]}}
  %o:2 = attn.attention q(%q : tensor<?x4x?x64xbf16>) k(%k : tensor<?x2x?x64xbf16>) v(%v : tensor<?x2x?x64xbf16>) offsets(%o0, %o0) {scale = 1.0 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x4x?x64xbf16>, tensor<?x4x?xf16>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %t = arith.constant true
    attn.yield %t : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return
}

// -----

func.func @f(%q: tensor<?x4x?x64xbf16>, %k: tensor<?x2x?x64xbf16>, %v: tensor<?x2x?x64xbf16>, %o0: i64) {
  // expected-error @+1 {{lse is only defined for the softmax normalizer, not sigmoid}}
  %o:2 = attn.attention q(%q : tensor<?x4x?x64xbf16>) k(%k : tensor<?x2x?x64xbf16>) v(%v : tensor<?x2x?x64xbf16>) offsets(%o0, %o0) {scale = 1.0 : f64, normalizer = #attn.normalizer<sigmoid>, align = #attn.align<bottom_right>} -> tensor<?x4x?x64xbf16>, tensor<?x4x?xf32>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %t = arith.constant true
    attn.yield %t : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return
}

// -----

func.func @f(%q: tensor<?x4x?x64xbf16>, %k: tensor<?x2x?x64xbf16>, %v: tensor<?x2x?x64xbf16>, %o0: i64) {
  // expected-error @+1 {{sigmoid_beta is only meaningful with the sigmoid normalizer}}
  %o = attn.attention q(%q : tensor<?x4x?x64xbf16>) k(%k : tensor<?x2x?x64xbf16>) v(%v : tensor<?x2x?x64xbf16>) offsets(%o0, %o0) {scale = 1.0 : f64, sigmoid_beta = 1.0 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x4x?x64xbf16>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %t = arith.constant true
    attn.yield %t : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return
}

// -----

func.func @f(%q: tensor<?x4x?x64xbf16>, %k: tensor<?x2x?x64xbf16>, %v: tensor<?x2x?x64xbf16>, %o0: i64) {
  // expected-error @+1 {{scale must be finite}}
  %o = attn.attention q(%q : tensor<?x4x?x64xbf16>) k(%k : tensor<?x2x?x64xbf16>) v(%v : tensor<?x2x?x64xbf16>) offsets(%o0, %o0) {scale = 0x7FF0000000000000 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x4x?x64xbf16>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %t = arith.constant true
    attn.yield %t : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return
}

// -----

func.func @f(%q: tensor<?x4x?x64xbf16>, %k: tensor<?x2x?x64xbf16>, %v: tensor<?x2x?x64xbf16>, %o0: i64, %d: tensor<?x?xi32>) {
  // expected-error @+1 {{input_names has 0 names for 1 inputs}}
  %o = attn.attention q(%q : tensor<?x4x?x64xbf16>) k(%k : tensor<?x2x?x64xbf16>) v(%v : tensor<?x2x?x64xbf16>) inputs(%d : tensor<?x?xi32>) offsets(%o0, %o0) {scale = 1.0 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x4x?x64xbf16>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %t = arith.constant true
    attn.yield %t : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return
}

// -----

func.func @f(%q: tensor<?x4x?x64xbf16>, %k: tensor<?x2x?x64xbf16>, %v: tensor<?x2x?x64xbf16>, %o0: i64, %d: tensor<?x?xi32>) {
  // expected-error @+1 {{input names must be unique and non-empty, got 'x'}}
  %o = attn.attention q(%q : tensor<?x4x?x64xbf16>) k(%k : tensor<?x2x?x64xbf16>) v(%v : tensor<?x2x?x64xbf16>) inputs(%d, %d : tensor<?x?xi32>, tensor<?x?xi32>) offsets(%o0, %o0) {scale = 1.0 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>, input_names = ["x", "x"]} -> tensor<?x4x?x64xbf16>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %t = arith.constant true
    attn.yield %t : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return
}

// -----

func.func @f(%q: tensor<?x4x?x64xbf16>, %k: tensor<?x2x?x64xbf16>, %v: tensor<?x2x?x64xbf16>, %o0: i64, %d: tensor<?x4xi32>) {
  // expected-error @+1 {{input_dims[0][1] = 3 does not match the type}}
  %o = attn.attention q(%q : tensor<?x4x?x64xbf16>) k(%k : tensor<?x2x?x64xbf16>) v(%v : tensor<?x2x?x64xbf16>) inputs(%d : tensor<?x4xi32>) offsets(%o0, %o0) {scale = 1.0 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>, input_names = ["d"], input_dims = [["B", 3]]} -> tensor<?x4x?x64xbf16>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %t = arith.constant true
    attn.yield %t : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return
}

// -----

func.func @f(%q: tensor<?x4x?x64xbf16>, %k: tensor<?x2x?x64xbf16>, %v: tensor<?x2x?x64xbf16>, %o0: i64) {
  // expected-error @+1 {{region 'mask' must take 8 arguments, got 2}}
  %o = attn.attention q(%q : tensor<?x4x?x64xbf16>) k(%k : tensor<?x2x?x64xbf16>) v(%v : tensor<?x2x?x64xbf16>) offsets(%o0, %o0) {scale = 1.0 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x4x?x64xbf16>
  mask {
  ^bb0(%qp: i64, %kp: i64):
    %t = arith.constant true
    attn.yield %t : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return
}

// -----

func.func @f(%q: tensor<?x4x?x64xbf16>, %k: tensor<?x2x?x64xbf16>, %v: tensor<?x2x?x64xbf16>, %o0: i64) {
  // expected-error @+1 {{region 'score' argument #0 must be 'f32', got 'i64'}}
  %o = attn.attention q(%q : tensor<?x4x?x64xbf16>) k(%k : tensor<?x2x?x64xbf16>) v(%v : tensor<?x2x?x64xbf16>) offsets(%o0, %o0) {scale = 1.0 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x4x?x64xbf16>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %t = arith.constant true
    attn.yield %t : i1
  } score {
  ^bb0(%s: i64, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %f = arith.constant 0.0 : f32
    attn.yield %f : f32
  }
  return
}

// -----

func.func @f(%q: tensor<?x4x?x64xbf16>, %k: tensor<?x2x?x64xbf16>, %o0: i64) {
  %o = attn.attention q(%q : tensor<?x4x?x64xbf16>) k(%k : tensor<?x2x?x64xbf16>) v(%k : tensor<?x2x?x64xbf16>) offsets(%o0, %o0) {scale = 1.0 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x4x?x64xbf16>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    // expected-error @+1 {{in region 'mask' must yield one 'i1'}}
    attn.yield %qp : i64
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return
}

// -----

func.func @f(%q: tensor<?x4x?x64xbf16>, %k: tensor<?x2x?x64xbf16>, %d: tensor<?x?xi32>, %o0: i64) {
  %o = attn.attention q(%q : tensor<?x4x?x64xbf16>) k(%k : tensor<?x2x?x64xbf16>) v(%k : tensor<?x2x?x64xbf16>) offsets(%o0, %o0) {scale = 1.0 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x4x?x64xbf16>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    // expected-error @+1 {{reads a tensor that is not an extra input of the enclosing attn.attention}}
    %x, %ok = attn.lookup %d[%b, %qi] : tensor<?x?xi32> -> i64
    attn.yield %ok : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    attn.yield %s : f32
  }
  return
}

// -----

func.func @f(%q: tensor<?x4x?x64xbf16>, %k: tensor<?x2x?x64xbf16>, %o0: i64) {
  %o = attn.attention q(%q : tensor<?x4x?x64xbf16>) k(%k : tensor<?x2x?x64xbf16>) v(%k : tensor<?x2x?x64xbf16>) offsets(%o0, %o0) {scale = 1.0 : f64, normalizer = #attn.normalizer<softmax>, align = #attn.align<bottom_right>} -> tensor<?x4x?x64xbf16>
  mask {
  ^bb0(%b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    %t = arith.constant true
    attn.yield %t : i1
  } score {
  ^bb0(%s: f32, %b: i64, %h: i64, %qi: i64, %ki: i64, %qp: i64, %kp: i64, %sq: i64, %sk: i64):
    // expected-error @+1 {{slopes must have one value per query head (4), got 2}}
    %a = attn.alibi %s, %h, %qp, %kp {slopes = array<f64: 0.5, 0.25>}
    attn.yield %a : f32
  }
  return
}

// -----

func.func @f(%a: i64, %b: i64) {
  // expected-error @+1 {{left must be >= -1 (-1 = unbounded), got -2}}
  %m = attn.sliding_window %a, %b {left = -2, right = 0}
  return
}

// -----

func.func @f(%a: i64, %b: i64) {
  // expected-error @+1 {{dilation must be > 0, got 0}}
  %m = attn.dilated_window %a, %b {left = 4, right = 0, dilation = 0}
  return
}

// -----

func.func @f(%a: i64, %b: i64) {
  // expected-error @+1 {{count must be >= 0, got -1}}
  %m = attn.sinks %a {count = -1}
  return
}

// -----

func.func @f(%a: i64, %b: i64) {
  // expected-error @+1 {{needs exactly one of 'count' and 'tokens'}}
  %m = attn.global_tokens %a, %b
  return
}

// -----

func.func @f(%a: i64, %b: i64) {
  // expected-error @+1 {{stride must be > 0, got 0}}
  %m = attn.strided %a, %b {stride = 0}
  return
}

// -----

func.func @f(%a: i64, %b: i64) {
  // expected-error @+1 {{summary must be in [0, stride = 4], got 5}}
  %m = attn.fixed %a, %b {stride = 4, summary = 5}
  return
}

// -----

func.func @f(%a: i64, %b: i64) {
  // expected-error @+1 {{head_offset must be in [0, dilation = 2), got 3}}
  %m = attn.dilated_segments %a, %a, %b {segment = 8, dilation = 2, head_offset = 3}
  return
}

// -----

func.func @f(%a: i64, %b: i64) {
  // expected-error @+1 {{group must be > 0, got 0}}
  %m = attn.shifted_groups %a, %a, %b {group = 0, shifted_heads = array<i64>}
  return
}

// -----

func.func @f(%s: f32, %a: i64) {
  // expected-error @+1 {{cap must be a finite number > 0, got 0}}
  %m = attn.softcap %s {cap = 0.0 : f64}
  return
}

// -----

func.func @f(%s: f32, %a: i64) {
  // expected-error @+1 {{base must be a finite number > 1, got 1}}
  %m = attn.log_length_scale %s, %a {base = 1.0 : f64}
  return
}

// -----

func.func @f(%s: f32, %a: i64) {
  // expected-error @+1 {{r1 and r2 must have the same length}}
  %m = attn.kerple_log %s, %a, %a, %a {r1 = array<f64: 1.0>, r2 = array<f64: 1.0, 2.0>}
  return
}

// -----

func.func @f(%s: f32, %a: i64, %t: tensor<16x4xf32>) {
  // expected-error @+1 {{table must have num_buckets (32) rows, got 16}}
  %m = attn.t5_bias %s, %a, %a, %a table(%t : tensor<16x4xf32>) {num_buckets = 32, max_distance = 128, bidirectional = true}
  return
}

// -----

func.func @f(%s: f32, %a: i64, %t: tensor<32x4xi32>) {
  // expected-error @+1 {{table must be an f32 tensor of rank 2}}
  %m = attn.t5_bias %s, %a, %a, %a table(%t : tensor<32x4xi32>) {num_buckets = 32, max_distance = 128, bidirectional = true}
  return
}

// -----

func.func @f(%s: f32, %a: i64, %w: tensor<8xf32>) {
  // expected-error @+1 {{w2 must be an f32 tensor of rank 2}}
  %m = attn.fire %s, %a, %a, %a weights(%w, %w, %w, %w : tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) {c = 1.0 : f64, L = 1.0 : f64}
  return
}

// -----

func.func @f(%s: f32, %a: i64, %t: tensor<?x?xi32>) {
  // expected-error @+1 {{needs 2 indices for 'tensor<?x?xi32>', got 1}}
  %v, %ok = attn.lookup %t[%a] : tensor<?x?xi32> -> i64
  return
}

// -----

func.func @f(%s: f32, %a: i64, %t: tensor<?x?xi32>) {
  // expected-error @+1 {{an integer tensor yields i64}}
  %v, %ok = attn.lookup %t[%a, %a] : tensor<?x?xi32> -> f32
  return
}

// -----

func.func @f(%s: f32, %a: i64, %t: tensor<?x?xf16>) {
  // expected-error @+1 {{tensor elements must be i32, i64 or f32}}
  %v, %ok = attn.lookup %t[%a, %a] : tensor<?x?xf16> -> f32
  return
}

// -----

func.func @f(%s: f32, %a: i64, %t: tensor<?x?xi32>) {
  // expected-error @+1 {{needs one index per dimension but the last}}
  %v = attn.contains %a in %t[%a, %a] : tensor<?x?xi32>
  return
}

// -----

func.func @f(%s: f32, %a: i64, %t: tensor<?x?xf32>) {
  // expected-error @+1 {{tensor elements must be integers}}
  %v = attn.contains %a in %t[%a] : tensor<?x?xf32>
  return
}

// -----

func.func @f(%s: f32, %a: i64, %t: tensor<?x2x?x8xf32>) {
  // expected-error @+1 {{rotary_dim must be even and in [2, head_dim = 8], got 7}}
  %r = attn.rope %t offset(%a) {theta = 1.0e4 : f64, style = #attn.rope_style<half>, rotary_dim = 7 : i64, scaling = #attn.rope_scaling<none>} : tensor<?x2x?x8xf32>
  return
}

// -----

func.func @f(%s: f32, %a: i64, %t: tensor<?x2x?x8xf32>) {
  // expected-error @+1 {{theta must be a finite number > 1, got 5.000000e-01}}
  %r = attn.rope %t offset(%a) {theta = 0.5 : f64, style = #attn.rope_style<half>, rotary_dim = 8 : i64, scaling = #attn.rope_scaling<none>} : tensor<?x2x?x8xf32>
  return
}

// -----

func.func @f(%s: f32, %a: i64, %t: tensor<?x2x?x8xf32>) {
  // expected-error @+1 {{yarn scaling needs original_max_position > 0}}
  %r = attn.rope %t offset(%a) {theta = 1.0e4 : f64, style = #attn.rope_style<half>, rotary_dim = 8 : i64, scaling = #attn.rope_scaling<yarn>, factor = 4.0 : f64} : tensor<?x2x?x8xf32>
  return
}
