#!/usr/bin/env python
"""Train the DA-CLIP controller contrastively, as the authors' `da-clip/src/training` (open_clip's `DaClipLoss`).

Only the controller (`visual_control.*`) and DA-CLIP's own `logit_scale` are trained; the CLIP (`clip.*`) stays
frozen. Per batch of degraded images:

    degradation loss = CLIP loss(normalize(degradation_embeds), normalize(text_embeds(degradation label)))
    content loss     = CLIP loss(normalize(content_embeds),     normalize(text_embeds(clean caption)))
    loss             = content loss + degradation loss

where CLIP loss is the symmetric cross-entropy of `exp(logit_scale) · image · textᵀ` over the batch (over the
global batch across processes, as the authors' non-local loss), and `logit_scale` is clamped to [0, ln 100]
after each step. Without captions (clean images degraded on the fly: the labels are the only texts), only the
degradation loss is used and the zero-initialised injection layers stay as they are (nothing teaches them).

    # continue from the released DA-CLIP on the authors' caption CSV (filepath<TAB>"<caption>: <degradation>")
    accelerate launch scripts/train_daclip.py --daclip_model daclip_ViT-B-32.pt \\
        --train_csv datasets/universal/daclip_train.csv --output_dir my-daclip --train_batch_size 256

    # degradation-only, on synthetic degradations of clean photos
    accelerate launch scripts/train_daclip.py --daclip_model daclip_ViT-B-32.pt \\
        --clean_images_dir photos/ --degradations hazy noisy rainy snowy --output_dir my-daclip

    # degradation-only, on the paired layout train_unet.py reads (the LQ images, labelled by their folder)
    accelerate launch scripts/train_daclip.py --daclip_model daclip_ViT-B-32.pt \\
        --train_data_dir my_pairs/ --output_dir my-daclip

    # a new DA-CLIP from an open_clip config and pretrained CLIP weights (a real run must start from these)
    accelerate launch scripts/train_daclip.py --clip_config ViT-B-32.json --clip_pretrained open_clip_vit_b32.bin ...

The result is `DACLIPModel.save_pretrained(output_dir)`. See scripts/README.md for all options.
"""
from __future__ import annotations

import argparse
import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from torch.utils.data import DataLoader

import training_utils as tu
from daclip import DEGRADATIONS, DACLIPModel
from daclip.data import CaptionDataset, PairedDegradationDataset, SYNTHESISABLE, SyntheticDegradationDataset
from daclip.pipelines.daclip.convert_original import load_open_clip_config
from daclip.utils import load_torch_checkpoint, strip_prefix

logger = get_logger(__name__, log_level="INFO")

DACLIP_FOLDER = "daclip"
MAX_LOGIT_SCALE = math.log(100)  # the authors clamp DA-CLIP's logit scale to [0, ln 100] after every step


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=tu.HelpFormatter)

    tu.add_daclip_arguments(parser, ": continue training it")
    models = parser.add_argument_group("a new DA-CLIP (instead of --daclip_model)")
    models.add_argument(
        "--clip_config",
        default=None,
        help="open_clip model config JSON (e.g. open_clip's model_configs/ViT-B-32.json): build a new DA-CLIP",
    )
    models.add_argument(
        "--clip_pretrained",
        default=None,
        help="open_clip CLIP weights (state dict: *.pt/*.bin/*.safetensors) for --clip_config; the controller starts "
        "as a copy of their image tower. Without it the CLIP is random: only for tests and demos.",
    )

    data = parser.add_argument_group("caption data (the authors' CSV)")
    data.add_argument("--train_csv", default=None, help='tab-separated, columns filepath and title = "<caption>: <degradation>"')
    data.add_argument("--image_root", default=None, help="folder the CSV's relative paths are relative to")
    data.add_argument(
        "--random_crop",
        action="store_true",
        help="random square crops, as the authors' crop option (--train_csv: of the short side; --train_data_dir: of "
        "--resolution) before the CLIP view",
    )
    paired = parser.add_argument_group("paired data (train_unet.py's layout; degradation loss only)")
    paired.add_argument(
        "--train_data_dir",
        default=None,
        help="root/<degradation>/{LQ,GT}/* pairs: DA-CLIP learns each LQ image's label from its folder (GT unused)",
    )
    paired.add_argument(
        "--skip_unpaired", action="store_true", help="skip LQ images without a GT of the same name (and vice versa) "
        "instead of refusing the dataset"
    )
    tu.add_clean_image_arguments(parser, resolution=256)

    tu.add_training_arguments(
        parser,
        output_dir="daclip-model",
        learning_rate=3e-5,  # authors' multi_train.sh: AdamW lr 3e-5, wd 0.05, warmup 100, cosine; open_clip betas/eps
        adam_beta2=0.98,
        adam_weight_decay=0.05,
        adam_epsilon=1e-6,
        lr_scheduler="cosine",
        lr_warmup_steps=100,
        train_batch_size=64,
        tracker_project_name="daclip-controller",
    )
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    tu.finish_training_arguments(parser, args)
    if bool(args.daclip_model) == bool(args.clip_config):
        parser.error("give --daclip_model (continue training) or --clip_config (a new DA-CLIP), not both or neither")
    if args.clip_pretrained and not args.clip_config:
        parser.error("--clip_pretrained goes with --clip_config")
    if sum(map(bool, (args.train_csv, args.train_data_dir, args.clean_images_dir or args.clean_images))) != 1:
        parser.error("give one data source: --train_csv, --train_data_dir, or --clean_images_dir / --clean_images skimage")
    if args.degradation_params and not (args.clean_images_dir or args.clean_images):
        parser.error("--degradation_params goes with clean images (--clean_images_dir / --clean_images)")
    return args


