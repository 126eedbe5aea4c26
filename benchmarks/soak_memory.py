#!/usr/bin/env python
"""Soak test: does memory stay flat while one process restores a long stream of images?

Four modes, each over `--images` generated images (sizes from `--min-size` to `--max-size` px per side), each
in a fresh process:

- **cli**: `daclip restore FOLDER -o OUT` as a child process, as a user runs it. Its RSS (`VmRSS` in
  `/proc/<pid>/status`) is sampled every few milliseconds; "after image i" is the first sample once the i-th output
  file exists.
- **pipeline**: one `DACLIPPipeline`, called once per image in a loop (in a fresh child process); RSS read after
  each call.
- **cli-5-sizes**, **pipeline-5-sizes**: the same over images that cycle through 5 sizes. The control: torch's
  CPU kernels (oneDNN) cache compiled primitives per input shape (an LRU of `ONEDNN_PRIMITIVE_CACHE_CAPACITY`
  entries, default 1024), and the C heap keeps its high-water mark, so RSS rises while new sizes keep coming and
  stops once they repeat. A leak per image would grow here too. (`ONEDNN_PRIMITIVE_CACHE_CAPACITY=0` shows the
  cache's share.)

For each mode: mean RSS of the first 10 and last 10 images, the maximum, the growth (last 10 − first 10) and the
least-squares slope in KiB per image, over all images and from image 10 on (after the warm-up, in which the first
images build the kernels and heap that later ones reuse).

    python benchmarks/soak_memory.py                       # tiny test weights, ~ a few minutes on 2 CPU cores
    python benchmarks/soak_memory.py --model daclip-uir --steps 20 --max-size 512

Results go to `benchmarks/SOAK_RESULTS.md` (`--output`) and, as JSON, beside it. Linux only (reads /proc).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("DACLIP_SHARED", HERE.parent.parent / "shared"))
TINY = SHARED / "parity"
MIB = 1024 * 1024


def rss_bytes(pid: str = "self", field: str = "VmRSS") -> Optional[int]:
    """VmRSS (or VmHWM, the peak) of a process, or None once it has exited."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def make_images(folder: Path, count: int, min_size: int, max_size: int, seed: int, cycle: int = 0) -> List[tuple]:
    """`count` PNGs of random sizes, or cycling through `cycle` sizes (smooth content plus noise, like a
    degraded photo); returns their (h, w)."""
    import numpy as np
    import PIL.Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    random_size = lambda: tuple(int(v) for v in rng.integers(min_size, max_size + 1, size=2))
    cycled = [random_size() for _ in range(cycle)]
    sizes = []
    for index in range(count):
        height, width = cycled[index % cycle] if cycle else random_size()
        y, x = np.mgrid[0:height, 0:width]
        base = 0.5 + 0.4 * np.sin(x[..., None] / (7 + index % 5) + y[..., None] / 11 + np.arange(3))
        pixels = np.clip(base + rng.normal(0, 0.1, (height, width, 3)), 0, 1)
        PIL.Image.fromarray((pixels * 255).astype(np.uint8)).save(folder / f"img{index:03d}.png")
        sizes.append((height, width))
    return sizes


def model_arguments(args) -> List[str]:
    if args.model:
        return ["--model", args.model]
    result = ["--daclip", args.daclip, "--unet", args.unet]
    return result + (["--daclip-config", args.daclip_config] if args.daclip_config else [])


def soak_cli(args, folder: Path, count: int) -> Dict:
    out = folder.parent / f"{folder.name}_restored"
    out.mkdir()
    command = [
        sys.executable, "-m", "daclip.cli", "restore", str(folder), "-o", str(out), "--steps", str(args.steps),
        "--device", args.device, *model_arguments(args),
    ]
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # The child's stderr (progress bars) must be drained, or it blocks once the pipe is full.
    stderr_chunks: List[str] = []
    reader = threading.Thread(target=lambda: stderr_chunks.append(child.stderr.read()), daemon=True)
    reader.start()
    after_image: List[int] = []
    peak = 0
    while child.poll() is None:
        rss = rss_bytes(str(child.pid))
        if rss is not None:
            peak = max(peak, rss)
            done = sum(1 for name in os.listdir(out) if name.endswith(".png") and not name.startswith("."))
            while len(after_image) < done:
                after_image.append(rss)
        time.sleep(0.005)
    reader.join()
    if child.returncode != 0:
        raise SystemExit(f"the CLI failed ({child.returncode}):\n{''.join(stderr_chunks)[-3000:]}")
    # The last image's sample can fall into the child's shutdown (it exits right after writing), or be missed.
    return {"rss_after_image": after_image, "max_sampled": peak, "seconds": time.perf_counter() - started}


