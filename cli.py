"""The `daclip` command: restore, detect and convert from the shell.

Exit codes: 0 all done; 1 some inputs failed (the others were written); 2 bad arguments or no inputs;
3 the model could not be loaded; 130 interrupted (Ctrl-C; no partial file is left behind).

Reruns: an output's name depends only on its input's path (`OUTDIR/<subfolder>/<stem>.png`), and each result
records the name of the input it was restored from. Rerunning the same command skips every input whose
result exists (counted as done: exit 0 when nothing failed) and restores the rest; --overwrite redoes them.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from .pipelines.daclip.color_fix import COLOR_FIX_METHODS
from .pipelines.daclip.image_processing import read_image_file
from .schedulers.samplers import DEFAULT_STEPS, SAMPLERS

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_MODEL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
# The PNG text key naming the input a result was restored from: a rerun skips the inputs already done.
SOURCE_KEY = "daclip:source"

EXAMPLES = """\
examples:
  daclip restore photo.jpg -o restored/ --daclip daclip_ViT-B-32.pt --unet universal-ir.pth
  daclip restore photos/ -o restored/ --model daclip-uir --steps 50 --seed 0
  daclip restore photos/ -o restored/ --model daclip-uir --sampler mrs        (MR Sampler, 20 steps)
  daclip restore rainy.png -o out/ --model daclip-uir --degradation rainy
  daclip detect photos/ --model daclip-uir --json
  daclip convert --daclip daclip_ViT-B-32.pt --unet universal-ir.pth -o daclip-uir
  daclip download universal --to ComfyUI/models/daclip
