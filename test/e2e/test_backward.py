"""Gradients (`attnc run --do ...`) of every example spec on the reference and the host
back end against an independent float64 autograd: torch autograd through
dense_autograd.py (a dense implementation written from PATTERNS.md alone).

L = sum(o * dO) (+ sum(lse * dlse) where the spec outputs lse), so dq, dk, dv and the
gradient of every float input are the vector-Jacobian products the backward computes.
Tolerances: the reference (float64, written as float32) 1e-5 of each gradient's
largest magnitude; the host kernels (fp32) 1e-4. NaN never passes. Also: fully masked
rows give zero gradients, the host backward is bitwise deterministic from run to run,
and the gradient flags refuse what they should, by name."""
import glob
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, os.path.dirname(__file__))
from attune_inputs import load_spec, make_inputs  # noqa: E402
import dense_autograd as da  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ATTNC = os.environ.get("ATTNC", os.path.join(ROOT, "build", "tools", "attnc", "attnc"))
EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "specs", "examples", "*.json")))
IDS = [os.path.basename(p)[:-5] for p in EXAMPLES]


def float_inputs(spec):
    return [n for n, d in spec.get("inputs", {}).items() if d["dtype"] == "f32"]


def oracle(spec, arrays, dO, dlse, extra_offsets):
    q, k, v, ins = da.make_torch_inputs(spec, arrays)
    o, lse = da.attention(spec, q, k, v, ins, **extra_offsets)
    loss = (o * torch.tensor(dO, dtype=torch.float64)).sum()
    if dlse is not None and lse is not None:
        finite = torch.isfinite(lse)
        loss = loss + torch.where(finite, lse, torch.zeros_like(lse)).mul(
            torch.tensor(dlse, dtype=torch.float64)).sum()
    wrt = [q, k, v] + [ins[n] for n in float_inputs(spec)]
    grads = torch.autograd.grad(loss, wrt, allow_unused=True)
    out = {"dq": grads[0], "dk": grads[1], "dv": grads[2]}
    for n, g in zip(float_inputs(spec), grads[3:]):
        out["d_" + n] = g
    return {name: (np.zeros(t.shape) if g is None else g.detach().numpy())
            for (name, g), t in zip(out.items(), wrt)}


def run_backward(path, backend, tmp, arrays, spec, dO, dlse, extra=()):
    files = {}
    for name, arr in arrays.items():
        files[name] = os.path.join(tmp, f"{name}.npy")
        np.save(files[name], arr)
    np.save(os.path.join(tmp, "do.npy"), dO)
    cmd = [ATTNC, "run", path, "--backend", backend, "--q", files["q"], "--k", files["k"],
           "--v", files["v"], "--do", os.path.join(tmp, "do.npy")]
    for name in spec.get("inputs", {}):
        cmd += ["--input", f"{name}={files[name]}"]
    outs = {g: os.path.join(tmp, f"{g}-{backend}.npy") for g in ("dq", "dk", "dv")}
    for g, f in outs.items():
        cmd += [f"--{g}", f]
    for n in float_inputs(spec):
        outs["d_" + n] = os.path.join(tmp, f"d_{n}-{backend}.npy")
        cmd += ["--dinput", f"{n}={outs['d_' + n]}"]
    if dlse is not None:
        np.save(os.path.join(tmp, "dlse.npy"), dlse)
        cmd += ["--dlse", os.path.join(tmp, "dlse.npy")]
    cmd += list(extra)
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stderr}"
    return {g: np.load(f) for g, f in outs.items()}


def compare(ref, got, rel, what):
    for name, want in ref.items():
        have = got[name]
        assert have.shape == want.shape, f"{what} {name}: shape {have.shape} vs {want.shape}"
        assert not np.isnan(have).any(), f"{what} {name}: NaN"
        # A tensor gradient sums up to B*H*Sq*Skv terms and can cancel to ~0 (a bias
        # shared by a whole softmax row has gradient 0): its error is relative to the
        # terms (up to 1 here), not to the sum.
        # dq/dk/dv: a gradient that is exactly 0 (a row seeing one key: P = 1, so
        # dS = P (dP - D) = 0) comes out of fp32 as the rounding of dP - D, terms of
        # O(1): ~1e-6. Its error is relative to those terms, not to the ~0 result.
        floor = 1.0 if name.startswith("d_") else 0.1
        scale = max(float(np.abs(want).max()) if want.size else 0.0, floor)
        err = float(np.abs(have - want).max()) if want.size else 0.0
        assert err <= rel * scale, f"{what} {name}: max error {err:.3g} vs scale {scale:.3g}"


