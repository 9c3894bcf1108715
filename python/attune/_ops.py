"""The kernel call as a PyTorch custom op, where torch provides the API (>= 2.4).

``torch.ops.attune.attention(bundle_dir, q, k, v, inputs, q_offset, kv_offset,
want_lse) -> (o, lse)`` with a fake (meta) implementation that gives the output shapes
from the bundle's manifest, and a registered autograd formula (the bundle's backward
kernel), so that torch.compile and torch.export trace through Attune calls without a
graph break. ``lse`` is [B, Hq, Sq] float32 when the call computes it (asked for, or a
CPU call of a softmax bundle, whose backward reads it), else an empty tensor.

On older torch (Debian's 1.13 on the CI machines) nothing is registered and
Kernel.__call__ runs the plain call (with torch.autograd.Function for gradients).
$ATTUNE_CUSTOM_OP=0 turns the op off.
"""

import os
import threading
from typing import List, Optional

import torch

_lock = threading.Lock()
_kernels = {}
_error = None


def _kernel(bundle_dir):
    """The Kernel of a bundle directory, loaded once per process."""
    from ._kernel import Kernel

    with _lock:
        k = _kernels.get(bundle_dir)
        if k is None:
            k = _kernels[bundle_dir] = Kernel(bundle_dir)
        return k


def remember(kernel):
    """Makes `kernel` the one the op uses for its bundle directory (no reload)."""
    with _lock:
        _kernels.setdefault(kernel.info["dir"], kernel)


def _lse_rows(kernel, q, want_lse):
    return want_lse or (q.device.type == "cpu" and kernel._host_lse)


def _register():
    lib = torch.library

    @lib.custom_op("attune::attention", mutates_args=())
    def attention(
        bundle: str,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        inputs: List[torch.Tensor],
        q_offset: Optional[int],
        kv_offset: Optional[int],
        want_lse: bool,
    ) -> List[torch.Tensor]:
        kern = _kernel(bundle)
        tensors = dict(zip(kern.input_names, inputs))
        o, _, saved = kern._forward(
            q, k, v, want_lse, tensors, q_offset=q_offset, kv_offset=kv_offset, variant=None,
            tune=None, num_splits=None, num_threads=None, keep_lse=True,
        )
        if saved is None:
            saved = q.new_empty((0,), dtype=torch.float32)
        return [o, saved]

    @attention.register_fake
    def _(bundle, q, k, v, inputs, q_offset, kv_offset, want_lse):
        kern = _kernel(bundle)
        B, Sq = q.shape[0], q.shape[2]
        o = q.new_empty((B, kern.heads_q, Sq, kern.head_dim_v))
        shape = (B, kern.heads_q, Sq) if _lse_rows(kern, q, want_lse) else (0,)
        return [o, q.new_empty(shape, dtype=torch.float32)]

    def setup_context(ctx, inputs, output):
        bundle, q, k, v, extras, q_offset, kv_offset, want_lse = inputs
        o, lse = output
        kern = _kernel(bundle)
        ctx.bundle, ctx.q_offset, ctx.kv_offset, ctx.want_lse = bundle, q_offset, kv_offset, want_lse
        ctx.needs = [
            n for n, t in zip(kern.input_names, extras)
            if t.requires_grad and kern._inputs[n]["dtype"] != "i32"
        ]
        ctx.save_for_backward(q, k, v, o, lse, *extras)

    def backward(ctx, grads):
        do, dlse = grads
        kern = _kernel(ctx.bundle)
        q, k, v, o, lse, *extras = ctx.saved_tensors
        tensors = dict(zip(kern.input_names, extras))
        if do is None:
            do = torch.zeros_like(o)
        dq, dk, dv, g = kern._backward(
            q, k, v, o, lse if lse.numel() else None, do,
            dlse if (ctx.want_lse and dlse is not None) else None, tensors, ctx.needs,
            q_offset=ctx.q_offset, kv_offset=ctx.kv_offset, variant=None, num_threads=None,
        )
        extra_grads = [g[n].to(tensors[n].dtype) if n in g else None for n in kern.input_names]
        return None, dq, dk, dv, extra_grads, None, None, None

    lib.register_autograd("attune::attention", backward, setup_context=setup_context)
    return attention


def _try_register():
    global _error
    if os.environ.get("ATTUNE_CUSTOM_OP", "").strip().lower() in ("0", "false", "off", "no"):
        _error = "$ATTUNE_CUSTOM_OP turns the custom op off"
        return None
    if not (hasattr(torch.library, "custom_op") and hasattr(torch.library, "register_autograd")):
        _error = f"torch {torch.__version__} has no torch.library.custom_op (needs >= 2.4)"
        return None
    try:
        return _register()
    except Exception as e:  # an API that differs from the one written against
        _error = f"registering attune::attention failed: {type(e).__name__}: {e}"
        return None


_op = _try_register()
HAVE_CUSTOM_OP = _op is not None


def registration_error():
    """Why the custom op is not registered, or None when it is."""
    return _error


def call(kernel, q, k, v, return_lse, q_offset, kv_offset, tensors):
    """Kernel.__call__ through the custom op."""
    remember(kernel)
    inputs = [tensors[n] for n in kernel.input_names]
    o, lse = _op(kernel.info["dir"], q, k, v, inputs, q_offset, kv_offset, bool(return_lse))
    return (o, lse) if return_lse else o
