"""Reading checkpoint files without ever running code from them.

Model files come from the internet. `torch.load(..., weights_only=True)` only rebuilds tensors and
plain containers; anything else (a pickled function, a class instance) is refused. We never retry
with `weights_only=False`: a file that needs it is not a file we can trust.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from typing import Any, Dict, Mapping

import torch


class CheckpointError(ValueError):
    """A model file that cannot be used: unreadable, unsafe, or not the kind of model expected."""


def load_torch_checkpoint(path: str | os.PathLike) -> Any:
    """Load a `.pt`/`.pth` file on the CPU with `weights_only=True`, turning failures into `CheckpointError`."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{path}: the file is empty (an interrupted download?)")
    if path.endswith(".safetensors"):
        return _load_safetensors(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # weights_only refuses globals it does not know: the file wants to build Python objects (and could
        # run code). torch's message then suggests weights_only=False, which we never do, so only the line
        # naming the refused global is kept. Other unpickling errors mean the bytes are not a pickle at all.
        refused = [line for line in str(error).splitlines() if "Unsupported global" in line]
        if refused:
            raise CheckpointError(
                f"{path}: refused to load: the file contains Python objects other than tensors and plain "
                f"containers, and loading it could run code. Only weight files are accepted. ({refused[0].strip()})"
            ) from None
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (corrupt or another format).") from None
    except (EOFError, zipfile.BadZipFile, RuntimeError, OSError, ValueError, UnicodeDecodeError, KeyError) as error:
        # KeyError: what torch raises for some non-checkpoint files (e.g. text renamed to .pt).
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint (truncated, corrupt or another format): {error}"
        ) from None


def _load_safetensors(path: str) -> Dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt): {error}") from None


def strip_prefix(state_dict: Mapping[str, Any], prefix: str = "module.") -> Dict[str, Any]:
    """Remove a `module.` (DataParallel/DDP) prefix from every key that has it."""
    return {(key[len(prefix):] if key.startswith(prefix) else key): value for key, value in state_dict.items()}
