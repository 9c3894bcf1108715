"""Paged decoding on the CPU: Attune's host variant over a paged KV cache (the spec's
"storage": {"q": "ragged", "kv": "paged"}; cu_seqlens_q, page_table, kv_lens) against
PyTorch on the same cache, gathered to dense per sequence then attention, in one run.

    /usr/bin/python3 bench/cpu_decode.py [--batches 1,4,16] [--contexts 1024,4096,16384]
        [--q-tokens 1] [--page-size 16] [--threads N] [--repeats 5] [--out FILE.md]

Llama-style GQA: 32 query heads, 8 kv heads, head_dim 128, causal, float32 (the host
kernels compute in float32), contexts ragged around the given length (0.5x to 1x, so
that sequences differ), pages shuffled. Columns: time per decode step, tokens/s
(sequences x q tokens per second), and the bandwidth of reading the cache: bytes of
K and V the step must read (2 x sum(kv_len) x Hkv x D x 4) per second. PyTorch's side
gathers each sequence's pages (index_select) and runs softmax(q k^T * scale) v with
the kv heads repeated; its gather is part of its time, as it is of a serving engine
without a paged kernel. Each cell is the median of --repeats runs after a warm-up;
both results are checked against a float64 evaluation (max error must be < 1e-4).
"""

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))
import attune  # noqa: E402

HQ, HKV, D = 32, 8, 128


def compile_kernel(tmp):
    spec = {"name": "decode_paged", "heads_q": HQ, "heads_kv": HKV, "head_dim": D, "dtype": "f32",
            "mask": {"causal": {}}, "storage": {"q": "ragged", "kv": "paged"}}
    path = Path(tmp) / "decode-paged.json"
    path.write_text(json.dumps(spec))
    return attune.compile(str(path), arch="host")


def make_batch(batch, context, q_tokens, page_size, rng):
    kv_lens = [int(context * (0.5 + 0.5 * rng.random())) if batch > 1 else context
               for _ in range(batch)]
    kv_lens = [max(n, q_tokens) for n in kv_lens]
    used = [math.ceil(n / page_size) for n in kv_lens]
    pages = sum(used)
    ids = torch.from_numpy(rng.permutation(pages).astype(np.int64))
    table = torch.full((batch, max(used)), -1, dtype=torch.int32)
    at = 0
    for b, u in enumerate(used):
        table[b, :u] = ids[at:at + u].to(torch.int32)
        at += u
    k_cache = torch.randn(pages, page_size, HKV, D)
    v_cache = torch.randn(pages, page_size, HKV, D)
    q = torch.randn(batch * q_tokens, HQ, D)
    cu = torch.arange(0, batch * q_tokens + 1, q_tokens, dtype=torch.int32)
    return q, k_cache, v_cache, table, torch.tensor(kv_lens, dtype=torch.int32), cu


def torch_decode(q, k_cache, v_cache, table, kv_lens, q_tokens, dtype=torch.float32):
    """Gather each sequence's pages, then causal attention (bottom-right) per sequence."""
    page_size = k_cache.shape[1]
    out = torch.empty(q.shape, dtype=dtype)
    scale = 1.0 / math.sqrt(D)
    for b in range(table.shape[0]):
        n = int(kv_lens[b])
        pages = table[b, :math.ceil(n / page_size)].long()
        k = k_cache.index_select(0, pages).reshape(-1, HKV, D)[:n].to(dtype)
        v = v_cache.index_select(0, pages).reshape(-1, HKV, D)[:n].to(dtype)
        k = k.transpose(0, 1).repeat_interleave(HQ // HKV, 0)  # [HQ, n, D]
        v = v.transpose(0, 1).repeat_interleave(HQ // HKV, 0)
        qb = q[b * q_tokens:(b + 1) * q_tokens].to(dtype).transpose(0, 1)  # [HQ, t, D]
        s = qb @ k.transpose(1, 2) * scale
        i = torch.arange(q_tokens).view(-1, 1) + (n - q_tokens)
        j = torch.arange(n).view(1, -1)
        s = s.masked_fill(j > i, float("-inf"))
        out[b * q_tokens:(b + 1) * q_tokens] = (torch.softmax(s, -1) @ v).transpose(0, 1)
    return out


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
    ap.add_argument("--batches", default="1,4,16")
    ap.add_argument("--contexts", default="1024,4096,16384")
    ap.add_argument("--q-tokens", type=int, default=1)
    ap.add_argument("--page-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out")
    args = ap.parse_args()
    threads = args.threads or os.cpu_count()
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    lines = [
        f"# Paged decode on the CPU ({platform.processor() or platform.machine()}, "
        f"{threads} threads, torch {torch.__version__})",
        "",
        f"GQA {HQ}/{HKV} heads, d{D}, causal, f32, page_size {args.page_size}, "
        f"{args.q_tokens} query token(s) per sequence, contexts 0.5-1x the column's.",
        "",
        "| batch | context | Attune ms | Attune tok/s | Attune GB/s | torch ms | torch GB/s "
        "| ratio | max err Attune / torch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        kernel = compile_kernel(tmp)
        for batch in [int(x) for x in args.batches.split(",")]:
            for context in [int(x) for x in args.contexts.split(",")]:
                q, kc, vc, table, kv_lens, cu = make_batch(batch, context, args.q_tokens,
                                                           args.page_size, rng)
                run = lambda: kernel(q, kc, vc, cu_seqlens_q=cu, page_table=table,  # noqa: E731
                                     kv_lens=kv_lens, num_threads=threads)
                ta = timed(run, args.repeats)
                tt = timed(lambda: torch_decode(q, kc, vc, table, kv_lens, args.q_tokens),
                           args.repeats)
                ref = torch_decode(q, kc, vc, table, kv_lens, args.q_tokens, torch.float64)
                ea = float((run().double() - ref).abs().max())
                et = float((torch_decode(q, kc, vc, table, kv_lens, args.q_tokens).double()
                            - ref).abs().max())
                assert ea < 1e-4 and et < 1e-4, (ea, et)
                nbytes = 2 * int(kv_lens.sum()) * HKV * D * 4
                row = (f"| {batch} | {context} | {ta * 1e3:.2f} | {batch * args.q_tokens / ta:.0f} "
                       f"| {nbytes / ta / 1e9:.1f} | {tt * 1e3:.2f} | {nbytes / tt / 1e9:.1f} "
                       f"| {tt / ta:.2f} | {ea:.1e} / {et:.1e} |")
                lines.append(row)
                print(row, flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