"""


class UsageError(Exception):
    """A mistake in the command line; reported without a traceback, exit code 2."""


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model (a pipeline folder or Hub id, or the authors' released files)")
    group.add_argument("--model", help="a folder written by `daclip convert`/save_pretrained, or a Hub id")
    group.add_argument("--daclip", help="the authors' DA-CLIP file, e.g. daclip_ViT-B-32.pt")
    group.add_argument("--unet", help="the authors' restoration UNet file, e.g. universal-ir.pth")
    group.add_argument(
        "--daclip-config",
        help="open_clip config JSON, only for DA-CLIP files whose shapes do not reveal the architecture",
    )
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, mps ...")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="daclip",
        description="DA-CLIP universal image restoration: detect what is wrong with a photo and restore it.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    restore = commands.add_parser(
        "restore",
        help="restore images (files or folders) into an output folder",
        description="Restore images. Each INPUT is an image file or a folder of images; results are written "
        "as PNG into OUTDIR under the input's name. Inputs are never overwritten; existing outputs only "
        "with --overwrite. Files are written atomically: an interrupted run leaves no partial file.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    restore.add_argument("inputs", nargs="+", metavar="INPUT")
    restore.add_argument("-o", "--output-dir", required=True, metavar="OUTDIR")
    _add_model_arguments(restore)
    restore.add_argument(
        "--steps", type=int,
        help="sampling steps (UNet evaluations), 1 to the model's num_train_timesteps (100 for the released models); "
        "default: 20 for mrs, else 100 (the authors')",
    )
    restore.add_argument(
        "--sampler",
        choices=list(SAMPLERS),
        help="posterior: the authors' optimal-posterior step; sde: reverse SDE (Euler-Maruyama); ode: probability-flow "
        "ODE; mrs: MR Sampler (fast ODE/SDE solver, 10-20 steps). Default: the model's own (the authors' files: "
        "posterior)",
    )
    restore.add_argument(
        "--solver-order", type=int, choices=[1, 2, 3],
        help="mrs only: the MR Sampler's order (default: the model's setting, else 2; 3 for its ODE only)",
    )
    restore.add_argument(
        "--threads", type=int,
        help="CPU threads per process. Default: OMP_NUM_THREADS if you set it; under accelerate launch or torchrun, "
        "the cores divided among the local processes; else torch's (all cores). Running several daclip processes "
        "by hand? give each cores/processes",
    )
    restore.add_argument("--seed", type=int, default=0, help="random seed (each image uses this seed; default 0)")
    restore.add_argument(
        "--degradation",
        default="auto",
        help="auto: detect it; or a label (hazy, rainy, ...) or any text to steer what is removed",
    )
    restore.add_argument(
        "--tile-size",
        type=int,
        help="restore in overlapping tiles of this many pixels (e.g. 512, at least 32) to bound memory on large "
        "images; 0: the whole image at once (the default)",
    )
    restore.add_argument("--tile-overlap", type=int, default=32, help="pixels shared by neighbouring tiles (default 32)")
    restore.add_argument(
        "--color-fix",
        default="none",
        choices=list(COLOR_FIX_METHODS),
        help="none: the model's colours (default); wavelet / adain: carry the input's colour over to the output "
        "(against colour casts; not for low-light or haze, whose colour is meant to change)",
    )
    restore.add_argument("--recursive", action="store_true", help="also look into subfolders of folder inputs")
    restore.add_argument("--overwrite", action="store_true", help="replace existing output files")

    detect = commands.add_parser(
        "detect",
        help="print the degradation DA-CLIP sees in each image",
        description="Detect the degradation of each image: a table, or JSON with --json.",
    )
    detect.add_argument("inputs", nargs="+", metavar="INPUT")
    _add_model_arguments(detect)
    detect.add_argument("--labels", help="comma-separated labels to choose from (default: the 10 DA-CLIP labels)")
    detect.add_argument("--recursive", action="store_true")
    detect.add_argument("--json", action="store_true", help="print JSON: one object per image with all probabilities")

    convert = commands.add_parser(
        "convert",
        help="convert the authors' released files into a diffusers pipeline folder",
        description="Write a pipeline folder (safetensors) that `DACLIPPipeline.from_pretrained` and "
        "`DiffusionPipeline.from_pretrained(..., trust_remote_code=True)` load.",
    )
    convert.add_argument("--daclip", required=True)
    convert.add_argument("--unet", required=True)
    convert.add_argument("--daclip-config")
    convert.add_argument("-o", "--output-dir", required=True)

    download = commands.add_parser(
        "download",
        help="fetch the authors' released DA-CLIP and UNet files into a folder",
        description="Download the authors' released files of one variant (universal: daclip_ViT-B-32.pt + "
        "universal-ir.pth; mix: the _mix pair; wild: wild-daclip_ViT-L-14.pt + wild-ir.pth) from the Hugging Face "
        "Hub into DIR. Existing files are never replaced; a file appears only once complete; an interrupted "
        "download resumes when run again.",
    )
    download.add_argument("variant", choices=["universal", "mix", "wild"])
    download.add_argument("--to", required=True, metavar="DIR", help="the folder, e.g. ComfyUI/models/daclip")
    download.add_argument("--repo", default=None, help="Hub repository (default: the authors' weblzw/daclip-uir-ViT-B-32-irsde)")
    download.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")
    download.add_argument("--endpoint", default=None, help="the Hub's address (default: $HF_ENDPOINT or huggingface.co)")
    return parser


# ----------------------------------------------------------------------------------------------------
# Inputs and outputs
# ----------------------------------------------------------------------------------------------------
def _collect(inputs: Sequence[str], recursive: bool = False) -> List[Tuple[Path, Path]]:
    """(image file, its path relative to the folder it was found in, or its name for a file input)."""
    from .pipelines.daclip.image_processing import IMAGE_SUFFIXES

    found: List[Tuple[Path, Path]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            files = sorted(p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            found.extend((file, file.relative_to(path)) for file in files)
        elif path.is_file():
            found.append((path, Path(path.name)))
        else:
            raise UsageError(f"{item}: no such file or folder")
    if not found:
        raise UsageError("no images found in the given inputs")
    return found


def collect_images(inputs: Sequence[str], recursive: bool = False) -> List[Path]:
    return [path for path, _ in _collect(inputs, recursive)]


def restore_jobs(inputs: Sequence[str], output_dir: Path, recursive: bool = False) -> List[Tuple[Path, Path]]:
    """(input, output) pairs: `OUTDIR/<subfolder>/<stem>.png`, a function of the input's own path only, so that a
    rerun finds each input's result whatever else is in the folder. Two inputs with one output are refused."""
    jobs, owners = [], {}
    for source, relative in _collect(inputs, recursive):
        target = output_dir / relative.with_suffix(".png")
        if target in owners:
            raise UsageError(
                f"{owners[target]} and {source} would both be written to {target}: rename one, or restore them "
                "into different output folders"
            )
        owners[target] = source
        jobs.append((source, target))
    return jobs


