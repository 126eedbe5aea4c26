"""Turning what users pass as images into float RGB tensors in [0, 1], and restored tensors back.

IR-SDE works on the image itself (no latent space, no [-1, 1] scaling), so the only jobs here are:
accept every common input kind and mode without silently changing the picture, refuse what cannot be
an image with a message that says why, and convert results the way the authors' `tensor2img` does.

Conversions (documented in the README):
- uint8 / 8-bit PIL modes are divided by 255; uint16 and 16-bit PIL modes (`I;16*`, 16-bit PNGs opened as
  `I`) by 65535. Float input must already lie in [0, 1].
- Grayscale is repeated to three channels; palette, CMYK, YCbCr, LAB and HSV go through PIL's RGB conversion.
- Alpha is dropped (the authors' pipeline reads images as RGB): the colour under transparent pixels is
  restored as it is. The restored image has no alpha channel.
"""
from __future__ import annotations

from typing import List, Sequence, Union

import numpy as np
import PIL.Image
import torch

ImageInput = Union[PIL.Image.Image, np.ndarray, torch.Tensor]

# PIL modes whose pixels are 16-bit integers; `I` is 32-bit, which is how PIL opens 16-bit grayscale PNGs.
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _check_float_range(array: np.ndarray, what: str) -> np.ndarray:
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} contains NaN or infinite values; expected finite values in [0, 1].")
    low, high = float(array.min(initial=0.0)), float(array.max(initial=0.0))
    if low < -1e-6 or high > 1 + 1e-6:
        raise ValueError(
            f"{what} has values in [{low:.4g}, {high:.4g}]; float images must lie in [0, 1] "
            "(pass uint8 or uint16 arrays for 0..255 or 0..65535 data)."
        )
    return np.clip(array, 0.0, 1.0)


def _pil_to_float_hwc(image: PIL.Image.Image) -> np.ndarray:
    if image.mode in _SIXTEEN_BIT_MODES:
        array = np.asarray(image).astype(np.float64)
        if array.min(initial=0) < 0 or array.max(initial=0) > 65535:
            raise ValueError(f"a PIL image of mode {image.mode} has values outside 0..65535; cannot read it as 16-bit.")
        array = array / 65535.0
    elif image.mode == "F":
        array = _check_float_range(np.asarray(image, dtype=np.float64), "a PIL image of mode F")
    else:
        if image.mode in ("P", "PA"):
            image = image.convert("RGBA")  # keeps palette transparency out of the colours
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        array = np.asarray(image).astype(np.float64) / 255.0
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return array.astype(np.float32)


def _numpy_to_float_bhwc(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        array = array.astype(np.float32) / 65535.0
    elif np.issubdtype(array.dtype, np.floating):
        array = _check_float_range(array.astype(np.float32), "the image array")
    else:
        raise TypeError(f"image arrays must be uint8, uint16 or float in [0, 1], not {array.dtype}.")
    if array.ndim == 2:  # H, W grayscale
        array = array[None, :, :, None]
    elif array.ndim == 3:  # H, W, C
        array = array[None]
    elif array.ndim != 4:
        raise ValueError(f"image arrays must be HW, HWC or BHWC; got shape {tuple(array.shape)}.")
    return array


def _to_rgb_channels(tensor: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] with C in (1, 2, 3, 4) → [B, 3, H, W]: gray repeated, alpha dropped."""
    channels = tensor.shape[1]
    if channels in (1, 2):
        return tensor[:, :1].expand(-1, 3, -1, -1)
    if channels in (3, 4):
        return tensor[:, :3]
    raise ValueError(f"images must have 1 to 4 channels (gray, gray+alpha, RGB, RGBA); got {channels}.")


def _one_input_to_tensors(image: ImageInput) -> List[torch.Tensor]:
    if isinstance(image, PIL.Image.Image):
        batch = torch.from_numpy(_pil_to_float_hwc(image)).permute(2, 0, 1)[None]
    elif isinstance(image, np.ndarray):
        batch = torch.from_numpy(np.ascontiguousarray(_numpy_to_float_bhwc(image))).permute(0, 3, 1, 2)
    elif isinstance(image, torch.Tensor):
        batch = image.detach()
        if batch.ndim == 3:
            batch = batch[None]
        if batch.ndim != 4:
            raise ValueError(f"image tensors must be CHW or BCHW; got shape {tuple(image.shape)}.")
        if batch.dtype == torch.uint8:
            batch = batch.float() / 255.0
        elif batch.is_floating_point():
            batch = torch.from_numpy(_check_float_range(batch.float().cpu().numpy(), "the image tensor"))
        else:
            raise TypeError(f"image tensors must be float in [0, 1] or uint8, not {batch.dtype}.")
    else:
        raise TypeError(f"expected a PIL image, a numpy array or a torch tensor, got {type(image).__name__}.")
    batch = _to_rgb_channels(batch.float())
    height, width = batch.shape[-2:]
    if height == 0 or width == 0:
        raise ValueError(f"the image is empty ({height}x{width}).")
    return [single.contiguous() for single in batch]


def to_rgb_tensors(images: Union[ImageInput, Sequence[ImageInput]]) -> List[torch.Tensor]:
    """Any supported image, batch or list of them → a list of float32 `[3, H, W]` tensors in [0, 1]."""
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise ValueError("no images given.")
        return [tensor for image in images for tensor in _one_input_to_tensors(image)]
    return _one_input_to_tensors(images)


def postprocess(images: torch.Tensor, output_type: str = "pil"):
    """`[B, 3, H, W]` restored images → PIL list, numpy `[B, H, W, 3]` float32, or a clamped `[B, 3, H, W]` tensor.

    Values are clamped to [0, 1] first (the sampler's output is not bounded). PIL output rounds half to
    even after scaling by 255, as the authors' `tensor2img` does.
    """
    images = images.detach().float().clamp(0.0, 1.0).cpu()
    if output_type == "pt":
        return images
    array = images.permute(0, 2, 3, 1).numpy()
    if output_type == "np":
        return array
    if output_type == "pil":
        return [PIL.Image.fromarray(np.round(image * 255.0).astype(np.uint8)) for image in array]
    raise ValueError(f"output_type must be 'pil', 'np' or 'pt', not {output_type!r}.")
