"""attune.Kernel over ragged batches, paged KV caches and right-padded batches (the
spec's "storage"; cu_seqlens_q, cu_seqlens_kv, page_table, kv_lens, q_lens), on CPU
tensors through the runtime's C API and the bundle's host variant.

The oracle is the independent float64 dense attention of test/e2e/dense_autograd.py
run on each sequence alone: its q, k, v gathered into [1, H, len, D] tensors and its
inputs sliced to its lengths, with that sequence's own bottom-right alignment. float32
o and lse within 1e-5 of the output's scale; NaN never passes; seeds fresh per run.
"""

import functools
import json
import math
import os
import sys

import numpy as np
import pytest
import torch

import attune
from attune import AttuneError

from conftest import REPO, EXAMPLES

sys.path.insert(0, str(REPO / "test" / "e2e"))
import dense_autograd as da  # noqa: E402
from attune_inputs import make_inputs  # noqa: E402

SPECS = ["causal", "mistral-swa", "packed-causal", "alibi", "bias", "mqa-decode", "rope-half",
         "t5-bias", "sigmoid", "softcap", "streaming-llm", "prefix-lm-per-batch", "fire"]
SPECS = [s for s in SPECS if (EXAMPLES / f"{s}.json").exists()]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    from conftest import attnc_path

    path = attnc_path()
    if not path:
        pytest.skip("no attnc (a runtime-only build): host variants are compiled by attnc")
    os.environ["ATTUNE_ATTNC"] = path
    root = tmp_path_factory.mktemp("storage-specs")

    @functools.lru_cache(maxsize=None)
    def get(name, q, kv):
        spec = json.loads((EXAMPLES / f"{name}.json").read_text())
        spec["dtype"] = "f32"
        if (q, kv) != ("padded", "padded"):
            spec["storage"] = {"q": q, "kv": kv}
        p = root / f"{name}-{q}-{kv}.json"
        p.write_text(json.dumps(spec))
        return spec, attune.compile(str(p), arch="host")

    return get


def fresh_rng():
    seed = int.from_bytes(os.urandom(4), "little")
    return seed, np.random.default_rng(seed)


def oracle(spec, q, k, v, inputs, lq, lkv):
    """Per sequence (o [Hq, lq, Dv], lse [Hq, lq]) of the float64 dense attention."""
    out = []
    decls = spec.get("inputs", {})
    for b in range(len(lq)):
        arrays = {"q": q[b:b + 1, :, :lq[b]], "k": k[b:b + 1, :, :lkv[b]],
                  "v": v[b:b + 1, :, :lkv[b]]}
        for name, arr in inputs.items():
            idx = tuple(slice(b, b + 1) if d == "B" else slice(0, lq[b]) if d == "Sq"
                        else slice(0, lkv[b]) if d == "Skv" else slice(None)
                        for d in decls[name]["shape"])
            arrays[name] = arr[idx]
        if lq[b] == 0:
            out.append((None, None))
            continue
        tq, tk, tv, ins = da.make_torch_inputs(spec, arrays)
        o, lse = da.attention(spec, tq, tk, tv, ins)
        out.append((o[0].detach().numpy(), None if lse is None else lse[0].detach().numpy()))
    return out


def close(got, ref, what, lse=False):
    got = got.detach().numpy()
    assert not np.isnan(got).any(), f"{what}: NaN"
    if lse:
        masked = np.isneginf(ref)
        assert (np.isneginf(got) == masked).all(), f"{what}: -inf rows differ"
        if (~masked).any():
            err = np.abs(got[~masked] - ref[~masked]) / np.maximum(1.0, np.abs(ref[~masked]))
            assert err.max() <= 1e-5, f"{what}: lse error {err.max():.3g}"
        return
    scale = max(float(np.abs(ref).max()), 1e-6)
    err = float(np.abs(got - ref).max())
    assert err <= 1e-5 * scale, f"{what}: max error {err:.3g} vs scale {scale:.3g}"


def batch(spec, rng, lq, lkv):
    q, k, v, inputs = make_inputs(spec, len(lq), max(lq), max(max(lkv), 1), rng)
    return q, k, v, inputs


