"""Procedural clean images: the dead-leaves model, for training restoration networks without photos.

Dead leaves (Matheron; Lee, Mumford and Huang, "Occlusion models for natural images", IJCV 2001) drop opaque
discs one over the other, with radii drawn from a power law `p(r) ∝ r^-α` (α ≈ 3 makes the image scale
invariant, like natural photos). Achddou, Gousseau and Ladjal ("Synthetic images as a regularity prior for image
restoration neural networks", SSVM 2021) show that denoisers trained on such images restore natural photos
nearly as well as ones trained on photos. We add what a restorer must also leave alone and what a handful of
photos lacks: large smooth regions (a sky-like vertical gradient behind the leaves, discs filled with linear
gradients), saturated colours, and a slight blur (optics) so edges are not aliased.

    image = dead_leaves(256, rng=np.random.default_rng(0))   # float32 [256, 256, 3] in [0, 1]
"""
from __future__ import annotations

import colorsys
import math

import numpy as np

from .degradations import RngLike, as_generator, gaussian_blur

__all__ = ["dead_leaves"]


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    """An RGB colour in [0, 1]: hue uniform, saturation skewed low (most natural surfaces are dull, some vivid),
    value spread over the whole range."""
    hue = rng.uniform()
    saturation = rng.beta(1.2, 2.0) if rng.uniform() < 0.8 else rng.uniform(0.7, 1.0)
    value = rng.beta(2.0, 1.6)
    return np.array(colorsys.hsv_to_rgb(hue, saturation, value), dtype=np.float32)


def _sky(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth vertical gradient between two related colours (a clear or hazy sky, a wall, a backdrop)."""
    top = _random_colour(rng)
    if rng.uniform() < 0.5:  # blue skies are what real photos put there most
        top = np.array(colorsys.hsv_to_rgb(rng.uniform(0.53, 0.66), rng.uniform(0.3, 0.9), rng.uniform(0.5, 1.0)))
    bottom = np.clip(top + rng.uniform(-0.25, 0.35, 3), 0, 1)
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None] ** rng.uniform(0.5, 2.0)
    return np.broadcast_to(top * (1 - ramp) + bottom * ramp, (height, width, 3)).astype(np.float32)


def dead_leaves(
    size: int,
    rng: RngLike = None,
    *,
    alpha: float = 3.0,
    radius_range: tuple = (0.01, 0.4),
    max_leaves: int = 8000,
    sky_probability: float = 0.6,
    gradient_probability: float = 0.3,
    blur_range: tuple = (0.3, 1.0),
) -> np.ndarray:
    """A `size`×`size` dead-leaves image, float32 `[size, size, 3]` in [0, 1], RGB.

    Args:
        size: side in pixels (>= 16).
        rng: a `numpy.random.Generator`, an int seed or None (fresh entropy); the same seed gives the same image.
        alpha: exponent of the radius power law `p(r) ∝ r^-alpha` (3 = scale invariant).
        radius_range: smallest and largest radius as fractions of `size`.
        max_leaves: discs dropped at most (fewer when the image is covered earlier).
        sky_probability: chance that the leaves fill only the part below a random horizon and a smooth
            gradient stays visible above it (large flat regions that a restorer must keep as they are).
        gradient_probability: chance that a disc is filled with a linear colour gradient instead of a flat colour.
        blur_range: σ in pixels of a final Gaussian blur (at 256 px; scales with `size`).

    Raises:
        ValueError: `size` below 16, or ranges out of order.
    """
    if size < 16:
        raise ValueError(f"dead_leaves needs size >= 16, got {size}.")
    if not 0 < radius_range[0] < radius_range[1]:
        raise ValueError(f"radius_range must be increasing and positive, got {radius_range}.")
    rng = as_generator(rng)
    image = _sky(size, size, rng)
    covered = np.zeros((size, size), dtype=bool)
    # With a sky, leaves are dropped only below a wavy horizon (their centres too, so the sky stays open).
    rows = np.arange(size, dtype=np.float32)[:, None]
    cols = np.arange(size, dtype=np.float32)[None, :]
    if rng.uniform() < sky_probability:
        horizon = size * rng.uniform(0.25, 0.65) + size * 0.05 * np.sin(cols / size * rng.uniform(2, 9) + rng.uniform(0, 6))
        allowed = rows >= horizon
    else:
        allowed = np.ones((size, size), dtype=bool)
    # Each disc is painted only where no earlier one lies: the first dropped is on top (the usual construction).
    r_min, r_max = radius_range[0] * size, radius_range[1] * size
    # Inverse-CDF sampling of p(r) ∝ r^-alpha on [r_min, r_max] (alpha != 1).
    exponent = 1.0 - alpha
    low, high = r_min**exponent, r_max**exponent
    for _ in range(max_leaves):
        radius = (low + rng.uniform() * (high - low)) ** (1.0 / exponent)
        cy, cx = rng.uniform(0, size), rng.uniform(0, size)
        if not allowed[min(int(cy), size - 1), min(int(cx), size - 1)]:
            continue
        y0, y1 = max(0, int(cy - radius)), min(size, int(math.ceil(cy + radius)) + 1)
        x0, x1 = max(0, int(cx - radius)), min(size, int(math.ceil(cx + radius)) + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        disc = (rows[y0:y1] - cy) ** 2 + (cols[:, x0:x1] - cx) ** 2 <= radius**2
        new = disc & ~covered[y0:y1, x0:x1] & allowed[y0:y1, x0:x1]
        if not new.any():
            continue
        colour = _random_colour(rng)
        if rng.uniform() < gradient_probability:
            angle = rng.uniform(0, 2 * math.pi)
            t = ((rows[y0:y1] - cy) * math.sin(angle) + (cols[:, x0:x1] - cx) * math.cos(angle)) / (2 * radius) + 0.5
            other = _random_colour(rng)
            fill = colour * (1 - t[..., None]) + other * t[..., None]
        else:
            fill = np.broadcast_to(colour, (y1 - y0, x1 - x0, 3))
        patch = image[y0:y1, x0:x1]
        patch[new] = fill[new]
        covered[y0:y1, x0:x1] |= new
        if covered[allowed].all():
            break
    sigma = rng.uniform(*blur_range) * size / 256
    image = gaussian_blur(image, sigma) if sigma > 0.05 else image
    return np.clip(image, 0, 1).astype(np.float32)
