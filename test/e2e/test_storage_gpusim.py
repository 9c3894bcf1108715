"""Ragged and paged storage and per-sequence lengths on the NVIDIA kernels, run by the
functional SIMT simulator (`attnc run --backend gpu-sim` with --cu-seqlens-q,
--cu-seqlens-kv, --page-table, --kv-lens, --q-lens, --layout).

The oracle is test_storage.py's: each sequence gathered in numpy into dense tensors and
run through the float64 reference as a call of its own lengths, on the same 16-bit
values the kernel reads. Every example spec: a ragged batch with q lengths 1, 17, 127
and 300 mixed (a sequence with fewer keys than queries, one with none), the same batch
over a paged cache with shuffled page ids and page size 1, 16 or 64, and a right-padded
bshd batch with q_lens / kv_lens, each on one of the kernel's forms (mma.sync tiles,
GQA packing, wgmma, split-KV). Then decoding and chunked prefill (1-16 queries against
up to 2k cached keys) with split-KV and GQA packing, strided ragged buffers, and a page
table whose unused entries hold garbage. bf16/fp16 tolerance 2e-2 of each sequence's
output scale; NaN never passes; the simulator fails any read outside a buffer.
"""
import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from attune_inputs import load_spec, round_to  # noqa: E402
from test_storage import (EXAMPLES, FLAGS, ROOT, Batch, attnc_run, lengths,  # noqa: E402
                          with_storage)

TOL = 2e-2


def sim_spec(spec, tmp, name, storage):
    """The spec in its 16-bit dtype (bf16 for an f32 spec) with `storage`."""
    s = dict(spec)
    if s.get("dtype", "bf16") == "f32":
        s["dtype"] = "bf16"
    if storage:
        s["storage"] = storage
    path = os.path.join(tmp, f"sim-{name}.json")
    with open(path, "w") as f:
        json.dump(s, f)
    return path, s.get("dtype", "bf16")


def rounded_batch(spec, lq, lkv, rng, dtype):
    batch = Batch(spec, lq, lkv, rng)
    batch.q, batch.k, batch.v = (round_to(x, dtype) for x in (batch.q, batch.k, batch.v))
    return batch


def kernel_forms(spec, rng):
    """Three of the kernel's forms, one per storage case: the default mma.sync tile,
    and two of GQA packing (when the spec has groups), wgmma, split-KV, a small tile."""
    group = spec["heads_q"] // spec.get("heads_kv", spec["heads_q"])
    forms = [["--num-splits", "3"], ["--wgmma", "--block-m", "64", "--block-n", "64"],
             ["--block-m", "16", "--block-n", "32"]]
    if group > 1 and 64 % group == 0:
        forms.append(["--pack-gqa"])
    picked = [forms[i] for i in rng.choice(len(forms), 2, replace=False)]
    return [["--block-m", "64", "--block-n", "64"]] + picked


@pytest.mark.parametrize("path", EXAMPLES, ids=[os.path.basename(p)[:-5] for p in EXAMPLES])
def test_storage_on_the_simulator(path, tmp_path):
    seed = int.from_bytes(os.urandom(4), "little")
    rng = np.random.default_rng(seed)
    spec = load_spec(path)
    name = os.path.basename(path)[:-5]
    tmp = str(tmp_path)
    lq, lkv = lengths(rng)
    dense, dtype = sim_spec(spec, tmp, "dense", None)
    batch = rounded_batch(spec, lq, lkv, rng, dtype)
    offsets = []
    if rng.random() < 0.3:
        offsets = ["--q-offset", str(int(rng.integers(-20, 60))),
                   "--kv-offset", str(int(rng.integers(-10, 10)))]
    batch.oracle(with_storage(spec, tmp, "ref", None), tmp, offsets)
    forms = kernel_forms(spec, rng)
    what = f"{name} seed={seed} lq={lq} lkv={lkv} {offsets}"

    q, cu_q = batch.ragged_q()
    k, v, cu_kv = batch.ragged_kv()
    rr, _ = sim_spec(spec, tmp, "rr", {"q": "ragged", "kv": "ragged"})
    tensors = {"q": q, "k": k, "v": v, "cu_q": cu_q, "cu_kv": cu_kv, **batch.inputs}
    o, lse, r = attnc_run(rr, "gpu-sim", tmp, "rr", tensors, FLAGS, batch.inputs,
                          offsets + forms[0])
    assert o is not None, f"{what}: exit {r.returncode}: {r.stderr}"
    batch.check(o, lse, True, f"{what} ragged/ragged {forms[0]}", TOL)

    ps = int(rng.choice([1, 16, 64]))
    kc, vc, table, kv_lens = batch.paged_kv(ps, rng)
    rp, _ = sim_spec(spec, tmp, "rp", {"q": "ragged", "kv": "paged"})
    tensors = {"q": q, "k": round_to(kc, dtype), "v": round_to(vc, dtype), "cu_q": cu_q,
               "page_table": table, "kv_lens": kv_lens, **batch.inputs}
    o, lse, r = attnc_run(rp, "gpu-sim", tmp, "rp", tensors, FLAGS, batch.inputs,
                          offsets + forms[1])
    assert o is not None, f"{what}: exit {r.returncode}: {r.stderr}"
    batch.check(o, lse, True, f"{what} ragged/paged page_size={ps} {forms[1]}", TOL)

    # Right-padded bshd buffers: rows past q_lens[b] come back 0 (lse -inf).
    tensors = {"q": batch.q.transpose(0, 2, 1, 3).copy(), "k": batch.k.transpose(0, 2, 1, 3).copy(),
               "v": batch.v.transpose(0, 2, 1, 3).copy(), "q_lens": np.array(lq, np.int32),
               "kv_lens": np.array(lkv, np.int32), **batch.inputs}
    o, lse, r = attnc_run(dense, "gpu-sim", tmp, "pl", tensors, FLAGS, batch.inputs,
                          offsets + ["--layout", "bshd"] + forms[2])
    assert o is not None, f"{what}: exit {r.returncode}: {r.stderr}"
    batch.check(o.transpose(0, 2, 1, 3), lse, False, f"{what} padded+lens bshd {forms[2]}", TOL)


