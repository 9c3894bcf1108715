"""Specs to bundles: hashing, the bundle cache, and running attnc when it exists.

The cache key is computed by the runtime (attn_bundle_cache_key), the same function
attnc uses, so a bundle compiled on a machine with LLVM (``attnc compile SPEC --cache``)
is found by this package on a machine that has only the runtime.
"""

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import _capi
from ._capi import AttuneError
from ._kernel import Kernel

# attnc's default too: GPU variants for Ampere and Hopper and a host variant for this
# machine's CPU, so that one bundle serves CUDA and CPU tensors.
DEFAULT_ARCH = "sm_80,sm_90a,host"


def _dict_text(spec):
    """A dict spec as JSON text for the runtime, which parses, checks and hashes it (the
    one reader and hash attnc uses too). Python's float repr reads back to the same
    double, so the hash is the file's. What JSON cannot hold is refused here, with the
    reason, rather than written as something else."""
    try:
        return json.dumps(spec, allow_nan=False).encode("utf-8")
    except RecursionError:
        raise AttuneError(
            "attune: the spec dict nests too deeply for JSON (a spec nests at most 512 "
            "arrays and objects)"
        ) from None
    except (TypeError, ValueError) as e:
        raise AttuneError(f"attune: the spec dict is not JSON: {e}") from None


def _spec_text(spec_or_path):
    """(JSON bytes, the file's path or None for a dict)."""
    if isinstance(spec_or_path, dict):
        return _dict_text(spec_or_path), None
    path = os.fspath(spec_or_path)
    try:
        return Path(path).read_bytes(), path
    except OSError as e:
        raise AttuneError(f"attune: cannot read the spec {path}: {e.strerror}") from None


def _list_text(items):
    """attnc's --arch/--configs text: a string as given, or a sequence joined with ','."""
    return items if isinstance(items, str) else ",".join(items)


def _refuse_nul(text, path):
    """The C API takes NUL-terminated text: a NUL byte would end the document early and
    hide whatever follows it (attnc and attune-rt, which read the whole file, refuse
    it). Refused here, placed as the runtime places its errors."""
    at = text.find(b"\0")
    if at < 0:
        return
    before = text[:at]
    line = before.count(b"\n") + 1
    last = before[before.rfind(b"\n") + 1:]
    column = sum(1 for byte in last if byte & 0xC0 != 0x80) + 1
    what = path if path is not None else "the spec"
    raise AttuneError(
        f"attune: {what} is not a JSON spec: line {line}, column {column}: a NUL byte "
        "(JSON text holds none; nothing may follow the document)"
    )


def _hash(text, path):
    _refuse_nul(text, path)
    try:
        return _capi.hex_out(_capi.lib().attn_spec_hash, text)
    except AttuneError as e:
        if path is None:
            raise
        # The runtime's parse error has a line and column but not the file.
        raise AttuneError(f"attune: {path} is not a JSON spec: {e}") from None


def spec_hash(spec_or_path):
    """The spec hash of docs/bundle-and-abi.md section 5 (what ``attnc hash`` prints).

    ``spec_or_path`` is a spec dict or the path of a JSON spec file."""
    return _hash(*_spec_text(spec_or_path))


def cache_root():
    """$ATTUNE_CACHE_DIR, else $XDG_CACHE_HOME/attune, else ~/.cache/attune: where
    bundles and the tuning database live."""
    return _capi.text_out(_capi.lib().attn_cache_root)


def _cache_dir(text, path, arch, configs):
    lib = _capi.lib()
    key = _capi.hex_out(
        lib.attn_bundle_cache_key,
        _hash(text, path).encode("ascii"),
        lib.attn_version(),
        arch.encode("utf-8"),
        None if configs is None else configs.encode("utf-8"),
    )
    return Path(cache_root()) / "bundles" / key


def bundle_cache_dir(spec_or_path, *, arch=DEFAULT_ARCH, configs=None):
    """Where ``attnc compile SPEC --cache --arch ARCH [--configs CONFIGS]`` puts (or
    put) the bundle of this spec: the directory to copy between machines."""
    text, path = _spec_text(spec_or_path)
    configs = None if configs is None else _list_text(configs)
    return _cache_dir(text, path, _list_text(arch), configs)


