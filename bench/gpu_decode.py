#!/usr/bin/env python3
"""Paged-KV decoding on a GPU: Attune against SDPA and FlexAttention on the same cache.

Spec bench/specs/decode-paged-d128.json: Llama-style GQA (32 query heads on 8 kv heads),
head_dim 128, bf16, bottom-right causal (each query sees its whole context), ragged q
[total_q, Hq, D] with cu_seqlens_q, a paged cache k/v [pages, page_size, Hkv, D] with
page_table [B, max_pages] and kv_lens [B] (vLLM's convention), pages shuffled.

For each (batch, context) row, on the same data:
- Attune: the default variant with the runtime's split-KV choice (per-sequence calls
  are not tuned), and, when the bundle has several variants, the best of the variants
  forced by name with num_splits in {None, 1, 4, 16} (only those whose output agrees
  with the float64 reference count).
- SDPA on the cache gathered once (outside the timing) into dense [B, Hkv, L, D]
  (enable_gqa=True where torch has it, else kv heads repeated; a bottom-right/length
  mask when q_len > 1 or the lengths differ); the first back end that takes the call
  among flash, efficient, cuDNN, then torch's own choice, is named in the table.
- FlexAttention: torch.nn.attention.experimental._paged_attention.PagedAttention on the
  same pages and page table (the cache re-laid as the [1, Hkv, pages * page_size, D]
  tensor it indexes) when torch has it, else (or when it fails) compiled flex_attention
  over the gathered dense KV with a block mask for the lengths; the table says which.
Columns: time per call from CUDA events around back-to-back calls (median of 20
samples of ~2 ms each after warm-up, as bench/gpu_compare.py; Attune is called with
max_seqlen_q / max_seqlen_kv, so its runtime reads none of the sequence arrays and
does not synchronise), the wall-clock time of one isolated call (call + synchronize: host overhead and
launch latency show here), tokens/s (batch * q_len / time), the bandwidth of reading
the cache (sum(kv_lens) * Hkv * D * 2 bytes * 2 (k and v) / time) and its share of the
HBM peak (H200 4.8 TB/s, H100 SXM 3.35, else n/a), and each result's max error
against a float64 reference (max |o - ref| / max |ref|, on a sample of 2 sequences,
computed in float64 on the GPU from the paged cache directly).

  ATTUNE_RUNTIME_LIB=build-rt/runtime/libattune_runtime.so PYTHONPATH=python \\
      python3 bench/gpu_decode.py --bundle /tmp/bb/bundles/decode-paged-d128 \\
      [--batches 1,16,64] [--contexts 1024,4096,16384,32768,131072] [--rows 1:4096,64:32768]
      [--q-len 1|4] [--mixed] [--page-size 16] [--sweep none|arch|all] [--rivals sdpa,flex]
      [--max-kv-gb 40] [--time-budget SECONDS]

Rows whose K/V would exceed --max-kv-gb are skipped (reported); the dense rivals also
need the gathered copy (the same size again) and are skipped, saying so, when the GPU
lacks the memory. A failing rival prints its error in its cell; a failing forced
variant is listed under the table; a lost CUDA context (a faulting kernel) stops the
run with the rows measured so far written.

--dry-run (CPU, no CUDA; torch 1.13 is enough) builds the inputs at a tiny size, checks
the gathered dense KV against the paged cache, every rival's mask (SDPA's boolean mask,
flex's mask_mod, PagedAttention's page maps) against the float64 reference, runs
Attune's host variant when a runtime library is found (ATTUNE_RUNTIME_LIB; the spec is
compiled with --arch host through ATTUNE_ATTNC) and, on the mixed-length cases, the
NVIDIA kernel on the simulator (attnc run --backend gpu-sim, default and --wgmma
--num-splits 2) on the same data, and prints the planned rows.
--cpu-smoke runs a GPU row's own code (the sweep, the rivals, the table and the files)
on CPU tensors with torch.cuda's timing stubbed, to test this script; its numbers mean
nothing.
Results: bench/results/decode-<gpu>-<date>[-q<N>][-mixed].{md,json} (or --out DIR),
rewritten after every row so that a run cut short keeps what it measured.
"""
import argparse
import datetime
import faulthandler
import json
import math
import os
import statistics
import sys
import time
import traceback

import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "python"))
SPEC = os.path.join(ROOT, "bench", "specs", "decode-paged-d128.json")

HQ, HKV, D = 32, 8, 128
ELEM = 2  # bf16 bytes
SPLITS = (None, 1, 4, 16)
TOL = 2e-2  # of max |ref|: bf16 inputs and output (test/gpu/check.py's tolerance)
DEV = "cuda"  # "cpu" under --cpu-smoke


def peak_bw(name):
    """HBM peak in bytes/s from the device name, or None."""
    n = name.upper()
    if "H200" in n:
        return 4.8e12
    if "H100" in n:
        if "PCIE" in n:
            return 2.0e12
        if "NVL" in n:
            return 3.9e12
        return 3.35e12
    return None


def kv_bytes(kv_lens, hkv=HKV, d=D):
    return int(sum(int(n) for n in kv_lens)) * hkv * d * ELEM * 2


def plan(batches, contexts, q_len, max_kv_gb, pairs=None):
    """(batch, context, skip reason or None) for every combination (or for `pairs`)."""
    rows = []
    for b, c in pairs or [(b, c) for b in batches for c in contexts]:
        gb = b * c * HKV * D * ELEM * 2 / 1e9
        why = None
        if c < q_len:
            why = f"context {c} < q_len {q_len}"
        elif gb > max_kv_gb:
            why = f"K/V {gb:.1f} GB > --max-kv-gb {max_kv_gb:g}"
        rows.append((b, c, why))
    return rows


