#!/usr/bin/env python
"""Is it the sampler or the model? `evaluate_real_use.py`'s held-out crops, restored with every sampler setting.

Restores the cases of `benchmarks/REAL_USE.md` that miss issue 19's target (by default: snowy and JPEG china,
rainy rocket, JPEG of coffee, rocket and flower) and two undegraded crops (china and coffee: what the model gives
back when there is nothing to do), each with several samplers, and writes the output PSNR (dB, 8-bit RGB against
the clean crop) and its gain over the input per case. Same crops, degradations and seed as `evaluate_real_use.py`.

A setting is `SAMPLER[:KEY=VALUE...]@STEPS`, e.g. `mrs:solver=ode:solver_order=2@20` or `posterior@100`; keys are
scheduler config keys (`max_sigma` for λ on the 0–255 scale) set on top of the model's own scheduler config.

    python benchmarks/real_use_samplers.py      # the bundled demo model, the settings below
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from evaluate_real_use import SYNTHESIS_TYPES, TEXTBOOK_TYPES, crops_of, held_out_photos, textbook_degrade  # noqa: E402
from quality_vs_steps import psnr, quantize_8bit  # noqa: E402

SETTINGS = ("mrs@20", "mrs:solver=ode:solver_order=2@20", "mrs:solver_order=2@20", "posterior@100",
            "mrs:max_sigma=25@20", "mrs:max_sigma=10@20")
CASES = ("snowy/china", "rainy/rocket", "jpeg-compressed/coffee", "jpeg-compressed/rocket", "jpeg-compressed/china",
         "jpeg-compressed/flower", "clean/china", "clean/coffee")


def parse_setting(setting: str):
    """"mrs:solver=ode@20" → ("mrs", {"solver": "ode"}, 20); numbers become int or float."""
    head, _, steps = setting.partition("@")
    sampler, *pairs = head.split(":")
    overrides = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                pass
        overrides[key] = value
    return sampler, overrides, int(steps or 20)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(HERE.parent / "assets" / "demo-model"))
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS))
    parser.add_argument("--cases", nargs="+", default=list(CASES), help="TYPE/PHOTO")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(HERE / "REAL_USE_SAMPLERS.md"))
    args = parser.parse_args(argv)

    from daclip import DACLIPPipeline
    from daclip.schedulers.samplers import scheduler_for_sampler

    pipe = DACLIPPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    model_config = pipe.scheduler.config
    photos = held_out_photos()
    crops = {name: crop for name, index, crop in crops_of(photos, 256, 1, args.seed)}
    types = TEXTBOOK_TYPES + SYNTHESIS_TYPES
    cases = [case.split("/") for case in args.cases]

    lines = [f"# Samplers on the held-out crops that miss the target\n",
             f"Model `{Path(args.model).name}`, seed {args.seed}, the crops and degradations of `evaluate_real_use.py`. "
             "Output PSNR dB (gain over the input). Made by `python benchmarks/real_use_samplers.py`.\n",
             "| setting | " + " | ".join(f"{kind}/{photo}" for kind, photo in cases) + " |",
             "| --- |" + " ---: |" * len(cases)]
    for setting in args.settings:
        sampler, overrides, steps = parse_setting(setting)
        pipe.scheduler = scheduler_for_sampler(sampler, model_config, **overrides)
        cells = []
        for kind, photo in cases:
            clean = crops[photo]
            # the same generator as evaluate_real_use.py (one crop: crop index 0)
            rng = np.random.default_rng([args.seed, types.index(kind), list(photos).index(photo), 0])
            degraded = quantize_8bit(textbook_degrade(clean, kind, rng)).astype(np.float32)
            restored = pipe(degraded, num_inference_steps=steps, output_type="np",
                            generator=torch.Generator().manual_seed(args.seed)).images[0]
            out = psnr(quantize_8bit(restored), clean)
            cells.append(f"{out:.2f}" if kind == "clean" else f"{out:.2f} ({out - psnr(degraded, clean):+.2f})")
        lines.append(f"| `{setting}` | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    Path(args.output).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
