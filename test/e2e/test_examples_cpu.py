"""Every example spec through the host back end (`attnc run --backend cpu`, the
tiled program JIT-compiled) against the float64 reference: fresh seeds, several tile
shapes, odd lengths, seq_q != seq_kv, explicit offsets, fully masked rows, GQA.
fp32 tolerance: max |cpu - ref| <= 1e-5 * max |ref| for o, 1e-5 * max(1, |lse|) for
lse; -inf where the reference has -inf; NaN never passes."""
import glob
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from attune_inputs import load_spec, make_inputs, run_attnc  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ATTNC = os.environ.get("ATTNC", os.path.join(ROOT, "build", "tools", "attnc", "attnc"))
EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "specs", "examples", "*.json")))
TILES = [(16, 32), (32, 16), (1, 1), (8, 8), (128, 16), (16, 128), (7, 13), (64, 32)]
LONG = {"causal", "mistral-swa", "streaming-llm", "packed-causal", "document", "alibi"}


def run(spec_path, backend, tmp, arrays, inputs, extra):
    return run_attnc(ATTNC, spec_path, backend, tmp, arrays, inputs, extra)


def compare(ref, got, what):
    assert not np.isnan(got).any(), f"{what}: NaN"
    assert got.shape == ref.shape
    scale = max(float(np.abs(ref).max()), 1e-6)
    err = float(np.abs(got - ref).max())
    assert err <= 1e-5 * scale, f"{what}: max error {err:.3g} vs scale {scale:.3g}"


def compare_lse(ref, got, what):
    assert not np.isnan(got).any(), f"{what}: NaN in lse"
    masked = np.isneginf(ref)
    assert (np.isneginf(got) == masked).all(), f"{what}: -inf rows differ"
    if (~masked).any():
        err = np.abs(got[~masked] - ref[~masked]) / np.maximum(1.0, np.abs(ref[~masked]))
        assert err.max() <= 1e-5, f"{what}: lse error {err.max():.3g}"


@pytest.mark.parametrize("path", EXAMPLES, ids=[os.path.basename(p)[:-5] for p in EXAMPLES])
def test_cpu_matches_reference(path, tmp_path):
    seed = int.from_bytes(os.urandom(4), "little")
    rng = np.random.default_rng(seed)
    spec = load_spec(path)
    name = os.path.basename(path)[:-5]
    tiles = [(64, 64)] + [TILES[i] for i in rng.choice(len(TILES), 2, replace=False)]
    cases = [(2, 17, 17, []), (1, 1, 45, []), (1, 40, 23, []), (2, 61, 130, []),
             (1, 33, 70, ["--q-offset", str(int(rng.integers(-20, 60))),
                          "--kv-offset", str(int(rng.integers(-10, 10)))])]
    if name in LONG:
        cases.append((1, 1000, 1000, []))
    for batch, sq, skv, extra in cases:
        q, k, v, inputs = make_inputs(spec, batch, sq, skv, rng)
        arrays = {"q": q, "k": k, "v": v, **inputs}
        o_ref, lse_ref = run(path, "reference", str(tmp_path), arrays, inputs, extra)
        for bm, bn in (tiles if sq < 1000 else [(64, 64)]):
            what = f"{name} seed={seed} B={batch} Sq={sq} Skv={skv} {extra} tile={bm}x{bn}"
            o, lse = run(path, "cpu", str(tmp_path), arrays, inputs,
                         extra + ["--block-m", str(bm), "--block-n", str(bn)])
            compare(o_ref, o, what)
            if lse_ref is not None:
                compare_lse(lse_ref, lse, what)
