"""A loaded bundle as a callable on PyTorch tensors."""

import ctypes
import json
import operator
import os

import torch

from . import _capi
from ._capi import AttuneError

_TORCH_DTYPES = {
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "f32": torch.float32,
    "i32": torch.int32,
}
_API_DTYPES = {
    torch.bfloat16: _capi.ATTN_BF16,
    torch.float16: _capi.ATTN_FP16,
    torch.float32: _capi.ATTN_F32,
    torch.int32: _capi.ATTN_I32,
}

_DEVICE_RULE = "the kernel needs CUDA tensors (all on one device)"


def _ops_module():
    # Imported late: _ops imports this module.
    from . import _ops

    return _ops


def _env_flag(name):
    return os.environ.get(name, "") not in ("", "0")


def tuning_enabled():
    """First-call tuning is on unless $ATTUNE_TUNE is 0 (or the older ATTUNE_NO_TUNE=1).

    With it off the runtime also ignores the tuning database (attn_launch runs the
    default variant), so ATTUNE_TUNE=0 is the way to rule out a tuned choice."""
    if os.environ.get("ATTUNE_TUNE", "").strip().lower() in ("0", "false", "off", "no"):
        return False
    return not _env_flag("ATTUNE_NO_TUNE")


def _require_tensor(name, t):
    if not isinstance(t, torch.Tensor):
        kind = f"{type(t).__module__}.{type(t).__qualname__}"
        raise AttuneError(f"attune: {name} must be a torch.Tensor, got {kind}")


def _describe(name, t):
    """The attn_tensor of `t`; its dtype has been checked to be one the runtime knows."""
    if t.dim() > _capi.MAX_DIMS:
        raise AttuneError(
            f"attune: {name} has {t.dim()} dimensions; the runtime takes at most {_capi.MAX_DIMS}"
        )
    d = _capi.Tensor()
    d.data = t.data_ptr() or None
    d.dtype = _API_DTYPES[t.dtype]
    d.ndim = t.dim()
    for i, (size, stride) in enumerate(zip(t.shape, t.stride())):
        d.shape[i] = size
        d.strides[i] = stride
    return d


