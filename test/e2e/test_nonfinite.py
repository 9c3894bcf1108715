"""Non-finite inputs (issue 11, findings 7 and 8).

A masked pair contributes nothing, NaN included (PATTERNS.md): a NaN in v, k or q at a
key or query whose pairs with a row are all masked must leave that row finite, on every
back end. Rows that do see the NaN are NaN. The expected NaN pattern is derived here in
numpy from the mask's own definition, independently of Attune; the finite elements are
compared with the float64 reference.
"""
import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from attune_inputs import round_to, run_attnc  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ATTNC = os.environ.get("ATTNC", os.path.join(ROOT, "build", "tools", "attnc", "attnc"))

H, D = 2, 64


def doc_case(rng, s):
    doc = np.sort(rng.integers(0, 4, size=(1, s))).astype(np.int32)
    spec = {"inputs": {"doc": {"dtype": "i32", "shape": ["B", "Sq"]}}, "align": "top_left",
            "mask": {"document": {"q_ids": "doc"}}}
    allowed = doc[0][:, None] == doc[0][None, :]
    return spec, {"doc": doc}, np.broadcast_to(allowed, (H, s, s))


def keep_case(rng, s):
    keep = (rng.random((1, H, s)) < 0.5).astype(np.int32)
    spec = {"inputs": {"keep": {"dtype": "i32", "shape": ["B", "Hq", "Skv"]}},
            "mask": {"keep": {"kv_keep": "keep"}}}
    allowed = np.broadcast_to(keep[0][:, None, :] != 0, (H, s, s))
    return spec, {"keep": keep}, allowed


