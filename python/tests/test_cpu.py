"""attune.Kernel on CPU tensors: the bundle's host variant (`attnc compile --arch host`),
through the runtime's C API, for every example spec, against an independent float64
oracle (test/e2e/dense_autograd.py, written from PATTERNS.md); autograd through the
host backward kernel; determinism across thread counts; the custom op.

Tolerances: float32 o and lse 1e-5 of the output's scale, gradients 1e-4 of theirs
(with a floor: a gradient that cancels to ~0 keeps the rounding of its O(1) terms;
tensor gradients sum ~1e4 of them); bf16 o
2e-2 (inputs rounded to bf16, o rounded once more). NaN never passes. Seeds are fresh
per run and printed in failure messages.
"""

import functools
import json
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

SPECS = sorted(EXAMPLES.glob("*.json"))
IDS = [p.stem for p in SPECS]


@pytest.fixture(scope="module")
def host_kernel(attnc_module):
    @functools.lru_cache(maxsize=None)
    def get(path):
        return attune.compile(path, arch="host")

    return get


@pytest.fixture(scope="module")
def attnc_module():
    from conftest import attnc_path

    path = attnc_path()
    if not path:
        pytest.skip("no attnc (a runtime-only build): host variants are compiled by attnc")
    old = os.environ.get("ATTUNE_ATTNC")
    os.environ["ATTUNE_ATTNC"] = path
    yield path
    if old is None:
        os.environ.pop("ATTUNE_ATTNC", None)
    else:
        os.environ["ATTUNE_ATTNC"] = old


def fresh_seed():
    return int.from_bytes(os.urandom(4), "little")


def float_inputs(spec):
    return [n for n, d in spec.get("inputs", {}).items() if d["dtype"] == "f32"]


def tensors_of(spec, arrays, dtype=torch.float32, grad=False):
    """q, k, v and the inputs as torch tensors: floats in `dtype` (leaves requiring
    grad when `grad`), integers int32 as the bundle declares them."""
    q, k, v, ins = arrays

    def conv(a, is_float, to=torch.float32):
        t = torch.from_numpy(np.ascontiguousarray(a))
        if is_float:
            return t.to(to).requires_grad_(grad)
        return t.to(torch.int32)

    # Declared inputs keep their declared dtype (f32 or i32).
    return (conv(q, True, dtype), conv(k, True, dtype), conv(v, True, dtype),
            {n: conv(a, spec["inputs"][n]["dtype"] == "f32") for n, a in ins.items()})


def oracle(spec, arrays, dO, dlse, q_offset=None, kv_offset=None):
    """(o, lse, {grad name: array}) in float64, by torch autograd through the dense
    implementation."""
    q, k, v, ins = da.make_torch_inputs(spec, arrays)
    o, lse = da.attention(spec, q, k, v, ins, q_offset=q_offset, kv_offset=kv_offset)
    loss = (o * torch.from_numpy(dO).double()).sum()
    if dlse is not None and lse is not None:
        finite = torch.isfinite(lse)
        loss = loss + torch.where(finite, lse, torch.zeros_like(lse)).mul(
            torch.from_numpy(dlse).double()).sum()
    wrt = [q, k, v] + [ins[n] for n in float_inputs(spec)]
    grads = torch.autograd.grad(loss, wrt, allow_unused=True)
    names = ["q", "k", "v"] + float_inputs(spec)
    out = {n: (torch.zeros_like(t) if g is None else g).detach().numpy()
           for n, t, g in zip(names, wrt, grads)}
    return o.detach().numpy(), None if lse is None else lse.detach().numpy(), out


def close(want, got, rel, what, floor=1e-3):
    got = got.detach().double().numpy() if isinstance(got, torch.Tensor) else got
    assert got.shape == want.shape, f"{what}: shape {got.shape} vs {want.shape}"
    assert not np.isnan(got).any(), f"{what}: NaN"
    if want.size == 0:
        return
    inf = np.isinf(want)
    assert (np.isinf(got) == inf).all() and (got[inf] == want[inf]).all(), f"{what}: infinities differ"
    scale = max(float(np.abs(want[~inf]).max()) if (~inf).any() else 0.0, floor)
    err = float(np.abs(got[~inf] - want[~inf]).max()) if (~inf).any() else 0.0
    assert err <= rel * scale, f"{what}: max error {err:.3g} vs scale {scale:.3g}"


