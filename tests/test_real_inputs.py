"""Real inputs, real failures (issue 17): what users of image tools have reported, each kept as a test.

A: one bad input never sinks a run. B: what comes in goes out (orientation, ICC, gray, 16-bit, alpha, frames).
D: a result is a finished restoration, or it says it is not. E: limits come from the model, usage errors come
before anything loads. Tiny models from the parity fixtures and images of a few dozen pixels.
"""
import io
import logging
import re
import struct

import numpy as np
import PIL.Image
import PIL.ImageSequence
import pytest
import torch
from PIL import ImageCms

from conftest import decompression_bomb
from daclip import DACLIPPipeline
from daclip.cli import check_against_model, main
from daclip.daclip_nodes import comfy_adapter, nodes
from daclip.pipelines.daclip.image_processing import (
    IMAGE_SUFFIXES,
    comfy_image_to_batch,
    read_image_file,
    to_float_image,
    to_rgb_tensors,
)
from daclip.schedulers import IRSDEPosteriorScheduler


@pytest.fixture(scope="module")
def pipe(weights_dir, parity_dir):
    pipe = DACLIPPipeline.from_original_checkpoints(
        weights_dir / "daclip_tiny.pt", weights_dir / "universal-ir_tiny.pth", daclip_config=parity_dir / "daclip_tiny.json"
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def photo(height=32, width=40, seed=0):
    """A smooth colour picture (uint8 HWC), different per seed."""
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(seed)
    channels = [np.sin(x / (5 + 3 * c) + rng.uniform(0, 6)) + np.cos(y / (4 + 2 * c)) for c in range(3)]
    return np.round((np.stack(channels, -1) + 2) / 4 * 255).astype(np.uint8)


def run(pipe, image, **kwargs):
    return pipe(image, num_inference_steps=1, generator=torch.Generator().manual_seed(0), **kwargs)


def s15(x): return struct.pack(">i", int(round(x * 65536)))

def cmyk_profile(swap=True):
    """A small ICC v2 CMYK input profile (lut8 A2B0, 2-point grid): the plain formula RGB = (1 - C)(1 - K) ..., with
    red and blue swapped when `swap`, so that a conversion through it is told apart from one without it."""
    corners = np.array([[c, m, y, k] for c in (0, 1) for m in (0, 1) for y in (0, 1) for k in (0, 1)], float)
    rgb = np.stack([(1 - corners[:, i]) * (1 - corners[:, 3]) for i in range(3)], 1)
    if swap:
        rgb = rgb[:, ::-1]
    srgb = PIL.Image.fromarray(np.round(rgb * 255).astype(np.uint8)[None])
    lab = ImageCms.profileToProfile(srgb, ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), outputMode="LAB")
    lab = np.asarray(lab).reshape(-1, 3)
    # Pillow's LAB mode stores a*, b* as signed bytes; lut8's Lab encoding adds 128.
    clut = np.concatenate([lab[:, :1], (lab[:, 1:].view(np.int8).astype(np.int16) + 128)], 1).astype(np.uint8).tobytes()
    ramp = bytes(range(256))
    a2b0 = b"mft1" + bytes(4) + bytes([4, 3, 2, 0]) + b"".join(s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
    a2b0 += ramp * 4 + clut + ramp * 3
    text = b"test CMYK"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text) + 1) + text + b"\0" + bytes(4) + bytes(4) + bytes(2) + bytes(1) + bytes(67)
    wtpt = b"XYZ " + bytes(4) + s15(0.9642) + s15(1.0) + s15(0.8249)
    cprt = b"text" + bytes(4) + b"none\0"
    tags = [(b"desc", desc), (b"wtpt", wtpt), (b"cprt", cprt), (b"A2B0", a2b0)]
    offset = 128 + 4 + 12 * len(tags)
    table, data = struct.pack(">I", len(tags)), b""
    for sig, body in tags:
        body += bytes(-len(body) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = struct.pack(">I", size) + b"lcms" + bytes([2, 0x10, 0, 0]) + b"scnr" + b"CMYK" + b"Lab " + bytes(12)
    header += b"acsp" + b"APPL" + bytes(4) + bytes(4) + bytes(4) + bytes(8) + bytes(4) + s15(0.9642) + s15(1.0) + s15(0.8249)
    header += b"lcms" + bytes(44)
    assert len(header) == 128, len(header)
    return header + table + data


def failed_lines(err):
    return re.findall(r"failed [^\r\n]*", err)


def cli(*args, model_args):
    return main([*args, *model_args, "--steps", "1"])


# ===========================================================================================================
# A: one input never sinks the run
# ===========================================================================================================
def test_a_decompression_bomb_fails_alone_in_restore_and_detect(tmp_path, tiny_model_args, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    PIL.Image.fromarray(photo(seed=1)).save(folder / "a.png")
    decompression_bomb(folder / "b.png")
    PIL.Image.fromarray(photo(seed=2)).save(folder / "c.png")
    assert cli("restore", str(folder), "-o", str(tmp_path / "out"), model_args=tiny_model_args) == 1
    err = capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "c.png"]
    failed = failed_lines(err)
    assert len(failed) == 1 and "b.png" in failed[0] and "decompression bomb" in failed[0]
    assert "Traceback" not in err

    detect_args = [a for a in tiny_model_args if "universal-ir" not in a and a != "--unet"]
    assert main(["detect", str(folder), "--json", *detect_args]) == 1
    captured = capsys.readouterr()
    assert [record["image"].rsplit("/", 1)[-1] for record in __import__("json").loads(captured.out)] == ["a.png", "c.png"]
    assert "b.png" in captured.err and "Traceback" not in captured.err


@pytest.mark.parametrize("error", [torch.OutOfMemoryError, MemoryError])
def test_running_out_of_memory_fails_that_file_with_a_hint(tmp_path, tiny_model_args, capsys, monkeypatch, error):
    folder = tmp_path / "in"
    folder.mkdir()
    for index, name in enumerate(("a", "b", "c")):
        PIL.Image.fromarray(photo(32, 40 + 8 * index, seed=index)).save(folder / f"{name}.png")
    original = DACLIPPipeline.__call__

    def call(self, image, *args, **kwargs):
        if image.size == (48, 32):  # b.png
            raise error("simulated: tried to allocate 9.3 GiB")
        return original(self, image, *args, **kwargs)

    monkeypatch.setattr(DACLIPPipeline, "__call__", call)
    assert cli("restore", str(folder), "-o", str(tmp_path / "out"), model_args=tiny_model_args) == 1
    err = capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "c.png"]
    (line,) = failed_lines(err)
    assert "b.png" in line and "out of memory" in line and "--tile-size" in line and "--dtype" in line
    assert "Traceback" not in err


