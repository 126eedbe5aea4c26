"""Reading the authors' released checkpoints (`daclip_ViT-B-32.pt`, `universal-ir.pth`, ...) into our models.

Each converter pops every key it understands and fails loudly on anything left over or missing, so a
wrong or partial file never loads silently.
"""
from __future__ import annotations

# ---------------------------------------------------------------------------------------------------
# DA-CLIP (`*.pt`)
# ---------------------------------------------------------------------------------------------------
import json as _json
import os as _os
import re as _re
from typing import Any as _Any, Dict as _Dict, List as _List, Mapping as _Mapping, Tuple as _Tuple

import torch as _torch

from ...utils import CheckpointError as _CheckpointError, strip_prefix as _strip_prefix

# Top-level module names of the authors' ConditionalUNet; a DA-CLIP file has none of them.
_UNET_KEY_PREFIXES = ("init_conv.", "time_mlp.", "downs.", "ups.", "mid_block1.", "mid_attn.", "final_conv.",
                      "final_res_block.", "prompt_mlp.", "text_mlp.")
# open_clip config keys we understand. `custom_text` only picks open_clip's model class, which
# DA-CLIP overrides anyway (the authors pop it and always build `CLIP`).
_OPEN_CLIP_CONFIG_KEYS = ("embed_dim", "vision_cfg", "text_cfg", "quick_gelu")
_IGNORED_OPEN_CLIP_CONFIG_KEYS = ("custom_text",)
# Released DA-CLIPs use open_clip's default 64-wide attention heads, which no tensor shape reveals.
_RELEASED_HEAD_WIDTH = 64


def _daclip_first(keys, count: int = 8) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:count])
    return shown + (f", ... ({len(keys) - count} more)" if len(keys) > count else "")


def unwrap_daclip_checkpoint(checkpoint: _Any, source: str = "checkpoint") -> _Dict[str, _torch.Tensor]:
    """The state dict inside a loaded DA-CLIP file, as the authors' `open_clip.load_state_dict` finds it.

    Accepts a dict with a `state_dict` entry (beside `epoch`/`name`/`optimizer`/`scaler`, ignored) or a
    bare state dict; removes a DataParallel/DDP `module.` prefix.
    """
    if not isinstance(checkpoint, _Mapping):
        raise _CheckpointError(f"{source}: expected a dict of tensors, found a {type(checkpoint).__name__}.")
    if "state_dict" in checkpoint:
        state_dict = checkpoint["state_dict"]
        if not isinstance(state_dict, _Mapping):
            raise _CheckpointError(f"{source}: its 'state_dict' entry is a {type(state_dict).__name__}, not a dict.")
        # Everything beside `state_dict` (the authors save epoch/name/optimizer/scaler) is training state,
        # never weights: ignored, as the authors' loader does.
    else:
        state_dict = checkpoint
    not_tensors = [key for key, value in state_dict.items() if not isinstance(value, _torch.Tensor)]
    if not_tensors or not state_dict:
        raise _CheckpointError(
            f"{source}: not a model state dict (entries that are not tensors: {_daclip_first(map(str, not_tensors)) or 'none; it is empty'})."
        )
    # The authors strip 7 characters from every key when the first key starts with `module`
    # (DDP training); keys without the prefix are left alone here and reported later if unknown.
    return _strip_prefix(state_dict, "module.")