@pytest.mark.parametrize("path", SPECS, ids=IDS)
def test_forward_and_autograd_float32(path, host_kernel):
    """Every example spec: o (and lse) and, through o.sum()-style losses, the gradients
    of q, k, v and every float input, against the float64 oracle."""
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    spec = json.loads(path.read_text())
    kernel = host_kernel(str(path))
    has_lse = "lse" in spec.get("outputs", [])
    for batch, sq, skv in [(2, 37, 53), (1, 1, 17), (1, 70, 9)]:
        what = f"{path.stem} seed={seed} {batch}x{sq}x{skv}"
        arrays = make_inputs(spec, batch, sq, skv, rng)
        q, k, v, ins = tensors_of(spec, arrays, grad=True)
        o, lse = kernel(q, k, v, return_lse=True, **ins) if has_lse else (kernel(q, k, v, **ins), None)
        assert o.dtype == torch.float32 and o.grad_fn is not None, what
        dO = rng.standard_normal(o.shape).astype(np.float32)
        dlse = rng.standard_normal(lse.shape).astype(np.float32) if has_lse else None
        ro, rlse, rgrads = oracle(spec, arrays, dO, dlse)
        close(ro, o, 1e-5, what + " o")
        if has_lse:
            close(rlse, lse, 1e-5, what + " lse", floor=1.0)
        loss = (o * torch.from_numpy(dO)).sum()
        if has_lse:
            loss = loss + (torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
                           * torch.from_numpy(dlse)).sum()
        loss.backward()
        for name, t in [("q", q), ("k", k), ("v", v)] + [(n, ins[n]) for n in float_inputs(spec)]:
            assert t.grad is not None, f"{what}: no gradient for {name}"
            # The floor: a gradient that is exactly 0 (one key: P = 1, dS = P (dP - D) = 0)
            # comes out as the rounding of dP - D, terms of O(1): ~1e-6.
            close(rgrads[name], t.grad, 1e-4, f"{what} d{name}",
                  floor=1.0 if name not in ("q", "k", "v") else 0.1)


@pytest.mark.parametrize("path", SPECS, ids=IDS)
def test_forward_bf16(path, host_kernel):
    """bf16 tensors are converted to float32 for the host kernel and o back to bf16."""
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    spec = json.loads(path.read_text())
    kernel = host_kernel(str(path))
    batch, sq, skv = 1, 127, 33
    arrays = make_inputs(spec, batch, sq, skv, rng)
    q, k, v, ins = tensors_of(spec, arrays, dtype=kernel.dtype)
    o = kernel(q, k, v, **ins)
    assert o.dtype == kernel.dtype
    # The oracle on the inputs as the kernel saw them (rounded to bf16).
    rounded = tuple(t.float().numpy() for t in (q, k, v)) + (arrays[3],)
    ro, _, _ = oracle(spec, rounded, np.zeros((batch, spec["heads_q"], sq,
                                               spec.get("head_dim_v", spec["head_dim"])),
                                              np.float32), None)
    close(ro, o.float(), 2e-2, f"{path.stem} seed={seed} bf16 o")


def test_offsets_and_fully_masked_rows(host_kernel):
    """Causal with q_offset = -5: the first 5 queries see no key: o = 0, lse = -inf,
    gradients 0 and never NaN."""
    path = EXAMPLES / "causal.json"
    spec = json.loads(path.read_text())
    kernel = host_kernel(str(path))
    rng = np.random.default_rng(fresh_seed())
    arrays = make_inputs(spec, 1, 19, 19, rng)
    q, k, v, _ = tensors_of(spec, arrays, grad=True)
    o, lse = kernel(q, k, v, q_offset=-5, kv_offset=0, return_lse=True)
    assert torch.isneginf(lse[:, :, :5]).all() and (o[:, :, :5] == 0).all()
    ro, rlse, rgrads = oracle(spec, arrays, np.ones(o.shape, np.float32), None, q_offset=-5,
                              kv_offset=0)
    close(ro, o, 1e-5, "o")
    close(rlse, lse, 1e-5, "lse", floor=1.0)
    o.sum().backward()
    assert (q.grad[:, :, :5] == 0).all() and not torch.isnan(q.grad).any()
    for name, t in (("q", q), ("k", k), ("v", v)):
        close(rgrads[name], t.grad, 1e-4, f"d{name}")


@pytest.mark.parametrize("example", ["causal", "t5-bias", "fire"])
def test_gradients_are_bitwise_deterministic_across_thread_counts(example, host_kernel):
    """Two runs and three thread counts give bitwise the same gradients: items write
    disjoint rows, and grids that accumulate tensor gradients run in one thread."""
    path = EXAMPLES / f"{example}.json"
    spec = json.loads(path.read_text())
    kernel = host_kernel(str(path))
    arrays = make_inputs(spec, 2, 150, 131, np.random.default_rng(fresh_seed()))
    results = []
    for threads in (1, 3, 3, 8):
        q, k, v, ins = tensors_of(spec, arrays, grad=True)
        o = kernel(q, k, v, num_threads=threads, **ins)
        o.square().sum().backward()
        results.append([o.detach()] + [t.grad for t in [q, k, v] + [ins[n] for n in float_inputs(spec)]])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


