"""Context-parallel (ring) attention over torch.distributed, built on any Attune kernel.

    from attune.distributed import ring_attention, shard
    o = ring_attention(kernel, q, k, v, group=None, sharding="zigzag")

Every rank of `group` holds a shard of one global sequence along dim 2 of q [B, Hq, S, D],
k [B, Hkv, S, D] and v [B, Hkv, S, Dv] (q, k and v sharded alike: self-attention). The
K/V shards travel around the ring (rank r sends to r + 1, receives from r - 1) with
torch.distributed's point-to-point ops, the next shard's transfer in flight while the
kernel runs on the current one; each step's partial (o, lse) is merged into the running
result by lse (attune.merge's arithmetic, in float32). No transport of its own: gloo and
NCCL both work.

Shardings (N the global length, W the world size; `positions` gives each rank's tokens):
- "contiguous": rank r holds chunk r; the chunks may have any lengths (each rank learns
  the others' from one all_gather), so uneven N needs nothing special. `shard` cuts
  N like torch.tensor_split (the first N mod W chunks one token longer).
- "zigzag": N cut into 2W chunks like torch.tensor_split(N, 2W); rank r holds chunks r
  and 2W-1-r, concatenated in that order (causal work balanced across ranks). A rank
  holding another split is refused with the lengths expected.
- "striped": token t on rank t mod W (so rank r holds ceil((N - r) / W) tokens).
  Positions are strided, which the kernel's offsets cannot express for every mask: only
  masks made of full, causal, document, buckets and keep (under all/any/not), softcap
  and elementwise bias scores, no RoPE, are supported exactly (Striped Attention's
  diagonal shift); anything else is refused with an AttuneError naming it.

Offsets: positions are global. The query at global index t sits at P = t + q_offset, the
key at t at K = t + kv_offset, where q_offset / kv_offset are the arguments, else the
spec's, else 0: with Sq == Skv globally, bottom_right and top_left alignment agree on 0.
Each kernel call gets both offsets explicitly (never the kernel's Skv - Sq default,
which would be wrong for a shard pair).

Extra inputs (kernel.info["inputs"]): one indexed by query (declared with an "Sq"
dimension, or named as a mask's q_ids / q_buckets) is this rank's shard along that
dimension, laid out like q; one indexed by key ("Skv", or kv_ids / kv_buckets /
kv_keep) is this rank's shard laid out like k, and travels around the ring with k and v
(the same point-to-point ops, so nothing is gathered); the rest are passed unchanged to
every call. One tensor read both by query and by key (document.json's "doc" as q_ids and
kv_ids) cannot be: a step's queries and keys are different tokens, so it is refused;
declare the key ids as their own input ("kv_ids": "kv_doc", shape ["B", "Skv"]).
Tensors over both Sq and Skv (a [.., Sq, Skv] bias), raw-index masks (vertical_slash,
block_list) and expressions that read q_idx, kv_idx, seq_q or seq_kv are refused.

Skipping: a shard pair the mask cannot allow anywhere (causal: every key after every
query; sliding_window: outside the band; sinks; all/any of these) does not call the
kernel. Rows no step allows give o = 0 and lse = -inf.

Autograd: o and lse are differentiable in q, k, v and the float inputs (those that
require grad), through the kernel's `backward(q, k, v, o, lse, do, dlse=..., q_offset=...,
kv_offset=..., grads_of=..., **inputs)` (attune.Kernel.backward: on CPU tensors, today).
The backward is a second ring over the same shard pairs, offsets and skips as the
forward (Ring Attention / ring-flash-attention's scheme): the kernel's backward for one
pair, given this rank's merged o and lse, is exactly that pair's share of the gradients
(it recomputes P = exp(s - lse) of the pair, takes D = rowsum(dO o) of the whole row,
and since d lse / d s_ij = P_ij for the merged lse too, dlse passes to every pair as is).
dq adds up on this rank; dk, dv (and the grads of key-indexed inputs) add up in
accumulators that travel around the ring with the K/V shards, each transfer in flight
during the next step's kernel calls, so that every rank ends with the whole gradient of
its own K/V shard (from every rank's queries). Every rank must run the backward (it is
a collective), and the ranks must agree on what requires grad (checked). Gradients:
- query-indexed inputs: this rank's shard's gradient, like dq;
- key-indexed inputs: like dk, summed over every rank's queries;
- replicated inputs (a T5 table, FIRE's weights): this rank's queries' share. Each rank
  holds its own copy, which only its own kernel calls read, so its share is exactly the
  gradient of the group's loss with respect to that copy; the whole gradient is the sum
  over the group (dist.all_reduce(t.grad), or the gradient reduction a data/context-
  parallel wrapper runs anyway, as it must for the projection weights that make q, k and
  v). Summing here as well would count it W times under such a wrapper.
No second derivatives (the kernel's backward has no graph of its own).

Errors: each rank checks its arguments before the first collective and the ranks then
exchange one flag, so a bad argument on one rank raises an AttuneError on every rank
(no rank is left waiting in the ring). A kernel call that raises (forward or backward)
on one rank stops that rank's computing, not its relaying: the ring completes, one
all_gather of flags follows, and every rank raises (the failing one its own exception).
"""

