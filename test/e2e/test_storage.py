"""Ragged and paged storage, per-sequence lengths and bshd files (`"storage"` specs;
`attnc run --cu-seqlens-q/--cu-seqlens-kv/--page-table/--kv-lens/--q-lens/--layout`).

The meaning (docs/architecture.md, "Storage"; README): every sequence of a batch is an attention of its
own lengths. The oracle here is exactly that, built independently of the code under
test: each sequence gathered in numpy into dense [1, H, len, D] tensors (its inputs
sliced: B -> b, Sq -> its q_len rows, Skv -> its kv_len columns) and run through the
float64 reference as a padded call of its own lengths, whose bottom-right default puts
its last query at its last key. Every example spec, on the cpu back end (the tiled
kernels JIT-compiled, fp32: 1e-5 of the output's scale) and on the reference's own
storage path: ragged batches with lengths 1, 17, 127 and 300 in one batch, paged
caches with shuffled page ids and page sizes 1, 16 and 64, right-padded batches with
q_lens / kv_lens read from bshd files, a sequence with fewer keys than queries (fully
masked rows under causal masks) and one with no keys at all.
"""
import glob
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from attune_inputs import load_spec, make_inputs  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ATTNC = os.environ.get("ATTNC", os.path.join(ROOT, "build", "tools", "attnc", "attnc"))
EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "specs", "examples", "*.json")))


def attnc_run(spec_path, backend, tmp, tag, tensors, flags, inputs, extra=()):
    """attnc run with `tensors` (name -> array, saved as .npy) bound to `flags`
    (name -> attnc flag); returns (o, lse or None, completed process)."""
    cmd = [ATTNC, "run", spec_path, "--backend", backend]
    for name, arr in tensors.items():
        path = os.path.join(tmp, f"{tag}-{name}.npy")
        np.save(path, arr)
        if name in inputs:
            cmd += ["--input", f"{name}={path}"]
        else:
            cmd += [flags[name], path]
    out, lse = os.path.join(tmp, f"{tag}-o.npy"), os.path.join(tmp, f"{tag}-lse.npy")
    cmd += ["--out", out]
    want_lse = "lse" in load_spec(spec_path).get("outputs", [])
    if want_lse:
        cmd += ["--lse", lse]
    cmd += list(extra)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return None, None, r
    return np.load(out), (np.load(lse) if want_lse else None), r


FLAGS = {"q": "--q", "k": "--k", "v": "--v", "cu_q": "--cu-seqlens-q", "cu_kv": "--cu-seqlens-kv",
         "page_table": "--page-table", "kv_lens": "--kv-lens", "q_lens": "--q-lens"}


def with_storage(spec, tmp, name, storage):
    """The spec in float32 with `storage`, written to tmp."""
    s = dict(spec)
    s["dtype"] = "f32"
    if storage:
        s["storage"] = storage
    path = os.path.join(tmp, f"{name}.json")
    with open(path, "w") as f:
        json.dump(s, f)
    return path


def slice_input(decl, arr, b, lq, lkv):
    index = []
    for dim in decl["shape"]:
        index.append(slice(b, b + 1) if dim == "B" else slice(0, lq) if dim == "Sq"
                     else slice(0, lkv) if dim == "Skv" else slice(None))
    return arr[tuple(index)]


