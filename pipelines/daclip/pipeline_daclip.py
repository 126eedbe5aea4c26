"""`DACLIPPipeline`: degraded image → DA-CLIP embeddings → IR-SDE sampling → restored image.

The one sampling loop of the project lives in `DACLIPPipeline.__call__`; the ComfyUI nodes and the
command line call it rather than copying it.
"""
from __future__ import annotations

import numbers
import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.utils import BaseOutput, logging

from ...schedulers import IRSDEPosteriorScheduler, IRSDEScheduler, MRSamplerScheduler
from ...schedulers import compatible_schedulers
from ...schedulers.samplers import SAMPLERS, scheduler_for_sampler  # noqa: F401  (re-exported: imported from here before)
from .hub import download_original_checkpoints, download_pipeline_folder, is_remote_code_layout, write_remote_code_layout
from .color_fix import COLOR_FIX_METHODS, apply_color_fix
from .image_processing import ImageInput, like_source, pil_sources, postprocess, to_rgb_tensors
from .tiling import check_tiling, tiled_noise_prediction
from .modeling_daclip import DACLIPModel
from .unet_daclip import DACLIPUNet2DModel, check_components_match

logger = logging.get_logger(__name__)

GeneratorInput = Union[torch.Generator, List[torch.Generator], None]
DegradationInput = Union[None, str, Sequence[str], torch.Tensor]


@dataclass
class DACLIPPipelineOutput(BaseOutput):
    """
    Args:
        images: restored images: a list of PIL images, a numpy array `[B, H, W, 3]`, or a tensor `[B, 3, H, W]`
            (a list of arrays/tensors when the inputs had different sizes), values in [0, 1].
        degradations: per image, the detected degradation label, or the text the caller gave (None when the
            caller gave an embedding).
        degradation_probabilities: per image, the probability of the detected label (None when not detected).
    """

    images: Union[List[PIL.Image.Image], np.ndarray, torch.Tensor, list]
    degradations: List[Optional[str]]
    degradation_probabilities: List[Optional[float]]


