#!/usr/bin/env python3
"""Compile time of every example spec through the whole host pipeline (import,
expand, fuse, analyze, tile, lower to LLVM, JIT), as `attnc run --timing` reports it.
Prints a table and writes it to bench/results/compile-times-<host>.md."""
import glob
import os
import platform
import re
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "test", "e2e"))
from attune_inputs import load_spec, make_inputs  # noqa: E402

ATTNC = os.path.join(ROOT, "build", "tools", "attnc", "attnc")


def main():
    rows = []
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for path in sorted(glob.glob(os.path.join(ROOT, "specs", "examples", "*.json"))):
            spec = load_spec(path)
            q, k, v, inputs = make_inputs(spec, 1, 8, 8, rng)
            files = {}
            for name, arr in [("q", q), ("k", k), ("v", v)] + list(inputs.items()):
                files[name] = os.path.join(tmp, name + ".npy")
                np.save(files[name], arr)
            cmd = [ATTNC, "run", path, "--backend", "cpu", "--timing", "--out",
                   os.path.join(tmp, "o.npy")]
            for n in ("q", "k", "v"):
                cmd += ["--" + n, files[n]]
            for n in inputs:
                cmd += ["--input", f"{n}={files[n]}"]
            r = subprocess.run(cmd, capture_output=True, text=True, check=True)
            m = re.search(r"compile ([0-9.e+-]+) s \(passes\) \+ ([0-9.e+-]+) s", r.stderr)
            rows.append((os.path.basename(path)[:-5], float(m.group(1)), float(m.group(2))))
    lines = ["| spec | passes (s) | LLVM JIT (s) | total (s) |", "|---|---|---|---|"]
    for name, p, j in rows:
        lines.append(f"| {name} | {p:.3f} | {j:.3f} | {p + j:.3f} |")
    total = [p + j for _, p, j in rows]
    lines.append(f"| **max** | | | {max(total):.3f} |")
    table = "\n".join(lines)
    print(table)
    out = os.path.join(ROOT, "bench", "results", f"compile-times-{platform.node() or 'host'}.md")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        f.write(f"# Host compile times ({platform.processor() or platform.machine()}, "
                f"{os.cpu_count()} cores)\n\nTile 64x64, O2 JIT.\n\n{table}\n")


if __name__ == "__main__":
    main()
