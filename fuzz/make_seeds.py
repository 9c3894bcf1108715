#!/usr/bin/env python3
"""Regenerates the committed seed corpora under fuzz/corpus/ from the tree.

    /usr/bin/python3 fuzz/make_seeds.py build/tools/attnc/attnc

Seeds are the project's own inputs, small: the example specs and the specs of the lit
tests, each expression in them, the lit IR files split at `// -----` (comment lines
dropped), the L1 IR `attnc import` prints for every example, the runtime test bundle's
manifest and trimmed manifests of three compiled examples (two variants each, compact),
their grid and scratch expressions, and a few tuning databases. Run it after adding an
example or a lit test worth seeding from; the fuzzers add what they find only to their
own working corpora (build-fuzz/), never here.
"""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "corpus")


def put(target, text, name=None):
    data = text.encode() if isinstance(text, str) else text
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    name = name or hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def split_file_sections(path):
    """The `#--- name` sections of a split-file lit test."""
    sections, name, lines = {}, None, []
    for line in open(path):
        m = re.match(r"#--- (\S+)", line)
        if m:
            if name:
                sections[name] = "".join(lines)
            name, lines = m.group(1), []
        elif name:
            lines.append(line)
    if name:
        sections[name] = "".join(lines)
    return sections


def exprs(node, out):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "expr" and isinstance(v, str):
                out.append(v)
            exprs(v, out)
    elif isinstance(node, list):
        for v in node:
            exprs(v, out)


def main():
    attnc = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build/tools/attnc/attnc")
    for target in os.listdir(OUT) if os.path.isdir(OUT) else []:
        shutil.rmtree(os.path.join(OUT, target))

    # Specs: the examples and the lit tests' specs.
    specs = {}
    ex = os.path.join(ROOT, "specs", "examples")
    for f in sorted(os.listdir(ex)):
        specs[f] = open(os.path.join(ex, f)).read()
    lit_specs = os.path.join(ROOT, "test", "lit", "specs")
    for f in sorted(os.listdir(lit_specs)):
        for name, text in split_file_sections(os.path.join(lit_specs, f)).items():
            if name.endswith(".json"):
                specs[f.replace(".test", "") + "-" + name] = text
    all_exprs = []
    for name, text in specs.items():
        put("spec_importer", text, name)
        try:
            exprs(json.loads(text), all_exprs)
        except ValueError:
            pass
    for e in sorted(set(all_exprs)):
        put("expr_parser", e)

    # IR: the lit inputs, split, and what attnc imports from every example.
    lit = os.path.join(ROOT, "test", "lit")
    for sub in ("dialect", "passes", "host"):
        for f in sorted(os.listdir(os.path.join(lit, sub))):
            if not f.endswith(".mlir"):
                continue
            for i, chunk in enumerate(open(os.path.join(lit, sub, f)).read().split("// -----")):
                body = "".join(l for l in chunk.splitlines(True) if not l.lstrip().startswith("//"))
                if body.strip():
                    put("attn_ir", body, "%s-%s-%d.mlir" % (sub, f[:-5], i))
    for f in sorted(os.listdir(ex)):
        r = subprocess.run([attnc, "import", os.path.join(ex, f)], capture_output=True, text=True)
        if r.returncode == 0:
            put("attn_ir", r.stdout, "import-" + f[:-5] + ".mlir")
    repro = os.path.join(ROOT, "fuzz", "regressions", "attn_ir")
    for f in sorted(os.listdir(repro)) if os.path.isdir(repro) else []:
        put("attn_ir", open(os.path.join(repro, f), "rb").read(), "regression-" + f)

    # Manifests: the runtime's test bundle and trimmed compiled ones.
    manifests = [json.load(open(os.path.join(ROOT, "runtime/test/data/copy_bundle/manifest.json")))]
    tmp = tempfile.mkdtemp()
    try:
        for spec, configs in (("causal.json", "64x64"), ("document.json", "64x64,128x64w"),
                              ("mqa-decode.json", "64x64g,64x64")):
            out = os.path.join(tmp, spec)
            subprocess.run([attnc, "compile", os.path.join(ex, spec), "-o", out,
                            "--arch", "sm_80,sm_90a", "--configs", configs],
                           check=True, capture_output=True)
            m = json.load(open(os.path.join(out, "manifest.json")))
            m["variants"] = m["variants"][:2]
            manifests.append(m)
    finally:
        shutil.rmtree(tmp)
    grids = set()
    for i, m in enumerate(manifests):
        text = json.dumps(m, separators=(",", ":"), sort_keys=False)
        put("rt_manifest", text, "manifest-%d.json" % i)
        put("rt_json", text, "manifest-%d.json" % i)
        for v in m["variants"]:
            grids.update(v["grid"].values())
            sk = v.get("split_kv")
            if sk:
                grids.update(sk.get("scratch", {}).values())
                grids.update(sk.get("combine", {}).get("grid", {}).values())
    for g in sorted(grids):
        put("rt_grid_expr", g)
    for g in ("ceil_div(seq_q, 128) * max(1, min(heads_q, 8))", "(batch + 1) / 2 - 1", "9223372036854775807 + 1"):
        put("rt_grid_expr", g)

    # Tuning databases, as the runtime writes them, and a broken one.
    entry = {"variant": "sm80_bm64_bn64_w4", "time_ms": 0.512,
             "candidates": {"sm80_bm64_bn64_w4": 0.512, "sm80_bm128_bn64_w8": 0.61},
             "rejected": {"sm80_bm64_bn64_w4_g": "output differs from the default variant"},
             "when": "2025-01-31T12:34:56Z"}
    dbs = [
        {"format": "attune-tuning/1", "entries": {}},
        {"format": "attune-tuning/1", "entries": {"NVIDIA H100 80GB HBM3|sm132|" + "ab" * 32 + "|b1-q4096-kv4096": entry}},
        {"format": "attune-tuning/1", "entries": {
            "NVIDIA A100-SXM4-40GB|sm108|" + "cd" * 32 + "|b2-q1024-kv1024": entry,
            "NVIDIA A100-SXM4-40GB|sm108|" + "cd" * 32 + "|b2-q8192-kv8192": {"variant": "x", "time_ms": 3}}},
    ]
    for i, db in enumerate(dbs):
        text = json.dumps(db, indent=2) + "\n"
        put("rt_tuning_db", text, "tuning-%d.json" % i)
        put("rt_json", text, "tuning-%d.json" % i)
    put("rt_tuning_db", '{"format": "attune-tuning/1", "entries": [', "truncated.json")
    for name in ("causal.json", "document.json", "expr-score.json"):
        put("rt_json", specs[name], "spec-" + name)


if __name__ == "__main__":
    main()
