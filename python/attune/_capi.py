"""ctypes mirror of runtime/include/attune/runtime.h, and where the library is found.

The runtime is a plain C library so that this package needs no build step: the GPU
machines build only the runtime (``-DATTUNE_RUNTIME_ONLY=ON``) and use bundles compiled
elsewhere. The library is loaded on first use, not at import, so that ``import attune``
works (and can report what is missing) on a machine where it has not been built yet.
"""

import ctypes
import ctypes.util
import os
import threading
from pathlib import Path

# python/attune/_capi.py -> the repository root, for in-tree builds.
_REPO = Path(__file__).resolve().parents[2]
_LIB_NAME = "libattune_runtime.so"


class AttuneError(RuntimeError):
    """Any failure of the runtime (with its attn_last_error() message) or of the
    package's own argument checks; one type so that callers need one except clause."""


# attn_dtype
ATTN_BF16, ATTN_FP16, ATTN_F32, ATTN_I32 = 0, 1, 2, 3
# attn_device
ATTN_DEVICE_CUDA, ATTN_DEVICE_HOST = 0, 1

MAX_DIMS = 8


class Tensor(ctypes.Structure):
    """attn_tensor: shapes and strides in elements."""

    _fields_ = [
        ("data", ctypes.c_void_p),
        ("dtype", ctypes.c_int),  # attn_dtype: a C enum, int-sized
        ("ndim", ctypes.c_int32),
        ("shape", ctypes.c_int64 * MAX_DIMS),
        ("strides", ctypes.c_int64 * MAX_DIMS),
    ]


class Call(ctypes.Structure):
    """attn_call."""

    _fields_ = [
        ("q", Tensor),
        ("k", Tensor),
        ("v", Tensor),
        ("o", Tensor),
        ("lse", Tensor),
        ("num_inputs", ctypes.c_int32),
        ("input_names", ctypes.POINTER(ctypes.c_char_p)),
        ("inputs", ctypes.POINTER(Tensor)),
        ("has_q_offset", ctypes.c_int32),
        ("q_offset", ctypes.c_int64),
        ("has_kv_offset", ctypes.c_int32),
        ("kv_offset", ctypes.c_int64),
        ("stream", ctypes.c_void_p),
        ("variant", ctypes.c_char_p),
        ("num_splits", ctypes.c_int32),
        ("device", ctypes.c_int32),
        ("num_threads", ctypes.c_int32),
        ("cu_seqlens_q", Tensor),
        ("cu_seqlens_kv", Tensor),
        ("page_table", Tensor),
        ("kv_lens", Tensor),
        ("q_lens", Tensor),
        ("validate", ctypes.c_int32),
        ("max_seqlen_q", ctypes.c_int64),
        ("max_seqlen_kv", ctypes.c_int64),
    ]


class BackwardCall(ctypes.Structure):
    """attn_backward_call."""

    _fields_ = [
        ("fwd", Call),
        ("dout", Tensor),
        ("dlse", Tensor),
        ("dq", Tensor),
        ("dk", Tensor),
        ("dv", Tensor),
        ("num_grads", ctypes.c_int32),
        ("grad_names", ctypes.POINTER(ctypes.c_char_p)),
        ("grads", ctypes.POINTER(Tensor)),
    ]


_BUNDLE = ctypes.c_void_p  # attn_bundle *, opaque
_CALL = ctypes.POINTER(Call)

