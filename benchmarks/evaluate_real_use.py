#!/usr/bin/env python
"""What a user sees: a model on photos it never saw, degraded the textbook way, and on real degraded photos.

`evaluate_demo_model.py` measures the demo model on crops degraded by our own synthesis, of two photos close to
its training set. This benchmark measures what a newcomer meets instead:

- **Held-out photos, textbook degradations.** Seeded random crops of photos no training saw (scikit-image's
  "coffee" and "rocket", and scikit-learn's "china.jpg" and "flower.jpg" when scikit-learn is installed),
  degraded the way image-processing textbooks and users do it, not by `daclip.data.degrade`:
  `noisy` additive Gaussian noise σ = 25 (0–255 scale); `low-light` gamma 2.2 then 60 % gain; `jpeg-compressed`
  JPEG quality 10 (Pillow); `clean` nothing at all (what is not degraded must be left alone). `hazy`, `rainy`
  and `snowy` have no single textbook form and use the synthesis module. Per type: input and output PSNR / SSIM
  against the clean crop (8-bit RGB), detection accuracy among the model's labels, and the mean colour error
  (CIEDE2000 between the clean crop and the image, both blurred with σ = 4 px so that only colour, not detail,
  counts), for every colour fix (`color_fix` none / wavelet / adain, applied to the same restoration).
- **Real photos** (the bundled `assets/examples/*_real.jpg` and `../shared/testdata/degraded/`): restored whole
  and checked for **lost regions**: a 32 × 32 block whose mean brightness (luma, after a 5 × 5 median filter so that
  flakes and streaks do not count) falls below a third of the input's. Photos named low-light or hazy are exempt
  (there, brightness is meant to change). A wrecked region (a blue sky turned black) is what this catches.

    python benchmarks/evaluate_real_use.py                                  # the bundled demo model
    python benchmarks/evaluate_real_use.py --sampler posterior --steps 100 --crops 4

Writes a markdown report (`--output`, default `benchmarks/REAL_USE.md`) and the numbers as JSON beside it.
"""
from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import PIL.Image
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from quality_vs_steps import psnr, quantize_8bit, ssim  # noqa: E402  (one PSNR/SSIM for every benchmark)

from daclip.utils.image_metrics import lost_regions  # noqa: E402

TEXTBOOK_TYPES = ("noisy", "low-light", "jpeg-compressed", "clean")
SYNTHESIS_TYPES = ("hazy", "rainy", "snowy")
EXEMPT_FROM_LOST_REGIONS = ("low-light", "hazy")  # brightness is meant to change there
BLOCK = 32


def held_out_photos() -> Dict[str, np.ndarray]:
    """name → float32 [H, W, 3] in [0, 1]: photos no training of this project used."""
    from skimage import data

    photos = {"coffee": data.coffee(), "rocket": data.rocket()}
    try:
        from sklearn.datasets import load_sample_image

        photos.update({"china": load_sample_image("china.jpg"), "flower": load_sample_image("flower.jpg")})
    except ImportError:
        pass
    return {name: photo.astype(np.float32) / 255.0 for name, photo in photos.items()}


def textbook_degrade(clean: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """The degradations users and textbooks mean by these words (float32 [H, W, 3] in [0, 1] → same)."""
    if kind == "noisy":
        return np.clip(clean + rng.normal(0.0, 25.0 / 255.0, clean.shape), 0, 1).astype(np.float32)
    if kind == "low-light":
        return (0.6 * clean**2.2).astype(np.float32)
    if kind == "jpeg-compressed":
        buffer = io.BytesIO()
        PIL.Image.fromarray(np.round(clean * 255).astype(np.uint8)).save(buffer, format="JPEG", quality=10)
        return np.asarray(PIL.Image.open(buffer).convert("RGB"), dtype=np.float32) / 255.0
    if kind == "clean":
        return clean
    from daclip.data import degrade

    return np.clip(degrade(clean, kind, rng=rng), 0, 1).astype(np.float32)


def colour_error(image: np.ndarray, clean: np.ndarray) -> float:
    """Mean CIEDE2000 between the σ = 4 px blurred images: the colour a viewer sees, detail left out."""
    from skimage.color import deltaE_ciede2000, rgb2lab
    from skimage.filters import gaussian

    blur = lambda x: gaussian(x, sigma=4, channel_axis=-1)  # noqa: E731
    return float(deltaE_ciede2000(rgb2lab(blur(clean)), rgb2lab(blur(image))).mean())


def lost_blocks(restored: np.ndarray, degraded: np.ndarray) -> int:
    """How many 32 × 32 blocks lost more than two thirds of their (median-filtered) brightness."""
    as_tensor = lambda image: torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)  # noqa: E731
    return int(lost_regions(as_tensor(restored), as_tensor(degraded), block=BLOCK)[0])


