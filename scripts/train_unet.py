#!/usr/bin/env python
"""Train or fine-tune the DA-CLIP restoration UNet (`DACLIPUNet2DModel`) with the authors' IR-SDE objective.

Per batch of (LQ, GT) crops: DA-CLIP (frozen) embeds the LQ image's CLIP view; t ~ U{1..T};
x_t = μ + (GT − μ) e^{−θ̄_t dt} + σ̄_t ε with μ = LQ; the UNet predicts ε̂ from (x_t, LQ, t, both embeddings);
and the loss is L1 between the reverse-SDE mean that ε̂ implies and the optimal posterior mean of x_{t−1}
(`IRSDEScheduler.expected_prev_sample` vs `optimum_prev_sample`), as the authors' `optimize_parameters`.
The end result is a pipeline folder that `DACLIPPipeline.from_pretrained` loads.

    # fine-tune a converted pipeline on the authors' paired data (root/<degradation>/{LQ,GT}/*)
    accelerate launch scripts/train_unet.py --pretrained_model daclip-uir \\
        --train_data_dir datasets/universal/train --output_dir daclip-uir-finetuned \\
        --train_batch_size 16 --resolution 256 --max_train_steps 10000 --use_ema --mixed_precision bf16

    # a new UNet on synthetic degradations of your clean photos, with the released DA-CLIP
    accelerate launch scripts/train_unet.py --daclip_model daclip_ViT-B-32.pt --unet_config unet.json \\
        --clean_images_dir photos/ --degradations hazy noisy rainy --output_dir my-restorer

Besides the pipeline, --output_dir gets training_recipe.json (objective, prediction type, EMA, labels, IR-SDE
settings): fine-tuning that pipeline later reuses them. See scripts/README.md for all options and the keys of
--unet_config.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from accelerate.logging import get_logger
from accelerate.utils import set_seed

import training_utils as tu
from daclip import (
    DEGRADATIONS,
    DACLIPModel,
    DACLIPPipeline,
    DACLIPUNet2DModel,
    IRSDEPosteriorScheduler,
    IRSDEScheduler,
    load_pipeline,
    load_unet,
)
from daclip.data import CLEAN_LABEL, PairedDegradationDataset, SYNTHESISABLE, SyntheticDegradationDataset
from daclip.pipelines.daclip.unet_daclip import check_components_match

logger = get_logger(__name__, log_level="INFO")

UNET_FOLDER = "unet"
# The IR-SDE settings a trained UNet goes with; the saved pipeline's scheduler gets the same.
SDE_SETTINGS = ("num_train_timesteps", "max_sigma", "schedule", "eps", "prediction_type")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=tu.HelpFormatter)

    models = parser.add_argument_group("models (give --pretrained_model, or --daclip_model with --unet_config/--unet_checkpoint)")
    models.add_argument(
        "--pretrained_model",
        default=None,
        help="a DACLIPPipeline folder, Hub id or train_unet.py checkpoint-N folder: its UNet is fine-tuned, its "
        "DA-CLIP, SDE settings and training recipe are used",
    )
    models.add_argument(
        "--unet_config",
        default=None,
        help="JSON of a DACLIPUNet2DModel config: train a new UNet. Keys (defaults: the released universal-ir): "
        "base_channels (64, at least 32), channel_mult ([1, 2, 4, 8]), context_dim (512: must equal the DA-CLIP's "
        "embedding width), use_degradation_context (true), use_image_context (true), downscale_stage (false), "
        "first_cross_attention_level (3), in_channels / out_channels (3)",
    )
    models.add_argument(
        "--unet_checkpoint",
        default=None,
        help="the UNet to fine-tune: the authors' file (*.pth), a safetensors file, a DACLIPUNet2DModel or pipeline "
        "folder, or a run's checkpoint-N folder",
    )
    tu.add_daclip_arguments(parser, " (with --unet_config / --unet_checkpoint)")

    sde = parser.add_argument_group("IR-SDE (default: the pretrained pipeline's scheduler, else the authors' settings)")
    sde.add_argument("--num_train_timesteps", type=int, default=None, help="T (authors: 100)")
    sde.add_argument("--max_sigma", type=float, default=None, help="λ, ≥ 1 on a 0..255 scale (authors: 50)")
    sde.add_argument("--sde_schedule", choices=["cosine", "linear", "constant"], default=None, help="θ schedule (authors: cosine)")
    sde.add_argument("--sde_eps", type=float, default=None, help="e^(-θ̄_T dt) (authors: 0.005)")
    sde.add_argument(
        "--prediction_type",
        choices=["epsilon", "sample"],
        default=None,
        help="what the UNet predicts: the noise (authors) or the clean image x0 (default: the pipeline's, else epsilon)",
    )
    sde.add_argument(
        "--objective",
        choices=["matching", "x0"],
        default=None,
        help="matching: the authors' L1 between the predicted and the optimal x_{t-1}; x0: mean squared error of the "
        "clean image that ε̂ implies (what the posterior sampler uses; weights large t far more, so a small model "
        "learns to restore from μ sooner). Default: the pretrained model's (its training_recipe.json; the bundled "
        "demo model: x0), else matching",
    )

    data = parser.add_argument_group("paired data (the authors' layout)")
    data.add_argument("--train_data_dir", default=None, help="root/<degradation>/{LQ,GT}/* pairs")
    data.add_argument("--validation_data_dir", default=None, help="held-out pairs in the same layout (default: split off the training data)")
    data.add_argument(
        "--skip_unpaired", action="store_true", help="skip LQ images without a GT of the same name (and vice versa) "
        "instead of refusing the dataset"
    )
    data.add_argument(
        "--random_rotate", action="store_true", help="random transposes besides flips, for either data source (the authors' use_rot)"
    )
    tu.add_clean_image_arguments(parser, resolution=256)
    parser.add_argument(
        "--clean_pairs",
        type=int,
        nargs="?",
        const=1,
        default=0,
        metavar="SHARES",
        help="with clean images: add clean → clean pairs, so the UNet learns to leave what is not degraded alone. "
        "They take SHARES shares of the data (default 1) where each label takes one: `--clean_pairs 2` with six labels "
        "makes a quarter of the pairs clean",
    )

    tu.add_training_arguments(
        parser,
        output_dir="daclip-unet-model",
        learning_rate=2e-4,  # authors: AdamW, lr 2e-4, betas (0.9, 0.99), no weight decay, cosine annealing
        adam_beta2=0.99,
        adam_weight_decay=0.0,
        adam_epsilon=1e-8,
        lr_scheduler="cosine",
        lr_warmup_steps=0,
        train_batch_size=16,
        tracker_project_name="daclip-unet",
    )
    validation = parser.add_argument_group("validation")
    validation.add_argument(
        "--validation_inference_steps", type=int, default=100, help="posterior-sampling steps per validation image"
    )
    validation.add_argument(
        "--validation_resolution", type=int, default=None, help="side of the validation crops (default: --resolution)"
    )
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    tu.finish_training_arguments(parser, args)
    if args.pretrained_model and (args.unet_config or args.unet_checkpoint or args.daclip_model):
        parser.error("--pretrained_model brings its own UNet and DA-CLIP; don't combine it with --unet_* / --daclip_model")
    if not args.pretrained_model:
        if not args.daclip_model:
            parser.error("give --pretrained_model, or --daclip_model with --unet_config or --unet_checkpoint")
        if bool(args.unet_config) == bool(args.unet_checkpoint):
            parser.error("with --daclip_model, give exactly one of --unet_config (new UNet) and --unet_checkpoint")
    sources = [bool(args.train_data_dir), bool(args.clean_images_dir or args.clean_images)]
    if sum(sources) != 1:
        parser.error("give one data source: --train_data_dir, --clean_images_dir or --clean_images skimage")
    if args.clean_pairs < 0:
        parser.error(f"--clean_pairs takes a number of shares (0 or more), not {args.clean_pairs}")
    if args.train_data_dir and (args.clean_pairs or args.degradation_params):
        parser.error("--clean_pairs and --degradation_params go with clean images (--clean_images_dir / --clean_images)")
    return args


# ---------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------
def load_models(args) -> Tuple[DACLIPModel, DACLIPUNet2DModel, Dict]:
    """(DA-CLIP, UNet, IR-SDE config) from `--pretrained_model` or from `--daclip_model` + `--unet_*`.

    The UNet's training recipe (`training_recipe.json` of the pipeline or run it comes from) fills the options the
    user left out (`--objective`, `--use_ema`, `--ema_decay`); options given with other values than the recipe's,
    IR-SDE settings included, are warned about loudly."""
    if args.pretrained_model:
        pipe = load_pipeline(args.pretrained_model)
        daclip, unet = pipe.daclip, pipe.unet
        sde_config = {key: pipe.scheduler.config[key] for key in SDE_SETTINGS}
        source, recipe = args.pretrained_model, tu.load_recipe(args.pretrained_model, "train_unet.py")
    else:
        daclip = tu.load_daclip(args.daclip_model, args.daclip_config)
        source, recipe = args.unet_checkpoint, tu.load_recipe(args.unet_checkpoint, "train_unet.py")
        if args.unet_config:
            unet = unet_from_config_file(args.unet_config)
        else:
            unet = load_unet(args.unet_checkpoint)[0]
        default = IRSDEPosteriorScheduler().config
        sde_config = {key: recipe.get("irsde", {}).get(key, default[key]) for key in SDE_SETTINGS}
    tu.reuse_recipe(args, recipe, source, {"objective": "matching", "use_ema": False, "ema_decay": 0.9999}, logger)
    overrides = {
        "num_train_timesteps": args.num_train_timesteps,
        "max_sigma": args.max_sigma,
        "schedule": args.sde_schedule,
        "eps": args.sde_eps,
        "prediction_type": args.prediction_type,
    }
    for key, value in overrides.items():
        if value is not None and source and value != sde_config[key]:
            logger.warning(
                f"!! IR-SDE {key} {value} differs from the one {source} was trained with ({sde_config[key]}): the UNet "
                "starts from weights trained for another process"
            )
    sde_config.update({key: value for key, value in overrides.items() if value is not None})
    check_context_dim(args, daclip, unet)
    check_components_match(daclip, unet)
    return daclip, unet, sde_config


def unet_from_config_file(path: str) -> DACLIPUNet2DModel:
    """A new UNet from `--unet_config`; a file that is not such a config is a usage error naming the keys."""
    import inspect

    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        tu.usage_error(f"--unet_config {path}: {error}")
    known = sorted(set(inspect.signature(DACLIPUNet2DModel.__init__).parameters) - {"self"})
    if not isinstance(config, dict):
        tu.usage_error(f"--unet_config {path} must hold a JSON object with keys among {', '.join(known)}")
    unknown = sorted(key for key in config if not key.startswith("_") and key not in known)
    if unknown:
        tu.usage_error(
            f"--unet_config {path}: unknown key(s) {', '.join(unknown)}; DACLIPUNet2DModel takes {', '.join(known)} "
            "(see python scripts/train_unet.py --help or scripts/README.md)"
        )
    try:
        return DACLIPUNet2DModel.from_config(config)
    except (TypeError, ValueError) as error:
        tu.usage_error(f"--unet_config {path}: {error}")


def check_context_dim(args, daclip: DACLIPModel, unet: DACLIPUNet2DModel) -> None:
    """The UNet reads DA-CLIP's embeddings: a width mismatch is a usage error that says which setting to change."""
    embed_dim, context_dim = daclip.config.embed_dim, unet.config.context_dim
    if embed_dim == context_dim or args.pretrained_model:
        return  # a pipeline's own pair: check_components_match explains
    if args.unet_config:
        tu.usage_error(
            f"the DA-CLIP {args.daclip_model} gives {embed_dim}-dim embeddings but --unet_config {args.unet_config} "
            f"has context_dim {context_dim}: set context_dim to {embed_dim} in your UNet config"
        )
    tu.usage_error(
        f"--unet_checkpoint {args.unet_checkpoint} reads {context_dim}-dim DA-CLIP embeddings but --daclip_model "
        f"{args.daclip_model} gives {embed_dim}-dim ones: use the DA-CLIP this UNet was trained with, or train a new "
        f"UNet with --unet_config (context_dim {embed_dim})"
    )


