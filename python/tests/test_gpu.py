"""End to end on a CUDA GPU: launches, tuning, and numerics against a float64 reference."""

import json
import math

import pytest
import torch

import attune
from conftest import COPY_BUNDLE, EXAMPLES, attnc_path

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")

CAUSAL = EXAMPLES / "causal.json"


@pytest.fixture
def tuning_db(monkeypatch, tmp_path):
    """A fresh cache root, hence an empty tuning database: the first call tunes."""
    monkeypatch.setenv("ATTUNE_CACHE_DIR", str(tmp_path))
    return tmp_path / "tuning.json"


def copy_args(B, Sq, Skv, q=None):
    dev = "cuda"
    return {
        "q": torch.randn(B, 4, Sq, 64, device=dev).bfloat16() if q is None else q,
        "k": torch.randn(B, 2, Skv, 64, device=dev).bfloat16(),
        "v": torch.randn(B, 2, Skv, 64, device=dev).bfloat16(),
        "doc": torch.randint(0, 100, (B, Sq), device=dev, dtype=torch.int32),
    }


def copy_lse(a, q_offset):
    """The copy kernel's lse: s + q_offset + doc[b, s] for every head."""
    B, Sq = a["doc"].shape
    s = torch.arange(Sq, device="cuda")[None, :] + q_offset + a["doc"]
    return s.float()[:, None, :].expand(B, 4, Sq)


def test_device_info_agrees_with_torch():
    ordinal = torch.cuda.current_device()
    info = attune.device_info(ordinal)
    props = torch.cuda.get_device_properties(ordinal)
    assert info["ordinal"] == ordinal
    assert info["compute_capability"] == f"{props.major}.{props.minor}"
    assert (info["name"], info["sm_count"]) == (props.name, props.multi_processor_count)
    with pytest.raises(attune.AttuneError, match="no CUDA device"):
        attune.device_info(torch.cuda.device_count())


def test_copy_bundle_launches_tunes_and_forces_variants(tuning_db):
    copy_kernel = attune.load(COPY_BUNDLE)  # its own: nothing tuned in memory yet
    a = copy_args(2, 37, 40)
    o, lse = copy_kernel(**a, return_lse=True)  # first call of the bucket: tunes
    torch.cuda.synchronize()
    assert torch.equal(o, a["q"])
    assert torch.equal(lse, copy_lse(a, 40 - 37))
    entries = json.loads(tuning_db.read_text())["entries"]
    assert len(entries) == 1
    (key, entry), = entries.items()
    assert key.endswith("|b2-q64-kv64") and entry["variant"] in copy_kernel.variants
    assert copy_kernel.selected_variant(**a) == entry["variant"]
    stamp = tuning_db.stat().st_mtime_ns

    # Same bucket, other lengths: no tuning, the stored choice.
    b = copy_args(2, 33, 64)
    assert torch.equal(copy_kernel(**b), b["q"])
    # Another Kernel (or process) finds the choice in the database.
    assert torch.equal(attune.load(COPY_BUNDLE)(**b), b["q"])
    assert tuning_db.stat().st_mtime_ns == stamp

    for variant in ("copy_sm80_a", "copy_sm80_b"):
        o, lse = copy_kernel(**a, return_lse=True, variant=variant, q_offset=5)
        assert torch.equal(o, a["q"]) and torch.equal(lse, copy_lse(a, 5))
    with pytest.raises(attune.AttuneError, match="copy_huge_smem.*shared memory"):
        copy_kernel(**a, variant="copy_huge_smem")

    assert torch.equal(copy_kernel(**a, tune=False), a["q"])
    copy_kernel(**a, tune=True)
    assert tuning_db.stat().st_mtime_ns != stamp


def test_attune_tune_0_runs_the_default_and_stores_nothing(tuning_db, monkeypatch):
    """ATTUNE_TUNE=0: no first-call tuning, and a stored choice is not used either."""
    copy_kernel = attune.load(COPY_BUNDLE)
    a = copy_args(2, 37, 40)
    monkeypatch.setenv("ATTUNE_TUNE", "0")
    assert torch.equal(copy_kernel(**a), a["q"])
    torch.cuda.synchronize()
    assert not tuning_db.exists()
    monkeypatch.delenv("ATTUNE_TUNE")
    copy_kernel(**a)  # tunes and stores
    torch.cuda.synchronize()
    assert tuning_db.exists()
    monkeypatch.setenv("ATTUNE_TUNE", "0")
    default = "copy_sm90a" if torch.cuda.get_device_capability() == (9, 0) else "copy_sm80_a"
    assert attune.load(COPY_BUNDLE).selected_variant(**a) == default


def test_copy_bundle_strided_q_and_a_side_stream(copy_kernel, tuning_db):
    q = torch.randn(3, 17, 4, 64, device="cuda").bfloat16().transpose(1, 2)
    a = copy_args(3, 17, 17, q=q)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        o = copy_kernel(**a, tune=False)
    side.synchronize()
    assert o.is_contiguous() and torch.equal(o, q)


