"""The one home for turning what users give as images into float RGB in [0, 1], and restored images back.

IR-SDE works on the image itself (no latent space, no [-1, 1] scaling), so the jobs here are: accept every
common input kind and mode without silently changing the picture, refuse what cannot be an image with a
message that says why, and hand the result back in the form it came in. The pipeline, the command line,
the ComfyUI nodes and the training loaders all call these functions; README's "Images" section states the
same rules.

Reading (`to_rgb_tensors`, `to_float_image`, `comfy_image_to_batch` all go through `scale_to_unit`):
- uint8 and 8-bit PIL modes are divided by 255; uint16 and 16-bit PIL modes (`I;16*`, and `I`, which is how
  Pillow opens 16-bit grayscale PNGs, values checked to lie in 0..65535) by 65535. Other integer arrays
  (int32, int64, bool) are refused: their scale is unknown.
- Floats must be finite and lie in [0, 1]; overshoot of up to `FLOAT_TOLERANCE` (ringing of a resampling or
  sharpening step) is clipped, anything further out is refused (it is another scale: [-1, 1] or 0..255).
- PIL images are turned upright by their EXIF orientation first (as viewers and ComfyUI's Load Image do).
- Grayscale is repeated to three channels; palette, YCbCr, LAB and HSV go through PIL's RGB conversion;
  CMYK is converted to sRGB through its embedded ICC profile when it has one (Pillow's ImageCms), else by
  PIL's plain formula. RGB values are never colour-managed: an RGB image's ICC profile is put back on the
  result (`like_source`), so the result means what the input meant.
- Alpha is not restored (the authors' network sees RGB): the colour under transparent pixels is restored
  as it is, and `like_source` puts the input's alpha back on the result.

Writing back (`like_source`, PIL inputs only; arrays and tensors give 3-channel float or uint8 results):
grayscale in → grayscale out (mode L; 16-bit grayscale → I;16), alpha in → the same alpha out, ICC profile
in → the same profile out. The model restores RGB; a grayscale result is its ITU-R 601 luma (PIL's "L"
conversion), so no colour cast can appear.
"""
from __future__ import annotations

import io
import logging
import os
from typing import List, Optional, Sequence, Union

import numpy as np
import PIL.Image
import PIL.ImageOps
import PIL.ImageSequence
import torch

logger = logging.getLogger(__name__)

ImageInput = Union[PIL.Image.Image, np.ndarray, torch.Tensor]

# The files the command line and the training loaders pick up in folders (one list for both).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp", ".gif")
# How far outside [0, 1] a float image may stray and still be read as [0, 1] data (then clipped).
FLOAT_TOLERANCE = 0.1

# PIL modes whose pixels are 16-bit integers; `I` is 32-bit, which is how PIL opens 16-bit grayscale PNGs.
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_GRAY_MODES = ("1", "L", "F", *_SIXTEEN_BIT_MODES)
_EXIF_ORIENTATION = 0x0112


# ---------------------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------------------
def scale_to_unit(values: Union[np.ndarray, torch.Tensor], what: str = "the image"):
    """Samples of any supported dtype → float32 in [0, 1], same layout and kind (numpy or torch).

    uint8 / 255, uint16 / 65535; floats must be finite and within `FLOAT_TOLERANCE` of [0, 1] (then clipped).

    Raises:
        ValueError: NaN/inf, or floats of another scale.
        TypeError: other dtypes (int32, int64, bool ...), whose scale is unknown.
    """
    is_torch = isinstance(values, torch.Tensor)
    array = values.detach().cpu() if is_torch else np.asarray(values)
    dtype = str(array.dtype).replace("torch.", "")
    if dtype == "uint8":
        scaled = array.float() / 255.0 if is_torch else array.astype(np.float32) / 255.0
    elif dtype == "uint16":
        scaled = array.float() / 65535.0 if is_torch else array.astype(np.float32) / 65535.0
    elif (array.is_floating_point() if is_torch else np.issubdtype(array.dtype, np.floating)):
        scaled = array.float() if is_torch else array.astype(np.float32)
        finite = bool(torch.isfinite(scaled).all()) if is_torch else bool(np.isfinite(scaled).all())
        if not finite:
            raise ValueError(f"{what} contains NaN or infinite values; expected finite values in [0, 1].")
        count = scaled.numel() if is_torch else scaled.size
        low, high = (float(scaled.min()), float(scaled.max())) if count else (0.0, 0.0)
        if low < -FLOAT_TOLERANCE or high > 1 + FLOAT_TOLERANCE:
            raise ValueError(
                f"{what} has values in [{low:.4g}, {high:.4g}]; float images must lie in [0, 1] "
                "(pass uint8 or uint16 data for 0..255 or 0..65535)."
            )
        scaled = scaled.clamp(0.0, 1.0) if is_torch else np.clip(scaled, 0.0, 1.0)
    else:
        raise TypeError(f"{what} must be uint8, uint16 or float in [0, 1], not {dtype}.")
    return scaled.to(values.device) if is_torch else scaled