def test_a_rerun_skips_what_is_done_and_names_never_depend_on_other_files(tmp_path, tiny_model_args, capsys):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    PIL.Image.fromarray(photo(seed=1)).save(folder / "x.jpg")
    PIL.Image.fromarray(photo(seed=2)).save(folder / "sub" / "x.png")
    out = tmp_path / "out"
    assert cli("restore", str(folder), "-o", str(out), "--recursive", model_args=tiny_model_args) == 0
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == ["sub/x.png", "x.png"]
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    capsys.readouterr()

    # The same command again: everything counts as done, nothing is redone.
    assert cli("restore", str(folder), "-o", str(out), "--recursive", model_args=tiny_model_args) == 0
    assert "done already" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == stamps

    # A new input beside a finished one: restored, and the finished one stays done.
    PIL.Image.fromarray(photo(seed=3)).save(folder / "y.png")
    assert cli("restore", str(folder), "-o", str(out), "--recursive", model_args=tiny_model_args) == 0
    assert (out / "y.png").is_file() and (out / "x.png").stat().st_mtime_ns == stamps[out / "x.png"]

    # x.bmp beside x.jpg would share x.png: refused by name before anything runs, nothing redone or skipped.
    PIL.Image.fromarray(photo(seed=4)).save(folder / "x.bmp")
    assert cli("restore", str(folder), "-o", str(out), model_args=tiny_model_args) == 2
    err = capsys.readouterr().err
    assert "x.bmp" in err and "x.jpg" in err and "Traceback" not in err
    (folder / "x.bmp").unlink()

    # x.jpg's result restored from another file of the same stem, in a separate run, is not x.jpg's result.
    other = tmp_path / "other"
    other.mkdir()
    PIL.Image.fromarray(photo(seed=5)).save(other / "x.webp")
    assert cli("restore", str(other / "x.webp"), "-o", str(out), model_args=tiny_model_args) == 1
    assert "not its result" in capsys.readouterr().err
    assert (out / "x.png").stat().st_mtime_ns == stamps[out / "x.png"]


