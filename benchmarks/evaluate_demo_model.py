#!/usr/bin/env python
"""How well a trained pipeline restores and recognises synthetic degradations of photos it never saw.

For each degradation label the model was trained on (its DA-CLIP's `config.degradations`) and each held-out clean
crop (random crops of scikit-image's "coffee" and "rocket", which the demo model's training never used), the crop is
degraded with `daclip.data.degrade` (seeded), then

- **detection**: `DACLIPModel.detect_degradation` among the trained labels, right or wrong;
- **restoration** (on the first `--restore-crops` crops per photo): `DACLIPPipeline` with the posterior sampler,
  scored on the 8-bit output like the authors: PSNR / SSIM of the input and of the output against the clean crop.

    python benchmarks/evaluate_demo_model.py                                  # the bundled assets/demo-model
    python benchmarks/evaluate_demo_model.py --model my-restorer --steps 50

Writes a markdown table (`--output`, default `benchmarks/DEMO_MODEL.md`) and every number as JSON beside it.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from quality_vs_steps import psnr, quantize_8bit, ssim  # noqa: E402  (one PSNR/SSIM for every benchmark)

HELD_OUT_PHOTOS = ("coffee", "rocket")


def held_out_crops(names, size: int, count: int, seed: int) -> List[tuple]:
    """(photo name, crop index, float32 [size, size, 3] in [0, 1]): `count` seeded random crops per photo."""
    from skimage import data

    crops = []
    for photo_index, name in enumerate(names):
        photo = getattr(data, name)().astype(np.float32) / 255.0
        rng = np.random.default_rng([seed, photo_index])
        height, width = photo.shape[:2]
        for crop_index in range(count):
            top, left = int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))
            crops.append((name, crop_index, photo[top : top + size, left : left + size]))
    return crops


def evaluate(args) -> Dict:
    from daclip import DACLIPPipeline, load_daclip, load_pipeline
    from daclip.data import degrade
    from daclip.pipelines.daclip.loading import identify

    source = identify(args.model)
    if source.component == "daclip":  # a DACLIPModel folder or a train_daclip.py checkpoint: detection only
        pipe, args.restore_crops = None, 0
        daclip = load_daclip(args.model).eval()
    else:
        pipe = load_pipeline(args.model)
        pipe.set_progress_bar_config(disable=True)
        daclip = pipe.daclip
    low_precision = {}
    if args.precision and pipe is not None:
        # The authors' UNet uses LayerNorm eps 1e-3 outside float32 (a model trained in float32 saw 1e-5):
        # measure their rule and the opt-in 1e-5.
        for eps in (None, 1e-5):
            variant = DACLIPPipeline.from_pretrained(args.model).to(dtype=getattr(torch, args.precision))
            variant.set_progress_bar_config(disable=True)
            if eps is not None:
                variant.unet.set_channel_norm_eps(eps)
            low_precision[f"{args.precision}" + (f", eps {eps:g}" if eps else "")] = variant
    labels = list(daclip.config.degradations)
    crops = held_out_crops(HELD_OUT_PHOTOS, args.size, args.crops, args.seed)
    records = []
    for label_index, label in enumerate(labels):
        for name, crop_index, clean in crops:
            rng = np.random.default_rng([args.seed, label_index, HELD_OUT_PHOTOS.index(name), crop_index])
            degraded = np.clip(degrade(clean, label, rng=rng), 0, 1).astype(np.float32)
            degraded = quantize_8bit(degraded).astype(np.float32)  # what a saved photo would hold
            detected = daclip.detect_degradation(degraded, labels=labels)[0].label
            record = dict(degradation=label, photo=name, crop=crop_index, detected=detected)
            if crop_index < args.restore_crops:
                started = time.perf_counter()
                restored = pipe(
                    degraded, num_inference_steps=args.steps, output_type="np",
                    generator=torch.Generator().manual_seed(args.seed),
                ).images[0]
                record["seconds"] = time.perf_counter() - started
                restored = quantize_8bit(restored)
                for name, variant in low_precision.items():
                    other = variant(
                        degraded, num_inference_steps=args.steps, output_type="np",
                        generator=torch.Generator().manual_seed(args.seed),
                    ).images[0]
                    record.setdefault("psnr_vs_float32", {})[name] = psnr(quantize_8bit(other.astype(np.float32)), restored)
                record.update(
                    psnr_input=psnr(degraded, clean), ssim_input=ssim(degraded, clean),
                    psnr_output=psnr(restored, clean), ssim_output=ssim(restored, clean),
                )
            records.append(record)
        done = [r for r in records if r["degradation"] == label]
        restored = [r for r in done if "psnr_output" in r]
        scores = (f"; PSNR {np.mean([r['psnr_input'] for r in restored]):.2f} → "
                  f"{np.mean([r['psnr_output'] for r in restored]):.2f} dB" if restored else "")
        print(f"{label:16s} detection {np.mean([r['detected'] == label for r in done]):.0%}{scores}", flush=True)
    return {"labels": labels, "records": records}


def summary_rows(results: Dict) -> List[Dict]:
    rows = []
    for label in results["labels"]:
        done = [r for r in results["records"] if r["degradation"] == label]
        restored = [r for r in done if "psnr_output" in r]
        row = {"degradation": label, "detections": len(done),
               "detection_accuracy": float(np.mean([r["detected"] == label for r in done])),
               "restored": len(restored)}
        if not restored:
            rows.append(row)
            continue
        for key in ("psnr_input", "ssim_input", "psnr_output", "ssim_output", "seconds"):
            row[key] = float(np.mean([r[key] for r in restored]))
        row["psnr_gain"] = row["psnr_output"] - row["psnr_input"]
        for name in restored[0].get("psnr_vs_float32", {}):
            row.setdefault("psnr_vs_float32", {})[name] = float(np.min([r["psnr_vs_float32"][name] for r in restored]))
        rows.append(row)
    return rows


def shown_model(model: str) -> str:
    """The model as the report names it: relative to the repository when inside it, so no machine path is shown."""
    path = Path(model).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else model


def report(rows: List[Dict], args) -> str:
    detections = sum(r["detections"] for r in rows)
    accuracy = sum(r["detection_accuracy"] * r["detections"] for r in rows) / detections
    if not any(r["restored"] for r in rows):
        lines = [
            "# Demo DA-CLIP: held-out detection",
            "",
            f"Model `{shown_model(args.model)}` (a DA-CLIP alone: detection only). Images: {args.crops} random {args.size}×{args.size} "
            f"crops of each of scikit-image's {' and '.join(HELD_OUT_PHOTOS)} (photos the training never saw), each "
            f"degraded by `daclip.data.degrade` with every label (seed {args.seed}). Argmax over the model's "
            f"{len(rows)} labels. {platform.processor() or platform.machine()}, torch {torch.__version__}.",
            "",
            "| degradation | detection accuracy |",
            "| --- | ---: |",
        ]
        lines += [f"| {r['degradation']} | {r['detection_accuracy']:.1%} ({r['detections']}) |" for r in rows]
        lines += ["", f"Over all {detections} held-out images: {accuracy:.1%}."]
        return "\n".join(lines) + "\n"
    lines = [
        "# Demo model: held-out quality",
        "",
        f"Model `{shown_model(args.model)}`. Clean images: {args.crops} random {args.size}×{args.size} crops of each of scikit-image's "
        f"{' and '.join(HELD_OUT_PHOTOS)} (photos the training never saw), degraded by `daclip.data.degrade` "
        f"(seed {args.seed}). Restoration: posterior sampler, {args.steps} steps, on {args.restore_crops} crop(s) per "
        f"photo; PSNR/SSIM on 8-bit RGB. Detection: argmax over the model's {len(rows)} labels. "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}.",
        "",
        "| degradation | input PSNR dB | input SSIM | output PSNR dB | output SSIM | PSNR gain dB | detection accuracy | s / image |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['degradation']} | {r['psnr_input']:.2f} | {r['ssim_input']:.4f} | {r['psnr_output']:.2f} | "
            f"{r['ssim_output']:.4f} | {r['psnr_gain']:+.2f} | {r['detection_accuracy']:.0%} ({r['detections']}) | "
            f"{r['seconds']:.1f} |"
        )
    lines += ["", f"Detection accuracy over all {detections} held-out images: {accuracy:.1%}."]
    if "psnr_vs_float32" in rows[0]:
        names = list(rows[0]["psnr_vs_float32"])
        lines += ["", "Reduced precision: PSNR (dB) of the 8-bit output against the float32 output, same seed "
                  "(lowest over the restored crops):", "",
                  "| degradation | " + " | ".join(names) + " |", "| --- | " + " | ".join("---:" for _ in names) + " |"]
        lines += [f"| {r['degradation']} | " + " | ".join(f"{r['psnr_vs_float32'][n]:.1f}" for n in names) + " |"
                  for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None,
                        help="a trained pipeline folder or Hub id, or a DACLIPModel folder (detection only); default: "
                        "the bundled assets/demo-model")
    parser.add_argument("--size", type=int, default=256, help="side of the square held-out crops")
    parser.add_argument("--crops", type=int, default=8, help="crops per held-out photo (all are used for detection)")
    parser.add_argument("--restore-crops", type=int, default=2, help="of those, how many per photo are restored")
    parser.add_argument("--steps", type=int, default=100, help="posterior sampling steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", choices=["bfloat16", "float16"],
                        help="also restore in this dtype and report its PSNR against the float32 output")
    parser.add_argument("--output", default=str(HERE / "DEMO_MODEL.md"))
    args = parser.parse_args(argv)
    if args.model is None:
        args.model = str(REPO / "assets" / "demo-model")
    if not 1 <= args.restore_crops <= args.crops:
        parser.error("--restore-crops must be from 1 to --crops")
    results = evaluate(args)
    rows = summary_rows(results)
    text = report(rows, args)
    output = Path(args.output)
    output.write_text(text)
    output.with_suffix(".json").write_text(json.dumps({"args": vars(args), "summary": rows, **results}, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
