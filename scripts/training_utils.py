"""Plumbing shared by `train_unet.py` and `train_daclip.py` (not part of the `daclip` package).

- argument groups common to both scripts (optimisation, accelerate, checkpoints, validation, data and
  DA-CLIP sources);
- data: the clean-image sources (a folder, or scikit-image's bundled photos), held-out splits;
- accelerate: the `Accelerator` both scripts use, with a JSON-lines metrics log that is always written;
- runs: an `--output_dir` that already holds a run is refused unless resumed or overwritten; a resume is
  compared with the run's recorded settings (`<logging_dir>/config.json`); the training recipe saved beside a
  trained model (`training_recipe.json`) and reused when that model is trained on;
- checkpoints: `checkpoint-<global step>` folders, `--checkpoints_total_limit` pruning, resume resolution,
  the EMA state;
- image-quality metrics: PSNR and SSIM in torch (SSIM as Wang et al. / scikit-image with
  `gaussian_weights=True, sigma=1.5, use_sample_covariance=False`, i.e. the authors' `calculate_ssim`).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from daclip import DACLIPModel
from daclip import load_daclip as load_daclip_at
from daclip.utils import load_torch_checkpoint
from daclip.utils.image_metrics import psnr, quantize_8bit, ssim  # noqa: F401  (the scripts use tu.psnr, ...)

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
TRAINING_STATE_FILE = "training_state.json"
EMA_STATE_FILE = "ema_state.pt"
GENERATOR_STATE_PREFIX = "training_generator_"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"  # the run's settings, beside METRICS_FILE
# Saved beside a trained model: how it was trained, so that training it further keeps what matters (objective,
# prediction type, EMA, labels, IR-SDE settings) or says loudly what changes.
RECIPE_FILE = "training_recipe.json"

# scikit-image photos that ship inside its wheel (no download): natural colour photos, then greyscale ones.
SKIMAGE_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "stereo_motorcycle",
    "camera",
    "moon",
    "coins",
    "clock",
    "colorwheel",
    # textures and scientific images: content that looks like noise, rain or snow but is not degraded
    "brick",
    "grass",
    "gravel",
    "cell",
    "retina",
)


# ---------------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------------
class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """`--help` as diffusers' example scripts: every option with its default; the description kept as written.
    Options whose default is "not given" (None, or off for a flag) say in their text what that means instead."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def add_training_arguments(
    parser: argparse.ArgumentParser,
    *,
    output_dir: str,
    learning_rate: float,
    adam_beta2: float,
    adam_weight_decay: float,
    adam_epsilon: float,
    lr_scheduler: str,
    lr_warmup_steps: int,
    train_batch_size: int,
    tracker_project_name: str,
) -> None:
    """The options both scripts share, in diffusers' example names. Defaults differ per script (the authors')."""
    group = parser.add_argument_group("training")
    group.add_argument("--output_dir", default=output_dir, help="where checkpoints, logs, validation images and the final model go")
    group.add_argument(
        "--overwrite_output_dir",
        action="store_true",
        help="start a new run in an --output_dir that holds one: deletes its checkpoints, logs, validation images "
        "and model first (without it, such a folder is refused unless you --resume_from_checkpoint)",
    )
    group.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed for weights, data order, crops, degradations, noise and the validation split (the authors use 0)",
    )
    group.add_argument("--train_batch_size", type=int, default=train_batch_size, help="batch size per device")
    group.add_argument("--num_train_epochs", type=int, default=100, help="passes over the training data (unless --max_train_steps)")
    group.add_argument("--max_train_steps", type=int, default=None, help="optimisation steps in total; overrides --num_train_epochs")
    group.add_argument(
        "--gradient_accumulation_steps", type=int, default=1, help="batches whose gradients add up to one optimisation step"
    )
    group.add_argument("--gradient_checkpointing", action="store_true", help="trade compute for memory")
    group.add_argument("--learning_rate", type=float, default=learning_rate, help="AdamW learning rate (after warmup)")
    group.add_argument(
        "--scale_lr", action="store_true", help="multiply the learning rate by accumulation steps × batch size × processes"
    )
    group.add_argument(
        "--lr_scheduler",
        default=lr_scheduler,
        help='diffusers `get_scheduler` name: "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", '
        '"constant_with_warmup", "piecewise_constant"',
    )
    group.add_argument("--lr_warmup_steps", type=int, default=lr_warmup_steps, help="steps of linear learning-rate warmup")
    group.add_argument("--adam_beta1", type=float, default=0.9, help="AdamW β1")
    group.add_argument("--adam_beta2", type=float, default=adam_beta2, help="AdamW β2")
    group.add_argument("--adam_weight_decay", type=float, default=adam_weight_decay, help="AdamW weight decay")
    group.add_argument("--adam_epsilon", type=float, default=adam_epsilon, help="AdamW ε")
    group.add_argument(
        "--max_grad_norm", type=float, default=None, help="clip the gradient norm (off by default, as the authors)"
    )
    group.add_argument(
        "--use_ema",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep an EMA of the trained weights (diffusers `EMAModel`), validate and save it; default: as the "
        f"model you start from was trained ({RECIPE_FILE}), else off",
    )
    group.add_argument(
        "--ema_decay", type=float, default=None, help="EMA decay; default: the starting model's (its recipe), else 0.9999"
    )
    group.add_argument(
        "--mixed_precision",
        choices=["no", "fp16", "bf16"],
        default=None,
        help="autocast precision; default: what `accelerate launch` / `accelerate config` says",
    )
    group.add_argument("--allow_tf32", action="store_true", help="TF32 matmuls on Ampere+ GPUs")
    group.add_argument(
        "--report_to",
        default=None,
        help='accelerate tracker: "tensorboard", "wandb", "all" or "none"; default "tensorboard" when it is installed, '
        f"else none. A JSON-lines log (<output_dir>/<logging_dir>/{METRICS_FILE}) is written in every case.",
    )
    group.add_argument("--logging_dir", default="logs", help="tracker folder, relative to --output_dir")
    group.add_argument("--tracker_project_name", default=tracker_project_name, help="the run's name for the trackers")
    group.add_argument(
        "--checkpointing_steps",
        type=int,
        default=500,
        help=f"save the training state to <output_dir>/{CHECKPOINT_PREFIX}<step> every this many steps",
    )
    group.add_argument("--checkpoints_total_limit", type=int, default=None, help="keep at most this many checkpoints")
    group.add_argument(
        "--resume_from_checkpoint",
        default=None,
        help='a checkpoint folder (a path, or a name inside --output_dir), or "latest". Settings that would corrupt the '
        "run (data, validation split, seed, objective, EMA, models) must be those the run recorded; others are listed",
    )
    group.add_argument("--dataloader_num_workers", type=int, default=0, help="data-loading processes (0: in the main one)")
    group.add_argument("--validation_steps", type=int, default=None, help="validate every this many steps (off by default)")
    group.add_argument(
        "--num_validation_images",
        type=int,
        default=4,
        help="with --validation_steps: images held out of training for validation, spread over the degradations "
        "and chosen by --seed",
    )