@pytest.mark.parametrize("name", SPECS)
def test_ragged_and_paged(compiled, name):
    seed, rng = fresh_rng()
    lq = [int(x) for x in rng.permutation([1, 17, 127, 60])] + [2]
    lkv = [n + int(rng.integers(0, 30)) for n in lq[:-1]] + [0]
    lkv[lq.index(17)] = 4  # fewer keys than queries: masked rows under causal masks
    spec, _ = compiled(name, "padded", "padded")
    q, k, v, inputs = batch(spec, rng, lq, lkv)
    ref = oracle(spec, q, k, v, inputs, lq, lkv)
    want_lse = spec.get("normalizer", "softmax") == "softmax"
    extras = {n: torch.from_numpy(a) for n, a in inputs.items()}
    cu_q = torch.tensor(np.concatenate([[0], np.cumsum(lq)]), dtype=torch.int32)
    qr = torch.from_numpy(np.concatenate([q[b, :, :lq[b]].transpose(1, 0, 2)
                                          for b in range(len(lq))]))
    what = f"{name} seed={seed} lq={lq} lkv={lkv}"

    def check(o, lse, label):
        for b in range(len(lq)):
            if lq[b] == 0:
                continue
            rows = slice(int(cu_q[b]), int(cu_q[b + 1]))
            close(o[rows].transpose(0, 1), ref[b][0], f"{what} {label} o[{b}]")
            if lse is not None:
                close(lse[rows].t(), ref[b][1], f"{what} {label} lse[{b}]", lse=True)

    # ragged q, ragged kv
    _, kern = compiled(name, "ragged", "ragged")
    cu_kv = torch.tensor(np.concatenate([[0], np.cumsum(lkv)]), dtype=torch.int32)
    cat = lambda t: torch.from_numpy(np.concatenate(  # noqa: E731
        [t[b, :, :lkv[b]].transpose(1, 0, 2) for b in range(len(lq))]))
    kr, vr = cat(k), cat(v)
    res = kern(qr, kr, vr, cu_seqlens_q=cu_q, cu_seqlens_kv=cu_kv, return_lse=want_lse,
               num_threads=int(rng.integers(1, 4)), **extras)
    o, lse = res if want_lse else (res, None)
    assert o.shape == (qr.shape[0], spec["heads_q"], spec.get("head_dim_v", spec["head_dim"]))
    check(o, lse, "ragged/ragged")

    # ragged q, paged kv (shuffled pages, -1 in unused table entries)
    ps = int(rng.choice([1, 16, 64]))
    used = [math.ceil(n / ps) for n in lkv]
    pages = sum(used) + 2
    ids = rng.permutation(pages)
    table = np.full((len(lq), max(used) + 1), -1, np.int32)
    hkv = k.shape[1]
    kc = np.zeros((pages, ps, hkv, k.shape[3]), np.float32)
    vc = np.zeros((pages, ps, hkv, v.shape[3]), np.float32)
    nxt = 0
    for b in range(len(lq)):
        for p in range(used[b]):
            table[b, p] = ids[nxt]
            for j in range(p * ps, min((p + 1) * ps, lkv[b])):
                kc[ids[nxt], j % ps] = k[b, :, j]
                vc[ids[nxt], j % ps] = v[b, :, j]
            nxt += 1
    _, kern = compiled(name, "ragged", "paged")
    res = kern(qr, torch.from_numpy(kc), torch.from_numpy(vc), cu_seqlens_q=cu_q,
               page_table=torch.from_numpy(table), kv_lens=torch.tensor(lkv, dtype=torch.int32),
               return_lse=want_lse, **extras)
    o, lse = res if want_lse else (res, None)
    check(o, lse, f"ragged/paged page_size={ps}")

    # padded with lengths, q/k/v as [B, S, H, D] views (read through their strides)
    _, kern = compiled(name, "padded", "padded")
    qv = torch.from_numpy(q.transpose(0, 2, 1, 3).copy()).transpose(1, 2)
    kv_ = torch.from_numpy(k.transpose(0, 2, 1, 3).copy()).transpose(1, 2)
    vv = torch.from_numpy(v.transpose(0, 2, 1, 3).copy()).transpose(1, 2)
    res = kern(qv, kv_, vv, q_lens=torch.tensor(lq, dtype=torch.int32),
               kv_lens=torch.tensor(lkv, dtype=torch.int32), return_lse=want_lse, **extras)
    o, lse = res if want_lse else (res, None)
    for b in range(len(lq)):
        assert (o[b, :, lq[b]:] == 0).all(), f"{what}: padding rows of {b} not 0"
        if lse is not None:
            assert torch.isneginf(lse[b, :, lq[b]:]).all(), f"{what}: padding lse not -inf"
        if lq[b]:
            close(o[b, :, :lq[b]], ref[b][0], f"{what} padded+lens o[{b}]")
            if lse is not None:
                close(lse[b, :, :lq[b]], ref[b][1], f"{what} padded+lens lse[{b}]", lse=True)