def convert_daclip_state_dict(checkpoint: _Any, source: str = "checkpoint") -> _Dict[str, _torch.Tensor]:
    """The authors' DA-CLIP checkpoint (loaded object) → the state dict of `DACLIPModel`.

    Our parameter names are the authors' (`clip.*`, `visual_control.transformer.{transformer,zero_modules}.*`,
    `logit_scale`), except that the duplicated image tower `visual.*` (the authors' `DaCLIP.visual` is the
    same module as `clip.visual`, so a strict load needs both key sets) is dropped after checking that it
    equals `clip.visual.*`. Both logit scales are kept (`logit_scale` is DA-CLIP's own copy, trained with
    the controller; `clip.logit_scale` is the frozen CLIP's); neither is used to compute embeddings.

    Raises `CheckpointError` for files that are not DA-CLIP checkpoints: a restoration UNet, a plain CLIP
    without the controller, or anything else. Key completeness is checked against the model by
    `check_daclip_state_dict`.
    """
    state_dict = dict(unwrap_daclip_checkpoint(checkpoint, source))
    keys = list(state_dict)

    if any(key.startswith(_UNET_KEY_PREFIXES) or key == "prompt" for key in keys):
        raise _CheckpointError(
            f"{source}: this looks like a restoration UNet checkpoint (`*.pth`, e.g. universal-ir.pth), not a "
            f"DA-CLIP checkpoint (`daclip_*.pt`): its keys start with {_daclip_first(sorted({k.split('.')[0] for k in keys}), 5)}. "
            "Load it with DACLIPUNet2DModel.from_original_checkpoint."
        )
    if not any(key.startswith("visual_control.") for key in keys):
        if any(key.startswith(("visual.", "clip.visual.", "token_embedding.", "clip.token_embedding.")) for key in keys):
            raise _CheckpointError(
                f"{source}: this is a plain CLIP checkpoint without the DA-CLIP controller (no `visual_control.*` "
                "keys). DA-CLIP needs the controller trained by the authors (e.g. daclip_ViT-B-32.pt)."
            )
        raise _CheckpointError(
            f"{source}: not a DA-CLIP checkpoint: none of its {len(keys)} keys belong to DA-CLIP "
            f"(first keys: {_daclip_first(keys, 5)})."
        )

    duplicated = [key for key in keys if key.startswith("visual.")]
    if duplicated:
        tower_keys = {key[len("clip."):] for key in keys if key.startswith("clip.visual.")}
        missing_copies = sorted(tower_keys - set(duplicated))
        orphans = sorted(set(duplicated) - tower_keys)
        if missing_copies or orphans:
            raise _CheckpointError(
                f"{source}: its two copies of the image tower (`visual.*` and `clip.visual.*`, the same module in "
                f"the authors' model) have different keys: only in clip.visual: {_daclip_first(missing_copies) or 'none'}; "
                f"only in visual: {_daclip_first(orphans) or 'none'}."
            )
        for key in duplicated:
            copy, original = state_dict.pop(key), state_dict["clip." + key]
            same_storage = copy.data_ptr() == original.data_ptr() and copy.shape == original.shape
            if not same_storage and not (copy.shape == original.shape and _torch.equal(copy, original)):
                raise _CheckpointError(
                    f"{source}: `{key}` differs from `clip.{key}`; in the authors' model they are one tensor, so "
                    "the file is inconsistent (edited or corrupt)."
                )
    return state_dict


def _daclip_block_indices(state_dict: _Mapping[str, _Any], prefix: str) -> _List[int]:
    pattern = _re.compile(_re.escape(prefix) + r"(\d+)\.")
    return sorted({int(match.group(1)) for key in state_dict for match in [pattern.match(key)] if match})


def _daclip_shape(state_dict: _Mapping[str, _torch.Tensor], key: str, source: str) -> _Tuple[int, ...]:
    if key not in state_dict:
        raise _CheckpointError(f"{source}: missing `{key}`, needed to read the architecture from the file.")
    return tuple(state_dict[key].shape)


def _daclip_heads(width: int, what: str, source: str) -> int:
    if width % _RELEASED_HEAD_WIDTH:
        raise _CheckpointError(
            f"{source}: the {what} width {width} is not a multiple of 64, so the number of attention heads cannot "
            "be inferred (released DA-CLIPs use 64-wide heads); pass the model's open_clip config as `config=`."
        )
    return width // _RELEASED_HEAD_WIDTH


