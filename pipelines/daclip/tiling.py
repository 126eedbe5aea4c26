"""Noise prediction in overlapping tiles, so that any image size runs in bounded memory.

The sampler still steps the whole image at once; only the UNet call is split. At each step the state
x_t and the degraded image μ are cut into overlapping tiles, the UNet predicts ε̂ per tile, and the tiles
are blended with weights that fall off linearly across each overlap. Neighbouring tiles therefore agree
smoothly at every step, and the sampler's noise is drawn once for the whole image, so no seam can form
from independently sampled tiles.

The UNet's deepest attention sees a tile rather than the whole image, so tiled and untiled results
differ slightly; tiling is an explicit option (`tile_size`), never the default.
"""
from __future__ import annotations

import numbers
from typing import Callable, List

import torch

NoisePredictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def tile_starts(length: int, tile: int, overlap: int) -> List[int]:
    """Start offsets of tiles of `tile` pixels covering `length`, neighbours overlapping by ≥ `overlap`."""
    if tile >= length:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)  # the last tile ends at the border
    return starts


def blend_ramp(length: int, overlap: int, falls_at_start: bool, falls_at_end: bool) -> torch.Tensor:
    """1 inside, rising linearly over `overlap` pixels at an edge shared with a neighbour (never 0)."""
    weights = torch.ones(length, dtype=torch.float32)
    ramp = torch.arange(1, overlap + 1, dtype=torch.float32) / (overlap + 1)
    if falls_at_start and overlap:
        weights[:overlap] = torch.minimum(weights[:overlap], ramp)
    if falls_at_end and overlap:
        weights[-overlap:] = torch.minimum(weights[-overlap:], ramp.flip(0))
    return weights


def _is_integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)  # numpy integers too


def check_tiling(tile_size: int, overlap: int, min_size: int) -> None:
    if not _is_integer(tile_size) or tile_size < max(min_size, 32):
        raise ValueError(f"tile_size must be an integer of at least {max(min_size, 32)} pixels, got {tile_size!r}.")
    if not _is_integer(overlap) or not 0 <= overlap < tile_size // 2:
        raise ValueError(f"tile_overlap must be an integer from 0 to {tile_size // 2 - 1}, got {overlap!r}.")


def tiled_noise_prediction(
    predict: NoisePredictor, sample: torch.Tensor, condition: torch.Tensor, tile_size: int, overlap: int
) -> torch.Tensor:
    """ε̂ for `sample`/`condition` `[B, C, H, W]`, computed tile by tile with `predict(sample_tile, condition_tile)`."""
    height, width = sample.shape[-2:]
    if height <= tile_size and width <= tile_size:
        return predict(sample, condition)
    rows, columns = tile_starts(height, tile_size, overlap), tile_starts(width, tile_size, overlap)
    prediction = torch.zeros(sample.shape, dtype=torch.float32, device=sample.device)
    total_weight = torch.zeros((1, 1, height, width), dtype=torch.float32, device=sample.device)
    for row_index, top in enumerate(rows):
        tile_height = min(tile_size, height)
        weight_y = blend_ramp(tile_height, overlap, row_index > 0, row_index < len(rows) - 1)
        for column_index, left in enumerate(columns):
            tile_width = min(tile_size, width)
            weight_x = blend_ramp(tile_width, overlap, column_index > 0, column_index < len(columns) - 1)
            weight = (weight_y[:, None] * weight_x[None, :]).to(sample.device)
            window = (..., slice(top, top + tile_height), slice(left, left + tile_width))
            prediction[window] += predict(sample[window], condition[window]).float() * weight
            total_weight[window] += weight
    return (prediction / total_weight).to(sample.dtype)
