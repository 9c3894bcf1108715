"""Empty problems on every back end (`attnc run --backend reference|cpu|gpu-sim`, the
simulator also split-KV, GQA-packed and as the sm_90a wgmma kernel): B = 0 and Sq = 0
give outputs of the right (empty) shape, Skv = 0 makes every row fully masked (o = 0,
lse = -inf), and numpy loads every file written. The runtime's side (an empty call
launches nothing and succeeds) is runtime/test/SelectTest.cpp (Launch.*)."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from attune_inputs import load_spec, make_inputs, run_attnc  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ATTNC = os.environ.get("ATTNC", os.path.join(ROOT, "build", "tools", "attnc", "attnc"))
# lse with and without extra inputs, RoPE, non-softmax normalisers, GQA / MQA, block
# and index lists.
SPECS = ["causal", "packed-causal", "rope-yarn", "sigmoid", "mqa-decode", "block-list",
         "vertical-slash"]
# (B, Sq, Skv)
CASES = [(0, 5, 7), (2, 0, 7), (2, 5, 0), (1, 0, 0)]
BACKENDS = [("reference", []), ("cpu", []), ("gpu-sim", []), ("gpu-sim", ["--num-splits", "3"])]


def check_case(path, backends, tmp_path, cases=CASES):
    spec = load_spec(path)
    hq, d = spec["heads_q"], spec["head_dim"]
    dv = spec.get("head_dim_v", d)
    has_lse = "lse" in spec.get("outputs", [])
    rng = np.random.default_rng(int.from_bytes(os.urandom(4), "little"))
    for batch, sq, skv in cases:
        q, k, v, inputs = make_inputs(spec, batch, sq, skv, rng)
        arrays = {"q": q, "k": k, "v": v, **inputs}
        for backend, extra in backends:
            what = f"{os.path.basename(path)} B={batch} Sq={sq} Skv={skv} {backend} {extra}"
            o, lse = run_attnc(ATTNC, path, backend, str(tmp_path), arrays, inputs, extra)
            assert o.shape == (batch, hq, sq, dv), what
            assert o.dtype == np.float32, what
            # No allowed key: the weights are empty, o is 0 (NaN never passes).
            assert (o == 0).all(), f"{what}: o is not 0"
            if has_lse:
                assert lse.shape == (batch, hq, sq), what
                assert np.isneginf(lse).all(), f"{what}: lse is not -inf"


@pytest.mark.parametrize("name", SPECS)
def test_empty_problems(name, tmp_path):
    check_case(os.path.join(ROOT, "specs", "examples", f"{name}.json"), BACKENDS, tmp_path)


def test_empty_problems_on_the_other_kernels(tmp_path):
    # GQA packing and the wgmma kernel (head dim 128) on the simulator.
    path = os.path.join(ROOT, "specs", "examples", "mqa-decode.json")
    check_case(path, [("gpu-sim", ["--pack-gqa"]), ("gpu-sim", ["--wgmma"]),
                      ("gpu-sim", ["--wgmma", "--num-splits", "2"])], tmp_path)


def test_npy_files_of_empty_and_odd_shapes_round_trip(tmp_path):
    # The writer's headers as numpy reads them: one dimension (a 1-tuple), zero sizes.
    path = os.path.join(ROOT, "specs", "examples", "causal.json")
    spec = load_spec(path)
    q, k, v, _ = make_inputs(spec, 0, 3, 3, np.random.default_rng(0))
    o, lse = run_attnc(ATTNC, path, "reference", str(tmp_path), {"q": q, "k": k, "v": v}, {}, [])
    with open(os.path.join(tmp_path, "lse-reference.npy"), "rb") as f:
        header = f.read(128)
    assert b"'shape': (0, 8, 3)" in header, header
    assert np.load(os.path.join(tmp_path, "o-reference.npy"), allow_pickle=False).shape == (0, 8, 3, 64)
