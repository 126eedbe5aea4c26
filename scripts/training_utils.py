"""Plumbing shared by `train_unet.py` and `train_daclip.py` (not part of the `daclip` package).

- argument groups common to both scripts (optimisation, accelerate, checkpoints, validation, data and
  DA-CLIP sources);
- data: the clean-image sources (a folder, or scikit-image's bundled photos), held-out splits;
- accelerate: the `Accelerator` both scripts use, with a JSON-lines metrics log that is always written;
- checkpoints: `checkpoint-<global step>` folders, `--checkpoints_total_limit` pruning, resume resolution,
  the EMA state;
- image-quality metrics: PSNR and SSIM in torch (SSIM as Wang et al. / scikit-image with
  `gaussian_weights=True, sigma=1.5, use_sample_covariance=False`, i.e. the authors' `calculate_ssim`).
"""
from __future__ import annotations

import argparse
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
    group.add_argument("--seed", type=int, default=0, help="seed for weights, data order, crops, degradations, noise (the authors use 0)")
    group.add_argument("--train_batch_size", type=int, default=train_batch_size, help="batch size per device")
    group.add_argument("--num_train_epochs", type=int, default=100)
    group.add_argument("--max_train_steps", type=int, default=None, help="optimisation steps in total; overrides --num_train_epochs")
    group.add_argument("--gradient_accumulation_steps", type=int, default=1)
    group.add_argument("--gradient_checkpointing", action="store_true", help="trade compute for memory")
    group.add_argument("--learning_rate", type=float, default=learning_rate)
    group.add_argument(
        "--scale_lr", action="store_true", help="multiply the learning rate by accumulation steps × batch size × processes"
    )
    group.add_argument(
        "--lr_scheduler",
        default=lr_scheduler,
        help='diffusers `get_scheduler` name: "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", '
        '"constant_with_warmup", "piecewise_constant"',
    )
    group.add_argument("--lr_warmup_steps", type=int, default=lr_warmup_steps)
    group.add_argument("--adam_beta1", type=float, default=0.9)
    group.add_argument("--adam_beta2", type=float, default=adam_beta2)
    group.add_argument("--adam_weight_decay", type=float, default=adam_weight_decay)
    group.add_argument("--adam_epsilon", type=float, default=adam_epsilon)
    group.add_argument(
        "--max_grad_norm", type=float, default=None, help="clip the gradient norm (off by default, as the authors)"
    )
    group.add_argument("--use_ema", action="store_true", help="keep an EMA of the trained weights (diffusers `EMAModel`) and save it")
    group.add_argument("--ema_decay", type=float, default=0.9999)
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
    group.add_argument("--tracker_project_name", default=tracker_project_name)
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
        help='a checkpoint folder (a path, or a name inside --output_dir), or "latest"',
    )
    group.add_argument("--dataloader_num_workers", type=int, default=0)
    group.add_argument("--validation_steps", type=int, default=None, help="validate every this many steps (off by default)")
    group.add_argument(
        "--num_validation_images",
        type=int,
        default=4,
        help="with --validation_steps: images held out of training for validation (keep it when resuming a run)",
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
        help="labels to train on (default: every synthesisable label, or every sub-folder of --train_data_dir)",
    )
    group.add_argument("--resolution", type=int, default=resolution, help="side of the random square training crop")
    group.add_argument(
        "--augment_clean_images",
        action="store_true",
        help="rescale (×0.5–1) and jitter exposure, gamma and saturation of each clean image before it is degraded: "
        "more variety from few photos",
    )


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
    return args


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


def held_out_indices(length: int, num_held_out: int, group_size: int = 1) -> Tuple[List[int], List[int]]:
    """(train, held-out) indices: the first `num_held_out` items are held out, rounded up to whole groups.

    `group_size` keeps related items together: in a synthetic dataset, item `i` is clean image
    `i // len(degradations)`, so holding out whole groups keeps the held-out clean images out of training.
    """
    if num_held_out == 0:
        return list(range(length)), []
    held_out_groups = math.ceil(num_held_out / group_size)
    boundary = held_out_groups * group_size
    if boundary >= length:
        raise ValueError(
            f"cannot hold out {num_held_out} validation image(s) (whole groups of {group_size}) from {length} items "
            "and still have something to train on; lower --num_validation_images or add data"
        )
    return list(range(boundary, length)), list(range(num_held_out))


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
        os.makedirs(args.output_dir, exist_ok=True)
    return accelerator


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


def make_optimizer(args: argparse.Namespace, model, parameters, accelerator) -> torch.optim.Optimizer:
    """AdamW from the usual arguments, after the options that change the model or the learning rate
    (`--gradient_checkpointing`, `--allow_tf32`, `--scale_lr`). `parameters`: tensors or parameter groups."""
    if args.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    if args.allow_tf32:
        enable_tf32()
    scale_learning_rate(args, accelerator)
    return torch.optim.AdamW(
        parameters,
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay,  # the default for groups that do not set their own
        eps=args.adam_epsilon,
    )


def scale_learning_rate(args: argparse.Namespace, accelerator) -> None:
    if args.scale_lr:
        args.learning_rate *= args.gradient_accumulation_steps * args.train_batch_size * accelerator.num_processes


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
