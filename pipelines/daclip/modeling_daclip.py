"""`DACLIPModel`: DA-CLIP (Luo et al., ICLR 2024), an open_clip CLIP plus a degradation-aware controller.

The controller is a copy of the CLIP image encoder with its own weights. After each of its blocks, a
zero-initialised `Linear(W, W)` maps the block output to a control signal `z_i`; the controller's own
stream is not changed by it. The frozen CLIP image encoder then runs on the same image and adds the
control signals into its residual stream, in reverse order (see `_run_vision_tower`). The controller's
pooled output is the **degradation embedding**; the controlled CLIP's is the **content embedding** (what
the clean image would embed as).

Parameter names are the authors' (`clip.*`, `visual_control.transformer.transformer.resblocks.N.*`,
`visual_control.transformer.zero_modules.N.*`, `logit_scale`), so their checkpoints load with one change:
the duplicated `visual.*` image tower is dropped (see `convert_original.convert_daclip_state_dict`).
"""
from __future__ import annotations

import copy
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.model import CLIP
from open_clip.tokenizer import tokenize as open_clip_tokenize
from torch import nn
from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

from ...utils.model_loading import OwnedWeightsMixin, QuietDtypeCastMixin
from .image_processing import to_rgb_tensors

# The labels the released DA-CLIPs were trained on, in the authors' order ("uncompleted" = inpainting).
DEGRADATIONS = [
    "motion-blurry",
    "hazy",
    "jpeg-compressed",
    "low-light",
    "noisy",
    "raindrop",
    "rainy",
    "shadowed",
    "snowy",
    "uncompleted",
]

# The authors' README classifies with a literal 100, not with either learned logit scale.
DEGRADATION_LOGIT_SCALE = 100.0

# open_clip's ViT-B/32 sizes: the released universal-ir DA-CLIP (`daclip_ViT-B-32.json`).
_DEFAULT_EMBED_DIM = 512
_DEFAULT_VISION_CFG = {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32}
_DEFAULT_TEXT_CFG = {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12}

ImageInput = Union[PIL.Image.Image, np.ndarray, torch.Tensor]


@dataclass
class DACLIPOutput(BaseOutput):
    """
    Args:
        content_embeds (`torch.Tensor` `[B, embed_dim]`): the controlled CLIP image features, unnormalised
            (the authors' `encode_image(image, control=True)[0]`; with `control=False`, plain CLIP features).
        degradation_embeds (`torch.Tensor` `[B, embed_dim]`): the controller's image features, unnormalised
            (`encode_image(image, control=True)[1]`); None without control.
        text_embeds (`torch.Tensor` `[N, embed_dim]`): CLIP text features of `input_ids`, unnormalised.
        controller_hidden_states (`tuple` of `torch.Tensor` `[B, tokens, width]`): with
            `output_hidden_states=True`, the control signals `z_i = zero_modules[i](controller block i output)`,
            in controller order (block 0 first), batch first.
    """

    content_embeds: Optional[torch.Tensor] = None
    degradation_embeds: Optional[torch.Tensor] = None
    text_embeds: Optional[torch.Tensor] = None
    controller_hidden_states: Optional[Tuple[torch.Tensor, ...]] = None


@dataclass
class DegradationPrediction:
    """The most likely degradation of one image, its probability, and the probability of every label."""

    label: str
    probability: float
    probabilities: Dict[str, float]


# ---------------------------------------------------------------------------------------------------
# Preprocessing: the authors' CLIP view
# ---------------------------------------------------------------------------------------------------
def _to_pil_images(images: Union[ImageInput, Sequence[ImageInput]]) -> List[PIL.Image.Image]:
    """Any image input the pipeline accepts → RGB PIL images, the form the authors' CLIP view starts from.

    RGB PIL images are used as they are. Everything else goes through the pipeline's conversion to
    [0, 1] floats (`image_processing.to_rgb_tensors`: 16-bit, grayscale, alpha, ranges) and is rounded to
    uint8. The authors' app does `(img / 255. * 255).astype(uint8)` in float64, which gives uint8 values
    back exactly; float32 data that was once uint8 / 255 (ComfyUI, torchvision) would lose a level to
    truncation, so we round.
    """
    if isinstance(images, PIL.Image.Image) and images.mode == "RGB":
        return [images]
    if isinstance(images, (list, tuple)) and not isinstance(images, torch.Tensor):
        if len(images) == 0:
            raise ValueError("no images given.")
        return [pil for image in images for pil in _to_pil_images(image)]
    return [
        PIL.Image.fromarray(np.round(tensor.permute(1, 2, 0).numpy().astype(np.float64) * 255.0).astype(np.uint8))
        for tensor in to_rgb_tensors(images)
    ]


