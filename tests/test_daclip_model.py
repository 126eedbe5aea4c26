"""DACLIPModel against the authors' outputs (`shared/parity/reference_tiny.npz`) and their file formats."""
import json
import shutil

import numpy as np
import PIL.Image
import pytest
import torch

from daclip.pipelines.daclip import convert_original
from daclip.pipelines.daclip.modeling_daclip import (
    DEGRADATIONS,
    DACLIPModel,
    DACLIPOutput,
    DegradationPrediction,
    preprocess_images,
)
from daclip.utils import CheckpointError

ATOL = 1e-5
IMAGES = ["odd_197x301", "big_427x640", "lq_37x53"]
CLIP_IMAGES = ["odd_197x301", "big_427x640"]  # the inputs of the `clip_tiny.*` references


def assert_close(actual, expected, atol=ATOL, rtol=0.0):
    if isinstance(actual, torch.Tensor):
        actual = actual.detach().cpu().numpy()
    np.testing.assert_allclose(np.asarray(actual), expected, atol=atol, rtol=rtol)


@pytest.fixture(scope="module")
def tiny_config(parity_dir):
    return parity_dir / "daclip_tiny.json"


@pytest.fixture(scope="module")
def model(weights_dir, tiny_config):
    return DACLIPModel.from_original_checkpoint(weights_dir / "daclip_tiny.pt", config=tiny_config)


@pytest.fixture(scope="module")
def pixel_values(reference):
    return torch.stack([torch.from_numpy(reference[f"preproc.{name}.clip_input"]) for name in CLIP_IMAGES])


@pytest.fixture(scope="module")
def original_state_dict(weights_dir):
    return torch.load(weights_dir / "daclip_tiny.pt", weights_only=True)["state_dict"]


def check_clip_references(model, pixel_values, reference):
    with torch.no_grad():
        output = model(pixel_values=pixel_values, input_ids=model.tokenize(DEGRADATIONS))
    assert_close(output.content_embeds, reference["clip_tiny.image_features"])
    assert_close(output.degradation_embeds, reference["clip_tiny.degra_features"])
    assert_close(output.text_embeds, reference["clip_tiny.text_features"])


# ---------------------------------------------------------------------------------------------------
# Preprocessing
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", IMAGES)
def test_preprocess_matches_authors_clip_view_for_every_input_type(model, reference, name):
    image = reference[f"preproc.{name}.uint8_hwc_rgb"]
    expected = reference[f"preproc.{name}.clip_input"]
    as_float = image / 255.0
    inputs = {
        "numpy uint8": image,
        "PIL": PIL.Image.fromarray(image),
        "numpy float64": as_float,
        "numpy float32": as_float.astype(np.float32),
        "torch CHW float32": torch.from_numpy(as_float).permute(2, 0, 1).float(),
        "torch BCHW float16": torch.from_numpy(as_float).permute(2, 0, 1)[None].half(),
        "torch CHW uint8": torch.from_numpy(image).permute(2, 0, 1),
        "RGBA PIL (alpha dropped)": PIL.Image.fromarray(np.dstack([image, np.full(image.shape[:2], 7, np.uint8)])),
    }
    for kind, value in inputs.items():
        pixel_values = model.preprocess(value)
        assert pixel_values.shape == (1, 3, 224, 224) and pixel_values.dtype == torch.float32, kind
        assert_close(pixel_values[0], expected, atol=ATOL)


def test_preprocess_batches_lists_and_grayscale(reference):
    images = [reference[f"preproc.{name}.uint8_hwc_rgb"] for name in IMAGES]
    expected = np.stack([reference[f"preproc.{name}.clip_input"] for name in IMAGES])
    mixed = [PIL.Image.fromarray(images[0]), images[1] / 255.0, torch.from_numpy(images[2]).permute(2, 0, 1) / 255.0]
    assert_close(preprocess_images(mixed), expected)
    same_size = np.stack([images[0], images[0]])  # numpy [B, H, W, C]
    assert_close(preprocess_images(same_size), expected[[0, 0]])

    gray = images[0][:, :, 1]
    as_rgb = preprocess_images(np.dstack([gray] * 3))
    for variant in (gray, gray[:, :, None], PIL.Image.fromarray(gray), torch.from_numpy(gray)[None] / 255.0):
        assert_close(preprocess_images(variant), as_rgb.numpy(), atol=0)


