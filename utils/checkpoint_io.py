"""Reading checkpoint files without ever running code from them, and the one vocabulary of their errors.

Model files come from the internet. `torch.load(..., weights_only=True)` only rebuilds tensors and
plain containers; anything else (a pickled function, a class instance) is refused. We never retry
with `weights_only=False`, and no message of ours suggests it: a file that needs it is not a file we
can trust.

Before a file is handed to torch it is identified by its first bytes (`identify_file`), so that another
framework's archive, a config, an image or a Git LFS pointer is named as what it is instead of failing
as "a corrupt checkpoint".
"""
from __future__ import annotations

import json
import os
import pickle
import re
import struct
import zipfile
from typing import Any, Dict, Iterable, Mapping, Optional

import torch


class CheckpointError(ValueError):
    """A model file or folder that cannot be used: unreadable, unsafe, or not the kind of model expected.

    `found` says what the source is when it is another of our kinds ("daclip", "unet", "pipeline"), so a
    front end can add its own "load it with …" advice (`with_hint`); `hint` is that advice (the Python API's
    by default). `str(error)` is the message followed by the hint.
    """

    def __init__(self, message: str, *, found: Optional[str] = None, hint: Optional[str] = None):
        self.message, self.found, self.hint = message, found, hint
        super().__init__(message + (f" {hint}" if hint else ""))

    def with_hint(self, hint: Optional[str], prefix: str = "") -> "CheckpointError":
        """The same error with a front end's advice instead of the Python API's (and an optional prefix)."""
        return CheckpointError(prefix + self.message, found=self.found, hint=hint)

    def __reduce__(self):  # keyword-only arguments: pickle (multiprocessing) needs this
        return _rebuild_checkpoint_error, (self.message, self.found, self.hint)


def _rebuild_checkpoint_error(message, found, hint):
    return CheckpointError(message, found=found, hint=hint)


# ---------------------------------------------------------------------------------------------------
# What is this file?
# ---------------------------------------------------------------------------------------------------
TORCH_ZIP, TORCH_PICKLE, SAFETENSORS = "torch-zip", "torch-pickle", "safetensors"

