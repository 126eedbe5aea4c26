"""Write the demo model's clean training images into a folder: scikit-image's bundled photos (minus the held-out
ones) and dead-leaves images (`daclip.data.procedural.dead_leaves`), as PNG.

    python scripts/demo/make_training_images.py OUT_DIR [--dead_leaves 64] [--size 384] [--seed 0] [--hold_out coffee rocket]

Held out (never written): scikit-image's coffee and rocket by default; scikit-learn's china.jpg and flower.jpg are
never used for training (benchmarks/evaluate_real_use.py measures on all four).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import training_utils as tu  # noqa: E402

from daclip.data.procedural import dead_leaves  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--dead_leaves", type=int, default=64, help="how many dead-leaves images")
    parser.add_argument("--size", type=int, default=384, help="side of the dead-leaves images, pixels")
    parser.add_argument("--seed", type=int, default=0, help="dead-leaves image i uses seed + i")
    parser.add_argument("--hold_out", nargs="*", default=["coffee", "rocket"], choices=tu.SKIMAGE_PHOTOS)
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    names = [name for name in tu.SKIMAGE_PHOTOS if name not in args.hold_out]
    for name, photo in zip(names, tu.skimage_photos(names)):
        Image.fromarray(photo).save(args.out_dir / f"skimage_{name}.png")
    for index in range(args.dead_leaves):
        path = args.out_dir / f"dead_leaves_{index:03d}.png"
        if not path.exists():
            image = dead_leaves(args.size, np.random.default_rng(args.seed + index))
            Image.fromarray(np.round(image * 255).astype(np.uint8)).save(path)
    print(f"{len(names)} photos and {args.dead_leaves} dead-leaves images in {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
