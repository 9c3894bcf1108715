"""Merging partial attention results of the same queries by their log-sum-exp.

A kernel that sees only part of the keys (one split of split-KV decoding, one step of
ring attention, one (w, r) configuration of LongNet) returns o_k and lse_k for its part;
PATTERNS.md ("Beyond one kernel") gives the exact combination

    lse = logsumexp_k lse_k,    o = sum_k exp(lse_k - lse) o_k,

which is what `merge` computes, in float32 (float64 when a partial is float64), with
torch operations only, so it runs wherever the tensors are and autograd differentiates
it (into every o_k and lse_k).
"""

import math

import torch

from ._capi import AttuneError


def _compute_dtype(*dtypes):
    # float32 at least: bf16/fp16 partials would lose the small weights exp(lse_k - lse)
    # of a many-way merge; float64 is kept so that gradcheck (and float64 oracles) work.
    return torch.float64 if torch.float64 in dtypes else torch.float32


def _combine(os, lses):
    """The merge, unchecked: (o, lse) in the compute dtype of the partials.

    Rows where every lse_k is -inf (no allowed key in any part) give o = 0 and
    lse = -inf. Neither the forward nor the backward pass produces a NaN there: the
    running maximum m is replaced by 0 on such rows before it is subtracted (so no
    -inf - -inf), log is taken of a denominator that is 1 on them, and the weight of a
    -inf partial is exp(-inf) = 0 exactly, whose derivative is 0 too. Treating m as a
    constant is exact: it cancels from both lse and the weights.
    """
    dtype = _compute_dtype(*(t.dtype for t in os), *(t.dtype for t in lses))
    lse_all = torch.stack([t.to(dtype) for t in lses])  # [K, ...]
    with torch.no_grad():
        m = lse_all.amax(dim=0)
        m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    w = torch.exp(lse_all - m)  # [K, ...]; 0 for a -inf partial
    denom = w.sum(dim=0)
    nonempty = denom > 0
    safe = torch.where(nonempty, denom, torch.ones_like(denom))
    lse = torch.where(nonempty, torch.log(safe) + m, torch.full_like(denom, -math.inf))
    o = None
    for ok, wk in zip(os, (w / safe).unbind(0)):
        wk = wk.unsqueeze(-1)
        # A partial of weight 0 contributes nothing whatever its o holds (a kernel's o on
        # a fully masked row is 0, but 0 * inf would be NaN): where, not a product.
        zero = torch.zeros((), dtype=dtype, device=wk.device)
        term = torch.where(wk > 0, wk * ok.to(dtype), zero)
        o = term if o is None else o + term
    return o, lse


def _check(partials):
    if isinstance(partials, (str, bytes)) or not hasattr(partials, "__len__"):
        raise AttuneError(
            f"attune.merge: partials must be a list or tuple of (o, lse) pairs, got "
            f"{type(partials).__name__}"
        )
    if len(partials) == 0:
        raise AttuneError("attune.merge: partials is empty; give at least one (o, lse) pair")
    for k, pair in enumerate(partials):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            size = f" of length {len(pair)}" if hasattr(pair, "__len__") else ""
            raise AttuneError(
                f"attune.merge: partials[{k}] must be an (o, lse) pair, got "
                f"{type(pair).__name__}{size}"
            )
        for idx, name in ((0, "o"), (1, "lse")):
            if not isinstance(pair[idx], torch.Tensor):
                raise AttuneError(
                    f"attune.merge: partials[{k}][{idx}] ({name}) must be a torch.Tensor, got "
                    f"{type(pair[idx]).__name__}"
                )
    o0, lse0 = partials[0]
    if o0.dim() < 1:
        raise AttuneError("attune.merge: partials[0][0] (o) must have at least one dimension")
    if not o0.dtype.is_floating_point:
        raise AttuneError(f"attune.merge: partials[0][0] (o) has dtype {o0.dtype}; o must be float")
    if not lse0.dtype.is_floating_point or lse0.dtype in (torch.float16, torch.bfloat16):
        raise AttuneError(
            f"attune.merge: partials[0][1] (lse) has dtype {lse0.dtype}; lse must be float32 "
            "(or float64)"
        )
    if lse0.shape != o0.shape[:-1]:
        raise AttuneError(
            f"attune.merge: partials[0][1] (lse) has shape {list(lse0.shape)}; for o of shape "
            f"{list(o0.shape)} it must be {list(o0.shape[:-1])} (o without its last dimension)"
        )
    for k, (o, lse) in enumerate(partials):
        for idx, name, t, ref in ((0, "o", o, o0), (1, "lse", lse, lse0)):
            where = f"partials[{k}][{idx}] ({name})"
            if t.shape != ref.shape:
                raise AttuneError(
                    f"attune.merge: {where} has shape {list(t.shape)} but partials[0][{idx}] has "
                    f"{list(ref.shape)}; the partials must be of the same queries"
                )
            if t.dtype != ref.dtype:
                raise AttuneError(
                    f"attune.merge: {where} has dtype {t.dtype} but partials[0][{idx}] has "
                    f"{ref.dtype}; give every partial the same dtypes"
                )
            if t.device != o0.device:
                raise AttuneError(
                    f"attune.merge: {where} is on {t.device} but partials[0][0] is on "
                    f"{o0.device}; the partials must be on one device"
                )


def merge(partials, *, return_lse=True):
    """Merges partial attention results (o_k, lse_k) of the same queries.

    partials: a list or tuple of (o, lse) pairs; o [B, H, S, Dv] (any float dtype, the
    same for all), lse [B, H, S] float32 (or float64), natural log, -inf on rows where
    that part had no allowed key. Returns (o, lse), or o alone with return_lse=False:
    o in the partials' dtype, lse float32 (float64 for float64 partials). The sums run
    in float32 (float64 for float64 partials). Rows where every partial is -inf give
    o = 0 and lse = -inf, never NaN, and gradients (into every o_k and lse_k) without
    NaN. Any leading shape works: lse's shape is o's without the last dimension.
    """
    _check(partials)
    os = [p[0] for p in partials]
    lses = [p[1] for p in partials]
    o, lse = _combine(os, lses)
    o = o.to(os[0].dtype)
    lse = lse.to(lses[0].dtype)
    return (o, lse) if return_lse else o