def case(spec, rng, batch, sq, skv):
    q, k, v, inputs = make_inputs(spec, batch, sq, skv, rng)
    arrays = {"q": q, "k": k, "v": v, **inputs}
    dv = spec.get("head_dim_v", spec["head_dim"])
    dO = rng.standard_normal((batch, spec["heads_q"], sq, dv)).astype(np.float32)
    wants_lse = "lse" in spec.get("outputs", [])
    dlse = (rng.standard_normal((batch, spec["heads_q"], sq)).astype(np.float32)
            if wants_lse else None)
    return arrays, dO, dlse


@pytest.mark.parametrize("path", EXAMPLES, ids=IDS)
def test_reference_gradients(path, tmp_path):
    seed = int.from_bytes(os.urandom(4), "little")
    rng = np.random.default_rng(seed)
    spec = load_spec(path)
    for batch, sq, skv in [(2, 17, 17), (1, 1, 33), (1, 40, 23)]:
        arrays, dO, dlse = case(spec, rng, batch, sq, skv)
        ref = oracle(spec, arrays, dO, dlse, {})
        got = run_backward(path, "reference", str(tmp_path), arrays, spec, dO, dlse)
        compare(ref, got, 1e-5, f"{os.path.basename(path)} seed={seed} {sq}x{skv}")


@pytest.mark.parametrize("path", EXAMPLES, ids=IDS)
def test_cpu_gradients(path, tmp_path):
    seed = int.from_bytes(os.urandom(4), "little")
    rng = np.random.default_rng(seed)
    spec = load_spec(path)
    # Several query and key blocks (16 x 16 tiles), odd lengths, seq_q != seq_kv.
    for batch, sq, skv, bm, bn in [(2, 40, 23, 16, 16), (1, 17, 50, 8, 32)]:
        arrays, dO, dlse = case(spec, rng, batch, sq, skv)
        ref = oracle(spec, arrays, dO, dlse, {})
        got = run_backward(path, "cpu", str(tmp_path), arrays, spec, dO, dlse,
                           ["--block-m", str(bm), "--block-n", str(bn)])
        compare(ref, got, 1e-4, f"{os.path.basename(path)} seed={seed} {sq}x{skv} "
                                f"tile={bm}x{bn}")


def test_offsets_and_masked_rows(tmp_path):
    """Explicit offsets leave rows with no allowed key: their gradients are 0."""
    path = os.path.join(ROOT, "specs", "examples", "mistral-swa.json")
    spec = load_spec(path)
    rng = np.random.default_rng(int.from_bytes(os.urandom(4), "little"))
    arrays, dO, dlse = case(spec, rng, 1, 30, 20)
    offsets = ["--q-offset", "-10", "--kv-offset", "0"]
    ref = oracle(spec, arrays, dO, dlse, {"q_offset": -10, "kv_offset": 0})
    for backend in ("reference", "cpu"):
        got = run_backward(path, backend, str(tmp_path), arrays, spec, dO, dlse,
                           offsets + (["--block-m", "16", "--block-n", "16"]
                                      if backend == "cpu" else []))
        compare(ref, got, 1e-4, f"{backend} offsets")
        # Query rows 0..9 sit at positions -10..-1: no key is at or before them.
        assert (got["dq"][:, :, :10] == 0).all()


def test_cpu_backward_is_deterministic(tmp_path):
    path = os.path.join(ROOT, "specs", "examples", "t5-bias.json")
    spec = load_spec(path)
    rng = np.random.default_rng(int.from_bytes(os.urandom(4), "little"))
    arrays, dO, dlse = case(spec, rng, 2, 37, 45)
    a = run_backward(path, "cpu", str(tmp_path), arrays, spec, dO, dlse,
                     ["--block-m", "16", "--block-n", "16"])
    b = run_backward(path, "cpu", str(tmp_path), arrays, spec, dO, dlse,
                     ["--block-m", "16", "--block-n", "16"])
    for name in a:
        assert a[name].tobytes() == b[name].tobytes(), name


def run_cli(args):
    return subprocess.run([ATTNC, "run"] + args, capture_output=True, text=True)