def test_a_bad_file_never_sinks_a_training_run(tmp_path):
    from daclip.data.datasets import SyntheticDegradationDataset

    folder = tmp_path / "clean"
    folder.mkdir()
    PIL.Image.fromarray(photo(seed=1)).save(folder / "a.png")
    decompression_bomb(folder / "b.png")
    (folder / "c.jpg").write_bytes(b"\xff\xd8 not really")
    PIL.Image.fromarray(photo(seed=2)).save(folder / "d.png")
    dataset = SyntheticDegradationDataset(folder, degradations=["noisy"], crop_size=16, seed=0)
    with pytest.warns(UserWarning) as caught:
        items = [dataset[index] for index in range(len(dataset))]
    messages = [str(warning.message) for warning in caught]
    assert any("b.png" in m and "decompression bomb" in m for m in messages)
    assert any("c.jpg" in m and "cannot read" in m for m in messages)
    # The bad items are replaced by the next readable one: d for b and c.
    assert [item["image_index"] for item in items] == [0, 3, 3, 3]
    assert all(item["gt"].shape == (3, 16, 16) for item in items)


# ===========================================================================================================
# B: what comes in goes out
# ===========================================================================================================
@pytest.fixture()
def sideways_jpeg(tmp_path):
    """A 64 × 48 JPEG stored as 48 × 64 pixels with EXIF orientation 6 (rotate 90° clockwise to view)."""
    upright = photo(48, 64, seed=7)
    stored = PIL.Image.fromarray(upright).transpose(PIL.Image.Transpose.ROTATE_90)  # what a phone writes
    exif = PIL.Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "sideways.jpg"
    stored.save(path, quality=95, exif=exif.tobytes())
    return path


def test_exif_orientation_is_applied_in_the_api_the_cli_and_the_node(pipe, sideways_jpeg, tmp_path, tiny_model_args):
    with PIL.Image.open(sideways_jpeg) as image:
        assert image.size == (48, 64)  # stored sideways
        restored = run(pipe, image).images[0]
        upright = PIL.ImageOps.exif_transpose(image)
    assert restored.size == (64, 48)
    np.testing.assert_array_equal(np.asarray(restored), np.asarray(run(pipe, np.asarray(upright)).images[0]))
    assert to_float_image(PIL.Image.open(sideways_jpeg)).shape == (48, 64, 3)  # the training loaders too

    assert cli("restore", str(sideways_jpeg), "-o", str(tmp_path / "out"), model_args=tiny_model_args) == 0
    with PIL.Image.open(tmp_path / "out" / "sideways.png") as written:
        assert written.size == (64, 48) and written.getexif().get(0x0112, 1) == 1

    # ComfyUI's Load Image applies the orientation (ImageOps.exif_transpose); the node keeps it.
    image = torch.from_numpy(np.asarray(upright, dtype=np.float32) / 255)[None]
    handle = nodes.RestorationModelHandle(pipe.unet, dict(pipe.scheduler.config), "tiny", torch.device("cpu"), torch.device("cpu"))
    daclip = nodes.DACLIPHandle(pipe.daclip, "tiny", torch.device("cpu"), torch.device("cpu"))
    (embeds,) = nodes.DACLIPEncodeImage().encode(daclip, image)
    (out,) = nodes.DACLIPRestore().restore(handle, image, embeds, "posterior", 1, 0)
    assert out.shape == (1, 48, 64, 3)


def test_icc_profiles_survive_api_and_cli(pipe, tmp_path, tiny_model_args):
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for suffix in ("png", "jpg"):
        path = tmp_path / f"tagged.{suffix}"
        PIL.Image.fromarray(photo(seed=3)).save(path, icc_profile=profile)
        with PIL.Image.open(path) as image:
            assert run(pipe, image).images[0].info["icc_profile"] == profile
        out = tmp_path / f"out_{suffix}"
        assert cli("restore", str(path), "-o", str(out), model_args=tiny_model_args) == 0
        with PIL.Image.open(out / "tagged.png") as written:
            assert written.info.get("icc_profile") == profile


