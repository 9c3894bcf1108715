#!/usr/bin/env python3
"""Runs prepared GPU checks (prepare.py) on the GPU through the Python package: every
variant of every bundle on every case (and the first variant, and the first wgmma one,
again with the keys split over 3 CTAs: split-KV), and the storage cases (kit.STORAGE: ragged
and paged buffers with their sequence arrays, padded batches with q_lens / kv_lens; every
variant, the first one split-KV and once more with max_seqlen bounds), against the
float64 reference; bf16/fp16
tolerance 2e-2 of max |o_ref|, lse within 1e-2, -inf rows exactly where the reference
has them, NaN never passes. Prints a table and, with --results, writes it there as
gpu-checks-<gpu>-<date>.{md,json}. Exit code 0 when all pass, 1 when any fails, 77 when
there is no GPU (ctest: skipped).

  PYTHONPATH=python python3 test/gpu/check.py DIR [--results bench/results]
  python3 test/gpu/check.py DIR --simulate build/tools/attnc/attnc   # no GPU: each
      variant's config through `attnc run --backend gpu-sim`, to check the harness
  python3 test/gpu/check.py DIR --prepare-with build/tools/attnc/attnc   # both halves
"""
import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "python"))
import kit  # noqa: E402
from attune_inputs import run_attnc  # noqa: E402 (kit put test/e2e on the path)


# attnc run's flag for each sequence argument (as in prepare.py).
SEQ_FLAGS = {"cu_seqlens_q": "--cu-seqlens-q", "cu_seqlens_kv": "--cu-seqlens-kv",
             "page_table": "--page-table", "kv_lens": "--kv-lens", "q_lens": "--q-lens"}


def inputs_of(data):
    return {k.split(":", 1)[1]: data[k] for k in data.files if k.startswith("input:")}


class Gpu:
    """Bundles through attune on CUDA tensors."""

    def __init__(self):
        import torch
        import attune
        self.torch, self.attune = torch, attune
        self.kernels = {}
        self.name = torch.cuda.get_device_name()

    def variants(self, bundle):
        if bundle not in self.kernels:
            self.kernels[bundle] = self.attune.load(bundle)
        return self.kernels[bundle].variants

    def run(self, bundle, variant, case, q, k, v, inputs, splits=None, seq=None, bounds=None):
        torch = self.torch
        kernel = self.kernels[bundle]
        dev = lambda a, dt=kernel.dtype: torch.from_numpy(a).to("cuda", dt)  # noqa: E731
        extra = {n: torch.from_numpy(a).cuda() for n, a in inputs.items()}
        if seq:  # per-sequence storage: int32 sequence tensors on q's device, no tuning
            seq = {n: torch.from_numpy(a).cuda() for n, a in seq.items()}
            if bounds:  # the runtime then reads none of the sequence arrays
                seq.update(max_seqlen_q=bounds[0], max_seqlen_kv=bounds[1])
            with torch.no_grad():
                out = kernel(dev(q), dev(k), dev(v), variant=variant, return_lse=case["lse"],
                             num_splits=splits, **seq, **extra)
            o, lse = out if case["lse"] else (out, None)
            torch.cuda.synchronize()
            return o.float().cpu().numpy(), None if lse is None else lse.cpu().numpy()
        offsets = case["offsets"] or (None, None)
        out = kernel(dev(q), dev(k), dev(v), variant=variant, return_lse=case["lse"],
                     q_offset=offsets[0], kv_offset=offsets[1], num_splits=splits, tune=False,
                     **extra)
        o, lse = out if case["lse"] else (out, None)
        torch.cuda.synchronize()
        return o.float().cpu().numpy(), None if lse is None else lse.cpu().numpy()


