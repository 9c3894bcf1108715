"""One spec hash everywhere (the hardening issue, part 1, and fuzz findings 2 and 4).

attnc, attune-rt and this package hash a spec with the runtime's canonical JSON and
SHA-256 (docs/bundle-and-abi.md section 5). These tests hold all three, on specs full of
the doubles two number formatters are most likely to print differently, against an
implementation of the documented canonical form written here from Python's float repr
(David Gay's shortest round-trip digits) and hashlib, and check that every entry point
refuses the same bad files with the same message.
"""

import ctypes
import hashlib
import json
import math
import os
import random
import struct
import subprocess

import pytest

import attune
from attune import _capi
from conftest import EXAMPLES, REPO, _executable, attnc_path

SEED = int(os.environ.get("ATTUNE_TEST_SEED", "0")) or random.SystemRandom().randrange(1, 2**31)


# --- the documented canonical form, written independently --------------------------


def canonical_number(x):
    """docs/bundle-and-abi.md section 5. Python's repr has the shortest digits that read
    back, the nearest of them; its layout is the document's but for one decade: repr
    writes 1e15 <= |x| < 1e16 in fixed notation (1000000000000000.0), the canonical form
    in exponent form (1e+15). The exponent spelling is the same (e+16, e-05, e-324)."""
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, int):
        return str(x)
    assert math.isfinite(x)
    r = repr(x)
    if 1e15 <= abs(x) < 1e16:
        sign = "-" if r.startswith("-") else ""
        whole, frac = r.lstrip("-").split(".")
        assert len(whole) == 16 and "e" not in r, r
        digits = (whole + frac).rstrip("0")
        r = sign + digits[0] + ("." + digits[1:] if len(digits) > 1 else "") + "e+15"
    return r