# ---------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------
def load_clip_weights(model: DACLIPModel, path: str) -> None:
    """Load an open_clip CLIP state dict into `model.clip`, then start the controller from it, as the authors'
    `initial_controller`: the controller's image tower and DA-CLIP's logit scale become copies of the CLIP's, and
    the zero-initialised injection layers stay zero."""
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        state_dict = load_file(path)
    else:
        state_dict = load_torch_checkpoint(path)
        if isinstance(state_dict, dict) and "state_dict" in state_dict:
            state_dict = state_dict["state_dict"]
    state_dict = strip_prefix(state_dict, "module.")
    state_dict = {key: value.float() if value.is_floating_point() else value for key, value in state_dict.items()}
    model.clip.load_state_dict(state_dict, strict=True)
    controller = model.visual_control.state_dict()
    with torch.no_grad():
        for name, value in model.clip.visual.state_dict().items():
            # The controller's blocks sit one level deeper: transformer.resblocks.N → transformer.transformer.resblocks.N
            target = "transformer." + name if name.startswith("transformer.") else name
            controller[target].copy_(value)
        for module in model.visual_control.transformer.zero_modules:
            module.weight.zero_()
            module.bias.zero_()
        model.logit_scale.copy_(model.clip.logit_scale)


def build_model(args) -> DACLIPModel:
    """The DA-CLIP to train; `--use_ema` / `--ema_decay` left out follow how `--daclip_model` was trained."""
    recipe = tu.load_recipe(args.daclip_model, "train_daclip.py")
    tu.reuse_recipe(args, recipe, args.daclip_model, {"use_ema": False, "ema_decay": 0.9999}, logger)
    if args.daclip_model:
        return tu.load_daclip(args.daclip_model, args.daclip_config)
    model = DACLIPModel(**load_open_clip_config(args.clip_config))
    if args.clip_pretrained:
        load_clip_weights(model, args.clip_pretrained)
    else:
        logger.warning(
            "--clip_config without --clip_pretrained: the CLIP is random. That is only useful for tests and demos; "
            "a real DA-CLIP starts from pretrained CLIP weights (the authors: open_clip ViT-B-32 laion2b_s34b_b79k)."
        )
    return model


def trainable_parameters(model: DACLIPModel, train_injection: bool) -> List[Tuple[str, torch.nn.Parameter]]:
    """Freeze everything but the controller and DA-CLIP's logit scale (the authors' `lock_clip`). Without caption
    data the injection layers (`zero_modules`) get no signal and are frozen too."""
    model.requires_grad_(False)
    named = []
    for name, parameter in model.named_parameters():
        if name == "logit_scale" or name.startswith("visual_control."):
            if not train_injection and ".zero_modules." in name:
                continue
            parameter.requires_grad_(True)
            named.append((name, parameter))
    return named


