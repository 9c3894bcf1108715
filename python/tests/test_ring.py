"""attune.distributed.ring_attention on gloo with 2 and 4 processes, against attention
over the whole sequence in one process (test/e2e/dense_autograd.py, float64): o, lse and
the gradients of q, k, v and the float inputs (the backward ring).

The kernel the ring calls is a stand-in, `DenseKernel`: dense_autograd (an independent
implementation of PATTERNS.md) behind attune.Kernel's call signature, `backward` and
`info`, so the ring is tested with real mask semantics without a compiler. The same
cases run on the real attune.Kernel (factory "attune": host kernels, float32 cases).

Spawned processes are slow to start, so every case of a world size runs in one spawn
(`_run_all`, module-scoped); each case is then its own test, reading its results.
"""

import copy
import json
import math
import re
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import attune
from attune.distributed import positions, ring_attention

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "specs" / "examples"
sys.path.insert(0, str(REPO / "test" / "e2e"))
import dense_autograd  # noqa: E402

F64 = torch.float64
TOL = {"float64": (1e-9, 1e-10), "float32": (1e-5, 1e-6)}  # (rtol, atol)
# Gradients: the largest error relative to the largest magnitude of that gradient (over
# the whole sequence, so a shard whose gradient is all 0 is held to the same bound).
GRAD_TOL = {"float64": 1e-9, "float32": 1e-4}


class DenseKernel:
    """dense_autograd.attention with attune.Kernel's interface: o in q's dtype, lse
    float32 (float64 for float64 q, so that float64 cases stay exact), `info` with the
    spec and the inputs as a bundle manifest lists them, and `backward` with
    Kernel.backward's meaning; counts its calls of each."""

    def __init__(self, spec):
        self.info = {
            "spec": spec,
            "inputs": [{"name": n, "dtype": d["dtype"], "shape": d["shape"]}
                       for n, d in spec.get("inputs", {}).items()],
            "outputs": spec.get("outputs", ["o"]),
        }
        self.calls = 0
        self.bwd_calls = 0

    def __call__(self, q, k, v, *, return_lse=False, q_offset=None, kv_offset=None, **inputs):
        assert q_offset is not None and kv_offset is not None  # the ring always passes both
        self.calls += 1
        o, lse = dense_autograd.attention(self.info["spec"], q.to(F64), k.to(F64), v.to(F64),
                                          inputs, q_offset, kv_offset)
        o = o.to(q.dtype)
        lse = lse.to(F64 if q.dtype == F64 else torch.float32)
        return (o, lse) if return_lse else o

    def backward(self, q, k, v, o, lse, do, *, dlse=None, q_offset=None, kv_offset=None,
                 grads_of=(), **inputs):
        """This pair's share of the gradients when o and lse are those of a longer key
        sequence (the ring's merged result): with P = exp(s - lse) over this pair's
        allowed entries, D = rowsum(dO o) and dlse of the whole row (constants here),

            F = sum_rows sum_j P_j (dO . v_j - D + dlse)

        has dF/dv_j = P_j dO and dF/ds_j = P_j (dO . v_j - D + dlse), softmax's backward
        restricted to the pair; autograd through dense_autograd takes it on to q, k and
        the float inputs, whatever the score transforms. sum_j P_j v_j and sum_j P_j are
        this pair's own o and exp(lse_pair - lse), so F is written with them."""
        assert q_offset is not None and kv_offset is not None
        self.bwd_calls += 1
        with torch.enable_grad():
            q64, k64, v64 = (t.detach().to(F64).requires_grad_() for t in (q, k, v))
            floats = {n: inputs[n].detach().to(F64).requires_grad_() for n in grads_of}
            o_pair, lse_pair = dense_autograd.attention(
                self.info["spec"], q64, k64, v64, dict(inputs, **floats), q_offset, kv_offset)
            lse_g = lse.to(F64)
            # Rows with no key anywhere have lse -inf (and lse_pair too): mass 0, no NaN.
            mass = torch.exp(lse_pair - torch.where(torch.isfinite(lse_g), lse_g,
                                                    torch.zeros_like(lse_g)))
            do64 = do.to(F64)
            const = -(do64 * o.to(F64)).sum(-1) + (0 if dlse is None else dlse.to(F64))
            surrogate = (mass * ((do64 * o_pair).sum(-1) + const)).sum()
            wrt = [q64, k64, v64, *floats.values()]
            grads = torch.autograd.grad(surrogate, wrt, allow_unused=True)
        grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, wrt)]
        return (grads[0].to(q.dtype), grads[1].to(k.dtype), grads[2].to(v.dtype),
                {n: g.to(F64 if q.dtype == F64 else torch.float32)
                 for n, g in zip(floats, grads[3:])})