def test_float_input_is_rounded_not_truncated():
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    image = np.dstack([levels] * 3)
    # float32 k/255*255 is sometimes just below k; truncation would lose a level.
    as_float32 = (image / np.float32(255)).astype(np.float32)
    assert_close(preprocess_images(as_float32), preprocess_images(image).numpy(), atol=0)


def test_preprocess_rejects_bad_images():
    with pytest.raises(ValueError, match="no images"):
        preprocess_images([])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        preprocess_images(np.full((8, 8, 3), 200.0))
    with pytest.raises(ValueError, match="NaN"):
        preprocess_images(np.full((8, 8, 3), np.nan))
    with pytest.raises(TypeError, match="uint8, uint16 or float"):
        preprocess_images(np.zeros((8, 8, 3), np.int32))
    with pytest.raises(ValueError, match="1 to 4 channels"):
        preprocess_images(torch.zeros(8, 8, 3))  # HWC given where CHW is expected
    # 16-bit data is scaled by 65535, not clipped at 255
    sixteen_bit = np.full((8, 8, 3), 128 * 257, np.uint16)  # 128/255 in 16 bits
    np.testing.assert_allclose(preprocess_images(sixteen_bit), preprocess_images(np.full((8, 8, 3), 128, np.uint8)))
    with pytest.raises(TypeError, match="expected a PIL image"):
        preprocess_images("image.png")


# ---------------------------------------------------------------------------------------------------
# Tokens, embeddings, control
# ---------------------------------------------------------------------------------------------------
def test_tokenize_matches_reference(model, reference):
    tokens = model.tokenize(DEGRADATIONS)
    assert tokens.dtype == torch.int64 and tokens.shape == (10, 77)
    np.testing.assert_array_equal(tokens.numpy(), reference["clip_tiny.tokens"])
    np.testing.assert_array_equal(model.tokenize("hazy").numpy(), reference["clip_tiny.tokens"][1:2])


def test_embeddings_match_reference(model, pixel_values, reference):
    with torch.no_grad():
        output = model(pixel_values=pixel_values, input_ids=model.tokenize(DEGRADATIONS), output_hidden_states=True)
        content_plain, degradation_plain = model.encode_image(pixel_values, control=False)
    assert isinstance(output, DACLIPOutput)
    assert_close(output.content_embeds, reference["clip_tiny.image_features"])
    assert_close(output.degradation_embeds, reference["clip_tiny.degra_features"])
    assert_close(output.text_embeds, reference["clip_tiny.text_features"])
    normalize = torch.nn.functional.normalize
    assert_close(normalize(output.content_embeds, dim=-1), reference["clip_tiny.image_features_normalized"])
    assert_close(normalize(output.degradation_embeds, dim=-1), reference["clip_tiny.degra_features_normalized"])
    assert_close(content_plain, reference["clip_tiny.image_features_nocontrol"])
    assert degradation_plain is None

    # The control signals z_i, in controller order; the reference is sequence-first (L, tokens, B, W).
    hiddens = torch.stack([z.transpose(0, 1) for z in output.controller_hidden_states])
    assert_close(hiddens, reference["clip_tiny.controller_hiddens_LND"])

    assert_close(model.logit_scale, reference["clip_tiny.logit_scale"])
    assert_close(model.clip.logit_scale, reference["clip_tiny.logit_scale"])