def optimizer_groups(named_parameters, weight_decay: float) -> List[Dict]:
    """The authors' AdamW groups: no weight decay on gains, biases, norms and the logit scale."""
    no_decay = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n
    return [
        {"params": [p for n, p in named_parameters if no_decay(n, p)], "weight_decay": 0.0},
        {"params": [p for n, p in named_parameters if not no_decay(n, p)], "weight_decay": weight_decay},
    ]


# ---------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------
def build_datasets(args, clip_size: int):
    """(training set, validation set or None, labels, has captions). Items carry the CLIP view and labels.

    Validation images are held out of the training data, spread over the degradations and chosen by `--seed`
    (`held_out_indices`); for clean images, whole images are held out."""
    groups = None
    if args.train_csv:
        def captions(random_crop, seed):
            return CaptionDataset(
                args.train_csv, image_root=args.image_root, clip_preprocess=clip_size, random_crop=random_crop, seed=seed
            )

        train_set, validation_base = captions(args.random_crop, args.seed), captions(False, args.seed + 1)
        item_labels = list(train_set.degradations)
        found = set(item_labels)
        labels = [label for label in DEGRADATIONS if label in found] + sorted(found - set(DEGRADATIONS))
        has_captions = True
    elif args.train_data_dir:
        def paired(random_crop, seed):
            return PairedDegradationDataset(
                args.train_data_dir, degradations=args.degradations, crop_size=args.resolution if random_crop else None,
                flip=random_crop, seed=seed, clip_preprocess=clip_size, strict=not args.skip_unpaired,
            )

        train_set, validation_base = paired(args.random_crop, args.seed), paired(False, args.seed + 1)
        labels, item_labels, has_captions = train_set.degradations, [label for _, _, label in train_set.samples], False
    else:
        images = tu.clean_image_source(args)
        labels = list(args.degradations or SYNTHESISABLE)

        def synthetic(flip, seed):
            return SyntheticDegradationDataset(
                images, degradations=labels, crop_size=args.resolution, seed=seed, flip=flip, clip_preprocess=clip_size,
                augment=args.augment_clean_images and flip,  # the held-out items stay plain crops
                degradation_params=args.degradation_params,
            )

        train_set, validation_base = synthetic(True, args.seed), synthetic(False, args.seed + 1)
        item_labels = [labels[index % len(labels)] for index in range(len(train_set))]
        groups = [index // len(labels) for index in range(len(train_set))]
        has_captions = False
    train_indices, held_out = tu.held_out_indices(item_labels, args.num_validation_images, args.seed, groups)
    validation_set = tu.HeldOutSplit(validation_base, held_out) if held_out else None
    return tu.HeldOutSplit(train_set, train_indices), validation_set, labels, has_captions


def collate(items: List[Dict]) -> Dict:
    return {
        "pixel_values": torch.stack([item.get("pixel_values", item.get("lq_clip")) for item in items]),
        "degradation": [item["degradation"] for item in items],
        "caption": [item["caption"] for item in items] if "caption" in items[0] else None,
    }


# ---------------------------------------------------------------------------------------------------
# Objective
# ---------------------------------------------------------------------------------------------------
class TextEmbedder:
    """Text embeddings from the frozen text tower, without gradients; label embeddings are cached."""

    def __init__(self, model: DACLIPModel):
        self.model = model
        self.cache: Dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def __call__(self, texts: Sequence[str], cache: bool = False) -> torch.Tensor:
        if not cache:
            return self._encode(list(texts))
        missing = sorted(set(texts) - self.cache.keys())
        if missing:
            self.cache.update(zip(missing, self._encode(missing)))
        return torch.stack([self.cache[text] for text in texts])

    def _encode(self, texts: List[str]) -> torch.Tensor:
        input_ids = self.model.tokenize(texts).to(self.model.device)
        return self.model(input_ids=input_ids).text_embeds.float()


def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """open_clip's `ClipLoss`: (CE(s·I·Tᵀ, diag) + CE(s·T·Iᵀ, diag)) / 2, on normalised features."""
    logits_per_image = logit_scale * image_features @ text_features.T
    labels = torch.arange(logits_per_image.shape[0], device=logits_per_image.device)
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_image.T, labels)) / 2