# Leading bytes of formats that are never ours → what to call them.
_MAGIC_NUMBERS = (
    (b"GGUF", "a GGUF file (llama.cpp / ComfyUI-GGUF quantised weights)"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (Keras / TensorFlow `.h5` weights)"),
    (b"\x93NUMPY", "a NumPy `.npy` array"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x1f\x8b", "a gzip-compressed file (decompress it first)"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!", "a RAR archive"),
    (b"version https://git-lfs", "a Git LFS pointer instead of the weights (run `git lfs pull`, or download the file itself)"),
)


def identify_file(path: str) -> str:
    """`TORCH_ZIP`, `TORCH_PICKLE` or `SAFETENSORS` for files we may read, else what the file looks like
    ("a Keras model archive (`.keras`)", "an ONNX model", "a JSON file", …). Reads the first bytes only
    (and a zip archive's list of names)."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    for magic, description in _MAGIC_NUMBERS:
        if head.startswith(magic):
            return description
    if head[4:8] == b"TFL3":
        return "a TensorFlow Lite model"
    if len(head) >= 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < os.path.getsize(path):
        return SAFETENSORS  # 8-byte little-endian header length, then the JSON header
    if head.startswith(b"PK\x03\x04"):
        return _identify_zip(path)
    if head[:1] == b"\x80" and 2 <= head[1:2][0] <= 5:
        return TORCH_PICKLE  # a pickle: torch's legacy format (or a plain pickle, which torch.load refuses)
    if path.lower().endswith(".onnx") or (head[:1] == b"\x08" and head[1:2] < b"\x80" and head[2:3] in (b"\x12", b"\x1a", b"\x3a")):
        return "an ONNX model"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "a tar archive"
    return _identify_text(head) or "a file of unknown format (truncated, corrupt or another framework's)"


def _identify_zip(path: str) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return TORCH_ZIP  # a damaged zip: let torch report it
    if any(name.endswith("data.pkl") for name in names):
        return TORCH_ZIP
    if "model.weights.h5" in names or {"config.json", "metadata.json"} <= set(names):
        return "a Keras model archive (`.keras`)"
    if names and all(name.endswith(".npy") for name in names):
        return "a NumPy `.npz` archive"
    if any(name.endswith("saved_model.pb") for name in names):
        return "a zipped TensorFlow SavedModel"
    shown = ", ".join(names[:3]) + (", …" if len(names) > 3 else "")
    return f"a zip archive of {len(names)} files ({shown or 'empty'})"


def _identify_text(head: bytes) -> Optional[str]:
    if b"\x00" in head:
        return None
    try:
        text = head.decode("utf-8").lstrip()
    except UnicodeDecodeError:
        return None
    if text.startswith(("{", "[")):
        if '"vision_cfg"' in text or '"model_cfg"' in text or '"_class_name"' in text:
            return "a JSON config (a config goes beside its weights file, under the same name)"
        return "a JSON file"
    if text[:15].lower().startswith(("<!doctype html", "<html", "<?xml")):
        return "an HTML/XML page (a failed download?)"
    return "a text file"


# ---------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------
def load_torch_checkpoint(path: str | os.PathLike) -> Any:
    """Load a `.pt`/`.pth`/`.bin` (or safetensors) file on the CPU with `weights_only=True`.

    Raises `CheckpointError` naming the file for a missing, empty, unreadable or unsafe file, and for a
    file in another format (named as what it looks like, see `identify_file`).
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{path}: the file is empty (an interrupted download?)")
    kind = identify_file(path)
    if kind == SAFETENSORS:
        return _load_safetensors(path)
    if kind not in (TORCH_ZIP, TORCH_PICKLE):
        raise CheckpointError(f"{path}: this is {kind}, not a PyTorch or safetensors checkpoint.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # weights_only refuses globals it does not know: the file wants to build Python objects (and could
        # run code). torch's message then suggests ways to allow them, which we never do; only the refused
        # global's name is kept. Other unpickling errors mean the bytes are not a pickle at all.
        match = re.search(r"GLOBAL ([\w.]+)", str(error))
        if match or "Unsupported global" in str(error):
            name = match.group(1) if match else "unknown"
            origin = " (a PyTorch Lightning checkpoint)" if name.startswith(("pytorch_lightning", "lightning")) else ""
            raise CheckpointError(
                f"{path}: refused to load: the file contains Python objects other than tensors and plain "
                f"containers ({name}){origin}, and loading it could run code. Only weight files are accepted."
            ) from None
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (corrupt or another format).") from None
    except (EOFError, zipfile.BadZipFile, RuntimeError, OSError, ValueError, UnicodeDecodeError, KeyError) as error:
        # KeyError: what torch raises for some non-checkpoint files (e.g. text renamed to .pt).
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint (truncated, corrupt or another format){_reason(error)}"
        ) from None
    if isinstance(checkpoint, Mapping) and "pytorch-lightning_version" in checkpoint:
        raise CheckpointError(f"{path}: this is a PyTorch Lightning training checkpoint (`.ckpt`), not a DA-CLIP file.")
    return checkpoint


def _reason(error: BaseException) -> str:
    """torch's first line of explanation, unless it advises loading unsafely (which we never do)."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if not first or "weights_only" in first or len(first) > 300:
        return "."
    return f": {first}"


def _load_safetensors(path: str) -> Dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt): {error}") from None


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Dict[str, Any]:
    """A JSON object from `path`, or `CheckpointError` naming the file."""
    try:
        with open(path, encoding="utf-8") as handle:
            value = json.load(handle)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{os.fspath(path)}: not a readable {what} ({error})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{os.fspath(path)}: not a {what} (a JSON {type(value).__name__}, not an object)")
    return value


def strip_prefix(state_dict: Mapping[str, Any], prefix: str = "module.") -> Dict[str, Any]:
    """Remove a `module.` (DataParallel/DDP) prefix from every key that has it."""
    return {(key[len(prefix):] if key.startswith(prefix) else key): value for key, value in state_dict.items()}


# ---------------------------------------------------------------------------------------------------
# Does this state dict match this model?
# ---------------------------------------------------------------------------------------------------
def first_items(items: Iterable[str], count: int = 8) -> str:
    """"a, b, c, ... (5 more)": the first `count` of a list, for error messages."""
    items = list(items)
    shown = ", ".join(items[:count])
    return shown + (f", ... ({len(items) - count} more)" if len(items) > count else "")


def mismatch_error(
    source: str, what: str, missing: Iterable[str] = (), unexpected: Iterable[str] = (),
    mismatched: Iterable[str] = (), hint: Optional[str] = None,
) -> Optional[CheckpointError]:
    """The one message for weights that do not fit a model (None when nothing is wrong)."""
    missing, unexpected, mismatched = list(missing), list(unexpected), list(mismatched)
    problems = [
        f"{len(items)} {title}: {first_items(items, 4 if title == 'shapes differ' else 8)}"
        for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shapes differ", mismatched))
        if items
    ]
    if not problems:
        return None
    return CheckpointError(f"{source}: does not match the {what}: " + "; ".join(problems) + ".", hint=hint)


def check_state_dict(
    expected: Mapping[str, Any], state_dict: Mapping[str, Any], source: str, what: str, hint: Optional[str] = None
) -> None:
    """Raise `CheckpointError` unless `state_dict` has exactly the keys of `expected` (name → tensor or shape),
    each with the same shape: the strict check every loader of ours makes before any weight is copied."""
    shape = lambda value: tuple(value.shape if hasattr(value, "shape") else value)  # noqa: E731
    error = mismatch_error(
        source,
        what,
        missing=[key for key in expected if key not in state_dict],
        unexpected=[key for key in state_dict if key not in expected],
        mismatched=[
            f"{key} {shape(state_dict[key])} (model {shape(expected[key])})"
            for key in expected
            if key in state_dict and shape(state_dict[key]) != shape(expected[key])
        ],
        hint=hint,
    )
    if error is not None:
        raise error
