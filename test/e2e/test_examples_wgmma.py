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
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from attune_inputs import load_spec, make_inputs, round_to  # noqa: E402
from test_examples_cpu import EXAMPLES, run  # noqa: E402
from test_examples_gpusim import close  # noqa: E402

CONFIGS = [(128, 64), (64, 128), (128, 128), (64, 16), (128, 32)]


@pytest.mark.parametrize("path", EXAMPLES, ids=[os.path.basename(p)[:-5] for p in EXAMPLES])
def test_wgmma_kernel_matches_reference(path, tmp_path):
    seed = int.from_bytes(os.urandom(4), "little")
    rng = np.random.default_rng(seed)
    spec = load_spec(path)
    name = os.path.basename(path)[:-5]
    dtype = spec.get("dtype", "bf16")
    configs = [(64, 64, False)] + [CONFIGS[i] + (False,) for i in rng.choice(len(CONFIGS), 1)]
    group = spec["heads_q"] // spec.get("heads_kv", spec["heads_q"])
    if group > 1 and 64 % group == 0:
        configs.append((int(rng.choice([64, 128])), 64, True))
    cases = [(1, 17, 17, []), (1, 1, 45, []), (2, 70, 130, []),
             (1, 33, 70, ["--q-offset", str(int(rng.integers(-20, 60))),
                          "--kv-offset", str(int(rng.integers(-10, 10)))])]
    for batch, sq, skv, extra in cases:
        q, k, v, inputs = make_inputs(spec, batch, sq, skv, rng)
        q, k, v = (round_to(x, dtype) for x in (q, k, v))
        arrays = {"q": q, "k": k, "v": v, **inputs}
        o_ref, lse_ref = run(path, "reference", str(tmp_path), arrays, inputs, extra)
        for bm, bn, pack in configs:
            what = (f"{name} seed={seed} B={batch} Sq={sq} Skv={skv} {extra} "
                    f"config={bm}x{bn}{'g' if pack else ''}w")
            o, lse = run(path, "gpu-sim", str(tmp_path), arrays, inputs,
                         extra + ["--block-m", str(bm), "--block-n", str(bn), "--wgmma"]
                         + (["--pack-gqa"] if pack else []))
            close(o_ref, o, what, 2e-2)
            if lse_ref is not None:
                masked = np.isneginf(lse_ref)
                assert (np.isneginf(lse) == masked).all(), f"{what}: -inf rows differ"
                if (~masked).any():
                    close(lse_ref[~masked], lse[~masked], what + " lse", 1e-2)