def check_labels(daclip: DACLIPModel, labels: List[str], source: str) -> None:
    """Warn loudly when the data has labels the DA-CLIP was not trained to recognise."""
    known = list(daclip.config.degradations or DEGRADATIONS)
    unknown = [label for label in labels if label not in known]
    if unknown:
        logger.warning(
            f"!! the DA-CLIP of {source} was not trained on {', '.join(unknown)} (it knows {', '.join(known)}): the UNet "
            "is conditioned on whatever DA-CLIP makes of those images, and detection never names them. Train the "
            "DA-CLIP on them first (scripts/train_daclip.py --train_data_dir ...)."
        )


def reload_daclip(args) -> DACLIPModel:
    """The DA-CLIP in float32, from its source, for the saved pipeline (the one in memory may be cast to fp16)."""
    if args.pretrained_model:
        return load_pipeline(args.pretrained_model).daclip
    return tu.load_daclip(args.daclip_model, args.daclip_config)


# ---------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------
def build_datasets(args, clip_size: int):
    """(training set, validation set or None, labels). Items: `lq`, `gt` `[3, R, R]`, `lq_clip`, `degradation`.

    Without `--validation_data_dir` the validation images are held out of the training data, spread over the
    degradations and chosen by `--seed` (`held_out_indices`); for clean images, whole images are held out."""
    validation_size = args.validation_resolution or args.resolution
    if args.train_data_dir:
        def paired(root, crop_size, flip, seed):
            return PairedDegradationDataset(
                root, degradations=args.degradations, crop_size=crop_size, flip=flip,
                rotate=args.random_rotate and flip, seed=seed, clip_preprocess=clip_size, strict=not args.skip_unpaired,
            )

        train_set = paired(args.train_data_dir, args.resolution, True, args.seed)
        validation_base = paired(args.train_data_dir, validation_size, False, args.seed + 1)
        labels, item_labels, groups = train_set.degradations, [label for _, _, label in train_set.samples], None
    else:
        images = tu.clean_image_source(args)
        labels = list(args.degradations or SYNTHESISABLE)
        item_kinds = labels + [CLEAN_LABEL] * args.clean_pairs  # "clean": shares of the data, not a DA-CLIP label

        def synthetic(crop_size, flip, seed):
            return SyntheticDegradationDataset(
                images, degradations=item_kinds, crop_size=crop_size, seed=seed, flip=flip,
                rotate=args.random_rotate and flip, clip_preprocess=clip_size, augment=args.augment_clean_images and flip,
                degradation_params=args.degradation_params,
            )

        train_set = synthetic(args.resolution, True, args.seed)
        validation_base = synthetic(validation_size, False, args.seed + 1)
        item_labels = [item_kinds[index % len(item_kinds)] for index in range(len(train_set))]
        groups = [index // len(item_kinds) for index in range(len(train_set))]

    if args.validation_data_dir:
        validation_base = PairedDegradationDataset(
            args.validation_data_dir, degradations=args.degradations, crop_size=validation_size, flip=False,
            seed=args.seed + 1, clip_preprocess=clip_size, strict=not args.skip_unpaired,
        )
        validation_labels = [label for _, _, label in validation_base.samples]
        held_out = tu.stratified_pick(validation_labels, args.num_validation_images, args.seed)
        return train_set, (tu.HeldOutSplit(validation_base, held_out) if held_out else None), labels
    train_indices, held_out = tu.held_out_indices(item_labels, args.num_validation_images, args.seed, groups)
    validation_set = tu.HeldOutSplit(validation_base, held_out) if held_out else None
    return tu.HeldOutSplit(train_set, train_indices), validation_set, labels


def collate(items: List[Dict]) -> Dict:
    return {
        "lq": torch.stack([item["lq"] for item in items]),
        "gt": torch.stack([item["gt"] for item in items]),
        "lq_clip": torch.stack([item["lq_clip"] for item in items]),
        "degradation": [item["degradation"] for item in items],
    }


# ---------------------------------------------------------------------------------------------------
# Objective
# ---------------------------------------------------------------------------------------------------
@torch.no_grad()
def daclip_embeddings(daclip: DACLIPModel, lq_clip: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(content_embeds, degradation_embeds) of the LQ CLIP view, float32, without gradients (DA-CLIP is frozen)."""
    output = daclip(pixel_values=lq_clip.to(device=daclip.device, dtype=daclip.dtype))
    return output.content_embeds.float(), output.degradation_embeds.float()


def irsde_loss(
    unet,
    scheduler: IRSDEScheduler,
    gt: torch.Tensor,
    lq: torch.Tensor,
    timesteps: torch.Tensor,
    noise: torch.Tensor,
    degradation_embeds: Optional[torch.Tensor],
    content_embeds: Optional[torch.Tensor],
    objective: str = "matching",
) -> torch.Tensor:
    """The training loss of one batch; `objective` "matching" is the authors' (the default), "x0" is ours.

    matching: mean L1 between E[x_{t−1} | x_t, ε̂] (reverse-SDE step mean) and the optimal x_{t−1}. Its weight on
    the restoration itself (x₀ − μ) fades as e^{−θ̄_t dt} at large t, where x_t holds almost nothing of x₀ and the
    UNet has to restore from μ alone: the authors train for hundreds of thousands of steps.
    x0: mean squared error of x̂₀ = μ + (x_t − μ − σ̄_t ε̂) e^{θ̄_t dt}, the only way the posterior sampler uses ε̂;
    it weights ε̂'s error by (σ̄_t e^{θ̄_t dt})², most at large t.

    `timesteps` `[B]` are integers in 1..T; the UNet sees t itself (on the T-step schedule t·T/T = t). Works for
    any batch size, 1 included (the authors' `t.squeeze()` turns B = 1 into a 0-d time).
    """
    noisy = scheduler.add_noise(gt, noise, timesteps, mu=lq)
    noise_pred = unet(
        noisy, timesteps.float(), lq, degradation_embeds=degradation_embeds, content_embeds=content_embeds
    ).sample
    if objective == "x0":
        predicted = scheduler.predicted_original_sample(noisy, noise_pred.float(), timesteps, mu=lq)
        return F.mse_loss(predicted.float(), gt.float())
    if objective != "matching":
        raise ValueError(f"objective must be 'matching' or 'x0', got {objective!r}")
    expected = scheduler.expected_prev_sample(noisy, noise_pred.float(), timesteps, mu=lq)
    optimum = scheduler.optimum_prev_sample(noisy, gt, timesteps, mu=lq)
    return F.l1_loss(expected.float(), optimum.float())


# ---------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------
@torch.no_grad()
def log_validation(daclip, unet, sde_config, validation_set, args, accelerator, global_step) -> Dict[str, float]:
    """Restore the held-out LQ images with the posterior sampler; log PSNR/SSIM on 8-bit outputs as the authors
    do, and save LQ / restored / GT images under <output_dir>/validation/step-<N>/."""
    logger.info(f"Running validation at step {global_step} on {len(validation_set)} image(s)...")
    was_training = unet.training
    unet.eval()
    pipe = DACLIPPipeline(daclip=daclip, unet=unet, scheduler=IRSDEPosteriorScheduler(**sde_config))
    pipe.set_progress_bar_config(disable=True)
    items = [validation_set[index] for index in range(len(validation_set))]
    lq = [item["lq"] for item in items]
    generators = [torch.Generator().manual_seed(args.seed + index) for index in range(len(items))]
    restored = pipe(lq, num_inference_steps=args.validation_inference_steps, generator=generators, output_type="pt").images
    folder = Path(args.output_dir, "validation", f"step-{global_step}")
    psnrs, ssims = [], []
    for index, (item, output) in enumerate(zip(items, restored)):
        output = tu.quantize_8bit(output.float().cpu())
        psnrs.append(float(tu.psnr(output, item["gt"])[0]))
        ssims.append(float(tu.ssim(output, item["gt"])[0]))
        stem = f"{index:02d}_{item['degradation']}"
        tu.save_image(item["lq"], folder / f"{stem}_LQ.png")
        tu.save_image(output, folder / f"{stem}_restored.png")
        tu.save_image(item["gt"], folder / f"{stem}_GT.png")
    metrics = {"val_psnr": sum(psnrs) / len(psnrs), "val_ssim": sum(ssims) / len(ssims)}
    logger.info(f"validation at step {global_step}: PSNR {metrics['val_psnr']:.3f} dB, SSIM {metrics['val_ssim']:.4f}")
    accelerator.log(metrics, step=global_step)
    unet.train(was_training)
    return metrics


# ---------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------
def main(argv=None) -> None:
    args = parse_args(argv)
    accelerator = tu.start_run(args)
    # Per-process streams; the data order (the same on every process) and the training noise have their own.
    set_seed(args.seed, device_specific=True)
    # Models: DA-CLIP frozen, the UNet trained.
    daclip, unet, sde_config = load_models(args)
    noise_scheduler = IRSDEScheduler(**sde_config)
    daclip.requires_grad_(False)
    daclip.eval()
    unet.train()
    if args.resolution < unet.min_sample_size or (args.validation_resolution or args.resolution) < unet.min_sample_size:
        tu.usage_error(f"--resolution and --validation_resolution must be at least {unet.min_sample_size} for this UNet")

    ema_unet = None
    if args.use_ema:
        from diffusers.training_utils import EMAModel

        ema_unet = EMAModel(unet.parameters(), decay=args.ema_decay, model_cls=DACLIPUNet2DModel, model_config=unet.config)

    tu.register_checkpoint_hooks(
        accelerator, DACLIPUNet2DModel, UNET_FOLDER, ema=ema_unet, scheduler=IRSDEPosteriorScheduler(**sde_config)
    )
    tu.apply_performance_options(args, unet)
    tu.scale_learning_rate(args, accelerator)
    optimizer = tu.make_optimizer(args, unet.parameters())

    # Data.
    with accelerator.main_process_first(), tu.data_errors():
        train_dataset, validation_set, labels = build_datasets(args, daclip.image_size)
    check_labels(daclip, labels, args.pretrained_model or args.daclip_model)
    train_dataloader = tu.training_dataloader(
        train_dataset, args.train_batch_size, collate, num_workers=args.dataloader_num_workers
    )
    updates_per_epoch, max_train_steps, num_epochs = tu.training_steps(args, len(train_dataloader))
    lr_scheduler = tu.make_lr_scheduler(args, optimizer, accelerator, max_train_steps)

    unet, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(unet, optimizer, train_dataloader, lr_scheduler)
    weight_dtype = tu.weight_dtype_for(accelerator)
    daclip.to(accelerator.device, dtype=weight_dtype)
    if ema_unet is not None:
        ema_unet.to(accelerator.device)
    # The dataloader's length changes once sharded across processes.
    updates_per_epoch, max_train_steps, num_epochs = tu.training_steps(args, len(train_dataloader))

    sde_settings = {f"sde_{key}": value for key, value in sde_config.items()}
    # The IR-SDE options as given may differ on resume while the settings they resolve to (sde_*) are the same.
    raw_sde_options = ("num_train_timesteps", "max_sigma", "sde_schedule", "sde_eps", "prediction_type")
    tu.init_trackers(accelerator, args, fixed=sde_settings, free=raw_sde_options, **sde_settings)

    total_batch_size = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    logger.info("***** Running training *****")
    logger.info(f"  Num examples = {len(train_dataset)}")
    logger.info(f"  Num epochs = {num_epochs}")
    logger.info(f"  Instantaneous batch size per device = {args.train_batch_size}")
    logger.info(f"  Total train batch size (w. parallel, distributed & accumulation) = {total_batch_size}")
    logger.info(f"  Gradient accumulation steps = {args.gradient_accumulation_steps}")
    logger.info(f"  Total optimization steps = {max_train_steps}")

    generator = tu.process_generator(args.seed, accelerator)  # timesteps and noise; checkpointed per process
    global_step, first_epoch, skip_batches = tu.resume(accelerator, args, updates_per_epoch, generator)
    progress_bar = tu.step_progress_bar(accelerator, max_train_steps, global_step)

    for epoch in range(first_epoch, num_epochs):
        if global_step >= max_train_steps:
            break
        batches = tu.epoch_batches(accelerator, train_dataloader, epoch, first_epoch, skip_batches)
        train_loss = 0.0
        for batch in batches:
            with accelerator.accumulate(unet):
                gt, lq = batch["gt"], batch["lq"]
                content_embeds, degradation_embeds = daclip_embeddings(daclip, batch["lq_clip"])
                timesteps = noise_scheduler.sample_training_timesteps(gt.shape[0], generator=generator, device=gt.device)
                noise = torch.randn(gt.shape, generator=generator, device=generator.device, dtype=gt.dtype).to(gt.device)
                loss = irsde_loss(
                    unet, noise_scheduler, gt, lq, timesteps, noise, degradation_embeds, content_embeds, args.objective
                )
                train_loss += accelerator.reduce(loss.detach(), reduction="mean").item() / args.gradient_accumulation_steps

                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm is not None:
                    accelerator.clip_grad_norm_(unet.parameters(), args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()

            if accelerator.sync_gradients:
                if ema_unet is not None:
                    ema_unet.step(unet.parameters())
                progress_bar.update(1)
                global_step += 1
                accelerator.log({"train_loss": train_loss, "lr": lr_scheduler.get_last_lr()[0]}, step=global_step)
                progress_bar.set_postfix(loss=train_loss, lr=lr_scheduler.get_last_lr()[0])
                train_loss = 0.0

                if global_step % args.checkpointing_steps == 0:
                    tu.save_checkpoint(accelerator, args, global_step, generator)

                if (
                    validation_set is not None
                    and args.validation_steps is not None
                    and global_step % args.validation_steps == 0
                    and accelerator.is_main_process
                ):
                    model = accelerator.unwrap_model(unet)
                    if ema_unet is not None:
                        ema_unet.store(model.parameters())
                        ema_unet.copy_to(model.parameters())
                    log_validation(daclip, model, sde_config, validation_set, args, accelerator, global_step)
                    if ema_unet is not None:
                        ema_unet.restore(model.parameters())

            if global_step >= max_train_steps:
                break

    # The pipeline: trained (EMA) UNet, the DA-CLIP in float32, the authors' posterior sampler.
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        unet = accelerator.unwrap_model(unet)
        if ema_unet is not None:
            ema_unet.copy_to(unet.parameters())
        unet.eval()
        final_daclip = daclip if weight_dtype == torch.float32 else reload_daclip(args)
        pipeline = DACLIPPipeline(
            daclip=final_daclip.to("cpu", dtype=torch.float32),
            unet=unet.to("cpu"),
            scheduler=IRSDEPosteriorScheduler(**sde_config),
        )
        pipeline.save_pretrained(args.output_dir)
        # What fine-tuning this pipeline should keep (tu.reuse_recipe): the labels it has seen add up.
        earlier = tu.load_recipe(args.pretrained_model or args.unet_checkpoint, "train_unet.py").get("degradations", [])
        tu.save_recipe(
            args.output_dir,
            {
                "script": "train_unet.py",
                "objective": args.objective,
                "prediction_type": sde_config["prediction_type"],
                "use_ema": args.use_ema,
                "ema_decay": args.ema_decay if args.use_ema else None,
                "degradations": list(dict.fromkeys([*earlier, *labels])),
                "irsde": sde_config,
                "global_step": global_step,
            },
        )
        logger.info(f"saved the pipeline to {args.output_dir} (global step {global_step})")
    accelerator.end_training()


if __name__ == "__main__":
    main()
