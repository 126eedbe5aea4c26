"""The ComfyUI node pack without ComfyUI: definitions, execution on the tiny models, workflows, errors."""
import json
import os
import shutil
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from daclip import DACLIPPipeline, DACLIPUNet2DModel
from daclip.daclip_nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, comfy_adapter, nodes
from daclip.utils import CheckpointError

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO_ROOT / "workflows"
EXAMPLE_IMAGE = REPO_ROOT / "assets" / "daclip_example_hazy.jpg"

# The core ComfyUI nodes the example workflows use, as ComfyUI 0.3.x defines them (checked against a real
# server's /object_info when the workflows were made).
CORE_NODES = {
    "LoadImage": {
        "input": {"required": {"image": (["daclip_example_hazy.jpg"], {"image_upload": True})}},
        "output": ("IMAGE", "MASK"),
    },
    "SaveImage": {
        "input": {"required": {"images": ("IMAGE",), "filename_prefix": ("STRING", {"default": "ComfyUI"})}},
        "output": (),
    },
    "PreviewImage": {"input": {"required": {"images": ("IMAGE",)}}, "output": ()},
    "PreviewAny": {"input": {"required": {"source": ("*", {})}}, "output": ()},
}
# UI-only widget values that follow an input's own value in `widgets_values`.
EXTRA_WIDGET_VALUES = {"control_after_generate": 1, "image_upload": 1}


# -----------------------------------------------------------------------------------------------------------
# Fixtures: a models/daclip folder with the tiny checkpoints
# -----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_pipe(weights_dir, parity_dir):
    return DACLIPPipeline.from_original_checkpoints(
        weights_dir / "daclip_tiny.pt", weights_dir / "universal-ir_tiny.pth", daclip_config=parity_dir / "daclip_tiny.json"
    )


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory, weights_dir, parity_dir, tiny_pipe):
    """What a user's ComfyUI/models/daclip would hold: the authors' files (a custom DA-CLIP with its config
    JSON beside it), a saved pipeline folder, and a UNet folder that does not pair with the tiny DA-CLIP."""
    folder = tmp_path_factory.mktemp("models") / "daclip"
    folder.mkdir()
    for name in ("daclip_tiny.pt", "daclip_tiny.ddp.pt", "universal-ir_tiny.pth", "wild-ir_tiny.pth"):
        os.symlink(weights_dir / name, folder / name)
    shutil.copy(parity_dir / "daclip_tiny.json", folder / "daclip_tiny.json")
    shutil.copy(parity_dir / "daclip_tiny.json", folder / "daclip_tiny.ddp.json")
    tiny_pipe.save_pretrained(folder / "tiny-pipeline")
    # Single-file safetensors: the authors' UNet keys, and our DACLIPModel's own state dict (+ its config).
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tiny_pipe.unet.state_dict().items()}, folder / "universal-ir_tiny.safetensors")
    save_file({k: v.contiguous() for k, v in tiny_pipe.daclip.state_dict().items()}, folder / "daclip_tiny_ours.safetensors")
    shutil.copy(parity_dir / "daclip_tiny.json", folder / "daclip_tiny_ours.json")
    torch.manual_seed(0)
    DACLIPUNet2DModel(base_channels=32, channel_mult=(1, 2), context_dim=48, first_cross_attention_level=1).save_pretrained(
        folder / "other" / "unet-context48"
    )
    return folder


@pytest.fixture(autouse=True)
def model_folders(models_dir):
    comfy_adapter.set_model_folders([str(models_dir)])
    yield
    comfy_adapter.set_model_folders([])


@pytest.fixture(scope="module")
def daclip_handle(models_dir):
    comfy_adapter.set_model_folders([str(models_dir)])
    return nodes.DACLIPLoader().load("daclip_tiny.pt", "cpu", "fp32")[0]


@pytest.fixture(scope="module")
def unet_handle(models_dir):
    comfy_adapter.set_model_folders([str(models_dir)])
    return nodes.DACLIPRestorationModelLoader().load("universal-ir_tiny.pth", "cpu", "fp32")[0]


def comfy_image(*arrays):
    """uint8 HWC arrays → a ComfyUI IMAGE batch [B, H, W, 3] float32 in 0..1."""
    return torch.from_numpy(np.stack(arrays).astype(np.float32) / 255.0)


@pytest.fixture(scope="module")
def lq(reference):
    return reference["preproc.lq_37x53.uint8_hwc_rgb"]


