"""attune.merge: the LSE merge of partial attention results (PATTERNS.md, "Beyond one
kernel"), checked against softmax attention over all the keys at once."""

import math

import pytest
import torch

import attune

INF = math.inf


def _attend(s, v):
    """Softmax attention of scores s [B, H, S, N] (-inf: masked) over v [B, H, N, Dv],
    float64: (o, lse) with o = 0, lse = -inf on rows with no allowed key."""
    lse = torch.logsumexp(s, dim=-1)
    finite = torch.isfinite(lse)
    p = torch.exp(s - torch.where(finite, lse, torch.zeros_like(lse)).unsqueeze(-1))
    p = torch.where(finite.unsqueeze(-1), p, torch.zeros_like(p))
    return p @ v, lse


def _case(parts, seed, B=2, H=3, S=11, N=23, Dv=5):
    """Scores and values with masked pairs, rows masked in some parts, and rows masked in
    every part; the keys cut into `parts` uneven runs (some may be empty)."""
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(B, H, S, N, generator=g, dtype=torch.float64) * 3
    v = torch.randn(B, H, N, Dv, generator=g, dtype=torch.float64)
    s = s.masked_fill(torch.rand(B, H, S, N, generator=g) < 0.3, -INF)
    s[:, :, 0] = -INF  # no allowed key at all
    s[0, 1, 5] = -INF
    cuts = sorted(torch.randint(0, N + 1, (parts - 1,), generator=g).tolist())
    bounds = [0] + cuts + [N]
    pieces = [_attend(s[..., a:b], v[:, :, a:b]) for a, b in zip(bounds, bounds[1:])]
    return _attend(s, v), pieces


@pytest.mark.parametrize("parts", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_merge_equals_attention_over_all_keys(parts, dtype):
    (o_ref, lse_ref), pieces = _case(parts, seed=100 + parts)
    partials = [(o.to(dtype), lse.to(torch.float64 if dtype == torch.float64 else torch.float32))
                for o, lse in pieces]
    o, lse = attune.merge(partials)
    assert o.dtype == dtype and o.shape == o_ref.shape
    assert lse.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert not torch.isnan(o).any() and not torch.isnan(lse).any()
    masked = torch.isinf(lse_ref)
    assert masked.any()
    assert torch.equal(torch.isinf(lse), masked)  # -inf exactly where no part has a key
    assert (lse[masked] == -INF).all() and (o[masked] == 0).all()
    tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 1e-2}[dtype]
    # bf16 partials are rounded on input: compare with the merge of the rounded values.
    torch.testing.assert_close(lse[~masked].double(), lse_ref[~masked], rtol=tol, atol=tol)
    o_tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 2e-2}[dtype]
    torch.testing.assert_close(o.double(), o_ref, rtol=o_tol, atol=o_tol)


def test_merge_is_associative_and_order_free():
    (_, _), pieces = _case(4, seed=7)
    o, lse = attune.merge(pieces)
    o2, lse2 = attune.merge([attune.merge(pieces[:2]), attune.merge(pieces[2:])])
    o3, lse3 = attune.merge(pieces[::-1])
    for a, b in ((o, o2), (o, o3), (lse, lse2), (lse, lse3)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert torch.is_tensor(attune.merge(pieces, return_lse=False))


def test_all_masked_rows_give_zero_and_no_nan_in_gradients():
    o1 = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    o2 = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    l1 = torch.tensor([[[-INF, 0.5, -INF], [-INF, -INF, 1.0]]], dtype=torch.float64)
    l2 = torch.tensor([[[-INF, -INF, 2.0], [-INF, 0.25, -INF]]], dtype=torch.float64)
    l1.requires_grad_(True)
    l2.requires_grad_(True)
    o, lse = attune.merge([(o1, l1), (o2, l2)])
    assert (o[0, :, 0] == 0).all() and (lse[0, :, 0] == -INF).all()
    # A row with one finite part is that part exactly.
    torch.testing.assert_close(o[0, 0, 1], o1[0, 0, 1].detach(), rtol=0, atol=0)
    torch.testing.assert_close(lse[0, 0, 1], l1[0, 0, 1].detach(), rtol=0, atol=0)
    loss = o.sum() + torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse)).sum()
    loss.backward()
    for t in (o1, o2, l1, l2):
        assert not torch.isnan(t.grad).any()
    assert (o1.grad[0, :, 0] == 0).all() and (l1.grad[0, :, 0] == 0).all()


