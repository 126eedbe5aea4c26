"""Image-quality metrics as the authors report them: PSNR and SSIM on `[B, C, H, W]` images in [0, data_range].

Used by the training scripts' validation, the benchmarks and the demo model's quality guard, so that every
number in the project is computed one way.
"""
from typing import Tuple

import torch
import torch.nn.functional as F


def _check_pair(prediction: torch.Tensor, target: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    if prediction.shape != target.shape:
        raise ValueError(f"images differ in shape: {tuple(prediction.shape)} vs {tuple(target.shape)}")
    if prediction.ndim == 3:
        prediction, target = prediction[None], target[None]
    if prediction.ndim != 4:
        raise ValueError(f"expected [B, C, H, W] or [C, H, W] images, got {tuple(prediction.shape)}")
    return prediction.double(), target.double()


def psnr(prediction: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image (`[B]`, dB, float64): 10 log10(range² / MSE over C, H, W)."""
    prediction, target = _check_pair(prediction, target)
    mse = (prediction - target).pow(2).mean(dim=(1, 2, 3))
    return 10 * torch.log10(data_range**2 / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """The normalised 1-D Gaussian of `size` taps (float64)."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    window = torch.exp(-(coords**2) / (2 * sigma**2))
    return window / window.sum()


def ssim(
    prediction: torch.Tensor,
    target: torch.Tensor,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Structural similarity per image (`[B]`, float64), averaged over channels and valid window positions.

    Wang et al. (2004): local statistics under an 11×11 Gaussian window (σ = 1.5), population covariances,
    C1 = (0.01 L)², C2 = (0.03 L)². Equals `skimage.metrics.structural_similarity(..., data_range=L,
    channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)` and the authors'
    `calculate_ssim` (which works on 0..255).
    """
    prediction, target = _check_pair(prediction, target)
    if min(prediction.shape[-2:]) < window_size:
        raise ValueError(f"SSIM needs images of at least {window_size}×{window_size} pixels, got {tuple(prediction.shape[-2:])}")
    channels = prediction.shape[1]
    window = gaussian_window(window_size, sigma).to(prediction.device)
    horizontal = window.view(1, 1, 1, -1).expand(channels, 1, 1, window_size)
    vertical = window.view(1, 1, -1, 1).expand(channels, 1, window_size, 1)

    def local_mean(x: torch.Tensor) -> torch.Tensor:  # 'valid' separable filtering
        return F.conv2d(F.conv2d(x, horizontal, groups=channels), vertical, groups=channels)

    mu_x, mu_y = local_mean(prediction), local_mean(target)
    var_x = local_mean(prediction * prediction) - mu_x**2
    var_y = local_mean(target * target) - mu_y**2
    cov_xy = local_mean(prediction * target) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(1, 2, 3))


def quantize_8bit(images: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] and round to 8-bit levels: what a saved PNG holds (the authors score uint8 images)."""
    return (images.clamp(0, 1) * 255).round() / 255


def lost_regions(restored: torch.Tensor, degraded: torch.Tensor, block: int = 32, kernel: int = 5) -> torch.Tensor:
    """How many `block`×`block` regions a restoration darkened to below a third of the input's brightness.

    A wrecked region (a blue sky turned black) is what this counts; flakes, streaks and noise do not, because the
    luma (BT.601) is median-filtered over `kernel`×`kernel` pixels first. Only whole blocks count (the right and
    bottom remainders are left out). Expected for images whose brightness is meant to change (low-light, haze):
    not zero; judge those otherwise.

    Args:
        restored, degraded: `[3, H, W]` or `[B, 3, H, W]` float images in [0, 1], same shape.
        block: side of the regions, pixels. kernel: side of the median filter, pixels (odd).

    Returns:
        `[B]` int64 counts (out of `(H // block) * (W // block)` blocks).

    Raises:
        ValueError: shapes differ, are not 3- or 4-D, or have not 3 channels.
    """
    restored, degraded = _check_pair(restored, degraded)
    if restored.shape[1] != 3:
        raise ValueError(f"expected RGB images, got {restored.shape[1]} channels")
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64).view(1, 3, 1, 1)

    def block_means(images: torch.Tensor) -> torch.Tensor:
        luma = (images * weights).sum(dim=1, keepdim=True)
        padded = F.pad(luma, [kernel // 2] * 4, mode="reflect")
        median = F.unfold(padded, kernel).median(dim=1).values.view(luma.shape[0], 1, *luma.shape[2:])
        return F.avg_pool2d(median, block)  # drops the partial blocks at the right and bottom

    return (block_means(restored) < block_means(degraded) / 3).flatten(1).sum(dim=1)