class FailingOn:
    """A kernel that raises (a RuntimeError, as a kernel might) in its forward or
    backward: the ring must still complete and raise on every rank."""

    def __init__(self, kernel, where):
        self.kernel, self.where, self.info = kernel, where, kernel.info

    def __call__(self, *args, **kwargs):
        if self.where == "forward":
            raise RuntimeError("injected forward failure")
        return self.kernel(*args, **kwargs)

    def backward(self, *args, **kwargs):
        if self.where == "backward":
            raise RuntimeError("injected backward failure")
        return self.kernel.backward(*args, **kwargs)


def make_kernel(spec, factory="dense"):
    """The kernel each rank's ring calls: the stand-in, or (factory "attune") the real
    attune.Kernel of the spec (float32 host bundle, compiled in the parent: see
    kernel_factory)."""
    if factory == "attune":
        return attune.compile(spec, arch="host")
    return DenseKernel(spec)


# The factories the cases run with: "attune" is tried and skipped (with the reason)
# while attune.Kernel cannot run on CPU tensors; make it the only one to insist on it.
FACTORIES = ["dense", "attune"]


# --------------------------------------------------------------------------------------
# Specs: the examples, at test sizes (windows and sinks shrunk to a few tokens)
# --------------------------------------------------------------------------------------

def _example(example, **top):
    spec = json.loads((EXAMPLES / f"{example}.json").read_text())
    spec.update(heads_q=4, heads_kv=2, head_dim=8, head_dim_v=6, dtype="f32",
                outputs=["o", "lse"])
    spec.update(top)
    return spec


_DOC_INPUTS = {"q_doc": {"dtype": "i32", "shape": ["B", "Sq"]},
               "kv_doc": {"dtype": "i32", "shape": ["B", "Skv"]}}


def _specs():
    s = {}
    s["causal"] = _example("causal")
    s["causal-top-left"] = _example("causal-top-left")
    s["dense"] = _example("dense")
    swa = _example("mistral-swa")
    swa["mask"]["all"][1]["sliding_window"]["left"] = 5
    s["mistral-swa"] = swa
    s["sliding-window"] = _example("sliding-window",
                                   mask={"sliding_window": {"left": 4, "right": 3}})
    sl = _example("streaming-llm")
    sl["mask"]["all"][1]["any"][0]["sinks"]["count"] = 3
    sl["mask"]["all"][1]["any"][1]["sliding_window"]["left"] = 4
    s["streaming-llm"] = sl
    # Document masks with the key ids as their own input (one tensor cannot be both).
    s["packed-causal"] = _example(
        "packed-causal", inputs=_DOC_INPUTS,
        mask={"all": [{"causal": {}}, {"document": {"q_ids": "q_doc", "kv_ids": "kv_doc"}}]})
    s["document"] = _example("document", inputs=_DOC_INPUTS,
                             mask={"document": {"q_ids": "q_doc", "kv_ids": "kv_doc"}})
    # The spec's own q_offset: the first 3 queries see no key (o = 0, lse = -inf).
    s["causal-offset"] = _example("causal", name="causal-offset", q_offset=-3, kv_offset=0)
    # Far enough back that some ranks' queries see no key in any step.
    s["causal-far"] = _example("causal", name="causal-far", q_offset=-30)
    s["gemma2-local"] = _example("gemma2-local", heads_kv=4, scale=0.3,
                                 mask={"all": [{"causal": {}}, {"sliding_window": {"left": 6}}]})
    s["alibi"] = _example("alibi")
    # Float inputs with gradients: a per-query and a per-key bias (sharded like q and
    # like k: the key one's grad travels with dk, dv) and T5's table (replicated: each
    # rank's grad is its queries' share).
    s["bias-qk"] = _example(
        "causal", name="bias-qk",
        inputs={"qb": {"dtype": "f32", "shape": ["B", "Hq", "Sq", 1]},
                "kb": {"dtype": "f32", "shape": ["B", 1, 1, "Skv"]}},
        score=[{"bias": {"tensor": "qb"}}, {"bias": {"tensor": "kb"}}])
    s["t5"] = _example("t5-bias", name="t5", inputs={"table": {"dtype": "f32", "shape": [16, "Hq"]}},
                       score=[{"t5_bias": {"table": "table", "num_buckets": 16,
                                           "max_distance": 20}}])
    return s