def test_encode_helpers_and_tuple_output_agree_with_forward(model, pixel_values, reference):
    with torch.no_grad():
        content, degradation = model.encode_image(pixel_values)
        text = model.encode_text(model.tokenize(DEGRADATIONS))
        as_tuple = model(pixel_values=pixel_values, return_dict=False)
    assert_close(content, reference["clip_tiny.image_features"])
    assert_close(degradation, reference["clip_tiny.degra_features"])
    assert_close(text, reference["clip_tiny.text_features"])
    assert len(as_tuple) == 3 and as_tuple[2] is None
    assert torch.equal(as_tuple[0], content) and torch.equal(as_tuple[1], degradation)
    with pytest.raises(ValueError, match="pixel_values"):
        model()


def test_control_changes_features_and_zeroed_controller_gives_plain_clip(weights_dir, tiny_config, pixel_values, reference):
    model = DACLIPModel.from_original_checkpoint(weights_dir / "daclip_tiny.pt", config=tiny_config)
    difference = np.abs(reference["clip_tiny.image_features"] - reference["clip_tiny.image_features_nocontrol"]).max()
    assert difference > 1e-2  # the fixture's controller really steers the encoder
    with torch.no_grad():
        for module in model.visual_control.transformer.zero_modules:
            module.weight.zero_()
            module.bias.zero_()
        content, degradation = model.encode_image(pixel_values)
    assert_close(content, reference["clip_tiny.image_features_nocontrol"])
    assert_close(degradation, reference["clip_tiny.degra_features"])  # the controller's own stream is unaffected


def test_gradient_checkpointing_gives_same_outputs_and_gradients(weights_dir, tiny_config, pixel_values):
    model = DACLIPModel.from_original_checkpoint(weights_dir / "daclip_tiny.pt", config=tiny_config).train()
    tokens = model.tokenize(["hazy", "rainy"])

    def run():
        model.zero_grad()
        output = model(pixel_values=pixel_values, input_ids=tokens)
        (output.content_embeds.sum() + output.degradation_embeds.sum() + output.text_embeds.sum()).backward()
        return output, model.visual_control.transformer.zero_modules[0].weight.grad.clone()

    plain_output, plain_grad = run()
    model.enable_gradient_checkpointing()
    assert model.gradient_checkpointing and model.clip.transformer.grad_checkpointing
    checkpointed_output, checkpointed_grad = run()
    assert_close(checkpointed_output.content_embeds, plain_output.content_embeds.detach().numpy())
    assert_close(checkpointed_grad, plain_grad.numpy())
    assert plain_grad.abs().max() > 0


# ---------------------------------------------------------------------------------------------------
# Degradation detection
# ---------------------------------------------------------------------------------------------------
def test_detect_degradation_matches_reference(model, reference):
    images = [reference[f"preproc.{name}.uint8_hwc_rgb"] for name in CLIP_IMAGES]
    predictions = model.detect_degradation(images)
    probabilities = reference["clip_tiny.degra_text_probs"]
    assert len(predictions) == 2 and all(isinstance(p, DegradationPrediction) for p in predictions)
    for prediction, expected in zip(predictions, probabilities):
        assert list(prediction.probabilities) == DEGRADATIONS
        assert_close([prediction.probabilities[label] for label in DEGRADATIONS], expected)
        assert prediction.label == DEGRADATIONS[int(expected.argmax())]
        assert prediction.probability == pytest.approx(float(expected.max()), abs=ATOL)


def test_degradation_logits_match_reference(model, pixel_values, reference):
    with torch.no_grad():
        degradation = model(pixel_values=pixel_values).degradation_embeds
    # Logits are 100·cosine: the ~1e-7 float32 round-off of the normalised embeddings is multiplied by 100
    # (measured 1.7e-5 here), so compare at 100 × 5e-7.
    assert_close(model.degradation_logits(degradation), reference["clip_tiny.degra_text_logits"], atol=5e-5)


