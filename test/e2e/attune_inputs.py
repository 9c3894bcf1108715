"""Random, meaningful inputs for any Attune spec.

Extra tensors get values that fit the pattern that reads them (sorted document ids,
-1-padded index lists, ...), found by walking the spec. Shared by the e2e tests, the
demo and the benchmarks.
"""
import json
import math
import os
import subprocess

import numpy as np


def _walk_mask(node, roles):
    if not isinstance(node, dict) or len(node) != 1:
        return
    (key, val), = node.items()
    if key in ("all", "any"):
        for sub in val:
            _walk_mask(sub, roles)
    elif key == "not":
        _walk_mask(val, roles)
    elif key == "document":
        roles[val["q_ids"]] = ("doc_ids", None)
        roles[val.get("kv_ids", val["q_ids"])] = ("doc_ids", None)
    elif key == "buckets":
        roles[val["q_buckets"]] = ("small_ints", 4)
        roles[val["kv_buckets"]] = ("small_ints", 4)
    elif key == "keep":
        roles[val["kv_keep"]] = ("small_ints", 2)
    elif key == "vertical_slash":
        roles[val["columns"]] = ("columns", None)
        roles[val["diagonals"]] = ("diagonals", None)
    elif key == "block_list":
        roles[val["kv_blocks"]] = ("block_list", tuple(val["block"]))
    elif key == "prefix_lm" and isinstance(val.get("prefix"), str):
        roles[val["prefix"]] = ("prefix", None)


def input_roles(spec):
    roles = {}
    if "mask" in spec:
        _walk_mask(spec["mask"], roles)
    return roles


def resolve_shape(spec, name, decl, sizes, rng, roles):
    shape = []
    for dim in decl["shape"]:
        if isinstance(dim, int):
            shape.append(dim)
        elif dim in sizes:
            shape.append(sizes[dim])
        else:
            role = roles.get(name, (None, None))
            if role[0] == "block_list" and len(shape) == 2:
                value = math.ceil(sizes["Sq"] / role[1][0])  # ceil(Sq / BM)
            else:
                value = int(rng.integers(1, 9))
            sizes[dim] = value
            shape.append(value)
    return shape


def make_inputs(spec, batch, seq_q, seq_kv, rng, dtype=np.float32):
    """q, k, v and every declared input of `spec`, as numpy arrays."""
    hq = spec["heads_q"]
    hkv = spec.get("heads_kv", hq)
    d = spec["head_dim"]
    dv = spec.get("head_dim_v", d)
    sizes = {"B": batch, "Hq": hq, "Hkv": hkv, "Sq": seq_q, "Skv": seq_kv, "D": d, "Dv": dv}
    q = rng.standard_normal((batch, hq, seq_q, d)).astype(dtype)
    k = rng.standard_normal((batch, hkv, seq_kv, d)).astype(dtype)
    v = rng.standard_normal((batch, hkv, seq_kv, dv)).astype(dtype)
    roles = input_roles(spec)
    inputs = {}
    for name, decl in spec.get("inputs", {}).items():
        shape = resolve_shape(spec, name, decl, sizes, rng, roles)
        role, arg = roles.get(name, (None, None))
        if decl["dtype"] == "f32":
            inputs[name] = (0.5 * rng.standard_normal(shape)).astype(np.float32)
            continue
        if role == "doc_ids":
            # Sorted ids with random document lengths along the last axis.
            n = shape[-1]
            ids = np.cumsum(rng.random(shape) < 6.0 / max(n, 1), axis=-1)
            inputs[name] = ids.astype(np.int32)
        elif role == "small_ints":
            inputs[name] = rng.integers(0, arg, size=shape).astype(np.int32)
        elif role == "columns":
            cols = rng.integers(0, max(seq_kv, 1), size=shape)  # seq_kv may be 0
            cols[rng.random(shape) < 0.3] = -1
            inputs[name] = cols.astype(np.int32)
        elif role == "diagonals":
            diags = rng.integers(0, max(seq_q, seq_kv, 1), size=shape)
            diags[..., 0] = 0
            diags[rng.random(shape) < 0.3] = -seq_kv - 1
            inputs[name] = diags.astype(np.int32)
        elif role == "block_list":
            bn = arg[1]
            nkb = max(1, math.ceil(seq_kv / bn))
            blocks = rng.integers(0, nkb, size=shape)
            blocks[rng.random(shape) < 0.3] = -1
            inputs[name] = blocks.astype(np.int32)
        elif role == "prefix":
            inputs[name] = rng.integers(0, seq_kv + 1, size=shape).astype(np.int32)
        else:
            inputs[name] = rng.integers(0, max(seq_kv, 1), size=shape).astype(np.int32)
    return q, k, v, inputs


def round_to(arr, dtype):
    """Rounds float32 values to bf16 or fp16 (round to nearest even), kept as float32,
    so that a reference and a 16-bit kernel see the same inputs."""
    a = np.asarray(arr, dtype=np.float32)
    if dtype == "fp16":
        return a.astype(np.float16).astype(np.float32)
    if dtype == "bf16":
        u = a.view(np.uint32).astype(np.uint64)
        u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16 << 16
        return u.astype(np.uint32).view(np.float32)
    return a


def load_spec(path):
    with open(path) as f:
        return json.load(f)


def run_attnc(attnc, spec_path, backend, tmp, arrays, inputs, extra):
    """`attnc run SPEC --backend BACKEND` on `arrays` (q, k, v and the extra inputs,
    saved as .npy in `tmp`); returns (o, lse or None: lse when the spec outputs it).
    With `--layout bshd` in `extra`, q, k and v are saved as [B, S, H, D] files and o
    read back from one (the arrays and the result stay [B, H, S, D])."""
    bshd = any(a == "--layout" and b == "bshd" for a, b in zip(extra, extra[1:]))
    files = {}
    for name, arr in arrays.items():
        files[name] = os.path.join(tmp, f"{name}.npy")
        np.save(files[name], arr.transpose(0, 2, 1, 3) if bshd and name in "qkv" else arr)
    out = os.path.join(tmp, f"o-{backend}.npy")
    lse = os.path.join(tmp, f"lse-{backend}.npy")
    cmd = [attnc, "run", spec_path, "--backend", backend, "--q", files["q"], "--k", files["k"],
           "--v", files["v"], "--out", out]
    for name in inputs:
        cmd += ["--input", f"{name}={files[name]}"]
    want_lse = "lse" in load_spec(spec_path).get("outputs", [])
    if want_lse:
        cmd += ["--lse", lse]
    cmd += extra
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}\n{r.stderr}")
    o = np.load(out)
    return (o.transpose(0, 2, 1, 3) if bshd else o), (np.load(lse) if want_lse else None)