class Batch:
    """A logical batch: per-sequence dense tensors of max lengths, the lengths, the
    inputs (over the max lengths) and the oracle's per-sequence o and lse."""

    def __init__(self, spec, lq, lkv, rng):
        self.spec, self.lq, self.lkv = spec, list(lq), list(lkv)
        self.B = len(lq)
        self.sq, self.skv = max(lq), max(max(lkv), 1)
        self.q, self.k, self.v, self.inputs = make_inputs(spec, self.B, self.sq, self.skv, rng)

    def oracle(self, dense_spec, tmp, extra):
        """o, lse per sequence from the dense reference ([1, Hq, len, Dv] / [1, Hq, len])."""
        self.o_ref, self.lse_ref = [], []
        decls = self.spec.get("inputs", {})
        for b in range(self.B):
            lq, lkv = self.lq[b], self.lkv[b]
            tensors = {"q": self.q[b:b + 1, :, :lq], "k": self.k[b:b + 1, :, :lkv],
                       "v": self.v[b:b + 1, :, :lkv]}
            for name, arr in self.inputs.items():
                tensors[name] = slice_input(decls[name], arr, b, lq, lkv)
            if lq == 0:
                self.o_ref.append(None)
                self.lse_ref.append(None)
                continue
            o, lse, r = attnc_run(dense_spec, "reference", tmp, f"seq{b}", tensors, FLAGS,
                                  self.inputs, extra)
            assert o is not None, r.stderr
            self.o_ref.append(o[0])
            self.lse_ref.append(None if lse is None else lse[0])

    # Storage forms -------------------------------------------------------------
    def ragged_q(self):
        cu = np.concatenate([[0], np.cumsum(self.lq)]).astype(np.int32)
        q = np.concatenate([self.q[b, :, :self.lq[b]].transpose(1, 0, 2) for b in range(self.B)])
        return q.reshape(-1, self.q.shape[1], self.q.shape[3]), cu

    def ragged_kv(self):
        cu = np.concatenate([[0], np.cumsum(self.lkv)]).astype(np.int32)
        cat = lambda t: np.concatenate([t[b, :, :self.lkv[b]].transpose(1, 0, 2)  # noqa: E731
                                        for b in range(self.B)]).reshape(-1, t.shape[1], t.shape[3])
        return cat(self.k), cat(self.v), cu

    def paged_kv(self, page_size, rng):
        used = [math.ceil(n / page_size) for n in self.lkv]
        pages = sum(used) + 3  # a few pages no sequence uses
        ids = rng.permutation(pages)
        width = max(max(used), 1) + 1
        table = np.full((self.B, width), -1, dtype=np.int32)  # -1 where no page is used
        hkv = self.k.shape[1]
        kc = rng.standard_normal((pages, page_size, hkv, self.k.shape[3])).astype(np.float32)
        vc = rng.standard_normal((pages, page_size, hkv, self.v.shape[3])).astype(np.float32)
        nxt = 0
        for b in range(self.B):
            for p in range(used[b]):
                page = ids[nxt]
                nxt += 1
                table[b, p] = page
                rows = range(p * page_size, min((p + 1) * page_size, self.lkv[b]))
                for j in rows:
                    kc[page, j % page_size] = self.k[b, :, j]
                    vc[page, j % page_size] = self.v[b, :, j]
        return kc, vc, table, np.array(self.lkv, dtype=np.int32)

    # Checks ---------------------------------------------------------------------
    def check(self, o, lse, ragged, what, tol):
        assert o is not None
        assert not np.isnan(o).any(), f"{what}: NaN"
        cu = np.concatenate([[0], np.cumsum(self.lq)])
        for b in range(self.B):
            got = o[cu[b]:cu[b + 1]].transpose(1, 0, 2) if ragged else o[b, :, :self.lq[b]]
            if not ragged:  # rows past q_len are 0
                assert (o[b, :, self.lq[b]:] == 0).all(), f"{what}: padding rows of {b} not 0"
            if self.lq[b] == 0:
                continue
            ref = self.o_ref[b]
            scale = max(float(np.abs(ref).max()), 1e-6)
            err = float(np.abs(got - ref).max())
            assert err <= tol * scale, f"{what}: sequence {b} max error {err:.3g} vs {scale:.3g}"
            if lse is not None:
                gl = lse[cu[b]:cu[b + 1]].T if ragged else lse[b, :, :self.lq[b]]
                rl = self.lse_ref[b]
                masked = np.isneginf(rl)
                assert (np.isneginf(gl) == masked).all(), f"{what}: -inf rows of {b} differ"
                if (~masked).any():
                    e = np.abs(gl[~masked] - rl[~masked]) / np.maximum(1.0, np.abs(rl[~masked]))
                    assert e.max() <= tol, f"{what}: lse of {b} error {e.max():.3g}"
            if not ragged and lse is not None:
                assert np.isneginf(lse[b, :, self.lq[b]:]).all(), f"{what}: padding lse not -inf"


def lengths(rng):
    """q lengths 1, 17, 127, 300 (shuffled); keys a few more, one sequence with fewer
    keys than queries, one with none."""
    lq = list(rng.permutation([1, 17, 127, 300]))
    lkv = [n + int(rng.integers(0, 40)) for n in lq]
    i = lq.index(17)
    lkv[i] = 5
    lq.append(3)
    lkv.append(0)
    return lq, lkv


