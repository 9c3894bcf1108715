#!/usr/bin/env python3
"""The main job: explain an example spec, compile it to PTX (a kernel bundle), and run
it on random inputs through attnc's back ends, checking every answer against the
float64 reference: the host JIT (fp32, 1e-5) and the NVIDIA kernel on the SIMT
simulator (bf16 inputs, 2e-2)."""
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "test", "e2e"))
from attune_inputs import load_spec, make_inputs, round_to  # noqa: E402

ATTNC = os.path.join(ROOT, "build", "tools", "attnc", "attnc")


def attnc(*args, capture=True):
    r = subprocess.run([ATTNC, *args], capture_output=capture, text=True)
    if r.returncode != 0:
        sys.exit(f"attnc {args[0]} failed:\n{r.stderr}")
    return r.stdout


def run(spec_path, backend, tmp, files, inputs, lse):
    out = os.path.join(tmp, f"o-{backend}.npy")
    cmd = ["run", spec_path, "--backend", backend, "--q", files["q"], "--k", files["k"],
           "--v", files["v"], "--out", out]
    for name in inputs:
        cmd += ["--input", f"{name}={files[name]}"]
    if lse:
        cmd += ["--lse", os.path.join(tmp, f"lse-{backend}.npy")]
    attnc(*cmd)
    return np.load(out)


def check(name, ref, got, tol):
    assert not np.isnan(got).any(), f"{name}: NaN"
    err = float(np.abs(got - ref).max()) / max(float(np.abs(ref).max()), 1e-6)
    status = "ok" if err <= tol else "FAILED"
    print(f"  {name:8s} max relative error {err:.2e} (tolerance {tol:g}): {status}")
    return err <= tol


def main():
    spec_path = sys.argv[1]
    spec = load_spec(spec_path)
    print(attnc("explain", spec_path).split("\nattn IR:")[0])
    with tempfile.TemporaryDirectory() as tmp:
        bundle = os.path.join(tmp, "bundle")
        print("compile to PTX:")
        print("  " + attnc("compile", spec_path, "-o", bundle).strip().replace("\n", "\n  "))
        seed = int.from_bytes(os.urandom(4), "little")
        rng = np.random.default_rng(seed)
        ok = True
        for label, (batch, seq_q, seq_kv), backends in [
                ("host JIT vs reference", (2, 300, 437), [("cpu", 1e-5)]),
                ("GPU kernel (simulated) vs reference", (1, 100, 150), [("gpu-sim", 2e-2)])]:
            q, k, v, inputs = make_inputs(spec, batch, seq_q, seq_kv, rng)
            if backends[0][0] == "gpu-sim":
                q, k, v = (round_to(x, spec.get("dtype", "bf16")) for x in (q, k, v))
            files = {}
            for name, arr in [("q", q), ("k", k), ("v", v)] + list(inputs.items()):
                files[name] = os.path.join(tmp, name + ".npy")
                np.save(files[name], arr)
            lse = "lse" in spec.get("outputs", [])
            print(f"{label}: B={batch} Sq={seq_q} Skv={seq_kv} (seed {seed})")
            ref = run(spec_path, "reference", tmp, files, inputs, lse)
            for backend, tol in backends:
                ok &= check(backend, ref, run(spec_path, backend, tmp, files, inputs, lse), tol)
    print("main job OK" if ok else "main job FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