def restored_from(target: Path) -> Optional[str]:
    """The input name a result records (None: not a readable result of ours)."""
    import PIL.Image

    try:
        with PIL.Image.open(target) as image:
            return getattr(image, "text", {}).get(SOURCE_KEY)
    except Exception:  # an unreadable file is not a finished result
        return None


def png_save_arguments(frames, sources, source: Path) -> dict:
    """How to write restored `frames` (PIL, one per input frame) so that what came in goes out: all frames (an
    animated PNG, with the input's frame durations and loop count), the ICC profile, the EXIF data (orientation
    already applied), and the name of the input (`SOURCE_KEY`)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(SOURCE_KEY, source.name)
    arguments = {"format": "PNG", "pnginfo": info}
    icc = frames[0].info.get("icc_profile")
    if icc:
        arguments["icc_profile"] = icc
    exif = sources[0].getexif()
    if len(exif):
        arguments["exif"] = exif.tobytes()
    if len(frames) > 1:
        durations = [frame.info.get("duration") for frame in sources]
        arguments.update(save_all=True, append_images=frames[1:], loop=sources[0].info.get("loop", 0))
        if all(duration is not None for duration in durations):
            arguments["duration"] = durations
    return arguments


def _current_umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def save_atomically(image, path: Path, **save_arguments) -> None:
    """Write next to the target and rename: the target is either absent or complete, never partial."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png.part", dir=path.parent)
    try:
        # Inside the try: Ctrl-C can land on any call, this one too, and must not strand the empty temporary.
        os.close(handle)
        image.save(temporary, **(save_arguments or {"format": "PNG"}))
        # mkstemp makes the file private (0600); a result should get the permissions any new file gets.
        os.chmod(temporary, 0o666 & ~_current_umask())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


# ----------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------
def _resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def check_device(name: str) -> None:
    """A usage error, before anything loads, for a device that is not one or that this machine lacks."""
    import torch

    if name == "auto":
        return
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {name!r} is not a device: use auto, cpu, cuda, cuda:1, mps ...") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: no CUDA GPU is usable here (torch.cuda.is_available() is False); "
                             "use --device cpu (or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                             f"numbered from 0")
    elif device.type != "cpu":
        backend = getattr(torch.backends, device.type, None) or getattr(torch, device.type, None)
        available = getattr(backend, "is_available", None)
        if available is None or not available():
            raise UsageError(f"--device {name}: no {device.type} device is available here; use --device cpu (or auto)")


def check_restore_arguments(args) -> None:
    """Usage errors (exit 2) that need no model: steps, tiles, device. Limits that come from the model (the
    scheduler's num_train_timesteps, the UNet's smallest input) are checked by `check_against_model`."""
    check_device(args.device)
    if args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps must be at least 1, got {args.steps}")
    if args.solver_order is not None and args.sampler not in (None, "mrs"):
        raise UsageError("--solver-order is an option of the MR Sampler: use it with --sampler mrs")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be at least 1, got {args.threads}")
    if args.tile_size == 0:
        args.tile_size = None  # as the node: 0 = the whole image at once
    if args.tile_size is not None and args.tile_size < 32:
        raise UsageError(f"--tile-size must be 0 (whole image) or at least 32 pixels, got {args.tile_size}")
    if args.tile_size is not None and not 0 <= args.tile_overlap < args.tile_size // 2:
        raise UsageError(f"--tile-overlap must be from 0 to {args.tile_size // 2 - 1} (below half --tile-size), "
                         f"got {args.tile_overlap}")


def check_against_model(args, pipe) -> None:
    """The limits the loaded model sets, checked once before any image (not once per image)."""
    from .pipelines.daclip.tiling import check_tiling

    num_train_timesteps = pipe.scheduler.config.num_train_timesteps
    if args.steps > num_train_timesteps:
        raise UsageError(f"--steps must be from 1 to {num_train_timesteps} (this model's scheduler has "
                         f"num_train_timesteps = {num_train_timesteps}), got {args.steps}")
    if args.tile_size is not None:
        try:
            check_tiling(args.tile_size, args.tile_overlap, pipe.unet.min_sample_size)
        except ValueError as error:
            raise UsageError(f"--tile-size/--tile-overlap: {error}") from None


