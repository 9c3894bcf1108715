"""What a spec allows under each ring sharding (attune.distributed): which masks,
scores and expressions a shard pair's offsets express exactly, how each extra input is
sharded (by query tokens, by key tokens, or replicated), and whether a shard pair can
attend at all (the step skip). Pure functions of the spec: no torch.distributed here.
"""

import re

from ._capi import AttuneError

# Masks whose value depends on the tokens only through their positions P and K: the
# offsets place a shard pair exactly (contiguous and zigzag shardings).
_POSITION_MASKS = {
    "full", "causal", "sliding_window", "dilated_window", "sinks", "global_tokens",
    "prefix_lm", "strided", "fixed", "dilated_segments", "shifted_groups",
}
# Masks reading tensors elementwise by the raw indices (b, h, i) and (b, h, j): exact on
# any sharding once the tensors are sliced like the tokens.
_INDEX_MASKS = {"document": (("q_ids", "q"), ("kv_ids", "kv")),
                "buckets": (("q_buckets", "q"), ("kv_buckets", "kv")),
                "keep": (("kv_keep", "kv"),)}
_STRIPED_MASKS = {"full", "causal"} | set(_INDEX_MASKS)
_POSITION_SCORES = {"alibi", "t5_bias", "fire", "kerple_log", "log_length_scale"}
# Expression variables that are local to a kernel call, not global.
_LOCAL_VARS = ("q_idx", "kv_idx", "seq_q", "seq_kv")


# --------------------------------------------------------------------------------------
# What the spec allows, and how each extra input is sharded
# --------------------------------------------------------------------------------------

def _refuse(what, sharding, why):
    return AttuneError(f"attune.ring_attention: {what} with sharding={sharding!r}: {why}")


def _expr_names(text):
    return set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))


def _walk_mask(node, sharding, usage, declared):
    if not isinstance(node, dict) or len(node) != 1:
        raise AttuneError(f"attune.ring_attention: cannot read the spec's mask node {node!r}")
    (key, val), = node.items()
    if key in ("all", "any"):
        for m in val:
            _walk_mask(m, sharding, usage, declared)
        return
    if key == "not":
        _walk_mask(val, sharding, usage, declared)
        return
    if sharding == "striped" and key not in _STRIPED_MASKS:
        raise _refuse(
            f"mask {key!r}", sharding,
            "striped positions (P = r + W i) turn only causal, full and index-tensor masks "
            "into a kernel call (a diagonal shift); use sharding='zigzag' or 'contiguous'")
    if key in _INDEX_MASKS:
        fields = _INDEX_MASKS[key]
        for field, role in fields:
            name = val.get(field)
            if name is None and field == "kv_ids":
                name = val.get("q_ids")  # kv_ids defaults to q_ids (self-attention)
            if name is not None:
                usage.setdefault(name, set()).add(role)
        return
    if key == "prefix_lm":
        if isinstance(val.get("prefix"), str):
            usage.setdefault(val["prefix"], set()).add("rep")
        return
    if key in _POSITION_MASKS:
        return
    if key == "expr":
        _check_expr(val, "mask", sharding, usage, declared)
        return
    if key in ("vertical_slash", "block_list"):
        raise _refuse(
            f"mask {key!r}", sharding,
            "its tensors hold raw key indices (columns, blocks) of the whole sequence, "
            "which no shard's kernel call can read")
    raise _refuse(f"mask {key!r}", sharding, "ring attention does not know this mask")


def _check_expr(text, where, sharding, usage, declared):
    names = _expr_names(text)
    if sharding == "striped":
        raise _refuse(f"{where} expression {text!r}", sharding,
                      "an expression may read positions, which striped sharding cannot give")
    local = [n for n in _LOCAL_VARS if n in names]
    if local:
        raise _refuse(f"{where} expression {text!r}", sharding,
                      f"it reads {', '.join(local)}, which are per-call (shard) values, "
                      "not the global sequence's; write it with q and kv (positions)")
    for n in names & set(declared):
        usage.setdefault(n, set()).add("expr")


