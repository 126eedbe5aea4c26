"""ComfyUI nodes for DA-CLIP: thin adapters (ComfyUI types in, a pipeline function, ComfyUI types out).

Detection, embedding, text steering and sampling are the pipeline's and the models' own functions; the
sampling loop exists once, in `DACLIPPipeline.__call__`. ComfyUI itself is reached only through
`comfy_adapter`, so these nodes also run (and are tested) without ComfyUI.

Types passed between the nodes:
- `DACLIP_MODEL` (`DACLIPHandle`): a DA-CLIP model and where it runs.
- `DACLIP_UNET` (`RestorationModelHandle`): a restoration UNet, its default scheduler settings, where it runs.
- `DACLIP_EMBEDS` (`DACLIPEmbeds`): per image, the content embedding and the degradation embedding.
"""
from __future__ import annotations

import logging
import numbers
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Optional, Tuple

import torch

from ..pipelines.daclip.color_fix import COLOR_FIX_METHODS
from ..pipelines.daclip.loading import load_daclip, load_unet
from ..pipelines.daclip.image_processing import comfy_image_to_batch
from ..pipelines.daclip.modeling_daclip import DACLIPModel
from ..pipelines.daclip.pipeline_daclip import DACLIPPipeline
from ..schedulers.samplers import DEFAULT_STEPS, SAMPLERS, scheduler_for_sampler
from ..pipelines.daclip.unet_daclip import DACLIPUNet2DModel, check_components_match
from ..schedulers import IRSDEPosteriorScheduler
from ..utils import CheckpointError
from . import comfy_adapter

logger = logging.getLogger("daclip")

CATEGORY = "DA-CLIP"
DEVICES = ["default", "cpu"]
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# A rough upper bound of the UNet's working memory per input value (float32 activations of a 64-wide
# network at full resolution, several alive at once); only used to ask ComfyUI to make room.
UNET_BYTES_PER_INPUT_VALUE = 4 * 256
DACLIP_WORKING_MEMORY = 256 * 1024**2
# The widget's ceiling only; the real limit is the loaded scheduler's num_train_timesteps, checked at run time.
MAX_STEPS_INPUT = 10000


# -----------------------------------------------------------------------------------------------------------
# What flows between the nodes
# -----------------------------------------------------------------------------------------------------------
@dataclass
class DACLIPHandle:
    """`DACLIP_MODEL`: the DA-CLIP model, kept on `offload_device` and moved to `load_device` while it works."""

    model: DACLIPModel
    name: str
    load_device: torch.device
    offload_device: torch.device
    # Inside ComfyUI: the model's `ModelPatcher`, through which ComfyUI's memory manager loads and unloads it.
    patcher: Any = None


@dataclass
class RestorationModelHandle:
    """`DACLIP_UNET`: the restoration UNet and the scheduler settings it was released (or saved) with."""

    unet: DACLIPUNet2DModel
    scheduler_config: Dict[str, Any]
    name: str
    load_device: torch.device
    offload_device: torch.device
    patcher: Any = None  # as `DACLIPHandle.patcher`

    @property
    def variant(self) -> str:
        """"wild" for wild-ir (no degradation prompt), "universal" otherwise."""
        return "universal" if self.unet.config.use_degradation_context else "wild"


@dataclass(frozen=True)
class DACLIPEmbeds:
    """`DACLIP_EMBEDS`: DA-CLIP's view of a batch of images, float32 `[B, D]` tensors on the CPU.

    `degradation_embeds` is what the UNet will see as the degradation; `image_degradation_embeds` is the
    image's own (kept so that text steering always takes its norm from the image, see
    `DACLIPPipeline.degradation_condition`). `degradations` says, per image, which text replaced the
    image's degradation embedding (None: the image's own).
    """

    content_embeds: torch.Tensor
    degradation_embeds: torch.Tensor
    image_degradation_embeds: torch.Tensor
    degradations: Tuple[Optional[str], ...]
    daclip: DACLIPHandle

    @property
    def batch_size(self) -> int:
        return self.content_embeds.shape[0]

    def for_batch(self, batch_size: int) -> "DACLIPEmbeds":
        """These embeddings for a batch of `batch_size` images: the same size, or one embedding for all."""
        if self.batch_size == batch_size:
            return self
        if self.batch_size == 1:
            expand = lambda tensor: tensor.expand(batch_size, -1)  # noqa: E731
            return replace(
                self,
                content_embeds=expand(self.content_embeds),
                degradation_embeds=expand(self.degradation_embeds),
                image_degradation_embeds=expand(self.image_degradation_embeds),
                degradations=self.degradations * batch_size,
            )
        raise ValueError(
            f"the embeddings describe {self.batch_size} images but the image batch has {batch_size}: embed the same "
            "images you restore (or a single image, whose embeddings are then used for every image)."
        )


