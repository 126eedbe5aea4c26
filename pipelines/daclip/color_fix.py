"""Optional colour correction of a restored image towards the colours of its input.

Restoration networks, and the small demo model most of all, can shift the global colour of an image (a
bluish cast after dehazing, a grey background that was dark red). Users of restoration tools fix this after
the fact by carrying the input's low-frequency colour over to the output, as SUPIR's pipeline, StableSR's
`wavelet_color_fix`, SeedVR2's colour correction and ComfyUI's core `ColorTransfer` node do. Two methods:

- `"wavelet"`: split both images with an à-trous (stationary) wavelet transform — repeated blurs with a
  3 × 3 binomial kernel dilated by 2^k, k = 0 … levels−1 — and keep the output's detail bands with the
  input's coarsest band: `out = (restored − L(restored)) + L(input)`, L the low-pass after `levels` blurs.
  The coarsest band spans about 2^(levels+1) pixels (64 for the default 5), so edges and texture come from
  the restoration, smooth colour from the input.
- `"adain"`: adaptive instance normalisation (Huang & Belongie, ICCV 2017): per image and channel,
  `out = (restored − mean(restored)) / std(restored) · std(input) + mean(input)`.

Both give back the *input's* colour, so they undo what a restoration is meant to change in colour or
brightness: do not use them for low-light enhancement or dehazing (README has the measured table).
`"none"` (the default everywhere) leaves the authors' output untouched.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

COLOR_FIX_METHODS = ("none", "wavelet", "adain")

# The separable binomial kernel [1, 2, 1]/4 ⊗ [1, 2, 1]/4: the B3-spline-like low-pass of the à-trous transform.
_BINOMIAL = torch.tensor([1.0, 2.0, 1.0]) / 4.0


def wavelet_low_pass(images: torch.Tensor, levels: int = 5) -> torch.Tensor:
    """The coarsest band of an à-trous wavelet transform: `levels` binomial blurs, the k-th dilated by 2^k.

    Args:
        images: `[B, C, H, W]` float (any range; any size ≥ 1 pixel: borders are replicated).
        levels: number of blurs; the band kept spans about 2^(levels+1) pixels.

    Returns:
        `[B, C, H, W]`, same dtype and device.
    """
    channels = images.shape[1]
    kernel_1d = _BINOMIAL.to(device=images.device, dtype=images.dtype)
    kernel = (kernel_1d[:, None] * kernel_1d[None, :]).expand(channels, 1, 3, 3)
    low = images
    for level in range(levels):
        dilation = 2**level
        padded = F.pad(low, (dilation, dilation, dilation, dilation), mode="replicate")
        low = F.conv2d(padded, kernel, dilation=dilation, groups=channels)
    return low


def wavelet_color_fix(restored: torch.Tensor, reference: torch.Tensor, levels: int = 5) -> torch.Tensor:
    """Detail of `restored`, low-frequency colour of `reference` (both `[B, 3, H, W]` in [0, 1]); clamped to [0, 1]."""
    fixed = restored - wavelet_low_pass(restored, levels) + wavelet_low_pass(reference, levels)
    return fixed.clamp(0.0, 1.0)


def adain_color_fix(restored: torch.Tensor, reference: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per image and channel, the mean and standard deviation of `reference` given to `restored`.

    Both `[B, 3, H, W]` in [0, 1]; the result is clamped to [0, 1]. A flat channel of `restored` (std 0)
    takes the reference's mean.
    """
    restored_mean = restored.mean(dim=(-2, -1), keepdim=True)
    restored_std = restored.std(dim=(-2, -1), keepdim=True, unbiased=False)
    reference_mean = reference.mean(dim=(-2, -1), keepdim=True)
    reference_std = reference.std(dim=(-2, -1), keepdim=True, unbiased=False)
    fixed = (restored - restored_mean) / (restored_std + eps) * reference_std + reference_mean
    return fixed.clamp(0.0, 1.0)


def apply_color_fix(restored: torch.Tensor, reference: torch.Tensor, method: str = "none") -> torch.Tensor:
    """Colour-correct `restored` towards `reference` by `method` (one of `COLOR_FIX_METHODS`).

    Args:
        restored: the restored images, `[B, 3, H, W]` float in [0, 1].
        reference: the degraded inputs they came from, same shape.
        method: "none" (returns `restored` unchanged), "wavelet" or "adain".

    Raises:
        ValueError: an unknown method, or shapes that differ.
    """
    if method not in COLOR_FIX_METHODS:
        raise ValueError(f"color_fix must be one of {COLOR_FIX_METHODS}, not {method!r}.")
    if method == "none":
        return restored
    if restored.shape != reference.shape:
        raise ValueError(
            f"color_fix needs the restored image and its input at one shape; got {tuple(restored.shape)} "
            f"and {tuple(reference.shape)}."
        )
    # The sampler's state may overshoot [0, 1]; the fix works on the image the user would see.
    restored = restored.clamp(0.0, 1.0)
    reference = reference.to(device=restored.device, dtype=restored.dtype)
    if method == "wavelet":
        return wavelet_color_fix(restored, reference)
    return adain_color_fix(restored, reference)
