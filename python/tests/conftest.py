"""Shared fixtures. The tests use the real runtime library (no mocks): the one named by
$ATTUNE_RUNTIME_LIB (set by CTest) or the package's own search."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PYTHON_DIR = Path(__file__).resolve().parents[1]
REPO = PYTHON_DIR.parent
sys.path.insert(0, str(PYTHON_DIR))

import attune  # noqa: E402

COPY_BUNDLE = REPO / "runtime" / "test" / "data" / "copy_bundle"
EXAMPLES = REPO / "specs" / "examples"


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Never the user's ~/.cache: CTest points ATTUNE_CACHE_DIR into the build tree, and
    a direct pytest run gets a temporary one."""
    if os.environ.get("ATTUNE_CACHE_DIR"):
        yield
        return
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATTUNE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="session")
def copy_kernel():
    return attune.load(COPY_BUNDLE)


def _executable(env, *candidates):
    """$env when it is set (None if it names no executable: an explicit choice is not
    replaced), else the first candidate that exists."""
    if os.environ.get(env):
        path = os.environ[env]
        return path if os.path.isfile(path) and os.access(path, os.X_OK) else None
    return next((str(c) for c in candidates if c and Path(c).is_file()), None)


def attnc_path():
    return _executable("ATTUNE_ATTNC", shutil.which("attnc"), REPO / "build/tools/attnc/attnc")


@pytest.fixture
def attnc(monkeypatch):
    """attnc, pinned in $ATTUNE_ATTNC for the test; skips in runtime-only builds."""
    path = attnc_path()
    if not path:
        pytest.skip("no attnc (a runtime-only build): set ATTUNE_ATTNC to test compiling")
    monkeypatch.setenv("ATTUNE_ATTNC", path)
    return path


@pytest.fixture
def hash_cli():
    """The command that prints a spec's hash: `attnc hash`, else `attune-rt hash`."""
    attnc = attnc_path()
    if attnc:
        return [attnc, "hash"]
    rt = _executable(
        "ATTUNE_RT_CLI", REPO / "build/runtime/attune-rt", REPO / "build-rt/runtime/attune-rt"
    )
    if not rt:
        pytest.skip("neither attnc nor attune-rt found (set ATTUNE_ATTNC or ATTUNE_RT_CLI)")
    return [rt, "hash"]


def run_python(code, env=None, cwd=None):
    """Runs `code` in a fresh interpreter, with this package importable unless `env`
    sets PYTHONPATH: the runtime library and the CUDA driver are loaded once per
    process, so their environment variables need a new one. None in `env` unsets."""
    full = dict(os.environ, PYTHONPATH=str(PYTHON_DIR), PYTHONDONTWRITEBYTECODE="1")
    for key, value in (env or {}).items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = value
    return subprocess.run(
        [sys.executable, "-c", code], env=full, cwd=cwd, capture_output=True, text=True
    )
