"""Every example spec through the NVIDIA kernel, run by the functional SIMT simulator
(`attnc run --backend gpu-sim`), against the float64 reference on the same 16-bit
inputs: several tile configurations (GQA-packed ones among them), odd lengths,
seq_q != seq_kv, offsets. The simulator models mma.sync/ldmatrix fragment layouts,
cp.async groups and shared-memory races; bf16/fp16 tolerance 2e-2 of the output scale;
NaN never passes."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from attune_inputs import load_spec, make_inputs, round_to  # noqa: E402
from test_examples_cpu import EXAMPLES, run  # noqa: E402

CONFIGS = [(16, 16), (32, 32), (128, 64), (64, 32), (16, 64), (32, 16)]


def close(ref, got, what, tol):
    assert not np.isnan(got).any(), f"{what}: NaN"
    scale = max(float(np.abs(ref).max()), 1e-3)
    err = float(np.abs(got - ref).max())
    assert err <= tol * scale, f"{what}: max error {err:.3g} vs scale {scale:.3g}"


def check_runs(path, tmp_path, seed, rng, cases, runs):
    """Each case (batch, seq_q, seq_kv, extra args) through the reference, then through
    the simulated kernel once per run (label, extra args): o within 2e-2 of the output
    scale, -inf lse rows exactly where the reference has them, lse within 1e-2."""
    spec = load_spec(path)
    name = os.path.basename(path)[:-5]
    dtype = spec.get("dtype", "bf16")
    for batch, sq, skv, extra in cases:
        q, k, v, inputs = make_inputs(spec, batch, sq, skv, rng)
        q, k, v = (round_to(x, dtype) for x in (q, k, v))
        arrays = {"q": q, "k": k, "v": v, **inputs}
        o_ref, lse_ref = run(path, "reference", str(tmp_path), arrays, inputs, extra)
        for label, args in runs:
            what = f"{name} seed={seed} B={batch} Sq={sq} Skv={skv} {extra} {label}"
            o, lse = run(path, "gpu-sim", str(tmp_path), arrays, inputs, extra + args)
            close(o_ref, o, what, 2e-2)
            if lse_ref is not None:
                masked = np.isneginf(lse_ref)
                assert (np.isneginf(lse) == masked).all(), f"{what}: -inf rows differ"
                if (~masked).any():
                    close(lse_ref[~masked], lse[~masked], what + " lse", 1e-2)


SUFFIX = {"--pack-gqa": "g", "--wgmma": "w"}


def tile(bm, bn, *flags):
    """(label, attnc args) of a tile config: 64x64g packs GQA, w runs on wgmma."""
    return (f"config={bm}x{bn}{''.join(SUFFIX[f] for f in flags)}",
            ["--block-m", str(bm), "--block-n", str(bn), *flags])


def group_of(path):
    spec = load_spec(path)
    return spec["heads_q"] // spec.get("heads_kv", spec["heads_q"])


def offsets(rng):
    return ["--q-offset", str(int(rng.integers(-20, 60))),
            "--kv-offset", str(int(rng.integers(-10, 10)))]


@pytest.mark.parametrize("path", EXAMPLES, ids=[os.path.basename(p)[:-5] for p in EXAMPLES])
def test_gpu_kernel_matches_reference(path, tmp_path):
    seed = int.from_bytes(os.urandom(4), "little")
    rng = np.random.default_rng(seed)
    runs = [tile(64, 64)] + [tile(*CONFIGS[i]) for i in rng.choice(len(CONFIGS), 1)]
    # GQA packing: the rows of every query head of a kv head in one CTA.
    group = group_of(path)
    packable = [c for c in CONFIGS + [(64, 64)] if group > 1 and c[0] % group == 0]
    if packable:
        runs.append(tile(*packable[int(rng.integers(len(packable)))], "--pack-gqa"))
    cases = [(1, 17, 17, []), (1, 1, 45, []), (2, 40, 23, []), (1, 70, 130, []),
             (1, 33, 70, offsets(rng))]
    check_runs(path, tmp_path, seed, rng, cases, runs)


@pytest.mark.parametrize("path", EXAMPLES, ids=[os.path.basename(p)[:-5] for p in EXAMPLES])
def test_split_kv_matches_reference(path, tmp_path):
    """Split-KV (`--num-splits N`): the key schedule of each query block cut into N runs
    over N CTAs, each writing f32 partials, then attn_combine. Decoding shapes (one or
    three queries over many keys), more splits than key blocks, offsets, fully masked
    rows; packed GQA and wgmma variants split too."""
    seed = int.from_bytes(os.urandom(4), "little")
    rng = np.random.default_rng(seed)
    configs = [tile(64, 16), tile(64, 64, "--wgmma")]
    if group_of(path) > 1 and 64 % group_of(path) == 0:
        configs.append(tile(64, 32, "--pack-gqa"))
    runs = []
    for label, args in configs:
        splits = int(rng.choice([2, 3, 5, 40]))
        runs.append((f"{label} splits={splits}", args + ["--num-splits", str(splits)]))
    cases = [(1, 1, 300, []), (2, 3, 130, []), (1, 40, 23, []), (1, 33, 200, offsets(rng))]
    check_runs(path, tmp_path, seed, rng, cases, runs)
