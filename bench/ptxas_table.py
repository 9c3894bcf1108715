#!/usr/bin/env python3
"""The ptxas table of a directory of bundles (bench/prepare_bundles.sh DIR): registers
per thread and spill bytes of every variant, from the manifests' `ptxas` fields.

    /usr/bin/python3 bench/ptxas_table.py DIR [--arch sm_90a] [--compare OLD.md]

With --compare, a last column says where a variant's registers or spills differ from
an earlier table of this format (static numbers: no GPU runs here)."""
import argparse
import json
import os
import re
import sys


def rows(root, arch):
    for spec in sorted(os.listdir(root)):
        path = os.path.join(root, spec, "manifest.json")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            manifest = json.load(f)
        for v in manifest["variants"]:
            if v["arch"] != arch or "ptxas" not in v:
                continue
            cfg = v["config"]
            kind = cfg["mma"] + (" pipelined" if cfg.get("pipelined") else "")
            p = v["ptxas"]
            yield (spec, v["name"], kind, v["threads"], v["smem_bytes"], p["registers"],
                   f'{p["spill_stores"]}/{p["spill_loads"]}', "default" if v["default"] else "")


def read_old(path):
    old = {}
    with open(path) as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) >= 7 and re.fullmatch(r"\d+", cells[5] or "x"):
                old[(cells[0], cells[1])] = (cells[5], cells[6])
    return old


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--arch", default="sm_90a")
    ap.add_argument("--compare")
    a = ap.parse_args()
    old = read_old(a.compare) if a.compare else None
    head = "| spec | variant | kind | threads | smem bytes | registers | spill st/ld | |"
    if old is not None:
        head += " vs old |"
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    same = changed = new = 0
    for r in rows(a.dir, a.arch):
        line = "| " + " | ".join(str(c) for c in r) + " |"
        if old is not None:
            before = old.get((r[0], r[1]))
            if before is None:
                line += " new |"
                new += 1
            elif before == (str(r[5]), r[6]):
                line += " same |"
                same += 1
            else:
                line += f" was {before[0]} regs, {before[1]} |"
                changed += 1
        print(line)
    if old is not None:
        print(f"\n{same} variants as before, {changed} changed, {new} new.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