def block_list_case(rng, s):
    bm, bn = 32, 16
    nkb = -(-s // bn)
    blocks = rng.integers(-1, nkb, size=(1, H, -(-s // bm), 2)).astype(np.int32)
    spec = {"inputs": {"kv_blocks": {"dtype": "i32", "shape": ["B", "Hq", "Nb", "K"]}},
            "mask": {"block_list": {"block": [bm, bn], "kv_blocks": "kv_blocks"}}}
    allowed = np.zeros((H, s, s), bool)
    for h in range(H):
        for i in range(s):
            for e in blocks[0, h, i // bm]:
                if e >= 0:
                    allowed[h, i, e * bn:(e + 1) * bn] = True
    return spec, {"kv_blocks": blocks}, allowed


CASES = {"document": doc_case, "keep": keep_case, "block_list": block_list_case}


def expected_nan(allowed, q, k, v):
    """o[h, i, d] is NaN iff an allowed pair (i, j) has a NaN score (q_i or k_j) or
    v[j, d] NaN."""
    qn = np.isnan(q[0]).any(-1)  # [H, S]
    kn = np.isnan(k[0]).any(-1)
    vn = np.isnan(v[0])  # [H, S, D]
    score_nan = allowed & (qn[:, :, None] | kn[:, None, :])
    row_nan = score_nan.any(-1)
    elem = np.einsum("hij,hjd->hid", allowed.astype(np.int64), vn.astype(np.int64)) > 0
    return row_nan[:, :, None] | elem


# (backend, attnc run flags, dtype, head_dim). The GPU kernels are checked on every loop
# they have: mma.sync with one and two 64-bit row masks (block_n 64, 128), a V tile that
# does not divide over the threads (fp16, head dim 16, 32 x 32), wgmma pipelined
# (block_n 64) and not (block_n 128).
VARIANTS = {
    "reference": ("reference", [], "bf16", D),
    "cpu": ("cpu", [], "bf16", D),
    "gpu-sim": ("gpu-sim", [], "bf16", D),
    "gpu-sim-128x128": ("gpu-sim", ["--block-m", "128", "--block-n", "128"], "bf16", D),
    "gpu-sim-fp16-d16": ("gpu-sim", ["--block-m", "32", "--block-n", "32"], "fp16", 16),
    "gpu-sim-wgmma": ("gpu-sim", ["--wgmma", "--block-m", "128", "--block-n", "64"], "bf16", D),
    "gpu-sim-wgmma-bn128": ("gpu-sim", ["--wgmma", "--block-m", "64", "--block-n", "128"],
                            "bf16", D),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("case", sorted(CASES))
def test_masked_nan_contributes_nothing(case, variant, tmp_path):
    backend, flags, dtype, d = VARIANTS[variant]
    seed = int.from_bytes(os.urandom(4), "little")
    rng = np.random.default_rng(seed)
    s = 100
    extra, inputs, allowed = CASES[case](rng, s)
    spec = {"name": f"nan-{case}", "heads_q": H, "heads_kv": H, "head_dim": d,
            "dtype": dtype, "outputs": ["o", "lse"], **extra}
    path = str(tmp_path / "spec.json")
    with open(path, "w") as f:
        json.dump(spec, f)
    # NaN at a few keys and queries, redrawn until some rows see one and others do
    # not (a key every row sees poisons the whole head).
    for _ in range(50):
        q, k, v = (round_to(rng.standard_normal((1, H, s, d)), dtype) for _ in range(3))
        # The first NaN in v at a key some row masks (the case tiled kernels get wrong
        # by computing 0 * NaN).
        hs, js = np.nonzero(~allowed.all(1))
        pick = rng.integers(len(hs))
        probe = hs[pick]
        v[0, probe, js[pick], rng.integers(d)] = np.nan
        # The others in the other head, so that they cannot hide the probe's effect.
        for t, n in ((v, 2), (k, 1), (q, 1)):
            for _ in range(n):
                t[0, 1 - probe, rng.integers(s), rng.integers(d)] = np.nan
        want = expected_nan(allowed, q, k, v)
        if want.any() and (~want).any():
            break
    assert want.any() and (~want).any(), f"seed {seed}: degenerate case"
    arrays = {"q": q, "k": k, "v": v, **inputs}
    o, lse = run_attnc(ATTNC, path, backend, str(tmp_path), arrays, inputs, flags)
    got = np.isnan(o[0])
    assert (got == want).all(), (
        f"seed {seed}: {int((got & ~want).sum())} elements NaN that should not be, "
        f"{int((want & ~got).sum())} finite that should be NaN")
    if backend != "reference":
        o_ref, _ = run_attnc(ATTNC, path, "reference", str(tmp_path), arrays, inputs, [])
        tol = 1e-5 if backend == "cpu" else 2e-2
        err = np.abs(np.where(want, 0, o[0] - o_ref[0])).max()
        assert err <= tol * max(1.0, np.nanmax(np.abs(o_ref))), f"seed {seed}: error {err}"
    # A row with no allowed pair: o = 0, lse = -inf, never NaN.
    dead = ~allowed.any(-1)
    assert (o[0][dead] == 0).all() and np.isneginf(lse[0][dead]).all()


def test_nan_score_rows_are_nan_in_the_reference(tmp_path):
    """A row whose every allowed score is NaN (q_i NaN) is NaN, not 'fully masked'."""
    spec = {"name": "nan-q", "heads_q": 1, "heads_kv": 1, "head_dim": 16, "dtype": "bf16",
            "outputs": ["o", "lse"], "mask": {"causal": {}}}
    path = str(tmp_path / "spec.json")
    with open(path, "w") as f:
        json.dump(spec, f)
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 1, 5, 16)).astype(np.float32) for _ in range(3))
    q[0, 0, 2, :] = np.nan
    for backend in ("reference", "cpu", "gpu-sim"):
        o, lse = run_attnc(ATTNC, path, backend, str(tmp_path), {"q": q, "k": k, "v": v}, {}, [])
        assert np.isnan(o[0, 0, 2]).all() and np.isnan(lse[0, 0, 2]), backend
        assert not np.isnan(np.delete(o[0, 0], 2, axis=0)).any(), backend


@pytest.mark.parametrize("variant", ["reference", "cpu", "gpu-sim", "gpu-sim-wgmma"])
def test_masked_inf_contributes_nothing(variant, tmp_path):
    """+inf in v at a key: o is +inf in that column on the rows that allow the key,
    finite elsewhere (0 * inf is NaN on tensor cores; a masked pair must add nothing)."""
    backend, flags, dtype, d = VARIANTS[variant]
    seed = int.from_bytes(os.urandom(4), "little")
    rng = np.random.default_rng(seed)
    s = 100
    extra, inputs, allowed = doc_case(rng, s)
    spec = {"name": "inf-document", "heads_q": H, "heads_kv": H, "head_dim": d,
            "dtype": dtype, "outputs": ["o", "lse"], **extra}
    path = str(tmp_path / "spec.json")
    with open(path, "w") as f:
        json.dump(spec, f)
    q, k, v = (round_to(rng.standard_normal((1, H, s, d)), dtype) for _ in range(3))
    # A key some rows allow and others mask.
    hs, js = np.nonzero(allowed.any(1) & ~allowed.all(1))
    pick = rng.integers(len(hs))
    h, j, c = hs[pick], js[pick], rng.integers(d)
    v[0, h, j, c] = np.inf
    arrays = {"q": q, "k": k, "v": v, **inputs}
    o, _ = run_attnc(ATTNC, path, backend, str(tmp_path), arrays, inputs, flags)
    want = np.zeros(o[0].shape, bool)
    want[h, :, c] = allowed[h, :, j]
    assert want.any() and (~want[h, :, c]).any(), f"seed {seed}: degenerate case"
    assert (np.isposinf(o[0]) == want).all(), (
        f"seed {seed}: {int((np.isinf(o[0]) & ~want).sum())} elements inf that should not "
        f"be, {int((want & ~np.isposinf(o[0])).sum())} not +inf that should be")
    assert not np.isnan(o[0]).any(), f"seed {seed}: NaN in o"
