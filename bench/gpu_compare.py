#!/usr/bin/env python3
"""Attune against PyTorch on a GPU, in one run, on the same inputs.

For dense (causal and not), sliding window, document masks, ALiBi and softcap at
sequence lengths 1k-16k, head_dim 64 and 128, and Llama-style GQA prefill and decoding
(32 query heads on 8 kv heads, head_dim 128), bf16: the max error of Attune against
FlexAttention and SDPA, and the TFLOP/s of Attune, SDPA (flash and cuDNN back ends)
and compiled FlexAttention, timed with CUDA events (median after warm-up). FLOPs
count the pairs the mask allows (4 * H * D * pairs), so masked work is not credited.
Prints one table and writes it to bench/results/<gpu>-<date>.{md,json}.

Run on the GPU machine from the repository root, after building the runtime there
(cmake -S . -B build-rt -G Ninja -DATTUNE_RUNTIME_ONLY=ON && ninja -C build-rt) and
carrying bundles compiled here (bash bench/prepare_bundles.sh .carry/bundles):

  ATTUNE_RUNTIME_LIB=build-rt/runtime/libattune_runtime.so PYTHONPATH=python \\
      python3 bench/gpu_compare.py --bundles .carry/bundles [--seqs 1024,4096] [--dims 128]

Attune runs through attune.compile; its first call per shape bucket tunes the bundle's
variants, and the table also shows the default variant's time, so that the tuned
choice is seen to be no slower.
"""
import argparse
import datetime
import json
import math
import os
import statistics
import sys

import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "python"))

PATTERNS = ["dense", "causal", "sliding-window", "document", "alibi", "softcap", "gqa-causal",
            "decode", "decode-1"]
# "decode": one query per sequence, this many sequences; "decode-1": one sequence (long
# context, few CTAs: where split-KV matters). Both use bench/specs/decode-d128.json.
DECODE_BATCH = {"decode": 16, "decode-1": 1}
WINDOW = 1023  # bench/specs/sliding-window-*.json: left = 1023
CAP = 50.0


def alibi_slopes(n):
    def pow2(n):
        return [2 ** (-8 * (i + 1) / n) for i in range(n)]
    p = 2 ** int(math.floor(math.log2(n)))
    return pow2(p) if p == n else pow2(p) + pow2(2 * p)[0::2][: n - p]


