#!/usr/bin/env python
"""Write the example images README's first command restores (`assets/examples/`).

Two kinds, both small (at most 320 px wide) so the demo runs in a minute or two on a CPU:
- synthetic: scikit-image's "coffee" and "rocket" (never used in the demo model's training) degraded with
  `daclip.data.degrade` (seeded), one per label the demo model knows;
- real: degraded photos from the DA-CLIP authors' example set (MIT licence), downscaled, given with `--real`.

    python scripts/demo/make_examples.py --real ../shared/testdata/degraded
"""
import argparse
from pathlib import Path

import numpy as np
import PIL.Image

REPO = Path(__file__).resolve().parents[2]
SYNTHETIC = (("coffee", "hazy"), ("rocket", "low-light"), ("coffee", "noisy"), ("rocket", "rainy"), ("coffee", "snowy"))
REAL = ("hazy_548x412.jpg", "low-light_600x400.png", "snowy_640x428.jpg")
MAX_WIDTH = 320


def downscale(image: PIL.Image.Image) -> PIL.Image.Image:
    if image.width <= MAX_WIDTH:
        return image
    return image.resize((MAX_WIDTH, round(image.height * MAX_WIDTH / image.width)), PIL.Image.LANCZOS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real", type=Path, help="folder with the authors' example photos (../shared/testdata/degraded)")
    parser.add_argument("--output", type=Path, default=REPO / "assets" / "examples")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    from skimage import data

    from daclip.data import degrade

    args.output.mkdir(parents=True, exist_ok=True)
    for index, (photo, label) in enumerate(SYNTHETIC):
        clean = np.asarray(downscale(PIL.Image.fromarray(getattr(data, photo)())), dtype=np.float32) / 255
        degraded = degrade(clean, label, rng=np.random.default_rng([args.seed, index]))
        pixels = np.round(np.clip(degraded, 0, 1) * 255).astype(np.uint8)
        PIL.Image.fromarray(pixels).save(args.output / f"{photo}_{label}_synthetic.png")
    if args.real:
        for name in REAL:
            with PIL.Image.open(args.real / name) as image:
                label = name.split("_")[0]
                downscale(image.convert("RGB")).save(args.output / f"{label}_real.jpg", quality=95)


if __name__ == "__main__":
    main()
