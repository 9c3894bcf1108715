"""bench/gpu_decode.py without a GPU: its --dry-run (the paged inputs, the dense gather
the rivals get, their masks and PagedAttention's page maps against the float64
reference; Attune's host variant and the NVIDIA kernel on gpu-sim on the same data) and
its --cpu-smoke (a GPU row's code on CPU tensors, CUDA's timing stubbed: the sweep, the
rivals' error cells, the table and the files). The benchmark runs on a GPU only in a
lent session, so this is what keeps it from rotting in between."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "gpu_decode.py"


def run(args, attnc):
    env = dict(os.environ, PYTHONPATH=str(REPO / "python"), ATTUNE_ATTNC=attnc,
               PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, str(SCRIPT)] + args, env=env, capture_output=True,
                          text=True, timeout=600)


def test_dry_run(attnc):
    r = run(["--dry-run", "--rows", "1:4096,64:131072,128:131072"], attnc)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "dry-run: all checks passed" in out
    assert "attune host err=" in out and "skipped" not in out.split("planned rows")[0], out
    assert out.count("gpu-sim default err=") == 2, out
    assert "B=128 ctx=131072  q_len=1 K/V  68.72 GB  SKIP" in out, out


def test_cpu_smoke(attnc, tmp_path):
    r = run(["--cpu-smoke", "--rows", "1:40,3:70", "--q-len", "4", "--mixed",
             "--out", str(tmp_path)], attnc)
    assert r.returncode == 0, r.stdout + r.stderr
    md = list(tmp_path.glob("decode-*-q4-mixed.md"))
    js = list(tmp_path.glob("decode-*-q4-mixed.json"))
    assert len(md) == 1 and len(js) == 1, list(tmp_path.iterdir())
    rows = json.loads(js[0].read_text())["rows"]
    assert [(x["batch"], x["context"]) for x in rows] == [(1, 40), (3, 70)]
    for row in rows:
        assert row["attune_err"] < 2e-2, row
        assert row["sweep"] and "best_variant" in row, row
        # Each rival has a number or says why not (torch 1.13 has neither here).
        for rival in ("sdpa", "flex"):
            assert (rival + "_ms") in row or (rival + "_error") in row, row
    assert "| 3 | 70 |" in md[0].read_text()