def test_a_zero_weight_partial_contributes_nothing_but_nan_elsewhere_passes():
    o1 = torch.ones(1, 1, 2, 3)
    o2 = torch.full((1, 1, 2, 3), math.nan)
    l1 = torch.zeros(1, 1, 2)
    l2 = torch.tensor([[[-INF, 0.0]]])
    o, lse = attune.merge([(o1, l1), (o2, l2)])
    assert torch.equal(o[0, 0, 0], torch.ones(3))  # the NaN partial has weight 0 there
    assert torch.isnan(o[0, 0, 1]).all()  # and NaN where it counts: never hidden


@pytest.mark.parametrize("parts", [1, 2, 3])
def test_gradcheck(parts):
    g = torch.Generator().manual_seed(parts)
    partials = []
    for k in range(parts):
        o = torch.randn(1, 2, 4, 3, generator=g, dtype=torch.float64)
        lse = torch.randn(1, 2, 4, generator=g, dtype=torch.float64) * 2
        lse[0, 0, 0] = -INF  # a row masked in every part
        if k == 0:
            lse[0, 1, 2] = -INF  # and one masked in one part only
        partials += [o.requires_grad_(True), lse.requires_grad_(True)]

    def f(*flat):
        o, lse = attune.merge(list(zip(flat[0::2], flat[1::2])))
        # lse = -inf on the all-masked row: compare it as 0 (its gradient is 0 either way).
        return o, torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))

    assert torch.autograd.gradcheck(f, partials, eps=1e-6, atol=1e-7)
    assert torch.autograd.gradgradcheck(f, partials, eps=1e-6, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_merge_on_cuda():
    (o_ref, lse_ref), pieces = _case(3, seed=11)
    partials = [(o.float().cuda(), lse.float().cuda()) for o, lse in pieces]
    o, lse = attune.merge(partials)
    assert o.is_cuda and lse.is_cuda
    torch.testing.assert_close(o.cpu().double(), o_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lse.cpu().double(), lse_ref, rtol=1e-5, atol=1e-5)


def _pair(shape=(1, 2, 3, 4), dtype=torch.float32, lse_dtype=torch.float32, device="cpu"):
    return (torch.zeros(shape, dtype=dtype, device=device),
            torch.zeros(shape[:-1], dtype=lse_dtype, device=device))


@pytest.mark.parametrize("partials, message", [
    ([], "partials is empty"),
    ((), "partials is empty"),
    (None, "partials must be a list or tuple"),
    ([_pair()[0]], r"partials\[0\] must be an \(o, lse\) pair"),
    ([(_pair()[0], 3.0)], r"partials\[0\]\[1\] \(lse\) must be a torch.Tensor"),
    ([_pair(), (_pair()[0], _pair()[1].int())],
     r"partials\[1\]\[1\] \(lse\) has dtype torch.int32 but partials\[0\]\[1\]"),
    ([_pair(lse_dtype=torch.int64)],
     r"partials\[0\]\[1\] \(lse\) has dtype torch.int64; lse must be float"),
    ([_pair(lse_dtype=torch.bfloat16)], r"\(lse\) has dtype torch.bfloat16; lse must be float32"),
    ([_pair(dtype=torch.int32)],
     r"partials\[0\]\[0\] \(o\) has dtype torch.int32; o must be float"),
    ([_pair(), _pair((1, 2, 5, 4))], r"partials\[1\]\[0\] \(o\) has shape \[1, 2, 5, 4\] but"),
    ([_pair(), _pair(dtype=torch.float64)], r"partials\[1\]\[0\] \(o\) has dtype torch.float64"),
    ([(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 4))], r"\(lse\) has shape \[1, 2, 4\]; for o of"),
    ([_pair(), _pair(device="meta")],
     r"partials\[1\]\[0\] \(o\) is on meta but partials\[0\]\[0\] is on cpu"),
])
def test_bad_arguments_are_named(partials, message):
    with pytest.raises(attune.AttuneError, match=message):
        attune.merge(partials)