def reference(q, k, v, q_offset=None):
    """Causal attention in float64 (PATTERNS.md): P(i) = i + q_offset, K(j) = j, key j
    allowed when K(j) <= P(i); a row with no key gives o = 0, lse = -inf."""
    B, Hq, Sq, D = q.shape
    Skv = k.shape[2]
    group = Hq // k.shape[1]
    qd = q.double()
    kd = k.double().repeat_interleave(group, dim=1)
    vd = v.double().repeat_interleave(group, dim=1)
    s = qd @ kd.transpose(-1, -2) / math.sqrt(D)
    offset = Skv - Sq if q_offset is None else q_offset
    i = torch.arange(Sq, device=q.device)[:, None] + offset
    j = torch.arange(Skv, device=q.device)[None, :]
    allowed = j <= i
    s = s.masked_fill(~allowed, -math.inf)
    lse = torch.logsumexp(s, dim=-1)
    p = torch.where(allowed, torch.exp(s - lse[..., None]), torch.zeros_like(s))
    return p @ vd, lse


@pytest.fixture(scope="module")
def causal_kernel():
    # Default archs and configs: a bundle compiled elsewhere (attnc compile
    # specs/examples/causal.json --cache) serves machines that have no attnc.
    if not (attune.bundle_cache_dir(CAUSAL) / "manifest.json").is_file() and not attnc_path():
        pytest.skip(
            f"no attnc and no causal bundle in the cache: run `attnc compile {CAUSAL} --cache` "
            f"elsewhere and copy it to {attune.bundle_cache_dir(CAUSAL)}"
        )
    return attune.compile(CAUSAL)


@pytest.mark.parametrize(
    "B, Sq, Skv",
    [(1, 1, 1), (2, 17, 17), (1, 127, 127), (1, 1, 127), (2, 17, 300), (1, 127, 64), (3, 128, 256)],
)
def test_causal_matches_the_reference(causal_kernel, tuning_db, B, Sq, Skv):
    torch.manual_seed(B * 1000 + Sq * 10 + Skv)
    q = torch.randn(B, 8, Sq, 64, device="cuda").bfloat16()
    k = torch.randn(B, 2, Skv, 64, device="cuda").bfloat16()
    v = torch.randn(B, 2, Skv, 64, device="cuda").bfloat16()
    want_o, want_lse = reference(q, k, v)

    o, lse = causal_kernel(q, k, v, return_lse=True)  # tunes this bucket
    torch.cuda.synchronize()
    assert o.dtype == torch.bfloat16 and lse.dtype == torch.float32
    torch.testing.assert_close(o.double(), want_o, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(lse.double(), want_lse, atol=1e-2, rtol=1e-3)
    assert tuning_db.is_file()

    again, lse_again = causal_kernel(q, k, v, return_lse=True)  # the tuned variant
    torch.testing.assert_close(again.double(), want_o, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(lse_again.double(), want_lse, atol=1e-2, rtol=1e-3)


def test_causal_strided_inputs_and_explicit_offset(causal_kernel):
    q = torch.randn(2, 33, 8, 64, device="cuda").bfloat16().transpose(1, 2)
    k = torch.randn(2, 50, 2, 64, device="cuda").bfloat16().transpose(1, 2)
    v = torch.randn(2, 50, 2, 64, device="cuda").bfloat16().transpose(1, 2)
    want_o, want_lse = reference(q, k, v, q_offset=4)
    o, lse = causal_kernel(q, k, v, return_lse=True, q_offset=4, tune=False)
    torch.testing.assert_close(o.double(), want_o, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(lse.double(), want_lse, atol=1e-2, rtol=1e-3)


@pytest.mark.parametrize("Sq, Skv", [(1, 3000), (5, 777), (40, 23)])
def test_causal_split_kv_every_variant(causal_kernel, Sq, Skv):
    """Split-KV on the device: every variant, the runtime's choice and forced splits
    (more than there are key blocks, too), against the float64 reference."""
    torch.manual_seed(Sq * 7 + Skv)
    q = torch.randn(1, 8, Sq, 64, device="cuda").bfloat16()
    k = torch.randn(1, 2, Skv, 64, device="cuda").bfloat16()
    v = torch.randn(1, 2, Skv, 64, device="cuda").bfloat16()
    want_o, want_lse = reference(q, k, v)
    for variant in causal_kernel.variants:
        for splits in (None, 1, 3, 64):
            o, lse = causal_kernel(q, k, v, return_lse=True, variant=variant, num_splits=splits,
                                   tune=False)
            torch.cuda.synchronize()
            what = f"{variant} num_splits={splits}"
            torch.testing.assert_close(o.double(), want_o, atol=2e-2, rtol=2e-2, msg=what)
            torch.testing.assert_close(lse.double(), want_lse, atol=1e-2, rtol=1e-3, msg=what)