# -----------------------------------------------------------------------------------------------------------
# Node definitions
# -----------------------------------------------------------------------------------------------------------
def _check_input_spec(name, spec):
    assert isinstance(spec, tuple) and 1 <= len(spec) <= 2, name
    kind = spec[0]
    assert isinstance(kind, (str, list)), name
    if isinstance(kind, list):
        assert all(isinstance(option, str) for option in kind)
    options = spec[1] if len(spec) == 2 else {}
    assert isinstance(options, dict)
    if kind == "INT":
        assert options["min"] <= options["default"] <= options["max"]
    if isinstance(kind, list) and "default" in options:
        assert options["default"] in kind


def test_node_definitions_are_valid_v1_nodes():
    assert set(NODE_CLASS_MAPPINGS) == set(NODE_DISPLAY_NAME_MAPPINGS)
    for node_id, node_class in NODE_CLASS_MAPPINGS.items():
        assert node_id.startswith("DACLIP")
        input_types = node_class.INPUT_TYPES()
        assert set(input_types) <= {"required", "optional", "hidden"} and "required" in input_types
        for section in ("required", "optional"):
            for name, spec in input_types.get(section, {}).items():
                _check_input_spec(f"{node_id}.{name}", spec)
        assert isinstance(node_class.RETURN_TYPES, tuple) and all(isinstance(t, str) for t in node_class.RETURN_TYPES)
        assert len(node_class.RETURN_NAMES) == len(node_class.RETURN_TYPES)
        if hasattr(node_class, "OUTPUT_IS_LIST"):
            assert len(node_class.OUTPUT_IS_LIST) == len(node_class.RETURN_TYPES)
        assert callable(getattr(node_class, node_class.FUNCTION))
        assert node_class.CATEGORY == "DA-CLIP"
        # Every declared input is an argument of the node's function.
        code = getattr(node_class, node_class.FUNCTION).__code__
        arguments = code.co_varnames[: code.co_argcount]
        for section in ("required", "optional"):
            assert set(input_types.get(section, {})) <= set(arguments), node_id


def test_the_package_exports_the_nodes_for_comfyui():
    import daclip
    from daclip import daclip_nodes

    assert daclip.NODE_CLASS_MAPPINGS is NODE_CLASS_MAPPINGS
    assert (REPO_ROOT / daclip_nodes.WEB_DIRECTORY / "daclip_nodes.js").is_file()


def test_dropdown_lists_model_files_and_diffusers_folders(models_dir):
    entries = comfy_adapter.model_entries()
    assert entries == [
        "daclip_tiny.ddp.pt",
        "daclip_tiny.pt",
        "daclip_tiny_ours.safetensors",
        "other/unet-context48/",
        "tiny-pipeline/",
        "universal-ir_tiny.pth",
        "universal-ir_tiny.safetensors",
        "wild-ir_tiny.pth",
    ]
    assert nodes.DACLIPLoader.INPUT_TYPES()["required"]["model_name"][0] == entries
    assert comfy_adapter.resolve_model_entry("tiny-pipeline/") == str(models_dir / "tiny-pipeline")
    assert comfy_adapter.resolve_model_entry("other/unet-context48/") == str(models_dir / "other" / "unet-context48")


def test_loaders_only_resolve_listed_names(models_dir):
    for name in ("missing.pt", "../daclip/daclip_tiny.json", str(models_dir / "nowhere.pt"), "tiny-pipeline/unet/"):
        with pytest.raises(FileNotFoundError):
            comfy_adapter.resolve_model_entry(name)


# -----------------------------------------------------------------------------------------------------------
# Loaders
# -----------------------------------------------------------------------------------------------------------
def test_loaders_read_released_files_and_pipeline_folders(daclip_handle, unet_handle, tiny_pipe):
    assert daclip_handle.model.config.embed_dim == 32 and daclip_handle.load_device == torch.device("cpu")
    assert unet_handle.variant == "universal"
    assert unet_handle.scheduler_config["num_train_timesteps"] == 100
    wild = nodes.DACLIPRestorationModelLoader().load("wild-ir_tiny.pth", "cpu", "fp32")[0]
    assert wild.variant == "wild" and wild.scheduler_config == unet_handle.scheduler_config

    ddp = nodes.DACLIPLoader().load("daclip_tiny.ddp.pt", "cpu", "fp32")[0]
    from_folder = nodes.DACLIPLoader().load("tiny-pipeline/", "cpu", "fp32")[0]
    unet_from_folder = nodes.DACLIPRestorationModelLoader().load("tiny-pipeline/", "cpu", "bf16")[0]
    assert unet_from_folder.unet.dtype == torch.bfloat16
    assert unet_from_folder.scheduler_config["_class_name"] == type(tiny_pipe.scheduler).__name__
    from_safetensors = nodes.DACLIPLoader().load("daclip_tiny_ours.safetensors", "cpu", "fp32")[0]
    reference_state = tiny_pipe.daclip.state_dict()
    for model in (ddp.model, from_folder.model, from_safetensors.model):
        state = model.state_dict()
        assert all(torch.equal(state[key], reference_state[key]) for key in reference_state)
    unet_from_safetensors = nodes.DACLIPRestorationModelLoader().load("universal-ir_tiny.safetensors", "cpu", "fp32")[0]
    unet_state = tiny_pipe.unet.state_dict()
    assert all(torch.equal(value, unet_state[key]) for key, value in unet_from_safetensors.unet.state_dict().items())