def add_clean_image_arguments(parser: argparse.ArgumentParser, resolution: int) -> None:
    """Clean images degraded on the fly by `daclip.data.degradations`."""
    group = parser.add_argument_group("synthetic data (clean images, degraded on the fly)")
    group.add_argument("--clean_images_dir", default=None, help="a folder of clean images (searched recursively)")
    group.add_argument(
        "--clean_images",
        choices=["skimage"],
        default=None,
        help="a built-in set: 'skimage' = scikit-image's bundled photos (tests and demos)",
    )
    group.add_argument(
        "--skimage_photos",
        nargs="+",
        choices=SKIMAGE_PHOTOS,
        default=list(SKIMAGE_PHOTOS),
        help="with --clean_images skimage: which of its photos to use (default: all), e.g. to hold some out",
    )
    group.add_argument(
        "--degradations",
        nargs="+",
        default=None,
        help="labels to train on; default: every synthesisable label for clean images, every <degradation> sub-folder "
        "for paired data. With clean images a label listed twice is drawn twice as often",
    )
    group.add_argument(
        "--degradation_params",
        type=json_object,
        default=None,
        help='per-label overrides of the synthesis defaults (daclip.data.degradations), as JSON, e.g. '
        '\'{"noisy": {"sigma_range": [5, 50]}, "jpeg-compressed": {"quality_range": [5, 60]}}\'',
    )
    group.add_argument("--resolution", type=int, default=resolution, help="side of the random square training crop")
    group.add_argument(
        "--augment_clean_images",
        action="store_true",
        help="rescale (×0.5–1) and jitter exposure, gamma and saturation of each clean image before it is degraded: "
        "more variety from few photos",
    )