class Simulator:
    """The same cases through `attnc run --backend gpu-sim` at each variant's tile
    config: no GPU, but every step of this harness but the launch is exercised."""

    name = "gpu-sim"

    def __init__(self, attnc):
        self.attnc = attnc
        self.tmp = tempfile.mkdtemp(prefix="attune-gpu-checks-")

    def variants(self, bundle):
        manifest = json.load(open(os.path.join(bundle, "manifest.json")))
        return [v["name"] for v in manifest["variants"]]

    def run(self, bundle, variant, case, q, k, v, inputs, splits=None, seq=None, bounds=None):
        manifest = json.load(open(os.path.join(bundle, "manifest.json")))
        config = next(x["config"] for x in manifest["variants"] if x["name"] == variant)
        spec = os.path.join(self.tmp, "spec.json")
        json.dump(manifest["spec"], open(spec, "w"))
        extra = ["--block-m", str(config["block_m"]), "--block-n", str(config["block_n"])]
        if config.get("pack_gqa"):
            extra.append("--pack-gqa")
        if config.get("mma") == "wgmma":
            extra.append("--wgmma")
        if splits:
            extra += ["--num-splits", str(splits)]
        if case["offsets"]:
            extra += ["--q-offset", str(case["offsets"][0]), "--kv-offset", str(case["offsets"][1])]
        for name, arr in (seq or {}).items():
            path = os.path.join(self.tmp, f"seq-{name}.npy")
            np.save(path, arr)
            extra += [SEQ_FLAGS[name], path]
        if bounds:
            extra += ["--max-seqlen-q", str(bounds[0]), "--max-seqlen-kv", str(bounds[1])]
        return run_attnc(self.attnc, spec, "gpu-sim", self.tmp, {"q": q, "k": k, "v": v, **inputs},
                         inputs, extra)