def parse_label_list(text: Optional[str]) -> Optional[List[str]]:
    """`--labels "hazy, rainy"` → ["hazy", "rainy"]; an empty item is a usage error."""
    if text is None:
        return None
    labels = [label.strip() for label in text.split(",")]
    if not all(labels):
        raise UsageError(f"--labels {text!r} has an empty label; give comma-separated labels, e.g. \"hazy,rainy\"")
    if len(set(labels)) != len(labels):
        raise UsageError(f"--labels {text!r} repeats a label")
    return labels


def _no_model_given(args) -> bool:
    return not (args.model or args.daclip or args.unet)


def _say_demo(path) -> None:
    from .demo import demo_daclip_path

    # the labels come from the bundled DA-CLIP's own config, so the message follows a retrained demo model
    labels = json.loads((demo_daclip_path() / "config.json").read_text())["degradations"]
    print(f"daclip: no model given: using the demo model in {path} (small, trained on synthetic "
          f"{', '.join(labels)} images; see README). For real photos use the authors' weights: "
          "--daclip daclip_ViT-B-32.pt --unet universal-ir.pth", file=sys.stderr)


def load_pipeline(args):
    """The pipeline of `--model` (a pipeline folder, Hub id or train_unet.py checkpoint) or of `--daclip` +
    `--unet` (each a file, a model folder, a pipeline folder or a checkpoint), else the bundled demo model."""
    import torch

    from .pipelines.daclip.loading import load_pipeline as load_pipeline_at, load_pipeline_from_parts

    dtype = getattr(torch, args.dtype)
    if args.model and (args.daclip or args.unet):
        raise UsageError("give either --model or --daclip/--unet, not both")
    if _no_model_given(args):
        from .demo import demo_model_path

        try:
            args.model = str(demo_model_path())
        except FileNotFoundError as error:
            raise UsageError(
                f"no model given ({error}): give --daclip daclip_ViT-B-32.pt --unet universal-ir.pth (the authors' "
                "files), or --model FOLDER_OR_HUB_ID"
            ) from None
        _say_demo(args.model)
    if args.model:
        pipe = load_pipeline_at(args.model)
    elif args.daclip and args.unet:
        pipe = load_pipeline_from_parts(args.daclip, args.unet, daclip_config=args.daclip_config)
    else:
        raise UsageError("no model: give --model FOLDER_OR_HUB_ID, or both --daclip FILE.pt and --unet FILE.pth")
    return pipe.to(device=_resolve_device(args.device), dtype=dtype)


def load_daclip(args):
    """The DA-CLIP of `--model` or `--daclip` (any source the library's `load_daclip` takes), else the demo's."""
    import torch

    from .pipelines.daclip.loading import load_daclip as load_daclip_at

    if _no_model_given(args):
        from .demo import demo_daclip_path

        try:
            demo = demo_daclip_path()
        except FileNotFoundError as error:
            raise UsageError(f"no model given ({error}): give --model FOLDER_OR_HUB_ID, or --daclip FILE.pt") from None
        _say_demo(demo)
        source = demo
    elif args.model and args.daclip:
        raise UsageError("give either --model or --daclip, not both")
    else:
        source = args.model or args.daclip
    model = load_daclip_at(source, config=args.daclip_config)
    return model.to(device=_resolve_device(args.device), dtype=getattr(torch, args.dtype))


# How to act on a model of the other kind, in this command line's words (see CheckpointError.found).
_CLI_HINTS = {
    "file": "Pass the authors' files with --daclip/--unet (e.g. --daclip daclip_ViT-B-32.pt --unet universal-ir.pth).",
    "daclip": "It is a DA-CLIP: pass it with --daclip (restore also needs a UNet: --unet).",
    "unet": "It is a restoration UNet: pass it with --unet, with its DA-CLIP as --daclip.",
}