# -----------------------------------------------------------------------------------------------------------
# Detect, embed, steer
# -----------------------------------------------------------------------------------------------------------
def test_detect_gives_labels_probabilities_and_a_report(daclip_handle, reference):
    odd = reference["preproc.odd_197x301.uint8_hwc_rgb"]
    image = comfy_image(odd, odd[::-1].copy())
    out = nodes.DACLIPDetectDegradation().detect(daclip_handle, image, labels="")
    labels, probabilities, report = out["result"]
    assert out["ui"]["text"] == [report]
    assert len(labels) == len(probabilities) == 2
    expected = reference["clip_tiny.degra_text_probs"][0]
    from daclip import DEGRADATIONS

    assert labels[0] == DEGRADATIONS[int(expected.argmax())]
    assert probabilities[0] == pytest.approx(float(expected.max()), abs=1e-5)
    assert report.startswith(f"image 1: {labels[0]} ({probabilities[0]:.1%})")
    assert all(label in report for label in DEGRADATIONS) and "image 2:" in report


def test_detect_with_user_labels(daclip_handle, lq):
    labels, probabilities, report = nodes.DACLIPDetectDegradation().detect(
        daclip_handle, comfy_image(lq), labels=" hazy, rainy ,clean photo"
    )["result"]
    assert labels[0] in ("hazy", "rainy", "clean photo") and 0 < probabilities[0] <= 1
    assert report.splitlines()[0] == f"{labels[0]} ({probabilities[0]:.1%})"
    assert len(report.splitlines()) == 4 and "motion-blurry" not in report


def test_encode_gives_the_authors_embeddings(daclip_handle, lq, reference):
    (embeds,) = nodes.DACLIPEncodeImage().encode(daclip_handle, comfy_image(lq, lq))
    assert embeds.content_embeds.shape == embeds.degradation_embeds.shape == (2, 32)
    assert embeds.content_embeds.dtype == torch.float32 and embeds.degradations == (None, None)
    np.testing.assert_allclose(embeds.content_embeds[:1].numpy(), reference["sample_tiny.image_context"], atol=1e-5)
    np.testing.assert_allclose(embeds.degradation_embeds[1:].numpy(), reference["sample_tiny.text_context"], atol=1e-5)


def test_degradation_from_text_is_the_pipelines(daclip_handle, tiny_pipe, lq):
    (embeds,) = nodes.DACLIPEncodeImage().encode(daclip_handle, comfy_image(lq))
    (steered,) = nodes.DACLIPDegradationFromText().steer(daclip_handle, embeds, " hazy ")
    expected, _ = tiny_pipe.degradation_condition("hazy", embeds.degradation_embeds, torch.device("cpu"))
    torch.testing.assert_close(steered.degradation_embeds, expected, rtol=0, atol=0)
    assert torch.equal(steered.content_embeds, embeds.content_embeds) and steered.degradations == ("hazy",)
    # Steering twice takes the norm from the image, not from the first text.
    (twice,) = nodes.DACLIPDegradationFromText().steer(daclip_handle, steered, "hazy")
    torch.testing.assert_close(twice.degradation_embeds, expected, rtol=0, atol=0)


# -----------------------------------------------------------------------------------------------------------
# Restore
# -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", ["posterior", "sde", "ode", "mrs"])
def test_restore_gives_the_pipelines_pixels(daclip_handle, unet_handle, tiny_pipe, lq, sampler):
    from daclip.schedulers import scheduler_for_sampler

    image = comfy_image(lq, lq[:, ::-1].copy())
    (embeds,) = nodes.DACLIPEncodeImage().encode(daclip_handle, image)
    (restored,) = nodes.DACLIPRestore().restore(unet_handle, image, embeds, sampler, 2, 1234)
    assert restored.shape == image.shape and restored.dtype == torch.float32
    assert 0.0 <= float(restored.min()) and float(restored.max()) <= 1.0

    pipe = DACLIPPipeline(tiny_pipe.daclip, tiny_pipe.unet, scheduler_for_sampler(sampler, tiny_pipe.scheduler.config))
    pipe.set_progress_bar_config(disable=True)
    # The node's seed semantics: every image with its own generator seeded with `seed`.
    generators = [torch.Generator().manual_seed(1234) for _ in range(2)]
    expected = pipe(image.movedim(-1, 1), num_inference_steps=2, generator=generators, output_type="pt").images
    torch.testing.assert_close(restored, expected.movedim(1, -1), rtol=0, atol=1e-6)