SPECS = _specs()
# Refused under striped sharding, with the mask or transform the message must name.
STRIPED_REFUSALS = {"mistral-swa": "mask 'sliding_window'",
                    "sliding-window": "mask 'sliding_window'",
                    "streaming-llm": "mask 'sinks'", "gemma2-local": "mask 'sliding_window'",
                    "alibi": "score 'alibi'", "t5": "score 't5_bias'"}
# What each case's loss reads: o, o and lse (so dlse flows into the backward), or lse
# alone (dO is None).
LOSSES = ("o", "o+lse", "lse")


def _cases(W):
    cases = []
    N = 37 if W == 2 else 45
    for name in SPECS:
        for sharding in ("contiguous", "zigzag", "striped"):
            for dtype in ("float64", "float32"):
                case = dict(id=f"{name}-{sharding}-{dtype}", spec=name, sharding=sharding,
                            N=N, dtype=dtype, grad=True, seed=len(cases),
                            loss=LOSSES[len(cases) % 3])
                if sharding == "striped" and name in STRIPED_REFUSALS:
                    case["error"] = f"{STRIPED_REFUSALS[name]} with sharding='striped'"
                cases.append(case)
    # Awkward lengths: shards of one token and empty shards; uneven contiguous runs.
    for sharding in ("contiguous", "zigzag", "striped"):
        cases.append(dict(id=f"causal-{sharding}-N{W - 1}", spec="causal", sharding=sharding,
                          N=W - 1, dtype="float64", grad=True, seed=len(cases), loss="o+lse"))
        cases.append(dict(id=f"packed-causal-{sharding}-N1", spec="packed-causal",
                          sharding=sharding, N=1, dtype="float32", grad=True, seed=len(cases),
                          loss="o+lse"))
        cases.append(dict(id=f"bias-qk-{sharding}-N{W + 1}", spec="bias-qk", sharding=sharding,
                          N=W + 1, dtype="float32", grad=True, seed=len(cases), loss="o+lse"))
    lengths = [5, 20] if W == 2 else [5, 20, 1, 11]
    for name in ("causal", "streaming-llm", "document", "bias-qk"):
        for dtype in ("float64", "float32"):
            cases.append(dict(id=f"{name}-contiguous-lengths-{dtype}", spec=name,
                              sharding="contiguous", N=sum(lengths), lengths=lengths,
                              dtype=dtype, grad=True, seed=len(cases), loss="o+lse"))
    cases.append(dict(id="causal-zigzag-bad-split", spec="causal", sharding="zigzag",
                      N=sum(lengths), lengths=lengths, dtype="float64", grad=False, seed=0,
                      error="sharding='zigzag' with ranks holding"))
    if W == 4:  # a process group of ranks 1 and 3: the ring's peers are global ranks
        for dtype in ("float64", "float32"):
            cases.append(dict(id=f"causal-zigzag-subgroup-{dtype}", spec="causal",
                              sharding="zigzag", N=21, dtype=dtype, grad=True, seed=len(cases),
                              loss="o+lse", subgroup=[1, 3]))
    # Refusals: every rank raises (no rank left waiting in the ring).
    shared = _example("document")  # "doc" read as both q_ids and kv_ids
    cases.append(dict(id="document-shared-ids", spec=shared, sharding="contiguous", N=N,
                      dtype="float64", seed=0, error="read both by query and by key index"))
    sig = _example("sigmoid")
    cases.append(dict(id="sigmoid-refused", spec=sig, sharding="contiguous", N=N, dtype="float64",
                      seed=0, error="normalizer 'sigmoid'"))
    cases.append(dict(id="grads-disagree", spec="causal", sharding="contiguous", N=N,
                      dtype="float32", seed=0, k_grad_rank=1,
                      error="rank 1 wants gradients of k, rank 0 of nothing"))
    # A kernel failing on one rank: the ring completes and every rank raises.
    for where in ("forward", "backward"):
        cases.append(dict(id=f"{where}-fails-on-rank-1", spec="bias-qk", sharding="zigzag",
                          N=N, dtype="float32", grad=True, seed=0, loss="o", fail=where,
                          error=f"injected {where} failure|the kernel's {where} failed on "
                                "rank 1 of the group"))
    cases.append(dict(id="one-rank-bad-q", spec="causal", sharding="contiguous", N=N,
                      dtype="float64", seed=0, bad_rank=1,
                      error=r"q has shape|rank 1 of the group refused"))
    return cases