_PROTOTYPES = {
    "attn_bundle_load": (ctypes.c_int, [ctypes.c_char_p, ctypes.POINTER(_BUNDLE)]),
    "attn_bundle_free": (None, [_BUNDLE]),
    "attn_launch": (ctypes.c_int, [_BUNDLE, _CALL]),
    "attn_backward": (ctypes.c_int, [_BUNDLE, ctypes.POINTER(BackwardCall)]),
    "attn_bundle_num_host_variants": (ctypes.c_int, [_BUNDLE]),
    "attn_bundle_host_variant_name": (ctypes.c_char_p, [_BUNDLE, ctypes.c_int]),
    "attn_tune": (ctypes.c_int, [_BUNDLE, _CALL, ctypes.c_int, ctypes.c_int]),
    "attn_last_error": (ctypes.c_char_p, []),
    "attn_version": (ctypes.c_char_p, []),
    "attn_check": (ctypes.c_int, [_BUNDLE, _CALL]),
    "attn_select_variant": (ctypes.c_int, [_BUNDLE, _CALL, ctypes.c_char_p, ctypes.c_size_t]),
    "attn_tuned_variant": (ctypes.c_int, [_BUNDLE, _CALL, ctypes.c_char_p, ctypes.c_size_t]),
    "attn_bundle_num_variants": (ctypes.c_int, [_BUNDLE]),
    "attn_bundle_variant_name": (ctypes.c_char_p, [_BUNDLE, ctypes.c_int]),
    "attn_bundle_info_json": (ctypes.c_char_p, [_BUNDLE]),
    "attn_device_info": (ctypes.c_int, [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]),
    "attn_spec_hash": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_char_p]),
    "attn_canonical_json": (ctypes.c_char_p, [ctypes.c_char_p]),
    "attn_bundle_cache_key": (
        ctypes.c_int,
        [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p],
    ),
    "attn_cache_root": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_size_t]),
}

_lock = threading.Lock()
_lib = None
_lib_path = None


def _candidates():
    """Where the library may be, in the order searched: the package directory first
    (an installed copy), then the two in-tree build directories of the README."""
    return [
        Path(__file__).resolve().parent / _LIB_NAME,
        _REPO / "build" / "runtime" / _LIB_NAME,
        _REPO / "build-rt" / "runtime" / _LIB_NAME,
    ]


def _open(path):
    try:
        return ctypes.CDLL(str(path))
    except OSError as e:
        raise AttuneError(f"attune: cannot load the runtime library {path}: {e}") from None


def _find_and_open():
    env = os.environ.get("ATTUNE_RUNTIME_LIB")
    if env:
        # An explicit choice is never silently replaced by another copy.
        return _open(env), env
    for path in _candidates():
        if path.is_file():
            return _open(path), str(path)
    found = ctypes.util.find_library("attune_runtime")
    if found:
        return _open(found), found
    looked = "\n  ".join(
        ["$ATTUNE_RUNTIME_LIB (not set)"]
        + [str(p) for p in _candidates()]
        + ['ctypes.util.find_library("attune_runtime") (the system library path)']
    )
    raise AttuneError(
        "attune: the runtime library libattune_runtime.so was not found; looked in:\n  "
        + looked
        + "\nBuild it (cmake -S . -B build-rt -G Ninja -DATTUNE_RUNTIME_ONLY=ON && "
        "ninja -C build-rt) or set ATTUNE_RUNTIME_LIB to its path."
    )


def lib():
    """The loaded runtime, with every prototype declared (ctypes would otherwise
    truncate pointers to int)."""
    global _lib, _lib_path
    with _lock:
        if _lib is None:
            handle, path = _find_and_open()
            for name, (restype, argtypes) in _PROTOTYPES.items():
                try:
                    fn = getattr(handle, name)
                except AttributeError:
                    raise AttuneError(
                        f"attune: {path} has no {name}: it is not a matching Attune runtime"
                    ) from None
                fn.restype = restype
                fn.argtypes = argtypes
            _lib, _lib_path = handle, path
        return _lib


def library_path():
    """The path of the runtime library in use (loading it if need be)."""
    lib()
    return _lib_path


def last_error():
    return lib().attn_last_error().decode("utf-8", "replace")


def check(rc):
    """Raises the runtime's message for a non-zero return code."""
    if rc != 0:
        raise AttuneError(last_error())


def text_out(fn, *args, size=1 << 16):
    """Calls a function that writes a NUL-terminated string into (buf, n)."""
    buf = ctypes.create_string_buffer(size)
    check(fn(*args, buf, size))
    return buf.value.decode("utf-8")


def hex_out(fn, *args):
    """Calls a function that writes 64 hex digits and a NUL into out[65]."""
    buf = ctypes.create_string_buffer(65)
    check(fn(*args, buf))
    return buf.value.decode("ascii")
