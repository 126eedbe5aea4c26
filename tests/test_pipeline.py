"""DACLIPPipeline end to end on the tiny fixtures, against the authors' sampling outputs."""
import json
import os
import shutil

import numpy as np
import PIL.Image
import pytest
import torch

from daclip import DACLIPModel, DACLIPPipeline, DACLIPUNet2DModel, IRSDEPosteriorScheduler, IRSDEScheduler
from daclip.pipelines.daclip.hub import ORIGINAL_CHECKPOINTS, ORIGINAL_REPO_ID, download_original_checkpoints


@pytest.fixture(scope="module")
def tiny_pipe(weights_dir, parity_dir):
    return DACLIPPipeline.from_original_checkpoints(
        weights_dir / "daclip_tiny.pt", weights_dir / "universal-ir_tiny.pth", daclip_config=parity_dir / "daclip_tiny.json"
    )


@pytest.fixture(scope="module")
def lq_image(reference):
    return PIL.Image.fromarray(reference["preproc.lq_37x53.uint8_hwc_rgb"])


def _replay_step_noise(monkeypatch, scheduler, step_noise):
    """Feed the authors' recorded per-step noise to the scheduler, in the order they drew it."""
    rows = iter(torch.from_numpy(step_noise))
    original_step = scheduler.step

    def step(*args, **kwargs):
        kwargs["variance_noise"] = next(rows)
        return original_step(*args, **kwargs)

    monkeypatch.setattr(scheduler, "step", step)


def _run_unclamped(pipe, image, steps, start):
    """Run the pipeline and capture the last state before clamping (the authors' `.out`)."""
    captured = {}

    def keep_last(pipe, step_index, timestep, tensors):
        captured["latents"] = tensors["latents"].clone()
        return tensors

    output = pipe(
        image, num_inference_steps=steps, latents=start, callback_on_step_end=keep_last, output_type="np"
    )
    return captured["latents"], output


def test_conditioning_matches_the_authors(tiny_pipe, reference):
    lq = torch.from_numpy(reference["sample_tiny.LQ"])
    content, degradation = tiny_pipe.encode_image(lq, torch.device("cpu"))
    np.testing.assert_allclose(content.numpy(), reference["sample_tiny.image_context"], atol=1e-5)
    np.testing.assert_allclose(degradation.numpy(), reference["sample_tiny.text_context"], atol=1e-5)


@pytest.mark.parametrize(
    "sampler, key, atol",
    [("posterior", "sample_tiny.posterior", 0.05), ("sde", "sample_tiny.sde", 1e-3), ("ode", "sample_tiny.ode", 0.05)],
)
def test_full_sampling_reproduces_the_authors(tiny_pipe, lq_image, reference, monkeypatch, sampler, key, atol):
    from daclip.pipelines.daclip.pipeline_daclip import scheduler_for_sampler

    pipe = DACLIPPipeline(tiny_pipe.daclip, tiny_pipe.unet, scheduler_for_sampler(sampler, tiny_pipe.scheduler.config))
    pipe.set_progress_bar_config(disable=True)
    _replay_step_noise(monkeypatch, pipe.scheduler, reference["sample_tiny.step_noise"])
    start = torch.from_numpy(reference["sample_tiny.noisy_state"])
    final, output = _run_unclamped(pipe, lq_image, 100, start)
    np.testing.assert_allclose(final.numpy(), reference[f"{key}.out"], atol=atol, rtol=1e-3)
    # The saved image: clamp, x255, round half to even, as the authors' tensor2img.
    expected_uint8 = reference[f"{key}.out_uint8_rgb"].astype(int)
    produced_uint8 = np.round(output.images[0] * 255).astype(int)
    assert np.abs(produced_uint8 - expected_uint8).max() <= 1