@pytest.mark.parametrize("path", EXAMPLES, ids=[os.path.basename(p)[:-5] for p in EXAMPLES])
def test_storage_matches_reference(path, tmp_path):
    seed = int.from_bytes(os.urandom(4), "little")
    rng = np.random.default_rng(seed)
    spec = load_spec(path)
    name = os.path.basename(path)[:-5]
    tmp = str(tmp_path)
    lq, lkv = lengths(rng)
    batch = Batch(spec, lq, lkv, rng)
    dense = with_storage(spec, tmp, "dense", None)
    offsets = []
    if rng.random() < 0.3:
        offsets = ["--q-offset", str(int(rng.integers(-20, 60))),
                   "--kv-offset", str(int(rng.integers(-10, 10)))]
    batch.oracle(dense, tmp, offsets)
    what = f"{name} seed={seed} lq={lq} lkv={lkv} {offsets}"
    tile = [["--block-m", "64", "--block-n", "64"],
            ["--block-m", str(int(rng.choice([16, 32]))), "--block-n", str(int(rng.choice([16, 32])))]]

    # ragged q, ragged kv
    q, cu_q = batch.ragged_q()
    k, v, cu_kv = batch.ragged_kv()
    rr = with_storage(spec, tmp, "rr", {"q": "ragged", "kv": "ragged"})
    tensors = {"q": q, "k": k, "v": v, "cu_q": cu_q, "cu_kv": cu_kv, **batch.inputs}
    backends = [("cpu", tile[0]), ("cpu", tile[1]), ("reference", [])]
    for backend, t in backends:
        o, lse, r = attnc_run(rr, backend, tmp, f"rr-{backend}", tensors, FLAGS, batch.inputs,
                              offsets + t)
        assert o is not None, f"{what}: exit {r.returncode}: {r.stderr}"
        batch.check(o, lse, True, f"{what} ragged/ragged {backend} {t}", 1e-5)

    # ragged q, paged kv: page size 1, 16 or 64
    ps = int(rng.choice([1, 16, 64]))
    kc, vc, table, kv_lens = batch.paged_kv(ps, rng)
    rp = with_storage(spec, tmp, "rp", {"q": "ragged", "kv": "paged"})
    tensors = {"q": q, "k": kc, "v": vc, "cu_q": cu_q, "page_table": table, "kv_lens": kv_lens,
               **batch.inputs}
    o, lse, r = attnc_run(rp, "cpu", tmp, "rp", tensors, FLAGS, batch.inputs, offsets + tile[1])
    assert o is not None, f"{what}: exit {r.returncode}: {r.stderr}"
    batch.check(o, lse, True, f"{what} ragged/paged page_size={ps}", 1e-5)

    # padded q and kv with q_lens / kv_lens, from bshd files
    qb = batch.q.transpose(0, 2, 1, 3).copy()
    kb = batch.k.transpose(0, 2, 1, 3).copy()
    vb = batch.v.transpose(0, 2, 1, 3).copy()
    tensors = {"q": qb, "k": kb, "v": vb, "q_lens": np.array(lq, np.int32),
               "kv_lens": np.array(lkv, np.int32), **batch.inputs}
    for backend in ("cpu", "reference"):
        o, lse, r = attnc_run(dense, backend, tmp, f"pl-{backend}", tensors, FLAGS, batch.inputs,
                              offsets + ["--layout", "bshd"] + tile[0])
        assert o is not None, f"{what}: exit {r.returncode}: {r.stderr}"
        assert o.shape == (batch.B, batch.sq, spec["heads_q"], spec.get("head_dim_v", spec["head_dim"]))
        batch.check(o.transpose(0, 2, 1, 3), lse, False, f"{what} padded+lens bshd {backend}", 1e-5)


DECODE = ["causal", "mistral-swa", "alibi", "gqa", "streaming-llm", "softcap"]


@pytest.mark.parametrize("name", [n for n in DECODE if os.path.exists(
    os.path.join(ROOT, "specs", "examples", f"{n}.json"))])
def test_decode_and_chunked_prefill(name, tmp_path):
    """1 to 16 queries per sequence against long cached contexts (up to 2k keys), from
    a paged cache of 16-key pages: decoding and chunked prefill."""
    seed = int.from_bytes(os.urandom(4), "little")
    rng = np.random.default_rng(seed)
    path = os.path.join(ROOT, "specs", "examples", f"{name}.json")
    spec = load_spec(path)
    tmp = str(tmp_path)
    lq = [1, 1, 16, 5, 1, 9]
    lkv = [2048, 1, 700, 1500, 64, 333]
    batch = Batch(spec, lq, lkv, rng)
    batch.oracle(with_storage(spec, tmp, "dense", None), tmp, [])
    q, cu_q = batch.ragged_q()
    kc, vc, table, kv_lens = batch.paged_kv(16, rng)
    rp = with_storage(spec, tmp, "rp", {"q": "ragged", "kv": "paged"})
    tensors = {"q": q, "k": kc, "v": vc, "cu_q": cu_q, "page_table": table, "kv_lens": kv_lens,
               **batch.inputs}
    o, lse, r = attnc_run(rp, "cpu", tmp, "rp", tensors, FLAGS, batch.inputs)
    assert o is not None, r.stderr
    batch.check(o, lse, True, f"{name} seed={seed} decode", 1e-5)