def time_ms(fn, warmup=5, iters=20):
    """Median GPU time of one call, in ms. Each timed sample runs enough back-to-back
    calls to last about 2 ms, so that launch overhead on the host (which differs
    between the rivals' Python layers) hides behind the GPU's work as it does in a model."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    inner = max(1, min(100, int(2.0 / max(start.elapsed_time(end), 1e-3))))
    times = []
    for _ in range(iters):
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / inner)
    return statistics.median(times)


def make_doc(batch, seq, gen):
    doc = torch.zeros(batch, seq, dtype=torch.int32)
    for b in range(batch):
        cuts = sorted(torch.randint(1, seq, (max(1, seq // 2048 * 4),), generator=gen).tolist())
        for c in cuts:
            doc[b, c:] += 1
    return doc.cuda()


def mask_pairs(pattern, doc, seq):
    """Allowed (i, j) pairs over the batch, counted on the GPU in row chunks."""
    i = torch.arange(seq, device="cuda")[:, None]
    total = 0
    for b in range(doc.shape[0] if pattern == "document" else 1):
        for r0 in range(0, seq, 2048):
            ii = i[r0:r0 + 2048]
            j = torch.arange(seq, device="cuda")[None, :]
            if pattern == "dense":
                m = torch.ones_like(ii - j, dtype=torch.bool)
            elif pattern == "sliding-window":
                m = (ii >= j) & (ii - j <= WINDOW)
            elif pattern == "document":
                m = (ii >= j) & (doc[b, r0:r0 + 2048][:, None] == doc[b][None, :])
            else:
                m = ii >= j
            total += int(m.sum())
    return total * (1 if pattern == "document" else doc.shape[0])


def flex_mods(pattern, doc, slopes):
    def causal(b, h, q, kv):
        return q >= kv
    mask_mod, score_mod = None, None
    if pattern in ("causal", "alibi", "softcap", "gqa-causal"):
        mask_mod = causal
    elif pattern == "sliding-window":
        def mask_mod(b, h, q, kv):
            return (q >= kv) & (q - kv <= WINDOW)
    elif pattern == "document":
        def mask_mod(b, h, q, kv):
            return (q >= kv) & (doc[b, q] == doc[b, kv])
    if pattern == "alibi":
        def score_mod(s, b, h, q, kv):
            return s - slopes[h] * (q - kv)
    elif pattern == "softcap":
        def score_mod(s, b, h, q, kv):
            return CAP * torch.tanh(s / CAP)
    return mask_mod, score_mod


def default_variant(kernel):
    """The variant an untuned launch runs: the default of the newest arch that runs here
    (sm_90a only on compute capability 9.0; sm_80 code on any later GPU)."""
    major, minor = torch.cuda.get_device_capability()
    def runs(arch):
        num = int(arch[3:].rstrip("a"))
        return (major * 10 + minor == num) if arch.endswith("a") else major * 10 + minor >= num
    defaults = [v for v in kernel.info["variants"] if v["default"] and runs(v["arch"])]
    return max(defaults, key=lambda v: int(v["arch"][3:].rstrip("a")))["name"]


def bundle_name(pattern):
    return "decode" if pattern in DECODE_BATCH else pattern


def rel_err(a, b):
    a, b = a.float(), b.float()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-6))


def run_row(pattern, d, seq, args, attune, flex_compiled, create_block_mask, gen):
    kernel = attune.compile(os.path.join(args.bundles, f"{bundle_name(pattern)}-d{d}"))
    hq, hkv = kernel.heads_q, kernel.heads_kv
    decode = pattern in DECODE_BATCH
    batch = DECODE_BATCH[pattern] if decode else max(1, args.tokens // seq)
    sq = 1 if decode else seq
    q = torch.randn(batch, hq, sq, d, dtype=torch.bfloat16, device="cuda")
    k, v = (torch.randn(batch, hkv, seq, d, dtype=torch.bfloat16, device="cuda") for _ in range(2))
    doc = make_doc(batch, seq, gen) if pattern == "document" else torch.zeros(batch, 1, dtype=torch.int32, device="cuda")
    slopes = torch.tensor(alibi_slopes(hq), device="cuda", dtype=torch.float32)
    # A decoding query sees every key (bottom-right causal with Sq = 1).
    pairs = batch * seq if decode else mask_pairs(pattern, doc, seq)
    flops = 4.0 * hq * d * pairs
    row = {"pattern": pattern, "head_dim": d, "seq": seq, "batch": batch, "heads": f"{hq}/{hkv}"}

    extra = {"doc": doc} if pattern == "document" else {}
    o_attune = kernel(q, k, v, **extra)  # tunes this shape bucket on first use
    row["attune_variant"] = kernel.selected_variant(q, k, v, **extra)
    row["attune_ms"] = time_ms(lambda: kernel(q, k, v, **extra))
    row["attune_tflops"] = flops / row["attune_ms"] / 1e9
    default = default_variant(kernel)
    row["default_ms"] = (row["attune_ms"] if default == row["attune_variant"] else
                         time_ms(lambda: kernel(q, k, v, variant=default, **extra)))
    row["tuned_speedup"] = row["default_ms"] / row["attune_ms"]
    gqa = {"enable_gqa": True} if hq != hkv else {}

    mask_mod, score_mod = flex_mods(pattern, doc, slopes)
    try:
        block_mask = (create_block_mask(mask_mod, batch if pattern == "document" else None, None, sq, seq)
                      if mask_mod else None)
        o_flex = flex_compiled(q, k, v, score_mod=score_mod, block_mask=block_mask, **gqa)
        row["flex_ms"] = time_ms(lambda: flex_compiled(q, k, v, score_mod=score_mod,
                                                       block_mask=block_mask, **gqa))
        row["flex_tflops"] = flops / row["flex_ms"] / 1e9
        row["err_vs_flex"] = rel_err(o_attune, o_flex)
    except Exception as e:  # noqa: BLE001 - reported in the table
        row["flex_error"] = str(e).splitlines()[0][:120]

    if pattern in ("dense", "causal", "gqa-causal") or decode:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        import torch.nn.functional as F
        causal = pattern in ("causal", "gqa-causal")
        for name, backend in (("sdpa_flash", SDPBackend.FLASH_ATTENTION),
                              ("sdpa_cudnn", SDPBackend.CUDNN_ATTENTION)):
            # GQA natively where the back end takes it, else on kv heads repeated.
            tries = [(k, v, gqa)] + ([(k.repeat_interleave(hq // hkv, 1),
                                       v.repeat_interleave(hq // hkv, 1), {})] if gqa else [])
            for kk, vv, kw in tries:
                try:
                    with sdpa_kernel(backend):
                        def sdpa():
                            return F.scaled_dot_product_attention(q, kk, vv, is_causal=causal, **kw)
                        o = sdpa()
                        row[name + "_ms"] = time_ms(sdpa)
                    row[name + "_tflops"] = flops / row[name + "_ms"] / 1e9
                    row["err_vs_" + name] = rel_err(o_attune, o)
                    row.pop(name + "_error", None)
                    break
                except Exception as e:  # noqa: BLE001
                    row[name + "_error"] = str(e).splitlines()[0][:120]
    rivals = [row[k] for k in ("flex_tflops", "sdpa_flash_tflops", "sdpa_cudnn_tflops") if k in row]
    if rivals:
        row["ratio_vs_best"] = row["attune_tflops"] / max(rivals)
    return row


def fmt(x, spec="{:.1f}"):
    return "-" if x is None else spec.format(x)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundles", required=True, help="directory of bundles from bench/prepare_bundles.sh")
    p.add_argument("--seqs", default="1024,2048,4096,8192,16384")
    p.add_argument("--dims", default="64,128")
    p.add_argument("--patterns", default=",".join(PATTERNS))
    p.add_argument("--tokens", type=int, default=16384, help="batch * seq per row")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_compare.py needs a CUDA GPU")
    import attune
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    flex_compiled = torch.compile(flex_attention, dynamic=False)
    gen = torch.Generator().manual_seed(0)
    gpu = torch.cuda.get_device_name()
    rows = []
    for pattern in args.patterns.split(","):
        for d in map(int, args.dims.split(",")):
            if not os.path.isdir(os.path.join(args.bundles, f"{bundle_name(pattern)}-d{d}")):
                continue  # gqa-causal and decode come in head_dim 128 only
            for seq in map(int, args.seqs.split(",")):
                try:
                    row = run_row(pattern, d, seq, args, attune, flex_compiled, create_block_mask, gen)
                except Exception as e:  # noqa: BLE001
                    row = {"pattern": pattern, "head_dim": d, "seq": seq, "error": str(e)[:200]}
                rows.append(row)
                print(json.dumps(row), flush=True)
    header = ("| pattern | D | seq | B | heads q/kv | Attune TFLOP/s | SDPA flash | SDPA cuDNN | Flex | "
              "Attune / best | err vs Flex | err vs SDPA | tuned variant | tuned / default |")
    lines = [f"# Attune vs PyTorch on {gpu} ({datetime.date.today()})", "",
             f"bf16, batch * seq = {args.tokens} (decode / decode-1: {DECODE_BATCH['decode']} / 1 "
             "sequences of one query against seq keys); TFLOP/s count allowed pairs only (4 * Hq * D * pairs); CUDA "
             "events, median of 20 samples (each ~2 ms of back-to-back calls) after 5 warm-ups.",
             "", header, "|" + "---|" * 14]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['pattern']} | {r['head_dim']} | {r['seq']} | | | error: {r['error']} | | | | | | | | |")
            continue
        lines.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            r["pattern"], r["head_dim"], r["seq"], r["batch"], r["heads"], fmt(r.get("attune_tflops")),
            fmt(r.get("sdpa_flash_tflops")), fmt(r.get("sdpa_cudnn_tflops")), fmt(r.get("flex_tflops")),
            fmt(r.get("ratio_vs_best"), "{:.2f}"), fmt(r.get("err_vs_flex"), "{:.1e}"),
            fmt(r.get("err_vs_sdpa_flash"), "{:.1e}"), r.get("attune_variant", "-"),
            fmt(r.get("tuned_speedup"), "{:.2f}")))
    table = "\n".join(lines)
    print(table)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"{gpu.replace(' ', '_')}-{datetime.date.today()}")
    open(stem + ".md", "w").write(table + "\n")
    json.dump(rows, open(stem + ".json", "w"), indent=1)


if __name__ == "__main__":
    main()