# --------------------------------------------------------------------------------------
# One case on one rank
# --------------------------------------------------------------------------------------

def _doc_ids(B, N, g):
    """Packed documents: nondecreasing ids with random run lengths (ids 0, 1, 2, ...)."""
    ids = torch.zeros(B, N, dtype=torch.int32)
    for b in range(B):
        cuts = torch.rand(N, generator=g) < 0.2
        ids[b] = torch.cumsum(cuts.to(torch.int32), 0)
    return ids


def _excess(a, b, rtol):
    """max(|a - b| - rtol |b|): the allclose criterion, to compare with atol."""
    if a.numel() == 0:
        return 0.0
    return float(((a.to(F64) - b).abs() - rtol * b.abs()).max())


def _seq_axis(decl):
    """The sequence axis of a declared input (as the ring shards it), None if neither."""
    shape = list(decl["shape"])
    return shape.index("Sq") if "Sq" in shape else shape.index("Skv") if "Skv" in shape else None


def _grad_err(a, ref, full, floor=0.0):
    """max |a - ref| over this rank's part, relative to the largest |gradient| of the
    whole sequence (`full`), or `floor` if larger; NaN stays NaN (and fails every
    bound)."""
    if a.numel() == 0:
        return 0.0
    scale = max(float(full.abs().max()), floor) or 1.0
    return float((a.to(F64) - ref).abs().max()) / scale


