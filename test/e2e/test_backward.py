"""Gradients (`attnc run --do ...`) of every example spec on the reference and the host
back end against an independent float64 autograd: torch autograd through
dense_autograd.py (a dense implementation written from PATTERNS.md alone).

L = sum(o * dO) (+ sum(lse * dlse) where the spec outputs lse), so dq, dk, dv and the
gradient of every float input are the vector-Jacobian products the backward computes.
Tolerances: the reference (float64, written as float32) 1e-5 of each gradient's
largest magnitude; the host kernels (fp32) 1e-4. NaN never passes. Also: fully masked
rows give zero gradients, the host backward is bitwise deterministic from run to run,
and the gradient flags refuse what they should, by name."""
import glob
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, os.path.dirname(__file__))
from attune_inputs import load_spec, make_inputs  # noqa: E402
import dense_autograd as da  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ATTNC = os.environ.get("ATTNC", os.path.join(ROOT, "build", "tools", "attnc", "attnc"))
EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "specs", "examples", "*.json")))
IDS = [os.path.basename(p)[:-5] for p in EXAMPLES]


def float_inputs(spec):
    return [n for n, d in spec.get("inputs", {}).items() if d["dtype"] == "f32"]


def oracle(spec, arrays, dO, dlse, extra_offsets):
    q, k, v, ins = da.make_torch_inputs(spec, arrays)
    o, lse = da.attention(spec, q, k, v, ins, **extra_offsets)
    loss = (o * torch.tensor(dO, dtype=torch.float64)).sum()
    if dlse is not None and lse is not None:
        finite = torch.isfinite(lse)
        loss = loss + torch.where(finite, lse, torch.zeros_like(lse)).mul(
            torch.tensor(dlse, dtype=torch.float64)).sum()
    wrt = [q, k, v] + [ins[n] for n in float_inputs(spec)]
    grads = torch.autograd.grad(loss, wrt, allow_unused=True)
    out = {"dq": grads[0], "dk": grads[1], "dv": grads[2]}
    for n, g in zip(float_inputs(spec), grads[3:]):
        out["d_" + n] = g
    return {name: (np.zeros(t.shape) if g is None else g.detach().numpy())
            for (name, g), t in zip(out.items(), wrt)}


def run_backward(path, backend, tmp, arrays, spec, dO, dlse, extra=()):
    files = {}
    for name, arr in arrays.items():
        files[name] = os.path.join(tmp, f"{name}.npy")
        np.save(files[name], arr)
    np.save(os.path.join(tmp, "do.npy"), dO)
    cmd = [ATTNC, "run", path, "--backend", backend, "--q", files["q"], "--k", files["k"],
           "--v", files["v"], "--do", os.path.join(tmp, "do.npy")]
    for name in spec.get("inputs", {}):
        cmd += ["--input", f"{name}={files[name]}"]
    outs = {g: os.path.join(tmp, f"{g}-{backend}.npy") for g in ("dq", "dk", "dv")}
    for g, f in outs.items():
        cmd += [f"--{g}", f]
    for n in float_inputs(spec):
        outs["d_" + n] = os.path.join(tmp, f"d_{n}-{backend}.npy")
        cmd += ["--dinput", f"{n}={outs['d_' + n]}"]
    if dlse is not None:
        np.save(os.path.join(tmp, "dlse.npy"), dlse)
        cmd += ["--dlse", os.path.join(tmp, "dlse.npy")]
    cmd += list(extra)
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stderr}"
    return {g: np.load(f) for g, f in outs.items()}


