#!/usr/bin/env python
"""Write a paired dataset in the authors' layout, root/<degradation>/{LQ,GT}/*.png, from clean photos degraded
by `daclip.data.degradations` (the same synthesis `--clean_images_dir` applies on the fly in the training scripts).

    # your clean photos: 2 random 256×256 crops of each, each crop hazy and noisy
    python scripts/make_paired_dataset.py --clean_images_dir photos/ --degradations hazy noisy \\
        --crops_per_image 2 --output_dir my_pairs

    # no photos at hand: scikit-image's sample photos (pip install scikit-image)
    python scripts/make_paired_dataset.py --clean_images skimage --degradations hazy noisy --output_dir my_pairs

The folder is what `train_unet.py --train_data_dir` and `train_daclip.py --train_data_dir` read; your own pairs go
in the same layout (an LQ image and its GT share a file name). Files are named <image number>_<crop number>.png;
the same --seed gives the same files.
"""
import argparse
from pathlib import Path

import training_utils as tu
from daclip.data import SYNTHESISABLE, SyntheticDegradationDataset


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=tu.HelpFormatter)
    tu.add_clean_image_arguments(parser, resolution=256)
    parser.add_argument("--crops_per_image", type=int, default=1, help="random crops of each clean image (each degraded by every label)")
    parser.add_argument("--seed", type=int, default=0, help="crop positions and degradation parameters")
    parser.add_argument("--output_dir", required=True, help="the dataset root to write (it must not exist or be empty)")
    args = parser.parse_args(argv)
    if bool(args.clean_images_dir) == bool(args.clean_images):
        parser.error("give --clean_images_dir or --clean_images skimage")
    if args.crops_per_image < 1:
        parser.error("--crops_per_image must be at least 1")
    if args.augment_clean_images:
        parser.error("--augment_clean_images is for training on the fly; pairs on disk are plain crops")
    output = Path(args.output_dir)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        parser.error(f"--output_dir {output} exists and is not empty: choose a new folder")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    labels = list(args.degradations or SYNTHESISABLE)
    with tu.data_errors():
        dataset = SyntheticDegradationDataset(
            tu.clean_image_source(args), degradations=labels, crop_size=args.resolution, seed=args.seed, flip=False
        )
    count = 0
    for crop in range(args.crops_per_image):
        dataset.set_epoch(crop)  # new crop positions and degradations
        for index in range(len(dataset)):
            item = dataset[index]
            name = f"{index // len(labels):04d}_{crop:02d}.png"
            for kind in ("LQ", "GT"):
                tu.save_image(item[kind.lower()], Path(args.output_dir, item["degradation"], kind, name))
            count += 1
    print(f"wrote {count} pairs ({', '.join(labels)}) to {args.output_dir}")


if __name__ == "__main__":
    main()