def test_errors_name_the_argument(compiled):
    spec, kern = compiled("causal", "ragged", "paged")
    hq, d = spec["heads_q"], spec["head_dim"]
    hkv = spec.get("heads_kv", hq)
    q = torch.randn(10, hq, d)
    kc = torch.randn(4, 8, hkv, d)
    i32 = lambda *x: torch.tensor(x, dtype=torch.int32)  # noqa: E731
    ok = dict(cu_seqlens_q=i32(0, 4, 10), page_table=i32([0, 1], [2, -1]), kv_lens=i32(16, 8))
    kern(q, kc, kc, **ok)  # runs
    cases = [
        (dict(ok, cu_seqlens_q=i32(1, 4, 10)), "cu_seqlens_q[0] must be 0, got 1"),
        (dict(ok, cu_seqlens_q=i32(0, 4, 9)), "cu_seqlens_q[2] = 9 must be the buffer's length 10"),
        (dict(ok, kv_lens=i32(17, 8)), "kv_lens[0] = 17 is outside [0, 16]"),
        (dict(ok, page_table=i32([0, 9], [2, -1])), "page_table[0, 1] = 9 is not a page of the cache"),
        (dict(ok, cu_seqlens_q=i32(0, 4, 6, 10)), "gives a batch of"),
        ({k: t for k, t in ok.items() if k != "kv_lens"}, "kv_lens is missing"),
        (dict(ok, cu_seqlens_kv=i32(0, 8, 16)), "cu_seqlens_kv: the spec's kv storage is paged"),
        (dict(ok, kv_lens=torch.tensor([16, 8])), "kv_lens has dtype torch.int64"),
    ]
    for kwargs, message in cases:
        with pytest.raises(AttuneError, match=None) as e:
            kern(q, kc, kc, **kwargs)
        assert message in str(e.value), (message, str(e.value))
    # validate=True is the page-id check of GPU calls; host calls always check, so it
    # changes nothing here, but it must be a bool and needs a page table.
    kern(q, kc, kc, validate=True, **ok)
    with pytest.raises(AttuneError) as e:
        kern(q, kc, kc, validate=True, **dict(ok, page_table=i32([0, 9], [2, -1])))
    assert "page_table[0, 1] = 9 is not a page of the cache" in str(e.value)
    with pytest.raises(AttuneError) as e:
        kern(q, kc, kc, validate=1, **ok)
    assert "validate=1; expected True or False" in str(e.value)
    # max_seqlen bounds are checked where the lengths are read (always on the CPU).
    kern(q, kc, kc, max_seqlen_q=6, max_seqlen_kv=16, **ok)
    with pytest.raises(AttuneError) as e:
        kern(q, kc, kc, max_seqlen_q=5, **ok)
    assert "max_seqlen_q = 5 is less than sequence 1's q length 6" in str(e.value), str(e.value)
    with pytest.raises(AttuneError) as e:
        kern(q, kc, kc, max_seqlen_kv=0, **ok)
    assert "max_seqlen_kv=0; expected a positive int" in str(e.value)
    with pytest.raises(AttuneError) as e:
        dense_q = torch.randn(1, hq, 4, d)
        compiled("causal", "padded", "padded")[1](dense_q, dense_q[:, :hkv], dense_q[:, :hkv],
                                                   validate=True)
    assert "this call passes none" in str(e.value)
    with pytest.raises(AttuneError) as e:
        kern(q.requires_grad_(), kc, kc, **ok)
    assert "autograd over ragged or paged storage" in str(e.value)
    # A padded bundle with q_lens of the wrong batch.
    _, dense = compiled("causal", "padded", "padded")
    qd = torch.randn(2, hq, 6, d)
    kd = torch.randn(2, hkv, 6, d)
    with pytest.raises(AttuneError) as e:
        dense(qd, kd, kd, q_lens=i32(1, 2, 3))
    assert "q_lens [3] gives a batch of 3 sequences" in str(e.value), str(e.value)