class Kernel:
    """One kernel bundle, loaded once and called like a function.

    Holding the runtime's bundle handle (rather than reloading per call) keeps the
    loaded CUDA modules and the in-memory tuning choices for the Kernel's lifetime.
    """

    def __init__(self, bundle_dir, *, _keep=None):
        self._handle = None  # __del__ must work when loading fails
        lib = _capi.lib()
        self._lib = lib
        # Kept on the instance: module globals may already be gone when __del__ runs
        # at interpreter shutdown.
        self._free = lib.attn_bundle_free
        handle = ctypes.c_void_p()
        _capi.check(lib.attn_bundle_load(os.fsencode(bundle_dir), ctypes.byref(handle)))
        self._handle = handle
        # A temporary bundle directory must outlive the handle: variants' PTX is read
        # on first use.
        self._keep = _keep
        self.info = json.loads(lib.attn_bundle_info_json(handle).decode("utf-8"))
        self.variants = tuple(
            lib.attn_bundle_variant_name(handle, i).decode("utf-8")
            for i in range(lib.attn_bundle_num_variants(handle))
        )
        self.dtype = _TORCH_DTYPES[self.info["dtype"]]
        self.heads_q = self.info["heads_q"]
        self.heads_kv = self.info["heads_kv"]
        self.head_dim = self.info["head_dim"]
        # How calls hold the batch (the spec's "storage"; padded when it has none).
        self.storage = {"q": "padded", "kv": "padded",
                        **self.info.get("spec", {}).get("storage", {})}
        self.head_dim_v = self.info["head_dim_v"]
        self.input_names = tuple(i["name"] for i in self.info["inputs"])
        self._inputs = {i["name"]: i for i in self.info["inputs"]}
        self.host_variants = tuple(
            lib.attn_bundle_host_variant_name(handle, i).decode("utf-8")
            for i in range(lib.attn_bundle_num_host_variants(handle))
        )
        host = [h for h in self.info.get("host", []) if h["default"]]
        # Whether the host forward writes lse (softmax), which its backward reads.
        self._host_lse = bool(host and host[0]["lse"])
        self._host_backward = bool(host and host[0]["backward"])
        self._host_backward_error = host[0].get("backward_error") if host else None

    def __del__(self):
        handle, self._handle = getattr(self, "_handle", None), None
        if handle:
            self._free(handle)

    def _declaration(self, name):
        decl = self._inputs[name]
        return f"{name} ({decl['dtype']} [{', '.join(map(str, decl['shape']))}])"

    def __repr__(self):
        i = self.info
        return (
            f"<attune.Kernel {i['spec_name']} {i['dtype']} heads {self.heads_q}/{self.heads_kv} "
            f"dim {self.head_dim}/{self.head_dim_v} inputs {list(self.input_names)} "
            f"{len(self.variants)} variants from {i['dir']}>"
        )

    def __call__(
        self,
        q,
        k,
        v,
        *,
        return_lse=False,
        q_offset=None,
        kv_offset=None,
        variant=None,
        tune=None,
        num_splits=None,
        num_threads=None,
        cu_seqlens_q=None,
        cu_seqlens_kv=None,
        page_table=None,
        kv_lens=None,
        q_lens=None,
        validate=False,
        max_seqlen_q=None,
        max_seqlen_kv=None,
        **tensors,
    ):
        """Attention of q [B, Hq, Sq, D] over k [B, Hkv, Skv, D], v [B, Hkv, Skv, Dv].

        Returns o [B, Hq, Sq, Dv] (q's dtype), or (o, lse) with lse [B, Hq, Sq] float32
        when return_lse. The bundle's extra inputs are keyword arguments (``doc=...``).

        CUDA tensors run on a GPU variant; CPU tensors on the bundle's host variant
        (``attnc compile --arch host``, in the default archs): float32 or the bundle's
        dtype (converted to float32 for the kernel, o returned in q's dtype), on
        ``num_threads`` threads (default: $ATTUNE_NUM_THREADS, else the cores).

        Autograd: when q, k, v or a float input requires grad (and grad mode is on),
        the outputs carry a backward that the bundle's backward kernel computes
        (deterministic; the host variant's: on CUDA the backward raises until GPU
        backward kernels exist). o.sum().backward() fills q.grad, k.grad, v.grad and the
        grad of every float input passed with requires_grad=True.

        Everything about the arguments is checked before the device is touched, so a
        wrong call fails with a message naming the argument, never with a fault. On
        CUDA the first call of each shape bucket (batch, seq lengths rounded up to
        powers of two) tunes the bundle's variants unless the tuning database already
        has a choice. The runtime's tuner runs the default variant first and keeps only
        candidates whose output agrees with it on these inputs (bf16 tolerance; NaN
        never passes), so a wrong-but-fast variant is dropped, never stored.
        ``tune=False`` uses the tuned or default variant without tuning;
        ``ATTUNE_TUNE=0`` turns tuning off and the default variant runs (the database
        is not consulted); ``tune=True`` re-tunes (an explicit request, even with
        ATTUNE_TUNE=0); ``variant="name"`` forces one variant (a host variant's name
        for CPU tensors). ``ATTUNE_VERBOSE=1`` prints the tuner's table on stderr.
        ``num_splits``: split the keys over that many CTAs per query block (split-KV,
        merged by lse); the default lets the runtime split when the grid would leave
        SMs idle (decoding).

        Batches of sequences of their own lengths (the spec's ``"storage"``; CPU tensors
        on the host variant, CUDA tensors on a GPU variant, not tuned): ragged q [total_q, Hq, D] with ``cu_seqlens_q`` int32 [B + 1]
        (o [total_q, Hq, Dv], lse [total_q, Hq]); ragged k/v [total_kv, Hkv, D] with
        ``cu_seqlens_kv``; a paged cache k/v [pages, page_size, Hkv, D] with
        ``page_table`` int32 [B, max_pages] and ``kv_lens`` int32 [B]; padded buffers
        with ``q_lens`` / ``kv_lens`` int32 [B] (rows past q_lens[b]: o = 0, lse =
        -inf). Each sequence is bottom-right aligned on its own unless an offset is
        given. Forward only so far (no autograd). CPU calls check every sequence
        argument. On CUDA the arrays are device memory: the runtime copies the lengths
        to the host (a synchronisation) only when the grid needs them, i.e. unless
        ``max_seqlen_q`` (ragged q) and ``max_seqlen_kv`` (ragged or paged kv) bound
        them, as in flash_attn_varlen (then nothing is read: CUDA-graph friendly);
        the page table is never read: a page id outside the cache masks that page's
        keys, and lengths are clamped to the buffers. ``validate=True`` (a debug mode)
        checks everything first and raises naming the array, batch index and value.
        """
        seq = {n: t for n, t in (("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_kv", cu_seqlens_kv),
                                 ("page_table", page_table), ("kv_lens", kv_lens),
                                 ("q_lens", q_lens)) if t is not None}
        if not isinstance(validate, bool):
            raise AttuneError(f"attune: validate={validate!r}; expected True or False")
        for name, bound in (("max_seqlen_q", max_seqlen_q), ("max_seqlen_kv", max_seqlen_kv)):
            if bound is not None and (isinstance(bound, bool) or not isinstance(bound, int)
                                      or bound < 1):
                raise AttuneError(f"attune: {name}={bound!r}; expected a positive int or None")
        if (validate or max_seqlen_q is not None or max_seqlen_kv is not None) and not seq:
            raise AttuneError(
                "attune: validate / max_seqlen_q / max_seqlen_kv are about per-sequence "
                "arguments (cu_seqlens_q, page_table, ...); this call passes none"
            )
        if num_splits is not None and (
            isinstance(num_splits, bool) or not isinstance(num_splits, int) or num_splits < 1
        ):
            raise AttuneError(
                f"attune: num_splits={num_splits!r}; expected a positive int, or None for "
                "the runtime's choice"
            )
        if seq or self.storage != {"q": "padded", "kv": "padded"}:
            return self._call_sequences(q, k, v, return_lse, seq, tensors, q_offset=q_offset,
                                        kv_offset=kv_offset, variant=variant,
                                        num_threads=num_threads, num_splits=num_splits,
                                        validate=validate,
                                        max_seqlen=(max_seqlen_q or 0, max_seqlen_kv or 0))
        if num_threads is not None and (
            isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1
        ):
            raise AttuneError(
                f"attune: num_threads={num_threads!r}; expected a positive int, or None for "
                "the default"
            )
        options = dict(
            q_offset=q_offset, kv_offset=kv_offset, variant=variant, tune=tune,
            num_splits=num_splits, num_threads=num_threads,
        )
        if _ops_module().HAVE_CUSTOM_OP and variant is None and tune is None and (
            num_splits is None and num_threads is None
        ):
            # The same checks first, so that errors do not depend on the torch version.
            self._checked_call(q, k, v, return_lse, q_offset, kv_offset, variant, tensors,
                               host=isinstance(q, torch.Tensor) and q.device.type == "cpu")
            return _ops_module().call(self, q, k, v, return_lse, q_offset, kv_offset, tensors)
        floats = [n for n in self.input_names if self._inputs[n]["dtype"] != "i32"]
        wants_grad = torch.is_grad_enabled() and any(
            isinstance(t, torch.Tensor) and t.requires_grad
            for t in [q, k, v] + [tensors.get(n) for n in floats]
        )
        if not wants_grad:
            o, lse, _ = self._forward(q, k, v, return_lse, tensors, **options)
            return (o, lse) if return_lse else o
        self._checked_call(q, k, v, return_lse, q_offset, kv_offset, variant, tensors,
                           host=q.device.type == "cpu")
        extras = [tensors[n] for n in self.input_names]
        o, lse = _Attention.apply(self, return_lse, options, q, k, v, *extras)
        return (o, lse) if return_lse else o

    def _call_sequences(self, q, k, v, return_lse, seq, tensors, *, q_offset, kv_offset,
                        variant, num_threads, num_splits, validate, max_seqlen):
        """A per-sequence call (ragged / paged storage, lengths): checked like any call,
        its sequence arguments by the runtime (the compiler's own checks), run on the
        host variant for CPU tensors, on a GPU variant for CUDA tensors."""
        for name, t in seq.items():
            _require_tensor(name, t)
            if t.dtype != torch.int32:
                raise AttuneError(f"attune: {name} has dtype {t.dtype}; sequence arguments "
                                  "are torch.int32")
        floats = [n for n in self.input_names if self._inputs[n]["dtype"] != "i32"]
        if torch.is_grad_enabled() and any(
            isinstance(t, torch.Tensor) and t.requires_grad
            for t in [q, k, v] + [tensors.get(n) for n in floats]
        ):
            raise AttuneError(
                "attune: autograd over ragged or paged storage or per-sequence lengths is not "
                "built yet (the backward takes padded batches); call under torch.no_grad() "
                "or detach the inputs"
            )
        host = isinstance(q, torch.Tensor) and q.device.type == "cpu"
        for name, t in seq.items():
            if isinstance(q, torch.Tensor) and t.device != q.device:
                raise AttuneError(
                    f"attune: {name} is on {t.device} but q is on {q.device}: the sequence "
                    "arguments live with the tensors they index"
                )
        call, o, lse, _keep = self._checked_call(q, k, v, return_lse, q_offset, kv_offset,
                                                 variant, tensors, host=host, seq=seq,
                                                 validate=validate, max_seqlen=max_seqlen)
        # No tuning: the tuner's shape buckets are padded batches'. The default (or the
        # named) variant runs; what the runtime reads of the sequence arrays first is
        # docs/bundle-and-abi.md's "Storage" rule.
        self._launch(call, q, host, num_threads, num_splits,
                     lambda c: _capi.check(self._lib.attn_launch(self._handle, ctypes.byref(c))))
        return (o, lse) if return_lse else o

    def _launch(self, call, q, host, num_threads, num_splits, run_cuda):
        """A checked call on the host variant, or on q's GPU through `run_cuda(call)`."""
        if host:
            call.device = _capi.ATTN_DEVICE_HOST
            call.num_threads = num_threads or 0
            _capi.check(self._lib.attn_launch(self._handle, ctypes.byref(call)))
            return
        call.num_splits = num_splits or 0
        # The runtime uses the driver context current on this thread; entering q's
        # device makes that PyTorch's primary context of q's device (the runtime would
        # otherwise retain the same primary context itself).
        with torch.cuda.device(q.device):
            call.stream = torch.cuda.current_stream(q.device).cuda_stream
            run_cuda(call)

    def _forward(self, q, k, v, return_lse, tensors, *, q_offset, kv_offset, variant, tune,
                 num_splits, num_threads, keep_lse=False):
        """(o, lse or None, the lse a backward reads or None) without autograd.
        keep_lse: a host forward also returns the lse it computes (softmax) when the
        caller did not ask for it."""
        host = isinstance(q, torch.Tensor) and q.device.type == "cpu"
        want_lse = return_lse or (keep_lse and host and self._host_lse)
        call, o, lse, _keep = self._checked_call(
            q, k, v, want_lse, q_offset, kv_offset, variant, tensors, host=host
        )
        self._launch(call, q, host, num_threads, num_splits,
                     lambda c: self._run(c, q, k, variant, tune))
        return o, (lse if return_lse else None), lse

    def backward(self, q, k, v, o, lse, do, *, dlse=None, q_offset=None, kv_offset=None,
                 variant=None, num_threads=None, grads_of=(), **tensors):
        """The backward kernel on its own: (dq, dk, dv, {input: grad}) given the
        forward's arguments, its o and lse (None for sigmoid and relu) and dO (and dlse).

        The kernel recomputes the probabilities from `lse` and uses D = rowsum(dO * o):
        passing the o and lse of attention over a longer key sequence (a ring's merged
        result) gives this key shard's share of the gradients, as ring attention's
        backward needs. `grads_of` names the float inputs to differentiate. CPU tensors
        (the host variant's backward) only, today."""
        for name, t in (("o", o), ("do", do)):
            _require_tensor(name, t)
        unknown = [n for n in grads_of if n not in self._inputs or self._inputs[n]["dtype"] == "i32"]
        if unknown:
            raise AttuneError(
                f"attune: grads_of names {', '.join(unknown)}, which {'is' if len(unknown) == 1 else 'are'} "
                f"not float inputs of this kernel (float inputs: "
                f"{', '.join(n for n in self.input_names if self._inputs[n]['dtype'] != 'i32') or 'none'})"
            )
        return self._backward(q, k, v, o, lse, do, dlse, tensors, list(grads_of),
                              q_offset=q_offset, kv_offset=kv_offset, variant=variant,
                              num_threads=num_threads)

    def _backward(self, q, k, v, o, lse, dout, dlse, tensors, needs, *, q_offset, kv_offset,
                  variant, num_threads, **_):
        """(dq, dk, dv, {input: grad}) from the bundle's backward kernel: the float
        inputs named in `needs` get gradients."""
        if q.device.type != "cpu":
            raise AttuneError(
                "attune: the backward of a CUDA call needs GPU backward kernels, which are "
                "not built yet; run the call on CPU tensors (the host variant has a backward)"
            )
        if not self._host_backward:
            raise AttuneError(
                "attune: this bundle's host variant has no backward kernel"
                + (f": {self._host_backward_error}" if self._host_backward_error else "")
            )
        call, _, _, keep = self._checked_call(
            q, k, v, False, q_offset, kv_offset, variant, tensors, host=True, outputs=(o, lse)
        )
        call.device = _capi.ATTN_DEVICE_HOST
        call.num_threads = num_threads or 0
        b = _capi.BackwardCall()
        b.fwd = call
        dout = dout.contiguous()
        b.dout = _describe("dO", dout)
        if dlse is not None:
            dlse = dlse.to(torch.float32).contiguous()
            b.dlse = _describe("dlse", dlse)
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        b.dq, b.dk, b.dv = _describe("dq", dq), _describe("dk", dk), _describe("dv", dv)
        grads = {n: torch.empty(tensors[n].shape, dtype=torch.float32) for n in needs}
        names = (ctypes.c_char_p * len(grads))(*(n.encode("utf-8") for n in grads))
        descs = (_capi.Tensor * len(grads))(*(_describe(f"grad {n}", g) for n, g in grads.items()))
        b.num_grads = len(grads)
        if grads:
            b.grad_names = ctypes.cast(names, ctypes.POINTER(ctypes.c_char_p))
            b.grads = ctypes.cast(descs, ctypes.POINTER(_capi.Tensor))
        _capi.check(self._lib.attn_backward(self._handle, ctypes.byref(b)))
        return dq, dk, dv, grads

    def selected_variant(self, q, k, v, *, q_offset=None, kv_offset=None, **tensors):
        """The variant a call with these arguments runs: the tuned choice for its shape
        bucket on this GPU if there is one, else the default (no tuning happens); for
        CPU tensors the default host variant."""
        host = isinstance(q, torch.Tensor) and q.device.type == "cpu"
        call, _, _, _keep = self._checked_call(
            q, k, v, False, q_offset, kv_offset, None, tensors, host=host
        )
        if host:
            return _capi.text_out(self._lib.attn_select_variant, self._handle, ctypes.byref(call))
        with torch.cuda.device(q.device):
            return _capi.text_out(self._lib.attn_select_variant, self._handle, ctypes.byref(call))

    def _checked_call(self, q, k, v, return_lse, q_offset, kv_offset, variant, tensors,
                      host=False, outputs=None, seq=None, validate=False,
                      max_seqlen=(0, 0)):
        """(attn_call, o, lse, what must stay alive while the call is used), after every
        check; nothing here touches the device. `host`: CPU tensors for the host variant.
        `outputs`: (o, lse) given (a backward's call reads them) instead of allocated.
        A bundle without a host variant checks CPU tensors as CUDA ones and refuses
        them last, for where they are."""
        no_host = host and not self.host_variants
        host = host and not no_host
        # (a) what each argument is, and the extra inputs by name.
        for name, t in (("q", q), ("k", k), ("v", v)):
            _require_tensor(name, t)
        expected = ", ".join(self.input_names) if self.input_names else "none"
        unknown = [n for n in tensors if n not in self._inputs]
        if unknown:
            raise AttuneError(
                f"attune: unknown tensor argument{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(unknown)}; this kernel's extra inputs are: {expected}"
            )
        missing = [n for n in self.input_names if n not in tensors]
        if missing:
            declared = ", ".join(self._declaration(n) for n in missing)
            raise AttuneError(
                f"attune: missing tensor argument{'s' if len(missing) > 1 else ''} {declared}; "
                f"this kernel's extra inputs are: {expected}"
            )
        for name in self.input_names:
            _require_tensor(name, tensors[name])

        # (b) dtypes: the runtime would refuse them too, but cannot say torch's names.
        # The host kernels compute in float32: CPU tensors may be float32 or the
        # bundle's dtype, all three alike.
        for name, t in (("q", q), ("k", k), ("v", v)):
            if host and t.dtype != q.dtype and q.dtype in (self.dtype, torch.float32):
                raise AttuneError(
                    f"attune: {name} has dtype {t.dtype} but q has {q.dtype}; on CPU q, k and v "
                    f"take one dtype: {self.dtype} or torch.float32"
                )
            if host and t.dtype in (self.dtype, torch.float32):
                continue
            if t.dtype != self.dtype:
                also = " or torch.float32 (on CPU, q, k and v alike)" if host else ""
                raise AttuneError(
                    f"attune: {name} has dtype {t.dtype}; this kernel takes {self.dtype}{also} "
                    f"(the bundle's dtype is {self.info['dtype']})"
                )
        for name in self.input_names:
            want = _TORCH_DTYPES[self._inputs[name]["dtype"]]
            if tensors[name].dtype != want:
                raise AttuneError(
                    f"attune: {name} has dtype {tensors[name].dtype}; this kernel takes {want} "
                    f"(declared {self._inputs[name]['dtype']})"
                )

        # (c) shapes, strides and alignment, by the runtime's own host-side checks.
        if return_lse and "lse" not in self.info["outputs"] and not (host and self._host_lse):
            raise AttuneError(
                f"attune: return_lse=True, but this bundle ({self.info['spec_name']}) does not "
                f"compute lse (its outputs are {self.info['outputs']}); add \"lse\" to the "
                "spec's outputs and recompile"
            )
        known = self.host_variants if host else self.variants
        if variant is not None and variant not in known:
            raise AttuneError(
                f"attune: unknown {'host ' if host else ''}variant {variant!r}; this bundle "
                f"has: {', '.join(known)}"
            )
        # Outputs on q's device: cheap even on the CPU, and it lets the runtime check
        # them with everything else. A q of the wrong rank is refused before o matters.
        o = lse = None
        seq = seq or {}
        if outputs is not None:
            o, lse = outputs
        elif q.dim() == 3 and self.storage["q"] == "ragged":
            o = q.new_empty((q.shape[0], self.heads_q, self.head_dim_v))
            if return_lse:
                lse = q.new_empty((q.shape[0], self.heads_q), dtype=torch.float32)
        elif q.dim() == 4:
            B, Sq = q.shape[0], q.shape[2]
            o = q.new_empty((B, self.heads_q, Sq, self.head_dim_v))
            if return_lse:
                lse = q.new_empty((B, self.heads_q, Sq), dtype=torch.float32)
        # The ABI takes extra inputs row-major contiguous; q/k/v keep their strides.
        extras = [tensors[n].contiguous() for n in self.input_names]
        call = _capi.Call()
        call.q, call.k, call.v = _describe("q", q), _describe("k", k), _describe("v", v)
        if o is not None:
            call.o = _describe("o", o)
        if lse is not None:
            call.lse = _describe("lse", lse)
        names = (ctypes.c_char_p * len(extras))(*(n.encode("utf-8") for n in self.input_names))
        inputs = (_capi.Tensor * len(extras))(
            *(_describe(n, t) for n, t in zip(self.input_names, extras))
        )
        call.num_inputs = len(extras)
        if extras:
            call.input_names = ctypes.cast(names, ctypes.POINTER(ctypes.c_char_p))
            call.inputs = ctypes.cast(inputs, ctypes.POINTER(_capi.Tensor))
        if q_offset is not None:
            call.has_q_offset, call.q_offset = 1, operator.index(q_offset)
        if kv_offset is not None:
            call.has_kv_offset, call.kv_offset = 1, operator.index(kv_offset)
        if variant is not None:
            call.variant = variant.encode("utf-8")
        if host:
            call.device = _capi.ATTN_DEVICE_HOST
        seq_kept = {n: t.contiguous() for n, t in seq.items()}
        for n, t in seq_kept.items():
            setattr(call, n, _describe(n, t))
        call.validate = int(validate)
        call.max_seqlen_q, call.max_seqlen_kv = max_seqlen
        if self._lib.attn_check(self._handle, ctypes.byref(call)) != 0:
            message = _capi.last_error()
            strided = [
                n
                for n, t in (("q", q), ("k", k), ("v", v))
                if t.dim() and t.shape[-1] > 1 and t.stride(-1) != 1
            ]
            if strided:
                message += (
                    f"; call .contiguous() on {', '.join(strided)} (the kernels read the last "
                    "dimension with stride 1; other strides are fine)"
                )
            raise AttuneError(message)

        # (d) where the tensors live: the last check, so that (a)-(c) run on any machine.
        for name, t in [("q", q), ("k", k), ("v", v)] + [(n, tensors[n]) for n in self.input_names]:
            if host:
                if t.device.type != "cpu":
                    raise AttuneError(
                        f"attune: {name} is on {t.device} but q is on cpu; a CPU call (the "
                        "bundle's host variant) takes CPU tensors only"
                    )
                continue
            if t.device.type != "cuda":
                hint = ""
                if no_host and t.device.type == "cpu" and q.device.type == "cpu":
                    hint = (
                        "; for CPU tensors the bundle needs a host variant, which this one "
                        f"({self.info['dir']}) has not: compile it with `attnc compile SPEC "
                        "--arch host` (with GPU archs: --arch sm_80,sm_90a,host)"
                    )
                raise AttuneError(f"attune: {name} is on {t.device}; {_DEVICE_RULE}{hint}")
            if t.device != q.device:
                raise AttuneError(
                    f"attune: {name} is on {t.device} but q is on {q.device}; {_DEVICE_RULE}"
                )
        return call, o, lse, (names, inputs, extras, seq_kept)

    def _run(self, call, q, k, variant, tune):
        lib, handle, ref = self._lib, self._handle, ctypes.byref(call)
        may_tune = (
            variant is None
            and len(self.variants) > 1
            and q.shape[0] * q.shape[2] > 0
            and (tune is True or (tune is None and tuning_enabled()))
        )
        if may_tune:
            # The runtime keeps the database's answer per tuning key in memory, so
            # asking on every call costs a lookup, not a file read.
            known = 0 if tune is True else lib.attn_tuned_variant(handle, ref, None, 0)
            if known < 0:
                raise AttuneError(_capi.last_error())
            if known == 0:
                # Also runs the winner on these arguments: o (and lse) are filled.
                _capi.check(lib.attn_tune(handle, ref, 0, int(_env_flag("ATTUNE_VERBOSE"))))
                return
        _capi.check(lib.attn_launch(handle, ref))