# ----------------------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------------------
def run_restore(args) -> int:
    from datetime import timedelta

    import torch
    from accelerate import PartialState
    from tqdm.auto import tqdm

    from .schedulers.samplers import sampler_of, scheduler_for_sampler
    from .utils.threads import configure_cpu_threads

    check_restore_arguments(args)
    output_dir = Path(args.output_dir)
    jobs = restore_jobs(args.inputs, output_dir, args.recursive)
    input_set = {source.resolve() for source, _ in jobs}
    for _, target in jobs:
        if target.resolve() in input_set:
            raise UsageError(f"{target} is one of the inputs; choose another output folder")

    # Started by `accelerate launch --multi_gpu --num_processes K` (or torchrun), process i restores inputs i, i+K,
    # i+2K, ... Every image is sampled with its own generator seeded by --seed, so the files equal a single-process
    # run. `cpu=True` lets CPU processes join through gloo; the long timeout is for the final barrier. Alone (no
    # launcher), this is one process with every input.
    state = PartialState(cpu=_resolve_device(args.device).type == "cpu", timeout=timedelta(days=7))
    if state.num_processes > 1 and args.device == "auto" and state.device.type != "cpu":
        args.device = str(state.device)  # one GPU per process
    tag = f"[{state.process_index + 1}/{state.num_processes}] " if state.num_processes > 1 else ""
    share = jobs[state.process_index :: state.num_processes]

    threads = configure_cpu_threads(args.threads, state.num_processes)
    pipe = _load_or_exit(load_pipeline, args)
    sampler = args.sampler or sampler_of(pipe.scheduler)
    if args.solver_order is not None and sampler != "mrs":
        raise UsageError(f"--solver-order is an option of the MR Sampler (this model samples with {sampler}): add --sampler mrs")
    overrides = {"solver_order": args.solver_order} if args.solver_order is not None else {}
    try:
        pipe.scheduler = scheduler_for_sampler(sampler, pipe.scheduler.config, **overrides)
    except ValueError as error:  # e.g. --solver-order 3 with a model whose MR Sampler uses the SDE
        raise UsageError(str(error)) from None
    args.steps = args.steps if args.steps is not None else DEFAULT_STEPS[sampler]
    check_against_model(args, pipe)
    if state.num_processes > 1 and state.is_main_process and pipe.device.type == "cpu":
        print(f"daclip: {state.num_processes} processes, {threads} CPU thread(s) each (--threads to choose)", file=sys.stderr)
    pipe.set_progress_bar_config(leave=False, desc="sampling")
    degradation = None if args.degradation == "auto" else args.degradation

    failures = 0
    for source, target in tqdm(share, desc=f"{tag}images", unit="image"):
        if target.exists() and not args.overwrite:
            if restored_from(target) == source.name:
                tqdm.write(f"{tag}{source}: done already ({target}; --overwrite redoes it)")
                continue
            tqdm.write(f"failed {source}: {target} exists and is not its result (use --overwrite to replace it)",
                       file=sys.stderr)
            failures += 1
            continue
        try:
            frames = read_image_file(source)
            if len({frame.size for frame in frames}) > 1:  # one animated PNG needs one size
                raise ValueError(f"{source}: its frames differ in size; save them as separate files to restore them")
            results, labels = [], []
            for frame in frames:  # every frame of an animated or multi-page file, each sampled with --seed
                result = pipe(
                    frame,
                    num_inference_steps=args.steps,
                    generator=torch.Generator().manual_seed(args.seed),
                    degradation=degradation,
                    tile_size=args.tile_size,
                    tile_overlap=args.tile_overlap,
                    color_fix=args.color_fix,
                )
                results.append(result.images[0])
                labels.append(result.degradations[0])
            save_atomically(results[0], target, **png_save_arguments(results, frames, source))
            frames_note = f", {len(frames)} frames" if len(frames) > 1 else ""
            tqdm.write(f"{tag}{source} -> {target} ({', '.join(dict.fromkeys(labels))}{frames_note})")
        except Exception as error:  # one input never sinks the run: report it in one line, go on
            tqdm.write(f"failed {source}: {describe_failure(error, args)}", file=sys.stderr)  # not inside a bar
            failures += 1
    if state.num_processes > 1:
        # The launcher stops every process once one exits with an error: let all finish their share first.
        state.wait_for_everyone()
    return EXIT_SOME_FAILED if failures else EXIT_OK


