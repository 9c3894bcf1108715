"""The dense float64 torch oracle (dense_autograd.py, written from PATTERNS.md alone)
against `attnc run --backend reference` on every example spec, forward o and lse; and
autograd through the oracle is finite, with exact zero gradients on rows with no allowed
key."""
import glob
import math
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, os.path.dirname(__file__))
from attune_inputs import load_spec, make_inputs, run_attnc  # noqa: E402
import dense_autograd as da  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ATTNC = os.environ.get("ATTNC", os.path.join(ROOT, "build", "tools", "attnc", "attnc"))
EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "specs", "examples", "*.json")))
SHAPES = [(17, 17), (1, 33), (40, 23)]


def assert_rounds_to(x64, ref32, what):
    """The reference computes in float64 and `attnc run` writes float32 (.npy <f4), so
    the oracle's float64 value must lie within half a float32 ulp of the reference's
    (plus rtol 1e-9, atol 1e-12 for the two float64 computations). Returns the largest
    difference in units of half a float32 ulp."""
    ref = np.asarray(ref32, dtype=np.float32)
    assert x64.shape == ref.shape, (x64.shape, ref.shape)
    if ref.size == 0:
        return 0.0
    half_ulp = 0.5 * np.spacing(np.abs(ref)).astype(np.float64)
    err = np.abs(x64 - ref.astype(np.float64))
    tol = half_ulp * (1 + 1e-6) + 1e-9 * np.abs(x64) + 1e-12
    bad = ~(err <= tol)
    assert not bad.any(), (f"{what}: {int(bad.sum())} of {bad.size} differ, max |diff| "
                           f"{float(np.nanmax(err))}, first at {np.argwhere(bad)[0].tolist()}")
    return float((err / np.maximum(half_ulp, 1e-300)).max())


def _check(spec_path, spec, arrays, extra=(), q_offset=None, kv_offset=None, tmp="."):
    q, k, v, inputs = arrays
    named = dict(q=q, k=k, v=v, **inputs)
    o_ref, lse_ref = run_attnc(ATTNC, spec_path, "reference", tmp, named, inputs, list(extra))
    tq, tk, tv, tin = da.make_torch_inputs(spec, arrays)
    with torch.no_grad():
        o, lse = da.attention(spec, tq, tk, tv, tin, q_offset, kv_offset)
    o = o.numpy()
    ulps = assert_rounds_to(o, o_ref, "o")
    diff = float(np.abs(o - o_ref).max()) if o_ref.size else 0.0
    if lse_ref is not None:
        assert lse is not None
        lse = lse.numpy()
        assert np.array_equal(np.isneginf(lse), np.isneginf(lse_ref)), "lse = -inf rows"
        fin = np.isfinite(lse_ref)
        ulps = max(ulps, assert_rounds_to(lse[fin], lse_ref[fin], "lse"))
        if fin.any():
            diff = max(diff, float(np.abs(lse[fin] - lse_ref[fin]).max()))
    return diff, ulps


@pytest.mark.skipif(not os.path.exists(ATTNC), reason="attnc not built")
@pytest.mark.parametrize("path", EXAMPLES, ids=[os.path.basename(p)[:-5] for p in EXAMPLES])
def test_oracle_matches_reference(path, tmp_path):
    seed = int.from_bytes(os.urandom(4), "little")
    rng = np.random.default_rng(seed)
    spec = load_spec(path)
    for seq_q, seq_kv in SHAPES:
        arrays = make_inputs(spec, 2, seq_q, seq_kv, rng)
        try:
            _check(path, spec, arrays, tmp=str(tmp_path))
        except AssertionError as e:
            raise AssertionError(f"seed {seed}, (Sq, Skv) = ({seq_q}, {seq_kv}): {e}")


@pytest.mark.skipif(not os.path.exists(ATTNC), reason="attnc not built")
@pytest.mark.parametrize("name", ["causal", "alibi", "rope-half", "sliding-window",
                                  "t5-bias", "fire", "expr-mask"])