def _attnc_path():
    """(attnc's path or None, where it was looked for)."""
    env = os.environ.get("ATTUNE_ATTNC")
    if env:
        # An explicit choice is not replaced by another compiler.
        if os.path.isfile(env) and os.access(env, os.X_OK):
            return env, f"$ATTUNE_ATTNC={env}"
        return None, f"$ATTUNE_ATTNC={env} is not an executable file"
    on_path = shutil.which("attnc")
    if on_path:
        return on_path, on_path
    in_tree = _capi._REPO / "build" / "tools" / "attnc" / "attnc"
    if in_tree.is_file():
        return str(in_tree), str(in_tree)
    return None, f"$ATTUNE_ATTNC is not set, no attnc on PATH, no {in_tree}"


@contextlib.contextmanager
def _spec_file(text, path):
    """A file attnc can read: the caller's own, or a temporary copy of a dict spec
    (with exactly the bytes that were hashed, so attnc's key is ours)."""
    if path is not None:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="attune-spec-") as tmp:
        spec = Path(tmp) / "spec.json"
        spec.write_bytes(text)
        yield str(spec)


def _run_attnc(attnc, spec, target_args, arch, configs):
    cmd = [attnc, "compile", spec, *target_args, "--arch", arch]
    if configs is not None:
        cmd += ["--configs", configs]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        raise AttuneError(f"attune: cannot run {attnc}: {e}") from None
    if done.returncode != 0:
        raise AttuneError(
            f"attune: {' '.join(cmd)} failed (exit code {done.returncode}):\n"
            + (done.stderr.strip() or done.stdout.strip())
        )
    return done


def load(bundle_dir):
    """The Kernel of a bundle directory (one with a manifest.json)."""
    return Kernel(bundle_dir)


def compile(spec_or_path, *, arch=DEFAULT_ARCH, configs=None, cache=True):
    """A Kernel for a spec: from the bundle cache when it is there, else compiled by
    attnc (``attnc compile SPEC --cache``); a bundle directory is loaded as it is.

    ``spec_or_path``: a spec dict, a JSON spec file, or a bundle directory. ``arch`` and
    ``configs`` are attnc's --arch and --configs (strings or lists); they are part of
    the cache key, so pass the same ones as the ``attnc compile`` that filled the cache.
    ``cache=False`` skips the cache and compiles afresh into a temporary directory that
    lives as long as the Kernel: a cache entry is keyed by the compiler's version, not
    its build, so a changed compiler would otherwise reuse an old bundle.

    Keep the Kernel rather than compiling per call: each Kernel loads its own CUDA
    modules (and JIT-compiles PTX where no cubin fits) on first use.
    """
    if not isinstance(spec_or_path, dict) and os.path.isdir(os.fspath(spec_or_path)):
        return load(spec_or_path)
    arch = _list_text(arch)
    configs = None if configs is None else _list_text(configs)
    text, path = _spec_text(spec_or_path)
    target = _cache_dir(text, path, arch, configs) if cache else None
    if target is not None and (target / "manifest.json").is_file():
        return Kernel(target)

    attnc, looked = _attnc_path()
    if attnc is None:
        if target is None:
            raise AttuneError(
                f"attune: cache=False needs the attnc compiler, which was not found ({looked})"
            )
        what = path or f"the spec {json.loads(text).get('name', '(unnamed)')!r}"
        flags = f"--arch {arch}" + ("" if configs is None else f" --configs {configs}")
        raise AttuneError(
            f"attune: the bundle of {what} is not in the cache ({target} has no manifest.json) "
            f"and there is no attnc compiler here ({looked}). Either compile it where attnc "
            f"{_capi.lib().attn_version().decode()} exists, with `attnc compile "
            f"{path or 'SPEC.json'} --cache {flags}`, and copy that cache's bundles/{target.name} "
            f"directory to {target}; or pass a bundle directory (`attnc compile SPEC -o DIR`) "
            "to attune.load() or attune.compile()."
        )
    with _spec_file(text, path) as spec:
        if target is None:
            tmp = tempfile.TemporaryDirectory(prefix="attune-bundle-")
            _run_attnc(attnc, spec, ["-o", tmp.name], arch, configs)
            return Kernel(tmp.name, _keep=tmp)
        done = _run_attnc(attnc, spec, ["--cache"], arch, configs)
    if not (target / "manifest.json").is_file():
        raise AttuneError(
            f"attune: {attnc} compiled the spec but {target} has no manifest.json: attnc and "
            f"the runtime disagree on the cache key or root (attnc said: {done.stdout.strip()})"
        )
    return Kernel(target)