def clip_image_transform(image_size: int = 224) -> Compose:
    """The authors' CLIP view (app.py `clip_transform`): bicubic short-side resize (PIL, antialiased), centre
    crop, `ToTensor`, OpenAI mean/std."""
    return Compose(
        [
            Resize(image_size, interpolation=InterpolationMode.BICUBIC),
            CenterCrop(image_size),
            ToTensor(),
            Normalize(OPENAI_DATASET_MEAN, OPENAI_DATASET_STD),
        ]
    )


def preprocess_images(images: Union[ImageInput, Sequence[ImageInput]], image_size: int = 224) -> torch.Tensor:
    """Images → `pixel_values` `[B, 3, image_size, image_size]` float32, the authors' CLIP view of each.

    Accepts what the pipeline accepts (see `image_processing.py`): PIL images, numpy HW/HWC/BHWC arrays
    (uint8, uint16 or float in [0, 1]), torch CHW/BCHW tensors, or a list of these. Non-uint8 data is
    rounded to uint8 (see `_to_pil_images`); alpha channels are dropped; grayscale is repeated.
    """
    transform = clip_image_transform(image_size)
    return torch.stack([transform(image) for image in _to_pil_images(images)]).float()


# ---------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------
class ControlTransformer(nn.Module):
    """The controller's transformer: the copied blocks, plus one zero-initialised `Linear(W, W)` per block.

    Named as the authors' module (`transformer.resblocks.N`, `zero_modules.N`). Its forward lives in
    `DACLIPModel._run_vision_tower`, which needs the main tower and the controller side by side.
    """

    def __init__(self, transformer: nn.Module):
        super().__init__()
        self.transformer = transformer
        width = transformer.width
        self.zero_modules = nn.ModuleList([nn.Linear(width, width) for _ in transformer.resblocks])
        with torch.no_grad():
            for module in self.zero_modules:
                module.weight.zero_()
                module.bias.zero_()

    @property
    def resblocks(self) -> nn.ModuleList:
        return self.transformer.resblocks

    @property
    def batch_first(self) -> bool:
        return getattr(self.transformer, "batch_first", False)


def _check_tower_configs(vision_cfg: Mapping[str, Any], text_cfg: Mapping[str, Any]) -> None:
    if vision_cfg.get("timm_model_name") or isinstance(vision_cfg.get("layers"), (list, tuple)):
        raise ValueError("DA-CLIP needs an open_clip ViT image tower (not a timm model or a ModifiedResNet).")
    if text_cfg.get("hf_model_name"):
        raise ValueError("DA-CLIP needs open_clip's own text transformer (not a Hugging Face text model).")