def test_oracle_matches_reference_with_offsets(name, tmp_path):
    path = os.path.join(ROOT, "specs", "examples", name + ".json")
    spec = load_spec(path)
    rng = np.random.default_rng(int.from_bytes(os.urandom(4), "little"))
    for seq_q, seq_kv, qo, ko in [(9, 21, 30, 5), (16, 16, -3, 7), (5, 40, 0, 0)]:
        arrays = make_inputs(spec, 2, seq_q, seq_kv, rng)
        _check(path, spec, arrays, ["--q-offset", str(qo), "--kv-offset", str(ko)],
               q_offset=qo, kv_offset=ko, tmp=str(tmp_path))


def _probe(mask=None, score=None, **kw):
    spec = {"heads_q": 4, "heads_kv": 2, "head_dim": 16, "dtype": "f32"}
    if mask is not None:
        spec["mask"] = mask
    if score is not None:
        spec["score"] = score
    spec.update(kw)
    return spec


FIRE_INPUTS = {"w1": {"dtype": "f32", "shape": ["Hid"]}, "b1": {"dtype": "f32", "shape": ["Hid"]},
               "w2": {"dtype": "f32", "shape": ["Hq", "Hid"]},
               "b2": {"dtype": "f32", "shape": ["Hq"]}}
FIRE = {"fire": {"w1": "w1", "b1": "b1", "w2": "w2", "b2": "b2", "c": 0.5, "L": 8.0}}