def soak_pipeline(args, folder: Path, count: int) -> Dict:
    """Run `pipeline_loop` in a fresh child, so no mode inherits the heap or kernel caches of another."""
    command = [
        sys.executable, __file__, "--pipeline-child", str(folder), "--images", str(count), "--steps", str(args.steps),
        "--device", args.device, *model_arguments(args),
    ]
    child = subprocess.run(command, capture_output=True, text=True)
    if child.returncode != 0:
        raise SystemExit(f"the pipeline loop failed ({child.returncode}):\n{child.stderr[-3000:]}")
    return json.loads(child.stdout.splitlines()[-1])


def pipeline_loop(args, folder: Path, count: int) -> Dict:
    import PIL.Image
    import torch

    from daclip import DACLIPPipeline

    if args.model:
        pipe = DACLIPPipeline.from_pretrained(args.model)
    else:
        pipe = DACLIPPipeline.from_original_checkpoints(args.daclip, args.unet, daclip_config=args.daclip_config)
    pipe = pipe.to(args.device)
    pipe.set_progress_bar_config(disable=True)
    started = time.perf_counter()
    after_image = []
    for path in sorted(folder.glob("*.png"))[:count]:
        with PIL.Image.open(path) as image:
            image.load()
            restored = pipe(image, num_inference_steps=args.steps, generator=torch.Generator().manual_seed(0))
        restored.images[0].tobytes()  # consume the result, as a caller saving it would
        after_image.append(rss_bytes())
    peak = rss_bytes(field="VmHWM")  # includes peaks inside a call, between the samples
    return {"rss_after_image": after_image, "max_sampled": peak, "seconds": time.perf_counter() - started}


def slope(series: List[int]) -> float:
    """Least-squares slope of the series against its index, in units per image."""
    n = len(series)
    mean_x, mean_y = (n - 1) / 2, sum(series) / n
    return sum((x - mean_x) * (y - mean_y) for x, y in enumerate(series)) / sum((x - mean_x) ** 2 for x in range(n))


def summarise(series: List[int], max_sampled: int) -> Dict:
    n = len(series)
    first, last = sum(series[:10]) / len(series[:10]), sum(series[-10:]) / len(series[-10:])
    return {
        "images": n,
        "first10_mean_mib": first / MIB,
        "last10_mean_mib": last / MIB,
        "max_mib": max(max_sampled, max(series)) / MIB,
        "growth_mib": (last - first) / MIB,
        "slope_kib_per_image": slope(series) / 1024,
        # without the warm-up: the first images build the kernels and heap every later image reuses
        "slope_after_10_kib_per_image": slope(series[10:]) / 1024,
    }


def machine_info(args) -> Dict:
    import torch

    cpu = platform.processor()
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = f"{names[0]} × {len(names)}" if names else cpu
    except OSError:
        pass
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "ONEDNN_PRIMITIVE_CACHE_CAPACITY": os.environ.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "unset (1024)"),
        "device": args.device,
        "model": args.model or f"{Path(args.daclip).name} + {Path(args.unet).name}",
        "steps": args.steps,
        "sizes_px": f"{args.min_size}..{args.max_size} per side, random (`-5-sizes` modes: 5 of them, cycled)",
    }