def _run_case(case, rank, W):
    group = None
    if case.get("subgroup"):
        # Every rank creates the group (torch.distributed's rule); its members run the case.
        group = dist.new_group(case["subgroup"])
        if rank not in case["subgroup"]:
            return {"member": False}
        rank, W = dist.get_rank(group), dist.get_world_size(group)
    spec = case["spec"]
    spec = copy.deepcopy(SPECS[spec] if isinstance(spec, str) else spec)
    kernel = make_kernel(spec, case.get("factory", "dense"))
    if case.get("fail") and rank == 1:
        kernel = FailingOn(kernel, case["fail"])
    dtype = getattr(torch, case["dtype"])
    g = torch.Generator().manual_seed(1000 + case["seed"])  # the same on every rank
    B, N, Hq, Hkv, D, Dv = 2, case["N"], spec["heads_q"], spec["heads_kv"], 8, 6
    q = torch.randn(B, Hq, N, D, generator=g, dtype=F64).to(dtype)
    k = torch.randn(B, Hkv, N, D, generator=g, dtype=F64).to(dtype)
    v = torch.randn(B, Hkv, N, Dv, generator=g, dtype=F64).to(dtype)
    w = torch.randn(B, Hq, N, Dv, generator=g, dtype=F64)  # loss weights for the gradient
    u = torch.randn(B, Hq, N, generator=g, dtype=F64)  # and for lse
    declared = spec.get("inputs", {})
    inputs = {}
    if "q_doc" in declared:
        ids = _doc_ids(B, N, g)
        kv_ids = ids.clone()
        if spec["name"] == "document":
            # Keys of document 2 are relabelled: its queries see no key at all.
            kv_ids[ids == 2] = 99
        inputs = {"q_doc": ids, "kv_doc": kv_ids}
    elif "doc" in declared:
        inputs = {"doc": _doc_ids(B, N, g)}
    for name, decl in declared.items():
        if decl["dtype"] == "f32":
            shape = [{"B": B, "Hq": Hq, "Sq": N, "Skv": N}.get(d, d) for d in decl["shape"]]
            # In q's dtype: float64 cases (the stand-in only) stay exact.
            inputs[name] = torch.randn(shape, generator=g, dtype=F64).to(dtype)
    floats = [n for n, t in inputs.items() if t.is_floating_point()]

    if "lengths" in case:
        starts = [sum(case["lengths"][:r]) for r in range(W)]
        pos = torch.arange(starts[rank], starts[rank] + case["lengths"][rank])
    else:
        pos = positions(N, rank, W, case["sharding"])
    ql, kl, vl = (t.index_select(2, pos).detach() for t in (q, k, v))

    def local(name, t):
        axis = _seq_axis(declared[name])
        return t.clone() if axis is None else t.index_select(axis, pos)

    inl = {n: local(n, t) for n, t in inputs.items()}
    if case.get("bad_rank") == rank:
        ql = ql[0]
    grad = bool(case.get("grad"))
    leaves = [ql, kl, vl] + [inl[n] for n in floats]
    for t in leaves:
        t.requires_grad_(grad)
    if case.get("k_grad_rank") == rank:
        kl.requires_grad_(True)
    out = {}
    try:
        o, lse = ring_attention(kernel, ql, kl, vl, group=group, sharding=case["sharding"],
                                return_lse=True, **inl)
        if grad:
            wl, ul = w[:, :, pos], u[:, :, pos]
            loss = 0
            if "o" in case["loss"]:
                loss = loss + (o.to(F64) * wl).sum()
            if "lse" in case["loss"]:
                # lse is -inf on rows without keys: those rows take no part in the loss.
                loss = loss + (torch.where(torch.isinf(lse), torch.zeros_like(lse), lse)
                               .to(F64) * ul).sum()
            # Every rank runs the backward (the second ring), with or without tokens.
            grads = torch.autograd.grad(loss, leaves)
    except (attune.AttuneError, RuntimeError) as e:
        return {"error": str(e)}

    # The whole sequence in one process, float64 from the same (rounded) values.
    q64, k64, v64 = (t.to(F64).requires_grad_(grad) for t in (q, k, v))
    in64 = {n: (t.to(F64).requires_grad_(grad) if n in floats else t) for n, t in inputs.items()}
    o_ref, lse_ref = dense_autograd.attention(spec, q64, k64, v64, in64)
    rtol, _ = TOL[case["dtype"]]
    out.update({"n": len(pos), "calls": getattr(kernel, "calls", None),
                "bwd_calls": getattr(kernel, "bwd_calls", None), "o_dtype": str(o.dtype),
                "o_shape": list(o.shape), "lse_dtype": str(lse.dtype),
                "nan": bool(torch.isnan(o).any() or torch.isnan(lse).any())})
    o_ref_l, lse_ref_l = o_ref.detach()[:, :, pos], lse_ref.detach()[:, :, pos]
    masked = torch.isinf(lse_ref_l)
    out["masked_rows"] = int(masked.sum())
    out["inf_match"] = bool(torch.equal(torch.isinf(lse), masked)
                            and (lse[masked] == -math.inf).all())
    out["masked_o_zero"] = bool((o.detach()[masked] == 0).all())
    out["o_excess"] = _excess(o.detach(), o_ref_l, rtol)
    out["lse_excess"] = _excess(lse.detach()[~masked], lse_ref_l[~masked], rtol)
    if grad:
        def ref_loss(rows):
            loss = 0
            if "o" in case["loss"]:
                loss = loss + (o_ref * w)[:, :, rows].sum()
            if "lse" in case["loss"]:
                lse_fin = torch.where(torch.isinf(lse_ref), torch.zeros_like(lse_ref), lse_ref)
                loss = loss + (lse_fin * u)[:, :, rows].sum()
            return loss

        wrt = [q64, k64, v64] + [in64[n] for n in floats]
        full = torch.autograd.grad(ref_loss(slice(None)), wrt, retain_graph=True,
                                   allow_unused=True)
        full = [torch.zeros_like(t) if f is None else f for f, t in zip(full, wrt)]
        # A replicated input's grad on a rank is its own queries' share (its loss rows).
        reps = [n for n in floats if _seq_axis(declared[n]) is None]
        share = dict(zip(reps, torch.autograd.grad(ref_loss(pos), [in64[n] for n in reps],
                                                   allow_unused=True))) if reps else {}
        # A gradient that is 0 in exact arithmetic (a per-query bias's, when the loss
        # reads o only: softmax ignores a row's constant) holds rounding noise only, so
        # the scale has a floor: 1% of the case's largest gradient.
        floor = 0.01 * max(float(f.abs().max()) if f.numel() else 0.0 for f in full)
        errs, nans = {}, {}
        for name, got, ref in zip(["q", "k", "v"] + floats, grads, full):
            if name in ("q", "k", "v"):
                mine = ref[:, :, pos]
            elif name in share:
                mine = share[name] if share[name] is not None else torch.zeros_like(ref)
                out[f"d{name}"] = got.tolist()  # the test sums the ranks' shares
                out[f"d{name}_full"] = ref.tolist()
            else:
                mine = ref.index_select(_seq_axis(declared[name]), pos)
            nans[name] = bool(torch.isnan(got).any())
            errs[name] = _grad_err(got, mine, ref, floor)
        out["grad_err"], out["grad_nan"] = errs, nans
    return out