def json_object(text: str) -> Dict[str, Any]:
    """argparse type: a JSON object (`{...}`), or a clear error."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error}): {text!r}") from None
    if not isinstance(value, dict) or not all(isinstance(item, dict) for item in value.values()):
        raise argparse.ArgumentTypeError(f'expected a JSON object of objects, like {{"noisy": {{"sigma_range": [5, 50]}}}}; got {text!r}')
    return value


def add_daclip_arguments(parser: argparse.ArgumentParser, help_suffix: str = "") -> None:
    group = parser.add_argument_group("DA-CLIP")
    group.add_argument(
        "--daclip_model",
        default=None,
        help="the authors' DA-CLIP file (*.pt, with its same-name JSON config if any), a safetensors file, a DACLIPModel "
        "or pipeline folder, or a run's checkpoint-N folder" + help_suffix,
    )
    group.add_argument(
        "--daclip_config", default=None, help="open_clip config JSON, for *.pt files whose tensor shapes do not tell"
    )


def finish_training_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Checks and defaults common to both scripts (call after `parse_args`)."""
    if args.use_ema is False and args.ema_decay is not None:
        parser.error("--ema_decay goes with --use_ema")
    if args.report_to is None:
        from accelerate.utils import is_tensorboard_available

        args.report_to = "tensorboard" if is_tensorboard_available() else "none"
    for name in ("train_batch_size", "gradient_accumulation_steps", "checkpointing_steps", "num_train_epochs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    for name in ("max_train_steps", "checkpoints_total_limit", "validation_steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be at least 1")
    if args.num_validation_images < 0:
        parser.error("--num_validation_images must be 0 or more")
    if args.validation_steps is None:
        args.num_validation_images = 0  # no validation: train on everything
    elif args.num_validation_images == 0:
        parser.error("--validation_steps needs --num_validation_images of at least 1")
    if getattr(args, "clean_images_dir", None) and getattr(args, "clean_images", None):
        parser.error("give --clean_images_dir or --clean_images, not both")
    check_output_dir(args)
    return args


# ---------------------------------------------------------------------------------------------------
# Runs: one run per --output_dir, resumed with the settings it was started with
# ---------------------------------------------------------------------------------------------------
# What a run writes into --output_dir besides checkpoints and logs: the final model (a pipeline or a single model).
RUN_OUTPUTS = (
    "validation", "model_index.json", RECIPE_FILE, "unet", "daclip", "scheduler", "config.json",
    "diffusion_pytorch_model.safetensors", "pipeline_daclip.py", "modeling_daclip.py",
)


def existing_run(args: argparse.Namespace) -> List[Path]:
    """What an earlier run left in `--output_dir`: checkpoints, its logs, its final model (empty: a fresh folder)."""
    output_dir = Path(args.output_dir)
    found = list_checkpoints(output_dir)
    logs = output_dir / args.logging_dir
    found += [path for path in (logs / METRICS_FILE, logs / CONFIG_FILE) if path.is_file()]
    found += [output_dir / name for name in ("model_index.json", "config.json") if (output_dir / name).is_file()]
    return found


def check_output_dir(args: argparse.Namespace) -> None:
    """Refuse to mix two runs in one folder: an `--output_dir` holding a run needs `--resume_from_checkpoint` (to
    continue it) or `--overwrite_output_dir` (to start over)."""
    found = existing_run(args)
    if args.overwrite_output_dir:
        if args.resume_from_checkpoint:
            usage_error("--overwrite_output_dir starts a new run; --resume_from_checkpoint continues one: pick one")
        return
    if not found:
        return
    names = ", ".join(str(path.relative_to(args.output_dir)) for path in found[:6]) + (" ..." if len(found) > 6 else "")
    if not args.resume_from_checkpoint:
        usage_error(
            f"--output_dir {args.output_dir} already holds a training run ({names}). Pass --resume_from_checkpoint "
            "latest to continue it, --overwrite_output_dir to delete it and start over, or choose another --output_dir."
        )
    if args.resume_from_checkpoint == "latest" and not list_checkpoints(args.output_dir):
        usage_error(
            f"--output_dir {args.output_dir} holds a run ({names}) but no {CHECKPOINT_PREFIX}<step> folder to resume "
            "from. Pass --overwrite_output_dir to delete it and start over, or choose another --output_dir."
        )


def clear_run(args: argparse.Namespace) -> List[Path]:
    """`--overwrite_output_dir`: delete what an earlier run wrote into `--output_dir` (and nothing else)."""
    output_dir = Path(args.output_dir)
    targets = list_checkpoints(output_dir) + [output_dir / args.logging_dir]
    targets += [output_dir / name for name in RUN_OUTPUTS]
    removed = []
    for path in targets:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.is_file():
            path.unlink()
        else:
            continue
        removed.append(path)
    return removed


# Settings a resumed run may change freely (how long, how often, where to log) ...
RESUME_FREE = {
    "max_train_steps", "num_train_epochs", "resume_from_checkpoint", "overwrite_output_dir", "output_dir",
    "checkpointing_steps", "checkpoints_total_limit", "report_to", "logging_dir", "tracker_project_name",
    "dataloader_num_workers", "validation_steps", "validation_inference_steps",
}
# ... and those that would corrupt it: other data, another validation split (held-out images would become training
# data), another seed (another split, other crops), another objective or model, EMA switched on or off.
RESUME_FIXED = {
    "seed", "num_validation_images", "train_data_dir", "validation_data_dir", "clean_images_dir", "clean_images",
    "skimage_photos", "degradations", "train_csv", "image_root", "skip_unpaired", "use_ema", "objective",
    "pretrained_model", "daclip_model", "daclip_config", "unet_config", "unet_checkpoint", "clip_config",
    "clip_pretrained", "validation_resolution", "clean_pairs", "degradation_params",
}


def check_resume_config(
    args: argparse.Namespace, config: Dict[str, Any], fixed: Sequence[str] = (), free: Sequence[str] = ()
) -> None:
    """Compare a resumed run's settings (`tracker_config`) with those it recorded in `<logging_dir>/config.json`.

    Differences in `RESUME_FIXED` (and `fixed`, e.g. the IR-SDE settings) end the run with a usage error that lists
    them; differences in `RESUME_FREE` and `free` are allowed silently, others are logged as a warning. Nothing
    happens for a new run or a run with no record.
    """
    checkpoint = resolve_resume_checkpoint(args.resume_from_checkpoint, args.output_dir)
    if checkpoint is None:
        return
    record = checkpoint.parent / args.logging_dir / CONFIG_FILE  # the run the checkpoint belongs to
    if not record.is_file():
        logger.warning("%s is missing: cannot check that this resume uses the run's settings", record)
        return
    with open(record, encoding="utf-8") as handle:
        recorded = json.load(handle)
    differences = {
        key: (recorded[key], value)
        for key, value in config.items()
        if key in recorded and key not in RESUME_FREE and key not in free and recorded[key] != value
    }
    if not differences:
        return
    fixed = RESUME_FIXED | set(fixed)
    lines = [f"  --{key}: the run used {old!r}, now {new!r}" for key, (old, new) in sorted(differences.items())]
    refused = sorted(key for key in differences if key in fixed)
    if refused:
        usage_error(
            f"resuming the run of {checkpoint} with settings that differ from those it recorded in {record}:\n"
            + "\n".join(lines)
            + f"\n{', '.join('--' + key for key in refused)} would corrupt the run (other data, another validation "
            "split, objective, EMA or model). Resume with the recorded values, or start a new run in another "
            "--output_dir (e.g. from this run's checkpoint model)."
            + (
                " (Without --validation_steps nothing is held out: the run's validation images would become training "
                "data.)"
                if "num_validation_images" in refused and args.validation_steps is None
                else ""
            )
        )
    logger.warning("resuming with settings that differ from the run's (%s):\n%s", record, "\n".join(lines))


@contextlib.contextmanager
def data_errors():
    """Mistakes in the training data (a wrong layout, a missing folder, unpaired images) end the script as usage
    errors that name the fix, not as tracebacks."""
    from daclip.data import UnpairedImagesError

    try:
        yield
    except UnpairedImagesError as error:
        usage_error(f"{error.details}. Pass --skip_unpaired to train on the complete pairs only.")
    except (ValueError, FileNotFoundError) as error:
        usage_error(f"{error} (the data options: --help, scripts/README.md)")


def usage_error(message: str, status: int = 2) -> None:
    """End the script as argparse does for a bad argument: `<script>: error: <message>` on stderr, exit code 2."""
    import sys

    sys.stderr.write(f"{Path(sys.argv[0]).name}: error: {message}\n")
    raise SystemExit(status)


# ---------------------------------------------------------------------------------------------------
# The training recipe saved with a trained model
# ---------------------------------------------------------------------------------------------------
def load_recipe(model_path: Optional[Union[str, os.PathLike]], script: str) -> Dict[str, Any]:
    """The `training_recipe.json` that `script` wrote for a model folder (or for the run folder above a component
    folder such as `run/unet`); {} if there is none (a file, a Hub id, a model trained elsewhere)."""
    if not model_path or not Path(model_path).is_dir():
        return {}
    path = Path(model_path)
    for folder in (path, path.parent):
        if (folder / RECIPE_FILE).is_file():
            with open(folder / RECIPE_FILE, encoding="utf-8") as handle:
                recipe = json.load(handle)
            return recipe if recipe.get("script") == script else {}
    return {}


def save_recipe(folder: Union[str, os.PathLike], recipe: Dict[str, Any]) -> Path:
    path = Path(folder, RECIPE_FILE)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({key: _json_safe(value) for key, value in recipe.items()}, handle, indent=2)
        handle.write("\n")
    return path


def reuse_recipe(args: argparse.Namespace, recipe: Dict[str, Any], source: str, defaults: Dict[str, Any], log) -> None:
    """Fill each option in `defaults` the user did not give (None) from the starting model's recipe, else from
    `defaults`; an option given with another value than the recipe's is warned about loudly."""
    for name, default in defaults.items():
        value, recorded = getattr(args, name), recipe.get(name)
        if value is None:
            value = default if recorded is None else recorded
            if recorded is not None:
                log.info(f"--{name} {recorded} (as {source} was trained, {RECIPE_FILE})")
        elif recorded is not None and value != recorded:
            log.warning(f"!! --{name} {value} differs from how {source} was trained: --{name} {recorded} ({RECIPE_FILE})")
        setattr(args, name, value)


# ---------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------
def load_daclip(path: Union[str, os.PathLike], config: Optional[str] = None) -> DACLIPModel:
    """The DA-CLIP at `path`, in float32: any source `daclip.load_daclip` takes (the authors' file with its
    same-name JSON config, a safetensors file, a DACLIPModel or pipeline folder, a run's checkpoint folder)."""
    return load_daclip_at(path, config=config)


# ---------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------
def skimage_photos(names: Sequence[str] = SKIMAGE_PHOTOS) -> List[np.ndarray]:
    """scikit-image's bundled photos (`names`, from `SKIMAGE_PHOTOS`) as uint8 `[H, W, 3]` arrays (greyscale
    repeated)."""
    try:
        import skimage.data
    except ImportError:
        raise ImportError("--clean_images skimage needs scikit-image: pip install scikit-image") from None
    photos = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names:
            image = getattr(skimage.data, name)()
            if isinstance(image, tuple):  # stereo_motorcycle: (left, right, disparity)
                image = image[0]
            image = np.asarray(image)
            if image.ndim == 2:
                image = np.repeat(image[..., None], 3, axis=2)
            photos.append(np.ascontiguousarray(image[..., :3]))
    return photos


def clean_image_source(args: argparse.Namespace) -> Union[str, List[np.ndarray]]:
    """`--clean_images_dir` (a folder) or `--clean_images skimage` (in-memory photos)."""
    if args.clean_images_dir:
        return args.clean_images_dir
    if args.clean_images == "skimage":
        return skimage_photos(args.skimage_photos)
    raise ValueError("no clean images given: use --clean_images_dir or --clean_images skimage")


class HeldOutSplit(Subset):
    """A `Subset` that forwards `set_epoch` (new crops / degradations each epoch) to its dataset."""

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)