def test_detect_degradation_with_custom_labels(model, reference):
    labels = ["noisy", "rainy", "snowy"]
    columns = [DEGRADATIONS.index(label) for label in labels]
    logits = torch.from_numpy(reference["clip_tiny.degra_text_logits"][:, columns]).double()
    expected = logits.softmax(dim=-1).numpy()
    images = [PIL.Image.fromarray(reference[f"preproc.{name}.uint8_hwc_rgb"]) for name in CLIP_IMAGES]
    predictions = model.detect_degradation(images, labels=labels)
    for prediction, row in zip(predictions, expected):
        assert list(prediction.probabilities) == labels
        assert_close([prediction.probabilities[label] for label in labels], row)
        assert prediction.label == labels[int(row.argmax())]
    # A free-text label is tokenised like any other.
    assert set(model.detect_degradation(images[0], labels=["a photo with fog", "clean"])[0].probabilities) == {
        "a photo with fog",
        "clean",
    }


@pytest.mark.parametrize(
    "labels, message",
    [([], "empty"), ("hazy", "single string"), (["hazy", 3], "strings"), (["hazy", "hazy"], "duplicate"), (["", "x"], "blank")],
)
def test_detect_degradation_rejects_bad_labels(model, reference, labels, message):
    with pytest.raises(ValueError, match=message):
        model.detect_degradation(reference["preproc.lq_37x53.uint8_hwc_rgb"], labels=labels)


def test_label_text_embeddings_are_cached_and_cleared_on_reload(weights_dir, tiny_config, reference):
    model = DACLIPModel.from_original_checkpoint(weights_dir / "daclip_tiny.pt", config=tiny_config)
    image = reference["preproc.odd_197x301.uint8_hwc_rgb"]
    first = model.detect_degradation(image)[0]
    assert len(model._text_embeds_cache) == 1
    assert model.detect_degradation(image)[0] == first
    model.load_state_dict(model.state_dict())
    assert len(model._text_embeds_cache) == 0


# ---------------------------------------------------------------------------------------------------
# Checkpoint formats
# ---------------------------------------------------------------------------------------------------
def test_loads_ddp_checkpoint(weights_dir, tiny_config, pixel_values, reference):
    model = DACLIPModel.from_original_checkpoint(weights_dir / "daclip_tiny.ddp.pt", config=tiny_config)
    check_clip_references(model, pixel_values, reference)


def test_loads_bare_state_dict_with_config_dict(tmp_path, original_state_dict, tiny_config, pixel_values, reference):
    path = tmp_path / "bare.pt"
    torch.save(original_state_dict, path)
    config = json.loads(tiny_config.read_text())
    model = DACLIPModel.from_original_checkpoint(path, config=config)
    check_clip_references(model, pixel_values, reference)
    assert not model.training


def test_conversion_drops_verified_duplicate_tower_and_keeps_both_logit_scales(original_state_dict, model):
    converted = convert_original.convert_daclip_state_dict({"state_dict": original_state_dict, "epoch": 1})
    assert len(original_state_dict) == 131
    assert not any(key.startswith("visual.") for key in converted)
    assert {"logit_scale", "clip.logit_scale"} <= set(converted)
    assert len(converted) == 131 - sum(key.startswith("visual.") for key in original_state_dict)
    assert set(converted) == set(model.state_dict())
    for key, value in converted.items():
        assert torch.equal(model.state_dict()[key], value), key


def test_unreleased_shapes_are_refused_not_guessed(original_state_dict, tiny_config, weights_dir, tmp_path):
    # The tiny DA-CLIP has 2 heads of 32; shapes alone would suggest 1 head of 64, which loads without error
    # and computes other embeddings. Without its config it is refused, naming what to give.
    converted = convert_original.convert_daclip_state_dict(original_state_dict)
    with pytest.raises(CheckpointError, match=r"not a released DA-CLIP \(ViT-B-32, ViT-L-14\).*same name beside the file"):
        convert_original.infer_daclip_config(converted)
    alone = tmp_path / "daclip_tiny.pt"
    shutil.copy(weights_dir / "daclip_tiny.pt", alone)
    with pytest.raises(CheckpointError, match="not a released DA-CLIP"):
        DACLIPModel.from_original_checkpoint(alone)
    # the same-name JSON beside the file is the config (README's rule), in every front door
    shutil.copy(tiny_config, tmp_path / "daclip_tiny.json")
    model = DACLIPModel.from_original_checkpoint(alone)
    assert model.config.vision_cfg["head_width"] == 32 and model.config.text_cfg["heads"] == 2
    (tmp_path / "daclip_tiny.json").write_text('{"embed_dim": 32, "vision_cfg": {}, "text_cfg": {}, "bogus": 1}')
    with pytest.raises(CheckpointError, match=r"daclip_tiny\.json: .*bogus"):
        DACLIPModel.from_original_checkpoint(alone)