class DACLIPPipeline(DiffusionPipeline):
    r"""
    Universal image restoration with DA-CLIP and an IR-SDE (Luo et al., ICLR 2024).

    Components:
        daclip ([`DACLIPModel`]): gives the degradation and clean-content embeddings of the degraded image.
        unet ([`DACLIPUNet2DModel`]): predicts the noise of the IR-SDE, conditioned on both embeddings.
        scheduler ([`IRSDEPosteriorScheduler`], [`IRSDEScheduler`] or [`MRSamplerScheduler`]): walks from
            `degraded + noise` to the restored image.

    ```py
    >>> pipe = DACLIPPipeline.from_original_checkpoints("daclip_ViT-B-32.pt", "universal-ir.pth")
    >>> out = pipe(PIL.Image.open("hazy.jpg"), generator=torch.Generator().manual_seed(0))
    >>> out.images[0].save("restored.png"); out.degradations
    ['hazy']
    ```
    """

    model_cpu_offload_seq = "daclip->unet"
    _callback_tensor_inputs = ["latents", "mu", "pred_original_sample"]

    def __init__(
        self,
        daclip: DACLIPModel,
        unet: DACLIPUNet2DModel,
        scheduler: Union[IRSDEPosteriorScheduler, IRSDEScheduler, MRSamplerScheduler],
    ):
        super().__init__()
        self.register_modules(daclip=daclip, unet=unet, scheduler=scheduler)

    # ------------------------------------------------------------------------------------------------
    # Loading
    # ------------------------------------------------------------------------------------------------
    @classmethod
    def from_original_checkpoints(
        cls,
        daclip_path: Union[str, os.PathLike],
        unet_path: Union[str, os.PathLike],
        daclip_config: Optional[Union[dict, str, os.PathLike]] = None,
        scheduler: Optional[Union[IRSDEPosteriorScheduler, IRSDEScheduler, MRSamplerScheduler]] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> "DACLIPPipeline":
        """Build the pipeline from the authors' released files (e.g. `daclip_ViT-B-32.pt` + `universal-ir.pth`).

        `daclip_config` is an open_clip model config, only for DA-CLIP files whose architecture the tensor
        shapes cannot reveal. The scheduler defaults to the authors' test settings (posterior sampling,
        T = 100, cosine schedule, max_sigma 50, eps 0.005), which they use for universal-ir and wild-ir alike.
        """
        daclip = DACLIPModel.from_original_checkpoint(daclip_path, config=daclip_config)
        unet = DACLIPUNet2DModel.from_original_checkpoint(unet_path)
        check_components_match(daclip, unet, daclip_path, unet_path)
        pipe = cls(daclip=daclip, unet=unet, scheduler=scheduler or IRSDEPosteriorScheduler())
        if dtype is not None:
            pipe.to(dtype=dtype)
        return pipe

    @classmethod
    def from_released(cls, variant: str = "universal", dtype: Optional[torch.dtype] = None, **hub_kwargs):
        """Download the authors' files for `variant` ("universal", "mix" or "wild") from their Hub repository
        (`weblzw/daclip-uir-ViT-B-32-irsde`, cached by `huggingface_hub`) and load them."""
        daclip_path, unet_path = download_original_checkpoints(variant, **hub_kwargs)
        return cls.from_original_checkpoints(daclip_path, unet_path, dtype=dtype)

    def save_pretrained(self, save_directory: Union[str, os.PathLike], **kwargs) -> None:
        """Save as a diffusers folder (safetensors) in the layout that both `DACLIPPipeline.from_pretrained` and
        `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` load (see `hub.py`)."""
        if kwargs.get("push_to_hub"):
            raise ValueError("save the folder first, then upload it (e.g. `huggingface_hub.upload_folder`).")
        super().save_pretrained(save_directory, **kwargs)
        write_remote_code_layout(save_directory, self)

    @classmethod
    def download(cls, pretrained_model_name: str, **kwargs) -> str:
        """Fetch a pipeline repository from the Hub (configs, safetensors and shims only)."""
        return download_pipeline_folder(pretrained_model_name, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Union[str, os.PathLike], **kwargs) -> "DACLIPPipeline":
        """Load a folder written by `save_pretrained`, or a Hub id (`owner/name`), without `trust_remote_code`.

        Components may be passed to replace saved ones (e.g. `scheduler=IRSDEScheduler(...)`); `dtype` (or
        `torch_dtype`) casts the models; `variant`, `use_safetensors` and `low_cpu_mem_usage` are passed to each
        model's `from_pretrained`; `cache_dir`, `revision`, `token`, `local_files_only`, `force_download` and
        `proxies` to the download. Our classes are resolved here directly, so the folder's re-export files are
        never executed. Any other source (a file, a model folder, a training checkpoint, a missing path) is
        handled by `daclip.load_pipeline`, which says what it is.

        Raises `TypeError` for other keyword arguments (`device_map` included: load, then `.to(device)` or
        `enable_model_cpu_offload()`), `CheckpointError` for a source that is not a loadable pipeline.
        """
        from .loading import _converting_hub_errors, check_weights_variant, identify, load_pipeline

        _check_from_pretrained_kwargs(kwargs)
        found = identify(pretrained_model_name_or_path)
        if found.kind not in ("pipeline", "hub"):
            return load_pipeline(found.path, **kwargs)
        folder = found.path
        if found.kind == "hub":
            folder = _converting_hub_errors(found, lambda: cls.download(found.path, **kwargs))
        download_kwargs = {key: kwargs.pop(key) for key in _DOWNLOAD_KWARGS if key in kwargs}
        if not is_remote_code_layout(folder):
            return super().from_pretrained(folder, **kwargs, **download_kwargs)
        dtype = kwargs.pop("dtype", None) or kwargs.pop("torch_dtype", None)
        model_kwargs = {key: kwargs.pop(key) for key in _MODEL_KWARGS if key in kwargs}
        kwargs.pop("trust_remote_code", None)  # our classes are resolved by name; nothing of the folder runs
        index = cls.load_config(folder)
        components = {}
        for name in ("daclip", "unet", "scheduler"):
            if name in kwargs:
                components[name] = kwargs.pop(name)
                continue
            if name not in index:
                raise ValueError(f"{folder}: model_index.json has no '{name}' component.")
            class_name = index[name][1]
            known = _component_classes()
            if class_name not in known:
                raise ValueError(f"{folder}: unknown {name} class {class_name!r}; expected one of {sorted(known)}.")
            component_class = known[class_name]
            if not os.path.isdir(os.path.join(folder, name)):
                raise ValueError(f"{folder}: the '{name}' folder is missing.")
            extra = model_kwargs if name != "scheduler" else {}
            if name != "scheduler":
                check_weights_variant(os.path.join(folder, name), model_kwargs.get("variant"))
            components[name] = _converting_hub_errors(
                found, lambda: component_class.from_pretrained(folder, subfolder=name, **extra)
            )
        check_components_match(components["daclip"], components["unet"])
        pipe = cls(**components)
        if dtype is not None:
            pipe.to(dtype=dtype)
        return pipe

    def __setattr__(self, name, value):
        # A scheduler without the IR-SDE's μ (the degraded image) would run DA-CLIP and fail deep in the loop:
        # refused when assigned (`pipe.scheduler = …`, `__init__`), naming the ones that work.
        if name == "scheduler" and value is not None:
            check_scheduler(value)
        super().__setattr__(name, value)

    # ------------------------------------------------------------------------------------------------
    # Conditioning
    # ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def detect_degradation(self, image, labels: Optional[Sequence[str]] = None):
        """Per image, the most likely degradation, its probability and all probabilities (see `DACLIPModel`)."""
        return self.daclip.detect_degradation(to_rgb_tensors(image), labels=labels)

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor, device: torch.device):
        """`[B, 3, H, W]` in [0, 1] → `(content_embeds, degradation_embeds)`, each `[B, D]` float32.

        Raises:
            FloatingPointError: DA-CLIP gave NaN or infinite embeddings (float16 overflow, broken weights).
        """
        pixel_values = self.daclip.preprocess(images).to(device=device, dtype=self.daclip.dtype)
        output = self.daclip(pixel_values=pixel_values)
        content, degradation = output.content_embeds.float(), output.degradation_embeds.float()
        if not (torch.isfinite(content).all() and torch.isfinite(degradation).all()):
            raise FloatingPointError(
                f"DA-CLIP gave NaN or infinite embeddings in {self.daclip.dtype}: "
                + _dtype_hint(self.daclip.dtype)
            )
        return content, degradation

    @torch.no_grad()
    def encode_degradation_text(self, texts: Sequence[str], device: torch.device) -> torch.Tensor:
        input_ids = self.daclip.tokenize(list(texts)).to(device)
        return self.daclip(input_ids=input_ids).text_embeds.float()

    def degradation_condition(self, degradation: DegradationInput, image_degradation_embeds: torch.Tensor, device):
        """What the UNet sees as the degradation, and the label to report, per image.

        A text (a label such as "hazy", or free text) replaces the image's own degradation embedding by the
        text's embedding, steering what gets removed. The UNet was trained on unnormalised *image*
        degradation embeddings, whose norm differs from that of text embeddings, so the text embedding is
        given the norm of the image's own degradation embedding: its direction says what to remove, its
        size stays in the range the UNet knows.
        """
        batch_size = image_degradation_embeds.shape[0]
        if degradation is None:
            return image_degradation_embeds, None
        if isinstance(degradation, torch.Tensor):
            embeds = degradation.to(device=device, dtype=torch.float32)
            if embeds.ndim == 1:
                embeds = embeds[None]
            return embeds.expand(batch_size, -1), [None] * batch_size
        texts = [degradation] * batch_size if isinstance(degradation, str) else list(degradation)
        unknown = self.daclip.unknown_steering_texts(texts)
        if unknown:
            logger.warning(
                f"this DA-CLIP's text tower is random (text_tower_pretrained=False, e.g. the demo model): it knows only "
                f"its labels {list(self.daclip.config.degradations)}, so {', '.join(map(repr, unknown))} steers the "
                "restoration in an arbitrary direction."
            )
        text_embeds = self.encode_degradation_text(texts, device)
        text_embeds = text_embeds / text_embeds.norm(dim=-1, keepdim=True)
        return text_embeds * image_degradation_embeds.norm(dim=-1, keepdim=True), texts

    # ------------------------------------------------------------------------------------------------
    # Checks
    # ------------------------------------------------------------------------------------------------
    def check_inputs(
        self,
        images: List[torch.Tensor],
        num_inference_steps: int,
        generator: GeneratorInput,
        degradation: DegradationInput,
        latents: Optional[torch.Tensor],
        output_type: str,
        callback_on_step_end_tensor_inputs: Sequence[str],
        content_embeds: Optional[torch.Tensor] = None,
        degradation_embeds: Optional[torch.Tensor] = None,
        tile_size: Optional[int] = None,
        tile_overlap: int = 32,
        color_fix: str = "none",
    ) -> None:
        """Step 1 of `__call__`: raise `ValueError` (or `TypeError`) for any bad argument, before any model runs."""
        num_train_timesteps = self.scheduler.config.num_train_timesteps
        if (
            isinstance(num_inference_steps, bool)
            or not isinstance(num_inference_steps, numbers.Integral)  # numpy integers too
            or not 1 <= num_inference_steps <= num_train_timesteps
        ):
            raise ValueError(
                f"num_inference_steps must be an integer from 1 to {num_train_timesteps} (the scheduler's "
                f"num_train_timesteps), got {num_inference_steps!r}."
            )
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"output_type must be 'pil', 'np' or 'pt', not {output_type!r}.")
        if isinstance(generator, list) and len(generator) != len(images):
            raise ValueError(f"got {len(generator)} generators for {len(images)} images; pass one per image.")
        if isinstance(degradation, (list, tuple)) and len(degradation) != len(images):
            raise ValueError(f"got {len(degradation)} degradation texts for {len(images)} images; pass one per image.")
        if isinstance(degradation, (list, tuple)) and not all(isinstance(text, str) and text.strip() for text in degradation):
            raise ValueError("each degradation text must be a non-empty string.")
        if isinstance(degradation, str) and not degradation.strip():
            raise ValueError("degradation must be a non-empty text, an embedding, or None to detect it.")
        if isinstance(degradation, torch.Tensor):
            self._check_embedding("a degradation embedding", degradation, len(images))
        if degradation is not None and not self.unet.config.use_degradation_context:
            logger.warning(
                "this restoration UNet does not use the degradation embedding (like wild-ir): `degradation` has no "
                "effect on the result."
            )
        if (content_embeds is None) != (degradation_embeds is None):
            raise ValueError("give content_embeds and degradation_embeds together, or neither.")
        if content_embeds is not None:
            if degradation is not None:
                raise ValueError("with precomputed embeddings, steer through degradation_embeds, not degradation.")
            self._check_embedding("content_embeds", content_embeds, len(images))
            self._check_embedding("degradation_embeds", degradation_embeds, len(images))
        if latents is not None:
            if len({tuple(image.shape) for image in images}) != 1:
                raise ValueError("latents can only be given for a batch of images of one size.")
            expected_shape = (len(images), *images[0].shape)
            if tuple(latents.shape) != expected_shape:
                raise ValueError(f"latents must have shape {expected_shape}, got {tuple(latents.shape)}.")
        for image in images:
            self.unet.check_sample_size(*image.shape[-2:])
        unknown = set(callback_on_step_end_tensor_inputs) - set(self._callback_tensor_inputs)
        if unknown:
            raise ValueError(
                f"callback_on_step_end_tensor_inputs {sorted(unknown)} are not among {self._callback_tensor_inputs}."
            )
        if tile_size is not None:
            check_tiling(tile_size, tile_overlap, self.unet.min_sample_size)
        if color_fix not in COLOR_FIX_METHODS:
            raise ValueError(f"color_fix must be one of {COLOR_FIX_METHODS}, not {color_fix!r}.")

    def _check_embedding(self, what: str, embeds: torch.Tensor, batch_size: int) -> None:
        expected = self.unet.config.context_dim
        if embeds.ndim not in (1, 2) or embeds.shape[-1] != expected:
            raise ValueError(f"{what} must be [{expected}] or [B, {expected}]; got {tuple(embeds.shape)}.")
        if embeds.ndim == 2 and embeds.shape[0] not in (1, batch_size):
            raise ValueError(f"{what} has {embeds.shape[0]} rows for {batch_size} images; give 1 or {batch_size}.")

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    # ------------------------------------------------------------------------------------------------
    # Restoration
    # ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        image: Union[ImageInput, Sequence[ImageInput]],
        num_inference_steps: int = 100,
        generator: GeneratorInput = None,
        degradation: DegradationInput = None,
        latents: Optional[torch.Tensor] = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Optional[
            Union[Callable[[DiffusionPipeline, int, torch.Tensor, Dict], Dict], PipelineCallback, MultiPipelineCallbacks]
        ] = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        tile_size: Optional[int] = None,
        tile_overlap: int = 32,
        content_embeds: Optional[torch.Tensor] = None,
        degradation_embeds: Optional[torch.Tensor] = None,
        color_fix: str = "none",
    ):
        r"""
        Restore one image or a batch.

        Args:
            image: a PIL image, a numpy array (HW, HWC or BHWC; uint8, uint16 or float in [0, 1]), a torch
                tensor (CHW or BCHW, float in [0, 1] or uint8), or a list of these. Images of one size are
                sampled as one batch; different sizes are restored one after another.
            num_inference_steps: N, from 1 to the scheduler's `num_train_timesteps` (T = 100). The schedule is
                rebuilt on N steps, as the authors' `sample_T`.
            generator: a `torch.Generator`, or one per image (then each image's result equals a run of that
                image alone with that generator).
            degradation: None to detect it with DA-CLIP (the authors' behaviour); a label such as "hazy" or
                any text, one for all images or one per image, to steer what is removed; or a degradation
                embedding `[D]`/`[B, D]`.
            latents: the start state x_T `[B, 3, H, W]`; by default `degraded + max_sigma · noise`.
            output_type: "pil", "np" (`[B, H, W, 3]` float32) or "pt" (`[B, 3, H, W]`).
            callback_on_step_end: called as `fn(pipe, step_index, timestep, tensors)` after each step; may
                return a dict replacing any of `callback_on_step_end_tensor_inputs` ("latents" = x_t,
                "mu" = the degraded image; "pred_original_sample" = the step's x̂₀, read only). Set
                `pipe._interrupt = True` inside it to stop early (the current state x_t is returned, with a
                warning: it is not a finished restoration).
            tile_size: predict the noise in overlapping tiles of this many pixels (e.g. 512) to bound memory
                for large images; None (default) runs the UNet on the whole image, as the authors.
            tile_overlap: pixels shared by neighbouring tiles, blended linearly.
            content_embeds, degradation_embeds: precomputed DA-CLIP embeddings (`[D]` or `[B, D]`, given
                together, e.g. from `encode_image`); DA-CLIP is then not run and no label is reported.
            color_fix: "none" (default: the authors' output), "wavelet" (the input's low-frequency colour with the
                restoration's detail) or "adain" (the input's per-channel mean and standard deviation); see
                `color_fix.py`. Not for low-light or haze, whose colour is meant to change.

        Returns:
            [`DACLIPPipelineOutput`] (or a tuple `(images, degradations, degradation_probabilities)`). PIL
            inputs come back in their own form (see `image_processing.like_source`): upright, grayscale as L
            (16-bit as I;16), alpha and ICC profile kept; arrays and tensors come back as 3-channel RGB.

        What a result is: every returned image is a finished restoration of all `num_inference_steps` steps,
        or the call says otherwise. A state that turns NaN or infinite (float16 overflow in the UNet, a
        callback's output) raises at that step; nothing is returned for any image of the call (no partial
        batch). The one deliberate exception is `pipe._interrupt = True` from a callback: the current states
        are returned and a warning says after how many steps.

        Raises:
            ValueError, TypeError: bad inputs or arguments (checked before any model runs).
            FloatingPointError: NaN or infinite values appeared, naming the step and the UNet's dtype.
        """
        # 1. Check inputs (tiling and colour fix included): every error is raised before any model runs.
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        images = to_rgb_tensors(image)
        sources = pil_sources(image)
        self.check_inputs(
            images,
            num_inference_steps,
            generator,
            degradation,
            latents,
            output_type,
            callback_on_step_end_tensor_inputs,
            content_embeds,
            degradation_embeds,
            tile_size=tile_size,
            tile_overlap=tile_overlap,
            color_fix=color_fix,
        )
        self._interrupt = False
        self._num_timesteps = num_inference_steps
        self._steps_done = 0

        # 2. Split into batches of one size, each with its own generators, texts and embeddings.
        batches = split_into_batches(images, generator, degradation, content_embeds, degradation_embeds)
        restored, labels, probabilities = [None] * len(images), [None] * len(images), [None] * len(images)
        for batch in batches:
            device = self._execution_device

            # 3. Encode: DA-CLIP's embeddings of the degraded images (unless given), and the labels to report.
            batch_content_embeds, batch_degradation_embeds, batch_labels, batch_probabilities = self.encode_conditions(
                batch, device
            )

            # 4. Prepare the schedule on N steps and the start state x_T = μ + max_sigma·ε.
            self.scheduler.set_timesteps(num_inference_steps, device=device)
            mu, x_t = self.prepare_latents(batch.images, batch.generator, latents, device)

            # 5. Denoising loop: the reverse IR-SDE from x_T to x_0.
            self._steps_done = 0
            for step_index, timestep in enumerate(self.progress_bar(self.scheduler.timesteps)):
                if self.interrupt:
                    break
                noise_pred = self.predict_noise(
                    x_t, timestep, mu, batch_content_embeds, batch_degradation_embeds, tile_size, tile_overlap
                )
                step_output = self.scheduler.step(noise_pred.float(), timestep, x_t, mu=mu, generator=batch.generator)
                x_t = step_output.prev_sample
                if callback_on_step_end is not None:
                    # x̂₀, the step's estimate of the clean image (read only: for previews), where the scheduler gives one.
                    pred_original = getattr(step_output, "pred_original_sample", None)
                    local_tensors = {"latents": x_t, "mu": mu, "pred_original_sample": pred_original}
                    callback_kwargs = {name: local_tensors[name] for name in callback_on_step_end_tensor_inputs}
                    callback_outputs = callback_on_step_end(self, step_index, timestep, callback_kwargs) or {}
                    x_t = callback_outputs.get("latents", x_t)
                    mu = callback_outputs.get("mu", mu)
                self._check_finite(x_t, step_index, timestep, from_callback=callback_on_step_end is not None)
                self._steps_done = step_index + 1

            x_t = apply_color_fix(x_t, batch.images, color_fix)  # postprocessing that needs this batch's own input
            for position, index in enumerate(batch.indices):
                restored[index] = x_t[position]
                labels[index] = batch_labels[position]
                probabilities[index] = batch_probabilities[position]

        # 6. Postprocess: tensors → the output type; PIL inputs come back in their own form.
        if self.interrupt:
            logger.warning(
                "stopped by the callback after %d of %d steps: the images are intermediate states, not finished "
                "restorations.", self._steps_done, num_inference_steps,
            )
        output_images = self.postprocess_images(restored, sources, output_type, one_batch=len(batches) == 1)

        # 7. Offload all models (after `enable_model_cpu_offload`).
        self.maybe_free_model_hooks()

        if not return_dict:
            return output_images, labels, probabilities
        return DACLIPPipelineOutput(images=output_images, degradations=labels, degradation_probabilities=probabilities)

    # ------------------------------------------------------------------------------------------------
    # The steps of `__call__`
    # ------------------------------------------------------------------------------------------------
    def encode_conditions(self, batch: "ImageBatch", device: torch.device):
        """Step 3: `(content_embeds, degradation_embeds, labels, probabilities)` for one batch.

        The embeddings are `[B, D]` float32: the caller's (`batch.embeds`, then no label is reported), or DA-CLIP's
        of the degraded images, with the degradation embedding replaced as `degradation_condition` says. Per
        image, the label is the detected degradation and its probability, or the caller's text and None.
        """
        batch_size = len(batch.images)
        if batch.embeds is not None:
            content_embeds, degradation_embeds = (
                embeds.to(device=device, dtype=torch.float32).expand(batch_size, -1) for embeds in batch.embeds
            )
            return content_embeds, degradation_embeds, [None] * batch_size, [None] * batch_size
        content_embeds, image_degradation_embeds = self.encode_image(batch.images, device)
        degradation_embeds, given_texts = self.degradation_condition(batch.degradation, image_degradation_embeds, device)
        if given_texts is not None:
            return content_embeds, degradation_embeds, given_texts, [None] * len(given_texts)
        predictions = self.daclip.classify_degradation_embeds(image_degradation_embeds)
        return content_embeds, degradation_embeds, [p.label for p in predictions], [p.probability for p in predictions]

    def prepare_latents(
        self, images: torch.Tensor, generator: GeneratorInput, latents: Optional[torch.Tensor], device: torch.device
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Step 4: `(mu, x_T)`, both `[B, 3, H, W]` float32 on `device` (the scheduler works in float32 whatever the
        UNet dtype): μ is the degraded image, x_T the caller's `latents` or `μ + max_sigma·ε` drawn with
        `generator` (`scheduler.prepare_start_sample`). Call after `scheduler.set_timesteps`."""
        mu = images.to(device=device, dtype=torch.float32)
        if latents is None:
            return mu, self.scheduler.prepare_start_sample(mu, generator=generator)
        return mu, latents.to(device=device, dtype=torch.float32)

    def predict_noise(self, latents, timestep, mu, content_embeds, degradation_embeds, tile_size, tile_overlap):
        """ε̂ at x_t, float32 `[B, 3, H, W]`, in one UNet call or, with `tile_size`, in overlapping tiles
        (see `tiling.py`)."""
        unet_dtype = self.unet.dtype

        def predict(sample: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
            return self.unet(
                sample.to(unet_dtype),
                timestep,
                condition.to(unet_dtype),
                degradation_embeds=degradation_embeds.to(unet_dtype),
                content_embeds=content_embeds.to(unet_dtype),
            ).sample.float()

        if tile_size is None:
            return predict(latents, mu)
        return tiled_noise_prediction(predict, latents, mu, tile_size, tile_overlap)

    def _check_finite(self, latents: torch.Tensor, step_index: int, timestep, from_callback: bool) -> None:
        """A NaN never heals: stop at the step where it appears rather than return a black image."""
        if not bool(torch.isfinite(latents).all()):
            raise FloatingPointError(
                f"the sample became NaN or infinite at step {step_index + 1} of {self._num_timesteps} "
                f"(timestep {float(timestep):g}) with the UNet in {self.unet.dtype}"
                + (" or from the step-end callback" if from_callback else "")
                + ": " + _dtype_hint(self.unet.dtype)
            )

    @staticmethod
    def postprocess_images(restored: List[torch.Tensor], sources, output_type: str, one_batch: bool):
        """Step 6: the restored `[3, H, W]` tensors → the output type. Images of one size come back as one array /
        tensor (or a list of PIL images); different sizes as a list with one image each. With `output_type="pil"`,
        PIL inputs come back in their own form: mode, alpha, ICC profile (`image_processing.like_source`)."""
        if one_batch:
            output_images = postprocess(torch.stack(restored), output_type)
        else:
            # Different sizes cannot share one array: a list with one image (PIL, HWC array or CHW tensor) each.
            output_images = [postprocess(single[None], output_type)[0] for single in restored]
        if output_type == "pil":
            output_images = [
                like_source(result, source, postprocess(restored[index][None], "np")[0] if source else None)
                for index, (result, source) in enumerate(zip(output_images, sources))
            ]
        return output_images


@dataclass
class ImageBatch:
    """Step 2's unit: images of one size restored together, with what belongs to them.

    Args:
        indices: their positions among the call's images.
        images: `[B, 3, H, W]` float32 in [0, 1], the degraded images (μ).
        generator: the call's generator, or the generators of these images.
        degradation: the call's `degradation`, restricted to these images (texts or embedding rows).
        embeds: the caller's `(content_embeds, degradation_embeds)` rows for these images, or None.
    """

    indices: List[int]
    images: torch.Tensor
    generator: GeneratorInput
    degradation: DegradationInput
    embeds: Optional[Tuple[torch.Tensor, torch.Tensor]]


def split_into_batches(
    images: List[torch.Tensor],
    generator: GeneratorInput,
    degradation: DegradationInput,
    content_embeds: Optional[torch.Tensor],
    degradation_embeds: Optional[torch.Tensor],
) -> List[ImageBatch]:
    """Images of one size are one batch; otherwise each image is its own batch, with its own generator (a single
    generator is shared in order, as it would be across separate calls)."""
    if len({tuple(img.shape) for img in images}) == 1:
        groups = [list(range(len(images)))]
    else:
        groups = [[index] for index in range(len(images))]
    batches = []
    for group in groups:
        group_degradation = degradation
        if isinstance(degradation, (list, tuple)):
            group_degradation = [degradation[i] for i in group]
        elif isinstance(degradation, torch.Tensor):
            group_degradation = _rows_for(degradation, group, len(images))
        group_embeds = None
        if content_embeds is not None:
            group_embeds = (
                _rows_for(content_embeds, group, len(images)),
                _rows_for(degradation_embeds, group, len(images)),
            )
        batches.append(
            ImageBatch(
                indices=group,
                images=torch.stack([images[i] for i in group]),
                generator=[generator[i] for i in group] if isinstance(generator, list) else generator,
                degradation=group_degradation,
                embeds=group_embeds,
            )
        )
    return batches


def _dtype_hint(dtype: torch.dtype) -> str:
    if dtype == torch.float16:
        return "float16 overflows in this network; use float32 (the authors') or bfloat16 (`dtype=`, `--dtype`)."
    return "check the weights and the input; float32 is the authors' precision (`dtype=`, `--dtype`)."


def _rows_for(embeds: torch.Tensor, group: List[int], batch_size: int) -> torch.Tensor:
    """The rows of a `[D]`, `[1, D]` or `[batch_size, D]` embedding that belong to the images in `group`."""
    if embeds.ndim == 2 and embeds.shape[0] == batch_size and batch_size > 1:
        return embeds[group]
    return embeds if embeds.ndim == 2 else embeds[None]


def check_scheduler(scheduler) -> None:
    """Raise `TypeError` unless `scheduler` is one of `compatible_schedulers()`."""
    compatible = tuple(compatible_schedulers())
    if not isinstance(scheduler, compatible):
        names = ", ".join(cls.__name__ for cls in compatible)
        raise TypeError(
            f"{type(scheduler).__name__} cannot sample DACLIPPipeline: it needs an IR-SDE scheduler, which reverts to "
            f"the degraded image μ. Compatible: {names} (e.g. pipe.scheduler = "
            f"{compatible[0].__name__}.from_config(pipe.scheduler.config))."
        )


def _component_classes() -> Dict[str, type]:
    return {component.__name__: component for component in (DACLIPModel, DACLIPUNet2DModel, *compatible_schedulers())}


_DOWNLOAD_KWARGS = ("cache_dir", "revision", "token", "local_files_only", "force_download", "proxies")
_MODEL_KWARGS = ("variant", "use_safetensors", "low_cpu_mem_usage")
_OTHER_KWARGS = ("dtype", "torch_dtype", "trust_remote_code", "daclip", "unet", "scheduler")
_REFUSED_KWARGS = {
    "device_map": "load, then move with .to(device) or use enable_model_cpu_offload()",
    "max_memory": "load, then use enable_model_cpu_offload() or enable_sequential_cpu_offload()",
    "offload_folder": "load, then use enable_sequential_cpu_offload()",
    "custom_pipeline": "DACLIPPipeline is the pipeline",
}


def _check_from_pretrained_kwargs(kwargs: Dict[str, object]) -> None:
    """Refuse by name what `DACLIPPipeline.from_pretrained` does not do, instead of ignoring it silently."""
    refused = [f"{key} ({_REFUSED_KWARGS[key]})" for key in kwargs if key in _REFUSED_KWARGS and kwargs[key] is not None]
    unknown = [key for key in kwargs if key not in (*_REFUSED_KWARGS, *_DOWNLOAD_KWARGS, *_MODEL_KWARGS, *_OTHER_KWARGS)]
    if refused or unknown:
        raise TypeError(
            "DACLIPPipeline.from_pretrained does not support "
            + "; ".join(refused + [f"{key} (unknown argument)" for key in unknown])
            + f". Supported: {', '.join(_DOWNLOAD_KWARGS + _MODEL_KWARGS + _OTHER_KWARGS)}."
        )
