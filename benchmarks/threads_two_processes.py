#!/usr/bin/env python
"""Two `daclip restore` processes on one CPU: wall time with each thread setting, in the same run.

Two processes that each let torch use every core oversubscribe the CPU (OpenMP threads spin waiting for each
other). This restores one folder of small images twice over in two processes started together, with

- `default`: what `daclip restore` picks by itself (hand-started processes: torch's default, one thread per core;
  under `accelerate launch`: cores ÷ local processes),
- `--threads N`: each process N threads (N = cores ÷ 2, and N = cores),
- `accelerate`: `accelerate launch --multi_gpu --num_processes 2` (the CLI splits the folder), with its default
  and with OMP_NUM_THREADS = cores (the oversubscribed case),

and writes the table (`--output`, default `benchmarks/THREADS.md`). The images are crops of scikit-image photos
restored by the bundled demo model, `--sampler mrs`, so that sampling, not start-up, takes most of the time.

    nice python benchmarks/threads_two_processes.py --images 4 --size 128 --steps 20
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def write_images(folder: Path, count: int, size: int) -> None:
    import PIL.Image
    from skimage import data

    folder.mkdir(parents=True)
    photos = [data.coffee(), data.rocket(), data.astronaut(), data.chelsea()]
    for index in range(count):
        photo = photos[index % len(photos)]
        top, left = 20 * index, 30 * index
        PIL.Image.fromarray(np.ascontiguousarray(photo[top : top + size, left : left + size])).save(folder / f"{index}.png")


def daclip_command() -> list:
    executable = shutil.which("daclip")
    return [executable] if executable else [sys.executable, "-m", "daclip.cli"]


def run_pair(split_dirs, out: Path, steps: int, extra, env) -> float:
    """Two hand-started processes, one per half of the inputs; wall seconds until both are done."""
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            [*daclip_command(), "restore", str(folder), "-o", str(out / f"p{i}"), "--sampler", "mrs",
             "--steps", str(steps), "--device", "cpu", *extra],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        for i, folder in enumerate(split_dirs)
    ]
    for process in processes:
        _, err = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"daclip restore failed: {err[-2000:]}")
    return time.perf_counter() - started


def run_accelerate(folder: Path, out: Path, steps: int, env) -> float:
    started = time.perf_counter()
    result = subprocess.run(
        ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
         "no", "--dynamo_backend", "no", "-m", "daclip.cli", "restore", str(folder), "-o", str(out), "--sampler", "mrs",
         "--steps", str(steps), "--device", "cpu"],
        env=env, capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise SystemExit(f"accelerate launch failed: {result.stderr[-2000:]}")
    return time.perf_counter() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=4, help="images in the folder (half per process)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--output", default=str(HERE / "THREADS.md"))
    args = parser.parse_args(argv)

    from daclip.utils.threads import available_cores

    cores = available_cores()
    base_env = {key: value for key, value in os.environ.items() if key not in ("OMP_NUM_THREADS", "LOCAL_WORLD_SIZE")}
    base_env["PYTHONWARNINGS"] = "ignore"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_images(tmp / "all", args.images, args.size)
        halves = [tmp / "half0", tmp / "half1"]
        for index, path in enumerate(sorted((tmp / "all").iterdir())):
            halves[index % 2].mkdir(exist_ok=True)
            shutil.copy(path, halves[index % 2] / path.name)
        cases = [
            ("2 hand-started processes, default threads (torch: one per core)", lambda o: run_pair(halves, o, args.steps, [], base_env)),
            (f"2 hand-started processes, --threads {max(1, cores // 2)}", lambda o: run_pair(halves, o, args.steps, ["--threads", str(max(1, cores // 2))], base_env)),
            ("accelerate launch, 2 processes, default threads", lambda o: run_accelerate(tmp / "all", o, args.steps, base_env)),
            (f"accelerate launch, 2 processes, OMP_NUM_THREADS={cores}", lambda o: run_accelerate(tmp / "all", o, args.steps, {**base_env, "OMP_NUM_THREADS": str(cores)})),
        ]
        for index, (name, run) in enumerate(cases):
            seconds = run(tmp / f"out{index}")
            rows.append((name, seconds))
            print(f"{name}: {seconds:.1f} s", flush=True)
    load = os.getloadavg()
    lines = [
        "# Two processes on one CPU: threads per process",
        "",
        f"`python benchmarks/threads_two_processes.py --images {args.images} --size {args.size} --steps {args.steps}`: "
        f"{args.images} images of {args.size}×{args.size} restored by the demo model (`--sampler mrs --steps {args.steps}`), "
        f"split over 2 processes; {cores} core(s); load average after the run {load[0]:.1f} (other jobs share the "
        "machine, so compare rows of this run only). Wall time includes start-up (importing torch, loading the model).",
        "",
        "| case | wall s | vs first row |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {name} | {seconds:.1f} | {seconds / rows[0][1]:.2f}× |" for name, seconds in rows]
    Path(args.output).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
