"""Document masks over ids declared "sorted": true (packed sequences): the key ranges
come from a binary search (attn.search_sorted, passes/MaskRanges.cpp). Checks

  - correctness against the float64 reference on the host back end (cpu) and the
    simulated NVIDIA kernel (gpu-sim), at awkward lengths (1, 17, 127, 1000), with
    several documents including 1-token ones, separate query and key ids where some
    query documents have no key (fully masked rows: o = 0, lse = -inf), and causal;
  - the schedule: a query block visits exactly the key blocks of its own documents
    (counted on `attnc explain`'s block map, against the blocks computed here from the
    ids), no visited tile is EMPTY, and the computed tiles are those of the same spec
    without "sorted" (which visits every key block and classifies most as EMPTY).
"""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from attune_inputs import run_attnc  # noqa: E402
from test_examples_cpu import ATTNC, compare, compare_lse  # noqa: E402


def spec(tmp_path, name, mask, sorted_ids=True, kv_ids=False, align="top_left"):
    inputs = {"qdoc": {"dtype": "i32", "shape": ["B", "Sq"]}}
    doc = {"q_ids": "qdoc"}
    if kv_ids:
        inputs["kvdoc"] = {"dtype": "i32", "shape": ["B", "Skv"]}
        doc["kv_ids"] = "kvdoc"
    if sorted_ids:
        for d in inputs.values():
            d["sorted"] = True
    m = {"document": doc}
    if mask == "causal":
        m = {"all": [{"causal": {}}, m]}
    s = {"name": name, "heads_q": 4, "heads_kv": 2, "head_dim": 16, "dtype": "bf16",
         "align": align, "inputs": inputs, "mask": m, "outputs": ["o", "lse"]}
    path = os.path.join(str(tmp_path), name + ".json")
    with open(path, "w") as f:
        json.dump(s, f)
    return path


def ids_of(lengths, n, shifted=False):
    """Sorted ids of documents with these lengths (the last one cut to n): 0, 3, 6, 9,
    ... with gaps (ids need not be contiguous); `shifted`: 0, 3, 7, 9, 12, 16, ..., so
    that against the plain numbering the ids 6, 15, ... have no key and 7, 16, ... no
    query."""
    def ident(i):
        return 3 * i + (1 if shifted and i % 3 == 2 else 0)
    ids = np.concatenate([np.full(l, ident(i)) for i, l in enumerate(lengths)])
    return ids[:n].astype(np.int32)


