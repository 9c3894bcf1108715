"""Attune attention kernels from Python, over the runtime's C API (ctypes).

    import attune
    kernel = attune.compile("specs/examples/causal.json")    # or attune.load(bundle_dir)
    o, lse = kernel(q, k, v, return_lse=True)                # CUDA tensors

Bundles come from ``attnc compile`` (docs/bundle-and-abi.md); this package only loads
and launches them, so it works on machines that have the runtime library and no
compiler. The library is found through $ATTUNE_RUNTIME_LIB, next to this package, in
the repository's build/ or build-rt/, or on the system library path; it is loaded on
first use.
"""

import json

from . import _capi
from ._bundles import bundle_cache_dir, cache_root, compile, load, spec_hash
from ._capi import AttuneError, library_path
from ._kernel import Kernel

__all__ = [
    "AttuneError",
    "Kernel",
    "bundle_cache_dir",
    "cache_root",
    "compile",
    "device_info",
    "library_path",
    "load",
    "spec_hash",
    "version",
]
from . import distributed  # noqa: E402  (ring attention: attune.distributed.ring_attention)
from .merge import merge  # noqa: E402  (the LSE merge of partial results)
__all__ += ["distributed", "merge"]


def version():
    """The runtime's version: bundles are cached per compiler version, and a runtime
    reads bundles of the same version."""
    return _capi.lib().attn_version().decode("utf-8")


def device_info(ordinal=0):
    """What the CUDA driver says about device `ordinal` (name, compute capability, SMs,
    memory, driver version), read without PyTorch; AttuneError without a driver."""
    return json.loads(_capi.text_out(_capi.lib().attn_device_info, ordinal))
