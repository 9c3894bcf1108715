#!/usr/bin/env python3
"""The key schedule's share of the NVIDIA kernel's operations, on the simulator.

For a document mask over packed documents (equal lengths, ids 0, 1, 2, ... along the
sequence), 8k-128k tokens and 4-256 documents, runs the kernel on the functional SIMT
simulator (`attnc run --backend gpu-sim`) with ATTUNE_SIM_OP_COUNTS set: the simulator
counts every op a CTA executes (once for all its threads, as a GPU issues one
instruction per warp; constants and index casts are not counted: no instructions)
and, separately, those located at the key schedule (passes/KvSchedule.h tags them
attn.kv_schedule: the kv_ranges set-up with its binary searches, the walk over key
blocks and every visited tile's classification). The share is schedule / all.

A whole 128k grid is too slow to simulate here, so ATTUNE_SIM_SAMPLE_X=k simulates
every k-th query block (CTA) only, ~`--ctas` of them, and the share is that of the
sampled CTAs (documents have equal lengths, so CTAs differ only by where document
boundaries fall; `--check` reruns one case unsampled to compare). The same ids are
run with "sorted": true (search-based key ranges) and without (today's schedule:
every key block of every query block classified).

No GPU timing here: that needs a GPU (bench/gpu_compare.py).

  /usr/bin/python3 bench/schedule_share.py [--tokens 8192,32768,131072]
      [--docs 4,16,64,256] [--ctas 12] [--block 64x64] [--head-dim 64] [--check] [--no-unsorted]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
ATTNC = os.environ.get("ATTNC", os.path.join(ROOT, "build", "tools", "attnc", "attnc"))


HEAD_DIM = 64


def spec(path, sorted_ids):
    doc = {"dtype": "i32", "shape": ["B", "Sq"]}
    if sorted_ids:
        doc["sorted"] = True
    s = {"name": "doc_share", "heads_q": 1, "head_dim": HEAD_DIM, "dtype": "bf16",
         "align": "top_left", "inputs": {"doc": doc}, "mask": {"document": {"q_ids": "doc"}}}
    with open(path, "w") as f:
        json.dump(s, f)


def run(tmp, n, docs, sorted_ids, sample, bm, bn):
    """(ctas simulated, all ops, schedule ops, seconds)."""
    path = os.path.join(tmp, f"spec-{int(sorted_ids)}.json")
    spec(path, sorted_ids)
    counts = os.path.join(tmp, "counts.txt")
    if os.path.exists(counts):
        os.remove(counts)
    files = {x: os.path.join(tmp, f"{x}.npy") for x in ("q", "k", "v", "doc")}
    env = dict(os.environ, ATTUNE_SIM_OP_COUNTS=counts, ATTUNE_SIM_SAMPLE_X=str(sample))
    cmd = [ATTNC, "run", path, "--backend", "gpu-sim", "--q", files["q"], "--k", files["k"],
           "--v", files["v"], "--input", f"doc={files['doc']}",
           "--out", os.path.join(tmp, "o.npy"), "--block-m", str(bm), "--block-n", str(bn)]
    t = time.time()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.time() - t
    # Sampled, the CTAs not simulated leave their rows unwritten and attnc rejects
    # the (non-finite) result after the counts are written: only then is that fine.
    if r.returncode != 0 and (sample == 1 or "not finite" not in r.stderr):
        raise RuntimeError(" ".join(cmd) + "\n" + r.stderr)
    ctas = total = sched = 0
    with open(counts) as f:
        for line in f:  # one line per launch (split-KV runs a merge kernel too)
            _, c, a, s = line.split()
            ctas, total, sched = ctas + int(c), total + int(a), sched + int(s)
    return ctas, total, sched, seconds


def inputs(tmp, n, docs):
    rng = np.random.default_rng(0)
    for x in ("q", "k", "v"):
        np.save(os.path.join(tmp, f"{x}.npy"), rng.standard_normal((1, 1, n, HEAD_DIM)).astype(np.float32))
    ids = (np.arange(n, dtype=np.int64) * docs // n).astype(np.int32)[None]
    np.save(os.path.join(tmp, "doc.npy"), ids)


def tiles_per_query_block(n, docs, bm, bn):
    """Mean number of key blocks holding a key of the query block's documents (the
    tiles the sorted schedule visits, all non-EMPTY here)."""
    ids = np.arange(n, dtype=np.int64) * docs // n
    lo = np.arange(0, n, bm)
    hi = np.minimum(lo + bm, n) - 1
    first = np.searchsorted(ids, ids[lo], "left")
    end = np.searchsorted(ids, ids[hi], "right")
    return float(np.mean(-(-end // bn) - first // bn))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", default="8192,16384,32768,65536,131072")
    ap.add_argument("--docs", default="4,16,64,256")
    ap.add_argument("--ctas", type=int, default=12, help="query blocks simulated per case")
    ap.add_argument("--block", default="64x64")
    ap.add_argument("--check", action="store_true", help="also run 8k/16 docs unsampled")
    ap.add_argument("--no-unsorted", action="store_true")
    ap.add_argument("--head-dim", type=int, default=64)
    args = ap.parse_args()
    global HEAD_DIM
    HEAD_DIM = args.head_dim
    bm, bn = map(int, args.block.split("x"))
    print(f"document mask, 1 head, head_dim {HEAD_DIM}, bf16, tile {bm}x{bn}; ops = ops the simulated "
          f"CTAs execute (not constants/index casts); schedule = ops at attn.kv_schedule")
    print()
    hdr = (f"{'tokens':>7} {'docs':>5} {'CTAs':>9} {'tiles/CTA':>9} {'sorted: sched/all':>22} "
           f"{'share':>7} {'unsorted: sched/all':>24} {'share':>7}")
    print(hdr)
    print("-" * len(hdr))
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(x) for x in args.tokens.split(",")]:
            for docs in [int(x) for x in args.docs.split(",")]:
                inputs(tmp, n, docs)
                qblocks = -(-n // bm)
                sample = max(1, qblocks // args.ctas)
                c, a, s, _ = run(tmp, n, docs, True, sample, bm, bn)
                tiles = tiles_per_query_block(n, docs, bm, bn)
                row = (f"{n:>7} {docs:>5} {c:>4}/{qblocks:<4} {tiles:>9.1f} "
                       f"{s:>10}/{a:<11} {100.0 * s / a:>6.2f}%")
                if not args.no_unsorted:
                    cu, au, su, _ = run(tmp, n, docs, False, sample, bm, bn)
                    row += f" {su:>11}/{au:<12} {100.0 * su / au:>6.2f}%"
                print(row, flush=True)
        if args.check:
            n, docs = 8192, 16
            inputs(tmp, n, docs)
            qblocks = -(-n // bm)
            for sample in (1, max(1, qblocks // args.ctas)):
                c, a, s, t = run(tmp, n, docs, True, sample, bm, bn)
                print(f"check 8k/16 docs sorted, every {sample}th CTA ({c} CTAs, {t:.0f}s): "
                      f"share {100.0 * s / a:.2f}%")


if __name__ == "__main__":
    sys.exit(main())