def doc_lengths(n, rng):
    """Random documents over n tokens, with 1-token documents among them."""
    out, left = [], n
    while left > 0:
        l = int(min(left, 1 if rng.random() < 0.3 else rng.integers(2, max(3, n // 3))))
        out.append(l)
        left -= l
    return out


def arrays_for(batch, sq, skv, rng, kv_ids):
    q = rng.standard_normal((batch, 4, sq, 16)).astype(np.float32)
    k = rng.standard_normal((batch, 2, skv, 16)).astype(np.float32)
    v = rng.standard_normal((batch, 2, skv, 16)).astype(np.float32)
    qdoc = np.stack([ids_of(doc_lengths(sq, rng), sq) for _ in range(batch)])
    inputs = {"qdoc": qdoc}
    if kv_ids:
        # Key documents: those of the queries shifted, so that some query documents
        # have no key at all (fully masked rows), and some key documents no query.
        inputs["kvdoc"] = np.stack([ids_of(doc_lengths(skv, rng), skv, shifted=True)
                                    for _ in range(batch)])
    return {"q": q, "k": k, "v": v, **inputs}, inputs


CASES = [(1, 1, 1), (2, 17, 17), (1, 127, 127), (1, 1000, 1000)]


@pytest.mark.parametrize("mask", ["document", "causal"])
@pytest.mark.parametrize("kv_ids", [False, True], ids=["self", "kv_ids"])
def test_sorted_matches_reference(mask, kv_ids, tmp_path):
    seed = int.from_bytes(os.urandom(4), "little")
    rng = np.random.default_rng(seed)
    path = spec(tmp_path, f"sorted_{mask}", mask, kv_ids=kv_ids)
    cases = CASES + ([(1, 17, 127), (2, 127, 17)] if kv_ids else [])
    masked_rows = 0
    for batch, sq, skv in cases:
        arrays, inputs = arrays_for(batch, sq, skv, rng, kv_ids)
        o_ref, lse_ref = run_attnc(ATTNC, path, "reference", str(tmp_path), arrays, inputs, [])
        masked_rows += int(np.isneginf(lse_ref).sum())
        runs = [("cpu", ["--block-m", "16", "--block-n", "32"]),
                ("cpu", ["--block-m", "7", "--block-n", "13"]),
                ("gpu-sim", ["--block-m", "64", "--block-n", "32"])]
        if sq < 1000:
            runs.append(("gpu-sim", ["--block-m", "16", "--block-n", "16"]))
        for backend, args in runs:
            what = f"{mask} kv_ids={kv_ids} seed={seed} B={batch} Sq={sq} Skv={skv} {backend} {args}"
            o, lse = run_attnc(ATTNC, path, backend, str(tmp_path), arrays, inputs, args)
            if backend == "cpu":
                compare(o_ref, o, what)
                compare_lse(lse_ref, lse, what)
            else:
                scale = max(float(np.abs(o_ref).max()), 1e-3)
                assert not np.isnan(o).any(), what
                assert float(np.abs(o - o_ref).max()) <= 2e-2 * scale, what
                assert (np.isneginf(lse) == np.isneginf(lse_ref)).all(), what + ": -inf rows"
    if kv_ids:
        assert masked_rows > 0, f"seed={seed}: no fully masked row was exercised"


def block_map(path, tmp_path, inputs, sq, skv, bm, bn):
    """`attnc explain`'s block map: one string per query block ('#', '+', 'x', '.')."""
    cmd = [ATTNC, "explain", path, "--seq-q", str(sq), "--seq-kv", str(skv),
           "--block-m", str(bm), "--block-n", str(bn)]
    for name, arr in inputs.items():
        f = os.path.join(str(tmp_path), f"map-{name}.npy")
        np.save(f, arr)
        cmd += ["--input", f"{name}={f}"]
    r = subprocess.run(cmd, capture_output=True, text=True, check=True)
    lines = r.stdout.split("block map:")[1].splitlines()
    rows = [l.strip() for l in lines if re.fullmatch(r"\s+[#+x.]+", l)]
    assert len(rows) == -(-sq // bm), r.stdout
    return rows


@pytest.mark.parametrize("mask", ["document", "causal"])
@pytest.mark.parametrize("kv_ids", [False, True], ids=["self", "kv_ids"])
def test_query_block_visits_only_its_documents(mask, kv_ids, tmp_path):
    rng = np.random.default_rng(7)
    sq = skv = 1000
    bm, bn = 16, 16
    _, inputs = arrays_for(1, sq, skv, rng, kv_ids)
    qdoc = inputs["qdoc"][0]
    kvdoc = inputs["kvdoc"][0] if kv_ids else qdoc
    sorted_map = block_map(spec(tmp_path, "s", mask, kv_ids=kv_ids), tmp_path, inputs,
                           sq, skv, bm, bn)
    dense_map = block_map(spec(tmp_path, "u", mask, sorted_ids=False, kv_ids=kv_ids),
                          tmp_path, inputs, sq, skv, bm, bn)
    visited_sorted = visited_unsorted = 0
    for qb, (srow, urow) in enumerate(zip(sorted_map, dense_map)):
        lo, hi = qb * bm, min(qb * bm + bm, sq)
        # The keys whose id lies in [min, max] of the block's ids (cut by causality).
        keys = np.nonzero((kvdoc >= qdoc[lo]) & (kvdoc <= qdoc[hi - 1]))[0]
        if mask == "causal":
            keys = keys[keys <= hi - 1]
        want = {int(k) // bn for k in keys}
        got = {kb for kb, c in enumerate(srow) if c != "."}
        assert got == want, f"query block {qb}: visits {sorted(got)}, its documents' key blocks are {sorted(want)}"
        # Every visited tile has the class it has without "sorted"; a tile left out
        # holds no allowed pair (the unsorted box test may call it PARTIAL: ids
        # {6} against [3, 7] overlap as intervals).
        for kb, (c, u) in enumerate(zip(srow, urow)):
            if c != ".":
                assert c == u, f"tile ({qb}, {kb}): class {c} sorted, {u} unsorted"
                continue
            klo, khi = kb * bn, min(kb * bn + bn, skv)
            allowed = qdoc[lo:hi, None] == kvdoc[None, klo:khi]
            if mask == "causal":
                allowed &= np.arange(lo, hi)[:, None] >= np.arange(klo, khi)[None, :]
            assert not allowed.any(), f"tile ({qb}, {kb}) has allowed pairs but is not visited"
        if not kv_ids:
            assert srow.replace(".", "x") == urow.replace(".", "x"), f"query block {qb}"
        visited_sorted += len(got)
        visited_unsorted += sum(c != "." for c in urow)
        if not kv_ids:
            # With one id tensor every key block of the block's documents meets a row.
            assert "x" not in srow, f"query block {qb} visits an EMPTY tile: {srow}"
    # The unsorted schedule visits (and classifies) far more tiles.
    assert visited_sorted * 2 < visited_unsorted, (visited_sorted, visited_unsorted)
