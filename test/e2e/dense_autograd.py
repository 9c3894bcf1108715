"""A dense float64 torch implementation of Attune's attention semantics.

Written from PATTERNS.md, the JSON Schema and the example specs (not from Attune's C++
reference), so that it can serve as an independent oracle: its forward pass for the
outputs, and torch autograd through it for the gradients of Attune's backward pass.
Where PATTERNS.md is silent or ambiguous it follows the written decisions in
docs/decisions.md: `right` defaults to 0; `causal.align` sets the spec's alignment; an
out-of-range read in a mask masks the pair whatever the combinators around it (`not`
included), in a score leaves that transform's input unchanged; FIRE takes psi(0) for
d < 0; log_length_scale uses log(max(P(i) + 1, 1)); YaRN is the paper's NTK-by-parts
ramp with the temperature on the rotated features of q and k; dilated_segments'
`head_offset` fixes o; shifted_groups shifts heads h >= Hq // 2 by G // 2; T5 buckets
in double, truncated (bidirectional by default); expression literals are float32
values, chained comparisons follow Python, `//` and `%` are integer-only.

    o, lse = attention(spec, q, k, v, inputs, q_offset=None, kv_offset=None)

q [B, Hq, Sq, D], k [B, Hkv, Skv, D], v [B, Hkv, Skv, Dv] are float64 tensors (possibly
requiring grad); `inputs` holds the spec's declared tensors (float ones float64, integer
ones int32/int64). o is [B, Hq, Sq, Dv]; lse is [B, Hq, Sq] (natural log, -inf on rows
with no allowed key) for the softmax normaliser and None for sigmoid and relu.

Masked pairs never enter a computation: the mask is evaluated on the dense
[B, Hq, Sq, Skv] grid, and the score transforms run on the flat list of allowed pairs
only, so neither the forward pass nor the backward pass can see a NaN from a masked pair,
and rows with no allowed key get exactly zero output and zero gradients.
"""
import math
import re
import warnings

import numpy as np
import torch

F64 = torch.float64
I64 = torch.int64


# --------------------------------------------------------------------------------------
# The expression language
# --------------------------------------------------------------------------------------

class ExprError(ValueError):
    pass


_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<float>(?:\d+\.\d*|\.\d+)(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+)
  | (?P<int>\d+)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>\|\||&&|==|!=|<=|>=|//|[-+*/%<>!(),\[\]])
