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


def compile_bundle(path, out):
    r = subprocess.run([ATTNC, "compile", path, "-o", out, "--arch", "sm_80,sm_90a"],
                       capture_output=True, text=True)
    return path, r


@pytest.mark.skipif(find_ptxas() is None, reason="ptxas not found (no CUDA toolkit here)")
def test_every_example_assembles_without_spills():
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [(p, os.path.join(tmp, os.path.basename(p)[:-5])) for p in EXAMPLES]
        with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            results = list(pool.map(lambda j: compile_bundle(*j), jobs))
        for (path, r), (_, out) in zip(results, jobs):
            name = os.path.basename(path)
            if r.returncode != 0:
                failures.append(f"{name}: attnc compile failed: {r.stderr.strip()}")
                continue
            manifest = json.load(open(os.path.join(out, "manifest.json")))
            archs = {v["arch"] for v in manifest["variants"]}
            if archs != {"sm_80", "sm_90a"}:
                failures.append(f"{name}: variants for {sorted(archs)}")
            for v in manifest["variants"]:
                if "ptxas" not in v or not os.path.exists(os.path.join(out, v["cubin"])):
                    failures.append(f"{name}/{v['name']}: no cubin or ptxas report")
                    continue
                ptx = open(os.path.join(out, v["ptx"])).read()
                for needle in ("mma.sync.aligned.m16n8k16", "ldmatrix.sync", "cp.async"):
                    if needle not in ptx:
                        failures.append(f"{name}/{v['name']}: no {needle} in the PTX")
            for arch in ("sm_80", "sm_90a"):
                defaults = [v for v in manifest["variants"] if v["arch"] == arch and v["default"]]
                if len(defaults) != 1:
                    failures.append(f"{name}: {len(defaults)} default variants for {arch}")
                    continue
                p = defaults[0]["ptxas"]
                if p["spill_stores"] or p["spill_loads"]:
                    failures.append(f"{name}: default {defaults[0]['name']} spills "
                                    f"{p['spill_stores']}/{p['spill_loads']} bytes")
    assert not failures, "\n".join(failures)


WGMMA_CONFIGS = "128x64w,64x64w,128x128w"


def compile_wgmma(path, out):
    r = subprocess.run([ATTNC, "compile", path, "-o", out, "--arch", "sm_90a",
                        "--configs", WGMMA_CONFIGS], capture_output=True, text=True)
    return path, r


@pytest.mark.skipif(find_ptxas() is None, reason="ptxas not found (no CUDA toolkit here)")
def test_every_example_assembles_on_wgmma():
    """The sm_90a wgmma variants of every example: ptxas accepts them, their PTX has
    wgmma and the async-proxy fence and no mma.sync/ldmatrix, and the first (128x64w)
    does not spill."""
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [(p, os.path.join(tmp, os.path.basename(p)[:-5])) for p in EXAMPLES]
        with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            results = list(pool.map(lambda j: compile_wgmma(*j), jobs))
        for (path, r), (_, out) in zip(results, jobs):
            name = os.path.basename(path)
            if r.returncode != 0:
                failures.append(f"{name}: attnc compile failed: {r.stderr.strip()}")
                continue
            manifest = json.load(open(os.path.join(out, "manifest.json")))
            variants = manifest["variants"]
            if [v["config"]["mma"] for v in variants] != ["wgmma"] * 3:
                failures.append(f"{name}: variants {[v['name'] for v in variants]}")
            for v in variants:
                if "ptxas" not in v or not os.path.exists(os.path.join(out, v["cubin"])):
                    failures.append(f"{name}/{v['name']}: no cubin or ptxas report")
                    continue
                ptx = open(os.path.join(out, v["ptx"])).read()
                for needle in ("wgmma.mma_async.sync.aligned.m64n", "fence.proxy.async.shared::cta",
                               "wgmma.wait_group.sync.aligned"):
                    if needle not in ptx:
                        failures.append(f"{name}/{v['name']}: no {needle} in the PTX")
                for needle in ("mma.sync", "ldmatrix"):
                    if needle in ptx:
                        failures.append(f"{name}/{v['name']}: {needle} in a wgmma kernel")
            first = variants[0].get("ptxas", {})
            if first.get("spill_stores") or first.get("spill_loads"):
                failures.append(f"{name}: {variants[0]['name']} spills "
                                f"{first['spill_stores']}/{first['spill_loads']} bytes")
    assert not failures, "\n".join(failures)