def _analyse(spec, sharding, declared):
    """The role of each declared input ('q', 'kv' or 'rep') and its sequence axis, or
    AttuneError naming what cannot be sharded."""
    norm = spec.get("normalizer", "softmax")
    norm_name = next(iter(norm)) if isinstance(norm, dict) else norm
    if norm_name != "softmax":
        raise _refuse(f"normalizer {norm_name!r}", sharding,
                      "ring attention merges the steps by lse, which only softmax has")
    usage = {}
    _walk_mask(spec.get("mask", {"full": {}}), sharding, usage, declared)
    for node in spec.get("score", []):
        (key, val), = node.items()
        if key == "softcap":
            continue
        if key == "bias":
            usage.setdefault(val["tensor"], set()).add("score")
            continue
        if key == "expr":
            _check_expr(val, "score", sharding, usage, declared)
            continue
        if key in _POSITION_SCORES:
            if sharding == "striped":
                raise _refuse(f"score {key!r}", sharding,
                              "it reads positions, which striped sharding cannot give a "
                              "kernel call")
            for field in ("table", "w1", "b1", "w2", "b2"):
                if isinstance(val.get(field), str):
                    usage.setdefault(val[field], set()).add("rep")
            continue
        raise _refuse(f"score {key!r}", sharding, "ring attention does not know this transform")
    if spec.get("rope") is not None and sharding == "striped":
        raise _refuse("rope", sharding,
                      "RoPE rotates by position, which striped sharding cannot give a kernel "
                      "call; rotate q and k before sharding and compile without rope")

    roles = {}
    for name, shape in declared.items():
        dims = [d for d in shape]
        has_q, has_kv = "Sq" in dims, "Skv" in dims
        use = usage.get(name, set())
        desc = f"input {name!r} (declared [{', '.join(map(str, dims))}])"
        if has_q and has_kv:
            raise AttuneError(
                f"attune.ring_attention: {desc} is over both queries and keys; the ring "
                "shards one sequence axis per tensor (a [.., Sq, Skv] bias would also cost "
                "N^2 / W memory per rank)")
        if "q" in use and "kv" in use:
            raise AttuneError(
                f"attune.ring_attention: {desc} is read both by query and by key index; in "
                "a ring step the queries and the keys are different tokens, so one tensor "
                "cannot hold both ids. Declare the key ids as their own input (e.g. "
                "\"kv_ids\": \"kv_doc\" with shape [\"B\", \"Skv\"]) and pass this rank's "
                "shard of each")
        if "expr" in use and (has_q or has_kv):
            raise AttuneError(
                f"attune.ring_attention: {desc} is read by an expression, at indices ring "
                "attention cannot translate to a shard's")
        if "kv" in use and not has_kv:
            raise AttuneError(
                f"attune.ring_attention: {desc} holds key ids (read by j) but has no Skv "
                "dimension; declare its key dimension as \"Skv\"")
        if "q" in use and not has_q:
            raise AttuneError(
                f"attune.ring_attention: {desc} holds query ids (read by i) but has no Sq "
                "dimension; declare its query dimension as \"Sq\"")
        if has_q:
            roles[name] = ("q", dims.index("Sq"))
        elif has_kv:
            roles[name] = ("kv", dims.index("Skv"))
        else:
            roles[name] = ("rep", None)
    return roles


def _may_attend(node, pmin, pmax, kmin, kmax):
    """False only when `node` masks every pair of queries at positions in [pmin, pmax]
    and keys in [kmin, kmax]; True whenever unsure (the kernel then decides)."""
    (key, val), = node.items()
    if key == "all":
        return all(_may_attend(m, pmin, pmax, kmin, kmax) for m in val)
    if key == "any":
        return any(_may_attend(m, pmin, pmax, kmin, kmax) for m in val)
    if key == "causal":
        return pmax >= kmin  # some d = P - K >= 0
    if key == "sliding_window":
        left, right = val["left"], val.get("right", 0)
        if left != -1 and pmin - kmax > left:
            return False
        if right != -1 and pmax - kmin < -right:
            return False
        return True
    if key == "sinks":
        return kmin < val["count"]
    return True