def test_cmyk_is_converted_through_its_own_profile(pipe, tmp_path):
    profile = cmyk_profile()
    PIL.Image.fromarray(photo(seed=8)).convert("CMYK").save(tmp_path / "print.jpg", icc_profile=profile, quality=95)
    with PIL.Image.open(tmp_path / "print.jpg") as image:
        assert image.mode == "CMYK" and image.info["icc_profile"] == profile
        managed = np.asarray(ImageCms.profileToProfile(
            image, ImageCms.ImageCmsProfile(io.BytesIO(profile)), ImageCms.createProfile("sRGB"), outputMode="RGB"
        ))
        plain = np.asarray(image.convert("RGB"))
        read = np.round(to_rgb_tensors(image)[0].permute(1, 2, 0).numpy() * 255)
        restored = run(pipe, image).images[0]
    np.testing.assert_array_equal(read, managed)
    assert np.abs(plain.astype(int) - managed).mean() > 20, "the profile matters for this image"
    assert restored.mode == "RGB" and "icc_profile" not in restored.info  # converted to sRGB, said by no profile


def test_grayscale_comes_back_grayscale_without_a_cast(pipe, tmp_path, tiny_model_args):
    gray = PIL.Image.fromarray(photo(seed=4)).convert("L")
    restored = run(pipe, gray).images[0]
    assert restored.mode == "L"
    # The model restores the gray image as RGB; the result is its luma.
    expected = run(pipe, gray.convert("RGB")).images[0].convert("L")
    np.testing.assert_array_equal(np.asarray(restored), np.asarray(expected))

    gray.save(tmp_path / "gray.png")
    assert cli("restore", str(tmp_path / "gray.png"), "-o", str(tmp_path / "out"), model_args=tiny_model_args) == 0
    assert PIL.Image.open(tmp_path / "out" / "gray.png").mode == "L"


def test_sixteen_bit_gray_comes_back_sixteen_bit(pipe, tmp_path, tiny_model_args):
    values = (photo(seed=5)[:, :, 0].astype(np.uint16) * 257 + 100).clip(0, 65535).astype(np.uint16)
    path = tmp_path / "deep.png"
    PIL.Image.fromarray(values).save(path)
    with PIL.Image.open(path) as image:
        restored = run(pipe, image)
        as_float = run(pipe, image, output_type="np").images[0]
    assert restored.images[0].mode == "I;16"
    deep = np.asarray(restored.images[0]).astype(np.float64) / 65535
    np.testing.assert_allclose(deep, as_float @ np.array([0.299, 0.587, 0.114]), atol=1 / 65535)
    assert len(np.unique(np.asarray(restored.images[0]) % 257)) > 1, "more than 8-bit precision"
    assert cli("restore", str(path), "-o", str(tmp_path / "out"), model_args=tiny_model_args) == 0
    with PIL.Image.open(tmp_path / "out" / "deep.png") as written:
        assert written.mode.startswith("I") and np.asarray(written).max() > 255


def test_alpha_is_put_back(pipe):
    rgba = np.dstack([photo(seed=6), np.tile(np.arange(40, dtype=np.uint8) * 6, (32, 1))])
    restored = run(pipe, PIL.Image.fromarray(rgba, "RGBA")).images[0]
    assert restored.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(restored)[:, :, 3], rgba[:, :, 3])
    rgb = run(pipe, PIL.Image.fromarray(rgba[:, :, :3])).images[0]
    np.testing.assert_array_equal(np.asarray(restored)[:, :, :3], np.asarray(rgb))


def _frames():
    return [PIL.Image.fromarray(photo(32, 40, seed=10 + index)) for index in range(3)]