""", re.VERBOSE)


def tokenize(text):
    pos, out = 0, []
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ExprError(f"unexpected character {text[pos]!r} at column {pos + 1} in {text!r}")
        kind = m.lastgroup
        if kind != "ws":
            out.append((kind, m.group(), pos))
        pos = m.end()
    out.append(("end", "", pos))
    return out


class _Parser:
    """Recursive descent, loosest first: || , && , ! , comparisons , + - , * / // % ,
    unary - , primary (literal, name, call, lookup, parentheses)."""

    def __init__(self, text):
        self.text = text
        self.toks = tokenize(text)
        self.i = 0

    def peek(self):
        return self.toks[self.i]

    def take(self, value=None):
        tok = self.toks[self.i]
        if value is not None and tok[1] != value:
            raise ExprError(f"expected {value!r} at column {tok[2] + 1} in {self.text!r}, "
                            f"got {tok[1]!r}")
        self.i += 1
        return tok

    def parse(self):
        node = self.or_()
        if self.peek()[0] != "end":
            tok = self.peek()
            raise ExprError(f"unexpected {tok[1]!r} at column {tok[2] + 1} in {self.text!r}")
        return node

    def or_(self):
        node = self.and_()
        while self.peek()[1] == "||":
            self.take()
            node = ("||", node, self.and_())
        return node

    def and_(self):
        node = self.not_()
        while self.peek()[1] == "&&":
            self.take()
            node = ("&&", node, self.not_())
        return node

    def not_(self):
        if self.peek()[1] == "!":
            self.take()
            return ("!", self.not_())
        return self.cmp()

    def cmp(self):
        # Python's chained comparisons: a < b < c is (a < b) && (b < c).
        first = self.add()
        terms, ops = [first], []
        while self.peek()[1] in ("==", "!=", "<", "<=", ">", ">="):
            ops.append(self.take()[1])
            terms.append(self.add())
        if not ops:
            return first
        node = (ops[0], terms[0], terms[1])
        for k in range(1, len(ops)):
            node = ("&&", node, (ops[k], terms[k], terms[k + 1]))
        return node

    def add(self):
        node = self.mul()
        while self.peek()[1] in ("+", "-"):
            op = self.take()[1]
            node = (op, node, self.mul())
        return node

    def mul(self):
        node = self.unary()
        while self.peek()[1] in ("*", "/", "//", "%"):
            op = self.take()[1]
            node = (op, node, self.unary())
        return node

    def unary(self):
        if self.peek()[1] == "-":
            self.take()
            return ("neg", self.unary())
        return self.primary()

    def primary(self):
        kind, val, col = self.take()
        if kind == "int":
            return ("int", int(val))
        if kind == "float":
            return ("float", float(np.float32(float(val))))  # literals are 32-bit
        if val == "(":
            node = self.or_()
            self.take(")")
            return node
        if kind == "name":
            if self.peek()[1] == "(":
                self.take()
                args = []
                if self.peek()[1] != ")":
                    args.append(self.or_())
                    while self.peek()[1] == ",":
                        self.take()
                        args.append(self.or_())
                self.take(")")
                return ("call", val, args)
            if self.peek()[1] == "[":
                self.take()
                idx = [self.or_()]
                while self.peek()[1] == ",":
                    self.take()
                    idx.append(self.or_())
                self.take("]")
                return ("lookup", val, idx)
            return ("var", val)
        raise ExprError(f"unexpected {val!r} at column {col + 1} in {self.text!r}")


def parse_expr(text):
    return _Parser(text).parse()


def _is_int(t):
    return not t.dtype.is_floating_point and t.dtype != torch.bool


def _is_bool(t):
    return t.dtype == torch.bool


def _promote(a, b):
    if _is_bool(a) or _is_bool(b):
        raise ExprError("arithmetic on a boolean")
    if a.dtype.is_floating_point or b.dtype.is_floating_point:
        return a.to(F64), b.to(F64)
    return a.to(I64), b.to(I64)


_FLOAT_FUNCS = {
    "exp": torch.exp, "log": torch.log, "log2": torch.log2, "sqrt": torch.sqrt,
    "tanh": torch.tanh, "sigmoid": torch.sigmoid, "floor": torch.floor, "ceil": torch.ceil,
}


class _Eval:
    """Evaluates a parsed expression on broadcast tensors. `oob` collects, as a boolean
    tensor, the elements where some tensor lookup fell outside its tensor's shape."""

    def __init__(self, variables, tensors):
        self.vars = variables
        self.tensors = tensors
        self.oob = None

    def __call__(self, node):
        op = node[0]
        if op == "int":
            return torch.tensor(node[1], dtype=I64)
        if op == "float":
            return torch.tensor(node[1], dtype=F64)
        if op == "var":
            name = node[1]
            if name in self.vars:
                return self.vars[name]
            if name in ("true", "false"):
                return torch.tensor(name == "true")
            raise ExprError(f"unknown name {name!r}")
        if op == "lookup":
            return self.lookup(node[1], [self(n) for n in node[2]])
        if op == "call":
            return self.call(node[1], [self(n) for n in node[2]])
        if op == "neg":
            a = self(node[1])
            if _is_bool(a):
                raise ExprError("unary - on a boolean")
            return -a
        if op == "!":
            a = self(node[1])
            if not _is_bool(a):
                raise ExprError("! needs a boolean")
            return ~a
        if op in ("&&", "||"):
            a, b = self(node[1]), self(node[2])
            if not (_is_bool(a) and _is_bool(b)):
                raise ExprError(f"{op} needs booleans")
            return (a & b) if op == "&&" else (a | b)
        a, b = self(node[1]), self(node[2])
        if op in ("==", "!="):
            if _is_bool(a) and _is_bool(b):
                return (a == b) if op == "==" else (a != b)
            a, b = _promote(a, b)
            return (a == b) if op == "==" else (a != b)
        if op in ("<", "<=", ">", ">="):
            a, b = _promote(a, b)
            return {"<": torch.lt, "<=": torch.le, ">": torch.gt, ">=": torch.ge}[op](a, b)
        a, b = _promote(a, b)
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            return a.to(F64) / b.to(F64)
        if op in ("//", "%"):
            if _is_int(a):
                zero = b == 0
                safe = torch.where(zero, torch.ones_like(b), b)
                r = (torch.div(a, safe, rounding_mode="floor") if op == "//"
                     else torch.remainder(a, safe))
                return torch.where(zero, torch.zeros_like(r), r)
            raise ExprError(f"{op} is for integers (use floor(a / b))")
        raise ExprError(f"unknown operator {op!r}")

    def call(self, name, args):
        if name in _FLOAT_FUNCS:
            if len(args) != 1 or _is_bool(args[0]):
                raise ExprError(f"{name} takes one number")
            return _FLOAT_FUNCS[name](args[0].to(F64))
        if name == "abs":
            if len(args) != 1 or _is_bool(args[0]):
                raise ExprError("abs takes one number")
            return torch.abs(args[0])
        if name in ("min", "max"):
            if len(args) < 2:
                raise ExprError(f"{name} takes two numbers")
            out = args[0]
            for other in args[1:]:
                out, other = _promote(out, other)
                out = torch.minimum(out, other) if name == "min" else torch.maximum(out, other)
            return out
        if name == "select":
            if len(args) != 3 or not _is_bool(args[0]):
                raise ExprError("select takes (boolean, a, b)")
            c, a, b = args
            if _is_bool(a) and _is_bool(b):
                return torch.where(c, a, b)
            a, b = _promote(a, b)
            return torch.where(c, a, b)
        raise ExprError(f"unknown function {name!r}")

    def lookup(self, name, idx):
        if name not in self.tensors:
            raise ExprError(f"{name!r} is not a declared tensor")
        t = self.tensors[name]
        if len(idx) != t.dim():
            raise ExprError(f"{name} has rank {t.dim()}, indexed with {len(idx)} indices")
        for x in idx:
            if not _is_int(x):
                raise ExprError(f"{name}: indices must be integers")
        value, oob = gather(t, idx)
        self.oob = oob if self.oob is None else (self.oob | oob)
        if not t.dtype.is_floating_point:
            value = value.to(I64)
        return value


