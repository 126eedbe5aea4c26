"""The README's before/after sheet of the bundled examples: each example beside its restoration, with the label the
demo model detected.

    daclip restore assets/examples -o restored            # README's first command
    python scripts/demo/make_before_after.py restored assets/demo_before_after.jpg
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image, ImageDraw

from daclip import DACLIPModel
from daclip.demo import demo_daclip_path
from daclip.pipelines.daclip.image_processing import read_image_file

EXAMPLES = Path(__file__).resolve().parents[2] / "assets" / "examples"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("restored", type=Path, help="the folder `daclip restore assets/examples -o` wrote")
    parser.add_argument("output", type=Path, help="the sheet to write (JPEG)")
    parser.add_argument("--tile", type=int, default=320, help="width of each image on the sheet, pixels")
    args = parser.parse_args(argv)
    examples = sorted(path for path in EXAMPLES.iterdir() if path.suffix in (".png", ".jpg"))
    daclip = DACLIPModel.from_pretrained(demo_daclip_path())
    detections = daclip.detect_degradation([read_image_file(path)[0] for path in examples])
    rows = []
    for example, detection in zip(examples, detections):
        restored_path = args.restored / f"{example.stem}.png"
        with Image.open(example) as before, Image.open(restored_path) as after:
            detected = f"{detection.label} {detection.probability:.2f}"
            height = round(before.height * args.tile / before.width)
            pair = Image.new("RGB", (2 * args.tile, height + 18), "white")
            pair.paste(before.convert("RGB").resize((args.tile, height)), (0, 18))
            pair.paste(after.convert("RGB").resize((args.tile, height)), (args.tile, 18))
            ImageDraw.Draw(pair).text((4, 3), f"{example.name}  ->  restored (detected: {detected})", fill="black")
            rows.append(pair)
    columns = 2
    width = columns * rows[0].width
    row_heights = [max(pair.height for pair in rows[i : i + columns]) for i in range(0, len(rows), columns)]
    sheet = Image.new("RGB", (width, sum(row_heights)), "white")
    top = 0
    for row, height in zip(range(0, len(rows), columns), row_heights):
        for column, pair in enumerate(rows[row : row + columns]):
            sheet.paste(pair, (column * pair.width, top))
        top += height
    sheet.save(args.output, quality=85)
    print(f"wrote {args.output} ({len(rows)} examples)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