def compare(ref, got, rel, what):
    for name, want in ref.items():
        have = got[name]
        assert have.shape == want.shape, f"{what} {name}: shape {have.shape} vs {want.shape}"
        assert not np.isnan(have).any(), f"{what} {name}: NaN"
        # A tensor gradient sums up to B*H*Sq*Skv terms and can cancel to ~0 (a bias
        # shared by a whole softmax row has gradient 0): its error is relative to the
        # terms (up to 1 here), not to the sum.
        floor = 1.0 if name.startswith("d_") else 1e-3
        scale = max(float(np.abs(want).max()) if want.size else 0.0, floor)
        err = float(np.abs(have - want).max()) if want.size else 0.0
        assert err <= rel * scale, f"{what} {name}: max error {err:.3g} vs scale {scale:.3g}"


def case(spec, rng, batch, sq, skv):
    q, k, v, inputs = make_inputs(spec, batch, sq, skv, rng)
    arrays = {"q": q, "k": k, "v": v, **inputs}
    dv = spec.get("head_dim_v", spec["head_dim"])
    dO = rng.standard_normal((batch, spec["heads_q"], sq, dv)).astype(np.float32)
    wants_lse = "lse" in spec.get("outputs", [])
    dlse = (rng.standard_normal((batch, spec["heads_q"], sq)).astype(np.float32)
            if wants_lse else None)
    return arrays, dO, dlse


@pytest.mark.parametrize("path", EXAMPLES, ids=IDS)
def test_reference_gradients(path, tmp_path):
    seed = int.from_bytes(os.urandom(4), "little")
    rng = np.random.default_rng(seed)
    spec = load_spec(path)
    for batch, sq, skv in [(2, 17, 17), (1, 1, 33), (1, 40, 23)]:
        arrays, dO, dlse = case(spec, rng, batch, sq, skv)
        ref = oracle(spec, arrays, dO, dlse, {})
        got = run_backward(path, "reference", str(tmp_path), arrays, spec, dO, dlse)
        compare(ref, got, 1e-5, f"{os.path.basename(path)} seed={seed} {sq}x{skv}")


@pytest.mark.parametrize("path", EXAMPLES, ids=IDS)
def test_cpu_gradients(path, tmp_path):
    seed = int.from_bytes(os.urandom(4), "little")
    rng = np.random.default_rng(seed)
    spec = load_spec(path)
    # Several query and key blocks (16 x 16 tiles), odd lengths, seq_q != seq_kv.
    for batch, sq, skv, bm, bn in [(2, 40, 23, 16, 16), (1, 17, 50, 8, 32)]:
        arrays, dO, dlse = case(spec, rng, batch, sq, skv)
        ref = oracle(spec, arrays, dO, dlse, {})
        got = run_backward(path, "cpu", str(tmp_path), arrays, spec, dO, dlse,
                           ["--block-m", str(bm), "--block-n", str(bn)])
        compare(ref, got, 1e-4, f"{os.path.basename(path)} seed={seed} {sq}x{skv} "
                                f"tile={bm}x{bn}")


def test_offsets_and_masked_rows(tmp_path):
    """Explicit offsets leave rows with no allowed key: their gradients are 0."""
    path = os.path.join(ROOT, "specs", "examples", "mistral-swa.json")
    spec = load_spec(path)
    rng = np.random.default_rng(int.from_bytes(os.urandom(4), "little"))
    arrays, dO, dlse = case(spec, rng, 1, 30, 20)
    offsets = ["--q-offset", "-10", "--kv-offset", "0"]
    ref = oracle(spec, arrays, dO, dlse, {"q_offset": -10, "kv_offset": 0})
    for backend in ("reference", "cpu"):
        got = run_backward(path, backend, str(tmp_path), arrays, spec, dO, dlse,
                           offsets + (["--block-m", "16", "--block-n", "16"]
                                      if backend == "cpu" else []))
        compare(ref, got, 1e-4, f"{backend} offsets")
        # Query rows 0..9 sit at positions -10..-1: no key is at or before them.
        assert (got["dq"][:, :, :10] == 0).all()


