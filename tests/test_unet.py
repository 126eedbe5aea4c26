"""DACLIPUNet2DModel against the authors' ConditionalUNet outputs on the tiny fixtures, and its edges."""
import json

import pytest
import torch
import torch.nn.functional as F

from daclip.pipelines.daclip.convert_original import convert_unet_state_dict, infer_unet_config
from daclip.pipelines.daclip.unet_daclip import ChannelLayerNorm, DACLIPUNet2DModel, DACLIPUNet2DOutput
from daclip.utils import CheckpointError

UNIVERSAL = "universal-ir_tiny.pth"
UNIVERSAL_DDP = "universal-ir_tiny.module.pth"
WILD = "wild-ir_tiny.pth"


@pytest.fixture(scope="module")
def manifest(parity_dir):
    return json.loads((parity_dir / "reference_manifest.json").read_text())


@pytest.fixture(scope="module")
def universal(weights_dir):
    return DACLIPUNet2DModel.from_original_checkpoint(weights_dir / UNIVERSAL)


@pytest.fixture(scope="module")
def wild(weights_dir):
    return DACLIPUNet2DModel.from_original_checkpoint(weights_dir / WILD)


def case_inputs(reference, prefix, case):
    """The reference inputs; caseB's time goes in as a Python float, as the authors' samplers pass it."""
    get = lambda name: torch.from_numpy(reference[f"{prefix}.case{case}.{name}"])  # noqa: E731
    timestep = get("t") if case == "A" else float(reference[f"{prefix}.case{case}.t"])
    if case == "B":
        assert isinstance(timestep, float) and timestep == 50.0
    return dict(
        sample=get("xt"),
        timestep=timestep,
        condition=get("cond"),
        degradation_embeds=get("text_context"),
        content_embeds=get("image_context"),
    ), get("out")