def test_cpu_call_errors(host_kernel, copy_kernel):
    path = EXAMPLES / "causal.json"
    kernel = host_kernel(str(path))
    x = torch.randn(1, kernel.heads_q, 4, kernel.head_dim)
    kv = torch.randn(1, kernel.heads_kv, 4, kernel.head_dim)
    with pytest.raises(AttuneError, match=r"q has dtype torch.float16; this kernel takes torch.bfloat16 or torch.float32"):
        kernel(x.half(), kv.half(), kv.half())
    with pytest.raises(AttuneError, match=r"k has dtype torch.bfloat16 but q has torch.float32"):
        kernel(x, kv.bfloat16(), kv)
    with pytest.raises(AttuneError, match=r"unknown host variant 'nope'"):
        kernel(x, kv, kv, variant="nope")
    with pytest.raises(AttuneError, match=r"num_threads=0"):
        kernel(x, kv, kv, num_threads=0)
    with pytest.raises(AttuneError, match=r"k: expected shape"):
        kernel(x, kv[:, :, :, :3].contiguous(), kv)
    # A bundle without a host variant says how to get one.
    with pytest.raises(AttuneError, match=r"q is on cpu; the kernel needs CUDA tensors.*needs a host variant.*--arch host"):
        t = torch.zeros(1, copy_kernel.heads_q, 4, copy_kernel.head_dim, dtype=copy_kernel.dtype)
        kv2 = torch.zeros(1, copy_kernel.heads_kv, 4, copy_kernel.head_dim, dtype=copy_kernel.dtype)
        extra = {n: torch.zeros(1, 4, dtype=torch.int32) for n in copy_kernel.input_names}
        copy_kernel(t, kv2, kv2, **extra)


def test_strided_and_bf16_gradients(host_kernel):
    """Non-contiguous q/k/v (a [B, S, H, D] buffer viewed as [B, H, S, D]) and bf16
    gradients: the runtime reads through the strides and converts."""
    path = EXAMPLES / "mistral-swa.json"
    spec = json.loads(path.read_text())
    kernel = host_kernel(str(path))
    rng = np.random.default_rng(fresh_seed())
    arrays = make_inputs(spec, 1, 90, 90, rng)
    q, k, v, _ = tensors_of(spec, arrays)
    views = [t.transpose(1, 2).contiguous().transpose(1, 2).requires_grad_() for t in (q, k, v)]
    assert not views[0].is_contiguous()
    o = kernel(*views)
    o.sum().backward()
    ro, _, rgrads = oracle(spec, arrays, np.ones(o.shape, np.float32), None)
    close(ro, o, 1e-5, "strided o")
    for name, t in zip("qkv", views):
        close(rgrads[name], t.grad, 1e-4, f"strided d{name}")
    b = [t.detach().bfloat16().requires_grad_() for t in (q, k, v)]
    o16 = kernel(*b)
    o16.float().sum().backward()
    rounded = tuple(t.detach().float().numpy() for t in b) + (arrays[3],)
    ro, _, rgrads = oracle(spec, rounded, np.ones(o.shape, np.float32), None)
    for name, t in zip("qkv", b):
        assert t.grad.dtype == torch.bfloat16
        close(rgrads[name], t.grad.float(), 3e-2, f"bf16 d{name}")


def test_torch_compile_traces_the_custom_op(host_kernel):
    """Where the custom op exists: torch.compile(fullgraph=True) traces a function that
    calls the kernel (no graph break) and gives the eager answer, gradients included."""
    from attune import _ops

    if not (_ops.HAVE_CUSTOM_OP and hasattr(torch, "compile")):
        pytest.skip(f"torch {torch.__version__}: {_ops.registration_error() or 'no torch.compile'}")
    path = EXAMPLES / "causal.json"
    kernel = host_kernel(str(path))
    q = torch.randn(1, kernel.heads_q, 33, kernel.head_dim, requires_grad=True)
    k = torch.randn(1, kernel.heads_kv, 40, kernel.head_dim, requires_grad=True)
    v = torch.randn(1, kernel.heads_kv, 40, kernel.head_dim_v, requires_grad=True)

    def f(q, k, v):
        o, lse = kernel(q, k, v, return_lse=True)
        return (o * 2).sum() + lse.sum()

    eager = f(q, k, v)
    eager.backward()
    grads = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    compiled = torch.compile(f, fullgraph=True)(q, k, v)
    compiled.backward()
    assert torch.allclose(eager, compiled)
    for a, t in zip(grads, (q, k, v)):
        assert torch.allclose(a, t.grad)


def test_custom_op_or_plain_call():
    """torch >= 2.4 registers the call as a custom op (torch.compile traces it); older
    torch (Debian's 1.13) falls back to the plain call, which is what runs here."""
    from attune import _ops

    if _ops.HAVE_CUSTOM_OP:
        assert hasattr(torch.ops.attune, "attention")
    else:
        assert _ops.registration_error() is not None
        pytest.skip(f"torch {torch.__version__} has no torch.library.custom_op (needs >= 2.4): "
                    "the plain call path runs (tested above)")