# ----------------------------------------------------------------------------- inputs

def make_inputs(batch, ctx, q_len, page_size, mixed, gen, device, hq=HQ, hkv=HKV, d=D,
                dtype=torch.bfloat16):
    """q [B*q_len, Hq, D], paged k/v caches [pages, page_size, Hkv, D], page_table
    [B, max_pages] (shuffled page ids, -1 past a row's pages), kv_lens [B], cu_seqlens_q
    [B+1], all on `device` (index tensors int32)."""
    if mixed and batch > 1:
        lo = max(ctx // 4, q_len)
        kv_lens = torch.randint(lo, ctx + 1, (batch,), generator=gen)
        kv_lens[0] = ctx  # the longest sets the dense rivals' padded length
    else:
        kv_lens = torch.full((batch,), ctx, dtype=torch.int64)
    used = [(int(n) + page_size - 1) // page_size for n in kv_lens]
    pages = sum(used)
    ids = torch.randperm(pages, generator=gen).to(torch.int32)
    table = torch.full((batch, max(used)), -1, dtype=torch.int32)
    at = 0
    for b, u in enumerate(used):
        table[b, :u] = ids[at:at + u]
        at += u
    if device == "cpu":
        k_cache = torch.randn(pages, page_size, hkv, d, generator=gen).to(dtype)
        v_cache = torch.randn(pages, page_size, hkv, d, generator=gen).to(dtype)
        q = torch.randn(batch * q_len, hq, d, generator=gen).to(dtype)
    else:  # large caches: generated on the device, seeded
        k_cache = torch.randn(pages, page_size, hkv, d, dtype=dtype, device=device)
        v_cache = torch.randn(pages, page_size, hkv, d, dtype=dtype, device=device)
        q = torch.randn(batch * q_len, hq, d, dtype=dtype, device=device)
    cu = torch.arange(0, batch * q_len + 1, q_len, dtype=torch.int32)
    return dict(q=q, k_cache=k_cache, v_cache=v_cache, page_table=table.to(device),
                kv_lens=kv_lens.to(torch.int32).to(device), cu_seqlens_q=cu.to(device),
                used=used, q_len=q_len, page_size=page_size, max_kv=int(kv_lens.max()))


def gather_dense(cache, table, used, length):
    """The paged cache as dense [B, Hkv, length, D] (rows past a sequence's pages hold
    page 0's data: masked by every rival). One sequence at a time, so that the transient
    copy is one sequence's, not the batch's."""
    batch, max_pages = table.shape
    _, ps, hkv, d = cache.shape
    out = torch.empty(batch, hkv, length, d, dtype=cache.dtype, device=cache.device)
    for b in range(batch):
        ids = table[b].long().clamp_min(0)
        seq = cache.index_select(0, ids).reshape(max_pages * ps, hkv, d)[:length]
        out[b] = seq.transpose(0, 1)
    return out


def sequence_kv(cache, table, b, n):
    """Sequence b's first n keys straight from the pages, by position arithmetic
    ([n, Hkv, D]): a second, independent gather to check gather_dense and to feed the
    float64 reference."""
    ps = cache.shape[1]
    j = torch.arange(n, device=cache.device)
    pages = table[b].long()[j // ps]
    return cache[pages, j % ps]


def reference(inp, b):
    """Sequence b's o [q_len, Hq, D] in float64, from the paged cache directly."""
    q_len = inp["q_len"]
    n = int(inp["kv_lens"][b])
    q = inp["q"][b * q_len:(b + 1) * q_len].double()
    k = sequence_kv(inp["k_cache"], inp["page_table"], b, n).double()
    v = sequence_kv(inp["v_cache"], inp["page_table"], b, n).double()
    t, hq, d = q.shape
    hkv = k.shape[1]
    qg = q.view(t, hkv, hq // hkv, d)
    s = torch.einsum("tkgd,nkd->kgtn", qg, k) / math.sqrt(d)
    i = torch.arange(t, device=q.device)[:, None]
    j = torch.arange(n, device=q.device)[None, :]
    s = s.masked_fill(~(j <= n - t + i), float("-inf"))  # bottom-right causal
    p = torch.softmax(s, dim=-1)
    o = torch.einsum("kgtn,nkd->tkgd", p, v)
    return o.reshape(t, hq, d)


def sample_ids(batch):
    return sorted({0, batch - 1})


def rel_err(o_tokens, refs, q_len):
    """max |o - ref| / max |ref| over the sample; o_tokens [B*q_len, Hq, D]."""
    worst = 0.0
    for b, ref in refs.items():
        o = o_tokens[b * q_len:(b + 1) * q_len].double()
        worst = max(worst, float((o - ref).abs().max() / ref.abs().max().clamp_min(1e-12)))
    return worst


def dense_mask(kv_lens, q_len, length, device):
    """Bottom-right causal + length mask [B, 1, q_len, length] (True: attend), or None
    when every query sees every key (q_len 1, equal lengths filling `length`)."""
    if q_len == 1 and bool((kv_lens == length).all()):
        return None
    i = torch.arange(q_len, device=device)[None, None, :, None]
    j = torch.arange(length, device=device)[None, None, None, :]
    n = kv_lens.long()[:, None, None, None]
    return j <= n - q_len + i


def flex_mask_mod(kv_lens, q_len):
    kl = kv_lens.long()

    def mask_mod(b, h, q_idx, kv_idx):
        return kv_idx <= kl[b] - q_len + q_idx
    return mask_mod


def paged_maps(table, used, n_pages):
    """PagedAttention's page_table [B, n_pages] (logical -> physical, -1 unused) and
    physical_to_logical [B, n_pages], int64, from our page table."""
    batch = table.shape[0]
    logical = torch.full((batch, n_pages), -1, dtype=torch.int64, device=table.device)
    phys_to_log = torch.full((batch, n_pages), -1, dtype=torch.int64, device=table.device)
    for b, u in enumerate(used):
        ids = table[b, :u].long()
        logical[b, :u] = ids
        phys_to_log[b, ids] = torch.arange(u, device=table.device)
    return logical, phys_to_log


def relaid(cache):
    """[pages, ps, Hkv, D] -> [1, Hkv, pages * ps, D], PagedAttention's cache tensor."""
    p, ps, hkv, d = cache.shape
    return cache.permute(2, 0, 1, 3).reshape(1, hkv, p * ps, d).contiguous()


def math_attention(q, k, v, mask):
    """Plain attention, q [B, Hq, t, D] over k/v [B, Hkv, L, D] (the dry run's stand-in
    for SDPA on torch without it; same arguments)."""
    g = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(g, 1).double()
    v = v.repeat_interleave(g, 1).double()
    s = q.double() @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return torch.softmax(s, -1) @ v


def to_tokens(o_bhtd):
    """[B, Hq, t, D] -> [B*t, Hq, D] (the ragged layout)."""
    b, h, t, d = o_bhtd.shape
    return o_bhtd.transpose(1, 2).reshape(b * t, h, d)


def as_bhtd(q_tokens, batch, q_len):
    t, h, d = q_tokens.shape
    return q_tokens.view(batch, q_len, h, d).transpose(1, 2)


# ----------------------------------------------------------------------------- timing

def time_call(fn, warmup=5, iters=20):
    """(events ms, wall ms): the median GPU time of one call from CUDA events around
    back-to-back calls lasting ~2 ms per sample (bench/gpu_compare.py's time_ms), and
    the median wall-clock time of one isolated call (call, then synchronize)."""
    from gpu_compare import time_ms
    events = time_ms(fn, warmup, iters)
    walls = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        walls.append((time.perf_counter() - t0) * 1e3)
    return events, statistics.median(walls)


def short(e):
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    return (type(e).__name__ + ": " + (lines[0] if lines else ""))[:160]


def context_alive():
    try:
        torch.cuda.synchronize()
        torch.zeros(1, device=DEV).add_(1).item()
        return True
    except Exception:  # noqa: BLE001
        return False


# ----------------------------------------------------------------------------- rivals

def default_variant(kernel):
    """The variant an untuned launch runs on this GPU (as bench/gpu_compare.py)."""
    major, minor = torch.cuda.get_device_capability()
    cc = major * 10 + minor

    def runs(arch):
        num = int(arch[3:].rstrip("a"))
        return cc == num if arch.endswith("a") else cc >= num
    variants = kernel.info["variants"]
    defaults = [v for v in variants if v["default"] and runs(v["arch"])]
    best = max(defaults, key=lambda v: int(v["arch"][3:].rstrip("a")))
    return best["name"], [v["name"] for v in variants if runs(v["arch"])], best["arch"]


def attune_part(kernel, inp, refs, row, sweep):
    args = (inp["q"], inp["k_cache"], inp["v_cache"])
    # With the lengths' bounds (what a serving engine knows, as for flash_attn_varlen)
    # the runtime reads none of the sequence arrays: no host synchronisation per call.
    kw = dict(cu_seqlens_q=inp["cu_seqlens_q"], page_table=inp["page_table"],
              kv_lens=inp["kv_lens"], max_seqlen_q=inp["q_len"], max_seqlen_kv=inp["max_kv"])
    q_len = inp["q_len"]
    try:
        o = kernel(*args, **kw)
        torch.cuda.synchronize()
        row["attune_err"] = rel_err(o, refs, q_len)
        row["attune_ms"], row["attune_wall_ms"] = time_call(lambda: kernel(*args, **kw))
    except Exception as e:  # noqa: BLE001 - reported in the table
        row["attune_error"] = short(e)
        if not context_alive():
            raise RuntimeError("CUDA context lost in Attune's default call: " + short(e))
    if sweep == "none" or len(kernel.variants) < 2:
        return
    default, runnable, arch = default_variant(kernel)
    row["attune_default_variant"] = default
    names = runnable if sweep == "all" else [
        v["name"] for v in kernel.info["variants"] if v["arch"] == arch]
    if DEV == "cpu":  # --cpu-smoke: CPU tensors take host variants' names
        names = list(kernel.host_variants) + names[:1]
    tried, failed = [], []
    try:
        sweep_variants(kernel, args, kw, names, refs, q_len, tried, failed)
    finally:  # also when a fault ends the sweep: what it measured stays
        row["sweep"] = tried
        if failed:
            row["sweep_failed"] = failed
        if tried:
            best = min(tried, key=lambda r: r["ms"])
            row.update(best_variant=best["variant"], best_splits=best["num_splits"],
                       best_ms=best["ms"], best_wall_ms=best["wall_ms"], best_err=best["err"])


def sweep_variants(kernel, args, kw, names, refs, q_len, tried, failed):
    for name in names:
        for ns in SPLITS:
            try:
                o = kernel(*args, variant=name, num_splits=ns, **kw)
                torch.cuda.synchronize()
                err = rel_err(o, refs, q_len)
                if not err < TOL:
                    failed.append(f"{name}/{ns}: err {err:.1e}")
                    continue
                ms, wall = time_call(lambda: kernel(*args, variant=name, num_splits=ns, **kw),
                                     warmup=3, iters=10)
                tried.append({"variant": name, "num_splits": ns, "ms": ms, "wall_ms": wall,
                              "err": err})
            except Exception as e:  # noqa: BLE001
                failed.append(f"{name}/{ns}: {short(e)}")
                if not context_alive():
                    raise RuntimeError(f"CUDA context lost in {name}/{ns}: {short(e)}")


def sdpa_part(inp, dense, refs, row, batch, q_len, length):
    import torch.nn.functional as F
    if not hasattr(F, "scaled_dot_product_attention"):
        row["sdpa_error"] = f"torch {torch.__version__} has no scaled_dot_product_attention"
        return
    import inspect
    q = as_bhtd(inp["q"], batch, q_len)
    k, v = dense
    mask = dense_mask(inp["kv_lens"], q_len, length, q.device)
    try:
        has_gqa = "enable_gqa" in inspect.signature(F.scaled_dot_product_attention).parameters
    except (TypeError, ValueError):
        has_gqa = False
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        backends = [("flash", SDPBackend.FLASH_ATTENTION), ("efficient", SDPBackend.EFFICIENT_ATTENTION),
                    ("cudnn", SDPBackend.CUDNN_ATTENTION), ("auto", None)]
    except Exception:  # noqa: BLE001 - older torch: its own choice only
        sdpa_kernel, backends = None, [("auto", None)]
    expanded = []

    def kv_forms():
        if has_gqa:
            yield k, v, {"enable_gqa": True}, "gqa"
        need = 2 * k.numel() * (HQ // HKV) * ELEM
        free = torch.cuda.mem_get_info()[0]
        if need > free - 2e9:
            raise RuntimeError(f"repeated kv heads need {need / 1e9:.1f} GB, {free / 1e9:.1f} free")
        if not expanded:
            expanded.extend([k.repeat_interleave(HQ // HKV, 1), v.repeat_interleave(HQ // HKV, 1)])
        yield expanded[0], expanded[1], {}, "repeated"

    errors = []
    for label, backend in backends:
        try:
            for kk, vv, kw, form in kv_forms():
                try:
                    def call():
                        return F.scaled_dot_product_attention(q, kk, vv, attn_mask=mask, **kw)
                    if backend is not None:
                        with sdpa_kernel(backend):
                            o = call()
                            torch.cuda.synchronize()
                            row["sdpa_ms"], row["sdpa_wall_ms"] = time_call(call)
                    else:
                        o = call()
                        torch.cuda.synchronize()
                        row["sdpa_ms"], row["sdpa_wall_ms"] = time_call(call)
                    row["sdpa_impl"] = f"{label}/{form}" + ("/mask" if mask is not None else "")
                    row["sdpa_err"] = rel_err(to_tokens(o), refs, q_len)
                    row.pop("sdpa_error", None)
                    del expanded[:]
                    return
                except Exception as e:  # noqa: BLE001
                    errors.append(f"{label}/{form}: {short(e)}")
                    if not context_alive():
                        raise RuntimeError("CUDA context lost in SDPA: " + short(e))
        except RuntimeError as e:
            if "context lost" in str(e):
                raise
            errors.append(f"{label}: {short(e)}")
    del expanded[:]
    row["sdpa_error"] = " | ".join(errors)[:400]


class Flex:
    """FlexAttention, compiled once (dynamic=False: one graph per shape)."""

    def __init__(self):
        self.error = None
        self.paged_cls = None
        self.paged_opts = [None, "BLOCK_N"]  # kernel_options to try; a success moves first
        self.paged_failures = 0
        try:
            import torch._dynamo
            for knob in ("cache_size_limit", "recompile_limit"):  # one graph per row's shape
                if hasattr(torch._dynamo.config, knob):
                    setattr(torch._dynamo.config, knob, max(64, getattr(torch._dynamo.config, knob)))
        except Exception:  # noqa: BLE001 - the default limit then; flex may fall back to eager
            pass
        try:
            from torch.nn.attention.flex_attention import create_block_mask, flex_attention
            self.create_block_mask = create_block_mask
            self.flex = torch.compile(flex_attention, dynamic=False)
        except Exception as e:  # noqa: BLE001
            self.error = short(e)
            return
        try:
            from torch.nn.attention.experimental._paged_attention import PagedAttention
            self.paged_cls = PagedAttention
        except Exception as e:  # noqa: BLE001
            self.paged_missing = short(e)


def flex_paged(fx, inp, refs, row, batch, q_len):
    """PagedAttention on our pages: its maps filled from our page table (no copy of
    keys through assign), the cache re-laid as [1, Hkv, pages * ps, D]."""
    ps = inp["page_size"]
    n_pages = inp["k_cache"].shape[0]
    free = torch.cuda.mem_get_info()[0]
    need = 2 * inp["k_cache"].numel() * ELEM
    if need > free - 2e9:
        raise RuntimeError(f"the re-laid cache needs {need / 1e9:.1f} GB, {free / 1e9:.1f} free")
    pa = fx.paged_cls(n_pages, ps, batch, device=DEV)
    logical, p2l = paged_maps(inp["page_table"], inp["used"], n_pages)
    pa.page_table.copy_(logical)
    pa.physical_to_logical.copy_(p2l)
    pa.seq_lens.copy_(inp["kv_lens"].long())
    pa.capacity.copy_(torch.tensor(inp["used"], device=DEV) * ps)
    kc, vc = relaid(inp["k_cache"]), relaid(inp["v_cache"])
    q = as_bhtd(inp["q"], batch, q_len)
    logical_len = inp["page_table"].shape[1] * ps
    bm = fx.create_block_mask(flex_mask_mod(inp["kv_lens"], q_len), batch, None, q_len,
                              logical_len, device=DEV, BLOCK_SIZE=(128, ps))
    bm = pa.convert_logical_block_mask(bm)
    errors = []
    for which in list(fx.paged_opts):
        opts = {"BLOCK_N": ps} if which == "BLOCK_N" else None
        try:
            kw = {"block_mask": bm, "enable_gqa": True}
            if opts:
                kw["kernel_options"] = opts

            def call():
                return fx.flex(q, kc, vc, **kw)
            o = call()
            torch.cuda.synchronize()
            row["flex_err"] = rel_err(to_tokens(o), refs, q_len)
            row["flex_ms"], row["flex_wall_ms"] = time_call(call)
            row["flex_impl"] = "paged" + (f" {opts}" if opts else "")
            fx.paged_opts.remove(which)
            fx.paged_opts.insert(0, which)
            return
        except Exception as e:  # noqa: BLE001
            errors.append(f"{opts or 'default'}: {short(e)}")
            if not context_alive():
                raise RuntimeError("CUDA context lost in flex paged: " + short(e))
    fx.paged_failures += 1
    raise RuntimeError(" | ".join(errors))


def flex_dense(fx, dense, inp, refs, row, batch, q_len, length):
    q = as_bhtd(inp["q"], batch, q_len)
    k, v = dense
    bm = fx.create_block_mask(flex_mask_mod(inp["kv_lens"], q_len), batch, None, q_len, length,
                              device=DEV)

    def call():
        return fx.flex(q, k, v, block_mask=bm, enable_gqa=True)
    o = call()
    torch.cuda.synchronize()
    row["flex_err"] = rel_err(to_tokens(o), refs, q_len)
    row["flex_ms"], row["flex_wall_ms"] = time_call(call)
    row["flex_impl"] = "dense"


def flex_part(fx, inp, dense, refs, row, batch, q_len, length):
    if fx.error:
        row["flex_error"] = fx.error
        return
    notes = []
    if fx.paged_cls is not None and fx.paged_failures >= 2:
        notes.append("paged: not tried, it failed in 2 rows (device time)")
    elif fx.paged_cls is not None:
        try:
            flex_paged(fx, inp, refs, row, batch, q_len)
            return
        except Exception as e:  # noqa: BLE001
            if "context lost" in str(e):
                raise
            notes.append("paged: " + short(e))
    else:
        notes.append("no PagedAttention (" + getattr(fx, "paged_missing", "?") + ")")
    if dense is None:
        row["flex_error"] = " | ".join(notes + ["dense: no gathered KV"])
        return
    try:
        flex_dense(fx, dense, inp, refs, row, batch, q_len, length)
        row["flex_note"] = " | ".join(notes)[:300]
    except Exception as e:  # noqa: BLE001
        if not context_alive():
            raise RuntimeError("CUDA context lost in flex dense: " + short(e))
        row["flex_error"] = " | ".join(notes + ["dense: " + short(e)])[:400]


# ----------------------------------------------------------------------------- rows

def run_row(kernel, fx, batch, ctx, args, gen, peak):
    inp = make_inputs(batch, ctx, args.q_len, args.page_size, args.mixed, gen, DEV)
    q_len = args.q_len
    kl = inp["kv_lens"].tolist()
    length = max(kl)
    nbytes = kv_bytes(kl)
    row = {"batch": batch, "context": ctx, "q_len": q_len, "mixed": bool(args.mixed),
           "page_size": args.page_size, "sum_kv_lens": sum(kl), "kv_bytes": nbytes,
           "pages": int(inp["k_cache"].shape[0])}
    refs = {b: reference(inp, b) for b in sample_ids(batch)}
    try:
        measure(kernel, fx, inp, refs, row, batch, q_len, length, args)
    except RuntimeError as e:  # a lost CUDA context: keep what the row measured before it
        if "context lost" not in str(e):
            raise
        row["fatal"] = str(e)[:300]
    for key in ("attune", "best", "sdpa", "flex"):
        ms = row.get(key + "_ms")
        if ms:
            row[key + "_gbps"] = nbytes / ms / 1e6
            row[key + "_tok_s"] = batch * q_len / ms * 1e3
            if peak:
                row[key + "_peak_pct"] = 100.0 * nbytes / ms / 1e-3 / peak
    del inp
    torch.cuda.empty_cache()
    return row


def measure(kernel, fx, inp, refs, row, batch, q_len, length, args):
    """Attune, then the rivals, into `row`; RuntimeError('... context lost ...') when a
    kernel faulted (nothing more can run in this process)."""
    attune_part(kernel, inp, refs, row, args.sweep)
    rivals = [r for r in args.rivals.split(",") if r]
    dense = None
    if rivals:
        free = torch.cuda.mem_get_info()[0]
        need = 2 * batch * HKV * length * D * ELEM
        if need > free - 4e9:
            why = f"gathered KV needs {need / 1e9:.1f} GB, {free / 1e9:.1f} free"
            row["gather_skipped"] = why
        else:
            try:
                dense = (gather_dense(inp["k_cache"], inp["page_table"], inp["used"], length),
                         gather_dense(inp["v_cache"], inp["page_table"], inp["used"], length))
            except Exception as e:  # noqa: BLE001 - Attune's numbers stay; the rivals say why
                row["gather_skipped"] = "the gather failed: " + short(e)
                torch.cuda.empty_cache()
                if not context_alive():
                    raise RuntimeError("CUDA context lost in the gather: " + short(e))
    if "sdpa" in rivals:
        if dense is None:
            row["sdpa_error"] = "skipped: " + row["gather_skipped"]
        else:
            sdpa_part(inp, dense, refs, row, batch, q_len, length)
    if "flex" in rivals:
        flex_part(fx, inp, dense, refs, row, batch, q_len, length)


def fmt(x, spec="{:.3f}"):
    return "-" if x is None else spec.format(x)


def cell(r, key, spec="{:.3f}"):
    if r.get(key + "_ms") is not None:
        return fmt(r[key + "_ms"], spec)
    err = r.get(key + "_error")
    return ("error: " + err.replace("|", "/")[:90]) if err else "-"


def compact(failed):
    """'name/splits: message' entries grouped by message: 'message (a/1, a/4, b/None)'."""
    groups = {}
    for f in failed:
        what, _, msg = f.partition(": ")
        groups.setdefault(msg, []).append(what)
    return "; ".join(f"{msg} ({', '.join(w)})" for msg, w in groups.items())


def table(rows, gpu, args, peak):
    lines = [f"# Paged decoding: Attune vs PyTorch on {gpu} ({datetime.date.today()})", "",
             f"bench/specs/decode-paged-d128.json: GQA {HQ}/{HKV} heads, D {D}, bf16, bottom-right "
             f"causal, q_len {args.q_len}, page_size {args.page_size}, shuffled pages, "
             + ("kv_lens drawn in [ctx/4, ctx] (first = ctx)" if args.mixed else "every sequence ctx keys")
             + f". ms: CUDA events around back-to-back calls (median; Attune's per-call host copy of "
             "cu_seqlens/kv_lens included); wall: one isolated call + synchronize. GB/s: "
             "sum(kv_lens) * Hkv * D * 2 B * 2 / time; % of "
             + (f"{peak / 1e12:.2f} TB/s" if peak else "peak: n/a (unknown GPU)")
             + ". err: max |o - ref| / max |ref| vs float64 on 2 sequences. Best forced: fastest "
             "variant x num_splits in {None,1,4,16} whose err < 2e-2.", "",
             "| B | ctx | KV GB | Attune ms | wall ms | tok/s | GB/s | % peak | best forced (variant/splits) "
             "| ms | GB/s | SDPA ms | SDPA | GB/s | Flex ms | Flex | GB/s | err Attune | err SDPA | err Flex |",
             "|" + "---|" * 20]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['batch']} | {r['context']} | | error: {r['error'][:150]} |" + " |" * 16)
            continue
        if "skipped" in r:
            lines.append(f"| {r['batch']} | {r['context']} | | skipped: {r['skipped']} |" + " |" * 16)
            continue
        best = (f"{r['best_variant']}/{r['best_splits']}" if "best_variant" in r else
                ("-" if "sweep" not in r else "none passed"))
        pk = r.get("attune_peak_pct")
        lines.append("| " + " | ".join([
            str(r["batch"]), str(r["context"]), f"{r['kv_bytes'] / 1e9:.2f}",
            cell(r, "attune") + ("" if r.get("attune_err") is None or r["attune_err"] < TOL else " WRONG"),
            fmt(r.get("attune_wall_ms")), fmt(r.get("attune_tok_s"), "{:.0f}"),
            fmt(r.get("attune_gbps"), "{:.0f}"), fmt(pk, "{:.1f}") if peak else "n/a",
            best, fmt(r.get("best_ms")), fmt(r.get("best_gbps"), "{:.0f}"),
            cell(r, "sdpa"), r.get("sdpa_impl", "-"), fmt(r.get("sdpa_gbps"), "{:.0f}"),
            cell(r, "flex"), r.get("flex_impl", "-"), fmt(r.get("flex_gbps"), "{:.0f}"),
            fmt(r.get("attune_err"), "{:.1e}"), fmt(r.get("sdpa_err"), "{:.1e}"),
            fmt(r.get("flex_err"), "{:.1e}")]) + " |")
    notes = [f"- B={r['batch']} ctx={r['context']}: forced variants that failed: "
             + compact(r["sweep_failed"])[:900] for r in rows if r.get("sweep_failed")]
    notes += [f"- B={r['batch']} ctx={r['context']}: flex fell back to dense: {r['flex_note']}"
              for r in rows if r.get("flex_note")]
    notes += [f"- B={r['batch']} ctx={r['context']}: the run stopped here: {r['fatal']}"
              for r in rows if r.get("fatal")]
    notes += [f"- B={r['batch']} ctx={r['context']}: Attune's default call disagrees with the "
              f"float64 reference (err {r['attune_err']:.1e} >= {TOL:g}): its times are not results"
              for r in rows if r.get("attune_err") is not None and not r["attune_err"] < TOL]
    if notes:
        lines += ["", "Notes:"] + notes
    return "\n".join(lines)


def write(rows, gpu, args, peak, meta):
    text = table(rows, gpu, args, peak)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"decode-{gpu.replace(' ', '_')}-{datetime.date.today()}")
    if args.q_len != 1 or args.mixed:
        stem += f"-q{args.q_len}" + ("-mixed" if args.mixed else "")
    with open(stem + ".md", "w") as f:
        f.write(text + "\n")
    with open(stem + ".json", "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    return text, stem


# ----------------------------------------------------------------------------- dry run

def gpu_sim(attnc, spec, inp, refs, flags):
    """attnc run --backend gpu-sim on the inputs (float32 .npy files): the rel error of its
    o against the float64 reference, or 'error: ...'."""
    import subprocess
    import tempfile
    import numpy as np
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [attnc, "run", spec, "--backend", "gpu-sim", "--out", os.path.join(tmp, "o.npy")]
        for name, flag in (("q", "--q"), ("k_cache", "--k"), ("v_cache", "--v"),
                           ("cu_seqlens_q", "--cu-seqlens-q"), ("page_table", "--page-table"),
                           ("kv_lens", "--kv-lens")):
            t = inp[name]
            arr = t.float().numpy() if t.is_floating_point() else t.numpy()
            np.save(os.path.join(tmp, name + ".npy"), arr)
            cmd += [flag, os.path.join(tmp, name + ".npy")]
        r = subprocess.run(cmd + flags, capture_output=True, text=True)
        if r.returncode != 0:
            return "error: " + (r.stderr.strip().splitlines() or ["?"])[-1][:200]
        o = torch.from_numpy(np.load(os.path.join(tmp, "o.npy")))
    return rel_err(o, refs, inp["q_len"])


def dry_run(args):
    """CPU only: the data construction, the gathers, the rivals' masks and the float64
    reference at a tiny size; Attune's host variant when a runtime library is found."""
    gen = torch.Generator().manual_seed(0)
    ok = True
    kernel = None
    why_not = None
    try:
        import attune
        kernel = attune.compile(args.spec, arch="host")
        print(f"dry-run: Attune host variant(s) {kernel.host_variants} from {kernel.info['dir']}")
    except Exception as e:  # noqa: BLE001
        why_not = short(e)
        print(f"dry-run: Attune's host part skipped: {why_not}")
    attnc = os.environ.get("ATTUNE_ATTNC") or os.path.join(ROOT, "build", "tools", "attnc", "attnc")
    if not os.access(attnc, os.X_OK):
        print(f"dry-run: the gpu-sim part skipped: no attnc at {attnc} (set ATTUNE_ATTNC)")
        attnc = None
    cases = [(1, 40, 1, False), (3, 100, 1, False), (3, 100, 1, True), (2, 77, 4, True),
             (4, 33, 4, False)]
    for batch, ctx, q_len, mixed in cases:
        inp = make_inputs(batch, ctx, q_len, args.page_size if args.page_size <= 16 else 16,
                          mixed, gen, "cpu")
        kl = inp["kv_lens"]
        length = int(kl.max())
        refs = {b: reference(inp, b) for b in range(batch)}
        res = {}
        # The dense gather (what the rivals get) against the pages read position by position.
        dk = gather_dense(inp["k_cache"], inp["page_table"], inp["used"], length)
        dv = gather_dense(inp["v_cache"], inp["page_table"], inp["used"], length)
        same = all(torch.equal(dk[b, :, :int(kl[b])],
                               sequence_kv(inp["k_cache"], inp["page_table"], b, int(kl[b])).transpose(0, 1))
                   and torch.equal(dv[b, :, :int(kl[b])],
                                   sequence_kv(inp["v_cache"], inp["page_table"], b, int(kl[b])).transpose(0, 1))
                   for b in range(batch))
        res["dense==paged"] = same
        ok &= same
        # SDPA's mask, through plain attention on the dense KV.
        mask = dense_mask(kl, q_len, length, "cpu")
        o = to_tokens(math_attention(as_bhtd(inp["q"], batch, q_len), dk, dv, mask))
        res["sdpa-mask err"] = rel_err(o, refs, q_len)
        # flex's mask_mod must be the same mask.
        mm = flex_mask_mod(kl, q_len)
        bb = torch.arange(batch)[:, None, None, None]
        qi = torch.arange(q_len)[None, None, :, None]
        kj = torch.arange(length)[None, None, None, :]
        fm = mm(bb, torch.zeros(1, dtype=torch.long), qi, kj)
        full = mask if mask is not None else torch.ones(batch, 1, q_len, length, dtype=torch.bool)
        res["flex mask==sdpa mask"] = torch.equal(fm.expand_as(full), full)
        ok &= res["flex mask==sdpa mask"]
        # PagedAttention's maps: logical position -> physical slot of the re-laid cache.
        n_pages = inp["k_cache"].shape[0]
        logical, p2l = paged_maps(inp["page_table"], inp["used"], n_pages)
        kc = relaid(inp["k_cache"])
        ps = inp["page_size"]
        good = True
        for b in range(batch):
            j = torch.arange(int(kl[b]))
            addr = logical[b, j // ps] * ps + j % ps
            good &= torch.equal(kc[0][:, addr], dk[b, :, :int(kl[b])])
            phys = addr // ps
            good &= torch.equal(p2l[b, phys] * ps + addr % ps, j)
        res["paged maps"] = good
        ok &= good
        if kernel is not None:
            try:
                o = kernel(inp["q"], inp["k_cache"], inp["v_cache"], cu_seqlens_q=inp["cu_seqlens_q"],
                           page_table=inp["page_table"], kv_lens=kl, num_threads=2)
                res["attune host err"] = rel_err(o, refs, q_len)
                ok &= res["attune host err"] < TOL
            except Exception as e:  # noqa: BLE001
                res["attune host err"] = "error: " + short(e)
                ok = False
        ok &= res["sdpa-mask err"] < 1e-10
        if attnc and mixed:
            # The NVIDIA kernel itself, on the simulator, on this very data.
            for flags in ([], ["--wgmma", "--num-splits", "2"]):
                err = gpu_sim(attnc, args.spec, inp, refs, flags)
                res["gpu-sim " + (" ".join(flags) or "default") + " err"] = err
                ok &= isinstance(err, float) and err < TOL
        print(f"dry-run B={batch} ctx={ctx} q_len={q_len} mixed={mixed} kv_lens={kl.tolist()} "
              f"pages={n_pages}: " + ", ".join(
                  f"{k}={v:.1e}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items()))
    print("\nplanned rows (GPU run):")
    for b, c, why in plan(args.batch_list, args.context_list, args.q_len, args.max_kv_gb, args.pairs):
        gb = b * c * HKV * D * ELEM * 2 / 1e9
        print(f"  B={b:<3} ctx={c:<7} q_len={args.q_len} K/V {gb:6.2f} GB"
              + (f"  SKIP: {why}" if why else ""))
    print("\ndry-run: " + ("all checks passed" if ok else "CHECKS FAILED"))
    return 0 if ok else 1


def cpu_smoke():
    """--cpu-smoke: CPU tensors where the GPU run has CUDA ones, torch.cuda's timing and
    queries stubbed, so that every code path of a GPU row (the sweep, the rivals, their
    error cells, the table and the files) runs here. Numbers mean nothing."""
    global DEV
    DEV = "cpu"

    class Event:
        def __init__(self, **_):
            self.t = None

        def record(self):
            self.t = time.perf_counter()

        def synchronize(self):
            pass

        def elapsed_time(self, other):
            return (other.t - self.t) * 1e3

    c = torch.cuda
    c.is_available = lambda: True
    c.synchronize = lambda *a, **k: None
    c.Event = Event
    c.mem_get_info = lambda *a, **k: (64e9, 80e9)
    c.get_device_name = lambda *a, **k: "NVIDIA H200 cpu-smoke"
    c.get_device_capability = lambda *a, **k: (9, 0)
    c.empty_cache = lambda: None


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", help="the decode-paged-d128 bundle (bench/prepare_bundles.sh); "
                   "default: attune.compile(--spec)")
    p.add_argument("--spec", default=SPEC)
    p.add_argument("--batches", default="1,16,64")
    p.add_argument("--contexts", default="1024,4096,16384,32768,131072")
    p.add_argument("--rows", help="B:CTX pairs (e.g. 1:4096,64:32768,1:131072) instead of "
                   "--batches x --contexts")
    p.add_argument("--time-budget", type=float, help="seconds: rows not started by then are "
                   "skipped (reported), so that a short device lease still writes its table")
    p.add_argument("--row-timeout", type=float, default=240.0,
                   help="seconds one row may take (FlexAttention's first compile included) "
                   "before the run exits with a stack dump (a hung kernel); 0: none")
    p.add_argument("--q-len", type=int, default=1, help="queries per sequence (4: speculative/chunked)")
    p.add_argument("--page-size", type=int, default=16)
    p.add_argument("--mixed", action="store_true", help="kv_lens drawn in [ctx/4, ctx]")
    p.add_argument("--max-kv-gb", type=float, default=40.0, help="skip rows whose K/V exceeds this")
    p.add_argument("--sweep", choices=["none", "arch", "all"], default="arch",
                   help="forced variants x num_splits: none, the default arch's variants, or every "
                   "variant that runs here")
    p.add_argument("--rivals", default="sdpa,flex")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    p.add_argument("--dry-run", action="store_true", help="CPU checks at a tiny size, no CUDA")
    p.add_argument("--cpu-smoke", action="store_true",
                   help="run the GPU path's code on CPU tensors with CUDA's timing stubbed (to test "
                   "this script: the numbers mean nothing); use tiny --batches/--contexts")
    args = p.parse_args()
    args.batch_list = [int(x) for x in args.batches.split(",") if x]
    args.context_list = [int(x) for x in args.contexts.split(",") if x]
    args.pairs = None
    if args.rows:
        try:
            args.pairs = [tuple(int(y) for y in x.split(":")) for x in args.rows.split(",") if x]
            assert all(len(x) == 2 and min(x) > 0 for x in args.pairs)
        except (ValueError, AssertionError):
            sys.exit(f"--rows {args.rows!r}: expected B:CTX pairs, e.g. 1:4096,64:32768")
    if args.dry_run:
        return dry_run(args)
    if args.cpu_smoke:
        cpu_smoke()
    if not torch.cuda.is_available():
        sys.exit("gpu_decode.py needs a CUDA GPU (or --dry-run)")
    import attune
    kernel = (attune.load(args.bundle) if args.bundle else
              attune.compile(args.spec, arch="sm_90a,host") if args.cpu_smoke else
              attune.compile(args.spec))
    gpu = torch.cuda.get_device_name()
    peak = peak_bw(gpu)
    fx = Flex() if "flex" in args.rivals else None
    meta = {"gpu": gpu, "torch": torch.__version__, "date": str(datetime.date.today()),
            "bundle": kernel.info.get("dir"), "variants": list(kernel.variants),
            "peak_bytes_per_s": peak, "args": {k: v for k, v in vars(args).items()
                                               if k not in ("batch_list", "context_list", "pairs")}}
    if fx is not None:
        meta["flex"] = fx.error or ("PagedAttention" if fx.paged_cls else
                                    "dense (" + getattr(fx, "paged_missing", "") + ")")
    print(json.dumps(meta), flush=True)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    rows = []
    dead = None
    began = time.time()
    for batch, ctx, why in plan(args.batch_list, args.context_list, args.q_len, args.max_kv_gb,
                                args.pairs):
        if not why and args.time_budget and time.time() - began > args.time_budget:
            why = f"not run: --time-budget {args.time_budget:g} s spent"
        if why or dead:
            row = {"batch": batch, "context": ctx, "skipped": why or f"not run: {dead}"}
        else:
            t0 = time.time()
            # Written first, replaced when the row ends: what the files say if it never does.
            write(rows + [{"batch": batch, "context": ctx, "error": "did not finish: hung, or "
                           "past --row-timeout (see the stack dump on stderr)"}], gpu, args, peak, meta)
            if args.row_timeout:
                # A hung kernel blocks inside the driver, where no Python exception reaches:
                # print every thread's stack and exit; the rows before this one are written.
                faulthandler.dump_traceback_later(args.row_timeout, exit=True)
            try:
                row = run_row(kernel, fx, batch, ctx, args, gen, peak)
                if "fatal" in row:
                    dead = row["fatal"]
            except Exception as e:  # noqa: BLE001
                row = {"batch": batch, "context": ctx, "error": short(e)}
                traceback.print_exc()
                if not context_alive():
                    dead = "CUDA context lost: " + short(e)
                torch.cuda.empty_cache()
            faulthandler.cancel_dump_traceback_later()
            row["row_s"] = round(time.time() - t0, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
        write(rows, gpu, args, peak, meta)
    text, stem = write(rows, gpu, args, peak, meta)
    print(text)
    print(f"\nwritten: {stem}.md, {stem}.json")
    return 1 if dead else 0


if __name__ == "__main__":
    sys.exit(main())