def small_inputs(height=16, width=16, batch=1, context_dim=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return dict(
        sample=torch.rand(batch, 3, height, width, generator=generator),
        timestep=37.0,
        condition=torch.rand(batch, 3, height, width, generator=generator),
        degradation_embeds=torch.randn(batch, context_dim, generator=generator),
        content_embeds=torch.randn(batch, context_dim, generator=generator),
    )


# ---------------------------------------------------------------------------------------------------------------
# Parity with the authors
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["A", "B"])
@pytest.mark.parametrize(
    "filename, prefix", [(UNIVERSAL, "unet_tiny"), (UNIVERSAL_DDP, "unet_tiny"), (WILD, "wild_tiny")]
)
def test_matches_authors_forward(weights_dir, reference, filename, prefix, case):
    model = DACLIPUNet2DModel.from_original_checkpoint(weights_dir / filename)
    inputs, expected = case_inputs(reference, prefix, case)
    with torch.no_grad():
        output = model(**inputs)
    assert isinstance(output, DACLIPUNet2DOutput)
    assert output.sample.shape == expected.shape
    torch.testing.assert_close(output.sample, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("prefix", ["unet_tiny", "wild_tiny"])
def test_matches_authors_forward_with_autograd(universal, wild, reference, prefix):
    """With autograd on, the single-token cross-attention runs in full (no shortcut); still the authors' numbers."""
    model = universal if prefix == "unet_tiny" else wild
    inputs, expected = case_inputs(reference, prefix, "A")
    output = model(**inputs).sample
    assert output.requires_grad
    torch.testing.assert_close(output.detach(), expected, atol=1e-5, rtol=0)


def test_inferred_configs(universal, wild):
    common = dict(in_channels=3, out_channels=3, base_channels=32, channel_mult=(1, 1, 1, 2), context_dim=32)
    common["use_image_context"] = True
    common["first_cross_attention_level"] = 3
    for key, value in common.items():
        assert tuple(universal.config[key]) == value if key == "channel_mult" else universal.config[key] == value
        assert tuple(wild.config[key]) == value if key == "channel_mult" else wild.config[key] == value
    assert universal.config.use_degradation_context and not universal.config.downscale_stage
    assert not wild.config.use_degradation_context and wild.config.downscale_stage
    assert not hasattr(wild, "prompt") and hasattr(universal, "prompt")


def test_parameter_counts(universal, wild, manifest):
    assert sum(p.numel() for p in universal.parameters()) == manifest["unet_tiny.num_params"] == 1368483
    assert sum(p.numel() for p in wild.parameters()) == manifest["wild_tiny.num_params"] == 1356771


def test_released_architectures_have_the_released_sizes():
    """Sizes from the parity README: universal-ir 48,975,747 params in 224 keys, wild-ir 49,470,467 in 221."""
    universal_ir = DACLIPUNet2DModel()
    wild_ir = DACLIPUNet2DModel(context_dim=768, use_degradation_context=False, downscale_stage=True)
    for model, params, keys in ((universal_ir, 48_975_747, 224), (wild_ir, 49_470_467, 221)):
        state_dict = model.state_dict()
        assert sum(p.numel() for p in model.parameters()) == params
        assert len(state_dict) == keys
        inferred = infer_unet_config(state_dict)
        assert inferred == {key: model.config[key] for key in inferred} | {"channel_mult": (1, 2, 4, 8)}
    # The authors' key order: own parameter first.
    assert next(iter(universal_ir.state_dict())) == "prompt"


@pytest.mark.parametrize(
    "config",
    [
        dict(base_channels=32, channel_mult=(1, 2), context_dim=16),  # only the middle cross-attends
        dict(base_channels=32, channel_mult=(2, 1, 2), context_dim=8, first_cross_attention_level=1),
        dict(base_channels=32, channel_mult=(1, 1, 1, 1, 2), context_dim=8, use_degradation_context=False),
        dict(base_channels=32, channel_mult=(1, 2), context_dim=8, downscale_stage=True, in_channels=1, out_channels=2),
        dict(base_channels=32, channel_mult=(1, 2), context_dim=8, use_image_context=False),
    ],
)
def test_inferred_config_rebuilds_the_same_architecture(config):
    model = DACLIPUNet2DModel(**config)
    rebuilt = DACLIPUNet2DModel(**infer_unet_config(model.state_dict()))
    shapes = lambda m: {key: tuple(value.shape) for key, value in m.state_dict().items()}  # noqa: E731
    assert shapes(rebuilt) == shapes(model)
    with torch.no_grad():
        rebuilt.load_state_dict(model.state_dict())
        inputs = small_inputs(17, 23, batch=2, context_dim=config["context_dim"])
        inputs["sample"] = inputs["sample"][:, : config.get("in_channels", 3)]
        inputs["condition"] = inputs["condition"][:, : config.get("in_channels", 3)]
        output = rebuilt.eval()(**inputs).sample
        assert output.shape == (2, config.get("out_channels", 3), 17, 23)
        assert torch.equal(output, model.eval()(**inputs).sample)


# ---------------------------------------------------------------------------------------------------------------
# Conditioning
# ---------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def test_degradation_context_changes_output(universal):
    inputs = small_inputs()
    with_prompt = universal(**inputs).sample
    without_prompt = universal(**{**inputs, "degradation_embeds": None}).sample
    other_prompt = universal(**{**inputs, "degradation_embeds": -inputs["degradation_embeds"]}).sample
    assert (with_prompt - without_prompt).abs().max() > 1e-4
    # The tiny prompt path is weak; the computation is deterministic, so any change above round-off counts.
    assert (with_prompt - other_prompt).abs().max() > 1e-6


@torch.no_grad()
def test_wild_ignores_degradation_context(wild):
    inputs = small_inputs(32, 32)
    assert torch.equal(wild(**inputs).sample, wild(**{**inputs, "degradation_embeds": None}).sample)


@torch.no_grad()
@pytest.mark.parametrize("variant", ["universal", "wild"])
def test_image_context_changes_output(universal, wild, variant):
    model = universal if variant == "universal" else wild
    inputs = small_inputs(32, 32)
    other = model(**{**inputs, "content_embeds": -inputs["content_embeds"]}).sample
    # Deterministic computation: a change above round-off means the content embedding is used.
    assert (model(**inputs).sample - other).abs().max() > 1e-6


@pytest.mark.parametrize("variant", ["universal", "wild"])
def test_missing_content_embeds_is_a_clear_error(universal, wild, variant):
    model = universal if variant == "universal" else wild
    with pytest.raises(ValueError, match="content_embeds is required"):
        model(**{**small_inputs(), "content_embeds": None})


def test_model_without_image_context_needs_no_content_embeds():
    torch.manual_seed(0)
    model = DACLIPUNet2DModel(base_channels=32, channel_mult=(1, 2), context_dim=16, use_image_context=False).eval()
    assert not any(".transformer_blocks." in key for key in model.state_dict())
    inputs = small_inputs(context_dim=16)
    with torch.no_grad():
        output = model(**{**inputs, "content_embeds": None}).sample
    assert output.shape == (1, 3, 16, 16)
    assert infer_unet_config(model.state_dict())["use_image_context"] is False


def test_wrong_embedding_shape_is_a_clear_error(universal):
    with pytest.raises(ValueError, match=r"content_embeds must have shape \[1, 32\]"):
        universal(**{**small_inputs(), "content_embeds": torch.randn(1, 64)})
    with pytest.raises(ValueError, match="degradation_embeds must have shape"):
        universal(**{**small_inputs(), "degradation_embeds": torch.randn(32)})


# ---------------------------------------------------------------------------------------------------------------
# Timesteps, sizes, outputs
# ---------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def test_timestep_forms_agree(universal):
    inputs = small_inputs(batch=2)
    by_float = universal(**{**inputs, "timestep": 37.0}).sample
    for timestep in (37, torch.tensor(37.0), torch.tensor([37.0]), torch.tensor([37, 37]), torch.tensor(37.0, dtype=torch.float64)):
        torch.testing.assert_close(universal(**{**inputs, "timestep": timestep}).sample, by_float, atol=1e-6, rtol=0)
    # A [B] tensor gives each image its own time.
    mixed = universal(**{**inputs, "timestep": torch.tensor([37.0, 90.0])}).sample
    torch.testing.assert_close(mixed[0], by_float[0], atol=1e-6, rtol=0)
    assert (mixed[1] - by_float[1]).abs().max() > 1e-4
    with pytest.raises(ValueError, match="timestep must be"):
        universal(**{**inputs, "timestep": torch.tensor([1.0, 2.0, 3.0])})


@pytest.mark.parametrize("multiple", [16])
def test_size_check_accepts_exactly_what_reflect_padding_accepts(universal, wild, multiple):
    assert universal.size_multiple == wild.size_multiple == multiple
    assert universal.min_sample_size == multiple // 2 + 1
    probe = torch.zeros(1, 1, 1, 1)
    for side in range(1, 3 * multiple + 1):
        pad = (-side) % multiple
        try:
            F.pad(probe.expand(1, 1, side, side), (0, pad, 0, pad), mode="reflect")
            authors_accept = True
        except RuntimeError:
            authors_accept = False
        try:
            universal.check_sample_size(side, 40)
            universal.check_sample_size(40, side)
            we_accept = True
        except ValueError:
            we_accept = False
        assert we_accept == authors_accept, side


@pytest.mark.parametrize("variant", ["universal", "wild"])
def test_too_small_images_raise_and_smallest_sizes_work(universal, wild, variant):
    model = universal if variant == "universal" else wild
    smallest = model.min_sample_size
    assert smallest == 9
    for height, width in ((smallest - 1, 40), (40, smallest - 1), (1, 1)):
        with pytest.raises(ValueError, match=rf"image of {height}x{width} is too small for this model.*at least 9"):
            model(**small_inputs(height, width))
    # Batch 2: the tiny wild net's 32-channel GroupNorm(32) sees a 1x1 map at its deepest level for inputs of
    # 16 or less, and torch (for the authors' code just the same) refuses a single value per group (batch 1).
    with torch.no_grad():
        for height, width in ((smallest, smallest), (smallest, 16), (16, smallest), (16, 16)):
            output = model(**small_inputs(height, width, batch=2)).sample
            assert output.shape == (2, 3, height, width)
            assert torch.isfinite(output).all()


@torch.no_grad()
@pytest.mark.parametrize("variant", ["universal", "wild"])
def test_odd_sizes_crop_back(universal, wild, variant):
    model = universal if variant == "universal" else wild
    output = model(**small_inputs(37, 53, batch=2)).sample
    assert output.shape == (2, 3, 37, 53)
    assert output.is_contiguous()


@torch.no_grad()
def test_return_dict_false_gives_a_tuple(universal):
    inputs = small_inputs()
    as_tuple = universal(**inputs, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 1
    assert torch.equal(as_tuple[0], universal(**inputs).sample)


# ---------------------------------------------------------------------------------------------------------------
# Precision
# ---------------------------------------------------------------------------------------------------------------


def test_channel_layernorm_eps_depends_on_dtype():
    """The authors' quirk: eps 1e-5 in float32, 1e-3 in every other dtype (float64 included)."""
    assert ChannelLayerNorm.eps_for(torch.float32) == 1e-5
    for dtype in (torch.float64, torch.bfloat16, torch.float16):
        assert ChannelLayerNorm.eps_for(dtype) == 1e-3
    norm = ChannelLayerNorm(4)
    with torch.no_grad():
        norm.g.copy_(torch.tensor([1.0, 2.0, 0.5, -1.0]).view(1, 4, 1, 1))
    # A small variance (~1e-4) makes the eps visible.
    x = 0.01 * torch.randn(2, 4, 3, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def by_hand(values, eps):
        mean = values.mean(dim=1, keepdim=True)
        var = values.var(dim=1, unbiased=False, keepdim=True)
        return (values - mean) / torch.sqrt(var + eps) * norm.g.to(values.dtype)

    torch.testing.assert_close(norm(x.float()), by_hand(x, 1e-5).float(), atol=1e-5, rtol=1e-5)
    norm64 = ChannelLayerNorm(4).double()
    with torch.no_grad():
        norm64.g.copy_(norm.g)
    torch.testing.assert_close(norm64(x), by_hand(x, 1e-3), atol=1e-12, rtol=1e-12)
    assert (by_hand(x, 1e-3) - by_hand(x, 1e-5)).abs().max() > 0.5
    normbf16 = ChannelLayerNorm(4).to(torch.bfloat16)
    with torch.no_grad():
        normbf16.g.copy_(norm.g)
    out_bf16 = normbf16(x.to(torch.bfloat16))
    assert out_bf16.dtype == torch.bfloat16
    torch.testing.assert_close(out_bf16.double(), by_hand(x, 1e-3), atol=0.05, rtol=0.02)


def _reference_in(dtype, reference):
    inputs, expected = case_inputs(reference, "unet_tiny", "A")
    inputs = {key: value.to(dtype) if key != "timestep" else value for key, value in inputs.items()}
    return inputs, expected


@torch.no_grad()
def test_float64_uses_the_1e3_layernorm_eps(weights_dir, reference, monkeypatch):
    model = DACLIPUNet2DModel.from_original_checkpoint(weights_dir / UNIVERSAL, dtype=torch.float64)
    assert model.dtype == torch.float64
    inputs, expected = _reference_in(torch.float64, reference)
    output = model(**inputs).sample
    assert output.dtype == torch.float64 and output.shape == expected.shape
    # The authors' eps quirk moves a float64 run visibly away from the float32 one ...
    assert (output.float() - expected).abs().max() > 1e-2
    # ... and it is the only thing that does: with eps 1e-5 everywhere, float64 matches float32 to round-off.
    monkeypatch.setattr(ChannelLayerNorm, "eps_for", staticmethod(lambda dtype: 1e-5))
    torch.testing.assert_close(model(**inputs).sample.float(), expected, atol=1e-5, rtol=0)


@torch.no_grad()
def test_bfloat16_runs(weights_dir, reference):
    model = DACLIPUNet2DModel.from_original_checkpoint(weights_dir / UNIVERSAL, dtype=torch.bfloat16)
    inputs, expected = _reference_in(torch.bfloat16, reference)
    output = model(**inputs).sample
    assert output.dtype == torch.bfloat16 and output.shape == expected.shape
    assert torch.isfinite(output).all()
    assert (output.float() - expected).abs().max() < 0.1


# ---------------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------------


@torch.no_grad()
@pytest.mark.parametrize("variant", ["universal", "wild"])
def test_save_pretrained_round_trip(universal, wild, variant, tmp_path):
    model = universal if variant == "universal" else wild
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = DACLIPUNet2DModel.from_pretrained(tmp_path).eval()
    for key in infer_unet_config(model.state_dict()):
        assert loaded.config[key] == model.config[key] or tuple(loaded.config[key]) == tuple(model.config[key])
    original_weights, loaded_weights = model.state_dict(), loaded.state_dict()
    assert loaded_weights.keys() == original_weights.keys()
    for key, value in original_weights.items():
        assert torch.equal(loaded_weights[key], value), key
    inputs = small_inputs(21, 50)
    # Bit-identical weights; the outputs agree to round-off only, because safetensors hands back tensors at
    # unaligned addresses and the CPU kernels then take other SIMD paths (~2e-7 differences).
    torch.testing.assert_close(loaded(**inputs).sample, model(**inputs).sample, atol=1e-6, rtol=0)


@pytest.mark.parametrize("filename", ["daclip_tiny.pt", "daclip_tiny.ddp.pt"])
def test_daclip_checkpoint_is_refused(weights_dir, filename):
    with pytest.raises(CheckpointError, match=r"looks like a DA-CLIP checkpoint \(`\*\.pt`\), not a restoration UNet"):
        DACLIPUNet2DModel.from_original_checkpoint(weights_dir / filename)


def test_bare_daclip_state_dict_is_refused(weights_dir, tmp_path):
    bare = torch.load(weights_dir / "daclip_tiny.pt", weights_only=True)["state_dict"]
    torch.save(bare, tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="DA-CLIP"):
        DACLIPUNet2DModel.from_original_checkpoint(tmp_path / "bare.pt")


@pytest.fixture()
def tiny_state_dict(weights_dir):
    return torch.load(weights_dir / UNIVERSAL, weights_only=True)


def test_missing_key_is_reported(tiny_state_dict, tmp_path):
    del tiny_state_dict["downs.1.0.block1.proj.weight"]
    torch.save(tiny_state_dict, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"1 missing keys: downs\.1\.0\.block1\.proj\.weight"):
        DACLIPUNet2DModel.from_original_checkpoint(tmp_path / "missing.pth")


def test_missing_prompt_is_reported_not_silently_dropped(tiny_state_dict, tmp_path):
    del tiny_state_dict["prompt"]
    torch.save(tiny_state_dict, tmp_path / "no_prompt.pth")
    with pytest.raises(CheckpointError, match=r"1 missing keys: prompt"):
        DACLIPUNet2DModel.from_original_checkpoint(tmp_path / "no_prompt.pth")


def test_unexpected_key_is_reported(tiny_state_dict, tmp_path):
    tiny_state_dict["mid_block3.weight"] = torch.zeros(3)
    torch.save(tiny_state_dict, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"1 unexpected keys: mid_block3\.weight"):
        DACLIPUNet2DModel.from_original_checkpoint(tmp_path / "extra.pth")


def test_shape_mismatch_is_reported(tiny_state_dict, tmp_path):
    tiny_state_dict["final_conv.bias"] = torch.zeros(4)
    torch.save(tiny_state_dict, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match=r"shapes differ: final_conv\.bias"):
        DACLIPUNet2DModel.from_original_checkpoint(tmp_path / "shape.pth")


def test_files_that_are_no_unet_are_refused(tmp_path):
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    with pytest.raises(CheckpointError, match="expected a dict of tensors"):
        DACLIPUNet2DModel.from_original_checkpoint(tmp_path / "tensor.pth")
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="missing key 'init_conv.weight'"):
        DACLIPUNet2DModel.from_original_checkpoint(tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="no such file"):
        DACLIPUNet2DModel.from_original_checkpoint(tmp_path / "absent.pth")


def test_convert_strips_module_prefix(tiny_state_dict):
    prefixed = {f"module.{key}": value for key, value in tiny_state_dict.items()}
    converted = convert_unet_state_dict(prefixed)
    assert list(converted) == list(tiny_state_dict)


# ---------------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------------


def test_gradient_checkpointing_gives_the_same_gradients(weights_dir):
    def gradients(checkpointing):
        model = DACLIPUNet2DModel.from_original_checkpoint(weights_dir / UNIVERSAL).train()
        if checkpointing:
            model.enable_gradient_checkpointing()
        model(**small_inputs()).sample.square().mean().backward()
        return {name: p.grad for name, p in model.named_parameters()}

    plain, checkpointed = gradients(False), gradients(True)
    for name, grad in plain.items():
        assert grad is not None, name  # every parameter is trained, as in the authors' code
        torch.testing.assert_close(checkpointed[name], grad, atol=1e-6, rtol=1e-5)
