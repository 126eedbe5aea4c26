#!/usr/bin/env python
"""Is a code change faster or slower? `benchmark_restoration.py` jobs of two checkouts, alternating in one run.

Each round runs every job once with the old checkout's code and once with the new one's (in fresh child processes,
the order swapped every round), so a busy machine slows both alike. Reports, per job, the median new/old time ratio
over the rounds and its spread (lowest and highest round ratio).

    git archive <old-commit> | tar -x -C /tmp/old        # the old revision, as a folder
    python benchmarks/compare_revisions.py --old /tmp/old --new . --rounds 6 --threads 1

`--old` / `--new` are repository roots (each imports as the package `daclip`, its own `benchmark_restoration.py`
runs the job). Jobs: one UNet step at 256² (float32, released sizes, random weights; `--repeats` timed calls after a
warm-up) and a 256² `DACLIPPipeline` restoration of `--steps` steps (float32).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List


def package_path(root: Path, folder: Path) -> str:
    """A folder holding only a link `daclip` → `root`, for PYTHONPATH (the repository root *is* the package)."""
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "daclip"
    if not link.exists():
        link.symlink_to(root.resolve(), target_is_directory=True)
    return str(folder)


def run_job(root: Path, pythonpath: str, job: Dict[str, Any]) -> Dict[str, Any]:
    script = root / "benchmarks" / "benchmark_restoration.py"
    environment = dict(os.environ, PYTHONPATH=pythonpath)
    completed = subprocess.run(
        [sys.executable, str(script), "--child", json.dumps(job)], capture_output=True, text=True, env=environment
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    if completed.returncode != 0 or not lines:
        raise RuntimeError(f"{root}: {job['kind']} failed: {completed.stderr.strip().splitlines()[-3:]}")
    return json.loads(lines[-1][len("RESULT "):])


def seconds(job: Dict[str, Any], result: Dict[str, Any]) -> float:
    """The figure compared: the fastest timed UNet call, or the restoration's total time."""
    return min(result["ours"]["wall"]) if job["kind"] == "unet_step" else result["total_s"]


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", required=True, type=Path, help="root of the old checkout")
    parser.add_argument("--new", default=Path("."), type=Path, help="root of the new checkout (default: here)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=None, help="torch threads in each child")
    parser.add_argument("--repeats", type=int, default=3, help="timed UNet calls per child")
    parser.add_argument("--steps", type=int, default=3, help="sampling steps of the restoration job")
    args = parser.parse_args(argv)

    common = {"device": "cpu", "threads": args.threads}
    jobs = {
        "UNet step 256² fp32": dict(common, kind="unet_step", size=256, batch=1, dtype="float32", warmup=1,
                                   repeats=args.repeats, reference=False),
        f"restore 256² fp32, {args.steps} steps": dict(common, kind="restore", size=256, dtype="float32",
                                                       path="ours", steps=args.steps),
    }
    with tempfile.TemporaryDirectory() as scratch:
        paths = {name: package_path(root, Path(scratch, name)) for name, root in (("old", args.old), ("new", args.new))}
        roots = {"old": args.old, "new": args.new}
        times: Dict[str, Dict[str, List[float]]] = {label: {"old": [], "new": []} for label in jobs}
        for round_index in range(args.rounds):
            order = ("old", "new") if round_index % 2 == 0 else ("new", "old")
            for label, job in jobs.items():
                for which in order:
                    times[label][which].append(seconds(job, run_job(roots[which], paths[which], job)))
                old, new = times[label]["old"][-1], times[label]["new"][-1]
                # One line per job and round, so that a run cut short still says something.
                print(f"round {round_index + 1}/{args.rounds}: {label}: old {old:.3f} s, new {new:.3f} s, "
                      f"new/old {new / old:.3f}", file=sys.stderr, flush=True)

    print("| job | old (median s) | new (median s) | new/old (median) | spread of round ratios |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, pair in times.items():
        ratios = [new / old for old, new in zip(pair["old"], pair["new"])]
        print(
            f"| {label} | {statistics.median(pair['old']):.3f} | {statistics.median(pair['new']):.3f} | "
            f"{statistics.median(ratios):.3f} | {min(ratios):.3f}–{max(ratios):.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