# Small specs that probe the corners of PATTERNS.md the examples leave alone (defaults,
# offsets, combinators, out-of-range reads, the expression language).
PROBES = {
    "sw-right-default": _probe({"sliding_window": {"left": 3}}),
    "sw-unbounded-left": _probe({"sliding_window": {"left": -1, "right": 2}}),
    "dilated-window-right": _probe({"dilated_window": {"left": 6, "right": 4, "dilation": 3}}),
    "fire-noncausal": _probe(score=[FIRE], inputs=FIRE_INPUTS),
    "log-length-negative-pos": _probe(score=[{"log_length_scale": {"base": 3.0}}]),
    "not-document-oob": _probe({"not": {"document": {"q_ids": "doc"}}},
                               inputs={"doc": {"dtype": "i32", "shape": ["B", "Sq"]}}),
    "expr-chained": _probe({"expr": "0 <= q - kv < 4 || kv == 0 || !(h != 1)"}),
    "expr-arith-mask": _probe({"expr": "(q - kv) % 3 != 1 && q_idx // 2 >= kv_idx // 4 - 3"
                                       " && (q // (kv_idx - 2)) >= -100 && seq_kv > kv_idx"}),
    "expr-funcs": _probe(score=[{"expr": "s + 0.01 * ((q - kv) // 3) - 0.02 * ((kv - q) % 5)"
                                         " + 0.1 * sqrt(abs(s) + 1.0) - min(s, 0.5) * 0.1"
                                         " + max(h, 1) * 0.01 + floor(s) * 0.05"
                                         " + ceil(s) * 0.01 + log2(kv + 1.0) * 0.01"
                                         " + sigmoid(s) * 0.1 + exp(-abs(s)) * 0.1"
                                         " + log(abs(s) + 2.0) * 0.1 - a * bb / (seq_q + 1)"}],
                         params={"a": 0.1, "bb": 3}),
    "expr-lookup-oob": _probe({"not": {"expr": "tt[kv_idx] > 2"}},
                              [{"expr": "s + ft[h, kv_idx]"}],
                              inputs={"tt": {"dtype": "i32", "shape": [5]},
                                      "ft": {"dtype": "f32", "shape": ["Hq", 6]}}),
    "shifted-odd-heads": _probe({"shifted_groups": {"group": 5}}, heads_q=5, heads_kv=1),
    "shifted-list": _probe({"shifted_groups": {"group": 4, "shifted_heads": [0, 3]}}),
    "dilated-segments-offset": _probe({"dilated_segments": {"segment": 8, "dilation": 2,
                                                            "head_offset": 1}}),
    "t5-unidirectional": _probe({"causal": {}}, [{"t5_bias": {"table": "tb", "num_buckets": 16,
                                                              "max_distance": 20,
                                                              "bidirectional": False}}],
                                inputs={"tb": {"dtype": "f32", "shape": [16, "Hq"]}}),
    "t5-small": _probe(score=[{"t5_bias": {"table": "tb", "num_buckets": 8,
                                           "max_distance": 12}}],
                       inputs={"tb": {"dtype": "f32", "shape": [8, "Hq"]}}),
    "sigmoid-beta": _probe({"causal": {}}, normalizer={"sigmoid": {"beta": -1.5}}),
    "relu-causal": _probe({"causal": {}}, normalizer={"relu": {}}),
    "yarn-partial": _probe({"causal": {}}, rope={"theta": 1000.0, "style": "interleaved",
                                                 "rotary_dim": 8,
                                                 "scaling": {"yarn": {
                                                     "factor": 4.0, "original_max_position": 16,
                                                     "beta_fast": 16.0, "beta_slow": 2.0,
                                                     "mscale": 1.3}}}),
    "yarn-defaults": _probe(rope={"scaling": {"yarn": {"factor": 16.0,
                                                       "original_max_position": 8}}}),
    "ntk-partial": _probe(rope={"rotary_dim": 12, "scaling": {"ntk": 3.0}}),
    "linear-interleaved": _probe(rope={"style": "interleaved", "theta": 50.0,
                                       "scaling": {"linear": 2.5}}),
    "causal-top-left-rope": _probe({"causal": {"align": "top_left"}}, rope={}),
    "alibi-6-heads": _probe(score=[{"alibi": {}}], heads_q=6, heads_kv=3),
    "alibi-slopes": _probe({"causal": {}}, [{"alibi": {"slopes": [0.5, 0.25, 1.0, 0.1]}}]),
    "global-list-offsets": _probe({"any": [{"global_tokens": {"tokens": [0, 3, 9]}},
                                           {"sliding_window": {"left": 1, "right": 1}}]}),
    "global-count": _probe({"global_tokens": {"count": 3}}),
    "prefix-sinks": _probe({"any": [{"prefix_lm": {"prefix": 4}}, {"sinks": {"count": 2}}]}),
    "fixed-strided": _probe({"any": [{"fixed": {"stride": 4, "summary": 1}},
                                     {"strided": {"stride": 3}}]}),
    "bias-broadcast": _probe(score=[{"bias": {"tensor": "bb"}}, {"bias": {"tensor": "bc"}}],
                             inputs={"bb": {"dtype": "f32", "shape": ["Hq", 1, "Skv"]}},
                             **{}),
    "chain-order": _probe({"causal": {}}, [{"alibi": {}}, {"softcap": {"cap": 2.0}},
                                           {"kerple_log": {"r1": [1, 2, 3, 4],
                                                           "r2": [0.5, 0.5, 1, 2]}},
                                           {"log_length_scale": {"base": 2.0}}], scale=0.3),
    "gqa-dv": _probe({"causal": {}}, heads_q=6, heads_kv=2, head_dim_v=8,
                     outputs=["o", "lse"]),
    "all-masked-rows": _probe({"all": [{"causal": {}}, {"not": {"sinks": {"count": 3}}}]},
                              outputs=["o", "lse"]),
}
PROBES["bias-broadcast"]["inputs"]["bc"] = {"dtype": "f32", "shape": ["Sq", 1]}
PROBE_RUNS = [(7, 7, None, None), (5, 12, None, None), (12, 5, None, None),
              (6, 9, 4, 2), (9, 6, -3, 0), (8, 8, 0, 5)]


@pytest.mark.skipif(not os.path.exists(ATTNC), reason="attnc not built")
@pytest.mark.parametrize("name", sorted(PROBES))
def test_oracle_matches_reference_probes(name, tmp_path):
    import json
    spec = PROBES[name]
    path = str(tmp_path / (name + ".json"))
    with open(path, "w") as f:
        json.dump(spec, f)
    rng = np.random.default_rng(int.from_bytes(os.urandom(4), "little"))
    for seq_q, seq_kv, qo, ko in PROBE_RUNS:
        arrays = make_inputs(spec, 2, seq_q, seq_kv, rng)
        extra = []
        if qo is not None:
            extra += ["--q-offset", str(qo)]
        if ko is not None:
            extra += ["--kv-offset", str(ko)]
        try:
            _check(path, spec, arrays, extra, qo, ko, tmp=str(tmp_path))
        except AssertionError as e:
            raise AssertionError(f"(Sq, Skv, q_offset, kv_offset) = "
                                 f"{(seq_q, seq_kv, qo, ko)}: {e}")


