"""Reading model files: only tensors come back; anything else is a CheckpointError that names the file."""
import re

import pytest
import torch
from safetensors.torch import save_file

from daclip import CheckpointError
from daclip.utils import load_torch_checkpoint, strip_prefix


def test_safetensors_files_are_read_without_pickle(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file({"a": torch.ones(2, 3)}, str(path))
    assert torch.equal(load_torch_checkpoint(path)["a"], torch.ones(2, 3))
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="truncated.safetensors"):
        load_torch_checkpoint(truncated)


@pytest.mark.parametrize(
    "content, message",
    [(b"", "empty"), (b"just some text\n", "text file"), (bytes(range(256)) * 8, "unknown format")],
)
def test_broken_files_get_one_clear_error(tmp_path, content, message):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_torch_checkpoint(path)


def test_a_truncated_torch_file_is_refused(tmp_path):
    path = tmp_path / "model.pth"
    torch.save({"w": torch.randn(64, 64)}, path)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(CheckpointError, match="model.pth"):
        load_torch_checkpoint(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_torch_checkpoint(tmp_path / "absent.pt")


def test_strip_prefix_only_touches_prefixed_keys():
    assert strip_prefix({"module.a": 1, "b": 2}) == {"a": 1, "b": 2}


# ---------------------------------------------------------------------------------------------------
# What is at this path? (pipelines/daclip/loading.py): every source that is not one of ours says what it is
# ---------------------------------------------------------------------------------------------------
import json  # noqa: E402
import socket  # noqa: E402
import tarfile  # noqa: E402
import zipfile  # noqa: E402

import numpy as np  # noqa: E402

from daclip import load_daclip, load_pipeline, load_unet  # noqa: E402
from daclip.pipelines.daclip.loading import identify, looks_like_hub_id  # noqa: E402


def _zip(path, members):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _make_keras(path):
    _zip(path, {"config.json": "{}", "metadata.json": "{}", "model.weights.h5": b"\x89HDF\r\n\x1a\n"})


def _make_npz(path):
    np.savez(path, weights=np.zeros(3))


def _make_lightning(path):
    torch.save({"pytorch-lightning_version": "2.2.0", "state_dict": {"model.w": torch.zeros(2)}, "epoch": 1}, path)


def _make_tar(path):
    inner = path.with_name("inner.txt")
    inner.write_text("x")
    with tarfile.open(path, "w") as archive:
        archive.add(inner, arcname="inner.txt")


FOREIGN_FILES = {
    # file name → (how to make it, what the error must call it)
    "model.keras": (_make_keras, "Keras model archive"),
    "model.onnx": (lambda p: p.write_bytes(b"\x08\x07\x12\x07pytorch\x1a\x032.1" + bytes(64)), "ONNX model"),
    "model.gguf": (lambda p: p.write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(64)), "GGUF file"),
    "weights.h5": (lambda p: p.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64)), "HDF5 file"),
    "sd.ckpt": (_make_lightning, "PyTorch Lightning"),
    "arrays.npz": (_make_npz, "NumPy `.npz` archive"),
    "bundle.zip": (lambda p: _zip(p, {"readme.txt": "hi"}), "zip archive of 1 files"),
    "old.tar": (_make_tar, "tar archive"),
    "notes.pth": (lambda p: p.write_text("a random text file\n"), "text file"),
    "universal-ir.pth": (lambda p: p.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 9\n"), "Git LFS pointer"),
    "download.pt": (lambda p: p.write_text("<!DOCTYPE html><html><body>404</body></html>"), "HTML/XML page"),
    "daclip.pt": (lambda p: p.write_text('{"embed_dim": 512, "vision_cfg": {}, "text_cfg": {}}'), "JSON config"),
    "photo.pth": (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64)), "PNG image"),
}


@pytest.mark.parametrize("name", list(FOREIGN_FILES))
def test_other_formats_are_named_by_every_loader(tmp_path, name):
    make, described = FOREIGN_FILES[name]
    path = tmp_path / name
    make(path)
    for load in (load_daclip, lambda p: load_unet(p), load_pipeline):
        with pytest.raises(CheckpointError) as error:
            load(path)
        message = str(error.value)
        assert described in message and name in message, message
        assert "weights_only=False" not in message and "Traceback" not in message


def _make_folder(path, files):
    path.mkdir()
    for relative, content in files.items():
        (path / relative).parent.mkdir(parents=True, exist_ok=True)
        (path / relative).write_text(content)