def stratified_pick(
    labels: Sequence[str], count: int, seed: int, groups: Optional[Sequence[int]] = None
) -> List[int]:
    """Up to `count` indices of items whose degradation is `labels[i]`, spread over the labels, chosen by `seed`.

    Items are taken in turn from each label (in a seeded random order; each label's items in a seeded random
    order), so `count` ≥ the number of labels covers every label and the counts per label differ by at most one
    (while the labels have items left). With `groups` (item `i` belongs to group `groups[i]`), items are taken from
    as few groups as possible: an item of an already picked group comes first.
    """
    length = len(labels)
    groups = list(range(length)) if groups is None else list(groups)
    rng = np.random.default_rng([int(seed), 0x5EED])
    group_order = {group: rank for rank, group in enumerate(rng.permutation(sorted(set(groups))).tolist())}
    label_order = list(dict.fromkeys(labels))
    label_order = [label_order[i] for i in rng.permutation(len(label_order))]
    tiebreak = rng.random(length)
    queues = {label: [] for label in label_order}
    for index in sorted(range(length), key=lambda i: (group_order[groups[i]], tiebreak[i])):
        queues[labels[index]].append(index)
    picked: List[int] = []
    picked_groups = set()
    while len(picked) < count and any(queues.values()):
        for label in label_order:
            queue = queues[label]
            if len(picked) == count or not queue:
                continue
            pick = next((i for i in queue if groups[i] in picked_groups), queue[0])
            queue.remove(pick)
            picked.append(pick)
            picked_groups.add(groups[pick])
    return picked