def test_restore_node_offers_every_sampler_and_zero_steps_means_the_samplers_default(daclip_handle, unet_handle, tiny_pipe, lq):
    from daclip.schedulers import DEFAULT_STEPS, SAMPLERS, MRSamplerScheduler

    required = nodes.DACLIPRestore.INPUT_TYPES()["required"]
    assert required["sampler"][0] == list(SAMPLERS) and "mrs" in SAMPLERS
    assert required["steps"][1]["default"] == 0
    image = comfy_image(lq)
    (embeds,) = nodes.DACLIPEncodeImage().encode(daclip_handle, image)
    (restored,) = nodes.DACLIPRestore().restore(unet_handle, image, embeds, "mrs", 0, 3)
    pipe = DACLIPPipeline(tiny_pipe.daclip, tiny_pipe.unet, MRSamplerScheduler.from_config(tiny_pipe.scheduler.config))
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(
        image.movedim(-1, 1), num_inference_steps=DEFAULT_STEPS["mrs"], generator=torch.Generator().manual_seed(3),
        output_type="pt",
    ).images
    torch.testing.assert_close(restored, expected.movedim(1, -1), rtol=0, atol=1e-6)


def test_text_steered_restore_gives_the_pipelines_pixels(daclip_handle, unet_handle, tiny_pipe, lq):
    image = comfy_image(lq)
    (embeds,) = nodes.DACLIPEncodeImage().encode(daclip_handle, image)
    (steered,) = nodes.DACLIPDegradationFromText().steer(daclip_handle, embeds, "rainy")
    (restored,) = nodes.DACLIPRestore().restore(unet_handle, image, steered, "posterior", 2, 7)
    tiny_pipe.set_progress_bar_config(disable=True)
    expected = tiny_pipe(
        image.movedim(-1, 1), num_inference_steps=2, generator=torch.Generator().manual_seed(7), degradation="rainy",
        output_type="pt",
    ).images
    torch.testing.assert_close(restored, expected.movedim(1, -1), rtol=0, atol=1e-6)


def test_one_embedding_serves_a_batch(daclip_handle, unet_handle, lq):
    image = comfy_image(lq, lq)
    (one,) = nodes.DACLIPEncodeImage().encode(daclip_handle, comfy_image(lq))
    (two,) = nodes.DACLIPEncodeImage().encode(daclip_handle, image)
    (from_one,) = nodes.DACLIPRestore().restore(unet_handle, image, one, "ode", 1, 0)
    (from_two,) = nodes.DACLIPRestore().restore(unet_handle, image, two, "ode", 1, 0)
    assert from_one.shape == (2, 37, 53, 3)
    torch.testing.assert_close(from_one, from_two, rtol=0, atol=1e-6)


def test_tiles_are_the_pipelines_tiles(daclip_handle, unet_handle, tiny_pipe, lq):
    image = comfy_image(lq)
    (embeds,) = nodes.DACLIPEncodeImage().encode(daclip_handle, image)
    (restored,) = nodes.DACLIPRestore().restore(unet_handle, image, embeds, "posterior", 1, 5, tile_size=32, tile_overlap=8)
    expected = tiny_pipe(
        image.movedim(-1, 1), num_inference_steps=1, generator=torch.Generator().manual_seed(5), output_type="pt",
        tile_size=32, tile_overlap=8,
    ).images
    torch.testing.assert_close(restored, expected.movedim(1, -1), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="tile_size"):
        nodes.DACLIPRestore().restore(unet_handle, image, embeds, "posterior", 1, 5, tile_size=16)


def test_color_fix_is_the_pipelines(daclip_handle, unet_handle, tiny_pipe, lq):
    image = comfy_image(lq)
    (embeds,) = nodes.DACLIPEncodeImage().encode(daclip_handle, image)
    (restored,) = nodes.DACLIPRestore().restore(unet_handle, image, embeds, "posterior", 2, 5, color_fix="adain")
    expected = tiny_pipe(
        image.movedim(-1, 1), num_inference_steps=2, generator=torch.Generator().manual_seed(5), output_type="pt",
        color_fix="adain",
    ).images
    torch.testing.assert_close(restored, expected.movedim(1, -1), rtol=0, atol=1e-6)