def _worker(rank, W, init_file, cases, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=W)
    results = {}
    for case in cases:
        try:
            results[case["id"]] = _run_case(case, rank, W)
        except Exception as e:  # reported per case; a hang is caught by the parent's deadline
            results[case["id"]] = {"crash": f"{type(e).__name__}: {e}"}
    # Every rank finishes its cases before any leaves the group.
    dist.barrier()
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    dist.destroy_process_group()


def _run_all(W, cases, tmp_path, deadline_s=120):
    init_file = tmp_path / "rendezvous"
    ctx = mp.spawn(_worker, args=(W, str(init_file), cases, str(tmp_path)), nprocs=W,
                   join=False)
    start = time.monotonic()
    while not ctx.join(timeout=1):
        if time.monotonic() - start > deadline_s:
            for p in ctx.processes:  # the workers this test started
                if p.is_alive():
                    p.terminate()
            pytest.fail(f"ring attention with {W} ranks did not finish in {deadline_s} s (a hang?)")
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(W)]


CASES = {W: _cases(W) for W in (2, 4)}


def _attune_kernels_run_on_cpu():
    """None when attune.compile'd kernels run on CPU tensors here (and every spec of the
    cases is compiled into the cache, so the ranks do not race to compile), else why
    not."""
    try:
        kernel = attune.compile(SPECS["causal"], arch="host")
        x = torch.randn(1, 4, 3, 8)
        kernel(x, x[:, :2], torch.randn(1, 2, 3, 6), q_offset=0, kv_offset=0, return_lse=True)
        for spec in SPECS.values():
            attune.compile(spec, arch="host")
    except attune.AttuneError as e:
        return str(e)
    return None


@pytest.fixture(scope="module", params=FACTORIES)
def kernel_factory(request):
    if request.param == "attune":
        why = _attune_kernels_run_on_cpu()
        if why:
            pytest.skip(f"attune.Kernel does not run on CPU tensors here: {why[:300]}")
    return request.param


@pytest.fixture(scope="module")
def ring_results(kernel_factory, tmp_path_factory):
    """results(W)[rank][case id], every case of world size W run in one spawn (cached)."""
    cache = {}

    def results(W):
        if W not in cache:
            # A real kernel is a float32 bundle: its float64 cases are left out.
            cases = [dict(c, factory=kernel_factory) for c in CASES[W]
                     if kernel_factory == "dense" or c["dtype"] == "float32"]
            cache[W] = _run_all(W, cases, tmp_path_factory.mktemp(f"ring{W}"))
        return cache[W]

    results.factory = kernel_factory
    return results


def _check(case, per_rank):
    per_rank = [res for res in per_rank if res.get("member", True)]
    if "error" in case:
        for r, res in enumerate(per_rank):
            assert "error" in res, f"rank {r}: expected an AttuneError, got {res}"
            assert re.search(case["error"], res["error"]), f"rank {r}: {res['error']}"
        return
    rtol, atol = TOL[case["dtype"]]
    for r, res in enumerate(per_rank):
        assert "error" not in res and "crash" not in res, f"rank {r}: {res}"
        assert not res["nan"], f"rank {r}: NaN in o or lse"
        assert res["inf_match"], f"rank {r}: lse = -inf not exactly on the fully masked rows"
        assert res["masked_o_zero"], f"rank {r}: o != 0 on a fully masked row"
        assert res["o_excess"] <= atol, f"rank {r}: o off by {res['o_excess']}"
        assert res["lse_excess"] <= atol, f"rank {r}: lse off by {res['lse_excess']}"
        assert res["o_dtype"] == f"torch.{case['dtype']}"
        assert res["o_shape"] == [2, 4, res["n"], 6]
        if case.get("grad"):
            for name, err in res["grad_err"].items():
                assert not res["grad_nan"][name], f"rank {r}: NaN in d{name}"
                assert err <= GRAD_TOL[case["dtype"]], f"rank {r}: d{name} off by {err:.3g}"
    assert sum(res["n"] for res in per_rank) == case["N"]
    # A replicated input's grads, each rank's share, add up to the whole gradient.
    for key in [key for key in per_rank[0] if key.endswith("_full")]:
        total = sum(torch.tensor(res[key[:-5]], dtype=F64) for res in per_rank)
        full = torch.tensor(per_rank[0][key], dtype=F64)
        err = _grad_err(total, full, full)
        assert err <= GRAD_TOL[case["dtype"]], f"sum of the ranks' {key[:-5]} off by {err:.3g}"


@pytest.mark.parametrize("W, case", [(W, c) for W in (2, 4) for c in CASES[W]],
                         ids=[f"W{W}-{c['id']}" for W in (2, 4) for c in CASES[W]])