@pytest.mark.parametrize("suffix", [".gif", ".webp", ".tiff"])
def test_every_frame_of_animated_and_multi_page_files_is_restored(suffix, tmp_path, tiny_model_args, capsys):
    assert suffix in IMAGE_SUFFIXES
    folder = tmp_path / "in"
    folder.mkdir()
    frames = _frames()
    options = {"duration": [70, 80, 90], "loop": 0} if suffix != ".tiff" else {}
    frames[0].save(folder / f"clip{suffix}", save_all=True, append_images=frames[1:], **options)
    assert cli("restore", str(folder), "-o", str(tmp_path / "out"), model_args=tiny_model_args) == 0
    assert "3 frames" in capsys.readouterr().out
    read_back = read_image_file(folder / f"clip{suffix}")
    with PIL.Image.open(tmp_path / "out" / "clip.png") as written:
        assert written.n_frames == 3
        restored = [frame.convert("RGB").copy() for frame in PIL.ImageSequence.Iterator(written)]
        if suffix != ".tiff":
            assert [frame.info.get("duration") for frame in PIL.ImageSequence.Iterator(written)] == [70, 80, 90]
    # Frame k of the result is frame k restored alone (same seed), not frame 0 again.
    assert main(["restore", str(tmp_path / "in"), "-o", str(tmp_path / "single"), *tiny_model_args, "--steps", "1"]) == 0
    for index in (0, 2):
        alone = tmp_path / f"frame{index}.png"
        read_back[index].save(alone)
        assert main(["restore", str(alone), "-o", str(tmp_path / "alone"), *tiny_model_args, "--steps", "1"]) == 0
        expected = np.asarray(PIL.Image.open(tmp_path / "alone" / alone.name).convert("RGB"))
        np.testing.assert_array_equal(np.asarray(restored[index]), expected)


def test_a_multi_frame_pil_image_in_the_api_is_named_in_a_warning(pipe, tmp_path, caplog):
    frames = _frames()
    frames[0].save(tmp_path / "clip.gif", save_all=True, append_images=frames[1:])
    with PIL.Image.open(tmp_path / "clip.gif") as image, caplog.at_level(logging.WARNING):
        to_rgb_tensors(image)
    assert "3 frames" in caplog.text and "ImageSequence" in caplog.text


def test_one_reading_rule_for_api_nodes_and_training_loaders():
    """Float overshoot is clipped everywhere, another scale is refused everywhere, int32 is refused everywhere."""
    slightly = np.full((8, 8, 3), 1.05, np.float32)
    assert float(to_rgb_tensors(slightly)[0].max()) == 1.0
    assert float(to_float_image(slightly).max()) == 1.0
    assert float(comfy_image_to_batch(torch.from_numpy(slightly)[None]).max()) == 1.0
    for convert in (to_rgb_tensors, to_float_image, lambda a: comfy_image_to_batch(torch.from_numpy(a)[None])):
        with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
            convert(np.full((8, 8, 3), 255.0, np.float32))
    with pytest.raises(TypeError, match="int32"):
        to_rgb_tensors(np.zeros((8, 8), np.int32))
    with pytest.raises(TypeError, match="int32"):
        to_float_image(np.zeros((8, 8), np.int32))
    sixteen = PIL.Image.fromarray(np.full((4, 4), 65535, np.int32), "I")  # how Pillow opens 16-bit gray PNGs
    assert float(to_rgb_tensors(sixteen)[0].min()) == 1.0 and float(to_float_image(sixteen).min()) == 1.0


# ===========================================================================================================
# D: a result is a finished restoration, or it says it is not
# ===========================================================================================================
@pytest.fixture()
def nan_from_third_call(pipe):
    calls = []

    def hook(module, args, output):
        calls.append(1)
        if len(calls) >= 3:
            output.sample.fill_(float("nan"))

    handle = pipe.unet.register_forward_hook(hook)
    yield calls
    handle.remove()


def test_nan_from_the_unet_raises_naming_step_and_dtype(pipe, nan_from_third_call):
    with pytest.raises(FloatingPointError, match=r"step 3 of 4.*torch\.float32"):
        pipe(PIL.Image.fromarray(photo()), num_inference_steps=4, generator=torch.Generator().manual_seed(0))


def test_nan_in_float16_suggests_float32_or_bfloat16(pipe, nan_from_third_call):
    pipe.unet.to(torch.float16)
    try:
        with pytest.raises(FloatingPointError, match=r"step 3.*float16.*float32.*bfloat16"):
            pipe(PIL.Image.fromarray(photo()), num_inference_steps=3, generator=torch.Generator().manual_seed(0))
    finally:
        pipe.unet.to(torch.float32)