class _Attention(torch.autograd.Function):
    """A kernel call in autograd: the forward keeps what the backward kernel reads (q,
    k, v, the extra inputs, o and lse); the backward runs the bundle's backward kernel
    for the inputs that need a gradient."""

    @staticmethod
    def forward(ctx, kernel, return_lse, options, q, k, v, *extras):
        tensors = dict(zip(kernel.input_names, extras))
        o, lse, saved_lse = kernel._forward(q, k, v, return_lse, tensors, keep_lse=True, **options)
        ctx.kernel, ctx.options, ctx.return_lse = kernel, options, return_lse
        ctx.has_lse = saved_lse is not None
        ctx.save_for_backward(q, k, v, o, *( [saved_lse] if ctx.has_lse else []), *extras)
        if not return_lse:
            # autograd needs a tensor output in each slot; this one gets no gradient.
            lse = torch.empty(0, dtype=torch.float32, device=q.device)
        ctx.mark_non_differentiable(*([] if return_lse else [lse]))
        return o, lse

    @staticmethod
    def backward(ctx, do, dlse):
        kernel = ctx.kernel
        saved = list(ctx.saved_tensors)
        q, k, v, o = saved[:4]
        lse = saved[4] if ctx.has_lse else None
        extras = saved[5 if ctx.has_lse else 4:]
        tensors = dict(zip(kernel.input_names, extras))
        offset = 6  # ctx.needs_input_grad: kernel, return_lse, options, q, k, v, extras...
        needs = [
            n for i, n in enumerate(kernel.input_names)
            if ctx.needs_input_grad[offset + i] and kernel._inputs[n]["dtype"] != "i32"
        ]
        if do is None:
            do = torch.zeros_like(o)
        if not ctx.return_lse:
            dlse = None
        dq, dk, dv, grads = kernel._backward(
            q, k, v, o, lse, do, dlse, tensors, needs, **ctx.options
        )
        extra_grads = [
            grads[n].to(tensors[n].dtype) if n in grads else None for n in kernel.input_names
        ]
        return (None, None, None, dq, dk, dv, *extra_grads)
