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


def test_restore_with_the_mr_sampler_defaults_to_its_20_steps(photos, tmp_path, model_args, tiny_pipeline, capsys):
    import torch

    from daclip import DACLIPPipeline, MRSamplerScheduler

    assert main(["restore", str(photos / "first.png"), "-o", str(tmp_path / "mrs"), "--sampler", "mrs", *model_args]) == 0
    pipe = DACLIPPipeline(
        tiny_pipeline.daclip, tiny_pipeline.unet, MRSamplerScheduler.from_config(tiny_pipeline.scheduler.config)
    )
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(PIL.Image.open(photos / "first.png"), num_inference_steps=20, generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(np.asarray(PIL.Image.open(tmp_path / "mrs" / "first.png")), np.asarray(expected.images[0]))
    assert main([
        "restore", str(photos / "first.png"), "-o", str(tmp_path / "o1"), "--sampler", "mrs", "--solver-order", "1",
        "--steps", "4", *model_args,
    ]) == 0
    capsys.readouterr()
    # --solver-order belongs to the MR Sampler; an impossible order is a usage error, not a traceback
    assert main(["restore", str(photos / "first.png"), "-o", str(tmp_path / "x"), "--solver-order", "2",
                 "--sampler", "ode", *model_args]) == 2
    assert "--sampler mrs" in capsys.readouterr().err


def test_threads_option_sets_torch_threads(photos, tmp_path, model_args, capsys):
    import torch

    before = torch.get_num_threads()
    try:
        assert main(["restore", str(photos / "first.png"), "-o", str(tmp_path / "t"), "--steps", "1", "--threads", "1",
                     *model_args]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert main(["restore", str(photos / "first.png"), "-o", str(tmp_path / "u"), "--threads", "0", *model_args]) == 2


def test_default_threads_divide_the_cores_among_launched_processes(monkeypatch):
    from daclip.utils.threads import available_cores, default_cpu_threads, local_process_count

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert default_cpu_threads(1) is None  # alone: torch's own default
    assert default_cpu_threads(2) == max(1, available_cores() // 2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert local_process_count() == 4
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what accelerate launch / torchrun set when the user chose nothing
    assert default_cpu_threads(4) == max(1, available_cores() // 4)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's choice is kept
    assert default_cpu_threads(4) is None


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


# ---------------------------------------------------------------------------------------------------
# Wrong things given as a model: said what they are, exit 3, nothing sent anywhere (issue 17 kind C)
# ---------------------------------------------------------------------------------------------------
@pytest.fixture()
def no_hub(monkeypatch):
    """Any Hub download or connection attempt fails the test."""
    import socket

    from daclip.pipelines.daclip import hub

    def refuse(*args, **kwargs):
        pytest.fail("a request was made")

    monkeypatch.setattr(hub, "snapshot_download", refuse)
    monkeypatch.setattr(hub, "hf_hub_download", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_a_file_or_a_typo_as_model_is_said_and_stays_local(photos, tmp_path, weights_dir, capsys, monkeypatch, no_hub):
    monkeypatch.chdir(tmp_path)
    out = str(tmp_path / "o")
    assert main(["restore", str(photos), "-o", out, "--model", str(weights_dir / "universal-ir_tiny.pth")]) == 3
    err = capsys.readouterr().err
    assert "is a file" in err and "Pass the authors' files with --daclip/--unet" in err and "Traceback" not in err
    for typo in ("./daclip-uri", "daclip-uri"):
        assert main(["restore", str(photos), "-o", out, "--model", typo]) == 3
        err = capsys.readouterr().err
        assert f"{typo}: no such folder" in err and "Hub" in err and "Traceback" not in err
    assert main(["detect", str(photos), "--model", "./daclip-uri"]) == 3
    assert "no such folder" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_convert_refuses_to_guess_an_unreleased_architecture(tmp_path, weights_dir, parity_dir, photos, capsys):
    # The tiny DA-CLIP has 2 heads of 32; without its config the shapes would suggest 1 head of 64.
    alone = tmp_path / "models"
    alone.mkdir()
    for name in ("daclip_tiny.pt", "universal-ir_tiny.pth"):
        shutil.copy(weights_dir / name, alone / name)
    args = ["--daclip", str(alone / "daclip_tiny.pt"), "--unet", str(alone / "universal-ir_tiny.pth")]
    assert main(["convert", *args, "-o", str(tmp_path / "guessed")]) == 3
    err = capsys.readouterr().err
    assert "not a released DA-CLIP" in err and "--daclip-config" in err
    assert not (tmp_path / "guessed").exists()
    # The same-name JSON beside the file is the config, in `convert`, `detect` and `restore` alike.
    shutil.copy(parity_dir / "daclip_tiny.json", alone / "daclip_tiny.json")
    assert main(["convert", *args, "-o", str(tmp_path / "converted")]) == 0
    config = json.loads((tmp_path / "converted" / "daclip" / "config.json").read_text())
    assert config["vision_cfg"]["head_width"] == 32 and config["text_cfg"]["heads"] == 2
    capsys.readouterr()
    assert main(["detect", str(photos), "--json", "--daclip", str(alone / "daclip_tiny.pt")]) == 0
    beside = json.loads(capsys.readouterr().out)
    explicit = ["--daclip", str(weights_dir / "daclip_tiny.pt"), "--daclip-config", str(parity_dir / "daclip_tiny.json")]
    assert main(["detect", str(photos), "--json", *explicit]) == 0
    assert json.loads(capsys.readouterr().out) == beside
    assert main(["restore", str(photos / "first.png"), "-o", str(tmp_path / "r"), "--steps", "1", *args]) == 0


def test_model_folders_go_with_daclip_and_unet(photos, tmp_path, model_args, capsys):
    folder = tmp_path / "converted"
    assert main(["convert", *model_args, "-o", str(folder)]) == 0
    # a pipeline folder or the component folders in --daclip/--unet: the same pixels as the authors' files
    assert main(["restore", str(photos / "first.png"), "-o", str(tmp_path / "a"), "--steps", "2", *model_args]) == 0
    for name, parts in {"b": (folder, folder), "c": (folder / "daclip", folder / "unet")}.items():
        args = ["--daclip", str(parts[0]), "--unet", str(parts[1])]
        assert main(["restore", str(photos / "first.png"), "-o", str(tmp_path / name), "--steps", "2", *args]) == 0
        np.testing.assert_array_equal(
            np.asarray(PIL.Image.open(tmp_path / "a" / "first.png")), np.asarray(PIL.Image.open(tmp_path / name / "first.png"))
        )
    # a DA-CLIP folder detects as --model or --daclip; as a restore --model it is half a pipeline
    assert main(["detect", str(photos), "--model", str(folder / "daclip")]) == 0
    assert main(["detect", str(photos), "--daclip", str(folder)]) == 0
    capsys.readouterr()
    assert main(["restore", str(photos), "-o", str(tmp_path / "d"), "--model", str(folder / "daclip")]) == 3
    assert "pass it with --daclip" in capsys.readouterr().err
    # the other component in the other option: named, with this command line's advice
    bad = ["--daclip", str(folder / "unet"), "--unet", str(folder / "unet")]
    assert main(["restore", str(photos), "-o", str(tmp_path / "e"), *bad]) == 3
    assert "It is a restoration UNet: pass it with --unet" in capsys.readouterr().err