# -----------------------------------------------------------------------------------------------------------
# Helpers
# -----------------------------------------------------------------------------------------------------------
def batch_to_comfy_image(images: torch.Tensor) -> torch.Tensor:
    """`[B, 3, H, W]` in 0..1 → ComfyUI IMAGE `[B, H, W, 3]` float32 on the CPU."""
    return images.detach().float().cpu().movedim(1, -1).contiguous()


def parse_labels(text: str) -> Optional[List[str]]:
    """"hazy, rainy , snowy" → ["hazy", "rainy", "snowy"]; empty → None (the released model's 10 labels)."""
    labels = [label.strip() for label in (text or "").split(",") if label.strip()]
    return labels or None


def _devices(choice: str) -> Tuple[torch.device, torch.device]:
    if choice not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {choice!r}.")
    return comfy_adapter.load_device(choice), comfy_adapter.offload_device(choice)


def _dtype(choice: str) -> torch.dtype:
    if choice not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {choice!r}.")
    return DTYPES[choice]


def _pipeline(daclip=None, unet=None, scheduler=None) -> DACLIPPipeline:
    """A pipeline around the parts a node has, to call the pipeline's own functions."""
    pipe = DACLIPPipeline(daclip=daclip, unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# How to act on a model of the other kind, in ComfyUI's words (see CheckpointError.found).
_NODE_HINTS = {
    "daclip": "In ComfyUI, load it with 'Load DA-CLIP Model' instead.",
    "unet": "In ComfyUI, load it with 'Load DA-CLIP Restoration Model' instead.",
}


def load_daclip_model(path: str, name: str) -> DACLIPModel:
    """A DA-CLIP from any source `daclip.load_daclip` takes (an authors' `.pt` with its same-name JSON config,
    a safetensors file, a DACLIPModel or pipeline folder, a training checkpoint), named `name` in errors."""
    try:
        return load_daclip(path)
    except CheckpointError as error:
        raise error.with_hint(_NODE_HINTS.get(error.found), f"'{name}' cannot be loaded as a DA-CLIP model: ") from None


def load_restoration_model(path: str, name: str) -> Tuple[DACLIPUNet2DModel, Dict[str, Any]]:
    """A restoration UNet and its scheduler settings, from any source `daclip.load_unet` takes.

    The authors' files carry no sampler settings; both universal-ir and wild-ir were tested with the same
    ones (posterior sampling, T = 100, cosine schedule, max_sigma 50, eps 0.005: their test.yml), which are
    the scheduler's defaults. A saved pipeline folder or a training checkpoint brings its own scheduler config.
    """
    try:
        unet, scheduler_config = load_unet(path)
    except CheckpointError as error:
        raise error.with_hint(_NODE_HINTS.get(error.found), f"'{name}' cannot be loaded as a restoration model: ") from None
    return unet, scheduler_config if scheduler_config is not None else dict(IRSDEPosteriorScheduler().config)


# -----------------------------------------------------------------------------------------------------------
# Nodes
# -----------------------------------------------------------------------------------------------------------
_DEVICE_INPUT = (DEVICES, {"default": "default", "tooltip": "default: ComfyUI's device, loaded and unloaded by "
                           "ComfyUI's memory manager like its own models; cpu: always on the CPU."})
_DTYPE_INPUT = (list(DTYPES), {"default": "fp32", "tooltip": "Weights and compute precision. fp32 reproduces the "
                               "authors' numbers; fp16/bf16 save memory on a GPU."})


def _loader_inputs(model_tooltip: str):
    """Both loaders: a model from models/daclip (listed afresh each time), where it runs, its precision."""
    return {
        "required": {
            "model_name": (comfy_adapter.model_entries(), {"tooltip": model_tooltip}),
            "device": _DEVICE_INPUT,
            "dtype": _DTYPE_INPUT,
        }
    }


class DACLIPLoader:
    """Load a DA-CLIP model (image → content and degradation embeddings; degradation detection)."""

    @classmethod
    def INPUT_TYPES(cls):
        return _loader_inputs(
            "A DA-CLIP file from models/daclip (e.g. daclip_ViT-B-32.pt), a saved pipeline folder, or the bundled "
            "demo-model/ (a small model of 5 synthetic degradations)."
        )

    RETURN_TYPES = ("DACLIP_MODEL",)
    RETURN_NAMES = ("daclip",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = "Loads a DA-CLIP model (the authors' .pt files as released, or a diffusers folder)."

    def load(self, model_name: str, device: str = "default", dtype: str = "fp32"):
        load_device, offload_device = _devices(device)
        path = comfy_adapter.resolve_model_entry(model_name)
        model = load_daclip_model(path, model_name).to(device=offload_device, dtype=_dtype(dtype)).eval()
        patcher = comfy_adapter.manage_model(model, load_device, offload_device)
        return (DACLIPHandle(model, model_name, load_device, offload_device, patcher),)


class DACLIPRestorationModelLoader:
    """Load a restoration UNet (universal-ir, universal-ir-mix, wild-ir, or a saved one)."""

    @classmethod
    def INPUT_TYPES(cls):
        return _loader_inputs(
            "A restoration UNet from models/daclip (e.g. universal-ir.pth, wild-ir.pth), a saved pipeline folder, "
            "or the bundled demo-model/ (a small model of 5 synthetic degradations)."
        )

    RETURN_TYPES = ("DACLIP_UNET",)
    RETURN_NAMES = ("restoration_model",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = "Loads the IR-SDE restoration network (the authors' .pth files as released, or a diffusers folder)."

    def load(self, model_name: str, device: str = "default", dtype: str = "fp32"):
        load_device, offload_device = _devices(device)
        path = comfy_adapter.resolve_model_entry(model_name)
        unet, scheduler_config = load_restoration_model(path, model_name)
        unet = unet.to(device=offload_device, dtype=_dtype(dtype)).eval()
        patcher = comfy_adapter.manage_model(unet, load_device, offload_device)
        return (RestorationModelHandle(unet, scheduler_config, model_name, load_device, offload_device, patcher),)


class DACLIPDetectDegradation:
    """Which degradation each image shows, with the probability of every label."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "daclip": ("DACLIP_MODEL",),
                "image": ("IMAGE",),
            },
            "optional": {
                "labels": ("STRING", {
                    "default": "",
                    "multiline": False,
                    "tooltip": "Comma-separated labels to choose from (e.g. 'hazy, rainy, clean'); empty: the "
                               "10 degradations the released models know.",
                }),
            },
        }

    RETURN_TYPES = ("STRING", "FLOAT", "STRING")
    RETURN_NAMES = ("label", "probability", "report")
    OUTPUT_IS_LIST = (True, True, False)
    OUTPUT_TOOLTIPS = (
        "The most likely label, one per image of the batch.",
        "Its probability, one per image of the batch.",
        "Every label's probability for every image, as text.",
    )
    FUNCTION = "detect"
    OUTPUT_NODE = True
    CATEGORY = CATEGORY
    DESCRIPTION = "Detects the degradation of each image (hazy, rainy, noisy, ...) with DA-CLIP."

    def detect(self, daclip: DACLIPHandle, image: torch.Tensor, labels: str = ""):
        label_list = parse_labels(labels)
        images = comfy_image_to_batch(image)
        comfy_adapter.throw_if_interrupted()
        with comfy_adapter.model_on_device(daclip.model, daclip.load_device, daclip.offload_device, DACLIP_WORKING_MEMORY,
                                          patcher=daclip.patcher):
            predictions = daclip.model.detect_degradation(list(images), labels=label_list)
        report = format_report(predictions)
        best_labels = [prediction.label for prediction in predictions]
        best_probabilities = [float(prediction.probability) for prediction in predictions]
        return {"ui": {"text": [report]}, "result": (best_labels, best_probabilities, report)}


def format_report(predictions) -> str:
    """Per image: the best label, then every label's probability, most likely first."""
    lines = []
    for index, prediction in enumerate(predictions):
        if len(predictions) > 1:
            lines.append(f"image {index + 1}: {prediction.label} ({prediction.probability:.1%})")
        else:
            lines.append(f"{prediction.label} ({prediction.probability:.1%})")
        ranked = sorted(dict(prediction.probabilities).items(), key=lambda item: -item[1])
        width = max(len(label) for label, _ in ranked)
        lines.extend(f"  {label:<{width}}  {probability:6.1%}" for label, probability in ranked)
    return "\n".join(lines)


class DACLIPEncodeImage:
    """DA-CLIP's content and degradation embeddings of each image: what the restoration model is conditioned on."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"daclip": ("DACLIP_MODEL",), "image": ("IMAGE",)}}

    RETURN_TYPES = ("DACLIP_EMBEDS",)
    RETURN_NAMES = ("embeds",)
    FUNCTION = "encode"
    CATEGORY = CATEGORY
    DESCRIPTION = "Computes the content and degradation embeddings of each image (one DA-CLIP pass)."

    def encode(self, daclip: DACLIPHandle, image: torch.Tensor):
        images = comfy_image_to_batch(image)
        comfy_adapter.throw_if_interrupted()
        with comfy_adapter.model_on_device(daclip.model, daclip.load_device, daclip.offload_device, DACLIP_WORKING_MEMORY,
                                          patcher=daclip.patcher):
            content, degradation = _pipeline(daclip=daclip.model).encode_image(images, daclip.load_device)
        content, degradation = content.cpu(), degradation.cpu()
        embeds = DACLIPEmbeds(content, degradation, degradation, (None,) * len(images), daclip)
        return (embeds,)


class DACLIPDegradationFromText:
    """Replace the degradation part of the embeddings by a text's ("hazy", "rain streaks", ...)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "daclip": ("DACLIP_MODEL",),
                "embeds": ("DACLIP_EMBEDS",),
                "text": ("STRING", {
                    "default": "hazy",
                    "multiline": False,
                    "tooltip": "What to remove: a degradation label (motion-blurry, hazy, jpeg-compressed, "
                               "low-light, noisy, raindrop, rainy, shadowed, snowy, uncompleted) or free text.",
                }),
            }
        }

    RETURN_TYPES = ("DACLIP_EMBEDS",)
    RETURN_NAMES = ("embeds",)
    FUNCTION = "steer"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Steers what the restoration removes: the degradation embedding becomes the text's (scaled to the image's "
        "own), the content embedding stays. wild-ir ignores degradation embeddings."
    )

    def steer(self, daclip: DACLIPHandle, embeds: DACLIPEmbeds, text: str):
        text = (text or "").strip()
        if not text:
            raise ValueError("the degradation text is empty: type what to remove, e.g. 'hazy'.")
        embed_dim = daclip.model.config.embed_dim
        if embed_dim != embeds.image_degradation_embeds.shape[-1]:
            raise ValueError(
                f"'{daclip.name}' gives {embed_dim}-dim text embeddings but the image embeddings (from "
                f"'{embeds.daclip.name}') are {embeds.image_degradation_embeds.shape[-1]}-dim: use the same DA-CLIP "
                "for both."
            )
        if daclip.name != embeds.daclip.name:
            logger.warning("DA-CLIP: the text is encoded by '%s' but the images by '%s'.", daclip.name, embeds.daclip.name)
        with comfy_adapter.model_on_device(daclip.model, daclip.load_device, daclip.offload_device, DACLIP_WORKING_MEMORY,
                                          patcher=daclip.patcher):
            degradation, _ = _pipeline(daclip=daclip.model).degradation_condition(
                text, embeds.image_degradation_embeds.to(daclip.load_device), daclip.load_device
            )
        return (replace(embeds, degradation_embeds=degradation.cpu(), degradations=(text,) * embeds.batch_size),)