def test_progress_is_reported_per_step_and_cancel_stops_cleanly(daclip_handle, unet_handle, lq, monkeypatch):
    image = comfy_image(lq)
    (embeds,) = nodes.DACLIPEncodeImage().encode(daclip_handle, image)
    bars = []

    class Bar:  # comfy.utils.ProgressBar's interface
        def __init__(self, total):
            self.total, self.current, self.previews = total, 0, []
            bars.append(self)

        def update_absolute(self, value, total=None, preview=None):
            self.total = total or self.total
            self.current = value
            if preview is not None:
                self.previews.append((value, preview))

    monkeypatch.setattr(comfy_adapter, "progress_bar", Bar)
    nodes.DACLIPRestore().restore(unet_handle, image, embeds, "posterior", 4, 0)
    assert [(bar.total, bar.current, bar.previews) for bar in bars] == [(4, 4, [])]  # previews off outside ComfyUI

    class Interrupted(Exception):
        pass

    calls = []

    def interrupt_at_third_check():
        calls.append(1)
        if len(calls) == 3:
            raise Interrupted("cancelled")

    monkeypatch.setattr(comfy_adapter, "throw_if_interrupted", interrupt_at_third_check)
    moves = []
    original_to = unet_handle.unet.to
    monkeypatch.setattr(unet_handle.unet, "to", lambda *a, **k: moves.append((a, k)) or original_to(*a, **k))
    with pytest.raises(Interrupted):
        nodes.DACLIPRestore().restore(unet_handle, image, embeds, "posterior", 4, 0)
    assert bars[-1].current == 2  # cancelled during the third step's check
    assert moves[-1][0] == (unet_handle.offload_device,)  # the model went back where it waits
    monkeypatch.setattr(comfy_adapter, "throw_if_interrupted", lambda: None)
    (restored,) = nodes.DACLIPRestore().restore(unet_handle, image, embeds, "posterior", 1, 0)  # the next run works
    assert restored.shape == image.shape


def test_restore_previews_the_clean_image_estimate_every_few_steps(daclip_handle, unet_handle, lq, monkeypatch):
    image = comfy_image(lq)
    (embeds,) = nodes.DACLIPEncodeImage().encode(daclip_handle, image)
    previews = []

    class Bar:
        def __init__(self, total):
            self.total = total

        def update_absolute(self, value, total=None, preview=None):
            if preview is not None:
                previews.append((value, preview))

    monkeypatch.setattr(comfy_adapter, "progress_bar", Bar)
    monkeypatch.setattr(comfy_adapter, "preview_interval", lambda steps: 2)  # as with --preview-method auto
    (restored,) = nodes.DACLIPRestore().restore(unet_handle, image, embeds, "posterior", 5, 0)
    assert [value for value, _ in previews] == [2, 4, 5]  # every 2nd step, and the last
    for _, (image_format, picture, max_size) in previews:
        assert image_format == "JPEG" and picture.mode == "RGB"
        assert picture.size == (image.shape[2], image.shape[1]) and max_size == 512
    # At the last step x̂₀ is (up to the posterior's tiny last noise) the result itself.
    last = np.asarray(previews[-1][1][1], dtype=np.float32) / 255
    assert np.abs(last - restored[0].numpy()).max() < 3 / 255


def test_preview_image_shrinks_large_images_to_the_preview_size():
    batch = torch.rand(2, 3, 300, 1200)
    image_format, picture, max_size = comfy_adapter.preview_image(batch, max_size=256)
    assert (image_format, picture.size, max_size) == ("JPEG", (256, 64), 256)
    np.testing.assert_allclose(np.asarray(picture, dtype=np.float32).mean() / 255, batch[0].mean().item(), atol=0.01)


# -----------------------------------------------------------------------------------------------------------
# Errors a user can act on
# -----------------------------------------------------------------------------------------------------------
def test_a_unet_file_in_the_daclip_loader_says_which_loader_to_use():
    with pytest.raises(CheckpointError, match="Load DA-CLIP Restoration Model") as error:
        nodes.DACLIPLoader().load("universal-ir_tiny.pth", "cpu", "fp32")
    assert "'universal-ir_tiny.pth'" in str(error.value) and "restoration UNet" in str(error.value)
    with pytest.raises(CheckpointError, match="Load DA-CLIP Restoration Model"):
        nodes.DACLIPLoader().load("other/unet-context48/", "cpu", "fp32")


def test_a_daclip_file_in_the_restoration_loader_says_which_loader_to_use():
    with pytest.raises(CheckpointError, match="'Load DA-CLIP Model'"):
        nodes.DACLIPRestorationModelLoader().load("daclip_tiny.pt", "cpu", "fp32")