def errors(case, ref, o, lse):
    """(o error / scale, lse error, problem or None)."""
    o_ref = ref["o"].astype(np.float32)
    if o.shape != o_ref.shape:
        return None, None, f"o has shape {o.shape}, expected {o_ref.shape}"
    if np.isnan(o).any():
        return None, None, "NaN in o"
    if case.get("storage", {}).get("q") == "padded" and "q_lens" in case:
        for b, n in enumerate(case["q_lens"]):  # rows past q_lens[b] are exactly 0
            if (o[b, :, n:] != 0).any():
                return None, None, f"o rows of sequence {b} past q_lens[{b}] = {n} are not 0"
    scale = max(float(np.abs(o_ref).max()), 1e-3)
    err = float(np.abs(o - o_ref).max()) / scale
    lse_err = None
    if case["lse"]:
        lse_ref = ref["lse"]
        if np.isnan(lse).any():
            return err, None, "NaN in lse"
        masked = np.isneginf(lse_ref)
        if (np.isneginf(lse) != masked).any():
            return err, None, "lse is -inf on other rows than the reference's"
        if (~masked).any():
            diff = np.abs(lse[~masked] - lse_ref[~masked]) / np.maximum(1.0, np.abs(lse_ref[~masked]))
            lse_err = float(diff.max())
    problem = None
    if err > kit.TOLERANCE:
        problem = f"o error {err:.3g} > {kit.TOLERANCE}"
    elif lse_err is not None and lse_err > kit.LSE_TOLERANCE:
        problem = f"lse error {lse_err:.3g} > {kit.LSE_TOLERANCE}"
    return err, lse_err, problem


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir")
    p.add_argument("--results", help="directory for the table (e.g. bench/results)")
    p.add_argument("--only", help="comma-separated case names")
    p.add_argument("--simulate", metavar="ATTNC", help="run on attnc's gpu-sim instead of a GPU")
    p.add_argument("--prepare-with", metavar="ATTNC",
                   help="first fill DIR with prepare.py (after making sure there is a GPU)")
    args = p.parse_args()

    if args.simulate:
        runner = Simulator(args.simulate)
    else:
        try:
            import torch
        except ImportError:
            print("skipped: no PyTorch, so no GPU to check on")
            sys.exit(77)
        if not torch.cuda.is_available():
            print("skipped: no CUDA GPU")
            sys.exit(77)
        runner = Gpu()
    if args.prepare_with:
        subprocess.run([sys.executable, os.path.join(HERE, "prepare.py"), "--out", args.dir,
                        "--attnc", args.prepare_with], check=True)
    plan = json.load(open(os.path.join(args.dir, "checks.json")))
    if plan.get("format") != kit.FORMAT:
        sys.exit(f"{args.dir}/checks.json is not {kit.FORMAT}")
    only = set(args.only.split(",")) if args.only else None

    rows = {}
    failures = []
    for case in plan["cases"]:
        if only and case["name"] not in only:
            continue
        row = rows.setdefault(case["name"], {"name": case["name"], "dtype": case["dtype"],
                                             "cases": 0, "runs": 0, "o_err": 0.0,
                                             "lse_err": None, "failures": 0})
        row["cases"] += 1
        bundle = os.path.join(args.dir, case["bundle"])
        spec = json.load(open(os.path.join(bundle, "manifest.json")))["spec"]
        q, k, v = kit.qkv(case["seed"], spec, case["batch"], case["seq_q"], case["seq_kv"],
                          case["dtype"])
        what = f"{case['name']} B={case['batch']} Sq={case['seq_q']} Skv={case['seq_kv']} offsets={case['offsets']}"
        if case.get("storage"):
            what = (f"{case['name']} q_lens={case['q_lens']} kv_lens={case['kv_lens']}"
                    + (f" page_size={case['page_size']}" if case["page_size"] else ""))
        if kit.checksum(q, k, v) != case["qkv_sha256"]:
            failures.append(f"{what}: q/k/v regenerated differently from prepare.py's (numpy changed?)")
            row["failures"] += 1
            continue
        ref = np.load(os.path.join(args.dir, case["data"]))
        inputs = inputs_of(ref)
        variants = runner.variants(bundle)
        runs = [(name, None, None) for name in variants]
        seq = None
        if case.get("storage"):
            q, k, v, seq = kit.storage_forms(
                case["seed"], case["storage"], case["dtype"], q, k, v, case["q_lens"],
                case["kv_lens"], ref["page_table"] if "page_table" in ref.files else None,
                case["page_size"], case["pages"])
            # Split-KV, and the call with max_seqlen bounds (on a GPU the runtime then
            # reads no sequence array: the path a CUDA graph captures).
            bounds = (max(case["q_lens"]), max(max(case["kv_lens"]), 1))
            runs += [(variants[0], 3, None), (variants[0], None, bounds)]
        else:
            runs += [(name, 3, None)
                     for name in [variants[0]] + [n for n in variants if n.endswith("_wgmma")][:1]]
        for variant, splits, bounds in runs:
            row["runs"] += 1
            try:
                o, lse = runner.run(bundle, variant, case, q, k, v, inputs, splits, seq, bounds)
                err, lse_err, problem = errors(case, ref, o, lse)
            except Exception as e:  # noqa: BLE001 - a launch failure is a failed check
                err, lse_err, problem = None, None, f"{type(e).__name__}: {e}"
            if err is not None:
                row["o_err"] = max(row["o_err"], err)
            if lse_err is not None:
                row["lse_err"] = max(row["lse_err"] or 0.0, lse_err)
            if problem:
                row["failures"] += 1
                failures.append(f"{what} {variant}{f' num_splits={splits}' if splits else ''}"
                                f"{f' max_seqlen={bounds}' if bounds else ''}: {problem}")
        print(f"{what}: {'ok' if not row['failures'] else 'FAILED'}", flush=True)

    lines = [f"# Attune GPU checks on {runner.name} ({datetime.date.today()})", "",
             f"Every variant of each example's bundle ({plan['arch']}) on every case, against the "
             f"float64 reference; pass: o error <= {kit.TOLERANCE} of max |o_ref|, lse error <= "
             f"{kit.LSE_TOLERANCE}, same -inf rows, no NaN.", "",
             "| spec | dtype | cases | runs | max o error | max lse error | result |",
             "|---|---|---|---|---|---|---|"]
    for r in rows.values():
        lse_err = "-" if r["lse_err"] is None else f"{r['lse_err']:.1e}"
        result = "pass" if not r["failures"] else f"FAIL ({r['failures']})"
        lines.append(f"| {r['name']} | {r['dtype']} | {r['cases']} | {r['runs']} | "
                     f"{r['o_err']:.1e} | {lse_err} | {result} |")
    if failures:
        lines += ["", "Failures:", ""] + [f"- {f}" for f in failures]
    table = "\n".join(lines)
    print(table)
    if args.results:
        os.makedirs(args.results, exist_ok=True)
        stem = os.path.join(args.results, f"gpu-checks-{runner.name.replace(' ', '_')}-{datetime.date.today()}")
        open(stem + ".md", "w").write(table + "\n")
        json.dump({"rows": list(rows.values()), "failures": failures}, open(stem + ".json", "w"), indent=1)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