def daclip_contrastive_loss(
    model,
    logit_scale: torch.Tensor,
    pixel_values: torch.Tensor,
    degradation_text_embeds: torch.Tensor,
    caption_embeds: Optional[torch.Tensor] = None,
    gather=lambda features: features,
) -> Dict[str, torch.Tensor]:
    """The authors' `DaClipLoss`: {"degra_loss", "contrastive_loss" (with captions), "loss" = their sum}.

    `logit_scale` is DA-CLIP's own (log) scale parameter; `gather` assembles the global batch across processes.
    """
    output = model(pixel_values=pixel_values)
    scale = logit_scale.exp()
    losses = {
        "degra_loss": clip_loss(
            gather(F.normalize(output.degradation_embeds.float(), dim=-1)),
            gather(F.normalize(degradation_text_embeds.float(), dim=-1)),
            scale,
        )
    }
    if caption_embeds is not None:
        losses["contrastive_loss"] = clip_loss(
            gather(F.normalize(output.content_embeds.float(), dim=-1)),
            gather(F.normalize(caption_embeds.float(), dim=-1)),
            scale,
        )
    losses["loss"] = sum(losses.values())
    return losses


def gather_with_local_grad(accelerator):
    """All processes' features, with this process's own rows keeping their gradient (the authors'
    `gather_features` without `gather_with_grad`); batches must be equal-sized (accelerate's `even_batches`)."""

    def gather(features: torch.Tensor) -> torch.Tensor:
        if accelerator.num_processes == 1:
            return features
        chunks = list(accelerator.gather(features.detach().contiguous()).chunk(accelerator.num_processes))
        chunks[accelerator.process_index] = features
        return torch.cat(chunks)

    return gather


# ---------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------
@torch.no_grad()
def log_validation(model: DACLIPModel, validation_set, labels, args, accelerator, global_step) -> Dict[str, float]:
    """Degradation detection accuracy on the held-out images (argmax over `labels`, as `detect_degradation`)."""
    was_training = model.training
    model.eval()
    correct = 0
    loader = DataLoader(validation_set, batch_size=args.train_batch_size, collate_fn=collate)
    for batch in loader:
        degradation_embeds = model(pixel_values=batch["pixel_values"].to(model.device)).degradation_embeds
        predicted = model.degradation_logits(degradation_embeds, labels).argmax(dim=-1).tolist()
        correct += sum(labels[p] == truth for p, truth in zip(predicted, batch["degradation"]))
    metrics = {"val_accuracy": correct / len(validation_set)}
    logger.info(f"validation at step {global_step}: degradation accuracy {metrics['val_accuracy']:.3f} ({len(validation_set)} images)")
    accelerator.log(metrics, step=global_step)
    model.train(was_training)
    return metrics