def test_a_mismatched_pair_is_refused_before_sampling(daclip_handle, lq, monkeypatch):
    (other,) = nodes.DACLIPRestorationModelLoader().load("other/unet-context48/", "cpu", "fp32")
    (embeds,) = nodes.DACLIPEncodeImage().encode(daclip_handle, comfy_image(lq))
    monkeypatch.setattr(other.unet, "forward", lambda *a, **k: pytest.fail("sampling started"))
    with pytest.raises(ValueError) as error:
        nodes.DACLIPRestore().restore(other, comfy_image(lq), embeds, "posterior", 3, 0)
    message = str(error.value)
    assert "'daclip_tiny.pt'" in message and "'other/unet-context48/'" in message
    assert "32-dim" in message and "48-dim" in message and "not a pair" in message


def test_an_image_too_small_is_refused_with_its_size(daclip_handle, unet_handle):
    tiny = torch.rand(1, 6, 40, 3)
    (embeds,) = nodes.DACLIPEncodeImage().encode(daclip_handle, tiny)
    with pytest.raises(ValueError, match="6x40 is too small"):
        nodes.DACLIPRestore().restore(unet_handle, tiny, embeds, "posterior", 3, 0)


def test_embeddings_of_another_batch_are_refused(daclip_handle, unet_handle, lq):
    (embeds,) = nodes.DACLIPEncodeImage().encode(daclip_handle, comfy_image(lq, lq))
    with pytest.raises(ValueError, match="describe 2 images but the image batch has 3"):
        nodes.DACLIPRestore().restore(unet_handle, comfy_image(lq, lq, lq), embeds, "posterior", 3, 0)


def test_empty_text_and_bad_images_are_refused(daclip_handle, lq):
    (embeds,) = nodes.DACLIPEncodeImage().encode(daclip_handle, comfy_image(lq))
    with pytest.raises(ValueError, match="empty"):
        nodes.DACLIPDegradationFromText().steer(daclip_handle, embeds, "  ")
    with pytest.raises(ValueError, match="NaN"):
        nodes.DACLIPEncodeImage().encode(daclip_handle, torch.full((1, 40, 40, 3), float("nan")))
    with pytest.raises(ValueError, match="channels"):
        nodes.DACLIPEncodeImage().encode(daclip_handle, torch.rand(1, 40, 40, 5))


def test_comfy_images_convert_both_ways():
    gray = torch.rand(2, 5, 7, 1)
    rgba = torch.rand(2, 5, 7, 4)
    assert torch.equal(nodes.comfy_image_to_batch(gray), gray.movedim(-1, 1).expand(-1, 3, -1, -1))
    assert torch.equal(nodes.comfy_image_to_batch(rgba), rgba[..., :3].movedim(-1, 1))
    assert torch.equal(nodes.batch_to_comfy_image(nodes.comfy_image_to_batch(rgba)), rgba[..., :3])


# -----------------------------------------------------------------------------------------------------------
# Workflows
# -----------------------------------------------------------------------------------------------------------
WORKFLOW_NAMES = sorted(path.stem for path in WORKFLOWS.glob("*.json"))


def _definitions():
    definitions = {}
    for node_id, node_class in NODE_CLASS_MAPPINGS.items():
        definitions[node_id] = {"input": node_class.INPUT_TYPES(), "output": node_class.RETURN_TYPES}
    for node_id, definition in CORE_NODES.items():
        assert node_id not in definitions
        definitions[node_id] = definition
    return definitions


def _ordered_inputs(definition):
    return {**definition["input"]["required"], **definition["input"].get("optional", {})}


def _is_link(value):
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def _check_value(node_id, name, spec, value):
    kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
    if kind == "INT":
        assert isinstance(value, int) and options["min"] <= value <= options["max"], (node_id, name)
    elif kind == "STRING":
        assert isinstance(value, str), (node_id, name)
    elif isinstance(kind, list):
        assert isinstance(value, str), (node_id, name)
        if name != "model_name" and node_id != "LoadImage":  # file lists depend on the user's folders
            assert value in kind, (node_id, name, value)


def test_example_workflows_exist():
    assert WORKFLOW_NAMES == [
        "daclip_detect", "daclip_restore", "daclip_restore_demo", "daclip_restore_text", "daclip_restore_tiled"
    ]
    assert all((WORKFLOWS / "api" / f"{name}.json").is_file() for name in WORKFLOW_NAMES)


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_workflow_has_a_thumbnail_for_the_templates_browser(name):
    # ComfyUI's templates browser shows `<name>.jpg` beside `<name>.json`.
    with PIL.Image.open(WORKFLOWS / f"{name}.jpg") as thumbnail:
        assert thumbnail.format == "JPEG" and min(thumbnail.size) >= 128