import collections
import math

import torch
import torch.distributed as dist
from torch.autograd.function import once_differentiable

from ._capi import AttuneError
from .merge import _combine
from ._ring_spec import _analyse, _may_attend

SHARDINGS = ("contiguous", "zigzag", "striped")

# A run of this rank's tokens: local indices [start, start + length) hold the global
# tokens pos, pos + stride, ... (stride 1, or W for striped).
_Seg = collections.namedtuple("_Seg", "start length pos stride")

_DTYPE_CODES = {d: i + 1 for i, d in enumerate((
    torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32,
    torch.int16, torch.int8, torch.uint8, torch.bool))}


def _ceil_div(a, b):
    return -((-a) // b)


def zigzag_chunks(n, world_size):
    """The 2W chunk lengths of a global length n, as torch.tensor_split(n, 2W) cuts."""
    parts = 2 * world_size
    return [n // parts + (1 if c < n % parts else 0) for c in range(parts)]


def _layout(lengths, sharding):
    """Each rank's segments, from every rank's token count; AttuneError when the counts
    are not a layout of `sharding`."""
    W = len(lengths)
    N = sum(lengths)
    if sharding == "contiguous":
        out, start = [], 0
        for n in lengths:
            out.append([_Seg(0, n, start, 1)])
            start += n
        return out
    if sharding == "zigzag":
        sizes = zigzag_chunks(N, W)
        starts = [sum(sizes[:c]) for c in range(2 * W)]
        want = [sizes[r] + sizes[2 * W - 1 - r] for r in range(W)]
        if list(lengths) != want:
            raise AttuneError(
                f"attune.ring_attention: sharding='zigzag' with ranks holding {list(lengths)} "
                f"tokens (N = {N}); zigzag cuts N into {2 * W} chunks like "
                f"torch.tensor_split, so the ranks must hold {want} (attune.distributed.shard "
                "cuts a global tensor so)"
            )
        return [[_Seg(0, sizes[r], starts[r], 1),
                 _Seg(sizes[r], sizes[2 * W - 1 - r], starts[2 * W - 1 - r], 1)]
                for r in range(W)]
    want = [_ceil_div(N - r, W) for r in range(W)]
    if list(lengths) != want:
        raise AttuneError(
            f"attune.ring_attention: sharding='striped' with ranks holding {list(lengths)} "
            f"tokens (N = {N}); token t lives on rank t mod {W}, so the ranks must hold {want}"
        )
    return [[_Seg(0, lengths[r], r, W)] for r in range(W)]


def positions(n, rank, world_size, sharding="contiguous"):
    """The global token indices (int64, in local order) that `rank` holds of a sequence
    of n tokens under `sharding` (contiguous: tensor_split's chunks)."""
    _check_sharding(sharding)
    if sharding == "contiguous":
        sizes = [n // world_size + (1 if c < n % world_size else 0) for c in range(world_size)]
        start = sum(sizes[:rank])
        return torch.arange(start, start + sizes[rank], dtype=torch.int64)
    if sharding == "striped":
        return torch.arange(rank, max(n, rank), world_size, dtype=torch.int64)
    sizes = zigzag_chunks(n, world_size)
    out = []
    for c in (rank, 2 * world_size - 1 - rank):
        start = sum(sizes[:c])
        out.append(torch.arange(start, start + sizes[c], dtype=torch.int64))
    return torch.cat(out)


def shard(x, rank, world_size, sharding="contiguous", dim=2):
    """`rank`'s shard of a global tensor x along `dim` (2: the sequence of [B, H, S, D];
    use 1 for ids [B, S]), in the layout ring_attention expects."""
    idx = positions(x.shape[dim], rank, world_size, sharding).to(x.device)
    return x.index_select(dim, idx)


def _check_sharding(sharding):
    if sharding not in SHARDINGS:
        raise AttuneError(
            f"attune.ring_attention: sharding={sharding!r}; expected one of "
            f"{', '.join(SHARDINGS)}"
        )


# --------------------------------------------------------------------------------------
# The ring
# --------------------------------------------------------------------------------------

def _global_rank(group, rank):
    if group is None or group is dist.GroupMember.WORLD:
        return rank
    if hasattr(dist, "get_global_rank"):
        return dist.get_global_rank(group, rank)
    return dist.distributed_c10d._get_global_rank(group, rank)


def _kernel_info(kernel):
    info = getattr(kernel, "info", None)
    if not isinstance(info, dict) or not isinstance(info.get("spec"), dict):
        raise AttuneError(
            "attune.ring_attention: kernel must have an info dict with the spec (an "
            f"attune.Kernel), got {type(kernel).__name__}")
    spec = info["spec"]
    if "lse" not in info.get("outputs", spec.get("outputs", ["o"])):
        raise AttuneError(
            f"attune.ring_attention: the kernel ({spec.get('name', '?')}) does not compute lse "
            "(outputs " f"{info.get('outputs', spec.get('outputs'))}); ring attention merges "
            "the steps by it: add \"lse\" to the spec's outputs and recompile")
    if "inputs" in info:
        declared = {i["name"]: list(i["shape"]) for i in info["inputs"]}
    else:
        declared = {n: list(d["shape"]) for n, d in spec.get("inputs", {}).items()}
    return info, spec, declared


def _local_checks(kernel, q, k, v, sharding, inputs, world_size):
    """Everything this rank can check alone: (spec, roles, global offsets)."""
    _check_sharding(sharding)
    info, spec, declared = _kernel_info(kernel)
    roles = _analyse(spec, sharding, declared)
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise AttuneError(f"attune.ring_attention: {name} must be a torch.Tensor, got "
                              f"{type(t).__name__}")
        if t.dim() != 4:
            raise AttuneError(f"attune.ring_attention: {name} has shape {list(t.shape)}; "
                              "expected [B, H, S, D] (this rank's shard along S)")
        if t.device != q.device:
            raise AttuneError(f"attune.ring_attention: {name} is on {t.device} but q is on "
                              f"{q.device}")
    if not (q.shape[2] == k.shape[2] == v.shape[2]):
        raise AttuneError(
            f"attune.ring_attention: q, k and v hold {q.shape[2]}, {k.shape[2]} and "
            f"{v.shape[2]} tokens; ring attention is self-attention over one sharded "
            "sequence, so every rank's q, k and v shards hold the same tokens")
    if k.shape[:2] != v.shape[:2] or q.shape[0] != k.shape[0]:
        raise AttuneError(
            f"attune.ring_attention: q {list(q.shape)}, k {list(k.shape)}, v {list(v.shape)} "
            "disagree on the batch or the kv heads")
    unknown = sorted(set(inputs) - set(declared))
    missing = sorted(set(declared) - set(inputs))
    if unknown or missing:
        raise AttuneError(
            "attune.ring_attention: "
            + (f"unknown inputs {', '.join(unknown)}; " if unknown else "")
            + (f"missing inputs {', '.join(missing)}; " if missing else "")
            + f"this kernel's extra inputs are: {', '.join(declared) or 'none'}")
    n = q.shape[2]
    for name, (role, axis) in roles.items():
        t = inputs[name]
        if not isinstance(t, torch.Tensor):
            raise AttuneError(f"attune.ring_attention: {name} must be a torch.Tensor, got "
                              f"{type(t).__name__}")
        if t.device != q.device:
            raise AttuneError(f"attune.ring_attention: {name} is on {t.device} but q is on "
                              f"{q.device}")
        if role != "rep" and (t.dim() != len(declared[name]) or t.shape[axis] != n):
            raise AttuneError(
                f"attune.ring_attention: {name} has shape {list(t.shape)}; declared "
                f"{declared[name]}, it must hold this rank's {n} tokens along dimension "
                f"{axis} (laid out like {'q' if role == 'q' else 'k'})")
    # What needs a gradient: q, k, v, then the declared inputs in order (only float
    # tensors can require grad). Every rank must agree (checked in _exchange_meta): the
    # backward is a second ring, which every rank joins with the same accumulators.
    wants = [torch.is_grad_enabled() and t.requires_grad
             for t in [q, k, v] + [inputs[nm] for nm in declared]]
    if any(wants) and not callable(getattr(kernel, "backward", None)):
        raise AttuneError(
            "attune.ring_attention: "
            + ", ".join(nm for nm, w in zip(["q", "k", "v"] + list(declared), wants) if w)
            + f" require grad, but the kernel ({type(kernel).__name__}) has no backward("
            "q, k, v, o, lse, do, ...) (attune.Kernel's), which the ring's backward pass "
            "calls per shard pair; detach them or run under torch.no_grad()")

    def offset(key, given):
        if given is not None:
            return int(given)
        value = info.get(key, spec.get(key))
        return 0 if value is None else int(value)

    return spec, roles, offset, wants


def _flag_device(group, t):
    """Where a group's small bookkeeping tensors live: NCCL takes CUDA tensors only."""
    if dist.get_backend(group) == "nccl":
        if isinstance(t, torch.Tensor) and t.device.type == "cuda":
            return t.device
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _exchange_meta(q, k, v, travel, wants, names, problem, group, W):
    """All ranks' token counts, after checking (one all_gather) that every rank passed
    its checks, that the shards agree on everything but their length and that the
    ranks agree on what requires grad."""
    sig = 0
    grad_bits = 0
    if problem is None:
        # q's dtype too: a kernel refusing it then refuses on every rank at step 0.
        sig = _DTYPE_CODES.get(q.dtype, 99)
        # Shape (less the sequence axis) and dtype of everything that travels: the
        # receivers size their buffers from their own tensors and the senders' lengths.
        for t, axis in [(k, 2), (v, 2)] + travel:
            for a, d in enumerate(t.shape):
                sig = (sig * 1000003 + (int(d) if a != axis else 7)) % (1 << 61)
            sig = (sig * 1000003 + _DTYPE_CODES.get(t.dtype, 99)) % (1 << 61)
        # One bit per tensor (q, k, v, the inputs): kernels have a handful of inputs.
        grad_bits = sum(1 << i for i, w in enumerate(wants) if w) % (1 << 62)
    if problem is not None:
        row = [1, 0, 0, 0, 0, 0, 0]
    else:
        row = [0, q.shape[0], q.shape[1], k.shape[1], k.shape[3], v.shape[3], q.shape[2]]
    row += [sig, grad_bits]
    mine = torch.tensor(row, dtype=torch.int64,
                        device=_flag_device(group, q if problem is None else None))
    rows = [torch.empty_like(mine) for _ in range(W)]
    dist.all_gather(rows, mine, group=group)
    table = torch.stack(rows).cpu().tolist()
    if problem is not None:
        raise problem
    bad = [r for r, row in enumerate(table) if row[0]]
    if bad:
        raise AttuneError(
            f"attune.ring_attention: rank{'s' if len(bad) > 1 else ''} "
            f"{', '.join(map(str, bad))} of the group refused its arguments (its AttuneError "
            "says why); nothing was computed")
    for r, row in enumerate(table):
        if row[1:6] != table[0][1:6] or row[7] != table[0][7]:
            raise AttuneError(
                f"attune.ring_attention: rank {r} has [B, Hq, Hkv, D, Dv] = {row[1:6]}, rank 0 "
                f"{table[0][1:6]} (or their k, v or travelling inputs differ in shape or "
                "dtype); every rank's shards must differ only in their length")
    labels = ["q", "k", "v"] + list(names)

    def needing(bits):
        return ", ".join(n for i, n in enumerate(labels) if bits >> i & 1) or "nothing"

    for r, row in enumerate(table):
        if row[8] != table[0][8]:
            raise AttuneError(
                f"attune.ring_attention: rank {r} wants gradients of {needing(row[8])}, rank 0 "
                f"of {needing(table[0][8])} (requires_grad under grad mode); the backward is "
                "a second ring that every rank joins with the same gradients, so the ranks "
                "must agree")
    return [row[6] for row in table]


def _agree(problem, group, W, device, what):
    """Raises on every rank when any rank's kernel call failed (`problem`: its exception
    or None). A rank that fails keeps relaying its shards to the end of the ring, so the
    others are not left waiting; one all_gather then tells every rank."""
    mine = torch.tensor([0 if problem is None else 1], dtype=torch.int64, device=device)
    flags = [torch.empty_like(mine) for _ in range(W)]
    dist.all_gather(flags, mine, group=group)
    if problem is not None:
        raise problem
    bad = [r for r, f in enumerate(flags) if int(f.item())]
    if bad:
        raise AttuneError(
            f"attune.ring_attention: the kernel's {what} failed on rank"
            f"{'s' if len(bad) > 1 else ''} {', '.join(map(str, bad))} of the group (its "
            "exception says why); the ring completed, but this rank's result is incomplete")


class _Plan:
    """What the forward and backward rings share: the peers, every rank's layout, the
    kernel calls of each step (the same shard pairs, offsets and skips in both passes)
    and the transfers."""

    def __init__(self, kernel, group, W, r, lengths, segs, mask, gq0, gkv0, roles, names,
                 device):
        self.kernel, self.group, self.W, self.r = kernel, group, W, r
        self.lengths, self.segs, self.mask = lengths, segs, mask
        self.gq0, self.gkv0, self.roles, self.names = gq0, gkv0, roles, names
        self.travel = [n for n in names if roles[n][0] == "kv"]
        self.nxt = _global_rank(group, (r + 1) % W)
        self.prv = _global_rank(group, (r - 1) % W)
        self.flag_device = device

    def pairs(self, step):
        """(src, calls): the rank whose K/V shard this rank holds at `step`, and the
        kernel calls on it, (query segment index, query segment, key segment, q_offset,
        kv_offset) each, the shard pairs the mask cannot allow anywhere left out."""
        W, r = self.W, self.r
        src = (r - step) % W
        calls = []
        for qi, qs in enumerate(self.segs[r]):
            for ks in self.segs[src]:
                if qs.length == 0 or ks.length == 0:
                    continue
                pmin = self.gq0 + qs.pos
                pmax = pmin + qs.stride * (qs.length - 1)
                kmin = self.gkv0 + ks.pos
                kmax = kmin + ks.stride * (ks.length - 1)
                if not _may_attend(self.mask, pmin, pmax, kmin, kmax):
                    continue
                if qs.stride == 1:
                    qo, ko = pmin, kmin
                else:
                    # Striped: P - K = W (i - j) + (pmin - kmin), so d >= 0 exactly when
                    # i - j >= t = ceil((kmin - pmin) / W): a causal mask with a diagonal
                    # shift t in local indices (0 or 1 with equal offsets).
                    t_shift = _ceil_div(kmin - pmin, W)
                    qo, ko = max(0, -t_shift), max(0, t_shift)
                calls.append((qi, qs, ks, qo, ko))
        return src, calls

    def shift(self, tensors, axes, n_in, tag):
        """Posts the send of `tensors` to the next rank and the receive of the previous
        rank's (the same shapes with n_in along each axis); (works, receive buffers).
        Each tensor has its own tag, so transfers in flight together cannot cross."""
        bufs, ops = [], []
        for i, (t, ax) in enumerate(zip(tensors, axes)):
            shape = list(t.shape)
            shape[ax] = n_in
            buf = torch.empty(shape, dtype=t.dtype, device=t.device)
            bufs.append(buf)
            # Both ends know every length, so they agree on skipping empty tensors.
            if t.numel():
                ops.append(dist.P2POp(dist.isend, t, self.nxt, self.group, tag + i))
            if buf.numel():
                ops.append(dist.P2POp(dist.irecv, buf, self.prv, self.group, tag + i))
        return (dist.batch_isend_irecv(ops) if ops else []), bufs

    def sliced(self, inputs, kv_inputs, qs, ks):
        out = {}
        for name, (role, axis) in self.roles.items():
            if role == "q":
                out[name] = inputs[name].narrow(axis, qs.start, qs.length)
            elif role == "kv":
                out[name] = kv_inputs[name].narrow(axis, ks.start, ks.length)
            else:
                out[name] = inputs[name]
        return out

    # ----------------------------------------------------------------------------------
    def forward(self, q, k, v, inputs):
        W, r, segs = self.W, self.r, self.segs
        B, Hq, Dv = q.shape[0], q.shape[1], v.shape[3]
        # The travelling tensors, contiguous (the p2p ops need it); their sequence axes.
        cur = [k.contiguous(), v.contiguous()] + [inputs[n].contiguous() for n in self.travel]
        axes = [2, 2] + [self.roles[n][1] for n in self.travel]
        acc = [None] * len(segs[r])
        out_dtype = None
        failed = None
        for step in range(W):
            src, calls = self.pairs(step)
            works, incoming = [], None
            if step < W - 1:
                # The next shard's transfer is posted before this step's kernel calls.
                works, incoming = self.shift(cur, axes, self.lengths[(r - step - 1) % W], 0)
            kc, vc = cur[0], cur[1]
            kv_in = dict(zip(self.travel, cur[2:]))
            for qi, qs, ks, qo, ko in (calls if failed is None else []):
                try:
                    o_part, lse_part = self.kernel(
                        q.narrow(2, qs.start, qs.length), kc.narrow(2, ks.start, ks.length),
                        vc.narrow(2, ks.start, ks.length), q_offset=qo, kv_offset=ko,
                        return_lse=True, **self.sliced(inputs, kv_in, qs, ks))
                except Exception as e:  # noqa: BLE001 (re-raised by _agree)
                    failed = e
                    break
                out_dtype = out_dtype or o_part.dtype
                # The running result stays in float32 (float64) between steps: rounding
                # it to bf16 after every step would lose what the later steps add.
                acc[qi] = (o_part, lse_part) if acc[qi] is None else _combine(
                    [acc[qi][0], o_part], [acc[qi][1], lse_part])
            for w in works:
                w.wait()
            if incoming is not None:
                cur = incoming
        if W > 1:
            _agree(failed, self.group, W, self.flag_device, "forward")
        elif failed is not None:
            raise failed

        out_dtype = out_dtype or q.dtype
        os, lses = [], []
        for qs, part in zip(segs[r], acc):
            if part is None:  # no step allowed any key: o = 0, lse = -inf
                os.append(q.new_zeros((B, Hq, qs.length, Dv), dtype=out_dtype))
                lses.append(torch.full((B, Hq, qs.length), -math.inf, dtype=torch.float32,
                                       device=q.device))
            else:
                os.append(part[0].to(out_dtype))
                lses.append(part[1])
        lse_dtype = next((t.dtype for t, p in zip(lses, acc) if p is not None), torch.float32)
        o = torch.cat(os, dim=2) if len(os) > 1 else os[0]
        lse = torch.cat([t.to(lse_dtype) for t in lses], dim=2) if len(lses) > 1 else lses[0]
        return o, lse

    # ----------------------------------------------------------------------------------
    def backward(self, q, k, v, o, lse, do, dlse, inputs, needs):
        """(dq, dk, dv, {input: grad}) of this rank's tensors, None where `needs` (q, k,
        v, then the inputs in order) says no gradient is wanted.

        The second ring: at each step this rank holds a K/V shard (the forward's
        order) and that shard's gradient accumulators (dk, dv, the grads of travelling
        float inputs), which arrived from the previous rank with everything the ranks
        before added. The kernel's backward for each of the step's shard pairs, given
        this rank's merged o and lse, is exactly that pair's share (P = exp(s - lse)
        restricted to the pair; D = rowsum(dO o) and dlse are the whole row's): dq and
        the query-side grads add up here, the key-side ones into the accumulators,
        which go on to the next rank. After W steps (and one last transfer) every rank
        holds its own shard's dk and dv, summed over every rank's queries."""
        W, r, lengths = self.W, self.r, self.lengths
        need_q, need_k, need_v = needs[:3]
        need_in = [n for n, w in zip(self.names, needs[3:]) if w]
        cdt = torch.float64 if torch.float64 in (q.dtype, k.dtype, v.dtype) else torch.float32
        if do is None:
            do = torch.zeros_like(o)
        cur = [k.contiguous(), v.contiguous()] + [inputs[n].contiguous() for n in self.travel]
        axes = [2, 2] + [self.roles[n][1] for n in self.travel]
        # The travelling accumulators: dk, dv and the grads of key-indexed float inputs.
        acc_names = (["k"] if need_k else []) + (["v"] if need_v else []) + [
            n for n in self.travel if n in need_in]
        like = dict(inputs, k=k, v=v)
        acc_axes = [2 if n in ("k", "v") else self.roles[n][1] for n in acc_names]

        def zeros(n, length):
            shape = list(like[n].shape)
            shape[acc_axes[acc_names.index(n)]] = length
            return torch.zeros(shape, dtype=cdt, device=q.device)

        dq = torch.zeros(q.shape, dtype=cdt, device=q.device)
        # Query-indexed and replicated float inputs: their grads stay on this rank.
        local = {n: torch.zeros(inputs[n].shape, dtype=cdt, device=q.device)
                 for n in need_in if self.roles[n][0] != "kv"}
        rows = []  # q, o, lse, dO, dlse of each query segment, contiguous (cut once)
        for qs in self.segs[r]:
            def cut(t, qs=qs):
                return None if t is None else t.narrow(2, qs.start, qs.length).contiguous()
            rows.append((q.narrow(2, qs.start, qs.length), cut(o), cut(lse), cut(do),
                         cut(dlse)))
        failed = None
        acc = recv = None
        works_acc = []
        for step in range(W):
            src, calls = self.pairs(step)
            works_kv, incoming = [], None
            if step < W - 1:
                works_kv, incoming = self.shift(cur, axes, lengths[(r - step - 1) % W], 0)
            kc, vc = cur[0], cur[1]
            kv_in = dict(zip(self.travel, cur[2:]))
            block = None  # this rank's share of the step shard's accumulators
            for qi, qs, ks, qo, ko in (calls if failed is None else []):
                qn, on, lsen, don, dlsen = rows[qi]
                try:
                    dq_p, dk_p, dv_p, grads = self.kernel.backward(
                        qn, kc.narrow(2, ks.start, ks.length), vc.narrow(2, ks.start, ks.length),
                        on, lsen, don, dlse=dlsen, q_offset=qo, kv_offset=ko,
                        grads_of=tuple(need_in), **self.sliced(inputs, kv_in, qs, ks))
                except Exception as e:  # noqa: BLE001 (re-raised by _agree)
                    failed = e
                    break
                dq.narrow(2, qs.start, qs.length).add_(dq_p)
                if block is None:
                    block = [zeros(n, lengths[src]) for n in acc_names]
                for buf, n, ax in zip(block, acc_names, acc_axes):
                    part = dk_p if n == "k" else dv_p if n == "v" else grads[n]
                    buf.narrow(ax, ks.start, ks.length).add_(part)
                for n, buf in local.items():
                    role, ax = self.roles[n]
                    (buf.narrow(ax, qs.start, qs.length) if role == "q" else buf).add_(grads[n])
            if acc_names:
                if step == 0:
                    acc = block if block is not None else [zeros(n, lengths[src])
                                                           for n in acc_names]
                else:
                    # The accumulators of the shard held now, sent by the previous rank
                    # at the end of its step (in flight during this step's kernel calls).
                    for w in works_acc:
                        w.wait()
                    acc = recv if block is None else [a.add_(b) for a, b in zip(recv, block)]
                if W > 1:
                    works_acc, recv = self.shift(acc, acc_axes,
                                                 lengths[(r - step - 1) % W], len(cur))
            for w in works_kv:
                w.wait()
            if incoming is not None:
                cur = incoming
        if acc_names and W > 1:
            for w in works_acc:  # the last transfer brings this rank's own shard's
                w.wait()
            acc = recv
        if W > 1:
            _agree(failed, self.group, W, self.flag_device, "backward")
        elif failed is not None:
            raise failed
        own = dict(zip(acc_names, acc or []))
        grads = {n: (own[n] if n in own else local[n]).to(inputs[n].dtype) for n in need_in}
        return (dq.to(q.dtype) if need_q else None,
                own["k"].to(k.dtype) if need_k else None,
                own["v"].to(v.dtype) if need_v else None,
                grads)


class _RingAttention(torch.autograd.Function):
    """The ring in autograd: the forward ring saves q, k, v, the extra inputs and the
    merged o and lse; the backward is the second ring of _Plan.backward."""

    @staticmethod
    def forward(ctx, plan, q, k, v, *extras):
        o, lse = plan.forward(q, k, v, dict(zip(plan.names, extras)))
        ctx.plan = plan
        ctx.save_for_backward(q, k, v, o, lse, *extras)
        ctx.set_materialize_grads(False)  # None (not zeros) for an unused o or lse
        return o, lse

    @staticmethod
    @once_differentiable  # the kernel's backward has no graph: no second derivatives
    def backward(ctx, do, dlse):
        plan = ctx.plan
        q, k, v, o, lse, *extras = ctx.saved_tensors
        dq, dk, dv, grads = plan.backward(q, k, v, o, lse, do, dlse,
                                          dict(zip(plan.names, extras)),
                                          ctx.needs_input_grad[1:])
        return (None, dq, dk, dv, *[grads.get(n) for n in plan.names])


def ring_attention(kernel, q, k, v, group=None, sharding="contiguous", return_lse=False,
                   q_offset=None, kv_offset=None, **inputs):
    """This rank's attention output over the whole sharded sequence (see the module's
    documentation for the shardings, offsets, inputs, gradients and what is refused).

    kernel: an attune.Kernel (or anything with its `info`, call signature and, for
    gradients, `backward`) whose outputs include lse. q [B, Hq, n, D], k [B, Hkv, n, D],
    v [B, Hkv, n, Dv]: this rank's shard. group: a torch.distributed process group
    (default: the world). q_offset / kv_offset: the positions of the global sequence's
    first query / key (default the spec's, else 0). inputs: the kernel's extra inputs,
    query- and key-indexed ones as this rank's shard. Returns o [B, Hq, n, Dv] in the
    kernel's output dtype, and lse [B, Hq, n] (float32 from an attune.Kernel) when
    return_lse. Differentiable in q, k, v and the float inputs: every rank of the group
    must then run the backward (it is a second ring).
    """
    if not dist.is_available() or not dist.is_initialized():
        raise AttuneError("attune.ring_attention: torch.distributed is not initialized; call "
                          "torch.distributed.init_process_group first")
    W = dist.get_world_size(group)
    r = dist.get_rank(group)
    if r < 0:
        raise AttuneError("attune.ring_attention: this process is not a member of `group`")
    problem = spec = roles = wants = None
    names = []
    try:
        _, _, declared = _kernel_info(kernel)
        names = list(declared)
        spec, roles, offset, wants = _local_checks(kernel, q, k, v, sharding, inputs, W)
        gq0 = offset("q_offset", q_offset)
        gkv0 = offset("kv_offset", kv_offset)
    except AttuneError as e:  # reported after every rank has said whether it passed
        problem = e
    travel_names = [] if roles is None else [n for n, (role, _) in roles.items() if role == "kv"]
    lengths = _exchange_meta(
        q, k, v, [(inputs[n], roles[n][1]) for n in travel_names], wants, names, problem,
        group, W)
    plan = _Plan(kernel, group, W, r, lengths, _layout(lengths, sharding),
                 spec.get("mask", {"full": {}}), gq0, gkv0, roles, names,
                 _flag_device(group, q))
    o, lse = _RingAttention.apply(plan, q, k, v, *[inputs[n] for n in names])
    return (o, lse) if return_lse else o
