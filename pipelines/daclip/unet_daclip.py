"""The DA-CLIP restoration network: the authors' `ConditionalUNet`, as a diffusers model.

It predicts the noise ε of an IR-SDE state `x_t` whose mean-reversion target μ is the degraded image. The
network sees `concat(x_t − μ, μ)`; DA-CLIP's *degradation embedding* steers it through a learned prompt added
to the time embedding, and DA-CLIP's *content embedding* through cross-attention (a single key/value token) in
the SpatialTransformers of the deepest level and the middle block.

Parameter names follow the authors' checkpoints key for key (`init_conv`, `time_mlp.1`, `downs.0.2.fn.fn.to_qkv`,
`mid_attn.fn.fn.proj_in`, ...), so a released `universal-ir.pth` / `wild-ir.pth` loads by prefix stripping alone
(`DACLIPUNet2DModel.from_original_checkpoint`). The numerics follow the authors' code, quirks included; each quirk
is marked where it is reproduced.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from numbers import Real
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from ...utils.model_loading import OwnedWeightsMixin, QuietDtypeCastMixin
from . import unet_kernels as kernels

# The authors fix the head width of every attention layer at 32 channels.
HEAD_CHANNELS = 32


@dataclass
class DACLIPUNet2DOutput(BaseOutput):
    """
    Args:
        sample (`torch.Tensor` of shape `[B, out_channels, H, W]`): the predicted noise ε̂ of the IR-SDE state.
    """

    sample: torch.Tensor


# ------------------------------------------------------------------------------------------------------------------
# Building blocks (the authors' `module_util.py` and `attention.py`; the speed work they call is in `unet_kernels`)
# ------------------------------------------------------------------------------------------------------------------


class SinusoidalTimestepEmbedding(nn.Module):
    """`[sin(t·f_k), cos(t·f_k)]` with `f_k = exp(−k·ln(10000)/(half − 1))`, `half = dim // 2` (`SinusoidalPosEmb`).

    Note the `half − 1` denominator (diffusers' `get_timestep_embedding` uses `half` by default). The embedding is
    always computed in float32, as in the authors' code where a Python float time becomes a float32 tensor; the
    caller casts it to the model's dtype afterwards.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        half_dim = self.dim // 2
        exponent = math.log(10000) / (half_dim - 1)
        frequencies = torch.exp(torch.arange(half_dim, device=timesteps.device) * -exponent)
        arguments = timesteps.float()[:, None] * frequencies[None, :]
        return torch.cat((arguments.sin(), arguments.cos()), dim=-1)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of a `[B, C, H, W]` map, with a gain `g` and no bias (`LayerNorm`):
    `(x − mean_c(x)) / sqrt(var_c(x) + eps) · g`, biased variance."""

    def __init__(self, channels: int):
        super().__init__()
        self.g = nn.Parameter(torch.ones(1, channels, 1, 1))
        # None: the authors' dtype-dependent eps (`eps_for`); a number replaces it in every dtype (an explicit
        # option, see `DACLIPUNet2DModel.set_channel_norm_eps`).
        self.eps: Optional[float] = None

    @staticmethod
    def eps_for(dtype: torch.dtype) -> float:
        # The authors' quirk, reproduced: eps is 1e-5 for float32 but 1e-3 for *every* other dtype (fp16, bf16 and
        # also float64). A float64 run therefore does not equal a float32 run to float64 precision, and a bf16 run
        # of weights trained in float32 normalises differently from float32 wherever a pixel's channels vary
        # little (variance near 1e-3), which is most of the bf16-vs-fp32 difference (benchmarks/RESULTS.md).
        return 1e-5 if dtype == torch.float32 else 1e-3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eps = self.eps if self.eps is not None else self.eps_for(x.dtype)
        if kernels.is_channels_last(x):
            return kernels.layer_norm_channels_last(x, self.g, eps)
        var = torch.var(x, dim=1, unbiased=False, keepdim=True)
        mean = torch.mean(x, dim=1, keepdim=True)
        return (x - mean) * (var + eps).rsqrt() * self.g


class ChannelPreNorm(nn.Module):
    """Channel LayerNorm (`norm`) before the wrapped attention (`fn`) (`PreNorm`)."""

    def __init__(self, channels: int, fn: nn.Module):
        super().__init__()
        self.fn = fn
        self.norm = ChannelLayerNorm(channels)

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.fn(self.norm(x), context=context)


class ResidualAttention(nn.Module):
    """`x + fn(x)`: the residual around a pre-normed attention layer (`Residual`; keys `.fn.norm.*`, `.fn.fn.*`)."""

    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        return kernels.add(self.fn(x, context=context), x)


def conv_same(channels_in: int, channels_out: int, kernel_size: int = 3, bias: bool = False) -> nn.Conv2d:
    """A stride-1 convolution that keeps the spatial size (the authors' `default_conv`: no bias by default)."""
    return nn.Conv2d(channels_in, channels_out, kernel_size, padding=kernel_size // 2, bias=bias)


def downsample_conv(channels_in: int, channels_out: int) -> nn.Conv2d:
    """Halve the resolution: a 4×4 convolution with stride 2 and padding 1 (`Downsample`)."""
    return nn.Conv2d(channels_in, channels_out, 4, 2, 1)


class NearestUpsampleConv(nn.Sequential):
    """Double the resolution: nearest-neighbour ×2, then a 3×3 convolution (`Upsample`; weights under `.1`).

    `forward` computes `self[1](self[0](x))` without building the 4× larger map
    (`unet_kernels.nearest_upsample_conv`).
    """

    def __init__(self, channels_in: int, channels_out: int):
        super().__init__(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(channels_in, channels_out, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.nearest_upsample_conv(x, self[1])


def upsample_conv(channels_in: int, channels_out: int) -> NearestUpsampleConv:
    """Double the resolution: nearest-neighbour ×2, then a 3×3 convolution (the authors' `Upsample`)."""
    return NearestUpsampleConv(channels_in, channels_out)


class ScaleShiftConvBlock(nn.Module):
    """3×3 convolution (`proj`, no bias), optional FiLM `x·(1 + scale) + shift`, then SiLU (`Block`). No
    normalisation."""

    def __init__(self, channels_in: int, channels_out: int):
        super().__init__()
        self.proj = conv_same(channels_in, channels_out)
        self.act = nn.SiLU()  # kept for the authors' module tree; `kernels.silu` is the same function

    def forward(self, x: torch.Tensor, scale_shift: Optional[Tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
        x = self.proj(x)
        if scale_shift is not None:
            scale, shift = scale_shift
            x = kernels.mul_add(x, scale + 1, shift)
        return kernels.silu(x)


class TimestepResBlock(nn.Module):
    """The authors' ResBlock: two conv blocks, the first modulated by the time embedding, and a residual.

    Unlike most diffusion UNets it has **no GroupNorm**. `res_conv` is a 1×1 convolution (no bias) when the
    channel count changes, otherwise the identity.
    """

    def __init__(self, channels_in: int, channels_out: int, time_embed_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(time_embed_dim, channels_out * 2))
        self.block1 = ScaleShiftConvBlock(channels_in, channels_out)
        self.block2 = ScaleShiftConvBlock(channels_out, channels_out)
        self.res_conv = conv_same(channels_in, channels_out, 1) if channels_in != channels_out else nn.Identity()

    def forward(self, x: torch.Tensor, time_embedding: torch.Tensor) -> torch.Tensor:
        scale_shift = self.mlp(time_embedding)[:, :, None, None].chunk(2, dim=1)
        h = self.block1(x, scale_shift=scale_shift)
        h = self.block2(h)
        return kernels.add(h, self.res_conv(x))


class LinearAttention2D(nn.Module):
    """Linear ("efficient") attention over a feature map: 4 heads of 32 channels, whatever the input width
    (`LinearAttention`). It has no use for the content embedding and ignores `context`.

    With `q, k, v = to_qkv(x)` split into heads over the `N = H·W` positions: q is softmaxed over its channels and
    scaled by `d**-0.5`, k softmaxed over positions, v divided by N; per head `out = (k·vᵀ)ᵀ·q`; then a 1×1
    convolution and a channel LayerNorm (`to_out.0`, `to_out.1`). `forward` computes this regrouped, block by block,
    so that none of q, k, v or `out` is built for the whole map (`unet_kernels.regrouped_linear_attention`); it
    equals the authors' order of operations up to float round-off (tested at 1e-12 in float64, and against their
    outputs at 1e-5).
    """

    # Positions per block: a block of q or k (4096 × 128 floats, 2 MiB) stays in cache between its uses.
    chunk_tokens = 4096

    def __init__(self, channels: int, heads: int = 4, head_channels: int = HEAD_CHANNELS):
        super().__init__()
        self.scale = head_channels**-0.5
        self.heads = heads
        hidden = head_channels * heads
        self.to_qkv = nn.Conv2d(channels, hidden * 3, 1, bias=False)
        self.to_out = nn.Sequential(nn.Conv2d(hidden, channels, 1), ChannelLayerNorm(channels))

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        out_conv, out_norm = self.to_out
        out = kernels.regrouped_linear_attention(
            x, self.to_qkv.weight, out_conv, self.heads, self.scale, self.chunk_tokens
        )
        return out_norm(out)


class Attention(nn.Module):
    """Multi-head attention over tokens `[B, N, C]`; self-attention, or cross-attention on `context [B, M, D]`
    (`CrossAttention`): `to_out(softmax(q·kᵀ/√d)·v)` with `q = to_q(x)`, `k = to_k(context)`, `v = to_v(context)`."""

    def __init__(self, query_dim: int, heads: int, head_dim: int, context_dim: Optional[int] = None):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.head_dim = head_dim
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim or query_dim, inner, bias=False)
        # Index 1 is the authors' Dropout(0.0); kept as an identity so the keys stay `to_out.0.*`.
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Identity())

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        context = x if context is None else context
        if context.shape[1] == 1 and kernels.no_autograd():
            return kernels.single_key_attention(self.to_v, self.to_out, context, x.shape[1])
        batch = x.shape[0]
        q, k, v = (
            projection.view(batch, -1, self.heads, self.head_dim).transpose(1, 2)
            for projection in (self.to_q(x), self.to_k(context), self.to_v(context))
        )
        # softmax(q·kᵀ/√d)·v, as the authors compute it explicitly; the fused kernel avoids the [N, N] matrix.
        out = F.scaled_dot_product_attention(q, k, v, scale=self.head_dim**-0.5)
        return self.to_out(out.transpose(1, 2).reshape(batch, -1, self.heads * self.head_dim))


class GEGLU(nn.Module):
    """`a · gelu(b)` for `[a, b] = proj(x)` (exact erf GELU)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = self.proj(x).chunk(2, dim=-1)
        return kernels.mul(F.gelu(gate), x)


class GatedFeedForward(nn.Module):
    """GEGLU to 4× width, then back (`FeedForward`: `net.0`, `net.2`; index 1 is the authors' Dropout(0.0))."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Identity(), nn.Linear(dim * mult, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TransformerBlock(nn.Module):
    """Pre-LayerNorm self-attention, cross-attention on the content embedding, and a GEGLU feed-forward
    (`BasicTransformerBlock`)."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int):
        super().__init__()
        self.attn1 = Attention(dim, heads, head_dim)
        self.ff = GatedFeedForward(dim)
        self.attn2 = Attention(dim, heads, head_dim, context_dim=context_dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context=context) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer2D(nn.Module):
    """GroupNorm(32, eps 1e-6) → 1×1 `proj_in` → one TransformerBlock over the H·W tokens → 1×1 `proj_out` + input
    (`SpatialTransformer`).

    Heads are `channels // 32`, each 32 wide. `proj_out` starts at zero (the authors' init), so a fresh block is the
    identity.
    """

    def __init__(self, channels: int, context_dim: int, head_channels: int = HEAD_CHANNELS):
        super().__init__()
        heads = channels // head_channels
        inner = heads * head_channels
        self.norm = nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)
        self.proj_in = nn.Conv2d(channels, inner, kernel_size=1)
        self.transformer_blocks = nn.ModuleList([TransformerBlock(inner, heads, head_channels, context_dim)])
        self.proj_out = nn.Conv2d(inner, channels, kernel_size=1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        _, _, height, width = x.shape
        h, channels_last = kernels.tokens_of(self.proj_in(self.norm(x)))  # b c h w -> b (h w) c
        for block in self.transformer_blocks:
            h = block(h, context=context)
        h = kernels.map_of(h, height, width, channels_last)  # b (h w) c -> b c h w
        return kernels.add(self.proj_out(h), x)


# ------------------------------------------------------------------------------------------------------------------
# The model
# ------------------------------------------------------------------------------------------------------------------


class DACLIPUNet2DModel(OwnedWeightsMixin, QuietDtypeCastMixin, ModelMixin, ConfigMixin):
    r"""
    The authors' `ConditionalUNet` (DA-CLIP universal image restoration), predicting the noise of an IR-SDE.

    Forward: `x = concat(sample − condition, condition)`, reflect-padded at the right/bottom to a multiple of
    `2**len(channel_mult)`; a 7×7 `init_conv`; `len(channel_mult)` down levels (two ResBlocks, an attention, a
    downsampler), a middle (ResBlock, SpatialTransformer, ResBlock), the mirrored up levels with skip connections,
    `final_res_block` on `concat(x, init_conv output)` and a 3×3 `final_conv`; the result is cropped back to the
    input size. ResBlocks are modulated by the time embedding, to which the degradation prompt is added.

    Parameters:
        in_channels (`int`, defaults to 3): channels of the image; the network's first conv sees twice as many.
        out_channels (`int`, defaults to 3): channels of the predicted noise.
        base_channels (`int`, defaults to 64): width of the first level (the authors' `nf`); at least 32. The time
            embedding is `4 * base_channels` wide.
        channel_mult (`Tuple[int]`, defaults to `(1, 2, 4, 8)`): level `i` goes from `base_channels * [1,
            *channel_mult][i]` to `base_channels * channel_mult[i]` channels (the authors' `ch_mult`).
        context_dim (`int`, defaults to 512): width of DA-CLIP's embeddings (512 for ViT-B/32, 768 for ViT-L/14).
        use_degradation_context (`bool`, defaults to `True`): learn a prompt steered by the degradation embedding
            (`prompt`, `text_mlp`, `prompt_mlp`). Off for wild-ir.
        use_image_context (`bool`, defaults to `True`): SpatialTransformers with cross-attention on the content
            embedding at levels `>= first_cross_attention_level` and in the middle; otherwise every attention is
            linear attention and no content embedding is needed.
        downscale_stage (`bool`, defaults to `False`): wild-ir's extra stage, which halves the resolution right
            after `init_conv` (`downsample`) and doubles it again before `final_res_block` (`upsample`).
        first_cross_attention_level (`int`, defaults to 3): levels below it use linear attention. The authors'
            universal-ir code hard-codes 3, their wild-ir code uses `len(channel_mult) - 1`; both are 3 for the
            released four-level networks.

    Released configurations: universal-ir and universal-ir-mix are the defaults; wild-ir is
    `context_dim=768, use_degradation_context=False, downscale_stage=True`.

    Speed: the attribute `channels_last` (not part of the config) chooses the memory format of the feature maps
    inside `forward`. `None` (default) means channels-last on CPU, where oneDNN runs these convolutions about 1.5×
    faster in NHWC than in NCHW (`benchmarks/RESULTS.md`), and the default format elsewhere; `True`/`False` force
    it. Inputs and outputs keep the usual NCHW layout either way, and the two formats agree to float round-off
    (tested at 1e-5). Under `torch.no_grad()` / `torch.inference_mode()` large intermediates are updated in place.
    All of this speed work lives in `unet_kernels.py`; the modules here read as the authors' code.
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        base_channels: int = 64,
        channel_mult: Sequence[int] = (1, 2, 4, 8),
        context_dim: int = 512,
        use_degradation_context: bool = True,
        use_image_context: bool = True,
        downscale_stage: bool = False,
        first_cross_attention_level: int = 3,
    ):
        super().__init__()
        channel_mult = tuple(int(m) for m in channel_mult)
        depth = len(channel_mult)
        if depth < 1:
            raise ValueError("channel_mult needs at least one level.")
        # The authors' constructor divides by `channels // 32` at every level.
        if base_channels < HEAD_CHANNELS:
            raise ValueError(f"base_channels must be at least {HEAD_CHANNELS}, got {base_channels}.")
        if (use_degradation_context or use_image_context) and context_dim <= 0:
            raise ValueError(f"context_dim must be positive when a context is used, got {context_dim}.")
        widths = [base_channels * m for m in (1, *channel_mult)]
        cross_attention_widths = [widths[i] for i in range(depth) if i >= first_cross_attention_level]
        cross_attention_widths += [widths[i + 1] for i in range(depth) if i >= first_cross_attention_level]
        cross_attention_widths += [widths[-1]]
        if use_image_context and any(width % 32 for width in cross_attention_widths):
            raise ValueError(
                f"with use_image_context, every SpatialTransformer width must be a multiple of 32 (GroupNorm(32)); "
                f"got {sorted(set(cross_attention_widths))}."
            )

        self.depth = depth
        time_embed_dim = base_channels * 4

        self.init_conv = conv_same(in_channels * 2, base_channels, 7)
        if downscale_stage:
            self.downsample = downsample_conv(base_channels, base_channels)
            self.upsample = upsample_conv(base_channels, base_channels)

        self.time_mlp = nn.Sequential(
            SinusoidalTimestepEmbedding(base_channels),
            nn.Linear(base_channels, time_embed_dim),
            nn.GELU(),
            nn.Linear(time_embed_dim, time_embed_dim),
        )

        if use_degradation_context:
            self.prompt = nn.Parameter(torch.rand(1, time_embed_dim))
            self.text_mlp = nn.Sequential(
                nn.Linear(context_dim, time_embed_dim), nn.SiLU(), nn.Linear(time_embed_dim, time_embed_dim)
            )
            self.prompt_mlp = nn.Linear(time_embed_dim, time_embed_dim)

        def attention(channels: int, level: Optional[int]) -> ResidualAttention:
            cross = use_image_context and (level is None or level >= first_cross_attention_level)
            layer = SpatialTransformer2D(channels, context_dim) if cross else LinearAttention2D(channels)
            return ResidualAttention(ChannelPreNorm(channels, layer))

        self.downs = nn.ModuleList()
        self.ups = nn.ModuleList()
        for level in range(depth):
            dim_in, dim_out = widths[level], widths[level + 1]
            is_last = level == depth - 1
            self.downs.append(
                nn.ModuleList(
                    [
                        TimestepResBlock(dim_in, dim_in, time_embed_dim),
                        TimestepResBlock(dim_in, dim_in, time_embed_dim),
                        attention(dim_in, level),
                        # The deepest level changes width without changing resolution.
                        conv_same(dim_in, dim_out) if is_last else downsample_conv(dim_in, dim_out),
                    ]
                )
            )
            # ups[0] is the deepest level.
            self.ups.insert(
                0,
                nn.ModuleList(
                    [
                        TimestepResBlock(dim_out + dim_in, dim_out, time_embed_dim),
                        TimestepResBlock(dim_out + dim_in, dim_out, time_embed_dim),
                        attention(dim_out, level),
                        conv_same(dim_out, dim_in) if level == 0 else upsample_conv(dim_out, dim_in),
                    ]
                ),
            )

        mid_dim = widths[-1]
        self.mid_block1 = TimestepResBlock(mid_dim, mid_dim, time_embed_dim)
        self.mid_attn = attention(mid_dim, None)
        self.mid_block2 = TimestepResBlock(mid_dim, mid_dim, time_embed_dim)

        self.final_res_block = TimestepResBlock(base_channels * 2, base_channels, time_embed_dim)
        self.final_conv = nn.Conv2d(base_channels, out_channels, 3, 1, 1)

        self.gradient_checkpointing = False
        self.channels_last: Optional[bool] = None

    # --------------------------------------------------------------------------------------------------------------

    @property
    def size_multiple(self) -> int:
        """Inputs are reflect-padded at the right/bottom to a multiple of this (`2**len(channel_mult)`)."""
        return 2**self.depth

    @property
    def min_sample_size(self) -> int:
        """The smallest height/width the model accepts.

        A reflect pad must be shorter than the side it reflects. A side `n` is padded by `(-n) % m` (with `m` =
        `size_multiple`), which is below `n` exactly when `n > m / 2`.
        """
        return self.size_multiple // 2 + 1

    def check_sample_size(self, height: int, width: int) -> None:
        """Raise a `ValueError` for an image too small for the model's reflect padding (the authors' code crashes)."""
        multiple = self.size_multiple
        for side in (height, width):
            pad = (-side) % multiple
            if pad >= side:
                raise ValueError(
                    f"image of {height}x{width} is too small for this model: it is reflect-padded to a multiple of "
                    f"{multiple}, which needs at least {self.min_sample_size} pixels on each side."
                )

    def _timestep_tensor(self, timestep, batch_size: int, device: torch.device) -> torch.Tensor:
        # The authors turn a Python number into a float32 tensor [1], broadcast over the batch.
        if isinstance(timestep, torch.Tensor):
            timesteps = timestep.to(device=device, dtype=torch.float32)
            if timesteps.ndim == 0:
                timesteps = timesteps[None]
        elif isinstance(timestep, Real):
            timesteps = torch.tensor([float(timestep)], dtype=torch.float32, device=device)
        else:
            raise TypeError(f"timestep must be a number or a tensor, got {type(timestep).__name__}.")
        if timesteps.ndim != 1 or timesteps.shape[0] not in (1, batch_size):
            raise ValueError(
                f"timestep must be a number, a 0-d tensor, or a tensor of shape [1] or [{batch_size}]; "
                f"got shape {tuple(timesteps.shape)}."
            )
        return timesteps

    def _embedding(self, embeds: torch.Tensor, name: str, batch_size: int, dtype: torch.dtype) -> torch.Tensor:
        context_dim = self.config.context_dim
        if embeds.ndim != 2 or embeds.shape[-1] != context_dim or embeds.shape[0] not in (1, batch_size):
            raise ValueError(
                f"{name} must have shape [{batch_size}, {context_dim}] (or [1, {context_dim}]); "
                f"got {tuple(embeds.shape)}."
            )
        return embeds.to(dtype)

    def set_channel_norm_eps(self, eps: Optional[float] = 1e-5) -> None:
        """Use `eps` in the channel LayerNorms in every dtype; `None` restores the authors' rule.

        The authors' LayerNorm takes eps 1e-5 in float32 but 1e-3 in any other dtype, so a bfloat16/float16 run of
        the released (float32-trained) weights normalises differently from the float32 run they were trained in.
        `set_channel_norm_eps(1e-5)` keeps the float32 value, which brings a bfloat16 UNet about ten times closer
        to float32 (`benchmarks/RESULTS.md`); the default reproduces the authors' code.
        """
        for module in self.modules():
            if isinstance(module, ChannelLayerNorm):
                module.eps = eps

    def _checkpointed(self, module: nn.Module, *args):
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return self._gradient_checkpointing_func(module, *args)
        return module(*args)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: Union[torch.Tensor, float, int],
        condition: torch.Tensor,
        degradation_embeds: Optional[torch.Tensor] = None,
        content_embeds: Optional[torch.Tensor] = None,
        return_dict: bool = True,
    ) -> Union[DACLIPUNet2DOutput, Tuple[torch.Tensor]]:
        r"""
        Args:
            sample (`torch.Tensor` `[B, in_channels, H, W]`): the IR-SDE state `x_t`, images in the 0..1 range.
            timestep (`float`, `int` or `torch.Tensor`): the time `t` (the authors' `t · T / N`): a number or 0-d
                tensor (shared by the batch), or a `[B]` / `[1]` tensor. Always embedded in float32.
            condition (`torch.Tensor` `[B, in_channels, H, W]`): μ, the degraded image.
            degradation_embeds (`torch.Tensor` `[B, context_dim]`, *optional*): DA-CLIP's degradation embedding
                (unnormalised). Without it the prompt is skipped, as in the authors' code. Ignored when
                `use_degradation_context` is off (wild-ir).
            content_embeds (`torch.Tensor` `[B, context_dim]`, *optional*): DA-CLIP's content embedding
                (unnormalised). **Required** when `use_image_context` is on: a `ValueError` is raised without it
                (the authors' code crashes there with a shape error).
            return_dict (`bool`, defaults to `True`): return a [`DACLIPUNet2DOutput`] rather than a tuple.

        Returns:
            [`DACLIPUNet2DOutput`] or `(sample,)`: the predicted noise, `[B, out_channels, H, W]`.

        Raises:
            `ValueError`: an image smaller than `min_sample_size` on a side, a missing `content_embeds`, or
            embeddings / timesteps of the wrong shape.
        """
        batch_size, _, height, width = sample.shape
        self.check_sample_size(height, width)
        if self.config.use_image_context and content_embeds is None:
            raise ValueError(
                "content_embeds is required: this model cross-attends to DA-CLIP's content embedding "
                "(`content_embeds, degradation_embeds = daclip.encode_image(pixel_values)`)."
            )
        dtype = self.init_conv.weight.dtype
        timesteps = self._timestep_tensor(timestep, batch_size, sample.device)

        x = torch.cat([sample - condition, condition], dim=1)
        multiple = self.size_multiple
        x = F.pad(x, (0, (-width) % multiple, 0, (-height) % multiple), mode="reflect")
        x = kernels.to_model_format(x, self.channels_last)  # later maps inherit it; values unchanged
        x = self.init_conv(x)
        long_skip = x
        if self.config.downscale_stage:
            x = self.downsample(x)

        time_proj, time_linear_1, time_act, time_linear_2 = self.time_mlp
        time_embedding = time_linear_2(time_act(time_linear_1(time_proj(timesteps).to(dtype))))
        if self.config.use_degradation_context and degradation_embeds is not None:
            degradation_embeds = self._embedding(degradation_embeds, "degradation_embeds", batch_size, dtype)
            prompt_weights = torch.softmax(self.text_mlp(degradation_embeds), dim=1)
            time_embedding = time_embedding + self.prompt_mlp(prompt_weights * self.prompt)

        context = None
        if self.config.use_image_context:
            # One key/value token per image.
            context = self._embedding(content_embeds, "content_embeds", batch_size, dtype)[:, None, :]
            if context.shape[0] != batch_size:
                context = context.expand(batch_size, -1, -1)

        skips = []
        for block1, block2, attention, downsample in self.downs:
            x = self._checkpointed(block1, x, time_embedding)
            skips.append(x)
            x = self._checkpointed(block2, x, time_embedding)
            x = self._checkpointed(attention, x, context)
            skips.append(x)
            x = downsample(x)

        x = self._checkpointed(self.mid_block1, x, time_embedding)
        x = self._checkpointed(self.mid_attn, x, context)
        x = self._checkpointed(self.mid_block2, x, time_embedding)

        for block1, block2, attention, upsample in self.ups:
            x = self._checkpointed(block1, torch.cat([x, skips.pop()], dim=1), time_embedding)
            x = self._checkpointed(block2, torch.cat([x, skips.pop()], dim=1), time_embedding)
            x = self._checkpointed(attention, x, context)
            x = upsample(x)

        if self.config.downscale_stage:
            x = self.upsample(x)
        x = self._checkpointed(self.final_res_block, torch.cat([x, long_skip], dim=1), time_embedding)
        x = self.final_conv(x)
        x = x[..., :height, :width].contiguous()

        if not return_dict:
            return (x,)
        return DACLIPUNet2DOutput(sample=x)

    # --------------------------------------------------------------------------------------------------------------

    @classmethod
    def from_original_checkpoint(
        cls, checkpoint_path: Union[str, os.PathLike], dtype: Optional[torch.dtype] = None
    ) -> "DACLIPUNet2DModel":
        """Load the authors' `universal-ir.pth`, `universal-ir-mix.pth` or `wild-ir.pth` unchanged.

        The architecture is read from the tensor shapes, so no config is needed. The file is read with
        `weights_only=True` (or is a single safetensors file with the same keys); `module.` prefixes are stripped.
        Weights load as float32, then `dtype` casts them (`convert_original.load_original_checkpoint`, the same
        steps as `DACLIPModel`'s). Raises `CheckpointError` for a file that is not a restoration UNet (e.g. a
        DA-CLIP `*.pt`), or whose keys or shapes do not match the inferred architecture.
        """
        from .convert_original import load_original_checkpoint

        return load_original_checkpoint(cls, checkpoint_path, dtype=dtype)


def check_components_match(daclip, unet: DACLIPUNet2DModel, daclip_name: str = "DA-CLIP", unet_name: str = "UNet") -> None:
    """Refuse a DA-CLIP/UNet pair whose embedding sizes differ, before any sampling starts.

    Raises:
        `ValueError`: `daclip.config.embed_dim` (a `DACLIPModel`'s) is not `unet.config.context_dim`; the message
        names both by `daclip_name` / `unet_name` (e.g. their file names).
    """
    embed_dim, context_dim = daclip.config.embed_dim, unet.config.context_dim
    if embed_dim != context_dim:
        raise ValueError(
            f"{daclip_name} gives {embed_dim}-dim embeddings but {unet_name} expects {context_dim}-dim context: "
            "these files are not a pair (universal-ir goes with daclip_ViT-B-32, wild-ir with wild-daclip_ViT-L-14)."
        )