def report(info: Dict, results: Dict[str, Dict]) -> str:
    lines = [
        "# Soak test: memory over a stream of images",
        "",
        "Made by `benchmarks/soak_memory.py` (see its docstring). RSS after each restored image; growth = mean of",
        "the last 10 − mean of the first 10; slope = least-squares fit (over all images, and from image 10 on).",
        "Each mode is a fresh process.",
        "`cli` and `pipeline` see a new image size almost every time; the `-5-sizes` modes cycle through 5 sizes: a",
        "leak per image grows there too, while per-size kernel caches and the heap's high-water mark stop growing.",
        "",
        "| | |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in info.items()),
        "",
        "| mode | images | first 10 (MiB) | last 10 (MiB) | max (MiB) | growth (MiB) | slope (KiB/image) "
        "| slope after image 10 (KiB/image) | time (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, result in results.items():
        s = result["summary"]
        lines.append(
            f"| {mode} | {s['images']} | {s['first10_mean_mib']:.1f} | {s['last10_mean_mib']:.1f} | {s['max_mib']:.1f} "
            f"| {s['growth_mib']:+.1f} | {s['slope_kib_per_image']:+.1f} | {s['slope_after_10_kib_per_image']:+.1f} "
            f"| {result['seconds']:.0f} |"
        )
    lines += ["", "RSS after each image (MiB):", ""]
    for mode, result in results.items():
        lines.append(f"- {mode}: " + " ".join(f"{value / MIB:.0f}" for value in result["rss_after_image"]))
    return "\n".join(lines) + "\n"


# mode -> (runner, whether its images cycle through 5 sizes)
RUNNERS = {
    "cli": (soak_cli, False),
    "cli-5-sizes": (soak_cli, True),
    "pipeline": (soak_pipeline, False),
    "pipeline-5-sizes": (soak_pipeline, True),
}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a pipeline folder or Hub id (instead of --daclip/--unet)")
    parser.add_argument("--daclip", default=str(TINY / "weights" / "daclip_tiny.pt"))
    parser.add_argument("--unet", default=str(TINY / "weights" / "universal-ir_tiny.pth"))
    parser.add_argument("--daclip-config", default=str(TINY / "daclip_tiny.json"))
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--min-size", type=int, default=64)
    parser.add_argument("--max-size", type=int, default=160)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--modes", default=",".join(RUNNERS), help="comma-separated: " + ", ".join(RUNNERS))
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated image sizes and contents")
    parser.add_argument("--output", default=str(HERE / "SOAK_RESULTS.md"))
    parser.add_argument("--pipeline-child", metavar="FOLDER", help=argparse.SUPPRESS)  # internal: one pipeline loop
    args = parser.parse_args(argv)
    if args.images < 20:
        parser.error("--images must be at least 20 (first 10 and last 10 must not overlap)")
    if args.model and args.daclip_config == parser.get_default("daclip_config"):
        args.daclip_config = None
    if args.pipeline_child:
        print(json.dumps(pipeline_loop(args, Path(args.pipeline_child), args.images)))
        return 0

    modes = args.modes.split(",")
    if set(modes) - set(RUNNERS):
        parser.error(f"--modes: unknown {sorted(set(modes) - set(RUNNERS))}; choose from {list(RUNNERS)}")
    results = {}
    with tempfile.TemporaryDirectory(prefix="daclip_soak_") as work:
        varied, repeated = Path(work) / "varied", Path(work) / "five_sizes"
        make_images(varied, args.images, args.min_size, args.max_size, args.seed)
        make_images(repeated, args.images, args.min_size, args.max_size, args.seed, cycle=5)
        # Each mode is its own process, run one after another so they do not share the CPU.
        for mode in modes:
            runner, cycled = RUNNERS[mode]
            result = runner(args, repeated if cycled else varied, args.images)
            result["summary"] = summarise(result["rss_after_image"], result["max_sampled"])
            results[mode] = result
            print(mode, json.dumps(result["summary"]), flush=True)

    info = machine_info(args)
    output = Path(args.output)
    output.write_text(report(info, results))
    output.with_suffix(".json").write_text(json.dumps({"machine": info, "results": results}, indent=2) + "\n")
    print(f"wrote {output} and {output.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