# ---------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------
def main(argv=None) -> None:
    args = parse_args(argv)
    accelerator = tu.start_run(args)
    # The model is built before the per-process seeds, so that a new (random) one is the same on every process.
    set_seed(args.seed)
    model = build_model(args)
    set_seed(args.seed, device_specific=True)

    with accelerator.main_process_first(), tu.data_errors():
        train_dataset, validation_set, labels, has_captions = build_datasets(args, model.image_size)
    named_trainable = trainable_parameters(model, train_injection=has_captions)
    trainable = [parameter for _, parameter in named_trainable]
    model.train()

    ema = None
    if args.use_ema:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(trainable, decay=args.ema_decay)

    tu.register_checkpoint_hooks(accelerator, DACLIPModel, DACLIP_FOLDER, ema=ema)
    tu.apply_performance_options(args, model)
    tu.scale_learning_rate(args, accelerator)
    optimizer = tu.make_optimizer(args, optimizer_groups(named_trainable, args.adam_weight_decay))

    train_dataloader = tu.training_dataloader(
        train_dataset, args.train_batch_size, collate, num_workers=args.dataloader_num_workers
    )
    updates_per_epoch, max_train_steps, num_epochs = tu.training_steps(args, len(train_dataloader))
    lr_scheduler = tu.make_lr_scheduler(args, optimizer, accelerator, max_train_steps)

    model, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(model, optimizer, train_dataloader, lr_scheduler)
    if ema is not None:
        ema.to(accelerator.device)
    updates_per_epoch, max_train_steps, num_epochs = tu.training_steps(args, len(train_dataloader))
    unwrapped = accelerator.unwrap_model(model)
    embed_texts = TextEmbedder(unwrapped)
    gather = gather_with_local_grad(accelerator)

    tu.init_trackers(accelerator, args, fixed=["labels"], labels=labels)

    total_batch_size = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    logger.info("***** Running training *****")
    logger.info(f"  Num examples = {len(train_dataset)} ({'captions + degradations' if has_captions else 'degradations only'})")
    logger.info(f"  Labels = {', '.join(labels)}")
    logger.info(f"  Num epochs = {num_epochs}")
    logger.info(f"  Total train batch size (w. parallel, distributed & accumulation) = {total_batch_size}")
    logger.info(f"  Total optimization steps = {max_train_steps}")

    global_step, first_epoch, skip_batches = tu.resume(accelerator, args, updates_per_epoch)
    progress_bar = tu.step_progress_bar(accelerator, max_train_steps, global_step)

    for epoch in range(first_epoch, num_epochs):
        if global_step >= max_train_steps:
            break
        batches = tu.epoch_batches(accelerator, train_dataloader, epoch, first_epoch, skip_batches)
        logged: Dict[str, float] = {}
        for batch in batches:
            with accelerator.accumulate(model):
                degradation_text_embeds = embed_texts(batch["degradation"], cache=True)
                caption_embeds = embed_texts(batch["caption"]) if batch["caption"] is not None else None
                losses = daclip_contrastive_loss(
                    model, unwrapped.logit_scale, batch["pixel_values"], degradation_text_embeds, caption_embeds, gather
                )
                for name, value in losses.items():
                    logged[name] = logged.get(name, 0.0) + value.detach().item() / args.gradient_accumulation_steps

                accelerator.backward(losses["loss"])
                if accelerator.sync_gradients and args.max_grad_norm is not None:
                    accelerator.clip_grad_norm_(trainable, args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
                with torch.no_grad():
                    unwrapped.logit_scale.clamp_(0, MAX_LOGIT_SCALE)

            if accelerator.sync_gradients:
                if ema is not None:
                    ema.step(trainable)
                progress_bar.update(1)
                global_step += 1
                logged["train_loss"] = logged.pop("loss")
                accelerator.log(
                    {**logged, "logit_scale": unwrapped.logit_scale.exp().item(), "lr": lr_scheduler.get_last_lr()[0]},
                    step=global_step,
                )
                progress_bar.set_postfix(loss=logged["train_loss"], lr=lr_scheduler.get_last_lr()[0])
                logged = {}

                if global_step % args.checkpointing_steps == 0:
                    tu.save_checkpoint(accelerator, args, global_step)

                if (
                    validation_set is not None
                    and args.validation_steps is not None
                    and global_step % args.validation_steps == 0
                    and accelerator.is_main_process
                ):
                    if ema is not None:
                        ema.store(trainable)
                        ema.copy_to(trainable)
                    log_validation(unwrapped, validation_set, labels, args, accelerator, global_step)
                    if ema is not None:
                        ema.restore(trainable)

            if global_step >= max_train_steps:
                break

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if ema is not None:
            ema.copy_to(trainable)
        unwrapped.requires_grad_(False)
        # Detection defaults to the labels the model knows: keep the old ones, add any new.
        known = list(unwrapped.config.degradations or DEGRADATIONS) if args.daclip_model else []
        unwrapped.register_to_config(degradations=known + [label for label in labels if label not in known])
        unwrapped.eval().to("cpu").save_pretrained(args.output_dir)
        tu.save_recipe(
            args.output_dir,
            {
                "script": "train_daclip.py",
                "use_ema": args.use_ema,
                "ema_decay": args.ema_decay if args.use_ema else None,
                "degradations": unwrapped.config.degradations,
                "captions": has_captions,
                "global_step": global_step,
            },
        )
        logger.info(f"saved the DA-CLIP to {args.output_dir} (global step {global_step})")
    accelerator.end_training()


if __name__ == "__main__":
    main()
