"""Argument checking with CPU tensors: every check runs before the device is touched, so
all of them are testable without a GPU; a call that passes them all is refused only
because its tensors are not on a CUDA device."""

import json
import shutil

import numpy as np
import pytest
import torch

import attune
from conftest import COPY_BUNDLE

# The copy bundle: heads 4/2, head_dim 64, bf16, extra input doc i32 [B, Sq].
B, SQ, SKV, D = 2, 5, 7, 64
DEVICE_MESSAGE = "attune: q is on cpu; the kernel needs CUDA tensors (all on one device)"


def args(**changes):
    """Correct CPU arguments for the copy bundle, with `changes` applied."""
    a = {
        "q": torch.randn(B, 4, SQ, D, dtype=torch.bfloat16),
        "k": torch.randn(B, 2, SKV, D, dtype=torch.bfloat16),
        "v": torch.randn(B, 2, SKV, D, dtype=torch.bfloat16),
        "doc": torch.zeros(B, SQ, dtype=torch.int32),
    }
    a.update(changes)
    return {k: v for k, v in a.items() if v is not None}


def refused(kernel, message, **call):
    with pytest.raises(attune.AttuneError) as e:
        kernel(call.pop("q"), call.pop("k"), call.pop("v"), **call)
    assert message in str(e.value)
    return str(e.value)


def test_correct_cpu_arguments_are_refused_only_for_the_device(copy_kernel):
    refused(copy_kernel, DEVICE_MESSAGE, **args())
    refused(copy_kernel, DEVICE_MESSAGE, **args(), return_lse=True, q_offset=3, kv_offset=1)
    refused(copy_kernel, DEVICE_MESSAGE, **args(), variant="copy_sm80_b", tune=False)


def test_num_splits_must_be_a_positive_int(copy_kernel):
    for bad in (0, -2, 1.5, True, "4"):
        refused(copy_kernel, f"attune: num_splits={bad!r}; expected a positive int", **args(),
                num_splits=bad)
    refused(copy_kernel, DEVICE_MESSAGE, **args(), num_splits=3)


def test_selected_variant_checks_like_a_call(copy_kernel):
    with pytest.raises(attune.AttuneError, match="q is on cpu"):
        copy_kernel.selected_variant(**args())
    with pytest.raises(attune.AttuneError, match="missing tensor argument doc"):
        copy_kernel.selected_variant(**{n: t for n, t in args().items() if n != "doc"})


def test_an_argument_that_is_not_a_tensor(copy_kernel):
    refused(copy_kernel, "attune: k must be a torch.Tensor, got numpy.ndarray",
            **args(k=np.zeros((B, 2, SKV, D), np.float32)))
    refused(copy_kernel, "attune: doc must be a torch.Tensor, got builtins.list",
            **args(doc=[[0] * SQ] * B))


def test_an_unknown_extra_tensor(copy_kernel):
    message = refused(copy_kernel, "attune: unknown tensor argument segments",
                      **args(), segments=torch.zeros(B, SQ, dtype=torch.int32))
    assert "extra inputs are: doc" in message


def test_a_missing_extra_tensor(copy_kernel):
    refused(copy_kernel, "attune: missing tensor argument doc (i32 [B, Sq]); "
            "this kernel's extra inputs are: doc", **args(doc=None))


def test_names_are_checked_before_dtypes(copy_kernel):
    refused(copy_kernel, "missing tensor argument doc",
            **args(q=torch.randn(B, 4, SQ, D), doc=None))


def test_q_of_the_wrong_dtype(copy_kernel):
    refused(copy_kernel, "attune: q has dtype torch.float32; this kernel takes torch.bfloat16",
            **args(q=torch.randn(B, 4, SQ, D)))


def test_v_of_the_wrong_dtype(copy_kernel):
    refused(copy_kernel, "attune: v has dtype torch.float16; this kernel takes torch.bfloat16",
            **args(v=torch.randn(B, 2, SKV, D, dtype=torch.float16)))


def test_doc_of_the_wrong_dtype(copy_kernel):
    refused(copy_kernel, "attune: doc has dtype torch.int64; this kernel takes torch.int32 "
            "(declared i32)", **args(doc=torch.zeros(B, SQ, dtype=torch.int64)))


@pytest.mark.parametrize(
    "name, shape, message",
    [
        ("q", (B, 4, SQ), "q: expected a tensor of 4 dimensions [B, Hq, Sq, D], got 3"),
        ("k", (1, B, 2, SKV, D), "k: expected a tensor of 4 dimensions [B, Hkv, Skv, D], got 5"),
        ("v", (SKV, D), "v: expected a tensor of 4 dimensions [B, Hkv, Skv, Dv], got 2"),
    ],
)
def test_wrong_ranks(copy_kernel, name, shape, message):
    refused(copy_kernel, "attn_check: " + message,
            **args(**{name: torch.zeros(shape, dtype=torch.bfloat16)}))


def test_doc_of_the_wrong_rank(copy_kernel):
    refused(copy_kernel, "attn_check: input doc: expected 2 dimensions [B, Sq], got 1",
            **args(doc=torch.zeros(B * SQ, dtype=torch.int32)))


def test_too_many_dimensions(copy_kernel):
    refused(copy_kernel, "attune: q has 9 dimensions; the runtime takes at most 8",
            **args(q=torch.zeros((1,) * 9, dtype=torch.bfloat16)))


