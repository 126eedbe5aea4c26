"""The authors' released checkpoints (`daclip_ViT-B-32.pt`, `universal-ir.pth`, ...) → our models.

Both `from_original_checkpoint`s take the same steps, here (`load_original_checkpoint`): read the file
safely → convert its state dict (every key understood or refused) → take the architecture from the given
config or infer it from the tensor shapes → build the model → one strict key-and-shape check → load in
float32, as the authors do, then cast to `dtype` if asked. `convert_to_diffusers` writes the result as
diffusers folders (`daclip convert`, `scripts/convert_original_to_diffusers.py`).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple, Union

import torch

from ...utils.checkpoint_io import CheckpointError, first_items, check_state_dict, load_torch_checkpoint, strip_prefix

# Advice for a file of the other component, in the Python API's words (front ends replace it, see
# `CheckpointError.with_hint`).
OTHER_KIND_HINTS = {
    "daclip": "Load it as the DA-CLIP: DACLIPModel.from_original_checkpoint (or daclip.load_daclip).",
    "unet": "Load it as the restoration UNet: DACLIPUNet2DModel.from_original_checkpoint (or daclip.load_unet).",
}
# The released DA-CLIPs' open_clip configs (the authors' daclip_ViT-B-32.json and daclip_ViT-L-14.json, which
# copy open_clip's ViT-B-32 and ViT-L-14): the only architectures read from shapes alone.
RELEASED_DACLIP_CONFIGS = {
    "ViT-B-32": {
        "embed_dim": 512,
        "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12},
    },
    "ViT-L-14": {
        "embed_dim": 768,
        "vision_cfg": {"image_size": 224, "layers": 24, "width": 1024, "patch_size": 14},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 768, "heads": 12, "layers": 12},
    },
}


# ---------------------------------------------------------------------------------------------------
# DA-CLIP (`*.pt`)
# ---------------------------------------------------------------------------------------------------
# Top-level module names of the authors' ConditionalUNet; a DA-CLIP file has none of them.
_UNET_KEY_PREFIXES = ("init_conv.", "time_mlp.", "downs.", "ups.", "mid_block1.", "mid_attn.", "final_conv.",
                      "final_res_block.", "prompt_mlp.", "text_mlp.")
# open_clip config keys we understand. `custom_text` only picks open_clip's model class, which
# DA-CLIP overrides anyway (the authors pop it and always build `CLIP`).
_OPEN_CLIP_CONFIG_KEYS = ("embed_dim", "vision_cfg", "text_cfg", "quick_gelu")
_IGNORED_OPEN_CLIP_CONFIG_KEYS = ("custom_text",)
# Released DA-CLIPs use open_clip's default 64-wide attention heads, which no tensor shape reveals.
_RELEASED_HEAD_WIDTH = 64


def unwrap_daclip_checkpoint(checkpoint: Any, source: str = "checkpoint") -> Dict[str, torch.Tensor]:
    """The state dict inside a loaded DA-CLIP file, as the authors' `open_clip.load_state_dict` finds it.

    Accepts a dict with a `state_dict` entry (beside `epoch`/`name`/`optimizer`/`scaler`, ignored) or a
    bare state dict; removes a DataParallel/DDP `module.` prefix.
    """
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"{source}: expected a dict of tensors, found a {type(checkpoint).__name__}.")
    if "state_dict" in checkpoint:
        state_dict = checkpoint["state_dict"]
        if not isinstance(state_dict, Mapping):
            raise CheckpointError(f"{source}: its 'state_dict' entry is a {type(state_dict).__name__}, not a dict.")
        # Everything beside `state_dict` (the authors save epoch/name/optimizer/scaler) is training state,
        # never weights: ignored, as the authors' loader does.
    else:
        state_dict = checkpoint
    not_tensors = [key for key, value in state_dict.items() if not isinstance(value, torch.Tensor)]
    if not_tensors or not state_dict:
        raise CheckpointError(
            f"{source}: not a model state dict (entries that are not tensors: {first_items(map(str, not_tensors)) or 'none; it is empty'})."
        )
    # The authors strip 7 characters from every key when the first key starts with `module`
    # (DDP training); keys without the prefix are left alone here and reported later if unknown.
    return strip_prefix(state_dict, "module.")


def convert_daclip_state_dict(checkpoint: Any, source: str = "checkpoint") -> Dict[str, torch.Tensor]:
    """The authors' DA-CLIP checkpoint (loaded object) → the state dict of `DACLIPModel`.

    Our parameter names are the authors' (`clip.*`, `visual_control.transformer.{transformer,zero_modules}.*`,
    `logit_scale`), except that the duplicated image tower `visual.*` (the authors' `DaCLIP.visual` is the
    same module as `clip.visual`, so a strict load needs both key sets) is dropped after checking that it
    equals `clip.visual.*`. Both logit scales are kept (`logit_scale` is DA-CLIP's own copy, trained with
    the controller; `clip.logit_scale` is the frozen CLIP's); neither is used to compute embeddings.

    Raises `CheckpointError` for files that are not DA-CLIP checkpoints: a restoration UNet, a plain CLIP
    without the controller, or anything else. Key completeness is checked against the model by
    `load_original_checkpoint`.
    """
    state_dict = dict(unwrap_daclip_checkpoint(checkpoint, source))
    keys = list(state_dict)

    if any(key.startswith(_UNET_KEY_PREFIXES) or key == "prompt" for key in keys):
        raise CheckpointError(
            f"{source}: this looks like a restoration UNet checkpoint (`*.pth`, e.g. universal-ir.pth), not a "
            f"DA-CLIP checkpoint (`daclip_*.pt`): its keys start with {first_items(sorted({k.split('.')[0] for k in keys}), 5)}.",
            found="unet",
            hint=OTHER_KIND_HINTS["unet"],
        )
    if not any(key.startswith("visual_control.") for key in keys):
        if any(key.startswith(("visual.", "clip.visual.", "token_embedding.", "clip.token_embedding.")) for key in keys):
            raise CheckpointError(
                f"{source}: this is a plain CLIP checkpoint without the DA-CLIP controller (no `visual_control.*` "
                "keys). DA-CLIP needs the controller trained by the authors (e.g. daclip_ViT-B-32.pt)."
            )
        raise CheckpointError(
            f"{source}: not a DA-CLIP checkpoint: none of its {len(keys)} keys belong to DA-CLIP "
            f"(first keys: {first_items(keys, 5)})."
        )

    duplicated = [key for key in keys if key.startswith("visual.")]
    if duplicated:
        tower_keys = {key[len("clip."):] for key in keys if key.startswith("clip.visual.")}
        missing_copies = sorted(tower_keys - set(duplicated))
        orphans = sorted(set(duplicated) - tower_keys)
        if missing_copies or orphans:
            raise CheckpointError(
                f"{source}: its two copies of the image tower (`visual.*` and `clip.visual.*`, the same module in "
                f"the authors' model) have different keys: only in clip.visual: {first_items(missing_copies) or 'none'}; "
                f"only in visual: {first_items(orphans) or 'none'}."
            )
        for key in duplicated:
            copy, original = state_dict.pop(key), state_dict["clip." + key]
            same_storage = copy.data_ptr() == original.data_ptr() and copy.shape == original.shape
            if not same_storage and not (copy.shape == original.shape and torch.equal(copy, original)):
                raise CheckpointError(
                    f"{source}: `{key}` differs from `clip.{key}`; in the authors' model they are one tensor, so "
                    "the file is inconsistent (edited or corrupt)."
                )
    return state_dict


def _block_indices(state_dict: Mapping[str, Any], prefix: str) -> List[int]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(match.group(1)) for key in state_dict for match in [pattern.match(key)] if match})


def _shape(state_dict: Mapping[str, torch.Tensor], key: str, source: str) -> Tuple[int, ...]:
    if key not in state_dict:
        raise CheckpointError(f"{source}: missing `{key}`, needed to read the architecture from the file.")
    return tuple(state_dict[key].shape)


def _heads(width: int, what: str, source: str) -> int:
    if width % _RELEASED_HEAD_WIDTH:
        raise CheckpointError(
            f"{source}: the {what} width {width} is not a multiple of 64, so the number of attention heads cannot "
            "be inferred (released DA-CLIPs use 64-wide heads); pass the model's open_clip config as `config=`."
        )
    return width // _RELEASED_HEAD_WIDTH


def infer_daclip_config(state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> Dict[str, Any]:
    """Read the open_clip architecture (`embed_dim`, `vision_cfg`, `text_cfg`) from a converted DA-CLIP state dict.

    Everything but the attention head count is a tensor shape; heads are width / 64, as in every released
    DA-CLIP (ViT-B/32: vision 768 wide, 12 layers; ViT-L/14: 1024 wide, 24 layers). Shapes of any other
    architecture raise `CheckpointError`: their head count would be a guess, and a wrong guess loads without
    error and computes other embeddings (e.g. 1 head of 64 instead of 2 of 32). Such models need their config.
    """
    vision_width, channels, patch, patch_w = _shape(state_dict, "clip.visual.conv1.weight", source)
    positions = _shape(state_dict, "clip.visual.positional_embedding", source)[0]
    grid = int(round((positions - 1) ** 0.5))
    if channels != 3 or patch != patch_w or grid * grid != positions - 1:
        raise CheckpointError(
            f"{source}: the image tower is not a square-patch ViT on a square grid (conv1 "
            f"{_shape(state_dict, 'clip.visual.conv1.weight', source)}, {positions} positions); pass `config=`."
        )
    vision_layers = _block_indices(state_dict, "clip.visual.transformer.resblocks.")
    embed_dim = _shape(state_dict, "clip.visual.proj", source)[1]
    vision_mlp = _shape(state_dict, "clip.visual.transformer.resblocks.0.mlp.c_fc.weight", source)[0]

    context_length, text_width = _shape(state_dict, "clip.positional_embedding", source)
    vocab_size = _shape(state_dict, "clip.token_embedding.weight", source)[0]
    text_layers = _block_indices(state_dict, "clip.transformer.resblocks.")
    text_embed_dim = _shape(state_dict, "clip.text_projection", source)[1]
    text_mlp = _shape(state_dict, "clip.transformer.resblocks.0.mlp.c_fc.weight", source)[0]
    if text_embed_dim != embed_dim:
        raise CheckpointError(
            f"{source}: the image projection gives {embed_dim}-dim embeddings but the text projection "
            f"{text_embed_dim}-dim; not a CLIP."
        )

    vision_cfg: Dict[str, Any] = {
        "image_size": grid * patch,
        "layers": len(vision_layers),
        "width": vision_width,
        "head_width": _RELEASED_HEAD_WIDTH,
        "patch_size": patch,
    }
    _heads(vision_width, "image tower", source)
    if vision_mlp != 4 * vision_width:
        vision_cfg["mlp_ratio"] = vision_mlp / vision_width
    text_cfg: Dict[str, Any] = {
        "context_length": context_length,
        "vocab_size": vocab_size,
        "width": text_width,
        "heads": _heads(text_width, "text tower", source),
        "layers": len(text_layers),
    }
    if text_mlp != 4 * text_width:
        text_cfg["mlp_ratio"] = text_mlp / text_width
    inferred = {"embed_dim": embed_dim, "vision_cfg": vision_cfg, "text_cfg": text_cfg}
    if not any(_is_released(inferred, released) for released in RELEASED_DACLIP_CONFIGS.values()):
        raise CheckpointError(
            f"{source}: its shapes (image tower {vision_width} wide x {len(vision_layers)} layers, patch {patch}; "
            f"text tower {text_width} wide x {len(text_layers)} layers; {embed_dim}-dim embeddings) are not a released "
            f"DA-CLIP ({', '.join(RELEASED_DACLIP_CONFIGS)}), and the number of attention heads cannot be read from "
            "shapes. Give its open_clip config: a JSON of the same name beside the file, or `config=` "
            "(`--daclip-config` on the command line)."
        )
    return inferred


def _is_released(inferred: Mapping[str, Any], released: Mapping[str, Any]) -> bool:
    """Do the shape-derived parts of `inferred` equal a released config (heads = width / 64 holds for both)?"""
    vision = {key: value for key, value in inferred["vision_cfg"].items() if key != "head_width"}
    return (
        inferred["embed_dim"] == released["embed_dim"]
        and vision == released["vision_cfg"]
        and inferred["text_cfg"] == released["text_cfg"]
    )


def load_open_clip_config(config: Any) -> Dict[str, Any]:
    """An open_clip model config (a dict, or the path of its JSON) → the keyword arguments of `DACLIPModel`.

    Accepts open_clip's `model_configs/*.json` layout and the Hub's `open_clip_config.json` (`model_cfg` inside).
    """
    if isinstance(config, (str, os.PathLike)):
        try:
            with open(config, "r", encoding="utf-8") as handle:
                config = json.load(handle)
        except (OSError, ValueError) as error:
            raise CheckpointError(f"cannot read the open_clip config {os.fspath(config)}: {error}") from None
    if not isinstance(config, Mapping):
        raise ValueError(f"an open_clip config must be a dict or the path of a JSON file, not {type(config).__name__}.")
    if "model_cfg" in config:
        config = config["model_cfg"]
    unknown = [key for key in config if key not in _OPEN_CLIP_CONFIG_KEYS + _IGNORED_OPEN_CLIP_CONFIG_KEYS]
    if unknown:
        raise ValueError(
            f"unsupported open_clip config entries for DA-CLIP: {', '.join(map(str, unknown))} "
            f"(understood: {', '.join(_OPEN_CLIP_CONFIG_KEYS + _IGNORED_OPEN_CLIP_CONFIG_KEYS)})."
        )
    missing = [key for key in ("embed_dim", "vision_cfg", "text_cfg") if key not in config]
    if missing:
        raise ValueError(f"the open_clip config lacks {', '.join(missing)}.")
    return {key: json.loads(json.dumps(config[key])) for key in _OPEN_CLIP_CONFIG_KEYS if key in config}


# ---------------------------------------------------------------------------------------------------
# Restoration UNet (`*.pth`)
# ---------------------------------------------------------------------------------------------------
# Top-level names of a DA-CLIP state dict; a restoration UNet has none of them.
_DACLIP_KEY_PREFIXES = ("clip.", "visual.", "visual_control.", "logit_scale")


def convert_unet_state_dict(checkpoint: Any, source: str = "checkpoint") -> Dict[str, torch.Tensor]:
    """The state dict of a loaded `universal-ir.pth` / `wild-ir.pth`, ready for `DACLIPUNet2DModel`.

    The authors save a plain `OrderedDict` of tensors whose names are already ours; like their `load_network`,
    a `module.` (DataParallel/DDP) prefix is removed from every key that has it. A DA-CLIP file, or anything that
    is not a flat dict of tensors, raises `CheckpointError`.
    """
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"{source}: expected a dict of tensors, found a {type(checkpoint).__name__}.")
    daclip_file = CheckpointError(
        f"{source}: this looks like a DA-CLIP checkpoint (`*.pt`), not a restoration UNet (`*.pth`).",
        found="daclip",
        hint=OTHER_KIND_HINTS["daclip"],
    )
    inner = checkpoint.get("state_dict")
    if isinstance(inner, Mapping) and any(
        str(key).removeprefix("module.").startswith(_DACLIP_KEY_PREFIXES) for key in inner
    ):
        raise daclip_file
    state_dict = strip_prefix(checkpoint, "module.")
    if any(str(key).startswith(_DACLIP_KEY_PREFIXES) for key in state_dict):
        raise daclip_file
    not_tensors = [str(key) for key, value in state_dict.items() if not isinstance(value, torch.Tensor)]
    if not_tensors or not state_dict:
        raise CheckpointError(
            f"{source}: not a restoration UNet state dict (a plain dict of tensors): "
            + (f"entries that are not tensors: {', '.join(not_tensors[:8])}" if not_tensors else "it is empty")
        )
    return dict(state_dict)


def _tensor(state_dict: Mapping[str, torch.Tensor], key: str, ndim: int, source: str) -> torch.Tensor:
    if key not in state_dict:
        raise CheckpointError(f"{source}: not a restoration UNet checkpoint, or an incomplete one: missing key {key!r}.")
    tensor = state_dict[key]
    if tensor.ndim != ndim:
        raise CheckpointError(f"{source}: {key} has shape {tuple(tensor.shape)}; a restoration UNet's has {ndim} dimensions.")
    return tensor


def infer_unet_config(state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> Dict[str, Any]:
    """`DACLIPUNet2DModel` config arguments read from the tensor shapes of an (unprefixed) authors' state dict.

    - `base_channels`, `in_channels` from `init_conv.weight [nf, 2·in, 7, 7]`; `out_channels` from `final_conv`;
    - the depth from the number of `downs.i`, and `channel_mult[i]` from the output width of `downs.i.3`
      (the level's downsampler);
    - `use_degradation_context` from `prompt` / `text_mlp` / `prompt_mlp`; `downscale_stage` (wild-ir) from
      `downsample` / `upsample`; `use_image_context` from SpatialTransformer keys;
    - `context_dim` from a cross-attention `attn2.to_k.weight [C, ctx]` (else `text_mlp.0.weight`);
    - `first_cross_attention_level` from the first `downs.i` holding a SpatialTransformer.

    Only the architecture is read here; `load_original_checkpoint` then checks every key.
    """
    init_conv = _tensor(state_dict, "init_conv.weight", 4, source)
    base_channels, in_channels = int(init_conv.shape[0]), int(init_conv.shape[1]) // 2
    out_channels = int(_tensor(state_dict, "final_conv.weight", 4, source).shape[0])

    levels = sorted({int(match.group(1)) for key in state_dict if (match := re.match(r"downs\.(\d+)\.", key))})
    if not levels or levels != list(range(len(levels))):
        raise CheckpointError(
            f"{source}: not a restoration UNet checkpoint: expected levels downs.0 ... downs.N, found {levels or 'none'}."
        )
    depth = len(levels)
    channel_mult = []
    for level in levels:
        width = int(_tensor(state_dict, f"downs.{level}.3.weight", 4, source).shape[0])
        if width % base_channels:
            raise CheckpointError(
                f"{source}: downs.{level}.3.weight gives {width} channels, not a multiple of base_channels {base_channels}."
            )
        channel_mult.append(width // base_channels)

    use_degradation_context = any(
        key == "prompt" or key.startswith(("text_mlp.", "prompt_mlp.")) for key in state_dict
    )
    downscale_stage = any(key.startswith(("downsample.", "upsample.")) for key in state_dict)
    use_image_context = any(".transformer_blocks." in key for key in state_dict)

    cross_keys = sorted(key for key in state_dict if key.endswith(".attn2.to_k.weight"))
    if cross_keys:
        context_dim = int(_tensor(state_dict, cross_keys[0], 2, source).shape[1])
    elif "text_mlp.0.weight" in state_dict:
        context_dim = int(_tensor(state_dict, "text_mlp.0.weight", 2, source).shape[1])
    else:
        context_dim = 512  # no context at all: the width is never used

    cross_levels = [level for level in levels if f"downs.{level}.2.fn.fn.proj_in.weight" in state_dict]
    # Without image context the level is unused; `depth` means "no level" when only the middle cross-attends.
    first_cross_attention_level = (cross_levels[0] if cross_levels else depth) if use_image_context else 3

    return {
        "in_channels": in_channels,
        "out_channels": out_channels,
        "base_channels": base_channels,
        "channel_mult": tuple(channel_mult),
        "context_dim": context_dim,
        "use_degradation_context": use_degradation_context,
        "use_image_context": use_image_context,
        "downscale_stage": downscale_stage,
        "first_cross_attention_level": first_cross_attention_level,
    }


# ---------------------------------------------------------------------------------------------------
# The steps both `from_original_checkpoint`s take
# ---------------------------------------------------------------------------------------------------
class _OriginalFormat(NamedTuple):
    what: str  # how errors name the model
    convert: Callable[[Any, str], Dict[str, torch.Tensor]]
    infer_config: Callable[[Mapping[str, torch.Tensor], str], Dict[str, Any]]
    read_config: Optional[Callable[[Any], Dict[str, Any]]]  # None: the architecture always comes from shapes


_FORMATS = {
    "DACLIPModel": _OriginalFormat("DA-CLIP architecture", convert_daclip_state_dict, infer_daclip_config, load_open_clip_config),
    "DACLIPUNet2DModel": _OriginalFormat("restoration UNet inferred from it", convert_unet_state_dict, infer_unet_config, None),
}


def same_name_config(path: Union[str, os.PathLike]) -> Optional[str]:
    """The open_clip config JSON of the same name beside a weights file (`my_daclip.json` beside
    `my_daclip.pt`), which README documents for DA-CLIPs whose shapes do not tell their architecture."""
    candidate = os.path.splitext(os.fspath(path))[0] + ".json"
    return candidate if os.path.isfile(candidate) else None


def load_original_checkpoint(model_class, path: Union[str, os.PathLike], config: Any = None, dtype: Optional[torch.dtype] = None):
    """read → convert → config (given, else inferred from shapes) → build → strict check → load → cast.

    `model_class` is `DACLIPModel` or `DACLIPUNet2DModel`. The weights are loaded in float32 (the authors load
    into float32 models, which casts any other float dtype on copy), each in a fresh contiguous tensor; `dtype`
    then casts the model. `config` (DA-CLIP only) defaults to the same-name JSON beside the file. Raises `CheckpointError` for anything but a complete file of that model.
    """
    source = os.fspath(path)
    spec = _FORMATS[model_class.__name__]
    state_dict = spec.convert(load_torch_checkpoint(source), source)
    if config is None and spec.read_config is not None:
        config = same_name_config(source)
    if config is not None and spec.read_config is not None:
        try:
            model_config = spec.read_config(config)
        except ValueError as error:
            where = f"{os.fspath(config)}: " if isinstance(config, (str, os.PathLike)) else ""
            raise CheckpointError(f"{where}{error}") from None
    else:
        model_config = spec.infer_config(state_dict, source)
    try:
        model = _build_empty(model_class, **model_config)
    except ValueError as error:
        raise CheckpointError(f"{source}: the architecture {model_config} is not valid: {error}") from None
    hint = "If the architecture was inferred from the file, an unusual model may need its config." if config is None else None
    check_state_dict(model.state_dict(), state_dict, source, spec.what, hint=hint)
    weights = {
        key: state_dict.pop(key).to(torch.float32 if value.is_floating_point() else value.dtype, copy=True)
        for key, value in list(state_dict.items())
    }
    model.load_state_dict(weights, strict=True, assign=True)
    if dtype is not None:
        model = model.to(dtype=dtype)
    return model.eval()


def _build_empty(model_class, **config):
    """The model with parameters on the meta device (real buffers), to be filled by `load_state_dict(assign=True)`."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        return model_class(**config)


def convert_to_diffusers(
    output_dir: Union[str, os.PathLike],
    daclip: Optional[Union[str, os.PathLike]] = None,
    unet: Optional[Union[str, os.PathLike]] = None,
    daclip_config: Any = None,
):
    """Write the authors' files as diffusers folders (safetensors): both → a pipeline folder; one → a model
    folder. `daclip_config` defaults to the same-name JSON beside the DA-CLIP file. Returns what was saved.
    Raises `CheckpointError` (nothing is written) for a file that cannot be loaded, `ValueError` for a pair
    that does not match, and `FileExistsError` for an `output_dir` that is not empty."""
    from .modeling_daclip import DACLIPModel
    from .pipeline_daclip import DACLIPPipeline
    from .unet_daclip import DACLIPUNet2DModel

    output_dir = Path(output_dir)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise FileExistsError(f"{output_dir} exists and is not an empty folder; choose a new folder")
    if daclip and unet:
        model = DACLIPPipeline.from_original_checkpoints(daclip, unet, daclip_config=daclip_config)
    elif daclip:
        model = DACLIPModel.from_original_checkpoint(daclip, config=daclip_config)
    elif unet:
        model = DACLIPUNet2DModel.from_original_checkpoint(unet)
    else:
        raise ValueError("give the DA-CLIP file, the UNet file, or both")
    model.save_pretrained(output_dir)
    return model