def test_ring_matches_one_process(ring_results, W, case):
    if ring_results.factory != "dense" and case["dtype"] != "float32":
        pytest.skip("float64 case: the real kernel is a float32 bundle")
    _check(case, [ring_results(W)[r][case["id"]] for r in range(W)])


@pytest.mark.parametrize("W", [2, 4])
def test_fully_masked_rows_are_covered(ring_results, W):
    """The cases do contain rows no key may attend to (else inf_match tests nothing)."""
    for cid in ("causal-offset-contiguous-float32", "causal-offset-striped-float32",
                "document-zigzag-float32"):
        assert sum(ring_results(W)[r][cid]["masked_rows"] for r in range(W)) > 0, cid


@pytest.mark.parametrize("W", [2, 4])
def test_fully_masked_shard_pairs_skip_the_kernel(ring_results, W):
    if ring_results.factory != "dense":
        pytest.skip("counts the stand-in's calls")
    res = ring_results(W)
    # Contiguous causal: rank r needs the shards of ranks 0..r only.
    assert [res[r]["causal-contiguous-float64"]["calls"] for r in range(W)] == list(range(1, W + 1))
    # Zigzag causal: 3 chunk pairs on the own shard, 2 on each other: balanced.
    assert [res[r]["causal-zigzag-float64"]["calls"] for r in range(W)] == [2 * W + 1] * W
    # A window of a few tokens (mistral-swa, left 5) needs at most the neighbour's shard.
    assert all(res[r]["mistral-swa-contiguous-float64"]["calls"] <= 2 for r in range(W))
    # causal-far: rank 0's queries (positions -30 ...) precede every key.
    assert res[0]["causal-far-contiguous-float64"]["calls"] == 0
    far = res[0]["causal-far-contiguous-float64"]
    assert far["masked_rows"] == 2 * 4 * far["n"]  # B * Hq rows per token
    # Striped causal cannot skip: every rank's tokens interleave with every other's.
    assert [res[r]["causal-striped-float64"]["calls"] for r in range(W)] == [W] * W
    # The backward ring calls the kernel on the same shard pairs as the forward.
    checked = 0
    for cid in res[0]:
        for r in range(W):
            if "grad_err" in res[r][cid]:
                assert res[r][cid]["bwd_calls"] == res[r][cid]["calls"], (cid, r)
                checked += 1
    assert checked > 10 * W