def test_nan_fails_the_node_and_the_cli_file(pipe, nan_from_third_call, tmp_path, monkeypatch, capsys, tiny_model_args):
    image = torch.from_numpy(photo().astype(np.float32) / 255)[None]
    handle = nodes.RestorationModelHandle(pipe.unet, dict(pipe.scheduler.config), "tiny", torch.device("cpu"), torch.device("cpu"))
    daclip = nodes.DACLIPHandle(pipe.daclip, "tiny", torch.device("cpu"), torch.device("cpu"))
    (embeds,) = nodes.DACLIPEncodeImage().encode(daclip, image)
    with pytest.raises(FloatingPointError, match="step 3"):
        nodes.DACLIPRestore().restore(handle, image, embeds, "posterior", 4, 0)

    nan_from_third_call.clear()
    monkeypatch.setattr("daclip.cli.load_pipeline", lambda args: pipe)
    PIL.Image.fromarray(photo()).save(tmp_path / "x.png")
    assert main(["restore", str(tmp_path / "x.png"), "-o", str(tmp_path / "out"), "--steps", "4", *tiny_model_args]) == 1
    err = capsys.readouterr().err
    assert "failed" in err and "step 3" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "x.png").exists(), "no black image is written"


def test_nan_in_da_clip_is_an_error_not_a_label(pipe):
    def hook(module, args, output):
        if output.degradation_embeds is not None:  # image calls, not the label texts'
            output.degradation_embeds.fill_(float("nan"))

    handle = pipe.daclip.register_forward_hook(hook)
    try:
        with pytest.raises(FloatingPointError, match="float32"):
            pipe.detect_degradation(photo())
        with pytest.raises(FloatingPointError, match="DA-CLIP"):
            run(pipe, photo())
    finally:
        handle.remove()


def test_an_early_stop_says_the_images_are_not_finished(pipe, caplog):
    def stop(pipe, step_index, timestep, tensors):
        pipe._interrupt = step_index == 0
        return tensors

    with caplog.at_level(logging.WARNING):
        pipe(PIL.Image.fromarray(photo()), num_inference_steps=3, generator=torch.Generator().manual_seed(0),
             callback_on_step_end=stop)
    assert "after 1 of 3 steps" in caplog.text and "not finished" in caplog.text


# ===========================================================================================================
# E: limits from the model, usage errors before anything loads
# ===========================================================================================================
def test_step_limits_come_from_the_scheduler(pipe):
    import argparse

    long_pipe = DACLIPPipeline(pipe.daclip, pipe.unet, IRSDEPosteriorScheduler(num_train_timesteps=1000))
    check_against_model(argparse.Namespace(steps=150, tile_size=None, tile_overlap=32), long_pipe)
    from daclip.cli import UsageError

    with pytest.raises(UsageError, match="1 to 100 .*num_train_timesteps = 100"):
        check_against_model(argparse.Namespace(steps=150, tile_size=None, tile_overlap=32), pipe)
    assert nodes.DACLIPRestore.INPUT_TYPES()["required"]["steps"][1]["max"] >= 1000

    run(pipe, PIL.Image.fromarray(photo()))  # warm
    out = pipe(photo(), num_inference_steps=np.int64(1), generator=torch.Generator().manual_seed(0), output_type="np",
               tile_size=np.int64(32), tile_overlap=np.int32(8))
    assert out.images.shape == (1, 32, 40, 3)

    short = dict(IRSDEPosteriorScheduler(num_train_timesteps=2).config)
    handle = nodes.RestorationModelHandle(pipe.unet, short, "short", torch.device("cpu"), torch.device("cpu"))
    daclip = nodes.DACLIPHandle(pipe.daclip, "tiny", torch.device("cpu"), torch.device("cpu"))
    image = torch.from_numpy(photo().astype(np.float32) / 255)[None]
    (embeds,) = nodes.DACLIPEncodeImage().encode(daclip, image)
    with pytest.raises(ValueError, match="from 1 to 2 .*num_train_timesteps = 2"):
        nodes.DACLIPRestore().restore(handle, image, embeds, "posterior", 3, 0)


