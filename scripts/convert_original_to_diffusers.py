#!/usr/bin/env python
"""Convert the authors' released DA-CLIP / UNet files into diffusers folders (safetensors).

    # both: a pipeline folder (DACLIPPipeline.from_pretrained / DiffusionPipeline(..., trust_remote_code=True))
    python scripts/convert_original_to_diffusers.py --daclip daclip_ViT-B-32.pt --unet universal-ir.pth --output_dir daclip-uir
    # one model: a model folder (DACLIPModel.from_pretrained / DACLIPUNet2DModel.from_pretrained)
    python scripts/convert_original_to_diffusers.py --unet wild-ir.pth --output_dir wild-ir-unet

The source files are read with `torch.load(weights_only=True)` only; nothing in them is executed. A DA-CLIP
whose architecture is not a released one needs its open_clip config (--daclip_config, or a JSON of the same
name beside the file). The same function does `daclip convert`.
"""
import argparse
import sys

from daclip import CheckpointError
from daclip.pipelines.daclip.convert_original import convert_to_diffusers


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--daclip", help="the authors' DA-CLIP file (*.pt)")
    parser.add_argument("--unet", help="the authors' restoration UNet file (*.pth)")
    parser.add_argument("--daclip_config", help="open_clip config JSON, only for DA-CLIPs whose shapes don't tell (default: the same-name JSON beside the file)")
    parser.add_argument("--output_dir", required=True)
    args = parser.parse_args(argv)
    if not (args.daclip or args.unet):
        parser.error("give --daclip, --unet, or both")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        convert_to_diffusers(args.output_dir, args.daclip, args.unet, daclip_config=args.daclip_config)
    except FileExistsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (CheckpointError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    print(f"wrote {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