def test_heads_mismatch(copy_kernel):
    refused(copy_kernel, "attn_check: q: expected shape [2, 4, 5, 64] (B, Hq, Sq, D), "
            "got [2, 2, 5, 64]", **args(q=torch.zeros(B, 2, SQ, D, dtype=torch.bfloat16)))
    refused(copy_kernel, "attn_check: k: expected shape [2, 2, 7, 64] (B, Hkv, Skv, D), "
            "got [2, 4, 7, 64]", **args(k=torch.zeros(B, 4, SKV, D, dtype=torch.bfloat16)))


def test_head_dim_mismatch(copy_kernel):
    refused(copy_kernel, "attn_check: q: expected shape [2, 4, 5, 64] (B, Hq, Sq, D), "
            "got [2, 4, 5, 32]", **args(q=torch.zeros(B, 4, SQ, 32, dtype=torch.bfloat16)))
    refused(copy_kernel, "attn_check: v: expected shape [2, 2, 7, 64] (B, Hkv, Skv, Dv), "
            "got [2, 2, 7, 128]", **args(v=torch.zeros(B, 2, SKV, 128, dtype=torch.bfloat16)))


def test_k_and_v_disagree_on_the_sequence(copy_kernel):
    refused(copy_kernel, "attn_check: v: expected shape [2, 2, 7, 64] (B, Hkv, Skv, Dv), "
            "got [2, 2, 6, 64]", **args(v=torch.zeros(B, 2, SKV - 1, D, dtype=torch.bfloat16)))


def test_batch_mismatch(copy_kernel):
    refused(copy_kernel, "attn_check: k: expected shape [2, 2, 7, 64]",
            **args(k=torch.zeros(B + 1, 2, SKV, D, dtype=torch.bfloat16)))


def test_doc_of_the_wrong_shape(copy_kernel):
    refused(copy_kernel, "attn_check: input doc: expected shape [2, 5] (B, Sq), got [2, 4]",
            **args(doc=torch.zeros(B, SQ - 1, dtype=torch.int32)))


def test_a_non_unit_last_stride_asks_for_contiguous(copy_kernel):
    q = torch.randn(B, 4, D, SQ, dtype=torch.bfloat16).transpose(2, 3)
    message = refused(copy_kernel, "attn_check: q: the last dimension must be contiguous",
                      **args(q=q))
    assert "call .contiguous() on q" in message
    # ... which is then accepted.
    refused(copy_kernel, DEVICE_MESSAGE, **args(q=q.contiguous()))


def test_strided_q_k_v_are_accepted(copy_kernel):
    # [B, S, H, D] storage (the layout of most models) seen as [B, H, S, D].
    q = torch.randn(B, SQ, 4, D, dtype=torch.bfloat16).transpose(1, 2)
    k = torch.randn(B, SKV, 2, D, dtype=torch.bfloat16).transpose(1, 2)
    v = torch.randn(B, SKV, 2, 2 * D, dtype=torch.bfloat16).transpose(1, 2)[..., :D]
    assert not (q.is_contiguous() or k.is_contiguous() or v.is_contiguous())
    refused(copy_kernel, DEVICE_MESSAGE, **args(q=q, k=k, v=v))


def test_a_non_contiguous_extra_input_is_made_contiguous(copy_kernel):
    doc = torch.zeros(SQ, B, dtype=torch.int32).t()
    assert not doc.is_contiguous()
    refused(copy_kernel, DEVICE_MESSAGE, **args(doc=doc))


def test_a_misaligned_q(copy_kernel):
    # The bundle's kernels need 16-byte aligned tensors; one element in is 2 bytes off.
    flat = torch.zeros(B * 4 * SQ * D + 1, dtype=torch.bfloat16)
    q = flat[1:].view(B, 4, SQ, D)
    refused(copy_kernel, "is not 16-byte aligned, which this bundle's kernels need", **args(q=q))


def test_an_unknown_variant(copy_kernel):
    refused(copy_kernel, "attune: unknown variant 'copy_sm70'; this bundle has: copy_sm80_a, ",
            **args(), variant="copy_sm70")


def test_offsets_must_be_integers(copy_kernel):
    with pytest.raises(TypeError):
        copy_kernel(**args(), q_offset=1.5)


@pytest.fixture
def no_lse_kernel(tmp_path):
    """The copy bundle declaring only o: what a spec whose outputs are ["o"] compiles to."""
    bundle = tmp_path / "no_lse"
    shutil.copytree(COPY_BUNDLE, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["outputs"] = ["o"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return attune.load(bundle)


def test_return_lse_on_a_bundle_without_lse(no_lse_kernel):
    assert no_lse_kernel.info["outputs"] == ["o"]
    refused(no_lse_kernel, "attune: return_lse=True, but this bundle (copy-test) does not compute "
            "lse (its outputs are ['o'])", **args(), return_lse=True)
    refused(no_lse_kernel, DEVICE_MESSAGE, **args())


def test_the_device_check_names_each_tensor(copy_kernel):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    a = args()
    a = {n: t.cuda() for n, t in a.items()}
    a["doc"] = a["doc"].cpu()
    refused(copy_kernel, "attune: doc is on cpu; the kernel needs CUDA tensors", **a)
    a = {n: t.cuda() for n, t in a.items()}
    a["q"] = a["q"].cpu()
    refused(copy_kernel, DEVICE_MESSAGE, **a)


def test_tensors_on_two_devices(copy_kernel):
    if not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA GPUs")
    a = {n: t.to("cuda:0") for n, t in args().items()}
    a["k"] = a["k"].to("cuda:1")
    refused(copy_kernel, "attune: k is on cuda:1 but q is on cuda:0", **a)

