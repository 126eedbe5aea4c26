"""Synthetic degradations for the 10 DA-CLIP labels, for fine-tuning on clean photos.

Every function maps a clean image (`np.ndarray` float32 `[H, W, 3]` in [0, 1], RGB) to a degraded one of
the same shape, dtype and range, and draws all of its randomness from `rng` (a `numpy.random.Generator`,
an int seed, or None for fresh entropy): the same seed gives the same output.

    lq = degrade(gt, "rainy", rng=np.random.default_rng(0))
    lq = DEGRADATION_FUNCTIONS["hazy"](gt, rng=0, beta_range=(1.0, 1.5))

Geometric sizes (streak lengths, drop radii, stroke widths, blur radii) are given in pixels for an image
whose short side is 256 (the training crop size) and scale with the short side (and densities of rain
and snow with its inverse square), so a degradation looks alike on a crop and on a full photo.
Per-pixel quantities (noise σ, JPEG quality) do not scale.

How close each is to the data the released models were trained on: the authors gathered existing
datasets for most labels (GoPro, LOL, RainDrop, Rain100H, Snow100K, … per the paper); their repository
only synthesises `noisy` and `jpeg-compressed` (`scripts/generate_LQ.py`) and masks faces for
`uncompleted` (`scripts/generate_masked_face.py` with the masks in `scripts/inpainting_masks/`).

- noisy, jpeg-compressed: the authors' recipe (Gaussian noise on the 0..255 scale; JPEG re-encoding).
- uncompleted: random thick brush strokes filled with white, matching the authors' masks in style,
  stroke width and coverage.
- motion-blurry, low-light, hazy, shadowed: standard physical / procedural models (random camera
  trajectories; gamma + gain + sensor noise; atmospheric scattering with a depth proxy; soft polygons).
- rainy, snowy, raindrop: procedural look-alikes (streak layers; flake layers + veil; blurred,
  inverted views through soft blobs).
"""
from __future__ import annotations

import io
import math
from typing import Callable, Dict, Optional, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw

from ..pipelines.daclip.modeling_daclip import DEGRADATIONS

RngLike = Union[np.random.Generator, int, None]
Range = Tuple[float, float]

# The short side, in pixels, for which the pixel sizes below are given.
REFERENCE_SIZE = 256


# ---------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------
def as_generator(rng: RngLike) -> np.random.Generator:
    """A `numpy.random.Generator` from a Generator (returned as is), an int seed, or None (fresh entropy)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be a numpy.random.Generator, an int seed or None, not {type(rng).__name__}.")


def _check_image(image: np.ndarray) -> np.ndarray:
    """The image as float32 `[H, W, 3]` in [0, 1] (tiny float overshoots clipped), or a clear error."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape [H, W, 3], got shape {tuple(image.shape)}.")
    if not np.issubdtype(image.dtype, np.floating):
        raise TypeError(
            f"expected a float image in [0, 1], got dtype {image.dtype}; for uint8 data use image / 255."
        )
    image = image.astype(np.float32, copy=False)
    low, high = float(image.min()), float(image.max())
    if low < -1e-3 or high > 1 + 1e-3:
        raise ValueError(f"expected values in [0, 1], got [{low:.4g}, {high:.4g}].")
    return np.clip(image, 0.0, 1.0)


def _finish(image: np.ndarray) -> np.ndarray:
    return np.clip(image, 0.0, 1.0).astype(np.float32, copy=False)


def _scale(image: np.ndarray) -> float:
    return min(image.shape[:2]) / REFERENCE_SIZE


def _uniform(rng: np.random.Generator, bounds: Range) -> float:
    low, high = bounds
    if high < low:
        raise ValueError(f"range must be (low, high) with low <= high, got {tuple(bounds)}.")
    return float(rng.uniform(low, high)) if high > low else float(low)


def _randint(rng: np.random.Generator, bounds: Tuple[int, int]) -> int:
    """An int in [low, high], both ends included."""
    low, high = int(bounds[0]), int(bounds[1])
    if high < low:
        raise ValueError(f"range must be (low, high) with low <= high, got {tuple(bounds)}.")
    return int(rng.integers(low, high + 1))


