"""What the GPU checks' two halves share: the case list, the layout of a prepared
directory, and a portable generator of q, k, v.

The checks run where there is a GPU but no compiler (the GPU machines have no LLVM):
`prepare.py` compiles the bundles and computes the float64 reference answers on a
machine with attnc; `check.py` runs the bundles on the GPU and compares. Only the
small things travel (bundles, extra inputs, reference outputs); q, k and v are made
again on the GPU machine by `qkv()`, which uses integer arithmetic and exactly
rounded float operations only, so every numpy version produces the same bits (a
checksum in the case file proves it).

Layout of a prepared directory:
  checks.json                 {"format": "attune-gpu-checks/1", "cases": [...]}
  <name>/bundle/              the bundle (attnc compile)
  <name>/case<i>.npz          extra inputs ("input:<name>"), reference "o" (float16:
                              its rounding is far inside the 2e-2 tolerance) and "lse"
"""
import hashlib
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from attune_inputs import round_to  # noqa: E402

FORMAT = "attune-gpu-checks/1"

# (batch, seq_q, seq_kv, offsets): odd lengths, seq_q != seq_kv both ways (Sq > Skv
# gives fully masked rows under bottom-right causal masks), and explicit offsets.
CASES = [
    (1, 1, 45, None),
    (1, 17, 17, None),
    (2, 127, 64, None),
    (1, 100, 300, None),
    (1, 33, 70, (37, -5)),
]
# Long rows for the patterns whose block structure matters most at length.
LONG_CASE = (1, 1000, 1000, None)
LONG = {"causal", "mistral-swa", "streaming-llm", "document", "gemma2-local", "mqa-decode"}
# Specs checked in the other 16-bit type as well (a copy of the spec with its dtype
# swapped): enough to cover both mma.sync flavours on every kind of pattern.
OTHER_DTYPE = {"causal", "dense", "document", "alibi", "softcap", "sliding-window",
               "rope-half", "gemma2-local", "mqa-decode"}

TOLERANCE = 2e-2  # of max |o_ref|, for bf16/fp16 storage with f32 accumulation
LSE_TOLERANCE = 1e-2


def _splitmix64(x):
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def qkv_tensor(seed, stream, shape, dtype):
    """A tensor of roughly unit variance, exactly representable in `dtype`: the sum of
    two 24-bit uniforms (a triangular distribution on [-sqrt 6, sqrt 6])."""
    n = int(np.prod(shape))
    idx = np.arange(n, dtype=np.uint64) + np.uint64((seed * 3 + stream) << 40)
    bits = _splitmix64(idx)
    hi = (bits >> np.uint64(40)).astype(np.float64)
    lo = (bits & np.uint64(0xFFFFFF)).astype(np.float64)
    x = ((hi + lo) / float(1 << 24) - 1.0) * 2.449489742783178
    return round_to(x.astype(np.float32).reshape(shape), dtype)


def qkv(seed, spec, batch, seq_q, seq_kv, dtype):
    hq = spec["heads_q"]
    hkv = spec.get("heads_kv", hq)
    d = spec["head_dim"]
    dv = spec.get("head_dim_v", d)
    return (qkv_tensor(seed, 0, (batch, hq, seq_q, d), dtype),
            qkv_tensor(seed, 1, (batch, hkv, seq_kv, d), dtype),
            qkv_tensor(seed, 2, (batch, hkv, seq_kv, dv), dtype))


def checksum(*arrays):
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a, dtype=np.float32).tobytes())
    return h.hexdigest()