RELEASED_URL = "https://huggingface.co/weblzw/daclip-uir-ViT-B-32-irsde/resolve/main/"


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_workflow_names_its_released_models_for_the_missing_models_dialog(name):
    """Each loader whose file is one of the authors' released files carries the frontend's model metadata
    (`properties.models`: name, url, directory; the frontend offers the ones whose name is the widget's value
    and that models/<directory> lacks); the bundled demo model needs none."""
    from daclip.pipelines.daclip.hub import ORIGINAL_CHECKPOINTS

    released = {filename for pair in ORIGINAL_CHECKPOINTS.values() for filename in pair}
    ui = json.loads((WORKFLOWS / f"{name}.json").read_text())
    loaders = [node for node in ui["nodes"] if node["type"] in ("DACLIPLoader", "DACLIPRestorationModelLoader")]
    assert loaders
    for node in loaders:
        model_name = node["widgets_values"][0]
        if model_name == "demo-model/":
            assert "models" not in node["properties"]
            continue
        assert model_name in released
        assert node["properties"]["models"] == [
            {"name": model_name, "url": RELEASED_URL + model_name, "directory": comfy_adapter.MODEL_FOLDER}
        ]


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_api_workflow_matches_the_node_definitions(name):
    definitions = _definitions()
    graph = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
    for key, entry in graph.items():
        node_id = entry["class_type"]
        assert node_id in definitions, f"unknown node {node_id}"
        inputs = _ordered_inputs(definitions[node_id])
        assert set(entry["inputs"]) <= set(inputs), (node_id, set(entry["inputs"]) - set(inputs))
        assert set(definitions[node_id]["input"]["required"]) <= set(entry["inputs"]), node_id
        for input_name, value in entry["inputs"].items():
            spec = inputs[input_name]
            if _is_link(value):
                source = graph[value[0]]
                output_type = definitions[source["class_type"]]["output"][value[1]]
                assert spec[0] in (output_type, "*"), (node_id, input_name, output_type)
            else:
                _check_value(node_id, input_name, spec, value)


