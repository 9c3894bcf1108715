"""Attune's host kernels (a bundle's host variant through the runtime, from Python)
against PyTorch's own CPU attention, on this machine, in one run.

    /usr/bin/python3 bench/cpu_compare.py [--lengths 1024,2048,4096] [--dtypes f32,bf16]
        [--patterns dense,causal,...] [--threads N] [--out bench/results/cpu-....md]

PyTorch's side: q @ k^T * scale, the pattern's score transform, the mask (built once
from the spec, outside the timing, as create_block_mask would be), softmax, @ v, in
the run's dtype; and F.scaled_dot_product_attention with that mask where the
installed torch has it (>= 2.0; Debian's 1.13 has not: the column says so). FLOPs
are 4 * D per allowed (query, key) pair (the pairs the mask keeps), for both sides, so
GFLOP/s compare the same work. Each cell is the median of `--repeats` runs after one
warm-up. The max error of each against a float64 evaluation is checked at the
smallest length (and must be within the dtype's tolerance: fp32 1e-4, bf16 3e-2), the
float64 evaluation being the PyTorch formula in float64 on the same (rounded) inputs.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))
sys.path.insert(0, str(REPO / "test" / "e2e"))
import attune  # noqa: E402
import dense_autograd as da  # noqa: E402
from attune_inputs import make_inputs  # noqa: E402

PATTERNS = ["dense", "causal", "sliding-window", "document", "alibi", "softcap"]
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}
TOLERANCE = {"f32": 1e-4, "bf16": 3e-2}


def spec_of(pattern):
    return json.loads((REPO / "bench" / "specs" / f"{pattern}-d64.json").read_text())


def transform(spec, s, Hq, S):
    """The spec's score transforms on the [B, H, S, S] scores, in torch (only the ones
    the bench specs use)."""
    for t in spec.get("score", []):
        (name, p), = t.items()
        if name == "softcap":
            s = p["cap"] * torch.tanh(s / p["cap"])
        elif name == "alibi":
            slopes = torch.tensor(p.get("slopes") or da.alibi_slopes(Hq), dtype=s.dtype)
            i = torch.arange(S).view(S, 1)
            j = torch.arange(S).view(1, S)
            s = s - slopes.view(1, Hq, 1, 1) * (i - j).to(s.dtype)
        else:
            raise SystemExit(f"bench/cpu_compare.py: no torch baseline for score {name}")
    return s


def torch_attention(spec, q, k, v, mask):
    Hq, S, D = q.shape[1], q.shape[2], q.shape[3]
    group = Hq // k.shape[1]
    if group > 1:
        k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    s = (q @ k.transpose(-1, -2)) * spec.get("scale", D ** -0.5)
    s = transform(spec, s, Hq, S)
    s = s.masked_fill(~mask, float("-inf")).softmax(-1)
    return torch.nan_to_num(s) @ v


def timed(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", default="1024,2048,4096")
    ap.add_argument("--dtypes", default="f32,bf16")
    ap.add_argument("--patterns", default=",".join(PATTERNS))
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    lengths = [int(x) for x in a.lengths.split(",")]
    threads = a.threads or os.cpu_count()
    torch.set_num_threads(threads)
    sdpa = getattr(torch.nn.functional, "scaled_dot_product_attention", None)
    rows = []
    header = (f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
              f"{threads} threads; torch {torch.__version__}; B=1, heads 16, head_dim 64")
    print(header, flush=True)
    cols = "| pattern | dtype | S | Attune GFLOP/s | torch GFLOP/s | ratio | SDPA GFLOP/s | err Attune | err torch |"
    print(cols)
    print("|---|---|---|---|---|---|---|---|---|")
    for pattern in a.patterns.split(","):
        spec = spec_of(pattern)
        kernel = attune.compile(spec, arch="host")
        for dname in a.dtypes.split(","):
            dtype = DTYPES[dname]
            for S in lengths:
                rng = np.random.default_rng(S)
                q, k, v, ins = make_inputs(spec, 1, S, S, rng)
                qt, kt, vt = (torch.from_numpy(x).to(dtype) for x in (q, k, v))
                it = {n: torch.from_numpy(x) for n, x in ins.items()}
                mask = da.allowed_mask(spec, 1, spec["heads_q"], S, S,
                                       {n: t.long() for n, t in it.items()})
                pairs = int(mask.sum())
                flops = 4.0 * spec["head_dim"] * pairs
                t_att = timed(lambda: kernel(qt, kt, vt, num_threads=threads, **it), a.repeats)
                t_torch = timed(lambda: torch_attention(spec, qt, kt, vt, mask), a.repeats)
                t_sdpa = None
                if sdpa is not None and not spec.get("score"):
                    t_sdpa = timed(lambda: sdpa(qt, kt, vt, attn_mask=mask), a.repeats)
                err_a = err_t = ""
                if S == lengths[0]:
                    # float64 by the same dense formula (the oracle of the tests,
                    # dense_autograd, gathers per pair: too big at these lengths).
                    qd, kd, vd = (t.double() for t in (qt, kt, vt))
                    ref = torch_attention(spec, qd, kd, vd, mask)
                    scale = float(ref.abs().max())
                    ea = float((kernel(qt, kt, vt, **it).double() - ref).abs().max()) / scale
                    et = float((torch_attention(spec, qt, kt, vt, mask).double() - ref).abs().max()) / scale
                    assert ea <= TOLERANCE[dname], f"{pattern} {dname}: Attune error {ea:.3g}"
                    err_a, err_t = f"{ea:.1e}", f"{et:.1e}"
                g_att, g_torch = flops / t_att / 1e9, flops / t_torch / 1e9
                row = (f"| {pattern} | {dname} | {S} | {g_att:.1f} | {g_torch:.1f} | "
                       f"{g_att / g_torch:.2f} | "
                       f"{'n/a (torch < 2.0)' if sdpa is None else ('-' if t_sdpa is None else f'{flops / t_sdpa / 1e9:.1f}')} | "
                       f"{err_a} | {err_t} |")
                print(row, flush=True)
                rows.append(row)
    if a.out:
        text = [f"# Attune host kernels vs PyTorch CPU attention ({time.strftime('%Y-%m-%d')})",
                "", "`/usr/bin/python3 bench/cpu_compare.py " + " ".join(sys.argv[1:]) + "`", "",
                header, "", cols, "|---|---|---|---|---|---|---|---|---|", *rows, ""]
        Path(a.out).write_text("\n".join(text))


if __name__ == "__main__":
    main()