FOREIGN_FOLDERS = {
    "empty": ({}, "an empty folder"),
    "tf-savedmodel": ({"saved_model.pb": "x", "variables/variables.index": "x"}, "TensorFlow SavedModel"),
    "bert": ({"config.json": json.dumps({"architectures": ["BertModel"]})}, "transformers model folder (BertModel)"),
    "open-clip": ({"config.json": json.dumps({"model_cfg": {}})}, "open_clip model folder"),
    "sd15": ({"model_index.json": json.dumps({"_class_name": "StableDiffusionPipeline"})}, "StableDiffusionPipeline"),
    "sd-unet": ({"config.json": json.dumps({"_class_name": "UNet2DConditionModel"})}, "UNet2DConditionModel"),
    "downloads": ({"daclip_ViT-B-32.pt": "x", "universal-ir.pth": "x"}, "pass one of its files (daclip_ViT-B-32.pt"),
    "scheduler": ({"scheduler_config.json": "{}"}, "scheduler folder"),
    "photos": ({"a.jpg": "x"}, "no model in it"),
    "broken-index": ({"model_index.json": "{not json"}, "not a readable model_index.json"),
}


@pytest.mark.parametrize("name", list(FOREIGN_FOLDERS))
def test_folders_that_are_not_ours_are_named(tmp_path, name):
    files, described = FOREIGN_FOLDERS[name]
    _make_folder(tmp_path / name, files)
    for load in (load_daclip, lambda p: load_unet(p), load_pipeline):
        with pytest.raises(CheckpointError, match=re.escape(described)):
            load(tmp_path / name)


@pytest.mark.parametrize(
    "text, is_hub_id",
    [
        ("weblzw/daclip-uir", True), ("org/model.v2", True), ("./daclip-uri", False), ("daclip-uri", False),
        ("weights/universal-ir.pth", False), ("a/b/c", False), ("/abs/path", False), ("../up/model", False),
        ("org/model.safetensors", False), ("~/models", False),
    ],
)
def test_only_owner_slash_name_strings_are_hub_ids(text, is_hub_id):
    assert looks_like_hub_id(text) is is_hub_id


@pytest.fixture()
def no_network(monkeypatch):
    """Fail the test on any connection attempt (and on any Hub download call)."""
    attempts = []

    def refuse(self, *args, **kwargs):
        attempts.append(args)
        raise OSError("network is off in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: refuse(None, *a))
    return attempts


def test_local_looking_paths_never_reach_the_hub(tmp_path, weights_dir, no_network, monkeypatch):
    from daclip.pipelines.daclip import hub

    monkeypatch.setattr(hub, "snapshot_download", lambda *a, **k: pytest.fail("sent to the Hub"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights").mkdir()
    for source, message in [
        ("./daclip-uri", "no such folder"), ("daclip-uri", "no such folder"), ("weights/missing.pth", "no such file"),
        (str(weights_dir / "universal-ir_tiny.pth"), "is a file"), ("weights", "an empty folder"),
    ]:
        with pytest.raises(CheckpointError, match=message):
            load_pipeline(source)
    assert no_network == []


def test_a_hub_id_offline_says_so_and_sends_nothing(tmp_path, no_network, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError, match="not in the local cache \\(HF_HUB_OFFLINE is set\\)"):
        load_pipeline("someone/daclip-uir", cache_dir=tmp_path)
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE"):
        load_daclip("someone/daclip-uir", cache_dir=str(tmp_path))
    assert no_network == []


def test_identify_tells_our_folders_apart(tmp_path, weights_dir, parity_dir):
    from daclip import DACLIPPipeline

    pipe = DACLIPPipeline.from_original_checkpoints(
        weights_dir / "daclip_tiny.pt", weights_dir / "universal-ir_tiny.pth", daclip_config=parity_dir / "daclip_tiny.json"
    )
    pipe.save_pretrained(tmp_path / "pipe")
    pipe.daclip.save_pretrained(tmp_path / "run" / "checkpoint-2" / "daclip")
    pipe.unet.save_pretrained(tmp_path / "unet-only")
    assert identify(tmp_path / "pipe").kind == "pipeline"
    assert (identify(tmp_path / "pipe" / "unet").kind, identify(tmp_path / "pipe" / "unet").component) == ("component", "unet")
    assert (identify(tmp_path / "run" / "checkpoint-2").kind, identify(tmp_path / "run" / "checkpoint-2").component) == (
        "checkpoint", "daclip")
    assert identify(tmp_path / "run").kind == "run"
    with pytest.raises(CheckpointError, match="no final model yet.*checkpoint-2"):
        load_daclip(tmp_path / "run")
    # the other kind: named, with the advice of the front end that asked (here the Python API's)
    with pytest.raises(CheckpointError, match="restoration UNet.*not a DA-CLIP.*DACLIPUNet2DModel") as error:
        load_daclip(tmp_path / "unet-only")
    assert error.value.found == "unet"
    with pytest.raises(CheckpointError, match="holding a DA-CLIP only") as error:
        load_pipeline(tmp_path / "run" / "checkpoint-2")
    assert error.value.found == "daclip"
    with pytest.raises(CheckpointError) as error:
        load_unet(weights_dir / "daclip_tiny.pt")
    assert error.value.found == "daclip" and "DACLIPModel.from_original_checkpoint" in str(error.value)