def _ui_to_api(ui, definitions):
    links = {link[0]: link for link in ui["links"]}
    graph = {}
    for node in ui["nodes"]:
        inputs = {}
        for slot in node.get("inputs", []):
            if slot.get("link") is not None:
                link = links[slot["link"]]
                inputs[slot["name"]] = [str(link[1]), link[2]]
        values = list(node.get("widgets_values", []))
        for input_name, spec in _ordered_inputs(definitions[node["type"]]).items():
            is_widget = isinstance(spec[0], list) or spec[0] in ("INT", "FLOAT", "STRING", "BOOLEAN")
            if not is_widget or input_name in inputs:
                continue
            inputs[input_name] = values.pop(0)
            options = spec[1] if len(spec) > 1 else {}
            for option, count in EXTRA_WIDGET_VALUES.items():
                if options.get(option):
                    del values[:count]
        assert values == [], (node["type"], values)
        graph[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return graph


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_ui_workflow_is_the_same_graph_as_the_api_one(name):
    definitions = _definitions()
    ui = json.loads((WORKFLOWS / f"{name}.json").read_text())
    assert ui["version"] == 0.4 and ui["last_node_id"] == max(node["id"] for node in ui["nodes"])
    assert ui["last_link_id"] == max(link[0] for link in ui["links"])
    nodes_by_id = {node["id"]: node for node in ui["nodes"]}
    for link_id, source, source_slot, target, target_slot, kind in ui["links"]:
        assert nodes_by_id[source]["outputs"][source_slot]["type"] == kind
        assert link_id in nodes_by_id[source]["outputs"][source_slot]["links"]
        assert nodes_by_id[target]["inputs"][target_slot]["link"] == link_id
    api = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
    assert _ui_to_api(ui, definitions) == {key: {k: v for k, v in entry.items() if k != "_meta"} for key, entry in api.items()}


_LOADED = {}


def _run_api_workflow(graph, overrides):
    """Execute an API-format graph in order of dependencies, as ComfyUI would, with stand-ins for its core
    nodes (LoadImage reads the example image, the output nodes record what they get)."""
    recorded = {}

    def core(node_id, inputs):
        if node_id == "LoadImage":
            array = np.asarray(PIL.Image.open(EXAMPLE_IMAGE).convert("RGB").resize((53, 37)))
            return (comfy_image(array), None)
        recorded.setdefault(node_id, []).append(inputs)
        return ()

    results, pending = {}, dict(graph)
    while pending:
        for key, entry in list(pending.items()):
            values = {**entry["inputs"], **overrides.get(entry["class_type"], {})}
            if any(_is_link(v) and v[0] not in results for v in values.values()):
                continue
            arguments = {}
            for input_name, value in values.items():
                if _is_link(value):
                    source_node = graph[value[0]]["class_type"]
                    output = results[value[0]][value[1]]
                    is_list = getattr(NODE_CLASS_MAPPINGS.get(source_node), "OUTPUT_IS_LIST", ())
                    if is_list and is_list[value[1]]:
                        output = output[0]
                    arguments[input_name] = output
                else:
                    arguments[input_name] = value
            node_class = NODE_CLASS_MAPPINGS.get(entry["class_type"])
            cache_key = (entry["class_type"], tuple(sorted(arguments.items())))
            if node_class is None:
                results[key] = core(entry["class_type"], arguments)
            elif entry["class_type"].endswith("Loader"):  # loaded once, as ComfyUI's cache would
                if cache_key not in _LOADED:
                    _LOADED[cache_key] = getattr(node_class(), node_class.FUNCTION)(**arguments)
                results[key] = _LOADED[cache_key]
            else:
                out = getattr(node_class(), node_class.FUNCTION)(**arguments)
                results[key] = out["result"] if isinstance(out, dict) else out
            del pending[key]
    return recorded


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_api_workflow_runs_on_the_tiny_models(name):
    graph = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
    overrides = {
        "DACLIPLoader": {"model_name": "daclip_tiny.pt", "device": "cpu"},
        "DACLIPRestorationModelLoader": {"model_name": "universal-ir_tiny.pth", "device": "cpu"},
        "DACLIPRestore": {"steps": 1},
    }
    recorded = _run_api_workflow(graph, overrides)
    if "restore" in name:
        (saved,) = recorded["SaveImage"]
        assert saved["images"].shape == (1, 37, 53, 3)
    else:
        (shown,) = recorded["PreviewAny"]
        assert shown["source"].splitlines()[0].endswith("%)")


def test_training_outputs_and_their_checkpoints_are_entries_both_loaders_take(tmp_path, tiny_pipe):
    """What train_unet.py / train_daclip.py write (scripts/training_utils.py): the final model, and
    `checkpoint-N/` with the model in `unet/` or `daclip/`, the scheduler, EMA and generator states beside it."""
    root = tmp_path / "daclip"
    unet_run, daclip_run = root / "unet-run", root / "daclip-run"
    tiny_pipe.save_pretrained(unet_run)
    trained_unet = DACLIPUNet2DModel.from_config(tiny_pipe.unet.config)  # other weights than the final pipeline's
    trained_unet.save_pretrained(unet_run / "checkpoint-2" / "unet")
    tiny_pipe.scheduler.from_config(tiny_pipe.scheduler.config, max_sigma=30).save_pretrained(unet_run / "checkpoint-2" / "scheduler")
    tiny_pipe.daclip.save_pretrained(daclip_run)
    tiny_pipe.daclip.save_pretrained(daclip_run / "checkpoint-2" / "daclip")
    for checkpoint in (unet_run / "checkpoint-2", daclip_run / "checkpoint-2"):
        torch.save({"shadow_params": []}, checkpoint / "ema_state.pt")
        torch.save(torch.Generator().get_state(), checkpoint / "training_generator_0.pt")
    comfy_adapter.set_model_folders([str(root)])
    assert comfy_adapter.model_entries() == ["daclip-run/", "daclip-run/checkpoint-2/", "unet-run/", "unet-run/checkpoint-2/"]

    (restoration,) = nodes.DACLIPRestorationModelLoader().load("unet-run/checkpoint-2/", "cpu", "fp32")
    assert restoration.scheduler_config["max_sigma"] == 30  # the checkpoint's own sampler settings
    trained = trained_unet.state_dict()
    assert all(torch.equal(value, trained[key]) for key, value in restoration.unet.state_dict().items())
    for entry in ("daclip-run/", "daclip-run/checkpoint-2/", "unet-run/"):
        (handle,) = nodes.DACLIPLoader().load(entry, "cpu", "fp32")
        assert handle.model.config.embed_dim == 32
    with pytest.raises(CheckpointError, match="'unet-run/checkpoint-2/'.*Load DA-CLIP Restoration Model"):
        nodes.DACLIPLoader().load("unet-run/checkpoint-2/", "cpu", "fp32")
    with pytest.raises(CheckpointError, match="'daclip-run/'.*Load DA-CLIP Model"):
        nodes.DACLIPRestorationModelLoader().load("daclip-run/", "cpu", "fp32")