def test_one_rank_is_attention_in_one_call_with_every_gradient(tmp_path):
    """W = 1 (in this process): one kernel call per query segment, and k, v may require
    grad (nothing travels), so dk and dv are checked too."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rv'}", rank=0,
                            world_size=1)
    try:
        for name in ("causal", "streaming-llm", "packed-causal", "causal-far"):
            for sharding in ("contiguous", "zigzag", "striped"):
                spec = SPECS[name]
                if sharding == "striped" and name in STRIPED_REFUSALS:
                    continue
                g = torch.Generator().manual_seed(5)
                q = torch.randn(1, 4, 17, 8, generator=g, dtype=F64, requires_grad=True)
                k = torch.randn(1, 2, 17, 8, generator=g, dtype=F64, requires_grad=True)
                v = torch.randn(1, 2, 17, 6, generator=g, dtype=F64, requires_grad=True)
                ids = _doc_ids(1, 17, g)
                inputs = {"q_doc": ids, "kv_doc": ids} if "inputs" in spec else {}
                kernel = DenseKernel(spec)
                o = ring_attention(kernel, q, k, v, sharding=sharding, **inputs)
                o_ref, _ = dense_autograd.attention(spec, q, k, v, inputs)
                torch.testing.assert_close(o, o_ref, rtol=1e-12, atol=1e-12)
                # causal-far masks everything: no call, so k and v are unused (grad 0).
                grads = torch.autograd.grad(o.square().sum(), (q, k, v), allow_unused=True)
                refs = torch.autograd.grad(o_ref.square().sum(), (q, k, v), allow_unused=True)
                for a, b, t in zip(grads, refs, (q, k, v)):
                    a = torch.zeros_like(t) if a is None else a
                    b = torch.zeros_like(t) if b is None else b
                    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
                # Zigzag's chunk pairs: (0, 1) is causally empty, the other three run.
                assert kernel.calls == (0 if name == "causal-far" else
                                        3 if sharding == "zigzag" else 1), (name, sharding)
    finally:
        dist.destroy_process_group()


def test_without_a_process_group_the_error_says_so():
    with pytest.raises(attune.AttuneError, match="torch.distributed is not initialized"):
        ring_attention(DenseKernel(SPECS["causal"]), *(torch.zeros(1, 4, 2, 8),) * 3)


def test_bad_sharding_and_kernel_are_named(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rv'}", rank=0,
                            world_size=1)
    try:
        x = torch.zeros(1, 4, 3, 8)
        kv = torch.zeros(1, 2, 3, 8)
        with pytest.raises(attune.AttuneError, match="sharding='ring'; expected one of"):
            ring_attention(DenseKernel(SPECS["causal"]), x, kv, kv, sharding="ring")
        with pytest.raises(attune.AttuneError, match="kernel must have an info dict"):
            ring_attention(lambda *a, **k: None, x, kv, kv)
        no_lse = DenseKernel(dict(SPECS["causal"], outputs=["o"]))
        with pytest.raises(attune.AttuneError, match="does not compute lse"):
            ring_attention(no_lse, x, kv, kv)
        with pytest.raises(attune.AttuneError, match="missing inputs kv_doc, q_doc"):
            ring_attention(DenseKernel(SPECS["document"]), x, kv, kv)
        with pytest.raises(attune.AttuneError, match="q_doc has shape \\[1, 2\\]; declared"):
            ring_attention(DenseKernel(SPECS["document"]), x, kv, kv,
                           q_doc=torch.zeros(1, 2, dtype=torch.int32),
                           kv_doc=torch.zeros(1, 3, dtype=torch.int32))
        with pytest.raises(attune.AttuneError, match="q, k and v hold 3, 2 and 2 tokens"):
            ring_attention(DenseKernel(SPECS["causal"]), x, kv[:, :, :2], kv[:, :, :2])
        for mask, what in (({"block_list": {"block": [2, 2], "kv_blocks": "blocks"}}, "block_list"),
                           ({"expr": "q_idx >= kv_idx"}, "reads q_idx, kv_idx")):
            spec = dict(SPECS["causal"], mask=mask)
            with pytest.raises(attune.AttuneError, match=what):
                ring_attention(DenseKernel(spec), x, kv, kv)
        # Gradients need the kernel's backward; a kernel without one is named.
        class ForwardOnly:  # the stand-in without its backward
            def __init__(self, spec):
                self.inner = DenseKernel(spec)
                self.info = self.inner.info

            def __call__(self, *args, **kwargs):
                return self.inner(*args, **kwargs)

        with pytest.raises(attune.AttuneError, match=r"k require grad, but the kernel "
                                                     r"\(ForwardOnly\) has no backward"):
            ring_attention(ForwardOnly(SPECS["causal"]), x, kv.clone().requires_grad_(), kv)
        with torch.no_grad():  # no gradient wanted: fine
            ring_attention(ForwardOnly(SPECS["causal"]), x, kv.clone().requires_grad_(), kv)
        # No second derivatives (the kernel's backward has no graph).
        xq = torch.randn(1, 4, 3, 8, requires_grad=True)
        o = ring_attention(DenseKernel(SPECS["causal"]), xq, kv + 1, kv + 2)
        (dq,) = torch.autograd.grad(o.square().sum(), xq, create_graph=True)
        with pytest.raises(RuntimeError, match="once_differentiable"):
            dq.sum().backward()
        bias = dict(SPECS["causal"],
                    inputs={"bias": {"dtype": "f32", "shape": [1, "Hq", "Sq", "Skv"]}},
                    score=[{"bias": {"tensor": "bias"}}])
        with pytest.raises(attune.AttuneError, match="over both queries and keys"):
            ring_attention(DenseKernel(bias), x, kv, kv, bias=torch.zeros(1, 4, 3, 3))
    finally:
        dist.destroy_process_group()


def test_positions_and_shard():
    assert positions(10, 1, 3, "contiguous").tolist() == [4, 5, 6]
    assert positions(10, 1, 2, "zigzag").tolist() == [3, 4, 5, 6, 7]  # chunks [3, 3, 2, 2]
    assert positions(10, 0, 2, "zigzag").tolist() == [0, 1, 2, 8, 9]
    assert positions(10, 2, 4, "striped").tolist() == [2, 6]
    assert positions(2, 3, 4, "striped").tolist() == []
    x = torch.arange(10).view(1, 10)
    assert sorted(torch.cat([attune.distributed.shard(x, r, 3, "zigzag", dim=1)
                             for r in range(3)], 1)[0].tolist()) == list(range(10))