@pytest.mark.parametrize(
    "config",
    [
        # open_clip's daclip_ViT-B-32.json (universal-ir) and daclip_ViT-L-14.json (wild-ir)
        {"embed_dim": 512, "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32},
         "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12}},
        {"embed_dim": 768, "vision_cfg": {"image_size": 224, "layers": 24, "width": 1024, "patch_size": 14},
         "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 768, "heads": 12, "layers": 12}},
    ],
    ids=["ViT-B-32", "ViT-L-14"],
)
def test_released_architectures_round_trip_through_inference(config):
    empty = DACLIPModel._build_empty(**config)  # meta tensors: shapes only, no memory
    shapes = empty.state_dict()
    inferred = convert_original.infer_daclip_config(shapes)
    assert inferred["embed_dim"] == config["embed_dim"]
    assert inferred["text_cfg"] == config["text_cfg"]
    assert inferred["vision_cfg"] == {**config["vision_cfg"], "head_width": 64}
    # The released ViT-B/32 file has 631 keys: ours plus the 152 duplicated `visual.*` tensors.
    if config["embed_dim"] == 512:
        assert len(shapes) + sum(key.startswith("clip.visual.") for key in shapes) == 631
        assert sum(parameter.numel() for parameter in empty.parameters()) == 246_213_634


def test_heads_need_config_when_width_is_not_a_multiple_of_64(original_state_dict):
    converted = convert_original.convert_daclip_state_dict(original_state_dict)
    converted["clip.positional_embedding"] = torch.zeros(77, 48)
    with pytest.raises(CheckpointError, match="config="):
        convert_original.infer_daclip_config(converted)


def test_save_pretrained_round_trip(tmp_path, model, pixel_values, reference):
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = DACLIPModel.from_pretrained(tmp_path)
    assert loaded.config.degradations == DEGRADATIONS and loaded.config.vision_cfg["head_width"] == 32
    assert torch.equal(loaded.clip.attn_mask, model.clip.attn_mask)  # non-persistent buffer rebuilt
    original, restored = model.state_dict(), loaded.state_dict()
    assert set(original) == set(restored)
    assert all(torch.equal(original[key], restored[key]) for key in original)
    check_clip_references(loaded, pixel_values, reference)


# ---------------------------------------------------------------------------------------------------
# Wrong files
# ---------------------------------------------------------------------------------------------------
def test_unet_checkpoint_is_refused_with_a_pointer_to_the_unet(weights_dir):
    for name in ("universal-ir_tiny.pth", "universal-ir_tiny.module.pth", "wild-ir_tiny.pth"):
        with pytest.raises(CheckpointError, match="UNet checkpoint"):
            DACLIPModel.from_original_checkpoint(weights_dir / name)


def test_plain_clip_without_controller_is_refused(tmp_path, original_state_dict):
    path = tmp_path / "clip.pt"
    torch.save({k: v for k, v in original_state_dict.items() if not k.startswith("visual_control.")}, path)
    with pytest.raises(CheckpointError, match="without the DA-CLIP controller"):
        DACLIPModel.from_original_checkpoint(path)
    # open_clip's own layout (no `clip.` prefix) too
    plain = {k[len("clip."):]: v for k, v in original_state_dict.items() if k.startswith("clip.")}
    torch.save(plain, path)
    with pytest.raises(CheckpointError, match="without the DA-CLIP controller"):
        DACLIPModel.from_original_checkpoint(path)


def test_missing_key_is_listed(tmp_path, original_state_dict, tiny_config):
    broken = dict(original_state_dict)
    del broken["visual_control.transformer.zero_modules.1.bias"]
    path = tmp_path / "missing.pt"
    torch.save({"state_dict": broken}, path)
    with pytest.raises(CheckpointError, match=r"1 missing keys: visual_control\.transformer\.zero_modules\.1\.bias"):
        DACLIPModel.from_original_checkpoint(path, config=tiny_config)


def test_unexpected_key_is_listed(tmp_path, original_state_dict, tiny_config):
    broken = dict(original_state_dict, **{"clip.extra_head.weight": torch.zeros(3)})
    path = tmp_path / "extra.pt"
    torch.save({"state_dict": broken}, path)
    with pytest.raises(CheckpointError, match=r"1 unexpected keys: clip\.extra_head\.weight"):
        DACLIPModel.from_original_checkpoint(path, config=tiny_config)


def test_wrong_config_is_reported_as_shape_mismatch(weights_dir, tiny_config):
    config = json.loads(tiny_config.read_text())
    config["embed_dim"] = 16
    with pytest.raises(CheckpointError, match="shapes differ"):
        DACLIPModel.from_original_checkpoint(weights_dir / "daclip_tiny.pt", config=config)


def test_inconsistent_duplicate_tower_is_refused(tmp_path, original_state_dict):
    broken = {k: v.clone() for k, v in original_state_dict.items()}
    broken["visual.proj"] += 1.0
    path = tmp_path / "inconsistent.pt"
    torch.save({"state_dict": broken}, path)
    with pytest.raises(CheckpointError, match="visual.proj"):
        DACLIPModel.from_original_checkpoint(path)


def test_not_a_state_dict_and_garbage_files_are_refused(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointError, match="dict of tensors"):
        DACLIPModel.from_original_checkpoint(path)
    torch.save({"model": {"a": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match="not a model state dict"):
        DACLIPModel.from_original_checkpoint(path)
    torch.save({"encoder.weight": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="not a DA-CLIP checkpoint"):
        DACLIPModel.from_original_checkpoint(path)
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError):
        DACLIPModel.from_original_checkpoint(tmp_path / "text.pt")
    with pytest.raises(CheckpointError, match="no such file"):
        DACLIPModel.from_original_checkpoint(tmp_path / "absent.pt")


class _CreatesFileWhenUnpickled:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_pickle_that_runs_code_is_refused_without_side_effect(tmp_path, original_state_dict):
    # The payload is live: an unsafe load really runs it.
    probe = tmp_path / "probe_ran"
    unsafe = tmp_path / "probe.pt"
    torch.save({"state_dict": original_state_dict, "x": _CreatesFileWhenUnpickled(str(probe))}, unsafe)
    torch.load(unsafe, weights_only=False)
    assert probe.exists()

    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": original_state_dict, "x": _CreatesFileWhenUnpickled(str(marker))}, path)
    with pytest.raises(CheckpointError, match="refused"):
        DACLIPModel.from_original_checkpoint(path)
    assert not marker.exists()


def test_open_clip_config_file_variants(tmp_path, tiny_config, weights_dir, pixel_values, reference):
    config = json.loads(tiny_config.read_text())
    hub_style = tmp_path / "open_clip_config.json"
    hub_style.write_text(json.dumps({"model_cfg": config, "preprocess_cfg": {}}))
    model = DACLIPModel.from_original_checkpoint(weights_dir / "daclip_tiny.pt", config=hub_style)
    check_clip_references(model, pixel_values, reference)
    with pytest.raises(ValueError, match="init_logit_bias"):
        DACLIPModel.from_original_checkpoint(weights_dir / "daclip_tiny.pt", config={**config, "init_logit_bias": -10})


def test_non_vit_towers_are_refused():
    with pytest.raises(ValueError, match="ViT"):
        DACLIPModel(embed_dim=32, vision_cfg={"layers": [1, 1, 1, 1], "width": 32}, text_cfg={"width": 64, "heads": 1, "layers": 1})