DECODE = ["causal", "mistral-swa", "alibi", "mqa-decode", "streaming-llm", "softcap", "document"]


@pytest.mark.parametrize("name", [n for n in DECODE if os.path.exists(
    os.path.join(ROOT, "specs", "examples", f"{n}.json"))])
def test_decode_on_the_simulator(name, tmp_path):
    """1 to 16 queries per sequence against up to 2k cached keys in 16-key pages, as
    split-KV (4 splits) and, for GQA specs, with the query heads of a kv head packed
    into one CTA; the page table's unused entries hold garbage (vLLM leaves them so)."""
    seed = int.from_bytes(os.urandom(4), "little")
    rng = np.random.default_rng(seed)
    spec = load_spec(os.path.join(ROOT, "specs", "examples", f"{name}.json"))
    tmp = str(tmp_path)
    lq = [1, 1, 16, 5, 1, 9]
    lkv = [2048, 1, 700, 1500, 64, 333]
    path, dtype = sim_spec(spec, tmp, "rp", {"q": "ragged", "kv": "paged"})
    batch = rounded_batch(spec, lq, lkv, rng, dtype)
    batch.oracle(with_storage(spec, tmp, "ref", None), tmp, [])
    q, cu_q = batch.ragged_q()
    kc, vc, table, kv_lens = batch.paged_kv(16, rng)
    used = [-(-n // 16) for n in lkv]
    for b in range(len(lq)):
        table[b, used[b]:] = rng.integers(-(1 << 30), 1 << 30, table.shape[1] - used[b])
    tensors = {"q": q, "k": round_to(kc, dtype), "v": round_to(vc, dtype), "cu_q": cu_q,
               "page_table": table, "kv_lens": kv_lens, **batch.inputs}
    group = spec["heads_q"] // spec.get("heads_kv", spec["heads_q"])
    runs = [["--num-splits", "4"]]
    if group > 1:
        runs.append(["--pack-gqa", "--num-splits", "2"])
    for extra in runs:
        o, lse, r = attnc_run(path, "gpu-sim", tmp, "rp", tensors, FLAGS, batch.inputs, extra)
        assert o is not None, r.stderr
        batch.check(o, lse, True, f"{name} seed={seed} decode {extra}", TOL)


def test_strided_ragged_buffers(tmp_path):
    """Ragged q and kv read through their strides (gpu-sim --pad puts gaps after every
    row and head; a kernel that wrote one fails), padded+lens buffers too."""
    seed = int.from_bytes(os.urandom(4), "little")
    rng = np.random.default_rng(seed)
    spec = load_spec(os.path.join(ROOT, "specs", "examples", "causal.json"))
    tmp = str(tmp_path)
    lq, lkv = [5, 64, 1], [70, 64, 33]
    path, dtype = sim_spec(spec, tmp, "rr", {"q": "ragged", "kv": "ragged"})
    batch = rounded_batch(spec, lq, lkv, rng, dtype)
    batch.oracle(with_storage(spec, tmp, "ref", None), tmp, [])
    q, cu_q = batch.ragged_q()
    k, v, cu_kv = batch.ragged_kv()
    tensors = {"q": q, "k": k, "v": v, "cu_q": cu_q, "cu_kv": cu_kv}
    for extra in (["--pad", "8"], ["--pad", "24", "--pack-gqa"]):
        o, lse, r = attnc_run(path, "gpu-sim", tmp, "rr", tensors, FLAGS, {}, extra)
        assert o is not None, f"seed={seed} {extra}: {r.stderr}"
        batch.check(o, lse, True, f"seed={seed} strided ragged {extra}", TOL)
    dense, _ = sim_spec(spec, tmp, "dense", None)
    tensors = {"q": batch.q, "k": batch.k, "v": batch.v, "q_lens": np.array(lq, np.int32),
               "kv_lens": np.array(lkv, np.int32)}
    o, lse, r = attnc_run(dense, "gpu-sim", tmp, "pl", tensors, FLAGS, {}, ["--pad", "8"])
    assert o is not None, f"seed={seed}: {r.stderr}"
    batch.check(o, lse, False, f"seed={seed} strided padded+lens", TOL)


def test_bad_sequence_arguments_on_the_simulator(tmp_path):
    """The runtime's checks of the sequence arguments name them on the GPU path too."""
    tmp = str(tmp_path)
    spec = {"heads_q": 2, "head_dim": 16, "dtype": "bf16", "mask": {"causal": {}}}
    rng = np.random.default_rng(3)
    rp, _ = sim_spec(spec, tmp, "rp", {"q": "ragged", "kv": "paged"})
    q = rng.standard_normal((10, 2, 16)).astype(np.float32)
    kc = rng.standard_normal((4, 8, 2, 16)).astype(np.float32)
    i32 = lambda *x: np.array(x, dtype=np.int32)  # noqa: E731
    paged = {"q": q, "k": kc, "v": kc, "cu_q": i32(0, 4, 10), "page_table": i32([0, 1], [2, -1]),
             "kv_lens": i32(16, 8)}
    for change, message in [({"kv_lens": i32(17, 8)}, "kv_lens[0] = 17 is outside [0, 16]"),
                            ({"cu_q": i32(0, 4, 9)}, "cu_seqlens_q[2] = 9 must be the buffer's length 10")]:
        o, _, r = attnc_run(rp, "gpu-sim", tmp, "bad", {**paged, **change}, FLAGS, {})
        assert o is None and message in r.stderr, r.stderr
    # Page ids are device memory: checked with --validate, naming the entry and value.
    bad = {**paged, "page_table": i32([0, 1], [7, -1])}
    o, _, r = attnc_run(rp, "gpu-sim", tmp, "bad", bad, FLAGS, {}, ["--validate"])
    assert o is None and "page_table[1, 0] = 7 is not a page of the cache" in r.stderr, r.stderr
    o, _, r = attnc_run(rp, "gpu-sim", tmp, "ok", paged, FLAGS, {}, ["--validate"])
    assert o is not None, r.stderr


@pytest.mark.parametrize("extra", [[], ["--num-splits", "2"], ["--wgmma"]])
def test_pages_outside_the_cache_are_masked(tmp_path, extra):
    """Without --validate, the host does not read the page table (on a GPU it is device
    memory): a page id outside the cache masks that page's keys and is never read (the
    simulator fails any read outside a buffer). Full attention, so that the oracle is
    attention over the keys of the valid pages only; a sequence with no valid page gets
    o = 0 and lse = -inf."""
    tmp = str(tmp_path)
    rng = np.random.default_rng(int.from_bytes(os.urandom(4), "little"))
    spec = {"heads_q": 2, "head_dim": 32, "dtype": "bf16", "outputs": ["o", "lse"]}
    rp, dtype = sim_spec(spec, tmp, "rp", {"q": "ragged", "kv": "paged"})
    i32 = lambda *x: np.array(x, dtype=np.int32)  # noqa: E731
    q = round_to(rng.standard_normal((10, 2, 32)).astype(np.float32), dtype)
    kc = round_to(rng.standard_normal((4, 8, 2, 32)).astype(np.float32), dtype)
    vc = round_to(rng.standard_normal((4, 8, 2, 32)).astype(np.float32), dtype)
    table = i32([3, 1 << 20, 0], [-5, 2, 2], [1, -1, 4])
    tensors = {"q": q, "k": kc, "v": vc, "cu_q": i32(0, 4, 7, 10), "page_table": table,
               "kv_lens": i32(20, 8, 16)}
    o, lse, r = attnc_run(rp, "gpu-sim", tmp, "masked", tensors, FLAGS, {}, extra)
    assert o is not None, r.stderr
    assert not np.isnan(o).any()
    # Sequence 0: pages 3 and 0 (keys 0-7, 16-19); 1: none; 2: page 1 only.
    valid = {0: np.concatenate([kc[3], kc[0][:4]]), 2: kc[1]}
    values = {0: np.concatenate([vc[3], vc[0][:4]]), 2: vc[1]}
    rows = {0: range(0, 4), 1: range(4, 7), 2: range(7, 10)}
    for b, rr in rows.items():
        if b not in valid:
            assert (o[list(rr)] == 0).all() and np.isneginf(lse[list(rr)]).all()
            continue
        qs = q[list(rr)].astype(np.float64)               # [n, H, D]
        ks, vs = valid[b].astype(np.float64), values[b].astype(np.float64)  # [m, H, D]
        s = np.einsum("nhd,mhd->hnm", qs, ks) / np.sqrt(32.0)
        m = s.max(-1, keepdims=True)
        p = np.exp(s - m)
        ref = np.einsum("hnm,mhd->nhd", p / p.sum(-1, keepdims=True), vs)
        ref_lse = (m[..., 0] + np.log(p.sum(-1))).T
        assert np.abs(o[list(rr)] - ref).max() <= TOL * np.abs(ref).max(), (b, extra)
        assert np.abs(lse[list(rr)] - ref_lse).max() <= 1e-2 * max(1.0, np.abs(ref_lse).max())


def test_max_seqlen_bounds(tmp_path):
    """--max-seqlen-q / --max-seqlen-kv (flash_attn_varlen's max_seqlen): with both, a
    GPU call reads nothing of the sequence arrays (no synchronisation). The same
    answers bitwise as when the runtime reads the lengths, a bound above the real
    maximum included; kv_lens beyond the table's pages are clamped by the kernel (not
    read by the host, so not refused); --validate reads and checks everything, the
    bounds included."""
    seed = int.from_bytes(os.urandom(4), "little")
    rng = np.random.default_rng(seed)
    spec = load_spec(os.path.join(ROOT, "specs", "examples", "mistral-swa.json"))
    tmp = str(tmp_path)
    lq, lkv = [1, 17, 4], [300, 40, 129]
    path, dtype = sim_spec(spec, tmp, "rp", {"q": "ragged", "kv": "paged"})
    batch = rounded_batch(spec, lq, lkv, rng, dtype)
    q, cu_q = batch.ragged_q()
    kc, vc, table, kv_lens = batch.paged_kv(16, rng)
    tensors = {"q": q, "k": round_to(kc, dtype), "v": round_to(vc, dtype), "cu_q": cu_q,
               "page_table": table, "kv_lens": kv_lens}
    o1, l1, r = attnc_run(path, "gpu-sim", tmp, "read", tensors, FLAGS, {})
    assert o1 is not None, r.stderr
    for bounds in (["--max-seqlen-q", "17", "--max-seqlen-kv", "300"],
                   ["--max-seqlen-q", "60", "--max-seqlen-kv", "1000"]):
        o2, l2, r = attnc_run(path, "gpu-sim", tmp, "bound", tensors, FLAGS, {}, bounds)
        assert o2 is not None, r.stderr
        assert np.array_equal(o1, o2) and np.array_equal(l1, l2), f"seed={seed} {bounds}"
    # Sequence 2's table row holds its pages and -1 after them: kv_lens far beyond are
    # clamped to the row's pages by the kernel, whose -1 entries mask the rest.
    width = table.shape[1]
    full = {**tensors, "page_table": np.where(table < 0, 10**6, table).astype(np.int32)}
    clamped = np.array([300, 40, width * 16], np.int32)
    o3, _, r = attnc_run(path, "gpu-sim", tmp, "clamped", {**full, "kv_lens": clamped}, FLAGS, {})
    assert o3 is not None, r.stderr
    huge = np.array([300, 40, 1 << 30], np.int32)
    o4, _, r = attnc_run(path, "gpu-sim", tmp, "huge", {**full, "kv_lens": huge}, FLAGS, {},
                         ["--max-seqlen-q", "17", "--max-seqlen-kv", str(width * 16)])
    assert o4 is not None, r.stderr
    assert np.array_equal(o3, o4), f"seed={seed}"
    for bounds, message in [(["--max-seqlen-q", "16"], "max_seqlen_q = 16 is less than sequence 1's q length 17"),
                            (["--max-seqlen-kv", "299"], "max_seqlen_kv = 299 is less than sequence 0's kv length 300")]:
        o, _, r = attnc_run(path, "gpu-sim", tmp, "bad", tensors, FLAGS, {}, bounds + ["--validate"])
        assert o is None and message in r.stderr, r.stderr
        # The host back ends read the lengths, so they check the bounds too.
        o, _, r = attnc_run(with_storage(spec, tmp, "cpu-rp", {"q": "ragged", "kv": "paged"}), "cpu",
                            tmp, "bad", tensors, FLAGS, {}, bounds)
        assert o is None and message in r.stderr, r.stderr