def infer_daclip_config(state_dict: _Mapping[str, _torch.Tensor], source: str = "checkpoint") -> _Dict[str, _Any]:
    """Read the open_clip architecture (`embed_dim`, `vision_cfg`, `text_cfg`) from a converted DA-CLIP state dict.

    Everything but the attention head count is a tensor shape; heads are width / 64, as in every released
    DA-CLIP (ViT-B/32: vision 768 wide, 12 layers; ViT-L/14: 1024 wide, 24 layers). Other models need an
    explicit config.
    """
    vision_width, channels, patch, patch_w = _daclip_shape(state_dict, "clip.visual.conv1.weight", source)
    positions = _daclip_shape(state_dict, "clip.visual.positional_embedding", source)[0]
    grid = int(round((positions - 1) ** 0.5))
    if channels != 3 or patch != patch_w or grid * grid != positions - 1:
        raise _CheckpointError(
            f"{source}: the image tower is not a square-patch ViT on a square grid (conv1 "
            f"{_daclip_shape(state_dict, 'clip.visual.conv1.weight', source)}, {positions} positions); pass `config=`."
        )
    vision_layers = _daclip_block_indices(state_dict, "clip.visual.transformer.resblocks.")
    embed_dim = _daclip_shape(state_dict, "clip.visual.proj", source)[1]
    vision_mlp = _daclip_shape(state_dict, "clip.visual.transformer.resblocks.0.mlp.c_fc.weight", source)[0]

    context_length, text_width = _daclip_shape(state_dict, "clip.positional_embedding", source)
    vocab_size = _daclip_shape(state_dict, "clip.token_embedding.weight", source)[0]
    text_layers = _daclip_block_indices(state_dict, "clip.transformer.resblocks.")
    text_embed_dim = _daclip_shape(state_dict, "clip.text_projection", source)[1]
    text_mlp = _daclip_shape(state_dict, "clip.transformer.resblocks.0.mlp.c_fc.weight", source)[0]
    if text_embed_dim != embed_dim:
        raise _CheckpointError(
            f"{source}: the image projection gives {embed_dim}-dim embeddings but the text projection "
            f"{text_embed_dim}-dim; not a CLIP."
        )

    vision_cfg: _Dict[str, _Any] = {
        "image_size": grid * patch,
        "layers": len(vision_layers),
        "width": vision_width,
        "head_width": _RELEASED_HEAD_WIDTH,
        "patch_size": patch,
    }
    _daclip_heads(vision_width, "image tower", source)
    if vision_mlp != 4 * vision_width:
        vision_cfg["mlp_ratio"] = vision_mlp / vision_width
    text_cfg: _Dict[str, _Any] = {
        "context_length": context_length,
        "vocab_size": vocab_size,
        "width": text_width,
        "heads": _daclip_heads(text_width, "text tower", source),
        "layers": len(text_layers),
    }
    if text_mlp != 4 * text_width:
        text_cfg["mlp_ratio"] = text_mlp / text_width
    return {"embed_dim": embed_dim, "vision_cfg": vision_cfg, "text_cfg": text_cfg}


def load_open_clip_config(config: _Any) -> _Dict[str, _Any]:
    """An open_clip model config (a dict, or the path of its JSON) → the keyword arguments of `DACLIPModel`.

    Accepts open_clip's `model_configs/*.json` layout and the Hub's `open_clip_config.json` (`model_cfg` inside).
    """
    if isinstance(config, (str, _os.PathLike)):
        try:
            with open(config, "r", encoding="utf-8") as handle:
                config = _json.load(handle)
        except (OSError, ValueError) as error:
            raise ValueError(f"cannot read the open_clip config {config!r}: {error}") from None
    if not isinstance(config, _Mapping):
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
    return {key: _json.loads(_json.dumps(config[key])) for key in _OPEN_CLIP_CONFIG_KEYS if key in config}


