"""The NVIDIA kernels on tensors that are not contiguous [B, H, S, D] arrays: through
the simulator (`attnc run --backend gpu-sim`), q, k, v and o laid out sequence-major
(`--layout bshd`: the strides of a transposed [B, S, H, D] tensor), padded after every
row, head and batch (`--pad N`: strides that follow from no shape), both at once; and
specs with head_dim != head_dim_v. mma.sync and wgmma, packed GQA, split-KV, odd
lengths. The simulator bounds-checks every global access against its tensor and fails
a kernel that writes o's gaps, so a kernel that assumed contiguity cannot pass.
bf16/fp16 tolerance 2e-2 of the output scale, as test_examples_gpusim.py."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from attune_inputs import load_spec, make_inputs, round_to  # noqa: E402
from test_examples_cpu import ATTNC, EXAMPLES  # noqa: E402
from test_examples_gpusim import check_runs, group_of, offsets, tile  # noqa: E402

LAYOUTS = [("bshd", ["--layout", "bshd"]), ("pad8", ["--pad", "8"]),
           ("bshd+pad24", ["--layout", "bshd", "--pad", "24"])]
SPECS = ["causal", "document", "alibi", "rope-half", "mqa-decode", "sliding-window",
         "block-list", "softcap"]


def example(name):
    return os.path.join(os.path.dirname(EXAMPLES[0]), name + ".json")


def layout_runs(path, rng):
    """Every layout on mma.sync, wgmma (one at random) and, where the heads group,
    packed GQA; one split-KV run."""
    runs = []
    for label, args in LAYOUTS:
        for t in (tile(64, 64), tile(*[(64, 64), (128, 64), (64, 128)][rng.integers(3)], "--wgmma")):
            runs.append((f"{t[0]} {label}", t[1] + args))
    if group_of(path) > 1 and 64 % group_of(path) == 0:
        runs.append(("config=64x32g bshd", tile(64, 32, "--pack-gqa")[1] + ["--layout", "bshd"]))
    runs.append(("config=64x16 splits=3 bshd+pad8",
                 tile(64, 16)[1] + ["--num-splits", "3", "--layout", "bshd", "--pad", "8"]))
    return runs


@pytest.mark.parametrize("name", SPECS)
def test_strided_tensors_match_reference(name, tmp_path):
    seed = int.from_bytes(os.urandom(4), "little")
    rng = np.random.default_rng(seed)
    path = example(name)
    cases = [(2, 17, 17, []), (1, 70, 130, []), (1, 33, 70, offsets(rng))]
    check_runs(path, tmp_path, seed, rng, cases, layout_runs(path, rng))


@pytest.mark.parametrize("dims", [(64, 128), (128, 64), (64, 32)])
@pytest.mark.parametrize("name", ["causal", "document", "alibi", "rope-half"])
def test_head_dim_v_differs(name, dims, tmp_path):
    """head_dim != head_dim_v (the P V tiles and the O stores are dv wide, S and the Q/K
    tiles d): contiguous and strided, mma.sync and wgmma."""
    seed = int.from_bytes(os.urandom(4), "little")
    rng = np.random.default_rng(seed)
    spec = json.load(open(example(name)))
    spec["head_dim"], spec["head_dim_v"] = dims
    path = str(tmp_path / f"{name}-d{dims[0]}-dv{dims[1]}.json")
    json.dump(spec, open(path, "w"))
    runs = [tile(64, 64), tile(64, 64, "--wgmma"),
            ("config=128x64w bshd+pad8", tile(128, 64, "--wgmma")[1] + ["--layout", "bshd", "--pad", "8"]),
            ("config=32x32 bshd", tile(32, 32)[1] + ["--layout", "bshd"])]
    cases = [(2, 17, 17, []), (1, 70, 130, [])]
    check_runs(path, tmp_path, seed, rng, cases, runs)


def test_misaligned_rows_are_refused(tmp_path):
    """--pad 3: rows start 6 bytes off the 16-byte alignment cp.async needs. On the GPU
    that would fault; gpu-sim launches through the runtime, whose argument checks
    refuse the stride before any kernel runs (the simulator's own alignment check, for
    kernels that get there, is proved in KernelSimulatorTest)."""
    spec = load_spec(example("causal"))
    rng = np.random.default_rng(0)
    q, k, v, _ = make_inputs(spec, 1, 17, 17, rng)
    files = {}
    for n, a in {"q": q, "k": k, "v": v}.items():
        files[n] = str(tmp_path / f"{n}.npy")
        np.save(files[n], round_to(a, "bf16"))
    r = subprocess.run([ATTNC, "run", example("causal"), "--backend", "gpu-sim", "--q", files["q"],
                        "--k", files["k"], "--v", files["v"], "--out", str(tmp_path / "o.npy"),
                        "--pad", "3"], capture_output=True, text=True)
    assert r.returncode != 0
    assert "q: stride" in r.stderr and "is not a multiple of 16 bytes" in r.stderr, r.stderr
    r = subprocess.run([ATTNC, "run", example("causal"), "--backend", "cpu", "--q", files["q"],
                        "--k", files["k"], "--v", files["v"], "--out", str(tmp_path / "o.npy"),
                        "--pad", "8"], capture_output=True, text=True)
    assert r.returncode == 2 and "--pad is for the gpu-sim backend" in r.stderr, r.stderr