def test_twenty_steps_reproduce_the_authors_sample_T(tiny_pipe, lq_image, reference, monkeypatch):
    pipe = DACLIPPipeline(tiny_pipe.daclip, tiny_pipe.unet, IRSDEPosteriorScheduler())
    pipe.set_progress_bar_config(disable=True)
    _replay_step_noise(monkeypatch, pipe.scheduler, reference["sample_tiny_sT20.step_noise"])
    final, _ = _run_unclamped(pipe, lq_image, 20, torch.from_numpy(reference["sample_tiny_sT20.noisy_state"]))
    np.testing.assert_allclose(final.numpy(), reference["sample_tiny_sT20.posterior.out"], atol=0.05, rtol=1e-3)


def test_wild_pipeline_reproduces_the_authors(weights_dir, parity_dir, lq_image, reference, monkeypatch):
    pipe = DACLIPPipeline.from_original_checkpoints(
        weights_dir / "daclip_tiny.pt", weights_dir / "wild-ir_tiny.pth", daclip_config=parity_dir / "daclip_tiny.json"
    )
    pipe.set_progress_bar_config(disable=True)
    _replay_step_noise(monkeypatch, pipe.scheduler, reference["sample_wild_tiny.step_noise"])
    final, _ = _run_unclamped(pipe, lq_image, 100, torch.from_numpy(reference["sample_wild_tiny.noisy_state"]))
    np.testing.assert_allclose(final.numpy(), reference["sample_wild_tiny.posterior.out"], atol=0.05, rtol=1e-3)


def test_wild_pipeline_says_a_degradation_text_has_no_effect(weights_dir, parity_dir, lq_image, caplog):
    pipe = DACLIPPipeline.from_original_checkpoints(
        weights_dir / "daclip_tiny.pt", weights_dir / "wild-ir_tiny.pth", daclip_config=parity_dir / "daclip_tiny.json"
    )
    pipe.set_progress_bar_config(disable=True)
    run = lambda **kwargs: pipe(  # noqa: E731
        lq_image, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np", **kwargs
    ).images
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.enable_propagation()
    try:
        with caplog.at_level("WARNING"):
            steered = run(degradation="rainy")
    finally:
        diffusers_logging.disable_propagation()
    assert "no effect" in caplog.text
    np.testing.assert_array_equal(steered, run())


def test_output_types_sizes_and_detected_degradation(tiny_pipe, lq_image):
    pil = tiny_pipe(lq_image, num_inference_steps=3, generator=torch.Generator().manual_seed(0))
    assert pil.images[0].size == lq_image.size and pil.images[0].mode == "RGB"
    assert pil.degradations[0] in tiny_pipe.daclip.config.degradations
    assert 0 < pil.degradation_probabilities[0] <= 1
    array = tiny_pipe(lq_image, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np")
    assert array.images.shape == (1, 37, 53, 3) and array.images.min() >= 0 and array.images.max() <= 1
    np.testing.assert_array_equal(np.asarray(pil.images[0]), np.round(array.images[0] * 255).astype(np.uint8))
    tensor = tiny_pipe(lq_image, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="pt")
    assert tensor.images.shape == (1, 3, 37, 53)


def test_generator_list_gives_the_same_images_as_single_runs(tiny_pipe, reference):
    first = reference["preproc.lq_37x53.uint8_hwc_rgb"]
    second = np.ascontiguousarray(first[::-1])
    batch = tiny_pipe(
        [first, second],
        num_inference_steps=4,
        generator=[torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)],
        output_type="np",
    ).images
    alone = [
        tiny_pipe(image, num_inference_steps=4, generator=torch.Generator().manual_seed(seed), output_type="np").images[0]
        for image, seed in [(first, 1), (second, 2)]
    ]
    np.testing.assert_allclose(batch[0], alone[0], atol=1e-5)
    np.testing.assert_allclose(batch[1], alone[1], atol=1e-5)


def test_one_generator_for_a_batch_makes_results_depend_on_the_batch(tiny_pipe, reference):
    # The README advises a generator list for batch-independent results; this is the case it warns about.
    first = reference["preproc.lq_37x53.uint8_hwc_rgb"]
    second = np.ascontiguousarray(first[::-1])
    run = lambda images: tiny_pipe(images, num_inference_steps=4, generator=torch.Generator().manual_seed(1), output_type="np").images
    assert np.abs(run([first, second])[0] - run(first)[0]).max() > 1e-3