def run_detect(args) -> int:
    if args.unet:
        raise UsageError("detect uses DA-CLIP only: --unet is not used; give --daclip FILE.pt or --model")
    check_device(args.device)
    labels = parse_label_list(args.labels)
    inputs = collect_images(args.inputs, args.recursive)
    model = _load_or_exit(load_daclip, args)
    records, failures = [], 0
    for path in inputs:
        try:
            frames = read_image_file(path)
            predictions = model.detect_degradation(frames, labels=labels)
        except Exception as error:  # one input never sinks the run
            print(f"failed {path}: {describe_failure(error, args)}", file=sys.stderr)
            failures += 1
            continue
        for index, prediction in enumerate(predictions):
            record = {"image": str(path) if len(frames) == 1 else f"{path}[{index}]", "degradation": prediction.label,
                      "probability": prediction.probability, "probabilities": prediction.probabilities}
            if len(frames) > 1:
                record["frame"] = index
            records.append(record)
    if args.json:
        print(json.dumps(records, indent=2))
    else:
        width = max([len(record["image"]) for record in records] + [5])
        print(f"{'image':<{width}}  {'degradation':<16} probability")
        for record in records:
            print(f"{record['image']:<{width}}  {record['degradation']:<16} {record['probability']:.3f}")
    return EXIT_SOME_FAILED if failures else EXIT_OK


def run_convert(args) -> int:
    from .pipelines.daclip.convert_original import convert_to_diffusers

    output_dir = Path(args.output_dir)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise UsageError(f"{output_dir} exists and is not an empty folder; choose a new folder")
    _load_or_exit(lambda a: convert_to_diffusers(output_dir, a.daclip, a.unet, daclip_config=a.daclip_config), args)
    print(f"wrote {output_dir}")
    return EXIT_OK


def run_download(args) -> int:
    from .pipelines.daclip.hub import ORIGINAL_REPO_ID, download_file_to_folder, ORIGINAL_CHECKPOINTS

    kept = lambda path: print(f"kept {path} (already there; delete it to download again)")  # noqa: E731
    for filename in ORIGINAL_CHECKPOINTS[args.variant]:
        try:
            path = download_file_to_folder(
                args.repo or ORIGINAL_REPO_ID, filename, args.to, revision=args.revision, endpoint=args.endpoint,
                on_existing=kept,
            )
        except Exception as error:  # network, HTTP and disk errors alike: say which file, keep the partial data
            print(f"daclip download: {filename}: {error}", file=sys.stderr)
            return EXIT_SOME_FAILED
        print(f"{path}")
    return EXIT_OK


def describe_failure(error: BaseException, args) -> str:
    """One line for a failed input; out of memory comes with what to change."""
    import gc

    import torch

    if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        hints = ["--tile-size 512 (or smaller) to bound memory"] if hasattr(args, "tile_size") else []
        if getattr(args, "dtype", "float32") == "float32":
            hints.append("--dtype bfloat16 on a GPU to halve it")
        return f"out of memory ({type(error).__name__})" + (f"; try {' or '.join(hints)}" if hints else "")
    message = (str(error).strip().splitlines() or [""])[0]
    if isinstance(error, (ValueError, TypeError, OSError, FloatingPointError)):
        return message or type(error).__name__
    return f"{type(error).__name__}: {message}"  # unexpected: the type tells a bug report where to look


class _ModelLoadFailed(Exception):
    pass


def _load_or_exit(loader, args):
    from .utils import CheckpointError

    try:
        return loader(args)
    except UsageError:
        raise
    except CheckpointError as error:
        raise _ModelLoadFailed(str(error.with_hint(_CLI_HINTS.get(error.found, error.hint)))) from None
    except (ValueError, OSError) as error:
        raise _ModelLoadFailed(str(error)) from None


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    handlers = {"restore": run_restore, "detect": run_detect, "convert": run_convert, "download": run_download}
    try:
        return handlers[args.command](args)
    except UsageError as error:
        print(f"daclip {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except _ModelLoadFailed as error:
        print(f"daclip {args.command}: cannot load the model: {error}", file=sys.stderr)
        return EXIT_MODEL
    except KeyboardInterrupt:
        print("interrupted; files already written are complete, none is partial", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