def gather(t, idx, broadcast_ones=False):
    """t[idx...] elementwise over broadcast index tensors; returns (value, out_of_range),
    reading element 0 of each axis where an index is out of range. With broadcast_ones an
    axis of size 1 takes any index (numpy broadcasting)."""
    idx = torch.broadcast_tensors(*[torch.as_tensor(x, dtype=I64) for x in idx])
    oob = torch.zeros(idx[0].shape, dtype=torch.bool)
    safe = []
    for axis, x in enumerate(idx):
        n = t.shape[axis]
        if broadcast_ones and n == 1:
            safe.append(torch.zeros_like(x))
            continue
        bad = (x < 0) | (x >= n)
        oob = oob | bad
        safe.append(torch.where(bad, torch.zeros_like(x), x))
    if t.numel() == 0:
        return torch.zeros(oob.shape, dtype=t.dtype), torch.ones_like(oob)
    return t[tuple(safe)], oob


# --------------------------------------------------------------------------------------
# Positions and helpers
# --------------------------------------------------------------------------------------

class _Grid:
    """Index variables over some broadcast shape (the dense grid for masks, the flat list
    of allowed pairs for scores)."""

    def __init__(self, b, h, i, j, q_off, kv_off, sq, skv):
        self.b, self.h, self.i, self.j = b, h, i, j
        self.q_off, self.kv_off = q_off, kv_off
        self.P = i + q_off
        self.K = j + kv_off
        self.d = self.P - self.K
        self.sq, self.skv = sq, skv

    def variables(self, spec):
        out = {"b": self.b, "h": self.h, "q": self.P, "kv": self.K, "q_idx": self.i,
               "kv_idx": self.j, "seq_q": torch.tensor(self.sq, dtype=I64),
               "seq_kv": torch.tensor(self.skv, dtype=I64)}
        for name, value in spec.get("params", {}).items():
            if name in out or name == "s":
                raise ExprError(f"parameter name {name!r} is reserved")
            if isinstance(value, bool):
                out[name] = torch.tensor(value)
            elif isinstance(value, int):
                out[name] = torch.tensor(value, dtype=I64)
            else:
                out[name] = torch.tensor(float(value), dtype=F64)
        return out


