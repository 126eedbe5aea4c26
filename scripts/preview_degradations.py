#!/usr/bin/env python
"""Contact sheet of every synthetic degradation on a few scikit-image photos, to eyeball them.

    python scripts/preview_degradations.py --output /tmp/degradations.png --seed 0 --size 256

Rows: photos (astronaut, chelsea, coffee by default; or your own with --images). Columns: the clean
crop, then each label of `daclip.data.SYNTHESISABLE`. Prints the time each degradation took.
"""
import argparse
import time

import numpy as np
from PIL import Image, ImageDraw

from daclip.data.datasets import load_image
from daclip.data.degradations import SYNTHESISABLE, degrade


def _skimage_photos():
    from skimage import data

    return [data.astronaut(), data.chelsea(), data.coffee()]


def _centre_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize the short side to `size` and centre-crop to a square, float32 [0, 1]."""
    pil = Image.fromarray(image) if image.dtype == np.uint8 else Image.fromarray((image * 255).round().astype(np.uint8))
    scale = size / min(pil.size)
    pil = pil.resize((max(size, round(pil.width * scale)), max(size, round(pil.height * scale))), Image.BICUBIC)
    left, top = (pil.width - size) // 2, (pil.height - size) // 2
    return np.asarray(pil.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="degradations.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=256, help="side of each square tile")
    parser.add_argument("--images", nargs="*", help="image files to use instead of the scikit-image photos")
    parser.add_argument("--labels", nargs="*", default=SYNTHESISABLE)
    args = parser.parse_args()

    if args.images:
        photos = [(load_image(path) * 255).round().astype(np.uint8) for path in args.images]
    else:
        photos = _skimage_photos()
    clean = [_centre_square(photo, args.size) for photo in photos]
    header = 20
    columns = ["clean"] + list(args.labels)
    sheet = Image.new("RGB", (len(columns) * args.size, header + len(clean) * args.size), "white")
    draw = ImageDraw.Draw(sheet)
    for column, name in enumerate(columns):
        draw.text((column * args.size + 4, 4), name, fill="black")

    timings = {label: [] for label in args.labels}
    for row, image in enumerate(clean):
        tiles = [image]
        for label in args.labels:
            rng = np.random.default_rng([args.seed, row, SYNTHESISABLE.index(label)])
            start = time.perf_counter()
            tiles.append(degrade(image, label, rng))
            timings[label].append(time.perf_counter() - start)
        for column, tile in enumerate(tiles):
            tile_image = Image.fromarray((tile * 255).round().astype(np.uint8))
            sheet.paste(tile_image, (column * args.size, header + row * args.size))
    sheet.save(args.output)
    print(f"wrote {args.output}")
    for label, seconds in timings.items():
        print(f"{label:16s} {1000 * np.mean(seconds):7.1f} ms per {args.size}x{args.size} image")


if __name__ == "__main__":
    main()
