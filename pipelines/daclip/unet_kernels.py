"""CPU fast kernels of the restoration UNet: the one place where `unet_daclip.py` trades plain code for speed.

`unet_daclip.py` reads as the authors' `ConditionalUNet` (`DenoisingUNet_arch.py`, `module_util.py`); where a step
runs faster on CPU when computed differently, its module calls a function from here. Each function's docstring gives
the plain formula it computes, and each equals that formula up to float round-off (`tests/test_unet_fast_paths.py`:
1e-12 in float64, the authors' outputs at 1e-5). Three kinds of work live here:

- **In-place updates at inference** (`no_autograd`, `add`, `mul`, `mul_add`, `silu`): on CPU a fresh
  multi-megabyte tensor costs more (the kernel maps and zeroes new pages) than the element-wise arithmetic on it,
  so without autograd the conv outputs are reused. With autograd on, the out-of-place forms run (in-place updates
  would overwrite tensors saved for the backward pass). `no_autograd` is the one place that choice is made; the
  numbers are the same either way.
- **Memory layout** (`is_channels_last`, `to_model_format`, `layer_norm_channels_last`, `tokens_of`, `map_of`):
  oneDNN runs these convolutions about 1.5× faster in NHWC (channels-last) than NCHW on CPU
  (`benchmarks/RESULTS.md`); every map inherits the format of the model's input, and the layout-aware steps keep it.
- **Regrouped arithmetic** (`nearest_upsample_conv`, `regrouped_linear_attention`, `single_key_attention`): the
  same products in an order that never builds the large intermediates.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

# ------------------------------------------------------------------------------------------------------------------
# In-place updates: the one choice, and the element-wise steps that follow it
# ------------------------------------------------------------------------------------------------------------------


def no_autograd() -> bool:
    """True under `torch.no_grad()` / `torch.inference_mode()`: nothing is recorded for a backward pass, so fresh
    intermediates may be overwritten (the helpers below) and gradient-only work skipped (`single_key_attention`)."""
    return not torch.is_grad_enabled()


# Each helper's first argument must be a fresh intermediate that nothing else holds (a conv or norm output): it is
# the one overwritten at inference.


def add(fresh: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """`fresh + other`."""
    return fresh.add_(other) if no_autograd() else fresh + other


def mul(fresh: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """`fresh · other`."""
    return fresh.mul_(other) if no_autograd() else fresh * other


def mul_add(fresh: torch.Tensor, factor: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """`fresh · factor + shift`."""
    return fresh.mul_(factor).add_(shift) if no_autograd() else fresh * factor + shift


def silu(fresh: torch.Tensor) -> torch.Tensor:
    """`fresh · sigmoid(fresh)` (`nn.SiLU`)."""
    return F.silu(fresh, inplace=no_autograd())


# ------------------------------------------------------------------------------------------------------------------
# Memory layout
# ------------------------------------------------------------------------------------------------------------------


def is_channels_last(x: torch.Tensor) -> bool:
    """A 4-d map laid out NHWC (one that is both, e.g. 1×1 pixels, counts as NCHW)."""
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def to_model_format(x: torch.Tensor, channels_last: Optional[bool]) -> torch.Tensor:
    """`x` in the memory format the UNet's maps use: channels-last when `channels_last` is True, or when it is
    None and `x` is on CPU (measured faster there; on CUDA fp32 NCHW is cuDNN's usual best, and nothing was measured
    there). Same values, same NCHW shape; every later map inherits the format (convs, norms, attention views, cat)."""
    if channels_last is None:
        channels_last = x.device.type == "cpu"
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def layer_norm_channels_last(x: torch.Tensor, g: torch.Tensor, eps: float) -> torch.Tensor:
    """`(x − mean_c(x)) / sqrt(var_c(x) + eps) · g` over the channels of an NHWC-laid `[B, C, H, W]` map (biased
    variance), for `g` of shape `[1, C, 1, 1]`.

    In channels-last memory each pixel's channels are contiguous: this is exactly `F.layer_norm` over the last axis
    of the NHWC view, one fused kernel instead of five passes.
    """
    return F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], g.view(-1), None, eps).permute(0, 3, 1, 2)


def tokens_of(x: torch.Tensor) -> Tuple[torch.Tensor, bool]:
    """`[B, C, H, W]` → tokens `[B, H·W, C]` (the authors' `rearrange(x, 'b c h w -> b (h w) c')`), and whether
    `x` was channels-last (for `map_of`). For an NHWC map the tokens are its memory itself: a view."""
    batch, channels, height, width = x.shape
    if is_channels_last(x):
        return x.permute(0, 2, 3, 1).reshape(batch, height * width, channels), True
    return x.flatten(2).transpose(1, 2), False


def map_of(tokens: torch.Tensor, height: int, width: int, channels_last: bool) -> torch.Tensor:
    """Tokens `[B, H·W, C]` → `[B, C, H, W]` (`rearrange(x, 'b (h w) c -> b c h w')`), in the layout `tokens_of`
    reported, a view wherever possible."""
    batch = tokens.shape[0]
    if channels_last:
        return tokens.reshape(batch, height, width, -1).permute(0, 3, 1, 2)
    return tokens.transpose(1, 2).reshape(batch, -1, height, width)


# ------------------------------------------------------------------------------------------------------------------
# Regrouped arithmetic
# ------------------------------------------------------------------------------------------------------------------


def upsample_phase_weights(weight: torch.Tensor) -> torch.Tensor:
    """3×3 weights `[C_out, C_in, 3, 3]` → the 2×2 weights of the four output phases `[4·C_out, C_in, 2, 2]`, in the
    order (a, b) = 00, 01, 10, 11 (see `nearest_upsample_conv`)."""

    def fold(w: torch.Tensor, axis: int):
        first, middle, last = w.unbind(axis)
        # phase 0 reads (previous, current), phase 1 reads (current, next); the middle tap joins the current one
        return torch.stack([first, middle + last], axis), torch.stack([first + middle, last], axis)

    return torch.cat([phase for rows in fold(weight, 2) for phase in fold(rows, 3)], dim=0)


def nearest_upsample_conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """`conv(upsample_nearest_2x(x))` for a 3×3, stride-1, padding-1 `conv`: `[B, C_in, H, W]` → `[B, C_out, 2H, 2W]`,
    in the memory format of `x`.

    Computed without building the upsampled map ("sub-pixel" form): output pixel `(2i + a, 2j + b)` of a 3×3
    convolution over a nearest-upsampled map only ever sees input rows `i − 1, i` (a = 0) or `i, i + 1` (a = 1), and
    likewise columns, with the taps that land on the same input pixel summed. So the four output phases are four
    2×2 convolutions of the low-resolution input: 16 instead of 36 multiply-adds per input pixel and channel pair,
    and no 4× larger intermediate. The taps are summed before rather than after multiplying; against a float64
    computation both forms err by the same amount.
    """
    batch, _, height, width = x.shape
    channels_out = conv.out_channels
    bias = None if conv.bias is None else conv.bias.repeat(4)
    # One conv for all phases: position (i, j) of the padded input covers rows i−1, i and columns j−1, j.
    phases = F.conv2d(F.pad(x, (1, 1, 1, 1)), upsample_phase_weights(conv.weight), bias)
    phases = phases.unflatten(1, (2, 2, channels_out))  # [B, a, b, C, H + 1, W + 1]
    channels_last = is_channels_last(x)
    if channels_last:
        out = x.new_empty(batch, height, 2, width, 2, channels_out)  # NHWC of [B, C, 2H, 2W]
        target = lambda a, b: out[:, :, a, :, b, :]  # noqa: E731
        source = lambda a, b: phases[:, a, b, :, a : a + height, b : b + width].permute(0, 2, 3, 1)  # noqa: E731
    else:
        out = x.new_empty(batch, channels_out, height, 2, width, 2)
        target = lambda a, b: out[:, :, :, a, :, b]  # noqa: E731
        source = lambda a, b: phases[:, a, b, :, a : a + height, b : b + width]  # noqa: E731
    for a in (0, 1):
        for b in (0, 1):
            target(a, b).copy_(source(a, b))
    if channels_last:
        return out.view(batch, 2 * height, 2 * width, channels_out).permute(0, 3, 1, 2)
    return out.view(batch, channels_out, 2 * height, 2 * width)


def regrouped_linear_attention(
    x: torch.Tensor, qkv_weight: torch.Tensor, out_conv: nn.Conv2d, heads: int, scale: float, chunk_tokens: int
) -> torch.Tensor:
    """The authors' linear attention up to its output conv: `out_conv(out)` for `[B, C, H, W]` → `[B, C, H, W]`, with

        q, k, v = 1×1 conv of x with `qkv_weight` [3·heads·d, C, 1, 1], split into heads of d channels,
                  over the N = H·W positions
        q = softmax over each head's d channels (q) · scale;  k = softmax over positions (k);  v = v / N
        out_h = (k_hᵀ · v_h)ᵀ · q_h   per head,   out = concat over heads

    Computed on token matrices `[B, N, C]` (views of a channels-last map), in blocks of `chunk_tokens` positions,
    with the products regrouped so that none of q, k, v or `out` is ever built for the whole map. The result keeps
    the memory format of `x`.
    """
    batch, channels, height, width = x.shape
    positions = height * width
    tokens = x.permute(0, 2, 3, 1).reshape(batch, positions, channels)  # a view for channels-last input
    weight_q, weight_k, weight_v = (w.flatten(1) for w in qkv_weight.chunk(3, dim=0))  # [hidden, C]
    blocks = range(0, positions, chunk_tokens)
    block = lambda start: tokens[:, start : start + chunk_tokens]  # noqa: E731

    # 1. kᵀ·tokens with k = softmax over positions of tokens·W_kᵀ, one block at a time: the running maximum,
    #    normaliser and weighted sum of each k channel are rescaled whenever a block raises the maximum (the
    #    online softmax), kept in at least float32 whatever the model dtype.
    accumulate = torch.promote_types(x.dtype, torch.float32)
    maximum = x.new_full((batch, 1, weight_k.shape[0]), -math.inf, dtype=accumulate)
    normaliser = torch.zeros_like(maximum)
    weighted = x.new_zeros((batch, weight_k.shape[0], channels), dtype=accumulate)
    for start in blocks:
        logits = F.linear(block(start), weight_k).to(accumulate)
        new_maximum = torch.maximum(maximum, logits.amax(dim=1, keepdim=True))
        rescale = torch.exp(maximum - new_maximum)
        weights = torch.exp(logits - new_maximum)
        normaliser = normaliser * rescale + weights.sum(dim=1, keepdim=True)
        weighted = weighted * rescale.transpose(1, 2) + weights.transpose(1, 2) @ block(start).to(accumulate)
        maximum = new_maximum
    k_tokens = weighted / normaliser.transpose(1, 2)  # kᵀ·tokens, [B, hidden, C]

    # 2. The per-head summary kᵀ·v for all heads at once, as one [hidden, hidden] matrix with its cross-head
    #    blocks zeroed. v = tokens·W_vᵀ enters only here, so kᵀ·v = (kᵀ·tokens)·W_vᵀ: v is never built. The
    #    authors scale q by d**-0.5 and v by 1/N; scaling this small matrix instead is the same arithmetic.
    #    And out = q·summary feeds the 1×1 conv `out_conv`: out·W_oᵀ + b = q·(summary·W_oᵀ) + b.
    head_channels = weight_k.shape[0] // heads
    same_head = torch.block_diag(*[k_tokens.new_ones(head_channels, head_channels)] * heads)
    summary = (k_tokens @ weight_v.to(accumulate).t()) * (same_head * (scale / positions))
    q_to_out = (summary @ out_conv.weight.flatten(1).to(accumulate).t()).to(x.dtype)  # [B, hidden, C]

    # 3. Per block: q (softmax over each head's channels), then straight to the output of `out_conv`.
    outputs = []
    for start in blocks:
        q = F.linear(block(start), weight_q).unflatten(-1, (heads, -1)).softmax(dim=-1).flatten(-2)
        outputs.append(torch.baddbmm(out_conv.bias, q, q_to_out))
    out = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)
    out = out.view(batch, height, width, channels).permute(0, 3, 1, 2)
    if not is_channels_last(x):
        out = out.contiguous()  # keep the caller's memory format
    return out


def single_key_attention(to_v: nn.Module, to_out: nn.Module, context: torch.Tensor, queries: int) -> torch.Tensor:
    """`softmax(q·kᵀ/√d)·v` projected by `to_out`, for a context `[B, 1, D]` of one key/value token: the softmax
    over one key is exactly 1 at every query, so the output is `to_out(to_v(context))` at each of the `queries`
    positions, `[B, queries, C]` (bit for bit what the full computation gives). Use it only when `no_autograd()`,
    so that training still gives `to_q`/`to_k` their (zero) gradients as the authors' code does."""
    return to_out(to_v(context)).expand(-1, queries, -1)