def test_gradient_flags_are_checked(tmp_path):
    path = os.path.join(ROOT, "specs", "examples", "document.json")
    spec = load_spec(path)
    rng = np.random.default_rng(0)
    arrays, dO, _ = case(spec, rng, 1, 9, 9)
    for name, arr in arrays.items():
        np.save(os.path.join(tmp_path, f"{name}.npy"), arr)
    np.save(os.path.join(tmp_path, "do.npy"), dO)
    base = [path, "--backend", "reference", "--q", str(tmp_path / "q.npy"),
            "--k", str(tmp_path / "k.npy"), "--v", str(tmp_path / "v.npy"),
            "--input", f"doc={tmp_path / 'doc.npy'}", "--do", str(tmp_path / "do.npy")]
    r = run_cli(base + ["--dinput", f"doc={tmp_path / 'd.npy'}"])
    assert r.returncode != 0 and "--dinput doc" in r.stderr and "integer input" in r.stderr
    r = run_cli(base + ["--dinput", f"nope={tmp_path / 'd.npy'}"])
    assert r.returncode != 0 and "declares no input 'nope'" in r.stderr
    r = run_cli([path, "--backend", "reference", "--q", str(tmp_path / "q.npy"),
                 "--k", str(tmp_path / "k.npy"), "--v", str(tmp_path / "v.npy"),
                 "--input", f"doc={tmp_path / 'doc.npy'}", "--dq", str(tmp_path / "x.npy"),
                 "--out", str(tmp_path / "o.npy")])
    assert r.returncode != 0 and "--dq needs --do" in r.stderr
    np.save(os.path.join(tmp_path, "bad.npy"), dO[:, :, :3])
    bad = list(base)
    bad[bad.index("--do") + 1] = str(tmp_path / "bad.npy")
    r = run_cli(bad + ["--dq", str(tmp_path / "x.npy")])
    assert r.returncode != 0 and "dO: expected" in r.stderr
    r = run_cli([a if a != "reference" else "gpu-sim" for a in base] +
                ["--dq", str(tmp_path / "x.npy")])
    assert r.returncode != 0 and "not built yet" in r.stderr


@pytest.mark.parametrize("name", ["t5-bias", "causal", "sigmoid"])
def test_empty_shapes(name, tmp_path):
    """Skv = 0 (every row fully masked), B = 0 and Sq = 0: gradients of the right
    shapes, zero where there is nothing to differentiate."""
    path = os.path.join(ROOT, "specs", "examples", f"{name}.json")
    spec = load_spec(path)
    rng = np.random.default_rng(int.from_bytes(os.urandom(4), "little"))
    for batch, sq, skv in [(1, 5, 0), (0, 4, 4), (1, 0, 6)]:
        arrays, dO, dlse = case(spec, rng, batch, sq, skv)
        ref = oracle(spec, arrays, dO, dlse, {})
        for backend, extra in [("reference", []), ("cpu", ["--block-m", "16", "--block-n", "16"])]:
            got = run_backward(path, backend, str(tmp_path), arrays, spec, dO, dlse, extra)
            compare(ref, got, 1e-4, f"{name} {backend} B={batch} Sq={sq} Skv={skv}")
            if skv == 0:
                assert not got["dq"].any()


# The key-major grid's transposed schedule (passes/TileBackward.cpp): which tiles the
# two grids of the tiled backward visit, counted by running the tiled program itself
# (attn-opt, then mlir-opt and mlir-runner) with counters added to its text.

ATTN_OPT = os.environ.get("ATTN_OPT", os.path.join(os.path.dirname(ATTNC), "..", "attn-opt",
                                                   "attn-opt"))
LLVM_BIN = "/usr/lib/llvm-22/bin"


def _tile_counters(l2):
    """The L2 backward with three counters: [0] tiles of the query-major grid (its k
    tile loads), [1] tiles of the key-major grid (its q tile loads), [2] query blocks
    the key-major grid considers (iterations of the innermost loop around its q
    load, EMPTY ones included)."""
    lines = l2.split("\n")
    grids = [i for i, line in enumerate(lines) if "attn.grid " in line]
    assert len(grids) == 2, "expected the two grids of the backward"
    k_load = next((i for i in range(grids[0], grids[1]) if "attn.load_tile %arg1[" in lines[i]), None)
    q_load = next((i for i in range(grids[1], len(lines)) if "attn.load_tile %arg0[" in lines[i]), None)
    assert k_load and q_load, "no k tile load in the first grid or q tile load in the second"
    loop = max(i for i in range(grids[1], q_load) if "scf.for " in lines[i])

    def counter(at, n):
        ind = lines[at][: len(lines[at]) - len(lines[at].lstrip())]
        return [ind + s for s in (
            f"%vc{n}_m = memref.get_global @attn_visits : memref<3xi64>",
            f"%vc{n}_i = arith.constant {n} : index",
            f"%vc{n}_v = memref.load %vc{n}_m[%vc{n}_i] : memref<3xi64>",
            f"%vc{n}_1 = arith.constant 1 : i64",
            f"%vc{n}_n = arith.addi %vc{n}_v, %vc{n}_1 : i64",
            f"memref.store %vc{n}_n, %vc{n}_m[%vc{n}_i] : memref<3xi64>")]
    inserts = {k_load: counter(k_load, 0), q_load: counter(q_load, 1),
               loop + 1: counter(loop + 1, 2)}
    out = []
    for i, line in enumerate(lines):
        out += inserts.get(i, [])
        out.append(line)
        if line.strip() == "module {":
            out.append('  memref.global "private" @attn_visits : memref<3xi64> = dense<0>')
    return "\n".join(out)