def held_out_indices(
    labels: Sequence[str], num_held_out: int, seed: int, groups: Optional[Sequence[int]] = None
) -> Tuple[List[int], List[int]]:
    """(train, held-out) indices of a dataset whose item `i` has degradation `labels[i]`: a validation split
    stratified over the degradations and reproducible by `seed` (`stratified_pick`).

    `groups[i]` keeps related items together: in a synthetic dataset item `i` is clean image
    `i // len(degradations)`, and every item of a held-out item's image is kept out of training. Raises
    `ValueError` when `num_held_out` items cannot be held out with something left to train on.
    """
    if num_held_out == 0:
        return list(range(len(labels))), []
    groups = list(range(len(labels))) if groups is None else list(groups)
    held_out = stratified_pick(labels, num_held_out, seed, groups)
    held_groups = {groups[index] for index in held_out}
    train = [index for index in range(len(labels)) if groups[index] not in held_groups]
    if len(held_out) < num_held_out or not train:
        what = "clean images" if len(set(groups)) < len(labels) else "items"
        raise ValueError(
            f"cannot hold out {num_held_out} validation image(s) from {len(labels)} training items ({len(set(groups))} "
            f"{what}) and still have something to train on: lower --num_validation_images, or add data"
        )
    return train, held_out


def training_dataloader(dataset, batch_size: int, collate_fn, num_workers: int = 0) -> DataLoader:
    """The shuffled training loader. It drops each epoch's ragged last batch (as the authors' open_clip loaders do)
    when the dataset fills at least one batch: clean images degraded on the fly make epochs of a few dozen items, so
    35 items in batches of 32 would otherwise make every other step a batch of 3, a noisy full-rate update (and, for
    the contrastive loss, a batch with almost no negatives). Shuffling changes which items wait for the next epoch,
    and on-the-fly data draws new crops each epoch, so nothing is left out for good. A dataset smaller than one
    batch keeps its single short batch."""
    return DataLoader(
        dataset,
        shuffle=True,
        collate_fn=collate_fn,
        batch_size=batch_size,
        num_workers=num_workers,
        drop_last=len(dataset) >= batch_size,
    )


