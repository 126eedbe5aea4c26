"""The UNet's speed paths (channels-last maps, in-place inference, sub-pixel upsampling, fused channel LayerNorm,
rearranged linear attention) give the same numbers as the plain formulation and as the authors."""
import pytest
import torch
import torch.nn.functional as F

from daclip.pipelines.daclip.unet_daclip import (
    ChannelLayerNorm,
    DACLIPUNet2DModel,
    LinearAttention2D,
    NearestUpsampleConv,
    SpatialTransformer2D,
)

UNIVERSAL = "universal-ir_tiny.pth"
WILD = "wild-ir_tiny.pth"


def _channels_last(x):
    return x.contiguous(memory_format=torch.channels_last)


def _reference_case(reference, prefix):
    get = lambda name: torch.from_numpy(reference[f"{prefix}.caseA.{name}"])  # noqa: E731
    inputs = dict(
        sample=get("xt"),
        timestep=get("t"),
        condition=get("cond"),
        degradation_embeds=get("text_context"),
        content_embeds=get("image_context"),
    )
    return inputs, get("out")


@pytest.fixture(scope="module", params=[UNIVERSAL, WILD])
def model_and_case(request, weights_dir, reference):
    model = DACLIPUNet2DModel.from_original_checkpoint(weights_dir / request.param)
    prefix = "unet_tiny" if request.param == UNIVERSAL else "wild_tiny"
    return model, _reference_case(reference, prefix)


@pytest.mark.parametrize("channels_last", [None, True, False])
@pytest.mark.parametrize("mode", ["no_grad", "inference_mode", "grad"])
def test_every_path_matches_the_authors(model_and_case, channels_last, mode):
    model, (inputs, expected) = model_and_case
    model.channels_last = channels_last
    try:
        context = {"no_grad": torch.no_grad(), "inference_mode": torch.inference_mode()}.get(mode)
        if context is None:
            output = model(**inputs).sample.detach()
        else:
            with context:
                output = model(**inputs).sample
    finally:
        model.channels_last = None
    assert output.is_contiguous(), "the output is a plain NCHW tensor whatever the internal format"
    torch.testing.assert_close(output, expected, atol=1e-5, rtol=0)


@torch.no_grad()
def test_channels_last_equals_default_format(model_and_case):
    model, (inputs, _) = model_and_case
    model.channels_last = True
    fast = model(**inputs).sample
    model.channels_last = False
    plain = model(**inputs).sample
    model.channels_last = None
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=0)


@torch.no_grad()
def test_channels_last_inputs_are_accepted(model_and_case):
    model, (inputs, expected) = model_and_case
    inputs = dict(inputs, sample=_channels_last(inputs["sample"]), condition=_channels_last(inputs["condition"]))
    torch.testing.assert_close(model(**inputs).sample, expected, atol=1e-5, rtol=0)


@torch.no_grad()
def test_inference_never_writes_into_the_inputs(model_and_case):
    model, (inputs, _) = model_and_case
    before = {key: value.clone() if isinstance(value, torch.Tensor) else value for key, value in inputs.items()}
    model(**inputs)
    for key, value in inputs.items():
        assert torch.equal(value, before[key]), key


def test_channels_last_gives_the_same_gradients(weights_dir):
    """Training on CPU runs channels-last by default; its gradients are those of the plain format."""
    generator = torch.Generator().manual_seed(0)
    inputs = dict(
        sample=torch.rand(2, 3, 20, 24, generator=generator),
        timestep=torch.tensor([3.0, 70.0]),
        condition=torch.rand(2, 3, 20, 24, generator=generator),
        degradation_embeds=torch.randn(2, 32, generator=generator),
        content_embeds=torch.randn(2, 32, generator=generator),
    )

    def gradients(channels_last):
        model = DACLIPUNet2DModel.from_original_checkpoint(weights_dir / UNIVERSAL).train()
        model.channels_last = channels_last
        model(**inputs).sample.square().mean().backward()
        return {name: p.grad for name, p in model.named_parameters()}

    plain, fast = gradients(False), gradients(True)
    for name, grad in plain.items():
        torch.testing.assert_close(fast[name], grad, atol=1e-6, rtol=1e-4, msg=name)


# ---------------------------------------------------------------------------------------------------------------
# The building blocks, against their two-step / by-hand definitions
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("size", [(1, 1), (5, 7), (16, 16)])
def test_subpixel_upsample_equals_upsample_then_conv(channels_last, size):
    torch.manual_seed(0)
    layer = NearestUpsampleConv(6, 5).double()
    x = torch.randn(2, 6, *size, dtype=torch.float64)
    if channels_last:
        x = _channels_last(x)
    two_step = layer[1](F.interpolate(x, scale_factor=2.0, mode="nearest"))
    with torch.no_grad():
        out = layer(x)
    assert out.shape == (2, 5, 2 * size[0], 2 * size[1])
    assert out.is_contiguous(memory_format=torch.channels_last) == channels_last or size == (1, 1)
    torch.testing.assert_close(out, two_step.detach(), atol=1e-12, rtol=1e-12)