def test_tile_size_zero_is_the_whole_image(tmp_path, tiny_model_args):
    PIL.Image.fromarray(photo()).save(tmp_path / "x.png")
    assert cli("restore", str(tmp_path / "x.png"), "-o", str(tmp_path / "a"), model_args=tiny_model_args) == 0
    assert cli("restore", str(tmp_path / "x.png"), "-o", str(tmp_path / "b"), "--tile-size", "0",
               model_args=tiny_model_args) == 0
    np.testing.assert_array_equal(np.asarray(PIL.Image.open(tmp_path / "a" / "x.png")),
                                  np.asarray(PIL.Image.open(tmp_path / "b" / "x.png")))


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["restore", "{img}", "-o", "{out}", "--device", "gpu"], "not a device"),
        (["restore", "{img}", "-o", "{out}", "--tile-size", "8"], "--tile-size"),
        (["restore", "{img}", "-o", "{out}", "--tile-size", "64", "--tile-overlap", "40"], "--tile-overlap"),
        (["detect", "{img}", "--labels", "hazy,,rainy"], "empty label"),
        (["detect", "{img}", "--unet", "{model}"], "--unet is not used"),
    ]
    + ([] if torch.cuda.is_available() else [(["restore", "{img}", "-o", "{out}", "--device", "cuda"], "no CUDA")]),
)
def test_usage_errors_come_before_anything_loads(arguments, message, tmp_path, capsys):
    PIL.Image.fromarray(photo()).save(tmp_path / "x.png")
    missing = str(tmp_path / "no-such-model.pt")  # loading it would be exit 3
    filled = [a.format(img=tmp_path / "x.png", out=tmp_path / "out", model=missing) for a in arguments]
    assert main([*filled, "--daclip", missing]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.fixture()
def batch_setup(pipe):
    images = torch.from_numpy(np.stack([photo(seed=s) for s in range(3)]).astype(np.float32) / 255)
    handle = nodes.RestorationModelHandle(pipe.unet, dict(pipe.scheduler.config), "tiny", torch.device("cpu"), torch.device("cpu"))
    daclip = nodes.DACLIPHandle(pipe.daclip, "tiny", torch.device("cpu"), torch.device("cpu"))
    (embeds,) = nodes.DACLIPEncodeImage().encode(daclip, images)
    return images, handle, embeds


def test_the_restore_node_splits_a_batch_with_the_same_pixels(batch_setup, monkeypatch):
    images, handle, embeds = batch_setup
    (whole,) = nodes.DACLIPRestore().restore(handle, images, embeds, "sde", 2, 5)
    monkeypatch.setattr(comfy_adapter, "images_that_fit", lambda device, per_image, batch: 1)
    (split,) = nodes.DACLIPRestore().restore(handle, images, embeds, "sde", 2, 5)
    torch.testing.assert_close(split, whole, rtol=0, atol=1e-6)

    # Running out of memory halves the sub-batch; the pixels stay the same.
    monkeypatch.undo()
    original, sizes = DACLIPPipeline.__call__, []

    def call(self, image, *args, **kwargs):
        sizes.append(len(image))
        if len(image) > 1:
            raise torch.OutOfMemoryError("simulated")
        return original(self, image, *args, **kwargs)

    monkeypatch.setattr(DACLIPPipeline, "__call__", call)
    (retried,) = nodes.DACLIPRestore().restore(handle, images, embeds, "sde", 2, 5)
    assert sizes == [3, 1, 1, 1]
    torch.testing.assert_close(retried, whole, rtol=0, atol=1e-6)


def test_one_image_too_large_names_tile_size_and_the_model_goes_back(batch_setup, monkeypatch):
    images, handle, embeds = batch_setup
    moves = []
    original_to = handle.unet.to
    monkeypatch.setattr(handle.unet, "to", lambda *a, **k: moves.append(a) or original_to(*a, **k))

    def out_of_memory(self, *args, **kwargs):
        raise torch.OutOfMemoryError("simulated")

    monkeypatch.setattr(DACLIPPipeline, "__call__", out_of_memory)
    with pytest.raises(MemoryError, match="tile_size"):
        nodes.DACLIPRestore().restore(handle, images, embeds, "sde", 2, 5)
    assert moves[-1] == (handle.offload_device,)
