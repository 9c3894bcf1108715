"""When the Python package tunes, without a GPU: the decision of Kernel._run, with the
runtime's C API replaced by a recorder (the real library loads the bundle; only the
three device-touching entry points are recorded). The tuner's rule itself (default
first, disagreeing candidates dropped) lives in the runtime and is tested on the
simulated device (test/lit/attnc/tune-sim.test) and in runtime/test/TuneTest.cpp."""

import pytest
import torch

import attune
from attune import _kernel
from conftest import COPY_BUNDLE


class Recorder:
    """Stands in for the ctypes library in Kernel._run."""

    def __init__(self, known=0):
        self.calls = []
        self.known = known

    def attn_tuned_variant(self, handle, call, buf, n):
        self.calls.append("attn_tuned_variant")
        return self.known

    def attn_tune(self, handle, call, repeats, verbose):
        self.calls.append("attn_tune")
        return 0

    def attn_launch(self, handle, call):
        self.calls.append("attn_launch")
        return 0


@pytest.fixture
def kernel():
    k = attune.load(COPY_BUNDLE)  # reads the manifest only: no device needed
    assert len(k.variants) > 1
    return k


def run(kernel, monkeypatch, env=None, tune=None, variant=None, known=0, shape=(2, 4, 3, 64)):
    monkeypatch.delenv("ATTUNE_TUNE", raising=False)
    monkeypatch.delenv("ATTUNE_NO_TUNE", raising=False)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    rec = Recorder(known)
    monkeypatch.setattr(kernel, "_lib", rec)
    kernel._run(attune._capi.Call(), torch.empty(shape), None, variant, tune)
    return rec.calls


def test_first_call_tunes(kernel, monkeypatch):
    assert run(kernel, monkeypatch) == ["attn_tuned_variant", "attn_tune"]


def test_known_bucket_launches(kernel, monkeypatch):
    assert run(kernel, monkeypatch, known=1) == ["attn_tuned_variant", "attn_launch"]


@pytest.mark.parametrize("value", ["0", "false", "off", "no", " 0 "])
def test_attune_tune_0_turns_tuning_off(kernel, monkeypatch, value):
    assert run(kernel, monkeypatch, env={"ATTUNE_TUNE": value}) == ["attn_launch"]
    assert not _kernel.tuning_enabled()


@pytest.mark.parametrize("value", ["1", ""])
def test_attune_tune_1_keeps_tuning(kernel, monkeypatch, value):
    assert run(kernel, monkeypatch, env={"ATTUNE_TUNE": value}) == [
        "attn_tuned_variant", "attn_tune"]


def test_older_switch_still_works(kernel, monkeypatch):
    assert run(kernel, monkeypatch, env={"ATTUNE_NO_TUNE": "1"}) == ["attn_launch"]


def test_explicit_arguments(kernel, monkeypatch):
    assert run(kernel, monkeypatch, tune=False) == ["attn_launch"]
    assert run(kernel, monkeypatch, tune=True) == ["attn_tune"]
    # An explicit request wins over the environment switch.
    assert run(kernel, monkeypatch, env={"ATTUNE_TUNE": "0"}, tune=True) == ["attn_tune"]
    assert run(kernel, monkeypatch, variant="copy_sm80_b") == ["attn_launch"]


def test_empty_call_never_tunes(kernel, monkeypatch):
    assert run(kernel, monkeypatch, shape=(0, 4, 3, 64)) == ["attn_launch"]