def test_subpixel_upsample_gradients_equal_the_two_step_ones():
    torch.manual_seed(0)
    layer = NearestUpsampleConv(4, 3).double()
    x = torch.randn(1, 4, 6, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(1, 3, 12, 10, dtype=torch.float64)
    (layer(x) * weight).sum().backward()
    fast = [x.grad.clone(), layer[1].weight.grad.clone(), layer[1].bias.grad.clone()]
    x.grad = None
    layer.zero_grad()
    (layer[1](F.interpolate(x, scale_factor=2.0, mode="nearest")) * weight).sum().backward()
    for got, want in zip(fast, [x.grad, layer[1].weight.grad, layer[1].bias.grad]):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)


def test_upsample_keys_stay_the_authors():
    assert sorted(NearestUpsampleConv(4, 3).state_dict()) == ["1.bias", "1.weight"]


@pytest.mark.parametrize("dtype, eps", [(torch.float32, 1e-5), (torch.float64, 1e-3), (torch.bfloat16, 1e-3)])
def test_channel_layernorm_is_the_same_in_both_formats(dtype, eps):
    generator = torch.Generator().manual_seed(0)
    norm = ChannelLayerNorm(8)
    with torch.no_grad():
        norm.g.copy_(torch.randn(1, 8, 1, 1, generator=generator))
    norm = norm.to(dtype)
    # small variance, so that the dtype's eps is visible
    x = (0.01 * torch.randn(2, 8, 5, 6, generator=generator, dtype=torch.float64)).to(dtype)
    mean = x.double().mean(dim=1, keepdim=True)
    var = x.double().var(dim=1, unbiased=False, keepdim=True)
    by_hand = (x.double() - mean) / torch.sqrt(var + eps) * norm.g.double()
    tolerance = dict(atol=0.05, rtol=0.02) if dtype == torch.bfloat16 else dict(atol=1e-5, rtol=1e-5)
    for layout in (x, _channels_last(x)):
        out = norm(layout)
        assert out.dtype == dtype
        torch.testing.assert_close(out.double(), by_hand, **tolerance)


@pytest.mark.parametrize("size", [(4, 4), (3, 7)])
def test_linear_attention_is_the_same_in_both_formats(size):
    torch.manual_seed(0)
    layer = LinearAttention2D(32).double()
    x = torch.randn(2, 32, *size, dtype=torch.float64)

    def authors(x):
        # module_util.LinearAttention, verbatim in torch ops
        b, _, h, w = x.shape
        q, k, v = (t.reshape(b, 4, 32, h * w) for t in layer.to_qkv(x).chunk(3, dim=1))
        q = q.softmax(dim=-2) * layer.scale
        k = k.softmax(dim=-1)
        v = v / (h * w)
        context = torch.einsum("bhdn,bhen->bhde", k, v)
        out = torch.einsum("bhde,bhdn->bhen", context, q).reshape(b, -1, h, w)
        return layer.to_out(out)

    with torch.no_grad():
        expected = authors(x)
        for layout in (x, _channels_last(x)):
            torch.testing.assert_close(layer(layout), expected, atol=1e-12, rtol=1e-12)


def test_spatial_transformer_is_the_same_in_both_formats():
    torch.manual_seed(0)
    layer = SpatialTransformer2D(64, context_dim=16).double()
    torch.nn.init.normal_(layer.proj_out.weight, std=0.1)  # proj_out starts at zero
    x = torch.randn(2, 64, 5, 6, dtype=torch.float64)
    context = torch.randn(2, 1, 16, dtype=torch.float64)
    with torch.no_grad():
        plain = layer(x, context=context)
        fast = layer(_channels_last(x), context=context)
    assert fast.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast, plain, atol=1e-12, rtol=1e-12)
    with_grad = layer(x, context=context)  # the full cross-attention, out of place
    torch.testing.assert_close(with_grad.detach(), plain, atol=1e-12, rtol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# The explicit eps option for reduced precision
# ---------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def test_float32_norm_eps_brings_bfloat16_closer_to_float32(weights_dir, reference):
    inputs, expected = _reference_case(reference, "unet_tiny")
    model = DACLIPUNet2DModel.from_original_checkpoint(weights_dir / UNIVERSAL)
    model.set_channel_norm_eps(1e-5)
    torch.testing.assert_close(model(**inputs).sample, expected, atol=1e-5, rtol=0)  # float32: the same eps

    half = DACLIPUNet2DModel.from_original_checkpoint(weights_dir / UNIVERSAL, dtype=torch.bfloat16)
    low = {key: value.to(torch.bfloat16) if key != "timestep" else value for key, value in inputs.items()}
    authors_rule = (half(**low).sample.float() - expected).abs().mean()
    half.set_channel_norm_eps(1e-5)
    float32_eps = (half(**low).sample.float() - expected).abs().mean()
    half.set_channel_norm_eps(None)
    assert (half(**low).sample.float() - expected).abs().mean() == authors_rule
    assert float32_eps < authors_rule / 2, (float32_eps, authors_rule)