class DACLIPModel(OwnedWeightsMixin, QuietDtypeCastMixin, ModelMixin, ConfigMixin):
    r"""
    DA-CLIP: an open_clip CLIP whose image encoder is steered by a controller (a trained copy of it).

    Args:
        embed_dim (`int`): size of the CLIP embeddings (512 for ViT-B/32, 768 for ViT-L/14).
        vision_cfg (`dict`): open_clip `CLIPVisionCfg` fields of the image tower (a ViT).
        text_cfg (`dict`): open_clip `CLIPTextCfg` fields of the text tower.
        quick_gelu (`bool`): QuickGELU instead of exact GELU; False for every DA-CLIP.
        degradations (`list` of `str`): the labels `detect_degradation` chooses from by default.
        degradation_logit_scale (`float`, *optional*): the factor on the cosine similarities that
            `detect_degradation` turns into probabilities; None uses the authors' literal 100. A model whose
            100 is badly calibrated (every answer at probability 1.000, right or wrong) carries a scale fitted
            on held-out data (temperature scaling, Guo et al., ICML 2017); the argmax never changes.
        text_tower_pretrained (`bool`): whether the text tower understands language (True for every
            released DA-CLIP: a pretrained CLIP). False for a model whose text tower is random and frozen (the
            bundled demo model): only its own `degradations` labels mean anything to it, so steering with
            any other text is warned about.

    ```py
    >>> model = DACLIPModel.from_original_checkpoint("daclip_ViT-B-32.pt")
    >>> content_embeds, degradation_embeds = model.encode_image(model.preprocess(image))
    >>> model.detect_degradation(image)[0].label
    'hazy'
    ```
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        embed_dim: int = _DEFAULT_EMBED_DIM,
        vision_cfg: Optional[Dict[str, Any]] = None,
        text_cfg: Optional[Dict[str, Any]] = None,
        quick_gelu: bool = False,
        degradations: Optional[List[str]] = None,
        degradation_logit_scale: Optional[float] = None,
        text_tower_pretrained: bool = True,
    ):
        super().__init__()
        vision_cfg = dict(_DEFAULT_VISION_CFG if vision_cfg is None else vision_cfg)
        text_cfg = dict(_DEFAULT_TEXT_CFG if text_cfg is None else text_cfg)
        _check_tower_configs(vision_cfg, text_cfg)
        degradations = _check_labels(DEGRADATIONS if degradations is None else degradations)
        if degradation_logit_scale is not None and not degradation_logit_scale > 0:
            raise ValueError(f"degradation_logit_scale must be a positive number, not {degradation_logit_scale!r}.")
        self.register_to_config(vision_cfg=vision_cfg, text_cfg=text_cfg, degradations=list(degradations))

        self.clip = CLIP(embed_dim, vision_cfg, text_cfg, quick_gelu=quick_gelu)
        # The controller starts as a copy of the CLIP image tower (the authors' `initial_controller`).
        self.visual_control = copy.deepcopy(self.clip.visual)
        self.visual_control.transformer = ControlTransformer(self.visual_control.transformer)
        # DA-CLIP's own logit scale (trained with the controller); the CLIP keeps `clip.logit_scale`.
        self.logit_scale = nn.Parameter(self.clip.logit_scale.detach().clone())

        self.gradient_checkpointing = False
        self._text_embeds_cache: "OrderedDict[tuple, torch.Tensor]" = OrderedDict()

    # -- loading ----------------------------------------------------------------------------------
    @classmethod
    def from_original_checkpoint(
        cls,
        path: Union[str, os.PathLike],
        config: Optional[Union[Dict[str, Any], str, os.PathLike]] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> "DACLIPModel":
        """Load the authors' DA-CLIP file (`daclip_ViT-B-32.pt`, `wild-daclip_ViT-L-14.pt`, ...) unchanged.

        The file may be a training checkpoint (`state_dict` beside `epoch`/`name`/`optimizer`/`scaler`, which
        are ignored) or a bare state dict, with or without a DDP `module.` prefix, or a single safetensors file
        with the same keys. The architecture of the released models is read from the tensor shapes; any other
        needs its open_clip config: `config` (a dict, or the path of its JSON), by default the JSON of the same
        name beside the file (`my_daclip.json` beside `my_daclip.pt`). Every key must match: a wrong, partial or
        unsafe file raises `CheckpointError`. Weights load as float32, then `dtype` casts them
        (`convert_original.load_original_checkpoint`, the same steps as the UNet's).
        """
        from .convert_original import load_original_checkpoint

        return load_original_checkpoint(cls, path, config=config, dtype=dtype)

    @classmethod
    def _build_empty(cls, **kwargs) -> "DACLIPModel":
        """The model with parameters on the meta device (real buffers), to be filled by `load_state_dict(assign=True)`."""
        from .convert_original import _build_empty

        return _build_empty(cls, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self._text_embeds_cache.clear()
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _set_gradient_checkpointing(self, enable: bool = True, gradient_checkpointing_func=None):
        if gradient_checkpointing_func is None:
            super()._set_gradient_checkpointing(enable=enable)
        else:
            super()._set_gradient_checkpointing(enable=enable, gradient_checkpointing_func=gradient_checkpointing_func)
        self.clip.transformer.grad_checkpointing = enable  # open_clip's own flag for the text tower

    # -- forward ----------------------------------------------------------------------------------
    def forward(
        self,
        pixel_values: Optional[torch.Tensor] = None,
        input_ids: Optional[torch.Tensor] = None,
        control: bool = True,
        output_hidden_states: bool = False,
        return_dict: bool = True,
    ) -> Union[DACLIPOutput, tuple]:
        r"""
        Args:
            pixel_values (`torch.Tensor` `[B, 3, S, S]`): images as given by `preprocess`.
            input_ids (`torch.Tensor` `[N, context_length]`): token ids as given by `tokenize`.
            control (`bool`): run the controller; False gives the plain CLIP image features and no
                degradation embeddings.
            output_hidden_states (`bool`): also return the controller's control signals `z_i`.
            return_dict (`bool`): a `DACLIPOutput`, or the tuple `(content_embeds, degradation_embeds,
                text_embeds)` (entries None where not computed), plus the control signals if asked for.

        All conditioning goes through `forward`, so diffusers' offload hooks (which wrap `forward`) see it.

        Raises:
            `ValueError`: neither input given; `pixel_values` not `[B, 3, S, S]` with S the model's `image_size`;
            `input_ids` not `[N, context_length]`.
        """
        if pixel_values is None and input_ids is None:
            raise ValueError("give `pixel_values`, `input_ids`, or both.")
        content_embeds = degradation_embeds = text_embeds = hidden_states = None
        if pixel_values is not None:
            size = self.image_size
            if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != (3, size, size):
                raise ValueError(
                    f"pixel_values must be [B, 3, {size}, {size}] (see `preprocess`); got {tuple(pixel_values.shape)}."
                )
            pixel_values = pixel_values.to(dtype=self.clip.visual.positional_embedding.dtype)
            control_signals = None
            if control:
                degradation_embeds, control_signals = self._run_vision_tower(self.visual_control, pixel_values)
            content_embeds, _ = self._run_vision_tower(self.clip.visual, pixel_values, control_signals=control_signals)
            if output_hidden_states and control_signals is not None:
                batch_first = self.visual_control.transformer.batch_first
                hidden_states = tuple(z if batch_first else z.transpose(0, 1) for z in control_signals)
        if input_ids is not None:
            context_length = int(self.config.text_cfg.get("context_length", 77))
            if input_ids.ndim != 2 or input_ids.shape[1] != context_length:
                raise ValueError(
                    f"input_ids must be [N, {context_length}] (see `tokenize`); got {tuple(input_ids.shape)}."
                )
            text_embeds = self.clip.encode_text(input_ids.long())

        if not return_dict:
            output = (content_embeds, degradation_embeds, text_embeds)
            return output + (hidden_states,) if output_hidden_states else output
        return DACLIPOutput(
            content_embeds=content_embeds,
            degradation_embeds=degradation_embeds,
            text_embeds=text_embeds,
            controller_hidden_states=hidden_states,
        )

    def _run_block(self, block: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return self._gradient_checkpointing_func(block, hidden)
        return block(hidden)

    def _run_vision_tower(
        self, tower: nn.Module, pixel_values: torch.Tensor, control_signals: Optional[List[torch.Tensor]] = None
    ) -> Tuple[torch.Tensor, Optional[List[torch.Tensor]]]:
        """One ViT pass → (pooled, projected features; control signals if `tower` is the controller).

        For the controller, `z_i = zero_modules[i](block_i output)` is collected and its own stream is left
        alone. For the main tower, `control_signals` are added in REVERSE order: after main block j comes
        `z_{L-1-j}` (the authors' `x += control.pop()`; block 0 gets the deepest controller output), also
        after the last block, before `ln_post`.
        """
        is_controller = isinstance(tower.transformer, ControlTransformer)
        blocks = tower.transformer.resblocks
        batch_first = getattr(tower.transformer, "batch_first", False)
        if control_signals is not None and len(control_signals) != len(blocks):
            raise ValueError(f"{len(control_signals)} control signals for {len(blocks)} blocks.")

        hidden = _embed_patches(tower, pixel_values)  # [B, tokens, W]
        if not batch_first:
            hidden = hidden.transpose(0, 1)
        collected = [] if is_controller else None
        pending = list(control_signals) if control_signals is not None else None
        for index, block in enumerate(blocks):
            hidden = self._run_block(block, hidden)
            if is_controller:
                collected.append(tower.transformer.zero_modules[index](hidden))
            if pending is not None:
                hidden = hidden + pending.pop()
        if not batch_first:
            hidden = hidden.transpose(0, 1)
        return _pool_features(tower, hidden), collected

    # -- the public conveniences; all of them go through `forward` ---------------------------------
    def encode_image(
        self, pixel_values: torch.Tensor, control: bool = True
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """`pixel_values` → `(content_embeds, degradation_embeds)`, each `[B, embed_dim]`, unnormalised: the
        authors' `encode_image(image, control=True)`. With `control=False`: `(plain CLIP features, None)`."""
        output = self(pixel_values=pixel_values, control=control)
        return output.content_embeds, output.degradation_embeds

    def encode_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        """`input_ids` `[N, context_length]` → text embeddings `[N, embed_dim]`, unnormalised."""
        return self(input_ids=input_ids).text_embeds

    def tokenize(self, texts: Union[str, Sequence[str]]) -> torch.Tensor:
        """Texts → `[N, context_length]` int64 token ids (open_clip's CLIP BPE: SOT, ids, EOT, zero padding;
        truncated to the context length with EOT kept last). Works offline."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        return open_clip_tokenize(texts, context_length=int(self.config.text_cfg.get("context_length", 77)))

    @property
    def image_size(self) -> int:
        size = self.config.vision_cfg.get("image_size", 224)
        if isinstance(size, (list, tuple)):
            if len(set(size)) != 1:
                raise NotImplementedError(f"preprocessing for a non-square image size {size} is not supported.")
            size = size[0]
        return int(size)

    def preprocess(self, images: Union[ImageInput, Sequence[ImageInput]]) -> torch.Tensor:
        """Images → `pixel_values` `[B, 3, S, S]` float32 on the CPU (S = the vision tower's image size):
        the authors' CLIP view. See `preprocess_images` for the accepted inputs."""
        return preprocess_images(images, self.image_size)

    @torch.no_grad()
    def detect_degradation(
        self, images: Union[ImageInput, Sequence[ImageInput]], labels: Optional[Sequence[str]] = None
    ) -> List[DegradationPrediction]:
        """Per image, the most likely degradation among `labels` (default: `config.degradations`), by
        `softmax(100 · normalize(degradation_embeds) · normalize(text_embeds)ᵀ)` as in the authors' README."""
        labels = self._resolve_labels(labels)
        pixel_values = self.preprocess(images).to(device=self.device)
        degradation_embeds = self(pixel_values=pixel_values).degradation_embeds
        return self.classify_degradation_embeds(degradation_embeds, labels)

    @torch.no_grad()
    def classify_degradation_embeds(
        self, degradation_embeds: torch.Tensor, labels: Optional[Sequence[str]] = None
    ) -> List[DegradationPrediction]:
        """Degradation embeddings `[B, embed_dim]` (from `forward`) → one `DegradationPrediction` per row.

        Raises:
            FloatingPointError: NaN or infinite probabilities (e.g. float16 overflow): no label is made up.
        """
        labels = self._resolve_labels(labels)
        probabilities = self.degradation_logits(degradation_embeds, labels).softmax(dim=-1).cpu()
        if not bool(torch.isfinite(probabilities).all()):
            raise FloatingPointError(
                f"DA-CLIP gave NaN or infinite degradation scores in {self.dtype}; float32 is the authors' precision "
                "(bfloat16 if memory is short; float16 can overflow)."
            )
        predictions = []
        for row in probabilities:
            best = int(row.argmax())
            predictions.append(
                DegradationPrediction(
                    label=labels[best],
                    probability=float(row[best]),
                    probabilities={label: float(value) for label, value in zip(labels, row)},
                )
            )
        return predictions

    def degradation_logits(
        self, degradation_embeds: torch.Tensor, labels: Optional[Sequence[str]] = None
    ) -> torch.Tensor:
        """`s · normalize(degradation_embeds) · normalize(text_embeds(labels))ᵀ`, `[B, len(labels)]` float32, with
        s = `config.degradation_logit_scale`, or the authors' 100 when it is None."""
        labels = self._resolve_labels(labels)
        text_embeds = self._label_text_embeds(labels).to(device=degradation_embeds.device)
        degradation = F.normalize(degradation_embeds.float(), dim=-1)
        scale = getattr(self.config, "degradation_logit_scale", None) or DEGRADATION_LOGIT_SCALE
        return (scale * degradation) @ F.normalize(text_embeds, dim=-1).T

    def unknown_steering_texts(self, texts: Sequence[str]) -> List[str]:
        """The texts this model cannot understand as degradations: with a random text tower
        (`config.text_tower_pretrained` False, the demo model) every text but its own labels; else none."""
        if getattr(self.config, "text_tower_pretrained", True):
            return []
        known = set(self.config.degradations or DEGRADATIONS)
        return sorted({text for text in texts if text not in known})

    def _resolve_labels(self, labels: Optional[Sequence[str]]) -> Tuple[str, ...]:
        if labels is None:
            labels = self.config.degradations or DEGRADATIONS
        return _check_labels(labels)

    def _label_text_embeds(self, labels: Tuple[str, ...]) -> torch.Tensor:
        """float32 text embeddings of `labels`, cached in eval mode per device and dtype (the text tower is
        frozen in DA-CLIP; `load_state_dict` clears the cache)."""
        key = (labels, str(self.device), self.dtype)
        cached = self._text_embeds_cache.get(key)
        if cached is not None:
            return cached
        with torch.no_grad():
            text_embeds = self(input_ids=self.tokenize(list(labels)).to(self.device)).text_embeds.float()
        if not self.training:
            self._text_embeds_cache[key] = text_embeds
            while len(self._text_embeds_cache) > 8:
                self._text_embeds_cache.popitem(last=False)
        return text_embeds


def _check_labels(labels: Any) -> Tuple[str, ...]:
    if isinstance(labels, str):
        raise ValueError(f"labels must be a list of strings, not the single string {labels!r} (write [{labels!r}]).")
    try:
        labels = tuple(labels)
    except TypeError:
        raise ValueError(f"labels must be a list of strings, not {type(labels).__name__}.") from None
    if not labels:
        raise ValueError("labels is empty: give at least one degradation label.")
    not_strings = [label for label in labels if not isinstance(label, str)]
    if not_strings:
        raise ValueError(f"labels must be strings; got {not_strings[:3]!r}.")
    blank = [label for label in labels if not label.strip()]
    if blank:
        raise ValueError("labels must not be empty or blank strings.")
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ValueError(f"duplicate labels: {', '.join(duplicates)}.")
    return labels


def _embed_patches(tower: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """conv1 → patch tokens, class token prepended, positional embedding, `ln_pre`: `[B, tokens, W]`."""
    if hasattr(tower, "_embeds"):  # open_clip ≥ 2.26: also handles its config variants
        return tower._embeds(pixel_values)
    hidden = tower.conv1(pixel_values)
    hidden = hidden.reshape(hidden.shape[0], hidden.shape[1], -1).permute(0, 2, 1)
    class_token = tower.class_embedding.to(hidden.dtype).view(1, 1, -1).expand(hidden.shape[0], -1, -1)
    hidden = torch.cat([class_token, hidden], dim=1) + tower.positional_embedding.to(hidden.dtype)
    return tower.ln_pre(tower.patch_dropout(hidden))


def _pool_features(tower: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """`ln_post` of the class token, then `@ proj` (for the released models; open_clip's variants via `_pool`)."""
    if hasattr(tower, "_pool"):
        pooled, _ = tower._pool(hidden)
    else:
        pooled = tower.ln_post(hidden[:, 0])
    return pooled @ tower.proj if tower.proj is not None else pooled