def crops_of(photos: Dict[str, np.ndarray], size: int, count: int, seed: int):
    for photo_index, (name, photo) in enumerate(photos.items()):
        rng = np.random.default_rng([seed, photo_index])
        height, width = photo.shape[:2]
        for crop_index in range(count):
            top, left = int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))
            yield name, crop_index, photo[top : top + size, left : left + size]


def evaluate(args) -> Dict:
    from daclip import DACLIPPipeline
    from daclip.pipelines.daclip.color_fix import COLOR_FIX_METHODS, apply_color_fix
    from daclip.pipelines.daclip.pipeline_daclip import scheduler_for_sampler

    pipe = DACLIPPipeline.from_pretrained(args.model)
    pipe.scheduler = scheduler_for_sampler(args.sampler, pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    labels = list(pipe.daclip.config.degradations)

    def restore(image: np.ndarray):
        started = time.perf_counter()
        output = pipe(image, num_inference_steps=args.steps, output_type="pt",
                      generator=torch.Generator().manual_seed(args.seed))
        seconds = time.perf_counter() - started
        tensor = torch.from_numpy(image).permute(2, 0, 1)[None]
        fixed = {method: apply_color_fix(output.images, tensor, method)[0].permute(1, 2, 0).numpy()
                 for method in COLOR_FIX_METHODS}
        return fixed, output.degradations[0], seconds

    records = []
    photos = held_out_photos()
    for type_index, kind in enumerate(TEXTBOOK_TYPES + SYNTHESIS_TYPES):
        for name, crop_index, clean in crops_of(photos, args.size, args.crops, args.seed):
            rng = np.random.default_rng([args.seed, type_index, list(photos).index(name), crop_index])
            degraded = quantize_8bit(textbook_degrade(clean, kind, rng)).astype(np.float32)
            fixed, detected, seconds = restore(degraded)
            record = dict(type=kind, photo=name, crop=crop_index, detected=detected, seconds=seconds,
                          psnr_input=psnr(degraded, clean), ssim_input=ssim(degraded, clean),
                          colour_error_input=colour_error(degraded, clean))
            for method, image in fixed.items():
                image = quantize_8bit(image)
                record[method] = dict(psnr=psnr(image, clean), ssim=ssim(image, clean),
                                      colour_error=colour_error(image, clean))
            records.append(record)
        done = [r for r in records if r["type"] == kind]
        print(f"{kind:16s} PSNR {np.mean([r['psnr_input'] for r in done]):.2f} → "
              f"{np.mean([r['none']['psnr'] for r in done]):.2f} dB", flush=True)

    real = []
    real_paths = sorted((REPO / "assets" / "examples").glob("*_real.*"))
    shared = REPO.parent / "shared" / "testdata" / "degraded"
    real_paths += sorted(shared.glob("*")) if shared.is_dir() else []
    for path in real_paths:
        if path.suffix.lower() not in (".png", ".jpg", ".jpeg"):
            continue
        degraded = np.asarray(PIL.Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
        fixed, detected, seconds = restore(degraded)
        exempt = any(path.name.startswith(kind) for kind in EXEMPT_FROM_LOST_REGIONS)
        entry = dict(photo=path.name, size=list(degraded.shape[:2]), detected=detected, seconds=seconds, exempt=exempt,
                     lost_blocks={method: lost_blocks(image, degraded) for method, image in fixed.items()},
                     blocks=(degraded.shape[0] // BLOCK) * (degraded.shape[1] // BLOCK))
        if args.save_real:
            out = Path(args.save_real)
            out.mkdir(parents=True, exist_ok=True)
            PIL.Image.fromarray(np.round(fixed["none"] * 255).astype(np.uint8)).save(out / f"{path.stem}.png")
        real.append(entry)
        print(f"{path.name:32s} detected {detected:12s} lost blocks {entry['lost_blocks']['none']}/{entry['blocks']}"
              + (" (exempt)" if exempt else ""), flush=True)
    return {"labels": labels, "photos": list(photos), "records": records, "real": real}


def report(results: Dict, args) -> str:
    from daclip.pipelines.daclip.color_fix import COLOR_FIX_METHODS

    labels = results["labels"]
    lines = [
        "# Real use: held-out photos, textbook degradations, real photos",
        "",
        f"Model `{args.model_shown}`, {args.sampler} sampler, {args.steps} steps, seed {args.seed}. Held-out photos: "
        f"{', '.join(results['photos'])} ({args.crops} random {args.size}×{args.size} crops each). Claimed labels: "
        f"{', '.join(labels)}. {platform.processor() or platform.machine()}, torch {torch.__version__}. Made by "
        f"`python benchmarks/evaluate_real_use.py {' '.join(args.argv)}`.",
        "",
        "| type | claimed | input PSNR / SSIM | output PSNR / SSIM | gain dB | detection | colour error in → out |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    rows = []
    for kind in TEXTBOOK_TYPES + SYNTHESIS_TYPES:
        done = [r for r in results["records"] if r["type"] == kind]
        mean = lambda key, method=None: float(np.mean([(r[method][key] if method else r[key]) for r in done]))  # noqa: E731
        claimed = kind in labels
        row = dict(type=kind, claimed=claimed, psnr_input=mean("psnr_input"), ssim_input=mean("ssim_input"),
                   psnr_output=mean("psnr", "none"), ssim_output=mean("ssim", "none"),
                   colour_error_input=mean("colour_error_input"), seconds=mean("seconds"),
                   detection=float(np.mean([r["detected"] == kind for r in done])) if claimed else None,
                   worst_photo_gain=min(
                       float(np.mean([r["none"]["psnr"] - r["psnr_input"] for r in done if r["photo"] == p]))
                       for p in results["photos"]),
                   color_fix={m: dict(psnr=mean("psnr", m), colour_error=mean("colour_error", m)) for m in COLOR_FIX_METHODS})
        rows.append(row)
        # A clean input has infinite PSNR: the output's PSNR alone says how much was damaged.
        gain = (f"{row['psnr_output'] - row['psnr_input']:+.2f} (worst photo {row['worst_photo_gain']:+.2f})"
                if np.isfinite(row["psnr_input"]) else "— (input untouched)")
        lines.append(
            f"| {kind} | {'yes' if claimed else 'no'} | {row['psnr_input']:.2f} / {row['ssim_input']:.3f} | "
            f"{row['psnr_output']:.2f} / {row['ssim_output']:.3f} | {gain} | "
            f"{'—' if row['detection'] is None else format(row['detection'], '.0%')} | "
            f"{row['colour_error_input']:.1f} → {row['color_fix']['none']['colour_error']:.1f} |"
        )
    lines += ["", "Colour fix on the same restorations (output PSNR dB / mean colour error, CIEDE2000):", "",
              "| type | " + " | ".join(COLOR_FIX_METHODS) + " |", "| --- |" + " ---: |" * len(COLOR_FIX_METHODS)]
    for row in rows:
        lines.append(f"| {row['type']} | " + " | ".join(
            f"{row['color_fix'][m]['psnr']:.2f} / {row['color_fix'][m]['colour_error']:.1f}" for m in COLOR_FIX_METHODS) + " |")
    lines += ["", "Real photos (lost regions: 32 × 32 blocks whose median-filtered brightness fell below a third of "
              "the input's; low-light and hazy photos exempt):", "",
              "| photo | size | detected | lost blocks (none / wavelet / adain) | s |", "| --- | --- | --- | ---: | ---: |"]
    for entry in results["real"]:
        lost = " / ".join(str(entry["lost_blocks"][m]) for m in COLOR_FIX_METHODS)
        lines.append(f"| {entry['photo']} | {entry['size'][1]}×{entry['size'][0]} | {entry['detected']} | "
                     f"{lost} of {entry['blocks']}{' (exempt)' if entry['exempt'] else ''} | {entry['seconds']:.1f} |")
    results["summary"] = rows
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(REPO / "assets" / "demo-model"), help="a pipeline folder or Hub id")
    parser.add_argument("--sampler", default="posterior", help="posterior, sde, ode (or any sampler name the CLI takes)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=256, help="side of the square held-out crops")
    parser.add_argument("--crops", type=int, default=2, help="crops per held-out photo and type")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-real", metavar="DIR", help="also write the restored real photos here, to look at")
    parser.add_argument("--output", default=str(HERE / "REAL_USE.md"))
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    model = Path(args.model).resolve()
    args.model_shown = str(model.relative_to(REPO)) if model.is_relative_to(REPO) else args.model
    results = evaluate(args)
    text = report(results, args)
    output = Path(args.output)
    output.write_text(text)
    output.with_suffix(".json").write_text(json.dumps({"args": {k: v for k, v in vars(args).items()}, **results}, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