def to_rgb_channels(batch: torch.Tensor) -> torch.Tensor:
    """`[B, C, H, W]` with C in (1, 2, 3, 4) → `[B, 3, H, W]`: gray repeated, alpha dropped."""
    channels = batch.shape[1]
    if channels in (1, 2):
        return batch[:, :1].expand(-1, 3, -1, -1)
    if channels in (3, 4):
        return batch[:, :3]
    raise ValueError(f"images must have 1 to 4 channels (gray, gray+alpha, RGB, RGBA); got {channels}.")


# ---------------------------------------------------------------------------------------------------
# PIL images and files
# ---------------------------------------------------------------------------------------------------
def upright(image: PIL.Image.Image) -> PIL.Image.Image:
    """The image as a viewer shows it: transposed by its EXIF orientation (tag removed), else unchanged."""
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # a broken EXIF block must not make the pixels unreadable
        return image
    return PIL.ImageOps.exif_transpose(image) if orientation not in (None, 1) else image


def _cmyk_to_srgb(image: PIL.Image.Image) -> PIL.Image.Image:
    """CMYK → RGB through the image's own ICC profile (CMYK numbers mean nothing without it), else PIL's formula."""
    icc = image.info.get("icc_profile")
    if icc:
        from PIL import ImageCms

        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError) as error:
            logger.warning("the CMYK image's ICC profile cannot be used (%s); converting without it.", error)
    return image.convert("RGB")


def pil_to_float(image: PIL.Image.Image) -> np.ndarray:
    """A PIL image → float32 `[H, W, C]` in [0, 1], upright; C = 1 (gray), 2 (gray + alpha), 3 or 4 (RGB(A))."""
    image = upright(image)
    if image.mode in _SIXTEEN_BIT_MODES:
        array = np.asarray(image).astype(np.int64)
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise ValueError(f"a PIL image of mode {image.mode} has values outside 0..65535; cannot read it as 16-bit.")
        return (array.astype(np.float32) / 65535.0)[:, :, None]
    if image.mode == "F":
        return scale_to_unit(np.asarray(image, dtype=np.float32), "a PIL image of mode F")[:, :, None]
    if image.mode == "CMYK":
        image = _cmyk_to_srgb(image)
    elif image.mode in ("P", "PA"):
        image = image.convert("RGBA")  # keeps palette transparency out of the colours
    elif image.mode == "1":
        image = image.convert("L")
    elif image.mode not in ("L", "LA", "RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.mode else "RGB")
    array = np.asarray(image).astype(np.float32) / 255.0
    return array[:, :, None] if array.ndim == 2 else array


class UnreadableImageError(ValueError):
    """An image file that cannot be read; the message names the file and gives Pillow's reason in one line."""


def read_image_file(path: Union[str, os.PathLike]) -> List[PIL.Image.Image]:
    """Every frame of an image file (animated GIF/WebP/PNG, multi-page TIFF: all of them), loaded and upright.

    Raises:
        UnreadableImageError (a ValueError): anything Pillow cannot read, including decompression bombs (images whose header promises
            more than `PIL.Image.MAX_IMAGE_PIXELS` × 2 pixels), named with the file and one line of reason.
        MemoryError: decoding ran out of memory.
    """
    try:
        with PIL.Image.open(path) as image:
            frames = []
            for frame in PIL.ImageSequence.Iterator(image):
                frame.load()
                copy = frame.copy()
                copy.info = dict(frame.info)
                frames.append(upright(copy))
            return frames
    except MemoryError:
        raise
    except PIL.Image.DecompressionBombError as error:
        raise UnreadableImageError(f"{path}: refused as a possible decompression bomb ({error})") from None
    except Exception as error:  # Pillow's decoders raise many types (OSError, SyntaxError, struct.error, ...)
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UnreadableImageError(f"{path}: cannot read the image ({reason})") from None


def frame_count(image: PIL.Image.Image) -> int:
    return int(getattr(image, "n_frames", 1) or 1)


# ---------------------------------------------------------------------------------------------------
# Any input → float RGB tensors
# ---------------------------------------------------------------------------------------------------
def _one_input_to_tensors(image: ImageInput) -> List[torch.Tensor]:
    if isinstance(image, PIL.Image.Image):
        if frame_count(image) > 1:
            logger.warning(
                "a PIL image with %d frames was given: only its current frame (%d) is restored. Pass every frame, "
                "e.g. [frame.copy() for frame in PIL.ImageSequence.Iterator(image)], to restore them all.",
                frame_count(image), image.tell(),
            )
        batch = torch.from_numpy(pil_to_float(image)).permute(2, 0, 1)[None]
    elif isinstance(image, np.ndarray):
        array = scale_to_unit(image, "the image array")
        if array.ndim == 2:  # H, W grayscale
            array = array[None, :, :, None]
        elif array.ndim == 3:  # H, W, C
            array = array[None]
        elif array.ndim != 4:
            raise ValueError(f"image arrays must be HW, HWC or BHWC; got shape {tuple(image.shape)}.")
        batch = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2)
    elif isinstance(image, torch.Tensor):
        batch = image.detach()
        if batch.ndim == 3:
            batch = batch[None]
        if batch.ndim != 4:
            raise ValueError(f"image tensors must be CHW or BCHW; got shape {tuple(image.shape)}.")
        batch = scale_to_unit(batch.cpu(), "the image tensor")
    else:
        raise TypeError(f"expected a PIL image, a numpy array or a torch tensor, got {type(image).__name__}.")
    batch = to_rgb_channels(batch.float())
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