def set_epoch(dataloader, epoch: int) -> None:
    """New shuffling and new crops / degradations each epoch (accelerate's loader also forwards to the dataset)."""
    if hasattr(dataloader, "set_epoch"):
        dataloader.set_epoch(epoch)
    elif hasattr(dataloader.dataset, "set_epoch"):
        dataloader.dataset.set_epoch(epoch)


# ---------------------------------------------------------------------------------------------------
# Accelerate
# ---------------------------------------------------------------------------------------------------
def _json_safe(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(key): _json_safe(v) for key, v in value.items()}
    return str(value)


def _metrics_tracker_class():
    from accelerate.tracking import GeneralTracker

    class JSONLinesTracker(GeneralTracker):
        """Appends `{"step": …, name: value, …}` per `accelerator.log` call to a file: a log that needs no
        tracker installed, and that tests and scripts can read."""

        name = "jsonlines"
        requires_logging_directory = False

        def __init__(self, path: Union[str, os.PathLike]):
            super().__init__()
            self.path = Path(path)

        @property
        def tracker(self):
            return self.path

        def store_init_configuration(self, values: dict):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path.with_name("config.json"), "w", encoding="utf-8") as handle:
                json.dump({key: _json_safe(value) for key, value in values.items()}, handle, indent=2)

        def log(self, values: dict, step: Optional[int] = None, **kwargs):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            record = {"step": step, **{key: _json_safe(value) for key, value in values.items()}}
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")

    return JSONLinesTracker


def make_accelerator(args: argparse.Namespace):
    """The Accelerator both scripts use: accumulation, mixed precision, trackers (plus the JSON-lines log), and
    a seeded sampler so that every process shuffles alike and a resumed run sees the same batches."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration

    logging_dir = Path(args.output_dir, args.logging_dir)
    log_with: List[Any] = [_metrics_tracker_class()(logging_dir / METRICS_FILE)]
    if args.report_to not in (None, "none"):
        log_with.append(args.report_to)
    return Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=log_with,
        project_config=ProjectConfiguration(project_dir=args.output_dir, logging_dir=str(logging_dir)),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
    )


def tracker_config(args: argparse.Namespace, **extra: Any) -> Dict[str, Any]:
    """The run's settings as trackers accept them (TensorBoard's hparams: None, bool, int, float or str)."""
    config = {}
    for key, value in {**vars(args), **extra}.items():
        if isinstance(value, (list, tuple)):
            value = ",".join(map(str, value))
        elif value is not None and not isinstance(value, (bool, int, float, str)):
            value = str(value)
        config[key] = value
    return config


def setup_logging(accelerator) -> None:
    import diffusers

    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%m/%d/%Y %H:%M:%S", level=logging.INFO
    )
    if accelerator.is_local_main_process:
        diffusers.utils.logging.set_verbosity_warning()
    else:
        diffusers.utils.logging.set_verbosity_error()


def start_run(args: argparse.Namespace):
    """The accelerator of a training run, with logging set up and the output folder made (by the main process)."""
    from accelerate.logging import get_logger

    accelerator = make_accelerator(args)
    setup_logging(accelerator)
    get_logger(__name__, log_level="INFO").info(accelerator.state, main_process_only=False)  # every process's
    if accelerator.is_main_process:
        if args.overwrite_output_dir:
            removed = clear_run(args)
            if removed:
                logger.warning("--overwrite_output_dir: deleted %s", ", ".join(str(path) for path in removed))
        os.makedirs(args.output_dir, exist_ok=True)
    accelerator.wait_for_everyone()
    return accelerator


def init_trackers(
    accelerator, args: argparse.Namespace, fixed: Sequence[str] = (), free: Sequence[str] = (), **extra: Any
) -> None:
    """Check a resumed run against the settings it recorded (`check_resume_config`, on every process), then start
    the trackers, which record this run's settings (`tracker_config(args, **extra)`)."""
    config = tracker_config(args, **extra)
    check_resume_config(args, config, fixed, free)
    if accelerator.is_main_process:
        accelerator.init_trackers(args.tracker_project_name, config)


def step_progress_bar(accelerator, max_train_steps: int, global_step: int):
    """The "Steps" bar of a run (on the local main process only), starting where a resumed run left off."""
    from tqdm.auto import tqdm

    return tqdm(range(max_train_steps), initial=global_step, desc="Steps", disable=not accelerator.is_local_main_process)