def _count_tiles(spec, batch, sq, skv, bm, bn, q_offset, kv_offset, tmp):
    """(query-major tiles, key-major tiles, key-major query blocks considered) of the
    backward of `spec` (no inputs) with q_offset and kv_offset; each below 10^6 (main
    returns them packed in one i64)."""
    def run(cmd, text):
        r = subprocess.run(cmd, input=text, capture_output=True, text=True)
        assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stderr[:2000]}"
        return r.stdout
    path = os.path.join(tmp, "spec.json")
    with open(path, "w") as f:
        f.write(__import__("json").dumps(spec))
    l1 = run([ATTNC, "import", path], None)
    l2 = run([ATTN_OPT, "-", f"-attn-to-tiled-backward=block-m={bm} block-n={bn}"], l1)
    l3 = run([ATTN_OPT, "-", "-attn-lower-kv-schedule", "-attn-lower-tiles-to-loops"],
             _tile_counters(l2))
    # main(): buffers of the sizes (their contents do not decide which tiles are
    # visited), the kernel, then the counters packed into one i64.
    sig = l3[l3.index("func.func @"):]
    name = sig[len("func.func @"):sig.index("(")]
    params, depth, cur = [], 0, ""
    for ch in sig[sig.index("(") + 1:]:
        if ch == ")" and depth == 0:
            params.append(cur)
            break
        if ch == "," and depth == 0:
            params.append(cur)
            cur = ""
            continue
        depth += ch in "<[("
        depth -= ch in ">])"
        cur += ch
    types = [p.split(":", 1)[1].strip() for p in params]
    hq, hkv = spec["heads_q"], spec.get("heads_kv", spec["heads_q"])
    # q k v o lse dO dlse dq dk dv: the key-side ones have seq_kv rows.
    seq = [sq, skv, skv, sq, sq, sq, sq, sq, skv, skv]
    body, args = [], []
    for n, t in enumerate(types):
        if t == "i64":
            body.append(f"%a{n} = arith.constant {q_offset if n == len(types) - 2 else kv_offset} : i64")
        else:
            dims = t[len("memref<"):].split(",")[0].split("x")
            elt, dims = dims[-1].rstrip(">"), dims[:-1]
            fixed = [batch, hq if n not in (1, 2, 8, 9) else hkv, seq[n], 4][:len(dims)]
            assert all(d == "?" or int(d) == f for d, f in zip(dims, fixed)), (t, fixed)
            static = "memref<" + "x".join(map(str, fixed)) + "x" + elt + ">"
            body += [f"%m{n} = memref.alloc() : {static}", f"%a{n} = memref.cast %m{n} : {static} to {t}"]
        args.append(f"%a{n}")
    main = ["func.func @main() -> i64 {"] + body + [
        f"func.call @{name}({', '.join(args)}) : ({', '.join(types)}) -> ()",
        "%g = memref.get_global @attn_visits : memref<3xi64>",
        "%c0 = arith.constant 0 : index", "%c1 = arith.constant 1 : index",
        "%c2 = arith.constant 2 : index", "%s = arith.constant 1000000 : i64",
        "%x = memref.load %g[%c0] : memref<3xi64>", "%y = memref.load %g[%c1] : memref<3xi64>",
        "%z = memref.load %g[%c2] : memref<3xi64>", "%xs = arith.muli %x, %s : i64",
        "%xy = arith.addi %xs, %y : i64", "%xys = arith.muli %xy, %s : i64",
        "%r = arith.addi %xys, %z : i64", "return %r : i64", "}"]
    module = l3.rstrip()
    module = module[:-1] + "\n".join(main) + "\n}\n"
    ll = run([os.path.join(LLVM_BIN, "mlir-opt"), "-", "--arith-expand", "--expand-strided-metadata",
              "--convert-math-to-llvm", "--convert-math-to-libm", "--convert-scf-to-cf",
              "--finalize-memref-to-llvm", "--convert-arith-to-llvm", "--convert-index-to-llvm",
              "--convert-func-to-llvm", "--convert-cf-to-llvm", "--reconcile-unrealized-casts"],
             module)
    v = int(run([os.path.join(LLVM_BIN, "mlir-runner"), "-e", "main", "-entry-point-result=i64"],
                ll).split()[-1])
    return v // 10**12, v // 10**6 % 10**6, v % 10**6