def check_daclip_state_dict(
    expected: _Mapping[str, _torch.Size], state_dict: _Mapping[str, _torch.Tensor], source: str = "checkpoint"
) -> None:
    """Raise `CheckpointError` unless `state_dict` has exactly the keys and shapes in `expected` (name → shape)."""
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    mismatched = [
        f"{key} {tuple(state_dict[key].shape)} (model {tuple(expected[key])})"
        for key in expected
        if key in state_dict and tuple(state_dict[key].shape) != tuple(expected[key])
    ]
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing keys: {_daclip_first(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected keys: {_daclip_first(unexpected)}")
        if mismatched:
            problems.append(f"{len(mismatched)} shapes differ: {_daclip_first(mismatched, 4)}")
        raise _CheckpointError(
            f"{source}: does not match the DA-CLIP architecture: " + "; ".join(problems) + ". If the architecture "
            "was inferred from the file, an unusual model may need its open_clip config (`config=`)."
        )



# ---------------------------------------------------------------------------------------------------
# Restoration UNet (`*.pth`)
# ---------------------------------------------------------------------------------------------------
import re as _re
from typing import Any as _Any, Dict as _Dict, Mapping as _Mapping

import torch as _torch

from ...utils import CheckpointError as _CheckpointError, strip_prefix as _strip_prefix

# Top-level names of a DA-CLIP state dict; a restoration UNet has none of them.
_DACLIP_KEY_PREFIXES = ("clip.", "visual.", "visual_control.", "logit_scale")
_DACLIP_FILE_HINT = (
    "this looks like a DA-CLIP checkpoint (`*.pt`), not a restoration UNet (`*.pth`); load it with "
    "`DACLIPModel.from_original_checkpoint`."
)


def convert_unet_state_dict(checkpoint: _Any) -> _Dict[str, _torch.Tensor]:
    """The state dict of a loaded `universal-ir.pth` / `wild-ir.pth`, ready for `DACLIPUNet2DModel`.

    The authors save a plain `OrderedDict` of tensors whose names are already ours; like their `load_network`,
    a `module.` (DataParallel/DDP) prefix is removed from every key that has it. A DA-CLIP file, or anything that
    is not a flat dict of tensors, raises `CheckpointError`.
    """
    if not isinstance(checkpoint, _Mapping):
        raise _CheckpointError(f"expected a dict of tensors, found a {type(checkpoint).__name__}.")
    inner = checkpoint.get("state_dict")
    if isinstance(inner, _Mapping) and any(
        str(key).removeprefix("module.").startswith(_DACLIP_KEY_PREFIXES) for key in inner
    ):
        raise _CheckpointError(_DACLIP_FILE_HINT)
    state_dict = _strip_prefix(checkpoint, "module.")
    if any(str(key).startswith(_DACLIP_KEY_PREFIXES) for key in state_dict):
        raise _CheckpointError(_DACLIP_FILE_HINT)
    not_tensors = [str(key) for key, value in state_dict.items() if not isinstance(value, _torch.Tensor)]
    if not_tensors or not state_dict:
        raise _CheckpointError(
            "not a restoration UNet state dict (a plain dict of tensors): "
            + (f"entries that are not tensors: {', '.join(not_tensors[:8])}" if not_tensors else "it is empty")
        )
    return dict(state_dict)


def _unet_tensor(state_dict: _Mapping[str, _torch.Tensor], key: str, ndim: int) -> _torch.Tensor:
    if key not in state_dict:
        raise _CheckpointError(f"not a restoration UNet checkpoint, or an incomplete one: missing key {key!r}.")
    tensor = state_dict[key]
    if tensor.ndim != ndim:
        raise _CheckpointError(f"{key} has shape {tuple(tensor.shape)}; a restoration UNet's has {ndim} dimensions.")
    return tensor


def infer_unet_config(state_dict: _Mapping[str, _torch.Tensor]) -> _Dict[str, _Any]:
    """`DACLIPUNet2DModel` config arguments read from the tensor shapes of an (unprefixed) authors' state dict.

    - `base_channels`, `in_channels` from `init_conv.weight [nf, 2·in, 7, 7]`; `out_channels` from `final_conv`;
    - the depth from the number of `downs.i`, and `channel_mult[i]` from the output width of `downs.i.3`
      (the level's downsampler);
    - `use_degradation_context` from `prompt` / `text_mlp` / `prompt_mlp`; `downscale_stage` (wild-ir) from
      `downsample` / `upsample`; `use_image_context` from SpatialTransformer keys;
    - `context_dim` from a cross-attention `attn2.to_k.weight [C, ctx]` (else `text_mlp.0.weight`);
    - `first_cross_attention_level` from the first `downs.i` holding a SpatialTransformer.

    Only the architecture is read here; `DACLIPUNet2DModel.from_original_checkpoint` then checks every key.
    """
    init_conv = _unet_tensor(state_dict, "init_conv.weight", 4)
    base_channels, in_channels = int(init_conv.shape[0]), int(init_conv.shape[1]) // 2
    out_channels = int(_unet_tensor(state_dict, "final_conv.weight", 4).shape[0])

    levels = sorted({int(match.group(1)) for key in state_dict if (match := _re.match(r"downs\.(\d+)\.", key))})
    if not levels or levels != list(range(len(levels))):
        raise _CheckpointError(
            f"not a restoration UNet checkpoint: expected levels downs.0 ... downs.N, found {levels or 'none'}."
        )
    depth = len(levels)
    channel_mult = []
    for level in levels:
        width = int(_unet_tensor(state_dict, f"downs.{level}.3.weight", 4).shape[0])
        if width % base_channels:
            raise _CheckpointError(
                f"downs.{level}.3.weight gives {width} channels, not a multiple of base_channels {base_channels}."
            )
        channel_mult.append(width // base_channels)

    use_degradation_context = any(
        key == "prompt" or key.startswith(("text_mlp.", "prompt_mlp.")) for key in state_dict
    )
    downscale_stage = any(key.startswith(("downsample.", "upsample.")) for key in state_dict)
    use_image_context = any(".transformer_blocks." in key for key in state_dict)

    cross_keys = sorted(key for key in state_dict if key.endswith(".attn2.to_k.weight"))
    if cross_keys:
        context_dim = int(_unet_tensor(state_dict, cross_keys[0], 2).shape[1])
    elif "text_mlp.0.weight" in state_dict:
        context_dim = int(_unet_tensor(state_dict, "text_mlp.0.weight", 2).shape[1])
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