def pil_sources(images: Union[ImageInput, Sequence[ImageInput]]) -> List[Optional[PIL.Image.Image]]:
    """Per tensor `to_rgb_tensors` gives, the PIL image it came from (None for arrays and tensors)."""
    items = images if isinstance(images, (list, tuple)) else [images]
    sources: List[Optional[PIL.Image.Image]] = []
    for item in items:
        if isinstance(item, PIL.Image.Image):
            sources.append(item)
        else:
            count = 1 if item.ndim in ((2, 3) if isinstance(item, np.ndarray) else (3,)) else item.shape[0]
            sources.extend([None] * count)
    return sources


def to_float_image(image: Union[PIL.Image.Image, np.ndarray]) -> np.ndarray:
    """A PIL image or an `[H, W(, C)]` array → float32 `[H, W, 3]` in [0, 1] (the training loaders' form)."""
    if isinstance(image, np.ndarray) and image.ndim not in (2, 3):
        raise ValueError(f"expected an image of shape [H, W] or [H, W, C], got {image.shape}")
    (tensor,) = _one_input_to_tensors(image)
    return tensor.permute(1, 2, 0).numpy()


def comfy_image_to_batch(image: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE `[B, H, W, C]` (float in 0..1, C = 1..4) → `[B, 3, H, W]` float32 (gray repeated, alpha dropped)."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"expected a ComfyUI IMAGE (a [batch, height, width, channels] tensor), got {shape}.")
    return torch.stack(_one_input_to_tensors(image.movedim(-1, 1)))


# ---------------------------------------------------------------------------------------------------
# Restored tensors → images
# ---------------------------------------------------------------------------------------------------
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


def like_source(restored: PIL.Image.Image, source: Optional[PIL.Image.Image], restored_float=None) -> PIL.Image.Image:
    """The restored RGB image in the form of its PIL source: gray stays gray (16-bit stays 16-bit), alpha and
    the ICC profile come back. `restored_float` (`[H, W, 3]` in [0, 1]) gives 16-bit results their precision."""
    if source is None:
        return restored
    icc = source.info.get("icc_profile") if source.mode != "CMYK" else None  # CMYK was converted to sRGB
    mode = source.mode
    if mode in _SIXTEEN_BIT_MODES and restored_float is not None:
        # ITU-R 601 luma, as PIL's "L" conversion, at 16-bit precision.
        luma = np.asarray(restored_float, dtype=np.float64) @ np.array([0.299, 0.587, 0.114])
        result = PIL.Image.fromarray(np.round(np.clip(luma, 0, 1) * 65535).astype(np.uint16))  # mode I;16
    elif mode in _GRAY_MODES or mode == "LA":
        result = restored.convert("L")
    else:
        result = restored
    alpha = _alpha_of(source)
    if alpha is not None and alpha.size == result.size:
        result = result.convert("LA" if result.mode == "L" else "RGBA")
        result.putalpha(alpha)
    if icc:
        result.info["icc_profile"] = icc
    return result


def _alpha_of(image: PIL.Image.Image) -> Optional[PIL.Image.Image]:
    image = upright(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode in ("P", "RGB", "L") and "transparency" in image.info):
        return image.convert("RGBA").getchannel("A")
    return None