def test_same_seed_same_result_and_other_seed_differs(tiny_pipe, lq_image):
    run = lambda seed: tiny_pipe(lq_image, num_inference_steps=3, generator=torch.Generator().manual_seed(seed), output_type="np").images
    np.testing.assert_array_equal(run(0), run(0))
    assert np.abs(run(0) - run(1)).max() > 1e-3


def test_images_of_different_sizes_come_back_at_their_sizes(tiny_pipe, reference):
    small = reference["preproc.lq_37x53.uint8_hwc_rgb"]
    other = np.ascontiguousarray(small[:33, :40])
    out = tiny_pipe([small, other], num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert [image.size for image in out.images] == [(53, 37), (40, 33)]
    assert len(out.degradations) == 2


def test_text_degradation_steers_the_result(tiny_pipe, lq_image):
    auto = tiny_pipe(lq_image, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np")
    steered = tiny_pipe(
        lq_image, num_inference_steps=3, generator=torch.Generator().manual_seed(0), degradation="rainy", output_type="np"
    )
    assert steered.degradations == ["rainy"] and steered.degradation_probabilities == [None]
    assert np.abs(auto.images - steered.images).max() > 1e-4
    embedding = torch.randn(tiny_pipe.unet.config.context_dim, generator=torch.Generator().manual_seed(0))
    given = tiny_pipe(lq_image, num_inference_steps=2, degradation=embedding, generator=torch.Generator().manual_seed(0))
    assert given.degradations == [None]


def test_callback_sees_every_step_and_can_interrupt(tiny_pipe, lq_image):
    seen = []

    def stop_after_two(pipe, step_index, timestep, tensors):
        seen.append(float(timestep))
        if step_index == 1:
            pipe._interrupt = True
        return tensors

    tiny_pipe(lq_image, num_inference_steps=5, callback_on_step_end=stop_after_two, generator=torch.Generator().manual_seed(0))
    assert seen == [100.0, 80.0]
    # the pipeline is usable again afterwards, from the start
    full = []
    tiny_pipe(lq_image, num_inference_steps=5, callback_on_step_end=lambda p, i, t, k: full.append(i) or k)
    assert full == [0, 1, 2, 3, 4]


def test_an_interrupted_run_leaves_nothing_behind_for_the_next_one(tiny_pipe, lq_image):
    run = lambda: tiny_pipe(lq_image, num_inference_steps=5, generator=torch.Generator().manual_seed(0), output_type="np").images
    before = run()

    # Stopped by the interrupt flag, on another step count, seed and image size: the scheduler is left mid-schedule.
    def stop_at_third(pipe, step_index, timestep, tensors):
        pipe._interrupt = step_index == 2
        return tensors

    small = np.asarray(lq_image)[:33, :40]
    tiny_pipe(small, num_inference_steps=9, generator=torch.Generator().manual_seed(5), callback_on_step_end=stop_at_third)
    np.testing.assert_array_equal(run(), before)

    # Stopped by an exception, as Ctrl-C or ComfyUI's Cancel stop it.
    def raise_at_second(pipe, step_index, timestep, tensors):
        if step_index == 1:
            raise KeyboardInterrupt
        return tensors

    with pytest.raises(KeyboardInterrupt):
        tiny_pipe(lq_image, num_inference_steps=7, generator=torch.Generator().manual_seed(9), callback_on_step_end=raise_at_second)
    np.testing.assert_array_equal(run(), before)


def test_bad_inputs_get_clear_errors(tiny_pipe, lq_image):
    with pytest.raises(ValueError, match="num_inference_steps"):
        tiny_pipe(lq_image, num_inference_steps=0)
    with pytest.raises(ValueError, match="num_inference_steps"):
        tiny_pipe(lq_image, num_inference_steps=101)
    with pytest.raises(ValueError, match="too small"):
        tiny_pipe(np.zeros((4, 4, 3), np.uint8), num_inference_steps=1)
    with pytest.raises(ValueError, match="output_type"):
        tiny_pipe(lq_image, num_inference_steps=1, output_type="jpeg")
    with pytest.raises(ValueError, match="generators"):
        tiny_pipe(lq_image, num_inference_steps=1, generator=[torch.Generator(), torch.Generator()])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        tiny_pipe(np.full((40, 40, 3), 2.0, np.float32), num_inference_steps=1)
    with pytest.raises(ValueError, match="latents"):
        tiny_pipe(lq_image, num_inference_steps=1, latents=torch.zeros(1, 3, 8, 8))


def test_mismatched_pair_is_refused_before_sampling(tiny_pipe):
    from daclip.pipelines.daclip.pipeline_daclip import check_components_match

    other = DACLIPUNet2DModel(**{**tiny_pipe.unet.config, "context_dim": 64})
    with pytest.raises(ValueError, match="not a pair"):
        check_components_match(tiny_pipe.daclip, other)


def test_save_and_load_round_trip_in_both_loaders(tiny_pipe, lq_image, tmp_path):
    tiny_pipe.save_pretrained(tmp_path / "pipe")
    assert (tmp_path / "pipe" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (tmp_path / "pipe" / "daclip" / "diffusion_pytorch_model.safetensors").is_file()
    reloaded = DACLIPPipeline.from_pretrained(tmp_path / "pipe")
    run = lambda pipe: pipe(lq_image, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np").images
    np.testing.assert_array_equal(run(tiny_pipe), run(reloaded))

    from diffusers import DiffusionPipeline

    generic = DiffusionPipeline.from_pretrained(tmp_path / "pipe", trust_remote_code=True)
    assert type(generic).__name__ == "DACLIPPipeline"
    np.testing.assert_array_equal(run(tiny_pipe), run(generic))


def test_remote_code_shims_name_an_install_that_works(tiny_pipe, tmp_path):
    """Where `daclip` is not importable, the shim says how to install it (from a clone; no `daclip` distribution
    is published), and diffusers' own scan of the file finds no package to tell the user to `pip install`."""
    import subprocess
    import sys

    from diffusers.utils import dynamic_modules_utils

    tiny_pipe.save_pretrained(tmp_path / "pipe")
    shim = tmp_path / "pipe" / "unet" / "unet_daclip.py"
    (tmp_path / "empty").mkdir()
    result = subprocess.run([sys.executable, "-I", "-S", str(shim)], capture_output=True, text=True, cwd=tmp_path / "empty")
    assert result.returncode != 0
    assert "ImportError: this pipeline folder needs the daclip package" in result.stderr
    assert "pip install -e <clone>" in result.stderr
    warnings = []
    original_warning = dynamic_modules_utils.logger.warning
    dynamic_modules_utils.logger.warning = warnings.append
    try:
        dynamic_modules_utils.check_imports(shim)
    finally:
        dynamic_modules_utils.logger.warning = original_warning
    assert warnings == []


def test_folders_with_the_earlier_shims_still_load(tiny_pipe, tmp_path):
    from daclip.pipelines.daclip import hub

    tiny_pipe.save_pretrained(tmp_path / "pipe")
    for shim in (tmp_path / "pipe").rglob("*.py"):
        class_name = shim.read_text().rsplit(" = _daclip.", 1)[1].strip()
        shim.write_text(hub._earlier_shim_source(class_name))
    assert type(DACLIPPipeline.from_pretrained(tmp_path / "pipe").unet).__name__ == "DACLIPUNet2DModel"


def test_from_pretrained_refuses_a_tampered_folder(tiny_pipe, tmp_path):
    tiny_pipe.save_pretrained(tmp_path / "pipe")
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    index["unet"] = ["unet_daclip", "SomethingElse"]
    (tmp_path / "pipe" / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="unknown unet class"):
        DACLIPPipeline.from_pretrained(tmp_path / "pipe")
    shutil.rmtree(tmp_path / "pipe" / "daclip")
    index["unet"] = ["unet_daclip", "DACLIPUNet2DModel"]
    (tmp_path / "pipe" / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="'daclip' folder is missing"):
        DACLIPPipeline.from_pretrained(tmp_path / "pipe")


DAMAGES = {
    # what is done to the first UNet weight (or the file) → what the error must say
    "wrong shape": (lambda weights, key: weights.__setitem__(key, torch.zeros(1, *weights[key].shape)), "wrong shape"),
    "integer dtype": (lambda weights, key: weights.__setitem__(key, weights[key].to(torch.int32)), "floating point"),
    "missing weight": (lambda weights, key: weights.pop(key), "missing keys"),
    "unexpected weight": (lambda weights, key: weights.__setitem__("bogus.weight", torch.zeros(2)), "unexpected keys"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_safetensors_folder_is_refused_whole(tiny_pipe, tmp_path, damage, capsys):
    from safetensors.torch import load_file, save_file

    from daclip import CheckpointError
    from daclip.cli import main

    tiny_pipe.save_pretrained(tmp_path / "pipe")
    weights_file = tmp_path / "pipe" / "unet" / "diffusion_pytorch_model.safetensors"
    weights = load_file(weights_file)
    change, message = DAMAGES[damage]
    change(weights, next(iter(weights)))
    save_file(weights, weights_file)
    # diffusers alone would load random values in place of a missing weight and cast integers silently
    with pytest.raises(CheckpointError, match=message) as error:
        DACLIPPipeline.from_pretrained(tmp_path / "pipe")
    assert "unet" in str(error.value)
    image = tmp_path / "in.png"
    PIL.Image.new("RGB", (24, 24), (90, 120, 150)).save(image)
    assert main(["restore", str(image), "-o", str(tmp_path / "out"), "--model", str(tmp_path / "pipe")]) == 3
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_variants_save_and_load_and_a_missing_one_is_named(tiny_pipe, tmp_path):
    from daclip import CheckpointError

    tiny_pipe.save_pretrained(tmp_path / "pipe", variant="fp16")
    assert (tmp_path / "pipe" / "unet" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    loaded = DACLIPPipeline.from_pretrained(tmp_path / "pipe", variant="fp16")
    for name in ("daclip", "unet"):
        original, reloaded = getattr(tiny_pipe, name).state_dict(), getattr(loaded, name).state_dict()
        assert all(torch.equal(original[key], reloaded[key]) for key in original)
    with pytest.raises(CheckpointError, match="has no weights without a variant; it holds variant='fp16'"):
        DACLIPPipeline.from_pretrained(tmp_path / "pipe")
    with pytest.raises(CheckpointError, match="has no variant 'bf16'; it holds variant='fp16'"):
        DACLIPPipeline.from_pretrained(tmp_path / "pipe", variant="bf16")
    from daclip import load_unet

    assert load_unet(tmp_path / "pipe", variant="fp16")[0].config.context_dim == 32


def test_from_pretrained_options_are_honoured_or_refused_by_name(tiny_pipe, tmp_path):
    tiny_pipe.save_pretrained(tmp_path / "pipe")
    pipe = DACLIPPipeline.from_pretrained(tmp_path / "pipe", use_safetensors=True, low_cpu_mem_usage=False, torch_dtype=torch.bfloat16)
    assert pipe.unet.dtype == torch.bfloat16 and pipe.daclip.dtype == torch.bfloat16
    with pytest.raises(TypeError, match=r"does not support device_map \(load, then move with \.to\(device\)"):
        DACLIPPipeline.from_pretrained(tmp_path / "pipe", device_map="auto")
    with pytest.raises(TypeError, match=r"does not support colour \(unknown argument\)"):
        DACLIPPipeline.from_pretrained(tmp_path / "pipe", colour="red")


def test_an_incompatible_scheduler_is_refused_at_assignment(tiny_pipe):
    from diffusers import DDIMScheduler

    from daclip.pipelines.daclip.pipeline_daclip import compatible_schedulers

    pipe = DACLIPPipeline(daclip=tiny_pipe.daclip, unet=tiny_pipe.unet, scheduler=tiny_pipe.scheduler)
    names = ", ".join(cls.__name__ for cls in compatible_schedulers())
    assert {"IRSDEScheduler", "IRSDEPosteriorScheduler"} <= set(names.split(", "))
    with pytest.raises(TypeError, match=f"DDIMScheduler cannot sample DACLIPPipeline.*Compatible: {names}"):
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    assert pipe.scheduler is tiny_pipe.scheduler  # unchanged
    with pytest.raises(TypeError, match="DDIMScheduler cannot sample"):
        DACLIPPipeline(daclip=tiny_pipe.daclip, unet=tiny_pipe.unet, scheduler=DDIMScheduler())
    for compatible in compatible_schedulers():
        pipe.scheduler = compatible.from_config(tiny_pipe.scheduler.config)
        assert pipe.config.scheduler[1] == compatible.__name__


def test_scheduler_swap_keeps_the_config(tiny_pipe):
    swapped = IRSDEScheduler.from_config(tiny_pipe.scheduler.config)
    back = IRSDEPosteriorScheduler.from_config(swapped.config)
    assert back.config.max_sigma == tiny_pipe.scheduler.config.max_sigma
    assert back.config.num_train_timesteps == tiny_pipe.scheduler.config.num_train_timesteps


def _fake_hub_cache(cache_dir, repo_id, files):
    """Lay out files exactly as huggingface_hub's cache does, so offline look-ups find them."""
    repo_folder = cache_dir / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo_folder / "snapshots" / commit
    for relative, source in files.items():
        target = snapshot / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    (repo_folder / "refs").mkdir(parents=True, exist_ok=True)
    (repo_folder / "refs" / "main").write_text(commit)
    return snapshot


def test_released_files_are_found_through_the_hub_cache(weights_dir, tmp_path):
    daclip_name, unet_name = ORIGINAL_CHECKPOINTS["universal"]
    _fake_hub_cache(
        tmp_path, ORIGINAL_REPO_ID, {daclip_name: weights_dir / "daclip_tiny.pt", unet_name: weights_dir / "universal-ir_tiny.pth"}
    )
    daclip_path, unet_path = download_original_checkpoints("universal", cache_dir=tmp_path, local_files_only=True)
    assert os.path.basename(daclip_path) == daclip_name and os.path.basename(unet_path) == unet_name
    unet = DACLIPUNet2DModel.from_original_checkpoint(unet_path)
    assert unet.config.context_dim == 32
    with pytest.raises(ValueError, match="unknown variant"):
        download_original_checkpoints("large", cache_dir=tmp_path, local_files_only=True)


def test_hub_id_loads_without_trust_remote_code(tiny_pipe, tmp_path):
    tiny_pipe.save_pretrained(tmp_path / "saved")
    files = {str(path.relative_to(tmp_path / "saved")): path for path in (tmp_path / "saved").rglob("*") if path.is_file()}
    _fake_hub_cache(tmp_path / "cache", "someone/daclip-tiny", files)
    pipe = DACLIPPipeline.from_pretrained("someone/daclip-tiny", cache_dir=tmp_path / "cache", local_files_only=True)
    assert isinstance(pipe.daclip, DACLIPModel) and isinstance(pipe.scheduler, IRSDEPosteriorScheduler)


def test_real_photos_of_every_shape_and_mode_keep_their_size(tiny_pipe):
    from conftest import TESTDATA

    photos = sorted((TESTDATA / "degraded").iterdir())
    assert len(photos) >= 6
    for path in photos:
        with PIL.Image.open(path) as image:
            image.load()
            out = tiny_pipe(image, num_inference_steps=1, generator=torch.Generator().manual_seed(0))
            assert out.images[0].size == image.size, path.name
            # What comes in goes out: RGBA keeps its alpha (image_processing.like_source), RGB stays RGB.
            assert out.images[0].mode == image.mode, path.name
            if image.mode == "RGBA":
                assert out.images[0].getchannel("A").tobytes() == image.getchannel("A").tobytes()


def test_tuple_output_equals_dict_output(tiny_pipe, lq_image):
    as_dict = tiny_pipe(lq_image, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np")
    images, labels, probabilities = tiny_pipe(
        lq_image, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np", return_dict=False
    )
    np.testing.assert_array_equal(images, as_dict.images)
    assert labels == as_dict.degradations and probabilities == as_dict.degradation_probabilities


def test_callback_can_replace_the_state(tiny_pipe, lq_image):
    def pin_to_mu(pipe, step_index, timestep, tensors):
        return {"latents": tensors["mu"].clone()}

    out = tiny_pipe(
        lq_image,
        num_inference_steps=1,
        callback_on_step_end=pin_to_mu,
        callback_on_step_end_tensor_inputs=["latents", "mu"],
        output_type="np",
    )
    np.testing.assert_allclose(out.images[0], np.asarray(lq_image, np.float32) / 255, atol=1e-6)
    with pytest.raises(ValueError, match="callback_on_step_end_tensor_inputs"):
        tiny_pipe(lq_image, num_inference_steps=1, callback_on_step_end=pin_to_mu, callback_on_step_end_tensor_inputs=["noise"])


def test_sixteen_bit_grayscale_and_rgba_inputs_are_converted_as_documented(tiny_pipe, lq_image):
    rgb = np.asarray(lq_image)
    sixteen = (rgb.astype(np.uint16) * 257)
    run = lambda image: tiny_pipe(image, num_inference_steps=1, generator=torch.Generator().manual_seed(0), output_type="np").images
    np.testing.assert_allclose(run(sixteen), run(rgb), atol=1e-5)
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(run(rgba), run(rgb))  # alpha dropped
    gray = PIL.Image.fromarray(rgb[:, :, 0])
    np.testing.assert_array_equal(run(gray), run(np.repeat(rgb[:, :, :1], 3, axis=2)))


def test_dtype_casts_work_without_false_warnings(tiny_pipe, lq_image, caplog):
    import logging

    from diffusers.utils import logging as diffusers_logging

    pipe = DACLIPPipeline(
        DACLIPModel.from_config(tiny_pipe.daclip.config), DACLIPUNet2DModel.from_config(tiny_pipe.unet.config), tiny_pipe.scheduler
    )
    pipe.daclip.load_state_dict(tiny_pipe.daclip.state_dict())
    pipe.unet.load_state_dict(tiny_pipe.unet.state_dict())
    diffusers_logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING):
            pipe.to(dtype=torch.bfloat16)
    finally:
        diffusers_logging.disable_propagation()
    assert not [r for r in caplog.records if "kept in float32" in r.getMessage()]
    assert pipe.unet.dtype == torch.bfloat16 and pipe.daclip.dtype == torch.bfloat16
    out = pipe(lq_image, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np")
    assert out.images.dtype == np.float32 and np.isfinite(out.images).all()


def test_precomputed_embeddings_give_the_same_result_without_daclip(tiny_pipe, lq_image):
    lq = torch.from_numpy(np.asarray(lq_image, np.float32) / 255).permute(2, 0, 1)[None]
    content, degradation = tiny_pipe.encode_image(lq, torch.device("cpu"))
    auto = tiny_pipe(lq_image, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np")
    without_daclip = DACLIPPipeline(daclip=None, unet=tiny_pipe.unet, scheduler=tiny_pipe.scheduler)
    without_daclip.set_progress_bar_config(disable=True)
    given = without_daclip(
        lq_image,
        num_inference_steps=3,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
        content_embeds=content[0],
        degradation_embeds=degradation,
    )
    np.testing.assert_array_equal(given.images, auto.images)
    assert given.degradations == [None]
    with pytest.raises(ValueError, match="together"):
        without_daclip(lq_image, num_inference_steps=1, content_embeds=content)
    with pytest.raises(ValueError, match="not degradation"):
        without_daclip(lq_image, num_inference_steps=1, content_embeds=content, degradation_embeds=degradation, degradation="rainy")
    with pytest.raises(ValueError, match="rows for"):
        without_daclip([lq_image] * 3, num_inference_steps=1, content_embeds=content.repeat(2, 1), degradation_embeds=degradation)
