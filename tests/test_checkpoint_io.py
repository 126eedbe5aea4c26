"""Reading model files: only tensors come back; anything else is a CheckpointError that names the file."""
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
    [(b"", "empty"), (b"just some text\n", "not a readable"), (bytes(range(256)) * 8, "not a readable")],
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
