"""attune.compile: the bundle cache shared with `attnc compile --cache`."""

import hashlib
import json

import pytest
import torch

import attune
from conftest import EXAMPLES

CAUSAL = EXAMPLES / "causal.json"
# One architecture and one tile configuration: a single variant compiles in about a second.
FAST = {"arch": "sm_90a", "configs": "64x64"}


@pytest.fixture
def cache(monkeypatch, tmp_path):
    root = tmp_path / "cache"
    monkeypatch.setenv("ATTUNE_CACHE_DIR", str(root))
    return root


def documented_key(spec_hash, archs, configs):
    """docs/bundle-and-abi.md section 4, written out independently of the runtime."""
    text = "\n".join(
        [spec_hash, attune.version(), ",".join(sorted(a for a in archs.split(",") if a)),
         configs or "default"]
    )
    return hashlib.sha256(text.encode()).hexdigest()


def test_the_cache_key_is_the_documented_one(cache):
    cases = [("sm_90a,sm_80", None), ("sm_80,,sm_90a", "64x64,128x64"), ("sm_80", "64x32")]
    for arch, configs in cases:
        where = attune.bundle_cache_dir(CAUSAL, arch=arch, configs=configs)
        assert where.parent == cache / "bundles"
        assert where.name == documented_key(attune.spec_hash(CAUSAL), arch, configs)
    # Lists are attnc's comma-separated text.
    assert attune.bundle_cache_dir(CAUSAL, arch=["sm_80", "sm_90a"], configs=["64x64"]) == \
        attune.bundle_cache_dir(CAUSAL, arch="sm_80,sm_90a", configs="64x64")


def test_compile_fills_the_cache_and_then_reuses_it(attnc, cache, monkeypatch):
    kernel = attune.compile(CAUSAL, **FAST)
    key = documented_key(attune.spec_hash(CAUSAL), FAST["arch"], FAST["configs"])
    assert [p.name for p in (cache / "bundles").iterdir()] == [key]
    assert kernel.info["dir"] == str(cache / "bundles" / key)
    assert (kernel.info["spec_name"], kernel.heads_q, kernel.heads_kv, kernel.head_dim) == \
        ("causal", 8, 2, 64)
    assert kernel.input_names == ()
    assert [v["arch"] for v in kernel.info["variants"]] == ["sm_90a"]

    # The second call compiles nothing: it works without a compiler.
    monkeypatch.setenv("ATTUNE_ATTNC", "/nonexistent/attnc")
    again = attune.compile(CAUSAL, **FAST)
    assert again.info == kernel.info
    # A dict spec with the same content is the same bundle.
    assert attune.compile(json.loads(CAUSAL.read_text()), **FAST).info["dir"] == kernel.info["dir"]


def test_compile_of_a_dict_spec(attnc, cache):
    spec = json.loads(CAUSAL.read_text())
    spec.update(name="causal-o-only", outputs=["o"])
    kernel = attune.compile(spec, **FAST)
    assert kernel.info["dir"] == str(attune.bundle_cache_dir(spec, **FAST))
    assert kernel.info["outputs"] == ["o"]
    q = torch.randn(1, 8, 3, 64, dtype=torch.bfloat16)
    k = torch.randn(1, 2, 4, 64, dtype=torch.bfloat16)
    with pytest.raises(attune.AttuneError, match="does not compute lse"):
        kernel(q, k, k, return_lse=True)
    with pytest.raises(attune.AttuneError, match="attune: q is on cpu"):
        kernel(q, k, k)


def test_compile_without_attnc_and_an_empty_cache(cache, monkeypatch):
    monkeypatch.setenv("ATTUNE_ATTNC", "/nonexistent/attnc")
    where = attune.bundle_cache_dir(CAUSAL, **FAST)
    with pytest.raises(attune.AttuneError) as e:
        attune.compile(CAUSAL, **FAST)
    message = str(e.value)
    assert f"attune: the bundle of {CAUSAL} is not in the cache ({where} has no manifest.json)" \
        in message
    assert "$ATTUNE_ATTNC=/nonexistent/attnc is not an executable file" in message
    assert f"`attnc compile {CAUSAL} --cache --arch sm_90a --configs 64x64`" in message
    assert "pass a bundle directory" in message
    assert not where.exists()


def test_attnc_errors_are_reported(attnc, cache):
    broken = {"name": "broken", "heads_q": 3, "heads_kv": 2, "head_dim": 64, "dtype": "bf16"}
    with pytest.raises(attune.AttuneError) as e:
        attune.compile(broken, **FAST)
    assert "failed (exit code" in str(e.value)
    assert "heads_q (3) must be a multiple of heads_kv (2)" in str(e.value)  # attnc's stderr
    assert not (cache / "bundles").exists() or not any((cache / "bundles").iterdir())


def test_compile_without_the_cache(attnc, cache):
    kernel = attune.compile(CAUSAL, cache=False, **FAST)
    assert not str(kernel.info["dir"]).startswith(str(cache))
    assert not (cache / "bundles").exists()
    assert kernel.variants and kernel.info["spec_name"] == "causal"