@pytest.mark.parametrize("path", EXAMPLES, ids=[os.path.basename(p)[:-5] for p in EXAMPLES])
def test_oracle_gradients_are_finite(path):
    """Sq > Skv under bottom-right alignment leaves the first rows of every causal spec
    with no allowed key: their o is 0, lse -inf, and their gradients exactly 0."""
    rng = np.random.default_rng(1)
    spec = load_spec(path)
    arrays = make_inputs(spec, 2, 40, 23, rng)
    q, k, v, inputs = da.make_torch_inputs(spec, arrays)
    o, lse = da.attention(spec, q, k, v, inputs)
    go = torch.randn_like(o)
    loss = (o * go).sum()
    if lse is not None:
        empty = torch.isneginf(lse)
        loss = loss + torch.where(empty, torch.zeros_like(lse), lse).sum()
    loss.backward()
    leaves = [q, k, v] + [t for t in inputs.values() if t.dtype == torch.float64]
    for t in leaves:
        assert torch.isfinite(t.grad).all()
    if lse is not None:
        empty = torch.isneginf(lse.detach())
        assert (o.detach()[empty] == 0).all()
        assert (q.grad[empty] == 0).all()
        assert not torch.isnan(lse).any()


def test_oracle_gradcheck_small():
    """Autograd through the oracle against finite differences, with empty rows."""
    spec = {"heads_q": 2, "heads_kv": 1, "head_dim": 4, "mask": {"causal": {}},
            "score": [{"softcap": {"cap": 5.0}}, {"alibi": {}}], "rope": {"theta": 100.0}}
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, 5, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    k = torch.randn(1, 1, 3, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    v = torch.randn(1, 1, 3, 4, dtype=torch.float64, generator=gen, requires_grad=True)

    def f(q, k, v):
        o, lse = da.attention(spec, q, k, v, {})
        return o, torch.where(torch.isneginf(lse), torch.zeros_like(lse), lse)

    assert torch.autograd.gradcheck(f, (q, k, v))


def test_expr_language():
    ev = da._Eval({"x": torch.tensor([-7, 7, 5], dtype=torch.int64)}, {})
    assert ev(da.parse_expr("x // 2")).tolist() == [-4, 3, 2]
    assert ev(da.parse_expr("x % 2")).tolist() == [1, 1, 1]
    assert ev(da.parse_expr("x % 0")).tolist() == [0, 0, 0]
    assert ev(da.parse_expr("x / 2")).tolist() == [-3.5, 3.5, 2.5]
    assert ev(da.parse_expr("1 + 2 * 3 - -x")).tolist() == [0, 14, 12]
    assert ev(da.parse_expr("!x > 0 || x == 5 && 1 < 2")).tolist() == [True, False, True]
    assert ev(da.parse_expr("select(x > 0, max(x, 6), abs(x))")).tolist() == [7, 7, 6]
    assert math.isclose(float(ev(da.parse_expr("log2(8.0) + sigmoid(0) + floor(1.5e0)"))),
                        4.5)


@pytest.mark.parametrize("name", ["fire-noncausal", "bias-broadcast", "expr-lookup-oob",
                                  "t5-small", "yarn-partial", "sigmoid-beta",
                                  "all-masked-rows", "chain-order", "gqa-dv"])
def test_oracle_gradcheck_probes(name):
    """Autograd through the oracle against finite differences, float inputs included."""
    spec = PROBES[name]
    rng = np.random.default_rng(7)
    q, k, v, inputs = da.make_torch_inputs(spec, make_inputs(spec, 1, 6, 5, rng))
    fnames = [n for n, t in inputs.items() if t.dtype == torch.float64]

    def f(q, k, v, *floats):
        tin = dict(inputs, **dict(zip(fnames, floats)))
        o, lse = da.attention(spec, q, k, v, tin, q_offset=-1)
        if lse is None:
            return o
        return o, torch.where(torch.isneginf(lse), torch.zeros_like(lse), lse)

    assert torch.autograd.gradcheck(f, (q, k, v, *[inputs[n] for n in fnames]))