class DACLIPRestore:
    """Restore images by IR-SDE sampling, conditioned on DA-CLIP embeddings."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "restoration_model": ("DACLIP_UNET",),
                "image": ("IMAGE",),
                "embeds": ("DACLIP_EMBEDS",),
                "sampler": (list(SAMPLERS), {
                    "default": "posterior",
                    "tooltip": "posterior: the authors' optimal-posterior step (their test setting); sde: reverse-SDE "
                               "(Euler-Maruyama); ode: deterministic probability-flow ODE; mrs: MR Sampler, a fast "
                               "ODE solver of the same SDE (Li et al. 2025) that needs 10-20 steps.",
                }),
                "steps": ("INT", {
                    "default": 0, "min": 0, "max": MAX_STEPS_INPUT,
                    "tooltip": "Sampling steps (UNet evaluations). 0: the sampler's own default ("
                               + ", ".join(f"{name} {count}" for name, count in DEFAULT_STEPS.items())
                               + "). At most the model's num_train_timesteps (T = 100 for the released models).",
                }),
                "seed": ("INT", {
                    "default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                    "tooltip": "Every image of the batch is sampled with its own torch.Generator seeded with this "
                               "(as DACLIPPipeline with generator=[torch.Generator().manual_seed(seed)] * B, and "
                               "as the command line): an image's result does not depend on the rest of the batch.",
                }),
            },
            "optional": {
                "tile_size": ("INT", {
                    "default": 0, "min": 0, "max": 8192, "step": 32,
                    "tooltip": "0: the whole image at once (the authors' way). Otherwise the network sees "
                               "overlapping tiles of this size (at least 32), which bounds memory for large images.",
                }),
                "tile_overlap": ("INT", {
                    "default": 32, "min": 0, "max": 4096, "step": 8,
                    "tooltip": "Pixels shared by neighbouring tiles (blended), below half the tile size.",
                }),
                "color_fix": (list(COLOR_FIX_METHODS), {
                    "default": "none",
                    "tooltip": "none: the model's colours. wavelet / adain: carry the input's colour over to the "
                               "result (against colour casts); not for low-light or haze, whose colour should change.",
                }),
            },
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    FUNCTION = "restore"
    CATEGORY = CATEGORY
    DESCRIPTION = "Removes the degradation: IR-SDE sampling from the degraded image, conditioned on DA-CLIP embeddings."

    def restore(self, restoration_model: RestorationModelHandle, image: torch.Tensor, embeds: DACLIPEmbeds,
                sampler: str = "posterior", steps: int = 0, seed: int = 0, tile_size: int = 0, tile_overlap: int = 32,
                color_fix: str = "none"):
        unet = restoration_model.unet
        images = comfy_image_to_batch(image)
        embeds = embeds.for_batch(images.shape[0])
        # Everything a user can get wrong is checked before the model moves or sampling starts.
        check_components_match(embeds.daclip.model, unet, f"'{embeds.daclip.name}'", f"'{restoration_model.name}'")
        unet.check_sample_size(*images.shape[-2:])
        if restoration_model.variant == "wild" and any(embeds.degradations):
            logger.warning(
                "DA-CLIP: '%s' (wild-ir) does not use the degradation embedding; the degradation text has no effect.",
                restoration_model.name,
            )
        scheduler = scheduler_for_sampler(sampler, restoration_model.scheduler_config)
        steps = steps or DEFAULT_STEPS[sampler]
        num_train_timesteps = scheduler.config.num_train_timesteps
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or not 1 <= steps <= num_train_timesteps:
            raise ValueError(f"steps must be from 1 to {num_train_timesteps} ('{restoration_model.name}' was trained "
                             f"with num_train_timesteps = {num_train_timesteps}), got {steps!r}.")
        scheduler.set_timesteps(steps)  # the pipeline sets it again; here to size the progress bar (mrs may take fewer)
        pipe = _pipeline(unet=unet, scheduler=scheduler)
        conditioning = {"content_embeds": embeds.content_embeds, "degradation_embeds": embeds.degradation_embeds}
        total_steps = len(scheduler.timesteps)
        total_work = total_steps * images.shape[0]  # image-steps: the batch may run in parts
        progress = comfy_adapter.progress_bar(total_work)
        preview_every = comfy_adapter.preview_interval(total_steps)
        done = [0]

        def on_step_end(pipe, step_index, timestep, tensors):
            done[0] += tensors["latents"].shape[0]
            preview = None
            due = preview_every is not None and ((step_index + 1) % preview_every == 0 or step_index + 1 == total_steps)
            if due and tensors["pred_original_sample"] is not None:
                # x̂₀, the current estimate of the clean image, as ComfyUI's own samplers preview it.
                preview = comfy_adapter.preview_image(tensors["pred_original_sample"])
            progress.update_absolute(done[0], total_work, preview)
            comfy_adapter.throw_if_interrupted()
            return {}

        comfy_adapter.throw_if_interrupted()
        batch, channels, height, width = images.shape
        if tile_size:
            height, width = min(height, tile_size), min(width, tile_size)
        per_image = channels * height * width * UNET_BYTES_PER_INPUT_VALUE
        sub_batch = comfy_adapter.images_that_fit(restoration_model.load_device, per_image, batch)

        def restore_images(start: int, stop: int) -> torch.Tensor:
            # A fresh generator per image and per attempt: the pixels do not depend on how the batch is split.
            output = pipe(
                images[start:stop],
                num_inference_steps=steps,
                generator=[torch.Generator().manual_seed(seed) for _ in range(start, stop)],
                output_type="pt",
                callback_on_step_end=on_step_end,
                callback_on_step_end_tensor_inputs=["latents", "pred_original_sample"],
                tile_size=tile_size or None,
                tile_overlap=tile_overlap,
                color_fix=color_fix,
                content_embeds=conditioning["content_embeds"][start:stop],
                degradation_embeds=conditioning["degradation_embeds"][start:stop],
            )
            return output.images

        with comfy_adapter.model_on_device(
            unet, restoration_model.load_device, restoration_model.offload_device, sub_batch * per_image,
            patcher=restoration_model.patcher,
        ):
            restored = restore_in_sub_batches(restore_images, batch, sub_batch, tile_size)
        return (batch_to_comfy_image(restored),)


def restore_in_sub_batches(restore_images, batch: int, sub_batch: int, tile_size: int) -> torch.Tensor:
    """Run `restore_images(start, stop)` over `batch` images, `sub_batch` at a time, halving the sub-batch when
    memory runs out (as ComfyUI's upscale node halves its tile). One image that does not fit is an error that
    says what to change."""
    results, start = [], 0
    while start < batch:
        stop = min(start + sub_batch, batch)
        try:
            results.append(restore_images(start, stop))
        except (torch.OutOfMemoryError, MemoryError) as error:
            if stop - start == 1:
                raise MemoryError(
                    "DA-CLIP Restore: out of memory on a single image"
                    + (f" with tile_size {tile_size}: use a smaller tile_size" if tile_size else ": set tile_size "
                       "(e.g. 512) to bound the network's memory")
                    + ", or fp16/bf16 on a GPU."
                ) from error
            comfy_adapter.empty_cache()
            sub_batch = max(1, (stop - start) // 2)
            logger.warning("DA-CLIP Restore: out of memory with %d images at once; retrying %d at a time.",
                           stop - start, sub_batch)
            continue
        start = stop
    return torch.cat(results)



NODE_CLASS_MAPPINGS = {
    "DACLIPLoader": DACLIPLoader,
    "DACLIPRestorationModelLoader": DACLIPRestorationModelLoader,
    "DACLIPDetectDegradation": DACLIPDetectDegradation,
    "DACLIPEncodeImage": DACLIPEncodeImage,
    "DACLIPDegradationFromText": DACLIPDegradationFromText,
    "DACLIPRestore": DACLIPRestore,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "DACLIPLoader": "Load DA-CLIP Model",
    "DACLIPRestorationModelLoader": "Load DA-CLIP Restoration Model",
    "DACLIPDetectDegradation": "DA-CLIP Detect Degradation",
    "DACLIPEncodeImage": "DA-CLIP Encode Image",
    "DACLIPDegradationFromText": "DA-CLIP Degradation from Text",
    "DACLIPRestore": "DA-CLIP Restore (IR-SDE)",
}