def _tiles_with_allowed_pairs(allowed, bm, bn):
    """Tiles (query block, key block) of a [sq, skv] boolean mask holding an allowed pair."""
    sq, skv = allowed.shape
    padded = np.zeros((-(-sq // bm) * bm, -(-skv // bn) * bn), dtype=bool)
    padded[:sq, :skv] = allowed
    return int(padded.reshape(padded.shape[0] // bm, bm, -1, bn).any(axis=(1, 3)).sum())


@pytest.mark.skipif(not os.path.exists(os.path.join(LLVM_BIN, "mlir-runner")),
                    reason="needs mlir-runner (LLVM 22)")
def test_transposed_schedule_visits_only_the_tiles_the_mask_allows(tmp_path):
    """Causal at 1000 x 1000 with 64 x 64 tiles: 136 of the 256 tiles per head hold an
    allowed pair; both grids visit exactly those, and the key-major grid considers
    only the query blocks of its closed-form range (not all 16 per key block). The
    same for a causal window (mistral-swa's mask) with offsets and seq_q != seq_kv."""
    heads = 2
    i = np.arange(1000)[:, None]
    j = np.arange(1000)[None, :]
    causal = {"name": "c", "heads_q": heads, "heads_kv": 1, "head_dim": 4, "dtype": "f32",
              "mask": {"causal": {}}}
    want = _tiles_with_allowed_pairs(i >= j, 64, 64)
    assert want == 136
    got = _count_tiles(causal, 1, 1000, 1000, 64, 64, 0, 0, str(tmp_path))
    assert got == (heads * want,) * 3, got
    assert abs(got[1] / (heads * 256) - 0.5) < 0.05

    window = dict(causal, mask={"all": [{"causal": {}}, {"sliding_window": {"left": 127}}]})
    sq, skv, q_off, kv_off = 700, 1000, 260, -30
    qpos = np.arange(sq)[:, None] + q_off
    kvpos = np.arange(skv)[None, :] + kv_off
    allowed = (qpos >= kvpos) & (qpos - kvpos <= 127)
    for bm, bn in [(64, 64), (32, 128)]:
        want = _tiles_with_allowed_pairs(allowed, bm, bn)
        got = _count_tiles(window, 1, sq, skv, bm, bn, q_off, kv_off, str(tmp_path))
        assert got == (heads * want,) * 3, (bm, bn, got, want)


def test_cpu_gradients_transposed_schedule(tmp_path):
    """The key-major grid's schedule where it has several query-block intervals
    (sinks and a window, global tokens and a window: overlapping and disjoint ones)
    and where it reads the transposed block list (tiles that match the list's blocks;
    entries repeated, past the last key block, and -1), with offsets and seq_q !=
    seq_kv: gradients against the float64 autograd."""
    seed = int.from_bytes(os.urandom(4), "little")
    rng = np.random.default_rng(seed)
    cases = [("streaming-llm", 300, 200, 16, 16, None), ("global-token-list", 300, 200, 16, 16, None),
             ("global-tokens", 127, 260, 8, 32, (-40, 17)), ("prefix-lm", 260, 127, 32, 8, (90, -5)),
             ("block-list", 200, 300, 32, 64, None), ("block-list", 129, 70, 64, 64, None),
             ("bigbird", 150, 190, 16, 64, None)]
    for name, sq, skv, bm, bn, offsets in cases:
        path = os.path.join(ROOT, "specs", "examples", f"{name}.json")
        spec = load_spec(path)
        arrays, dO, dlse = case(spec, rng, 2 if name == "block-list" else 1, sq, skv)
        for arr in arrays.values():
            if arr.dtype == np.int32 and arr.ndim == 4:  # a block list
                arr[rng.random(arr.shape) < 0.1] = 1000
                arr[..., -1] = arr[..., 0]
        extra = ["--block-m", str(bm), "--block-n", str(bn)]
        kwargs = {}
        if offsets:
            extra += ["--q-offset", str(offsets[0]), "--kv-offset", str(offsets[1])]
            kwargs = {"q_offset": offsets[0], "kv_offset": offsets[1]}
        ref = oracle(spec, arrays, dO, dlse, kwargs)
        got = run_backward(path, "cpu", str(tmp_path), arrays, spec, dO, dlse, extra)
        compare(ref, got, 1e-4, f"{name} seed={seed} {sq}x{skv} tile={bm}x{bn} offsets={offsets}")
