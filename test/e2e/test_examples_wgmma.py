"""Every example spec through the sm_90a wgmma kernel (`attnc run --backend gpu-sim
--wgmma`), run by the functional SIMT simulator, against the float64 reference on the
same 16-bit inputs. Beyond what test_examples_gpusim.py proves for mma.sync, the
simulator here decodes each wgmma's shared-memory matrix descriptors with the 128-byte
swizzle, places the dynamic shared memory only 16-byte aligned (the kernel must align
its swizzled tiles itself), and refuses a wgmma that reads bytes written without
fence.proxy.async and a barrier, an accumulator read before wgmma.wait_group, and a
wgmma issued with no wgmma.fence. Block sizes: 64 and 128 rows (one and two
warpgroups), 64 or 128 keys; odd lengths, seq_q != seq_kv, offsets, packed GQA.
bf16/fp16 tolerance 2e-2 of the output scale; NaN never passes."""
import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from test_examples_cpu import EXAMPLES  # noqa: E402
from test_examples_gpusim import check_runs, group_of, offsets, tile  # noqa: E402

CONFIGS = [(128, 64), (64, 128), (128, 128), (64, 16), (128, 32)]


@pytest.mark.parametrize("path", EXAMPLES, ids=[os.path.basename(p)[:-5] for p in EXAMPLES])
def test_wgmma_kernel_matches_reference(path, tmp_path):
    seed = int.from_bytes(os.urandom(4), "little")
    rng = np.random.default_rng(seed)
    runs = [tile(64, 64, "--wgmma")] + [tile(*CONFIGS[i], "--wgmma")
                                        for i in rng.choice(len(CONFIGS), 1)]
    group = group_of(path)
    if group > 1 and 64 % group == 0:
        runs.append(tile(int(rng.choice([64, 128])), 64, "--wgmma", "--pack-gqa"))
    cases = [(1, 17, 17, []), (1, 1, 45, []), (2, 70, 130, []), (1, 33, 70, offsets(rng))]
    check_runs(path, tmp_path, seed, rng, cases, runs)


NARROW = ["causal", "alibi", "document", "softcap", "sliding-window", "mqa-decode"]


@pytest.mark.parametrize("head_dim", [32, 96])
@pytest.mark.parametrize("name", NARROW)
def test_wgmma_narrow_head_dims(name, head_dim, tmp_path):
    """Head dims that are multiples of 32 but not of 64 take the 64-byte swizzle
    (slabs of 32 columns, 512-byte atoms): a few examples rewritten to head_dim 32 and
    96, one and two warpgroups, pipelined and plain loops, split-KV once."""
    seed = int.from_bytes(os.urandom(4), "little")
    rng = np.random.default_rng(seed)
    spec = json.load(open(os.path.join(os.path.dirname(EXAMPLES[0]), name + ".json")))
    spec["head_dim"] = head_dim
    spec.pop("head_dim_v", None)
    path = str(tmp_path / f"{name}-d{head_dim}.json")
    json.dump(spec, open(path, "w"))
    runs = [tile(64, 64, "--wgmma"), tile(128, 32, "--wgmma"), tile(64, 128, "--wgmma"),
            (lambda t: (t[0] + " splits=3", t[1] + ["--num-splits", "3"]))(tile(128, 64, "--wgmma"))]
    cases = [(1, 17, 17, []), (2, 70, 130, []), (1, 1, 200, [])]
    check_runs(path, tmp_path, seed, rng, cases, runs)