def test_bad_sequence_arguments(tmp_path):
    """What the host can check is checked before anything runs, by argument name."""
    tmp = str(tmp_path)
    spec = {"heads_q": 2, "head_dim": 16, "dtype": "f32", "mask": {"causal": {}}}
    rng = np.random.default_rng(1)
    rr = with_storage(spec, tmp, "rr", {"q": "ragged", "kv": "ragged"})
    rp = with_storage(spec, tmp, "rp", {"q": "ragged", "kv": "paged"})
    dense = with_storage(spec, tmp, "dense", None)
    q = rng.standard_normal((10, 2, 16)).astype(np.float32)
    k = rng.standard_normal((12, 2, 16)).astype(np.float32)
    i32 = lambda *x: np.array(x, dtype=np.int32)  # noqa: E731
    kc = rng.standard_normal((4, 8, 2, 16)).astype(np.float32)

    def fails(spec_path, tensors, message):
        o, _, r = attnc_run(spec_path, "cpu", tmp, "bad", tensors, FLAGS, {})
        assert o is None and r.returncode != 0, f"expected a failure: {message}"
        assert message in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and "Segmentation" not in r.stderr

    base = {"q": q, "k": k, "v": k, "cu_q": i32(0, 4, 10), "cu_kv": i32(0, 5, 12)}
    fails(rr, {**base, "cu_q": i32(1, 4, 10)}, "cu_seqlens_q[0] must be 0, got 1")
    fails(rr, {**base, "cu_q": i32(0, 6, 4, 10), "cu_kv": i32(0, 2, 5, 12)},
          "cu_seqlens_q must be non-decreasing: cu_seqlens_q[2] = 4 < cu_seqlens_q[1] = 6")
    fails(rr, {**base, "cu_kv": i32(0, 5, 11)}, "cu_seqlens_kv[2] = 11 must be the buffer's length 12")
    fails(rr, {**base, "cu_kv": i32(0, 5, 6, 12)}, "cu_seqlens_kv")
    fails(rr, {**base, "cu_q": np.array([0., 4., 10.], np.float32)}, "cu_seqlens_q: must be int32")
    fails(rr, {k: v for k, v in base.items() if k != "cu_kv"}, "cu_seqlens_kv is missing")
    fails(rr, {**base, "kv_lens": i32(1, 2)}, "kv_lens: the spec's kv storage is ragged")
    paged = {"q": q, "k": kc, "v": kc, "cu_q": i32(0, 4, 10), "page_table": i32([0, 1], [2, -1]),
             "kv_lens": i32(16, 8)}
    fails(rp, {**paged, "kv_lens": i32(17, 8)}, "kv_lens[0] = 17 is outside [0, 16]")
    fails(rp, {**paged, "page_table": i32([0, 1], [7, -1])},
          "page_table[1, 0] = 7 is not a page of the cache")
    fails(rp, {**paged, "page_table": i32([0, 1], [-1, 3])},
          "page_table[1, 0] = -1 is not a page of the cache")
    fails(rp, {k: v for k, v in paged.items() if k != "kv_lens"}, "kv_lens is missing")
    qd = rng.standard_normal((2, 2, 6, 16)).astype(np.float32)
    fails(dense, {"q": qd, "k": qd, "v": qd, "q_lens": i32(7, 1)}, "q_lens[0] = 7 is outside [0, 6]")
    fails(dense, {"q": qd, "k": qd, "v": qd, "q_lens": i32(1, 1, 1)}, "q_lens [3] gives a batch of 3")
    fails(dense, {"q": qd, "k": qd, "v": qd, "cu_q": i32(0, 6, 12)},
          "cu_seqlens_q: the spec's q storage is padded")
    # -1 in a page_table entry no sequence uses is fine (vLLM pads rows so).
    o, _, r = attnc_run(rp, "cpu", tmp, "ok", {**paged, "kv_lens": i32(9, 8)}, FLAGS, {})
    assert o is not None, r.stderr
