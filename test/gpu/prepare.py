#!/usr/bin/env python3
"""Prepares the GPU checks on a machine with attnc: every example spec compiled to a
bundle (all default tile configs, for the GPU's arch, and on sm_90a the wgmma ones), and for each case its extra
inputs and the float64 reference's answer. See kit.py for the layout; check.py runs it.
Then the storage cases (kit.STORAGE): the spec with its "storage", compiled with a few
configs only (STORAGE_CONFIGS), its reference from `attnc run --backend reference` with
the sequence flags (the reference gathers each sequence and runs the dense float64
reference on it).

  /usr/bin/python3 test/gpu/prepare.py --out .carry/gpu-checks [--arch sm_90a]
      [--specs causal,document] [--seed N] [--no-long] [--no-storage | --only-storage]
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
WGMMA_CONFIGS = "128x64w,64x64w,128x128w"
# Storage bundles: two mma.sync tiles, a GQA-packed one where the spec has groups, and
# on sm_90a one wgmma tile (the kit stays small).
STORAGE_CONFIGS = "64x64,128x64"
# attnc run's flag for each sequence argument.
SEQ_FLAGS = {"cu_seqlens_q": "--cu-seqlens-q", "cu_seqlens_kv": "--cu-seqlens-kv",
             "page_table": "--page-table", "kv_lens": "--kv-lens", "q_lens": "--q-lens"}
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "test", "e2e"))
import kit  # noqa: E402
from attune_inputs import make_inputs, run_attnc  # noqa: E402


def attnc(exe, *args):
    r = subprocess.run([exe, *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{exe} {' '.join(args)} failed:\n{r.stderr}")
    return r.stdout


def reference(exe, spec_path, tmp, q, k, v, inputs, offsets):
    extra = ["--q-offset", str(offsets[0]), "--kv-offset", str(offsets[1])] if offsets else []
    try:
        return run_attnc(exe, spec_path, "reference", tmp, {"q": q, "k": k, "v": v, **inputs},
                         inputs, extra)
    except RuntimeError as e:
        sys.exit(str(e))


def seq_flags(tmp, seq):
    """The attnc run flags for the sequence arrays `seq` (saved as .npy in tmp)."""
    extra = []
    for name, arr in seq.items():
        path = os.path.join(tmp, f"seq-{name}.npy")
        np.save(path, arr)
        extra += [SEQ_FLAGS[name], path]
    return extra


def storage_configs(spec, arch):
    group = spec["heads_q"] // spec.get("heads_kv", spec["heads_q"])
    configs = STORAGE_CONFIGS + (",64x64g" if group > 1 and 64 % group == 0 else "")
    return configs + (",128x64w" if arch == "sm_90a" else "")


def prepare_storage(args, names, rng, tmp, cases):
    """The storage cases of the example specs `names`, appended to `cases`."""
    for name, storage, lq, lkv, page_size in kit.STORAGE:
        if name not in names:
            continue
        path = os.path.join(ROOT, "specs", "examples", f"{name}.json")
        spec = dict(json.load(open(path)), storage=storage)
        spec.setdefault("dtype", "bf16")
        dtype = spec["dtype"]
        label = kit.storage_label(name, storage)
        folder = kit.storage_dir(name, storage)
        spec_path = os.path.join(tmp, f"{folder}.json")
        json.dump(spec, open(spec_path, "w"))
        bundle = os.path.join(folder, "bundle")
        attnc(args.attnc, "compile", spec_path, "-o", os.path.join(args.out, bundle),
              "--arch", args.arch, "--configs", storage_configs(spec, args.arch))
        batch, sq, skv = len(lq), max(lq), max(max(lkv), 1)
        seed = int(rng.integers(0, 1 << 20))
        q, k, v = kit.qkv(seed, spec, batch, sq, skv, dtype)
        _, _, _, inputs = make_inputs(spec, batch, sq, skv, rng)
        table, pages = kit.page_table(rng, lkv, page_size) if page_size else (None, None)
        qs, ks, vs, seq = kit.storage_forms(seed, storage, dtype, q, k, v, lq, lkv, table,
                                            page_size, pages)
        try:
            o, lse = run_attnc(args.attnc, spec_path, "reference", tmp,
                               {"q": qs, "k": ks, "v": vs, **inputs}, inputs, seq_flags(tmp, seq))
        except RuntimeError as e:
            sys.exit(str(e))
        arrays = {f"input:{n}": a for n, a in inputs.items()}
        arrays["o"] = o.astype(np.float16)
        want_lse = "lse" in spec.get("outputs", [])
        if lse is not None:
            arrays["lse"] = lse.astype(np.float32)
        if table is not None:
            arrays["page_table"] = table
        data = os.path.join(folder, "case0.npz")
        np.savez_compressed(os.path.join(args.out, data), **arrays)
        cases.append({"name": label, "spec": f"{name}.json", "dtype": dtype, "bundle": bundle,
                      "data": data, "batch": batch, "seq_q": sq, "seq_kv": skv,
                      "offsets": None, "seed": seed, "lse": want_lse,
                      "qkv_sha256": kit.checksum(q, k, v), "storage": storage,
                      "q_lens": list(lq), "kv_lens": list(lkv), "page_size": page_size,
                      "pages": pages})
        print(f"prepared {label}: B={batch} q_lens={lq} kv_lens={lkv} page_size={page_size}",
              flush=True)


def variants_of(spec, name):
    """(label, spec) per dtype checked: the spec as written, and for some specs a copy
    in the other 16-bit type."""
    dtype = spec.get("dtype", "bf16")
    out = [(name, dict(spec, dtype=dtype))]
    if name in kit.OTHER_DTYPE:
        other = "fp16" if dtype == "bf16" else "bf16"
        out.append((f"{name}.{other}", dict(spec, dtype=other)))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--attnc", default=os.environ.get(
        "ATTNC", os.path.join(ROOT, "build", "tools", "attnc", "attnc")))
    p.add_argument("--arch", default="sm_90a")
    p.add_argument("--specs", help="comma-separated example names (default: all)")
    p.add_argument("--seed", type=int, default=int.from_bytes(os.urandom(2), "little"))
    p.add_argument("--no-long", action="store_true", help="skip the 1000-token cases")
    p.add_argument("--no-storage", action="store_true",
                   help="skip the ragged / paged / padded+lens cases (kit.STORAGE)")
    p.add_argument("--only-storage", action="store_true",
                   help="prepare the storage cases only (of the --specs that have one)")
    args = p.parse_args()
    if args.no_storage and args.only_storage:
        sys.exit("--no-storage and --only-storage exclude each other")

    paths = sorted(glob.glob(os.path.join(ROOT, "specs", "examples", "*.json")))
    if args.specs:
        wanted = set(args.specs.split(","))
        paths = [x for x in paths if os.path.basename(x)[:-5] in wanted]
        missing = wanted - {os.path.basename(x)[:-5] for x in paths}
        if missing:
            sys.exit(f"no example spec named {', '.join(sorted(missing))}")
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in [] if args.only_storage else paths:
            for label, spec in variants_of(json.load(open(path)), os.path.basename(path)[:-5]):
                dtype = spec["dtype"]
                spec_path = os.path.join(tmp, f"{label}.json")
                json.dump(spec, open(spec_path, "w"))
                bundle = os.path.join(label, "bundle")
                # The wgmma variants too (sm_90a only; they are not among the defaults
                # until these checks have passed on a GPU).
                attnc(args.attnc, "compile", spec_path, "-o", os.path.join(args.out, bundle),
                      "--arch", args.arch, "--configs", "default," + WGMMA_CONFIGS)
                want_lse = "lse" in spec.get("outputs", [])
                long = not args.no_long and label.split(".")[0] in kit.LONG
                shapes = kit.CASES + ([kit.LONG_CASE] if long else [])
                for i, (batch, sq, skv, offsets) in enumerate(shapes):
                    seed = int(rng.integers(0, 1 << 20))
                    q, k, v = kit.qkv(seed, spec, batch, sq, skv, dtype)
                    _, _, _, inputs = make_inputs(spec, batch, sq, skv, rng)
                    o, lse = reference(args.attnc, spec_path, tmp, q, k, v, inputs, offsets)
                    arrays = {f"input:{n}": a for n, a in inputs.items()}
                    arrays["o"] = o.astype(np.float16)
                    if lse is not None:
                        arrays["lse"] = lse.astype(np.float32)
                    data = os.path.join(label, f"case{i}.npz")
                    np.savez_compressed(os.path.join(args.out, data), **arrays)
                    cases.append({"name": label, "spec": os.path.basename(path), "dtype": dtype,
                                  "bundle": bundle, "data": data, "batch": batch, "seq_q": sq,
                                  "seq_kv": skv, "offsets": offsets, "seed": seed,
                                  "lse": want_lse, "qkv_sha256": kit.checksum(q, k, v)})
                print(f"prepared {label}: {len(shapes)} cases", flush=True)
        if not args.no_storage:
            prepare_storage(args, {os.path.basename(x)[:-5] for x in paths}, rng, tmp, cases)
    json.dump({"format": kit.FORMAT, "arch": args.arch, "cases": cases},
              open(os.path.join(args.out, "checks.json"), "w"), indent=1)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(args.out) for f in fs)
    print(f"{len(cases)} cases in {args.out} ({size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
