#!/usr/bin/env python
"""Restoration quality against the number of sampling steps, for a trained model.

The authors sample with N = 100 steps. This measures what fewer steps cost: PSNR (RGB and Y), SSIM and time per
image for N in {5, 10, 20, 50, 100} with the posterior sampler (the authors' default) and the reverse SDE, on pairs
of clean and degraded images with the same seed for every N.

Pairs come from `--pairs ROOT` (the authors' layout `ROOT/<degradation>/{LQ,GT}/*`, matched by file name) or are
synthesised from clean photos (`--clean DIR`, default: scikit-image's bundled photos) with `daclip.data.degrade`.

    python benchmarks/quality_vs_steps.py --model daclip-uir --pairs datasets/universal/val --max-images 20
    python benchmarks/quality_vs_steps.py --model assets/demo-model --degradations noisy hazy --size 128

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


def evaluate(args) -> Dict:
    import torch

    from daclip.pipelines.daclip.pipeline_daclip import scheduler_for_sampler

    pipe = load_pipeline(args)
    base_config = pipe.scheduler.config
    if args.pairs:
        pairs = paired_images(Path(args.pairs))
    else:
        pairs = synthetic_pairs(
            clean_photos(Path(args.clean) if args.clean else None, args.skimage_photos), args.degradations, args.seed
        )
    pairs = [(name, label, center_crop(lq, args.size), center_crop(gt, args.size)) for name, label, lq, gt in pairs]
    if args.max_images:
        pairs = pairs[: args.max_images]
    print(f"{len(pairs)} image pairs; steps {args.steps}; samplers {args.samplers}", flush=True)

    # one untimed call, so that the first timing does not include one-off set-up (kernel selection, allocations)
    pipe(pairs[0][2], num_inference_steps=1, generator=torch.Generator().manual_seed(args.seed), output_type="np")
    records = []
    for sampler in args.samplers:
        pipe.scheduler = scheduler_for_sampler(sampler, base_config)
        for steps in args.steps:
            for name, label, lq, gt in pairs:
                started = time.perf_counter()
                restored = pipe(
                    lq, num_inference_steps=steps, generator=torch.Generator().manual_seed(args.seed),
                    output_type="np", tile_size=args.tile_size,
                ).images[0]
                seconds = time.perf_counter() - started
                restored = quantize_8bit(restored)
                records.append(dict(
                    sampler=sampler, steps=steps, image=name, degradation=label, seconds=seconds,
                    psnr=psnr(restored, gt), psnr_y=psnr(luma(restored), luma(gt)), ssim=ssim(restored, gt),
                    psnr_input=psnr(lq, gt),
                ))
            done = [r for r in records if r["sampler"] == sampler and r["steps"] == steps]
            print(f"{sampler:9s} N={steps:3d}: PSNR {np.mean([r['psnr'] for r in done]):.2f} dB, "
                  f"SSIM {np.mean([r['ssim'] for r in done]):.4f}, {np.mean([r['seconds'] for r in done]):.1f} s/image",
                  flush=True)
    return {"records": records, "pairs": len(pairs)}


def report(results: Dict, args) -> str:
    records = results["records"]
    lines = [
        "# Quality against sampling steps",
        "",
        f"Model `{args.model}`, {results['pairs']} pairs "
        f"({'from ' + args.pairs if args.pairs else 'synthesised with daclip.data.degrade'}"
        f"{f', centre crops of {args.size}' if args.size else ''}), seed {args.seed}, {args.dtype} on {args.device}.",
        "Input PSNR (degraded vs clean): "
        f"{np.mean([r['psnr_input'] for r in records if r['sampler'] == args.samplers[0] and r['steps'] == args.steps[0]]):.2f} dB.",
        "",
        "| sampler | steps | PSNR dB | PSNR-Y dB | SSIM | s / image |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for sampler in args.samplers:
        for steps in args.steps:
            group = [r for r in records if r["sampler"] == sampler and r["steps"] == steps]
            lines.append(
                f"| {sampler} | {steps} | {np.mean([r['psnr'] for r in group]):.2f} | "
                f"{np.mean([r['psnr_y'] for r in group]):.2f} | {np.mean([r['ssim'] for r in group]):.4f} | "
                f"{np.mean([r['seconds'] for r in group]):.1f} |"
            )
    labels = sorted({r["degradation"] for r in records})
    if len(labels) > 1:
        lines += ["", "PSNR dB per degradation:", "",
                  "| sampler | steps | " + " | ".join(labels) + " |",
                  "| --- | ---: | " + " | ".join("---:" for _ in labels) + " |"]
        for sampler in args.samplers:
            for steps in args.steps:
                cells = []
                for label in labels:
                    group = [r["psnr"] for r in records if r["sampler"] == sampler and r["steps"] == steps
                             and r["degradation"] == label]
                    cells.append(f"{np.mean(group):.2f}" if group else "–")
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
    parser.add_argument("--samplers", nargs="+", default=list(DEFAULT_SAMPLERS), choices=["posterior", "sde", "ode"])
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
    if any(not 1 <= steps <= 100 for steps in args.steps):
        parser.error("--steps must be from 1 to 100")
    results = evaluate(args)
    text = report(results, args)
    output = Path(args.output)
    output.write_text(text)
    output.with_suffix(".json").write_text(json.dumps({"args": vars(args), **results}, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
