#!/usr/bin/env python
"""Restoration quality against the number of sampling steps, for a trained model.

The authors sample with N = 100 steps. This measures what fewer steps cost: PSNR (RGB and Y), SSIM and time per
image for N in {5, 10, 20, 50, 100} with the posterior sampler (the authors' default) and the reverse SDE, and for
the MR Sampler (`--samplers mrs`: each `--mrs-solvers` variant, e.g. ode-2 = ODE of order 2, at `--mrs-steps`), on
pairs of clean and degraded images with the same seed for every N, all timed in the same run.

Pairs come from `--pairs ROOT` (the authors' layout `ROOT/<degradation>/{LQ,GT}/*`, matched by file name) or are
synthesised from clean photos (`--clean DIR`, default: scikit-image's bundled photos) with `daclip.data.degrade`.

    python benchmarks/quality_vs_steps.py --model daclip-uir --pairs datasets/universal/val --max-images 20
    python benchmarks/quality_vs_steps.py --model assets/demo-model --degradations noisy hazy --size 128
    python benchmarks/quality_vs_steps.py --model assets/demo-model --held-out-crops 1 --size 128 \
        --samplers posterior mrs --steps 10 20 50 100 --output benchmarks/MRS_DEMO_MODEL.md

Without `--model` it says so and exits 0 (random weights would measure nothing). Results: a markdown table
(`--output`, default `benchmarks/QUALITY_VS_STEPS.md`) and the raw numbers as JSON beside it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_STEPS = (5, 10, 20, 50, 100)
DEFAULT_SAMPLERS = ("posterior", "sde")
DEFAULT_MRS_STEPS = (5, 10, 20)
DEFAULT_MRS_SOLVERS = ("ode-1", "ode-2", "ode-3", "sde-1", "sde-2")


def _as_batch(image: np.ndarray):
    """[H, W, C] (or [H, W]) in [0, 1] → the `[1, C, H, W]` float64 tensor `daclip.utils.image_metrics` takes."""
    import torch

    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 2:
        image = image[..., None]
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    from daclip.utils.image_metrics import psnr as batch_psnr

    return float(batch_psnr(_as_batch(a), _as_batch(b))[0])


def quantize_8bit(image: np.ndarray) -> np.ndarray:
    """What a saved 8-bit PNG holds (the authors score uint8 images)."""
    return np.round(np.clip(image, 0, 1) * 255) / 255


def luma(image: np.ndarray) -> np.ndarray:
    """BT.601 Y in [0, 1] (the `rgb2ycbcr(only_y=True)` of the authors' metrics, rescaled)."""
    return (image @ np.array([65.481, 128.553, 24.966]) + 16.0) / 255.0


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    from daclip.utils.image_metrics import ssim as batch_ssim

    return float(batch_ssim(_as_batch(a), _as_batch(b))[0])


def center_crop(image: np.ndarray, size: Optional[int]) -> np.ndarray:
    if size is None:
        return image
    height, width = image.shape[:2]
    side_h, side_w = min(size, height), min(size, width)
    top, left = (height - side_h) // 2, (width - side_w) // 2
    return image[top : top + side_h, left : left + side_w]


def read_rgb(path: Path) -> np.ndarray:
    from daclip.data.datasets import load_image  # the pipeline's reading rules

    return load_image(path)


def paired_images(root: Path) -> List[Tuple[str, str, np.ndarray, np.ndarray]]:
    """(name, degradation, lq, gt) from the authors' layout `root/<degradation>/{LQ,GT}/<name>`."""
    pairs = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        lq_dir, gt_dir = folder / "LQ", folder / "GT"
        if not (lq_dir.is_dir() and gt_dir.is_dir()):
            continue
        for lq_path in sorted(p for p in lq_dir.iterdir() if p.is_file()):
            gt_path = gt_dir / lq_path.name
            if gt_path.is_file():
                pairs.append((lq_path.stem, folder.name, read_rgb(lq_path), read_rgb(gt_path)))
    if not pairs:
        raise SystemExit(f"{root}: no pairs found in <degradation>/LQ and <degradation>/GT folders")
    return pairs


DEFAULT_SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")


def clean_photos(folder: Optional[Path], skimage_names=DEFAULT_SKIMAGE_PHOTOS) -> List[Tuple[str, np.ndarray]]:
    if folder is not None:
        from daclip.pipelines.daclip.image_processing import IMAGE_SUFFIXES

        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise SystemExit(f"{folder}: no images")
        return [(p.stem, read_rgb(p)) for p in paths]
    from skimage import data

    photos = []
    for name in skimage_names:
        image = getattr(data, name)()
        photos.append((name, image.astype(np.float32) / 255.0))
    return photos


def synthetic_pairs(clean, degradations: Optional[List[str]], seed: int):
    try:
        from daclip.data import SYNTHESISABLE, degrade
    except ImportError as error:
        raise SystemExit(f"synthetic pairs need daclip.data (degradation synthesis): {error}") from None
    labels = list(degradations or SYNTHESISABLE)
    pairs = []
    for index, (name, gt) in enumerate(clean):
        for label_index, label in enumerate(labels):
            lq = degrade(gt, label, rng=np.random.default_rng([seed, index, label_index]))
            pairs.append((name, label, np.clip(lq, 0, 1).astype(np.float32), gt))
    return pairs


def load_pipeline(args):
    import torch

    from daclip import DACLIPPipeline

    pipe = DACLIPPipeline.from_pretrained(args.model)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    pipe.to(device=device, dtype=getattr(torch, args.dtype))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def held_out_pairs(labels: List[str], size: int, count: int, seed: int):
    """The demo model's held-out pairs, as `evaluate_demo_model.py` makes them (same crops, same degradation seeds):
    `count` crops per degradation, taken in turn from the held-out photos (coffee, rocket), saved as 8-bit."""
    from evaluate_demo_model import HELD_OUT_PHOTOS, held_out_crops  # that script imports this one: import late

    from daclip.data import degrade

    per_photo = -(-count * len(labels) // len(HELD_OUT_PHOTOS))  # enough crops for every label to get its own
    crops = held_out_crops(HELD_OUT_PHOTOS, size, per_photo, seed)
    crops = sorted(crops, key=lambda crop: (crop[1], HELD_OUT_PHOTOS.index(crop[0])))  # alternate the photos
    pairs = []
    for label_index, label in enumerate(labels):
        for name, crop_index, clean in crops[label_index * count : (label_index + 1) * count]:
            rng = np.random.default_rng([seed, label_index, HELD_OUT_PHOTOS.index(name), crop_index])
            degraded = quantize_8bit(np.clip(degrade(clean, label, rng=rng), 0, 1)).astype(np.float32)
            pairs.append((f"{name}-{crop_index}", label, degraded, clean))
    return pairs


def sampler_runs(args) -> List[Tuple[str, str, Dict, List[int]]]:
    """(row label, sampler, scheduler overrides, steps) for every sampler variant to measure."""
    runs = []
    for sampler in args.samplers:
        if sampler != "mrs":
            runs.append((sampler, sampler, {}, list(args.steps)))
            continue
        for variant in args.mrs_solvers:
            solver, order = variant.split("-")
            runs.append((f"mrs {variant}", "mrs", {"solver": solver, "solver_order": int(order)}, list(args.mrs_steps)))
    return runs


def evaluate(args, on_progress=None) -> Dict:
    import torch

    from daclip.schedulers import scheduler_for_sampler

    pipe = load_pipeline(args)
    base_config = pipe.scheduler.config
    if args.held_out_crops:
        pairs = held_out_pairs(list(args.degradations or pipe.daclip.config.degradations), args.size, args.held_out_crops, args.seed)
    elif args.pairs:
        pairs = paired_images(Path(args.pairs))
    else:
        pairs = synthetic_pairs(
            clean_photos(Path(args.clean) if args.clean else None, args.skimage_photos), args.degradations, args.seed
        )
    pairs = [(name, label, center_crop(lq, args.size), center_crop(gt, args.size)) for name, label, lq, gt in pairs]
    if args.max_images:
        pairs = pairs[: args.max_images]
    runs = sampler_runs(args)
    print(f"{len(pairs)} image pairs; {[(label, steps) for label, _, _, steps in runs]}; {torch.get_num_threads()} threads", flush=True)

    # one untimed call, so that the first timing does not include one-off set-up (kernel selection, allocations)
    pipe(pairs[0][2], num_inference_steps=1, generator=torch.Generator().manual_seed(args.seed), output_type="np")
    records = []
    for run_label, sampler, overrides, steps_list in runs:
        pipe.scheduler = scheduler_for_sampler(sampler, base_config, **overrides)
        for steps in steps_list:
            for name, label, lq, gt in pairs:
                started = time.perf_counter()
                restored = pipe(
                    lq, num_inference_steps=steps, generator=torch.Generator().manual_seed(args.seed),
                    output_type="np", tile_size=args.tile_size,
                ).images[0]
                seconds = time.perf_counter() - started
                restored = quantize_8bit(restored)
                records.append(dict(
                    sampler=run_label, steps=steps, image=name, degradation=label, seconds=seconds,
                    psnr=psnr(restored, gt), psnr_y=psnr(luma(restored), luma(gt)), ssim=ssim(restored, gt),
                    psnr_input=psnr(lq, gt),
                ))
            if on_progress is not None:  # the table so far, so that a long run stopped early still reports
                on_progress({"records": records, "pairs": len(pairs), "runs": [(label, steps) for label, _, _, steps in runs],
                             "threads": torch.get_num_threads()})
            done = [r for r in records if r["sampler"] == run_label and r["steps"] == steps]
            print(f"{run_label:9s} N={steps:3d}: PSNR {np.mean([r['psnr'] for r in done]):.2f} dB, "
                  f"SSIM {np.mean([r['ssim'] for r in done]):.4f}, {np.mean([r['seconds'] for r in done]):.1f} s/image",
                  flush=True)
    return {"records": records, "pairs": len(pairs), "runs": [(label, steps) for label, _, _, steps in runs],
            "threads": torch.get_num_threads()}


def report(results: Dict, args) -> str:
    records = results["records"]
    runs = [(label, list(steps)) for label, steps in results["runs"]]
    source = (f"the demo model's held-out photos coffee and rocket, {args.held_out_crops} crop(s) per degradation"
              if args.held_out_crops else f"from {args.pairs}" if args.pairs else "synthesised with daclip.data.degrade")
    lines = [
        "# Quality against sampling steps",
        "",
        f"Model `{args.model}`, {results['pairs']} pairs "
        f"({source}{f', {args.size}×{args.size}' if args.size else ''}), seed {args.seed}, {args.dtype} on {args.device}, "
        f"{results.get('threads', '?')} torch thread(s); every row timed in the same run.",
        "Input PSNR (degraded vs clean): "
        f"{np.mean([r['psnr_input'] for r in records if r['sampler'] == runs[0][0] and r['steps'] == runs[0][1][0]]):.2f} dB.",
        "",
        "| sampler | steps | PSNR dB | PSNR-Y dB | SSIM | s / image |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for sampler, steps_list in runs:
        for steps in steps_list:
            group = [r for r in records if r["sampler"] == sampler and r["steps"] == steps]
            if not group:  # not measured yet
                continue
            lines.append(
                f"| {sampler} | {steps} | {np.mean([r['psnr'] for r in group]):.2f} | "
                f"{np.mean([r['psnr_y'] for r in group]):.2f} | {np.mean([r['ssim'] for r in group]):.4f} | "
                f"{np.mean([r['seconds'] for r in group]):.1f} |"
            )
    labels = sorted({r["degradation"] for r in records})
    for metric, title, digits in (("psnr", "PSNR dB", 2), ("ssim", "SSIM", 4)):
        if len(labels) < 2:
            break
        lines += ["", f"{title} per degradation:", "",
                  "| sampler | steps | " + " | ".join(labels) + " |",
                  "| --- | ---: | " + " | ".join("---:" for _ in labels) + " |"]
        for sampler, steps_list in runs:
            for steps in steps_list:
                cells = []
                if not any(r["sampler"] == sampler and r["steps"] == steps for r in records):
                    continue
                for label in labels:
                    group = [r[metric] for r in records if r["sampler"] == sampler and r["steps"] == steps
                             and r["degradation"] == label]
                    cells.append(f"{np.mean(group):.{digits}f}" if group else "–")
                lines.append(f"| {sampler} | {steps} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a trained pipeline folder (save_pretrained / `daclip convert`) or Hub id")
    parser.add_argument("--pairs", help="ROOT of the authors' layout ROOT/<degradation>/{LQ,GT}/")
    parser.add_argument("--clean", help="folder of clean photos to degrade (default: scikit-image's photos)")
    parser.add_argument("--skimage-photos", nargs="+", default=list(DEFAULT_SKIMAGE_PHOTOS),
                        help="without --clean: which scikit-image photos (e.g. coffee rocket: the demo model's held-out ones)")
    parser.add_argument("--degradations", nargs="+", help="labels to synthesise (default: every synthesisable one)")
    parser.add_argument("--steps", type=int, nargs="+", default=list(DEFAULT_STEPS))
    from daclip.schedulers import SAMPLERS

    parser.add_argument("--samplers", nargs="+", default=list(DEFAULT_SAMPLERS), choices=list(SAMPLERS))
    parser.add_argument("--mrs-steps", type=int, nargs="+", default=list(DEFAULT_MRS_STEPS), help="steps for the MR Sampler")
    parser.add_argument("--mrs-solvers", nargs="+", default=list(DEFAULT_MRS_SOLVERS),
                        choices=["ode-1", "ode-2", "ode-3", "sde-1", "sde-2"], help="MR Sampler variants: solver-order")
    parser.add_argument("--held-out-crops", type=int, default=0,
                        help="use the demo model's held-out photos: this many random crops per degradation")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--size", type=int, default=256, help="centre-crop every pair to this size (0: full images)")
    parser.add_argument("--max-images", type=int, help="use at most this many pairs")
    parser.add_argument("--tile-size", type=int, help="tiled noise prediction (for large full images)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--output", default=str(HERE / "QUALITY_VS_STEPS.md"))
    args = parser.parse_args(argv)
    if not args.model:
        print("quality_vs_steps: no trained model given (--model FOLDER); nothing to measure. "
              "Random weights restore nothing, so this needs a trained pipeline folder.")
        return 0
    if args.size == 0:
        args.size = None
    if any(not 1 <= steps <= 100 for steps in args.steps + args.mrs_steps):
        parser.error("--steps and --mrs-steps must be from 1 to 100")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    output = Path(args.output)

    def write(results: Dict) -> str:
        text = report(results, args)
        output.write_text(text)
        output.with_suffix(".json").write_text(json.dumps({"args": vars(args), **results}, indent=1))
        return text

    print(write(evaluate(args, on_progress=write)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
