"""Every example spec: valid against the JSON Schema, runs through `attnc run
--backend reference` on random inputs of awkward lengths, and gives finite outputs
(or exactly 0 / -inf on rows with no allowed key)."""
import glob
import json
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


def test_examples_exist():
    assert len(EXAMPLES) >= 30


def test_schema_accepts_every_example():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.load(open(os.path.join(ROOT, "specs", "attn-spec.schema.json")))
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in EXAMPLES:
        errors = list(validator.iter_errors(load_spec(path)))
        assert not errors, f"{path}: {errors[0].message}"


def run_attnc(spec_path, tmp, q, k, v, inputs, extra=()):
    files = {}
    for name, arr in [("q", q), ("k", k), ("v", v)] + list(inputs.items()):
        files[name] = os.path.join(tmp, name + ".npy")
        np.save(files[name], arr)
    out = os.path.join(tmp, "o.npy")
    cmd = [ATTNC, "run", spec_path, "--backend", "reference", "--q", files["q"],
           "--k", files["k"], "--v", files["v"], "--out", out]
    for name in inputs:
        cmd += ["--input", f"{name}={files[name]}"]
    cmd += list(extra)
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return np.load(out)


@pytest.mark.parametrize("path", EXAMPLES, ids=[os.path.basename(p)[:-5] for p in EXAMPLES])
def test_example_runs_on_the_reference(path, tmp_path):
    seed = int.from_bytes(os.urandom(4), "little")
    rng = np.random.default_rng(seed)
    spec = load_spec(path)
    for seq_q, seq_kv in [(17, 17), (1, 33), (40, 23)]:
        q, k, v, inputs = make_inputs(spec, 2, seq_q, seq_kv, rng)
        o = run_attnc(path, str(tmp_path), q, k, v, inputs)
        assert o.shape == (2, spec["heads_q"], seq_q, spec.get("head_dim_v", spec["head_dim"]))
        assert np.isfinite(o).all(), f"seed {seed}: non-finite output"


def test_dense_matches_numpy(tmp_path):
    """The CLI path end to end (npy in, npy out) against a numpy formula."""
    rng = np.random.default_rng(int.from_bytes(os.urandom(4), "little"))
    path = os.path.join(ROOT, "specs", "examples", "causal.json")
    spec = load_spec(path)
    q, k, v, _ = make_inputs(spec, 1, 19, 30, rng)
    o = run_attnc(path, str(tmp_path), q, k, v, {})
    hq, hkv = q.shape[1], k.shape[1]
    kk = np.repeat(k.astype(np.float64), hq // hkv, axis=1)
    vv = np.repeat(v.astype(np.float64), hq // hkv, axis=1)
    s = q.astype(np.float64) @ kk.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
    i = np.arange(19)[:, None] + (30 - 19)
    j = np.arange(30)[None, :]
    s = np.where(i >= j, s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(o, p @ vv, rtol=1e-5, atol=1e-6)