def epoch_batches(accelerator, dataloader, epoch: int, first_epoch: int, skip_batches: int):
    """The batches of `epoch`: new crops and degradations for the epoch, and, in the epoch a resumed run
    restarts in, without the batches it had already trained on."""
    set_epoch(dataloader, epoch)
    if epoch == first_epoch and skip_batches:
        return accelerator.skip_first_batches(dataloader, skip_batches)
    return dataloader


def weight_dtype_for(accelerator) -> torch.dtype:
    """The dtype for frozen models under mixed precision (trained weights stay float32)."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)


def enable_tf32() -> None:
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def training_steps(args: argparse.Namespace, batches_per_epoch: int) -> Tuple[int, int, int]:
    """(updates per epoch, max train steps, epochs), as diffusers: `--max_train_steps` wins over epochs."""
    updates_per_epoch = math.ceil(batches_per_epoch / args.gradient_accumulation_steps)
    max_train_steps = args.max_train_steps or args.num_train_epochs * updates_per_epoch
    num_epochs = math.ceil(max_train_steps / updates_per_epoch)
    return updates_per_epoch, max_train_steps, num_epochs


def make_lr_scheduler(args: argparse.Namespace, optimizer, accelerator, max_train_steps: int):
    from diffusers.optimization import get_scheduler

    # The prepared scheduler steps once per process per update (accelerate's convention), hence × processes.
    return get_scheduler(
        args.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=max_train_steps * accelerator.num_processes,
    )


def apply_performance_options(args: argparse.Namespace, model) -> None:
    """`--gradient_checkpointing` (on `model`) and `--allow_tf32` (process-wide), before training starts."""
    if args.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    if args.allow_tf32:
        enable_tf32()


def scale_learning_rate(args: argparse.Namespace, accelerator) -> None:
    """`--scale_lr`: multiply `args.learning_rate` by accumulation steps × batch size × processes (diffusers'
    examples), in place; call once, before `make_optimizer`."""
    if args.scale_lr:
        args.learning_rate *= args.gradient_accumulation_steps * args.train_batch_size * accelerator.num_processes


def make_optimizer(args: argparse.Namespace, parameters) -> torch.optim.Optimizer:
    """AdamW from the usual arguments (`--learning_rate`, `--adam_*`). `parameters`: tensors or parameter groups."""
    return torch.optim.AdamW(
        parameters,
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay,  # the default for groups that do not set their own
        eps=args.adam_epsilon,
    )


# ---------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------
def list_checkpoints(output_dir: Union[str, os.PathLike]) -> List[Path]:
    """`checkpoint-<step>` folders in `output_dir`, oldest (smallest step) first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = []
    for path in output_dir.iterdir():
        match = re.fullmatch(re.escape(CHECKPOINT_PREFIX) + r"(\d+)", path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def prune_checkpoints(output_dir: Union[str, os.PathLike], total_limit: Optional[int]) -> List[Path]:
    """Before saving a new checkpoint: delete the oldest so that at most `total_limit - 1` remain. Returns them."""
    if total_limit is None:
        return []
    checkpoints = list_checkpoints(output_dir)
    excess = len(checkpoints) - (total_limit - 1)
    removed = checkpoints[: max(excess, 0)]
    for path in removed:
        shutil.rmtree(path)
    if removed:
        logger.info("removed checkpoints beyond --checkpoints_total_limit: %s", ", ".join(p.name for p in removed))
    return removed


def resolve_resume_checkpoint(value: Optional[str], output_dir: Union[str, os.PathLike]) -> Optional[Path]:
    """`--resume_from_checkpoint`: None; "latest" → the newest checkpoint in `output_dir` (None if there is
    none: a fresh start); otherwise a checkpoint folder, as a path or as a name inside `output_dir`."""
    if not value:
        return None
    if value == "latest":
        checkpoints = list_checkpoints(output_dir)
        return checkpoints[-1] if checkpoints else None
    for candidate in (Path(value), Path(output_dir) / value):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"checkpoint {value!r} not found (neither a folder nor a folder inside {output_dir})")


def checkpoint_step(path: Union[str, os.PathLike]) -> int:
    """The global step a checkpoint was saved at: from its `training_state.json`, else from its name."""
    path = Path(path)
    state_file = path / TRAINING_STATE_FILE
    if state_file.is_file():
        with open(state_file, encoding="utf-8") as handle:
            return int(json.load(handle)["global_step"])
    match = re.search(r"(\d+)$", path.name)
    if match is None:
        raise ValueError(f"cannot tell the step of checkpoint {path}: no {TRAINING_STATE_FILE} and no -<step> suffix")
    return int(match.group(1))


def process_generator(seed: int, accelerator) -> torch.Generator:
    """The generator of a script's own training randomness (timesteps, noise) on this process's device: seeded
    by (seed, process index) and saved in checkpoints, so a resumed run draws what an uninterrupted one would,
    whatever else consumes torch's global generator (e.g. a DataLoader drawing a seed per new iterator)."""
    generator = torch.Generator(device=accelerator.device)
    generator.manual_seed(int(np.random.SeedSequence([seed, accelerator.process_index]).generate_state(1)[0]))
    return generator