def _floordiv(a, n):
    return torch.div(a, n, rounding_mode="floor")


def _in_list(x, values):
    """x (a broadcast tensor) in the 1-D list `values`, elementwise."""
    return (x.unsqueeze(-1) == values).any(-1)


# --------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------

class _Reads:
    """Collects where a mask read a tensor outside its shape: such a pair is masked,
    whatever the combinators around the read (`not` cannot unmask it)."""

    def __init__(self):
        self.oob = None

    def gather(self, t, idx):
        value, oob = gather(t, idx)
        self.note(oob)
        return value

    def note(self, oob):
        self.oob = oob if self.oob is None else (self.oob | oob)


def _mask(node, g, spec, tensors, reads):
    (key, val), = node.items()
    d, P, K = g.d, g.P, g.K
    true = torch.ones((), dtype=torch.bool)
    if key == "full":
        return true
    if key == "all":
        out = true
        for m in val:
            out = out & _mask(m, g, spec, tensors, reads)
        return out
    if key == "any":
        out = ~true
        for m in val:
            out = out | _mask(m, g, spec, tensors, reads)
        return out
    if key == "not":
        return ~_mask(val, g, spec, tensors, reads)
    if key == "causal":
        return d >= 0  # causal.align sets the spec's alignment (default_offsets)
    if key in ("sliding_window", "dilated_window"):
        left, right = val["left"], val.get("right", 0)
        out = true
        if left != -1:
            out = out & (d <= left)
        if right != -1:
            out = out & (d >= -right)
        if key == "dilated_window":
            out = out & (torch.remainder(d, val["dilation"]) == 0)
        return out
    if key == "sinks":
        return K < val["count"]
    if key == "global_tokens":
        if "count" in val:
            n = val["count"]
            return ((K >= 0) & (K < n)) | ((P >= 0) & (P < n))
        toks = torch.tensor(list(val["tokens"]) or [], dtype=I64)
        if toks.numel() == 0:
            return ~true
        return _in_list(K, toks) | _in_list(P, toks)
    if key == "prefix_lm":
        prefix = val["prefix"]
        if isinstance(prefix, str):
            pv = reads.gather(tensors[prefix], [g.b]).to(I64)
            return (K < pv) | (d >= 0)
        return (K < prefix) | (d >= 0)
    if key == "document":
        qn = val["q_ids"]
        kn = val.get("kv_ids", qn)
        qa = reads.gather(tensors[qn], [g.b, g.i]).to(I64)
        ka = reads.gather(tensors[kn], [g.b, g.j]).to(I64)
        return qa == ka
    if key == "buckets":
        qa = reads.gather(tensors[val["q_buckets"]], [g.b, g.h, g.i]).to(I64)
        ka = reads.gather(tensors[val["kv_buckets"]], [g.b, g.h, g.j]).to(I64)
        return qa == ka
    if key == "keep":
        return reads.gather(tensors[val["kv_keep"]], [g.b, g.h, g.j]) != 0
    if key == "strided":
        l = val["stride"]
        return (d >= 0) & ((d < l) | (torch.remainder(d, l) == 0))
    if key == "fixed":
        l, c = val["stride"], val["summary"]
        return (d >= 0) & ((_floordiv(K, l) == _floordiv(P, l)) | (torch.remainder(K, l) >= l - c))
    if key == "dilated_segments":
        w, r = val["segment"], val["dilation"]
        o = torch.remainder(g.h, r) if "head_offset" not in val else val["head_offset"]
        return ((_floordiv(P, w) == _floordiv(K, w)) & (torch.remainder(P, r) == o)
                & (torch.remainder(K, r) == o))
    if key == "shifted_groups":
        G = val["group"]
        heads = val.get("shifted_heads", "second_half")
        hq = spec["heads_q"]
        if heads == "second_half":
            shifted = g.h >= hq // 2  # h >= Hq / 2, integer division
        else:
            shifted = _in_list(g.h, torch.tensor(list(heads) or [-1], dtype=I64))
        s = torch.where(shifted, torch.tensor(G // 2), torch.tensor(0))
        return _floordiv(P + s, G) == _floordiv(K + s, G)
    if key == "vertical_slash":
        cols = tensors[val["columns"]].to(I64)  # [B, Hq, Nv]
        diags = tensors[val["diagonals"]].to(I64)  # [B, Hq, Ns]
        return (_list_hit(cols, g.b, g.h, g.j, reads)
                | _list_hit(diags, g.b, g.h, d, reads))
    if key == "block_list":
        bm, bn = val["block"]
        blocks = tensors[val["kv_blocks"]].to(I64)  # [B, Hq, NQB, K]
        qb = _floordiv(g.i, bm)
        kb = _floordiv(g.j, bn)
        b, h, qb, kb = torch.broadcast_tensors(g.b, g.h, qb, kb)
        nk = blocks.shape[-1]
        rows, oob = gather(blocks, [b.unsqueeze(-1), h.unsqueeze(-1), qb.unsqueeze(-1),
                                    torch.arange(nk, dtype=I64)])
        reads.note(oob.any(-1))  # rows beyond the list: masked
        return ((rows == kb.unsqueeze(-1)) & ~oob).any(-1)
    if key == "expr":
        ev = _Eval(g.variables(spec), tensors)
        out = ev(parse_expr(val))
        if not _is_bool(out):
            raise ExprError(f"mask expression {val!r} is not boolean")
        if ev.oob is not None:
            reads.note(ev.oob)
        return out
    raise ValueError(f"unknown mask {key!r}")


def _list_hit(table, b, h, x, reads):
    """x in table[b, h, :] (a [B, Hq, N] tensor), elementwise over broadcast b, h, x."""
    b, h, x = torch.broadcast_tensors(b, h, x)
    n = table.shape[-1]
    vals, oob = gather(table, [b.unsqueeze(-1), h.unsqueeze(-1), torch.arange(n, dtype=I64)])
    reads.note(oob.any(-1))
    return ((vals == x.unsqueeze(-1)) & ~oob).any(-1)


# --------------------------------------------------------------------------------------
# Score transforms
# --------------------------------------------------------------------------------------

def alibi_slopes(n):
    def pow2(m):
        return [2.0 ** (-8.0 * (i + 1) / m) for i in range(m)]

    if n & (n - 1) == 0:
        return pow2(n)
    p = 1 << (n.bit_length() - 1)  # largest power of two below n
    return pow2(p) + pow2(2 * p)[0::2][:n - p]


def t5_bucket(rel, num_buckets=32, max_distance=128, bidirectional=True):
    """T5's relative_position_bucket (mesh_tensorflow / HF transformers) of
    rel = K(j) - P(i), computed in float64."""
    rel = rel.to(I64)
    out = torch.zeros_like(rel)
    if bidirectional:
        num_buckets //= 2
        out = out + (rel > 0).to(I64) * num_buckets
        n = torch.abs(rel)
    else:
        n = torch.clamp(-rel, min=0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    nf = torch.clamp(n, min=1).to(F64)
    large = max_exact + (torch.log(nf / max_exact) / math.log(max_distance / max_exact)
                         * (num_buckets - max_exact)).to(I64)
    large = torch.clamp(large, max=num_buckets - 1)
    return out + torch.where(is_small, n, large)


def _per_head(values, h):
    return torch.tensor([float(x) for x in values], dtype=F64)[h]


def _score(node, s, g, spec, tensors):
    (key, val), = node.items()
    d, P = g.d, g.P
    if key == "softcap":
        cap = float(val["cap"])
        return cap * torch.tanh(s / cap)
    if key == "alibi":
        slopes = val.get("slopes") or alibi_slopes(spec["heads_q"])
        return s - _per_head(slopes, g.h) * d.to(F64)
    if key == "t5_bias":
        table = tensors[val["table"]]
        bucket = t5_bucket(-d, val.get("num_buckets", 32), val.get("max_distance", 128),
                           val.get("bidirectional", True))
        bias, oob = gather(table, [bucket, g.h])
        return torch.where(oob, s, s + bias)
    if key == "fire":
        c, L = float(val["c"]), float(val["L"])
        w1, b1 = tensors[val["w1"]], tensors[val["b1"]]
        w2, b2 = tensors[val["w2"]], tensors[val["b2"]]

        def psi(x):
            return torch.log(c * x + 1.0)

        # d < 0 (outside FIRE's causal use) takes psi(0) = 0.
        x = psi(torch.clamp(d, min=0).to(F64)) / psi(torch.clamp(P.to(F64), min=L))
        hidden = torch.relu(x.unsqueeze(-1) * w1 + b1)  # [n, Hid]
        f = (hidden * w2[g.h]).sum(-1) + b2[g.h]
        return s + f
    if key == "kerple_log":
        r1 = _per_head(val["r1"], g.h)
        r2 = _per_head(val["r2"], g.h)
        return s - r1 * torch.log(1.0 + r2 * torch.abs(d).to(F64))
    if key == "log_length_scale":
        n0 = float(val["base"])
        factor = torch.clamp(torch.log(torch.clamp(P.to(F64) + 1.0, min=1.0)) / math.log(n0),
                             min=1.0)
        return s * factor
    if key == "bias":
        t = tensors[val["tensor"]]
        while t.dim() < 4:
            t = t.unsqueeze(0)
        bias, oob = gather(t, [g.b, g.h, g.i, g.j], broadcast_ones=True)
        return torch.where(oob, s, s + bias)
    if key == "expr":
        variables = g.variables(spec)
        variables["s"] = s
        ev = _Eval(variables, tensors)
        out = ev(parse_expr(val))
        if _is_bool(out):
            raise ExprError(f"score expression {val!r} is boolean")
        out = out.to(F64)
        if ev.oob is not None:
            out = torch.where(ev.oob, s, out)
        return out
    raise ValueError(f"unknown score transform {key!r}")


# --------------------------------------------------------------------------------------
# RoPE
# --------------------------------------------------------------------------------------

def rope_frequencies(rope, rotary_dim):
    """inv_freq [rotary_dim / 2] and the attention temperature (1 when no YaRN)."""
    theta = float(rope.get("theta", 10000.0))
    half = rotary_dim // 2
    m = torch.arange(half, dtype=F64)
    scaling = rope.get("scaling") or {}
    temperature = 1.0
    pos_scale = 1.0
    if "ntk" in scaling:
        theta = theta * float(scaling["ntk"]) ** (rotary_dim / (rotary_dim - 2))
    inv_freq = theta ** (-2.0 * m / rotary_dim)
    if "linear" in scaling:
        pos_scale = 1.0 / float(scaling["linear"])
    if "yarn" in scaling:
        y = scaling["yarn"]
        f = float(y["factor"])
        orig = float(y["original_max_position"])
        beta_fast = float(y.get("beta_fast", 32.0))
        beta_slow = float(y.get("beta_slow", 1.0))

        # The paper's NTK-by-parts (section 3.2): r = L / wavelength, wavelength =
        # 2 pi / theta_m; gamma = clamp((r - alpha) / (beta - alpha), 0, 1) with
        # alpha = beta_slow, beta = beta_fast; theta'_m = (1 - gamma) theta_m / s + gamma theta_m.
        r = orig * inv_freq / (2 * math.pi)
        gamma = torch.clamp((r - beta_slow) / (beta_fast - beta_slow), 0.0, 1.0)
        inv_freq = (1.0 - gamma) * inv_freq / f + gamma * inv_freq
        temperature = float(y["mscale"]) if "mscale" in y else 0.1 * math.log(f) + 1.0
    return inv_freq, pos_scale, temperature


def apply_rope(x, pos, rope):
    """x [..., S, D] rotated at positions pos [S] (float64)."""
    D = x.shape[-1]
    rd = int(rope.get("rotary_dim", D))
    inv_freq, pos_scale, temperature = rope_frequencies(rope, rd)
    ang = (pos.to(F64) * pos_scale).unsqueeze(-1) * inv_freq  # [S, rd/2]
    # YaRN's temperature multiplies the rotated features of q and of k (the paper's
    # sqrt(1/t) = 0.1 ln(s) + 1 on both, so the logits scale by its square).
    cos, sin = torch.cos(ang) * temperature, torch.sin(ang) * temperature
    half = rd // 2
    rot, rest = x[..., :rd], x[..., rd:]
    if rope.get("style", "half") == "half":
        a, b = rot[..., :half], rot[..., half:]
        rot = torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)
    else:
        a, b = rot[..., 0::2], rot[..., 1::2]
        rot = torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)
    return torch.cat([rot, rest], dim=-1)


# --------------------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------------------

def _causal_aligns(node, out):
    if isinstance(node, dict) and len(node) == 1:
        (key, val), = node.items()
        if key in ("all", "any"):
            for m in val:
                _causal_aligns(m, out)
        elif key == "not":
            _causal_aligns(val, out)
        elif key == "causal" and isinstance(val, dict) and "align" in val:
            out.add(val["align"])
    return out


def alignment(spec):
    """The spec's alignment: the top-level `align`, which `causal.align` also sets (the
    positions are shared by every pattern, RoPE and score transform of the spec)."""
    aligns = _causal_aligns(spec.get("mask"), set())
    if "align" in spec:
        aligns.add(spec["align"])
    if len(aligns) > 1:
        raise ValueError(f"two alignments in one spec: {sorted(aligns)}")
    return aligns.pop() if aligns else "bottom_right"


def default_offsets(spec, sq, skv, q_offset=None, kv_offset=None):
    """(q_offset, kv_offset): run-time values win over the spec's; without either,
    q_offset is Skv - Sq (bottom_right) or 0 (top_left), kv_offset 0."""
    if q_offset is None:
        q_offset = spec.get("q_offset")
    if q_offset is None:
        q_offset = 0 if alignment(spec) == "top_left" else skv - sq
    if kv_offset is None:
        kv_offset = spec.get("kv_offset", 0)
    return int(q_offset), int(kv_offset)


def allowed_mask(spec, B, Hq, Sq, Skv, inputs, q_offset=None, kv_offset=None):
    """The dense boolean mask [B, Hq, Sq, Skv]."""
    q_off, kv_off = default_offsets(spec, Sq, Skv, q_offset, kv_offset)
    g = _Grid(torch.arange(B, dtype=I64).view(B, 1, 1, 1),
              torch.arange(Hq, dtype=I64).view(1, Hq, 1, 1),
              torch.arange(Sq, dtype=I64).view(1, 1, Sq, 1),
              torch.arange(Skv, dtype=I64).view(1, 1, 1, Skv), q_off, kv_off, Sq, Skv)
    reads = _Reads()
    m = _mask(spec.get("mask", {"full": {}}), g, spec, inputs, reads)
    if reads.oob is not None:
        m = m & ~reads.oob
    return torch.broadcast_to(m, (B, Hq, Sq, Skv)).clone()


def attention(spec, q, k, v, inputs=None, q_offset=None, kv_offset=None):
    inputs = dict(inputs or {})
    B, Hq, Sq, D = q.shape
    Hkv, Skv = k.shape[1], k.shape[2]
    Dv = v.shape[-1]
    assert Hq == spec["heads_q"] and Hkv == spec.get("heads_kv", Hq) and Hq % Hkv == 0
    q_off, kv_off = default_offsets(spec, Sq, Skv, q_offset, kv_offset)
    rope = spec.get("rope")
    if rope is not None:
        q = apply_rope(q, torch.arange(Sq, dtype=I64) + q_off, rope)
        k = apply_rope(k, torch.arange(Skv, dtype=I64) + kv_off, rope)
    group = Hq // Hkv
    kx = k.repeat_interleave(group, dim=1)
    vx = v.repeat_interleave(group, dim=1)
    scale = float(spec.get("scale", 1.0 / math.sqrt(D)))

    mask = allowed_mask(spec, B, Hq, Sq, Skv, inputs, q_offset, kv_offset)
    idx = mask.nonzero()  # [n, 4]: the allowed pairs
    bi, hi, ii, ji = idx.unbind(-1)
    # Scores of the allowed pairs only: a masked pair never enters a computation.
    s = scale * (q[bi, hi, ii] * kx[bi, hi, ji]).sum(-1)
    g = _Grid(bi, hi, ii, ji, q_off, kv_off, Sq, Skv)
    for node in spec.get("score", []):
        s = _score(node, s, g, spec, inputs)

    norm = spec.get("normalizer", "softmax")
    if isinstance(norm, dict):
        (norm_name, norm_args), = norm.items()
    else:
        norm_name, norm_args = norm, {}
    flat = (bi * Hq + hi) * Sq + ii  # row of each pair
    rows = B * Hq * Sq

    if norm_name == "softmax":
        with torch.no_grad():
            m = torch.full((rows,), -math.inf, dtype=F64)
            if s.numel():
                with warnings.catch_warnings():  # "scatter_reduce() is in beta"
                    warnings.simplefilter("ignore")
                    m = m.scatter_reduce(0, flat, s.detach(), reduce="amax", include_self=True)
            m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        e = torch.exp(s - m[flat])
        denom = torch.zeros(rows, dtype=F64).index_add(0, flat, e)
        nonempty = denom > 0
        safe = torch.where(nonempty, denom, torch.ones_like(denom))
        p = e / safe[flat]
        lse = torch.where(nonempty, torch.log(safe) + m,
                          torch.full_like(denom, -math.inf)).view(B, Hq, Sq)
    elif norm_name == "sigmoid":
        beta = float(norm_args.get("beta", -math.log(Skv) if Skv > 0 else 0.0))
        p = torch.sigmoid(s + beta)
        lse = None
    elif norm_name == "relu":
        p = torch.relu(s) / max(Skv, 1)
        lse = None
    else:
        raise ValueError(f"unknown normalizer {norm_name!r}")

    contrib = p.unsqueeze(-1) * vx[bi, hi, ji]  # [n, Dv]
    o = torch.zeros(rows, Dv, dtype=F64).index_add(0, flat, contrib).view(B, Hq, Sq, Dv)
    return o, lse


def make_torch_inputs(spec, arrays):
    """(q, k, v, inputs) as torch tensors from numpy arrays: either the tuple
    make_inputs returns, or a dict with q, k, v and the declared inputs. Floats become
    float64 leaves with requires_grad=True, integers int64."""
    if isinstance(arrays, dict):
        q, k, v = arrays["q"], arrays["k"], arrays["v"]
        extra = {n: a for n, a in arrays.items() if n not in ("q", "k", "v")}
    else:
        q, k, v, extra = arrays

    def conv(a):
        a = np.asarray(a)
        if np.issubdtype(a.dtype, np.floating):
            return torch.tensor(a.astype(np.float64), dtype=F64, requires_grad=True)
        return torch.tensor(a.astype(np.int64), dtype=I64)

    return conv(q), conv(k), conv(v), {n: conv(a) for n, a in extra.items()}