def test_cpu_backward_is_deterministic(tmp_path):
    path = os.path.join(ROOT, "specs", "examples", "t5-bias.json")
    spec = load_spec(path)
    rng = np.random.default_rng(int.from_bytes(os.urandom(4), "little"))
    arrays, dO, dlse = case(spec, rng, 2, 37, 45)
    a = run_backward(path, "cpu", str(tmp_path), arrays, spec, dO, dlse,
                     ["--block-m", "16", "--block-n", "16"])
    b = run_backward(path, "cpu", str(tmp_path), arrays, spec, dO, dlse,
                     ["--block-m", "16", "--block-n", "16"])
    for name in a:
        assert a[name].tobytes() == b[name].tobytes(), name


def run_cli(args):
    return subprocess.run([ATTNC, "run"] + args, capture_output=True, text=True)


def test_gradient_flags_are_checked(tmp_path):
    path = os.path.join(ROOT, "specs", "examples", "document.json")
    spec = load_spec(path)
    rng = np.random.default_rng(0)
    arrays, dO, _ = case(spec, rng, 1, 9, 9)
    for name, arr in arrays.items():
        np.save(os.path.join(tmp_path, f"{name}.npy"), arr)
    np.save(os.path.join(tmp_path, "do.npy"), dO)
    base = [path, "--backend", "reference", "--q", str(tmp_path / "q.npy"),
            "--k", str(tmp_path / "k.npy"), "--v", str(tmp_path / "v.npy"),
            "--input", f"doc={tmp_path / 'doc.npy'}", "--do", str(tmp_path / "do.npy")]
    r = run_cli(base + ["--dinput", f"doc={tmp_path / 'd.npy'}"])
    assert r.returncode != 0 and "--dinput doc" in r.stderr and "integer input" in r.stderr
    r = run_cli(base + ["--dinput", f"nope={tmp_path / 'd.npy'}"])
    assert r.returncode != 0 and "declares no input 'nope'" in r.stderr
    r = run_cli([path, "--backend", "reference", "--q", str(tmp_path / "q.npy"),
                 "--k", str(tmp_path / "k.npy"), "--v", str(tmp_path / "v.npy"),
                 "--input", f"doc={tmp_path / 'doc.npy'}", "--dq", str(tmp_path / "x.npy"),
                 "--out", str(tmp_path / "o.npy")])
    assert r.returncode != 0 and "--dq needs --do" in r.stderr
    np.save(os.path.join(tmp_path, "bad.npy"), dO[:, :, :3])
    bad = list(base)
    bad[bad.index("--do") + 1] = str(tmp_path / "bad.npy")
    r = run_cli(bad + ["--dq", str(tmp_path / "x.npy")])
    assert r.returncode != 0 and "dO: expected" in r.stderr
    r = run_cli([a if a != "reference" else "gpu-sim" for a in base] +
                ["--dq", str(tmp_path / "x.npy")])
    assert r.returncode != 0 and "not built yet" in r.stderr


@pytest.mark.parametrize("name", ["t5-bias", "causal", "sigmoid"])
def test_empty_shapes(name, tmp_path):
    """Skv = 0 (every row fully masked), B = 0 and Sq = 0: gradients of the right
    shapes, zero where there is nothing to differentiate."""
    path = os.path.join(ROOT, "specs", "examples", f"{name}.json")
    spec = load_spec(path)
    rng = np.random.default_rng(int.from_bytes(os.urandom(4), "little"))
    for batch, sq, skv in [(1, 5, 0), (0, 4, 4), (1, 0, 6)]:
        arrays, dO, dlse = case(spec, rng, batch, sq, skv)
        ref = oracle(spec, arrays, dO, dlse, {})
        for backend, extra in [("reference", []), ("cpu", ["--block-m", "16", "--block-n", "16"])]:
            got = run_backward(path, backend, str(tmp_path), arrays, spec, dO, dlse, extra)
            compare(ref, got, 1e-4, f"{name} {backend} B={batch} Sq={sq} Skv={skv}")
            if skv == 0:
                assert not got["dq"].any()