def _generator_file(folder: Path, accelerator) -> Path:
    return folder / f"{GENERATOR_STATE_PREFIX}{accelerator.process_index}.pt"


def save_checkpoint(accelerator, args: argparse.Namespace, global_step: int, generator=None) -> Path:
    """Prune to `--checkpoints_total_limit`, then `accelerator.save_state` to `checkpoint-<global_step>` (the
    registered hooks write the models and the EMA), each process's `generator` state, and the step. Call on
    every process."""
    save_path = Path(args.output_dir, f"{CHECKPOINT_PREFIX}{global_step}")
    if accelerator.is_main_process:
        prune_checkpoints(args.output_dir, args.checkpoints_total_limit)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(save_path))
    if generator is not None:
        save_path.mkdir(parents=True, exist_ok=True)
        torch.save(generator.get_state(), _generator_file(save_path, accelerator))
    if accelerator.is_main_process:
        with open(save_path / TRAINING_STATE_FILE, "w", encoding="utf-8") as handle:
            json.dump({"global_step": global_step}, handle)
        logger.info("saved state to %s", save_path)
    accelerator.wait_for_everyone()
    return save_path


def resume(accelerator, args: argparse.Namespace, updates_per_epoch: int, generator=None) -> Tuple[int, int, int]:
    """Load `--resume_from_checkpoint` if any (and this process's `generator` state). Returns (global step,
    first epoch, batches to skip in it)."""
    path = resolve_resume_checkpoint(args.resume_from_checkpoint, args.output_dir)
    if path is None:
        if args.resume_from_checkpoint:
            accelerator.print(f"no checkpoint in {args.output_dir} to resume from; starting a new run")
        return 0, 0, 0
    global_step = checkpoint_step(path)
    accelerator.print(f"Resuming from checkpoint {path} (global step {global_step})")
    if accelerator.is_main_process:
        forget_logged_steps_after(Path(args.output_dir, args.logging_dir, METRICS_FILE), global_step)
    accelerator.load_state(str(path))
    if generator is not None:
        state_file = _generator_file(path, accelerator)
        if state_file.is_file():
            generator.set_state(load_torch_checkpoint(state_file))
        else:
            logger.warning(f"{state_file} is missing: this process draws fresh training noise")
    first_epoch = global_step // updates_per_epoch
    skip_batches = (global_step % updates_per_epoch) * args.gradient_accumulation_steps
    return global_step, first_epoch, skip_batches


def forget_logged_steps_after(metrics_file: Path, global_step: int) -> None:
    """A run resumed from step N trains steps N+1... again: drop what the interrupted run logged for them, so the
    log holds each step once."""
    if not metrics_file.is_file():
        return
    with open(metrics_file, encoding="utf-8") as handle:
        lines = [line for line in handle if line.strip()]
    kept = [line for line in lines if (json.loads(line).get("step") or 0) <= global_step]
    if len(kept) != len(lines):
        with open(metrics_file, "w", encoding="utf-8") as handle:
            handle.writelines(kept)


def save_ema_state(ema, folder: Union[str, os.PathLike]) -> None:
    torch.save(ema.state_dict(), Path(folder) / EMA_STATE_FILE)


def load_ema_state(ema, folder: Union[str, os.PathLike], device) -> None:
    path = Path(folder) / EMA_STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: was the checkpoint saved without --use_ema?")
    ema.load_state_dict(load_torch_checkpoint(path))
    ema.to(device)


def register_checkpoint_hooks(accelerator, model_class, subfolder: str, ema=None, scheduler=None) -> None:
    """Make `save_state` / `load_state` write the trained model as a `save_pretrained` folder `subfolder/` inside
    the checkpoint (loadable on its own with `model_class.from_pretrained(checkpoint, subfolder=...)`), the
    EMA state, and the `scheduler` the model goes with (`scheduler/`, so that `daclip.load_unet` samples a
    checkpoint with the run's IR-SDE settings); accelerate's own `model.safetensors` is then skipped."""

    def save_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            if scheduler is not None:
                scheduler.save_pretrained(os.path.join(output_dir, "scheduler"))
            for model in models:
                accelerator.unwrap_model(model).save_pretrained(os.path.join(output_dir, subfolder))
            if ema is not None:
                save_ema_state(ema, output_dir)
        weights.clear()

    def load_hook(models, input_dir):
        while models:
            loaded = model_class.from_pretrained(input_dir, subfolder=subfolder)
            accelerator.unwrap_model(models.pop()).load_state_dict(loaded.state_dict())
        if ema is not None:
            load_ema_state(ema, input_dir, accelerator.device)

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def save_image(image: torch.Tensor, path: Union[str, os.PathLike]) -> None:
    """`[3, H, W]` in [0, 1] → an 8-bit PNG."""
    import PIL.Image

    array = (image.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(array).save(path)
