"""The `daclip` command line, run as a user would (in process for speed, plus the installed script once)."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest

from daclip.cli import main


@pytest.fixture()
def model_args(tiny_model_args):
    return tiny_model_args


@pytest.fixture()
def photos(tmp_path, reference):
    folder = tmp_path / "photos"
    folder.mkdir()
    PIL.Image.fromarray(reference["preproc.lq_37x53.uint8_hwc_rgb"]).save(folder / "first.png")
    PIL.Image.fromarray(reference["preproc.lq_37x53.uint8_hwc_rgb"][:34, :45]).convert("RGBA").save(folder / "second.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_restore_a_folder_writes_one_png_per_image(photos, tmp_path, model_args, capsys):
    out = tmp_path / "out"
    code = main(["restore", str(photos), "-o", str(out), "--steps", "2", *model_args])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["first.png", "second.png"]
    assert PIL.Image.open(out / "second.png").size == (45, 34)
    assert PIL.Image.open(out / "second.png").mode == "RGBA", "the input's alpha comes back"
    umask = os.umask(0)
    os.umask(umask)
    assert (out / "first.png").stat().st_mode & 0o777 == 0o666 & ~umask, "results get ordinary file permissions"


def test_restore_is_reproducible_with_a_seed(photos, tmp_path, model_args):
    for name in ("a", "b"):
        assert main(["restore", str(photos / "first.png"), "-o", str(tmp_path / name), "--steps", "2", "--seed", "7", *model_args]) == 0
    first = np.asarray(PIL.Image.open(tmp_path / "a" / "first.png"))
    np.testing.assert_array_equal(first, np.asarray(PIL.Image.open(tmp_path / "b" / "first.png")))


@pytest.mark.parametrize("sampler", ["sde", "ode"])
def test_restore_with_other_samplers_and_a_degradation_text(photos, tmp_path, model_args, sampler, capsys):
    code = main([
        "restore", str(photos / "first.png"), "-o", str(tmp_path / "out"), "--steps", "2",
        "--sampler", sampler, "--degradation", "rainy", *model_args,
    ])
    assert code == 0
    assert "(rainy)" in capsys.readouterr().out


def test_restore_never_overwrites_inputs_or_outputs(photos, tmp_path, model_args, capsys):
    before = (photos / "first.png").read_bytes()
    assert main(["restore", str(photos / "first.png"), "-o", str(photos), "--steps", "1", *model_args]) == 2
    assert "is one of the inputs" in capsys.readouterr().err
    assert (photos / "first.png").read_bytes() == before

    out = tmp_path / "out"
    out.mkdir()
    (out / "first.png").write_bytes(b"keep me")
    assert main(["restore", str(photos / "first.png"), "-o", str(out), "--steps", "1", *model_args]) == 1
    assert (out / "first.png").read_bytes() == b"keep me"
    assert main(["restore", str(photos / "first.png"), "-o", str(out), "--steps", "1", "--overwrite", *model_args]) == 0
    assert PIL.Image.open(out / "first.png").size == (53, 37)
    assert not list(out.glob("*.part")), "no temporary file may be left behind"


def test_unreadable_images_fail_alone(photos, tmp_path, model_args, capsys):
    (photos / "broken.png").write_bytes(b"\x89PNG not really")
    code = main(["restore", str(photos), "-o", str(tmp_path / "out"), "--steps", "1", *model_args])
    assert code == 1
    assert "broken.png" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["first.png", "second.png"]


def test_detect_prints_a_table_and_json(photos, weights_dir, parity_dir, capsys):
    args = ["--daclip", str(weights_dir / "daclip_tiny.pt"), "--daclip-config", str(parity_dir / "daclip_tiny.json")]
    assert main(["detect", str(photos), *args]) == 0
    table = capsys.readouterr().out
    assert "first.png" in table and "degradation" in table
    assert main(["detect", str(photos), "--json", "--labels", "rainy,hazy", *args]) == 0
    records = json.loads(capsys.readouterr().out)
    assert len(records) == 2
    assert set(records[0]["probabilities"]) == {"rainy", "hazy"}
    assert abs(sum(records[0]["probabilities"].values()) - 1) < 1e-5


def test_convert_then_restore_from_the_folder(photos, tmp_path, weights_dir, parity_dir, model_args):
    folder = tmp_path / "converted"
    assert main(["convert", *model_args, "-o", str(folder)]) == 0
    assert (folder / "model_index.json").is_file()
    assert main(["restore", str(photos / "first.png"), "-o", str(tmp_path / "a"), "--steps", "2", "--model", str(folder)]) == 0
    assert main(["restore", str(photos / "first.png"), "-o", str(tmp_path / "b"), "--steps", "2", *model_args]) == 0
    np.testing.assert_array_equal(
        np.asarray(PIL.Image.open(tmp_path / "a" / "first.png")), np.asarray(PIL.Image.open(tmp_path / "b" / "first.png"))
    )
    assert main(["convert", *model_args, "-o", str(folder)]) == 2, "must not write into a non-empty folder"


def test_usage_and_model_errors_have_exit_codes_and_no_traceback(photos, tmp_path, weights_dir, capsys, monkeypatch):
    assert main(["restore", str(tmp_path / "missing.png"), "-o", str(tmp_path / "o"), "--model", "x"]) == 2
    assert "no such file" in capsys.readouterr().err
    # no model given and no bundled demo model (e.g. a stripped install): say so
    monkeypatch.setattr("daclip.demo.DEMO_MODEL_DIR", tmp_path / "no-demo-model")
    assert main(["restore", str(photos), "-o", str(tmp_path / "o")]) == 2
    assert "no model" in capsys.readouterr().err
    assert main(["detect", str(photos)]) == 2
    assert "no model" in capsys.readouterr().err
    monkeypatch.undo()
    # a UNet file given as DA-CLIP
    bad = ["--daclip", str(weights_dir / "universal-ir_tiny.pth"), "--unet", str(weights_dir / "universal-ir_tiny.pth")]
    assert main(["restore", str(photos), "-o", str(tmp_path / "o"), *bad]) == 3
    err = capsys.readouterr().err
    assert "cannot load the model" in err and "Traceback" not in err
    assert main(["restore", str(photos), "-o", str(tmp_path / "o"), "--steps", "0", "--model", "x"]) == 2


def test_installed_console_script_teaches_with_help():
    executable = shutil.which("daclip")
    command = [executable] if executable else [sys.executable, "-m", "daclip.cli"]
    result = subprocess.run([*command, "restore", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for option in ("--steps", "--sampler", "--seed", "--degradation", "--device", "--dtype", "examples:"):
        assert option in result.stdout


def test_conversion_script_writes_loadable_folders(tmp_path, weights_dir, parity_dir):
    import runpy

    from conftest import REPO_ROOT
    from daclip import DACLIPModel, DACLIPUNet2DModel

    script = runpy.run_path(str(REPO_ROOT / "scripts" / "convert_original_to_diffusers.py"))
    assert script["main"](["--unet", str(weights_dir / "wild-ir_tiny.pth"), "--output_dir", str(tmp_path / "unet")]) == 0
    assert DACLIPUNet2DModel.from_pretrained(tmp_path / "unet").config.downscale_stage is True
    daclip_args = ["--daclip", str(weights_dir / "daclip_tiny.pt"), "--daclip_config", str(parity_dir / "daclip_tiny.json")]
    assert script["main"]([*daclip_args, "--output_dir", str(tmp_path / "daclip")]) == 0
    assert DACLIPModel.from_pretrained(tmp_path / "daclip").config.embed_dim == 32
    assert script["main"](["--daclip", str(weights_dir / "wild-ir_tiny.pth"), "--output_dir", str(tmp_path / "bad")]) == 3
