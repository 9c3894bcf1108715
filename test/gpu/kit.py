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
  <name>.<q>-<kv>/...         a storage case (STORAGE): the same, o and lse in q's
                              storage shape, and for a paged cache its "page_table"

A storage case's entry also has "storage", "q_lens", "kv_lens", "page_size" and
"pages" (the cache's page count): `storage_forms()` builds its ragged / paged / padded
buffers from the logical q, k, v (`qkv()` at batch len(q_lens), the max lengths) and
the stored page table, with integer indexing only, so both halves agree exactly.
"""
import hashlib
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from attune_inputs import round_to  # noqa: E402

# /2: storage cases (an older check.py would run them as padded batches).
FORMAT = "attune-gpu-checks/2"

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

# Per-sequence storage on the NVIDIA kernels: (example, storage, q lengths, kv lengths,
# page size or None). Odd lengths mixed in one batch, a sequence with fewer keys than
# queries (fully masked rows under bottom-right causal masks), one with no keys,
# decoding against ~2k cached keys, shuffled page ids, and right-padded batches with
# q_lens / kv_lens (rows past q_lens[b]: o = 0, lse = -inf).
RAGGED = {"q": "ragged", "kv": "ragged"}
PAGED = {"q": "ragged", "kv": "paged"}
PADDED = {"q": "padded", "kv": "padded"}
STORAGE = [
    ("causal", RAGGED, [1, 17, 127, 300, 3], [9, 5, 150, 333, 0], None),
    ("mistral-swa", PAGED, [300, 1, 127, 17], [340, 40, 127, 5], 16),
    ("document", PAGED, [17, 127, 1, 300], [20, 160, 1, 310], 16),
    ("mqa-decode", PAGED, [1, 1, 16, 5, 1, 9], [2048, 1, 700, 1500, 64, 333], 64),
    ("alibi", PADDED, [127, 1, 300, 17], [150, 30, 300, 5], None),
    ("softcap", PADDED, [300, 17, 1, 127], [310, 5, 12, 127], None),
]


def storage_label(name, storage):
    """The case name of a storage case: causal[ragged/paged], alibi[padded+lens]."""
    if storage["q"] == "padded" and storage["kv"] == "padded":
        return f"{name}[padded+lens]"
    return f"{name}[{storage['q']}/{storage['kv']}]"


def storage_dir(name, storage):
    """Its folder in a prepared directory (plain characters): causal.ragged-paged."""
    return f"{name}.{storage['q']}-{storage['kv']}"


def page_table(rng, kv_lens, page_size, spare=3):
    """(table int32 [B, max pages + 1], pages): the pages of every sequence, shuffled
    over a cache of sum(used) + spare pages; -1 in the entries no sequence uses."""
    used = [-(-n // page_size) for n in kv_lens]
    pages = sum(used) + spare
    ids = rng.permutation(pages)
    table = np.full((len(kv_lens), max(used + [0]) + 1), -1, dtype=np.int32)
    nxt = 0
    for b, n in enumerate(used):
        table[b, :n] = ids[nxt:nxt + n]
        nxt += n
    return table, pages


def storage_forms(seed, storage, dtype, q, k, v, q_lens, kv_lens, table=None, page_size=None,
                  pages=None):
    """(q, k, v, seq) in `storage`'s form from the logical [B, H, S, D] tensors of max
    lengths; seq: the sequence arrays by their kernel argument names (cu_seqlens_q,
    cu_seqlens_kv, page_table, kv_lens, q_lens), int32. A paged cache's slots that no
    sequence uses hold qkv_tensor values (streams 3, 4), exactly representable."""
    batch = q.shape[0]
    lq = [int(n) for n in q_lens]
    lkv = [int(n) for n in kv_lens]
    seq = {}
    if storage["q"] == "ragged":
        seq["cu_seqlens_q"] = np.concatenate([[0], np.cumsum(lq)]).astype(np.int32)
        q = np.concatenate([q[b, :, :lq[b]].transpose(1, 0, 2) for b in range(batch)])
    else:
        seq["q_lens"] = np.array(lq, dtype=np.int32)
    if storage["kv"] == "ragged":
        seq["cu_seqlens_kv"] = np.concatenate([[0], np.cumsum(lkv)]).astype(np.int32)
        cat = lambda t: np.concatenate([t[b, :, :lkv[b]].transpose(1, 0, 2)  # noqa: E731
                                        for b in range(batch)])
        k, v = cat(k), cat(v)
    elif storage["kv"] == "paged":
        hkv = k.shape[1]
        kc = qkv_tensor(seed, 3, (pages, page_size, hkv, k.shape[3]), dtype)
        vc = qkv_tensor(seed, 4, (pages, page_size, hkv, v.shape[3]), dtype)
        for b in range(batch):
            for p in range(-(-lkv[b] // page_size)):
                page, lo = int(table[b, p]), p * page_size
                n = min(page_size, lkv[b] - lo)
                kc[page, :n] = k[b, :, lo:lo + n].transpose(1, 0, 2)
                vc[page, :n] = v[b, :, lo:lo + n].transpose(1, 0, 2)
        k, v = kc, vc
        seq["page_table"] = np.ascontiguousarray(table, dtype=np.int32)
        seq["kv_lens"] = np.array(lkv, dtype=np.int32)
    else:
        seq["kv_lens"] = np.array(lkv, dtype=np.int32)
    return q, k, v, seq


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