def canonical(value):
    if isinstance(value, dict):
        # Keys by their UTF-8 bytes; for valid text that is code point order.
        keys = sorted(value, key=lambda k: k.encode("utf-8"))
        return "{" + ",".join(
            json.dumps(k, ensure_ascii=False) + ":" + canonical(value[k]) for k in keys
        ) + "}"
    if isinstance(value, list):
        return "[" + ",".join(canonical(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value is None:
        return "null"
    return canonical_number(value)


def documented_hash(spec):
    return hashlib.sha256(canonical(spec).encode("utf-8")).hexdigest()


def runtime_canonical(text):
    lib = _capi.lib()
    out = lib.attn_canonical_json(text)
    assert out is not None, lib.attn_last_error()
    return out.decode("utf-8")


# --- doubles of the kinds formatters get wrong ---------------------------------------


def tricky_doubles(seed):
    rng = random.Random(seed)

    def bits():
        while True:
            d = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
            if math.isfinite(d):
                return d

    def f32(x):
        return struct.unpack("<f", struct.pack("<f", x))[0]

    kinds = {
        "uniform": [rng.choice((-1, 1)) * rng.random() * 10.0 ** rng.randint(-30, 30)
                    for _ in range(1000)],
        "float32-rounded": [f32(rng.random() * 10.0 ** rng.randint(-10, 10)) for _ in range(1000)],
        "random bit patterns": [bits() for _ in range(1000)],
        "2^(-k/n)": [2.0 ** (-k / n) for n in range(1, 129) for k in range(0, 16 * n, 1 + rng.randrange(40))],
        "powers of two": [math.ldexp(1.0, e) for e in range(-1074, 1024)],
        "subnormals": [struct.unpack("<d", (rng.getrandbits(52) | (rng.getrandbits(1) << 63))
                                     .to_bytes(8, "little"))[0] for _ in range(1000)]
                      + [math.ldexp(1.0, -1074) * k for k in range(1, 50)],
    }
    edges = []
    for k in range(-323, 309):
        p = float(f"1e{k}")
        steps = 40 if k in (-5, -4, 15, 16, 21) else 1
        lo = hi = p
        edges.append(p)
        for _ in range(steps):
            lo, hi = math.nextafter(lo, 0.0), math.nextafter(hi, math.inf)
            edges += [lo, hi, -hi]
    edges += [0.0, -0.0, 9007199254740992.0, 9007199254740993.0, 1.7976931348623157e308,
              0.13056581630546019, 2.0 ** (-200 / 106)]
    kinds["near 1e-4, 1e15, 1e16, 1e21 and powers of ten"] = edges
    return kinds


def spec_with(values, name):
    """A valid spec (ALiBi with one given slope per query head) holding `values`."""
    return {
        "name": name,
        "heads_q": len(values),
        "head_dim": 16,
        "scale": values[0],
        "params": {"p_pos": values[-1], "p_int": -9223372036854775808, "p_big": 18446744073709551615},
        "score": [{"alibi": {"slopes": values}}],
    }


# --- the tools ----------------------------------------------------------------------


def rt_cli():
    return _executable("ATTUNE_RT_CLI", REPO / "build/runtime/attune-rt",
                       REPO / "build-rt/runtime/attune-rt")


def tools():
    """{name: argv prefix} of the command-line hashes that exist here."""
    found = {}
    if attnc_path():
        found["attnc hash"] = [attnc_path(), "hash"]
    if rt_cli():
        found["attune-rt hash"] = [rt_cli(), "hash"]
    return found


def cli_hashes(paths):
    """{tool: [hash per path]}: each tool once for every path (one process per file)."""
    out = {}
    for name, argv in tools().items():
        out[name] = []
        for p in paths:
            done = subprocess.run(argv + [str(p)], capture_output=True, text=True)
            assert done.returncode == 0, f"{name} {p}: {done.stderr}"
            out[name].append(done.stdout.strip())
    return out


def test_the_issues_values_hash_alike_everywhere(tmp_path):
    spec = json.loads((EXAMPLES / "causal.json").read_text())
    spec["scale"] = 0.13056581630546019
    path = tmp_path / "h.json"
    path.write_text(json.dumps(spec))
    slope = {"heads_q": 1, "head_dim": 8, "score": [{"alibi": {"slopes": [2.0 ** (-200 / 106)]}}]}
    path2 = tmp_path / "slope.json"
    path2.write_text(json.dumps(slope))
    assert '"scale":0.1305658163054602' in canonical(spec)
    assert canonical(slope).endswith('"slopes":[0.2704075891075505]}}]}')
    want = [documented_hash(spec), documented_hash(slope)]
    assert [attune.spec_hash(path), attune.spec_hash(path2)] == want
    assert [attune.spec_hash(spec), attune.spec_hash(slope)] == want
    for tool, got in cli_hashes([path, path2]).items():
        assert got == want, tool


def test_thousands_of_tricky_doubles_hash_as_documented_everywhere(tmp_path):
    """Every tool against the documented form, on every double (one spec per kind)."""
    kinds = tricky_doubles(SEED)
    paths, specs = [], []
    total = 0
    for i, (kind, values) in enumerate(kinds.items()):
        # At most 4096 query heads per spec.
        for j in range(0, len(values), 4096):
            chunk = values[j:j + 4096]
            spec = spec_with(chunk, f"doubles-{i}-{j}")
            specs.append((kind, spec))
            p = tmp_path / f"doubles-{i}-{j}.json"
            # Written by Python (repr digits) and re-read by every tool from the file.
            p.write_text(json.dumps(spec, indent=1))
            paths.append(p)
            total += len(chunk)
    assert total >= 5000

    mismatches = []
    for (kind, spec), p in zip(specs, paths):
        text = p.read_bytes()
        got = runtime_canonical(text)
        want = canonical(spec)
        if got != want:
            # Name the first double printed differently.
            for v in spec["score"][0]["alibi"]["slopes"]:
                one = runtime_canonical(json.dumps([v]).encode())
                if one != "[" + canonical_number(v) + "]":
                    mismatches.append(f"{kind}: {v!r} -> runtime {one}, documented "
                                      f"[{canonical_number(v)}]")
                    break
            else:
                mismatches.append(f"{kind}: canonical texts differ")
    assert not mismatches, f"seed {SEED}: " + "; ".join(mismatches)

    want = [documented_hash(spec) for _, spec in specs]
    assert [attune.spec_hash(p) for p in paths] == want
    assert [attune.spec_hash(spec) for _, spec in specs] == want
    hashes = cli_hashes(paths)
    assert hashes, "neither attnc nor attune-rt was found"
    for tool, got in hashes.items():
        assert got == want, f"{tool} (seed {SEED})"
    print(f"{total} doubles in {len(paths)} specs: documented form, Python, "
          f"{', '.join(hashes)} agree (seed {SEED})")


def test_the_bundle_manifest_and_cache_key_use_the_same_hash(attnc, tmp_path, monkeypatch):
    """attnc compile writes spec_hash into the manifest and keys the cache with it."""
    monkeypatch.setenv("ATTUNE_CACHE_DIR", str(tmp_path / "cache"))
    slopes = [2.0 ** (-200 / 106), 0.13056581630546019, math.ldexp(1.0, -1017) * 1e300,
              7.120236347223045e-307]
    spec = {"name": "tricky", "heads_q": 4, "head_dim": 16, "scale": 0.13056581630546019,
            "score": [{"alibi": {"slopes": slopes}}]}
    path = tmp_path / "tricky.json"
    path.write_text(json.dumps(spec))
    done = subprocess.run([attnc, "compile", str(path), "--cache", "--arch", "sm_80",
                           "--configs", "64x64", "--no-ptxas"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    where = attune.bundle_cache_dir(path, arch="sm_80", configs="64x64")
    manifest = json.loads((where / "manifest.json").read_text())
    assert manifest["spec_hash"] == documented_hash(spec) == attune.spec_hash(spec)
    # The manifest's copy of the spec hashes to its spec_hash too.
    assert documented_hash(manifest["spec"]) == manifest["spec_hash"]
    assert attune.load(where).info["spec_hash"] == manifest["spec_hash"]


# --- the same refusals everywhere ----------------------------------------------------


def deep_text(kind, n=100000):
    if kind == "objects":
        return '{"not": ' * n + "{}" + "}" * n
    return "[" * n + "]" * n


BAD = {
    "deep-objects": (deep_text("objects"), "arrays and objects nested deeper than 512 levels"),
    "deep-arrays": (deep_text("arrays"), "arrays and objects nested deeper than 512 levels"),
    "nul": ('{"heads_q": 2, "head_dim": 16}\0garbage', "line 1, column 31"),
    "garbage": ('{"heads_q": 2, "head_dim": 16} x', "unexpected 'x' after the JSON value"),
    "big-int": ('{"heads_q": 2, "head_dim": 16, "q_offset": 99999999999999999999999}',
                "integer out of range at /q_offset: 99999999999999999999999"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_every_entry_point_refuses_the_same_files(name, tmp_path):
    text, message = BAD[name]
    path = tmp_path / f"{name}.json"
    path.write_bytes(text.encode())
    with pytest.raises(attune.AttuneError) as e:
        attune.spec_hash(path)
    assert str(e.value).startswith(f"attune: {path} is not a JSON spec: ")
    assert message in str(e.value)
    with pytest.raises(attune.AttuneError, match="not a JSON spec"):
        attune.compile(path)
    commands = [argv for argv in tools().values()]
    if attnc_path():
        commands += [[attnc_path(), c] for c in ("import", "explain")]
        commands.append([attnc_path(), "compile", "--no-ptxas", "-o", str(tmp_path / "b")])
    assert commands
    for argv in commands:
        done = subprocess.run(argv + [str(path)], capture_output=True, text=True)
        assert done.returncode == 1, (argv, done.returncode, done.stderr)
        assert str(path) in done.stderr and message in done.stderr, (argv, done.stderr)
        assert done.stderr.count("\n") == 1, done.stderr  # one line, no crash report


def test_a_deep_or_non_json_dict_is_refused_clearly():
    deep = {}
    for _ in range(100000):
        deep = {"not": deep}
    with pytest.raises(attune.AttuneError, match="nests too deeply for JSON"):
        attune.spec_hash(deep)
    # Deeper than the limit but shallow enough for Python's encoder: the runtime refuses.
    medium = {}
    for _ in range(600):
        medium = {"not": medium}
    with pytest.raises(attune.AttuneError, match="nested deeper than 512 levels"):
        attune.spec_hash({"heads_q": 1, "mask": medium})
    with pytest.raises(attune.AttuneError, match="not JSON: Out of range float values"):
        attune.spec_hash({"heads_q": 1, "scale": float("nan")})
    with pytest.raises(attune.AttuneError, match="integer out of range at /q_offset"):
        attune.spec_hash({"heads_q": 1, "q_offset": 10**23})
