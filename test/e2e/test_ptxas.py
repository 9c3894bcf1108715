"""Every example spec compiled to a kernel bundle for sm_80 and sm_90a: ptxas accepts
every variant, and the default variant of each arch does not spill. Skips (visibly)
where ptxas is not installed."""
import concurrent.futures
import json
import os
import shutil
import subprocess
import tempfile

import pytest

from test_examples_cpu import ATTNC, EXAMPLES


def find_ptxas():
    for p in [os.environ.get("ATTUNE_PTXAS"), "/usr/local/cuda/bin/ptxas", shutil.which("ptxas")]:
        if p and os.access(p, os.X_OK):
            return p
    return None


def compile_examples(tmp, args):
    """Every example compiled to a bundle with `args`, in parallel:
    [(file name, bundle dir, manifest or None, failure or None)]."""
    def one(path):
        out = os.path.join(tmp, os.path.basename(path)[:-5])
        r = subprocess.run([ATTNC, "compile", path, "-o", out, *args], capture_output=True,
                           text=True)
        if r.returncode != 0:
            return os.path.basename(path), out, None, f"attnc compile failed: {r.stderr.strip()}"
        return os.path.basename(path), out, json.load(open(os.path.join(out, "manifest.json"))), None
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return list(pool.map(one, EXAMPLES))


def check_variant(name, out, v, present, absent, failures):
    """A cubin and a ptxas report, and the PTX with every needle of `present`, none of
    `absent`."""
    if "ptxas" not in v or not os.path.exists(os.path.join(out, v["cubin"])):
        failures.append(f"{name}/{v['name']}: no cubin or ptxas report")
        return
    ptx = open(os.path.join(out, v["ptx"])).read()
    failures += [f"{name}/{v['name']}: no {n} in the PTX" for n in present if n not in ptx]
    failures += [f"{name}/{v['name']}: {n} in the PTX" for n in absent if n in ptx]


SERIALIZED = "wgmma.mma_async instructions are serialized"


def serialized(name, v, failures, what):
    """ptxas's warnings are recorded; a default variant whose wgmmas ptxas serialized
    (an accumulator or A register it cannot prove safe, too few registers) fails."""
    if "ptxas_warnings" not in v:
        failures.append(f"{name}: {what} {v['name']} has a ptxas report but no ptxas_warnings")
        return
    failures += [f"{name}: {what} {v['name']}: ptxas: {w}" for w in v["ptxas_warnings"]
                 if SERIALIZED in w]


def spills(name, v, failures, what):
    p = v["ptxas"]
    if p["spill_stores"] or p["spill_loads"]:
        failures.append(f"{name}: {what} {v['name']} spills {p['spill_stores']}/{p['spill_loads']} bytes")


@pytest.mark.skipif(find_ptxas() is None, reason="ptxas not found (no CUDA toolkit here)")
def test_every_example_assembles_without_spills():
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, out, manifest, failure in compile_examples(tmp, ["--arch", "sm_80,sm_90a"]):
            if failure:
                failures.append(f"{name}: {failure}")
                continue
            archs = {v["arch"] for v in manifest["variants"]}
            if archs != {"sm_80", "sm_90a"}:
                failures.append(f"{name}: variants for {sorted(archs)}")
            for v in manifest["variants"]:
                check_variant(name, out, v, ("mma.sync.aligned.m16n8k16", "ldmatrix.sync", "cp.async"),
                              (), failures)
            for arch in ("sm_80", "sm_90a"):
                defaults = [v for v in manifest["variants"] if v["arch"] == arch and v["default"]]
                if len(defaults) != 1:
                    failures.append(f"{name}: {len(defaults)} default variants for {arch}")
                elif "ptxas" in defaults[0]:
                    spills(name, defaults[0], failures, "default")
                    serialized(name, defaults[0], failures, "default")
    assert not failures, "\n".join(failures)


WGMMA_CONFIGS = "128x64w,64x64w,128x128w"


@pytest.mark.skipif(find_ptxas() is None, reason="ptxas not found (no CUDA toolkit here)")
def test_every_example_assembles_on_wgmma():
    """The sm_90a wgmma variants of every example: ptxas accepts them, their PTX has
    wgmma and the async-proxy fence and no mma.sync/ldmatrix, and the first (128x64w)
    does not spill."""
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        args = ["--arch", "sm_90a", "--configs", WGMMA_CONFIGS]
        for name, out, manifest, failure in compile_examples(tmp, args):
            if failure:
                failures.append(f"{name}: {failure}")
                continue
            variants = manifest["variants"]
            if [v["config"]["mma"] for v in variants] != ["wgmma"] * 3:
                failures.append(f"{name}: variants {[v['name'] for v in variants]}")
            for v in variants:
                check_variant(name, out, v, ("wgmma.mma_async.sync.aligned.m64n",
                                             "fence.proxy.async.shared::cta",
                                             "wgmma.wait_group.sync.aligned"),
                              ("mma.sync", "ldmatrix"), failures)
            if "ptxas" in variants[0]:
                spills(name, variants[0], failures, "first")
            # The first is the default of a --configs list: its wgmmas must not be
            # serialized.
            if variants and "ptxas" in variants[0]:
                serialized(name, variants[0], failures, "first")
    assert not failures, "\n".join(failures)


def test_every_wgmma_variant_passes_the_register_lint():
    """Bundle writing lints each variant's PTX (codegen/nvidia/PtxLint.h: no access to
    a wgmma's accumulator or A registers between it and the wgmma.wait_group that
    retires it, none after the wgmma.fence before it): every example's wgmma variants
    compile, so they pass. Needs no ptxas."""
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        args = ["--arch", "sm_90a", "--configs", WGMMA_CONFIGS + ",64x128w,128x32w", "--no-ptxas"]
        for name, out, manifest, failure in compile_examples(tmp, args):
            if failure:
                failures.append(f"{name}: {failure}")
            elif [v["config"]["mma"] for v in manifest["variants"]] != ["wgmma"] * 5:
                failures.append(f"{name}: variants {[v['name'] for v in manifest['variants']]}")
    assert not failures, "\n".join(failures)