def _pad_reflect(x: np.ndarray, pads) -> np.ndarray:
    # reflect needs at least 2 samples along an axis; 1-pixel images fall back to edge padding.
    mode = "reflect" if min(x.shape[:2]) > 1 else "edge"
    return np.pad(x, list(pads) + [(0, 0)] * (x.ndim - len(pads)), mode=mode)


def _convolve_1d(x: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
    """Correlate `x` with a short odd 1-D kernel along `axis` (0 or 1), reflect-padded, same size."""
    radius = len(kernel) // 2
    pads = [(0, 0), (0, 0)]
    pads[axis] = (radius, radius)
    padded = _pad_reflect(x, pads)
    n = x.shape[axis]
    out = np.zeros_like(x)
    for offset, weight in enumerate(kernel):
        out += weight * (padded[offset : offset + n] if axis == 0 else padded[:, offset : offset + n])
    return out


def gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of an `[H, W]` or `[H, W, C]` float array (reflect borders), kernel cut at 3σ.

    Small σ runs the separable kernel directly; larger σ the same kernel by FFT (`convolve2d`).
    """
    x = np.asarray(x, dtype=np.float32)
    if sigma <= 0.1:
        return x.copy()
    radius = int(math.ceil(3 * sigma))
    taps = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-0.5 * (taps / sigma) ** 2)
    kernel /= kernel.sum()
    if sigma < 3.0:
        return _convolve_1d(_convolve_1d(x, kernel, 0), kernel, 1)
    return convolve2d(x, np.outer(kernel, kernel))


def convolve2d(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve an `[H, W]` or `[H, W, C]` array with a 2-D kernel (odd sides), reflect-padded, by FFT."""
    squeeze = x.ndim == 2
    if squeeze:
        x = x[..., None]
    kh, kw = kernel.shape
    ph, pw = kh // 2, kw // 2
    height, width = x.shape[:2]
    padded = _pad_reflect(x.astype(np.float32, copy=False), [(ph, ph), (pw, pw)])
    shape = padded.shape[:2]
    spectrum = np.fft.rfft2(padded, axes=(0, 1)) * np.fft.rfft2(kernel, s=shape)[..., None]
    # The circular convolution has no wrap-around past index 2·pad: that window is the centred result.
    out = np.fft.irfft2(spectrum, s=shape, axes=(0, 1))[2 * ph : 2 * ph + height, 2 * pw : 2 * pw + width]
    out = out.astype(np.float32)
    return out[..., 0] if squeeze else out


def _splat(points: np.ndarray, weights: np.ndarray, size: int) -> np.ndarray:
    """Accumulate weighted sub-pixel points `[N, 2]` (x, y; origin at the centre) into a size×size grid."""
    grid = np.zeros((size + 1, size + 1), dtype=np.float64)
    coords = points + (size - 1) / 2
    x0 = np.clip(np.floor(coords[:, 0]).astype(int), 0, size - 1)
    y0 = np.clip(np.floor(coords[:, 1]).astype(int), 0, size - 1)
    fx = np.clip(coords[:, 0] - x0, 0, 1)
    fy = np.clip(coords[:, 1] - y0, 0, 1)
    np.add.at(grid, (y0, x0), weights * (1 - fx) * (1 - fy))
    np.add.at(grid, (y0, x0 + 1), weights * fx * (1 - fy))
    np.add.at(grid, (y0 + 1, x0), weights * (1 - fx) * fy)
    np.add.at(grid, (y0 + 1, x0 + 1), weights * fx * fy)
    return grid[:size, :size].astype(np.float32)


def line_kernel(length: float, angle: float, size: Optional[int] = None) -> np.ndarray:
    """An anti-aliased straight-line kernel of `length` pixels at `angle` radians, normalised to sum 1.

    Angles are in image coordinates (x right, y down): 0 is horizontal, π/2 vertical.
    """
    size = size or (2 * int(math.ceil(length / 2)) + 3)
    steps = max(2, int(math.ceil(length * 2)))
    t = np.linspace(-length / 2, length / 2, steps)
    points = np.stack([t * math.cos(angle), t * math.sin(angle)], axis=1)
    kernel = _splat(points, np.ones(steps), size)
    return kernel / kernel.sum()


def motion_blur_kernel(
    rng: RngLike = None,
    length: float = 15.0,
    curvature: float = 0.15,
    size: Optional[int] = None,
) -> np.ndarray:
    """A random camera-shake kernel: a smooth random trajectory, uniformly exposed, normalised to sum 1.

    The path turns by a random walk of heading changes (σ = `curvature` radians per 1/32 of its length,
    0 gives a straight line), is scaled so its longer bounding-box side is `length` pixels, and is centred
    on its centroid so the blur does not shift the image.
    """
    rng = as_generator(rng)
    steps = 128
    heading = rng.uniform(0, 2 * math.pi) + np.cumsum(rng.normal(0, curvature / 2, steps))
    # Smoothly varying speed: slow parts of the path get more exposure, as in real shake.
    window = np.exp(-0.5 * (np.arange(-12, 13) / 4.0) ** 2)
    jitter = np.convolve(rng.normal(0, 1.0, steps), window / np.sqrt((window**2).sum()), mode="same")
    speed = np.clip(1 + 0.5 * jitter, 0.2, None)
    path = np.cumsum(np.stack([np.cos(heading), np.sin(heading)], axis=1) * speed[:, None], axis=0)
    extent = max(np.ptp(path[:, 0]), np.ptp(path[:, 1]), 1e-6)
    path *= length / extent
    # Dense resampling so long kernels have no gaps; exposure time per step is what the weights carry.
    fine = np.linspace(0, steps - 1, steps * 4)
    points = np.stack([np.interp(fine, np.arange(steps), path[:, i]) for i in range(2)], axis=1)
    weights = np.interp(fine, np.arange(steps), 1 / speed)
    points -= (weights[:, None] * points).sum(axis=0) / weights.sum()
    size = size or (2 * int(math.ceil(np.abs(points).max())) + 3)
    kernel = _splat(points, weights, size)
    return kernel / kernel.sum()


def _sample_bilinear(image: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """`image[ys, xs]` at fractional coordinates (clamped to the image), bilinear."""
    height, width = image.shape[:2]
    ys = np.clip(ys, 0, height - 1)
    xs = np.clip(xs, 0, width - 1)
    y0 = np.minimum(np.floor(ys).astype(int), height - 2) if height > 1 else np.zeros_like(ys, dtype=int)
    x0 = np.minimum(np.floor(xs).astype(int), width - 2) if width > 1 else np.zeros_like(xs, dtype=int)
    fy = (ys - y0)[..., None]
    fx = (xs - x0)[..., None]
    y1 = np.minimum(y0 + 1, height - 1)
    x1 = np.minimum(x0 + 1, width - 1)
    top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
    bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


def _luminance(image: np.ndarray) -> np.ndarray:
    return image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _splat_layer(
    rng: np.random.Generator, shape: Tuple[int, int], density: float, intensity_range: Range
) -> np.ndarray:
    """A sparse `[H, W]` map: each pixel is a seed with probability `density`, of random intensity."""
    seeds = rng.random(shape) < density
    return np.where(seeds, rng.uniform(*intensity_range, size=shape), 0.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------------
# The degradations
# ---------------------------------------------------------------------------------------------------
def add_motion_blur(
    image: np.ndarray,
    rng: RngLike = None,
    *,
    length_range: Range = (7.0, 31.0),
    curvature_range: Range = (0.0, 0.35),
    straight_probability: float = 0.25,
) -> np.ndarray:
    """motion-blurry: convolution with a random camera-shake kernel (`motion_blur_kernel`).

    Args:
        length_range: extent of the blur path in pixels (at a 256-px short side), default 7–31 — the
            range of the GoPro crops the authors trained on.
        curvature_range: how much the path bends (heading random-walk σ, radians), default 0–0.35.
        straight_probability: chance of a straight line kernel instead, default 0.25.
    """
    image = _check_image(image)
    rng = as_generator(rng)
    length = _uniform(rng, length_range) * _scale(image)
    curvature = 0.0 if rng.random() < straight_probability else _uniform(rng, curvature_range)
    kernel = motion_blur_kernel(rng, length=length, curvature=curvature)
    return _finish(convolve2d(image, kernel))


def add_haze(
    image: np.ndarray,
    rng: RngLike = None,
    *,
    beta_range: Range = (0.8, 2.2),
    airlight_range: Range = (0.7, 0.95),
    near_depth_range: Range = (0.15, 0.45),
    luminance_weight_range: Range = (0.2, 0.5),
) -> np.ndarray:
    """hazy: the atmospheric scattering model `I = J·t + A·(1 − t)`, `t = exp(−β·d)`.

    The depth `d` ∈ [near_depth, 1] is a proxy: a vertical gradient (far at the top, with a small random
    tilt) mixed with the heavily blurred luminance (bright regions, often sky, read as far).

    Args:
        beta_range: scattering coefficient β, default 0.8–2.2 (transmission ≈ 0.11–0.45 at the far end).
        airlight_range: grey level of the airlight A, default 0.7–0.95, with a slight random tint
            (±0.03 per channel, bluish on average).
        near_depth_range: depth of the nearest point, default 0.15–0.45 (so the foreground hazes too).
        luminance_weight_range: weight of the luminance in the depth proxy, default 0.2–0.5.
    """
    image = _check_image(image)
    rng = as_generator(rng)
    height, width = image.shape[:2]
    ys = np.linspace(1.0, 0.0, height, dtype=np.float32)[:, None]
    xs = np.linspace(-0.5, 0.5, width, dtype=np.float32)[None, :]
    gradient = np.clip(ys + rng.uniform(-0.25, 0.25) * xs, 0, 1)
    luminance = gaussian_blur(_luminance(image), max(1.0, min(height, width) / 12))
    span = float(luminance.max() - luminance.min())
    luminance = (luminance - luminance.min()) / span if span > 1e-6 else np.zeros_like(luminance)
    weight = _uniform(rng, luminance_weight_range)
    depth = (1 - weight) * gradient + weight * luminance
    near = _uniform(rng, near_depth_range)
    depth = near + (1 - near) * depth
    transmission = np.exp(-_uniform(rng, beta_range) * depth)[..., None]
    tint = np.array([-0.02, 0.0, 0.02], dtype=np.float32) + rng.uniform(-0.03, 0.03, 3).astype(np.float32)
    airlight = np.clip(_uniform(rng, airlight_range) + tint, 0, 1)
    return _finish(image * transmission + airlight * (1 - transmission))


def add_jpeg_compression(
    image: np.ndarray, rng: RngLike = None, *, quality_range: Tuple[int, int] = (10, 40)
) -> np.ndarray:
    """jpeg-compressed: a JPEG encode/decode round trip (PIL, 4:2:0 chroma subsampling).

    Args:
        quality_range: JPEG quality, both ends included, default 10–40. The authors' data used quality 10
            (`scripts/generate_LQ.py`); pass (10, 10) to reproduce it.
    """
    image = _check_image(image)
    rng = as_generator(rng)
    quality = _randint(rng, quality_range)
    buffer = io.BytesIO()
    Image.fromarray(np.round(image * 255).astype(np.uint8)).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.float32) / 255.0


def add_low_light(
    image: np.ndarray,
    rng: RngLike = None,
    *,
    gamma_range: Range = (1.5, 3.0),
    gain_range: Range = (0.1, 0.4),
    shot_noise_range: Range = (1e-4, 1e-3),
    read_noise_range: Range = (1.0, 4.0),
    color_jitter: float = 0.05,
) -> np.ndarray:
    """low-light: `gain · J^γ`, plus sensor noise, quantised to 8 bits (LOL-like, mean ≈ 0.02–0.15).

    Args:
        gamma_range: exponent γ (> 1 crushes the shadows), default 1.5–3.0.
        gain_range: exposure gain, default 0.1–0.4.
        shot_noise_range: signal-dependent noise variance per unit signal, default 1e-4–1e-3.
        read_noise_range: signal-independent noise σ on the 0..255 scale, default 1–4.
        color_jitter: per-channel gain jitter (a slight colour cast), default ±0.05.
    """
    image = _check_image(image)
    rng = as_generator(rng)
    gain = _uniform(rng, gain_range) * (1 + rng.uniform(-color_jitter, color_jitter, 3)).astype(np.float32)
    dark = gain * image ** _uniform(rng, gamma_range)
    variance = _uniform(rng, shot_noise_range) * dark + (_uniform(rng, read_noise_range) / 255.0) ** 2
    dark = dark + np.sqrt(variance) * rng.standard_normal(image.shape, dtype=np.float32)
    return _finish(np.round(np.clip(dark, 0, 1) * 255) / 255)


def add_gaussian_noise(image: np.ndarray, rng: RngLike = None, *, sigma_range: Range = (15.0, 50.0)) -> np.ndarray:
    """noisy: additive white Gaussian noise, independent per channel, clipped to [0, 1] (the authors' recipe).

    Args:
        sigma_range: noise σ on the 0..255 scale, default 15–50. The authors' data used σ = 50
            (`scripts/generate_LQ.py`); pass (50, 50) to reproduce it.
    """
    image = _check_image(image)
    rng = as_generator(rng)
    sigma = _uniform(rng, sigma_range) / 255.0
    return _finish(image + sigma * rng.standard_normal(image.shape, dtype=np.float32))


def add_raindrops(
    image: np.ndarray,
    rng: RngLike = None,
    *,
    count_range: Tuple[int, int] = (15, 50),
    radius_range: Range = (6.0, 28.0),
    magnification_range: Range = (1.2, 2.0),
    blur_range: Range = (4.0, 10.0),
    edge_softness_range: Range = (0.2, 0.5),
) -> np.ndarray:
    """raindrop: water drops on the lens or window, an approximation of the RainDrop dataset.

    Each drop is a slightly irregular, vertically stretched blob with a soft edge. Through it one sees a
    blurred, inverted and minified view of the scene around it (a drop is a small wide-angle lens), a
    little brighter at the top and darker at the bottom rim. The scene outside the drops is unchanged.

    Args:
        count_range: number of drops, both ends included, default 15–50.
        radius_range: drop radius in pixels (at a 256-px short side), default 6–28.
        magnification_range: how much wider the region seen through a drop is than the drop, default 1.2–2.
        blur_range: Gaussian σ of the view through the drops, in pixels, default 4–10.
        edge_softness_range: width of the soft edge as a fraction of the radius, default 0.2–0.5.
    """
    image = _check_image(image)
    rng = as_generator(rng)
    height, width = image.shape[:2]
    scale = _scale(image)
    blurred = gaussian_blur(image, _uniform(rng, blur_range) * scale)
    out = image.copy()
    for _ in range(_randint(rng, count_range)):
        radius = _uniform(rng, radius_range) * scale
        ry, rx = radius * rng.uniform(1.0, 1.3), radius * rng.uniform(0.8, 1.0)
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        magnification = _uniform(rng, magnification_range)
        softness = _uniform(rng, edge_softness_range)
        wobble_amplitude, wobble_phase = rng.uniform(-0.08, 0.08, 2), rng.uniform(0, 2 * math.pi, 2)
        # The box leaves room for the wobble (at most ±16 % of the radius).
        top, bottom = int(max(0, cy - 1.2 * ry - 1)), int(min(height, cy + 1.2 * ry + 2))
        left, right = int(max(0, cx - 1.2 * rx - 1)), int(min(width, cx + 1.2 * rx + 2))
        if bottom <= top or right <= left:
            continue
        ys, xs = np.mgrid[top:bottom, left:right].astype(np.float32)
        v, u = (ys - cy) / ry, (xs - cx) / rx
        angle = np.arctan2(v, u)
        # Low angular harmonics of the radius: drops are blobs, not perfect ellipses.
        wobble = 1 + sum(
            amplitude * np.cos(order * angle + phase)
            for order, amplitude, phase in zip((2, 3), wobble_amplitude, wobble_phase)
        )
        rho = np.sqrt(u**2 + v**2) / wobble
        alpha = np.clip((1 - rho) / softness, 0, 1)
        if not alpha.any():
            continue
        view = _sample_bilinear(blurred, cy - magnification * (ys - cy), cx - magnification * (xs - cx))
        shading = 1.06 - 0.06 * np.clip(v, -1, 1) - 0.12 * np.clip(rho, 0, 1) ** 4
        view = view * shading[..., None]
        a = alpha[..., None]
        out[top:bottom, left:right] = out[top:bottom, left:right] * (1 - a) + view * a
    return _finish(out)


def add_rain(
    image: np.ndarray,
    rng: RngLike = None,
    *,
    density_range: Range = (0.002, 0.008),
    length_range: Range = (15.0, 45.0),
    angle_range: Range = (-25.0, 25.0),
    width_range: Range = (0.4, 0.9),
    opacity_range: Range = (0.3, 0.75),
    layers: Tuple[int, int] = (1, 3),
) -> np.ndarray:
    """rainy: layers of semi-transparent rain streaks (Rain100-style).

    Per layer: sparse random seeds, widened by a small Gaussian blur, smeared by a line kernel along the
    common fall direction, then alpha-composited towards a near-white rain colour. Later layers are
    nearer: longer, wider, sparser.

    Args:
        density_range: fraction of pixels that seed a streak (at a 256-px short side; divided by the
            squared scale on larger images, so the streak count stays the same), default 0.002–0.008.
        length_range: streak length in pixels (at a 256-px short side), default 15–45.
        angle_range: fall direction in degrees from vertical, default −25–25 (±3° between layers).
        width_range: Gaussian σ of the streak cross-section in pixels, default 0.4–0.9.
        opacity_range: peak opacity of a streak, default 0.3–0.75.
        layers: number of streak layers, both ends included, default 1–3.
    """
    image = _check_image(image)
    rng = as_generator(rng)
    height, width = image.shape[:2]
    scale = _scale(image)
    base_angle = math.radians(_uniform(rng, angle_range))
    colour = rng.uniform(0.85, 1.0)
    alpha_total = np.zeros((height, width), dtype=np.float32)
    count = _randint(rng, layers)
    for layer in range(count):
        nearness = (layer + 1) / count
        # Per pixel at 256 px: larger images get as many (larger) streaks, not more of them.
        density = _uniform(rng, density_range) / (0.5 + nearness) / scale**2
        seeds = _splat_layer(rng, (height, width), density, (0.5, 1.0))
        sigma = _uniform(rng, width_range) * scale * (0.7 + 0.6 * nearness)
        # Blurring a seed spreads it over ~2πσ² pixels; scale back so a streak keeps its peak.
        seeds = gaussian_blur(seeds, sigma) * (2 * math.pi * max(sigma, 0.4) ** 2)
        length = _uniform(rng, length_range) * scale * (0.6 + 0.4 * nearness)
        angle = math.pi / 2 + base_angle + math.radians(rng.uniform(-3, 3))
        kernel = line_kernel(length, angle)
        streaks = convolve2d(seeds, kernel / kernel.max() * 0.5)
        alpha = np.clip(streaks, 0, 1) * _uniform(rng, opacity_range)
        alpha_total = 1 - (1 - alpha_total) * (1 - alpha)
    a = alpha_total[..., None]
    return _finish(image * (1 - a) + colour * a)


def add_shadow(
    image: np.ndarray,
    rng: RngLike = None,
    *,
    count_range: Tuple[int, int] = (1, 2),
    vertices_range: Tuple[int, int] = (3, 8),
    size_range: Range = (0.25, 0.7),
    strength_range: Range = (0.3, 0.7),
    softness_range: Range = (1.0, 8.0),
) -> np.ndarray:
    """shadowed: soft-edged random polygons that scale the light down (ISTD-style cast shadows).

    Each polygon is star-shaped around a random centre in the image; large ones run off the edges, as the
    shadows of objects outside the frame do. Inside it the image is multiplied by `strength` with a slight blue
    cast (skylight fills shadows); the edge is a Gaussian penumbra.

    Args:
        count_range: number of polygons, both ends included, default 1–2.
        vertices_range: vertices per polygon, default 3–8.
        size_range: polygon radius as a fraction of the short side, default 0.25–0.7.
        strength_range: fraction of light left in the shadow, default 0.3–0.7.
        softness_range: penumbra Gaussian σ in pixels (at a 256-px short side), default 1–8.
    """
    image = _check_image(image)
    rng = as_generator(rng)
    height, width = image.shape[:2]
    short = min(height, width)
    mask_image = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask_image)
    for _ in range(_randint(rng, count_range)):
        n = _randint(rng, vertices_range)
        centre = rng.uniform(0.0, 1.0, 2) * (width, height)
        radius = _uniform(rng, size_range) * short
        angles = np.sort(rng.uniform(0, 2 * math.pi, n))
        radii = radius * rng.uniform(0.5, 1.2, n)
        points = [(float(centre[0] + r * np.cos(a)), float(centre[1] + r * np.sin(a))) for r, a in zip(radii, angles)]
        draw.polygon(points, fill=255)
    mask = np.asarray(mask_image, dtype=np.float32) / 255.0
    mask = np.clip(gaussian_blur(mask, _uniform(rng, softness_range) * _scale(image)), 0, 1)[..., None]
    strength = _uniform(rng, strength_range)
    factor = np.clip(strength * np.array([0.93, 0.98, 1.08], dtype=np.float32), 0, 1)
    return _finish(image * (1 - mask + mask * factor))


def add_snow(
    image: np.ndarray,
    rng: RngLike = None,
    *,
    density_range: Range = (0.003, 0.015),
    flake_size_range: Range = (0.5, 2.5),
    fall_length_range: Range = (0.0, 6.0),
    veil_range: Range = (0.05, 0.25),
) -> np.ndarray:
    """snowy: a light snow veil plus three layers of flakes (Snow100K-style).

    Flakes are sparse seeds blurred to round soft dots, far layers small and dense, near layers large and
    sparse, each smeared slightly along a common fall direction, and composited in near-white. The veil
    is a uniform haze towards a bright grey.

    Args:
        density_range: fraction of pixels seeding a flake in the farthest layer (at a 256-px short side,
            scaled like `add_rain`'s), default 0.003–0.015; nearer layers are 3× and 9× sparser.
        flake_size_range: Gaussian σ of the flakes in pixels, from the farthest to the nearest layer
            (at a 256-px short side), default 0.5–2.5. Nearer flakes are also more transparent (defocus).
        fall_length_range: motion smear along the fall direction in pixels, default 0–6.
        veil_range: opacity of the veil, default 0.05–0.25.
    """
    image = _check_image(image)
    rng = as_generator(rng)
    height, width = image.shape[:2]
    scale = _scale(image)
    veil = _uniform(rng, veil_range)
    out = image * (1 - veil) + rng.uniform(0.8, 0.95) * veil
    density = _uniform(rng, density_range) / scale**2  # as many flakes per image at any size
    fall_angle = math.pi / 2 + math.radians(rng.uniform(-30, 30))
    fall_length = _uniform(rng, fall_length_range) * scale
    sizes = np.geomspace(*flake_size_range, 3)
    alpha_total = np.zeros((height, width), dtype=np.float32)
    for layer, size in enumerate(sizes):
        sigma = float(size * scale * rng.uniform(0.8, 1.2))
        seeds = _splat_layer(rng, (height, width), density / 3**layer, (0.5, 1.0))
        flakes = gaussian_blur(seeds, sigma) * (2 * math.pi * max(sigma, 0.4) ** 2)
        smear = fall_length * (0.5 + 0.5 * layer)
        if smear >= 1.5:
            kernel = line_kernel(smear, fall_angle)
            flakes = convolve2d(flakes, kernel / kernel.max() * 0.7)
        # Ease the soft falloff so flakes read as opaque discs rather than faint dots.
        alpha = np.clip(1.6 * flakes, 0, 1) * rng.uniform(0.6, 1.0) * (1 - 0.2 * layer)
        alpha_total = 1 - (1 - alpha_total) * (1 - alpha)
    a = alpha_total[..., None]
    return _finish(out * (1 - a) + rng.uniform(0.92, 1.0) * a)


def random_stroke_mask(
    height: int,
    width: int,
    rng: RngLike = None,
    *,
    strokes_range: Tuple[int, int] = (5, 30),
    segments_range: Tuple[int, int] = (1, 6),
    segment_length_range: Range = (10.0, 50.0),
    stroke_width_range: Range = (8.0, 14.0),
) -> np.ndarray:
    """A random inpainting mask `[H, W]` bool (True = missing), in the style of the authors' face masks.

    Their masks (`scripts/inpainting_masks/*.png`, 256×256) are thick round-capped brush strokes made of
    short straight segments about 12 px wide, covering 4–50 % of the image (median 31 %); with these
    defaults ours cover a similar range. Here: `strokes` polylines from random
    starts, each of `segments` segments whose headings are multiples of 45° with a ±10° jitter.

    Args:
        strokes_range: number of strokes, both ends included, default 5–30.
        segments_range: segments per stroke, default 1–6.
        segment_length_range: segment length in pixels (at a 256-px short side), default 10–50.
        stroke_width_range: stroke width in pixels (at a 256-px short side), default 8–14.
    """
    rng = as_generator(rng)
    scale = min(height, width) / REFERENCE_SIZE
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for _ in range(_randint(rng, strokes_range)):
        stroke_width = max(1, int(round(_uniform(rng, stroke_width_range) * scale)))
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        points = [(x, y)]
        for _ in range(_randint(rng, segments_range)):
            heading = math.radians(45 * rng.integers(0, 8) + rng.uniform(-10, 10))
            length = _uniform(rng, segment_length_range) * scale
            x, y = x + length * math.cos(heading), y + length * math.sin(heading)
            points.append((x, y))
        draw.line(points, fill=255, width=stroke_width, joint="curve")
        half = stroke_width / 2
        for px, py in (points[0], points[-1]):
            draw.ellipse([px - half, py - half, px + half, py + half], fill=255)
    return np.asarray(canvas) > 127


def add_inpainting_mask(
    image: np.ndarray, rng: RngLike = None, *, fill_value: float = 1.0, **mask_kwargs
) -> np.ndarray:
    """uncompleted: missing regions from `random_stroke_mask`, filled with white as the authors do
    (`mask · img + (1 − mask)` in their `generate_masked_face.py`).

    The mask is the first thing drawn from `rng`, so `random_stroke_mask(H, W, same_seed)` recovers it.

    Args:
        fill_value: value of the missing pixels, default 1.0 (white).
        **mask_kwargs: passed to `random_stroke_mask` (stroke counts, lengths, widths).
    """
    image = _check_image(image)
    rng = as_generator(rng)
    mask = random_stroke_mask(image.shape[0], image.shape[1], rng, **mask_kwargs)
    out = image.copy()
    out[mask] = fill_value
    return _finish(out)


# ---------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------
DEGRADATION_FUNCTIONS: Dict[str, Callable[..., np.ndarray]] = {
    "motion-blurry": add_motion_blur,
    "hazy": add_haze,
    "jpeg-compressed": add_jpeg_compression,
    "low-light": add_low_light,
    "noisy": add_gaussian_noise,
    "raindrop": add_raindrops,
    "rainy": add_rain,
    "shadowed": add_shadow,
    "snowy": add_snow,
    "uncompleted": add_inpainting_mask,
}

# The labels that can be synthesised, in the released models' label order (all ten).
SYNTHESISABLE = [label for label in DEGRADATIONS if label in DEGRADATION_FUNCTIONS]


def degrade(image: np.ndarray, label: str, rng: RngLike = None, **params) -> np.ndarray:
    """Apply the degradation `label` (one of `SYNTHESISABLE`) to a float32 `[H, W, 3]` image in [0, 1].

    `params` override that degradation's defaults (see its function in `DEGRADATION_FUNCTIONS`).
    """
    function = DEGRADATION_FUNCTIONS.get(label)
    if function is None:
        raise ValueError(f"unknown degradation {label!r}; known: {', '.join(SYNTHESISABLE)}.")
    return function(image, rng, **params)


__all__ = [
    "DEGRADATION_FUNCTIONS",
    "REFERENCE_SIZE",
    "SYNTHESISABLE",
    "add_gaussian_noise",
    "add_haze",
    "add_inpainting_mask",
    "add_jpeg_compression",
    "add_low_light",
    "add_motion_blur",
    "add_rain",
    "add_raindrops",
    "add_shadow",
    "add_snow",
    "as_generator",
    "convolve2d",
    "degrade",
    "gaussian_blur",
    "line_kernel",
    "motion_blur_kernel",
    "random_stroke_mask",
]
