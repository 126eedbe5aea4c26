"""Loading diffusers models so that results do not depend on where their weights came from."""
from __future__ import annotations

import itertools
import os

import torch
from diffusers.utils import logging as diffusers_logging

from .checkpoint_io import CheckpointError, mismatch_error

# safetensors dtype names of floating-point weights; anything else in a float model is a damaged file.
_FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}


class OwnedWeightsMixin:
    """`from_pretrained` that loads all of the weights or nothing, each in its own freshly allocated tensor.

    diffusers fills weights missing from a file with random values and only logs it, and casts integer
    tensors silently; a damaged or wrong file would then give a model that runs and restores garbage. Here
    missing, unexpected or mis-shaped weights, and non-float tensors in a local safetensors file, raise
    `CheckpointError` naming the folder.

    safetensors hands out tensors that view the (memory-mapped) file at arbitrary offsets. CPU kernels
    pick different code paths for unaligned data, so a model loaded that way computes results that differ
    in the last bits from the same weights held in ordinary memory (seen: 5e-6 after a few sampling steps).
    Copying each tensor once makes a saved-and-reloaded model give bit-identical results, and releases
    the file mapping.
    """

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        wants_info = kwargs.pop("output_loading_info", False)
        where = os.path.join(os.fspath(pretrained_model_name_or_path), kwargs.get("subfolder") or "")
        _check_local_weight_dtypes(where)
        try:
            model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs)
        except ValueError as error:
            if "expected shape" not in str(error):
                raise
            # diffusers' message, without its advice to load random weights instead
            raise CheckpointError(
                f"{where}: does not match the {cls.__name__}: weights of the wrong shape: {str(error).split(' If you want')[0]}"
            ) from None
        error = mismatch_error(
            where,
            cls.__name__,
            missing=info.get("missing_keys") or [],
            unexpected=info.get("unexpected_keys") or [],
            mismatched=[_mismatch_text(entry) for entry in info.get("mismatched_keys") or []],
        )
        if error is not None:
            raise error
        with torch.no_grad():
            for tensor in itertools.chain(model.parameters(), model.buffers()):
                tensor.data = tensor.data.clone()
        return (model, info) if wants_info else model


def _mismatch_text(entry) -> str:
    """diffusers lists a mis-shaped weight as `(key, file shape, model shape)`."""
    if isinstance(entry, (tuple, list)) and len(entry) == 3:
        key, file_shape, model_shape = entry
        return f"{key} {tuple(file_shape)} (model {tuple(model_shape)})"
    return str(entry)


def _check_local_weight_dtypes(folder: str) -> None:
    """Refuse a local safetensors weight file holding non-float tensors (read from its header only)."""
    if not os.path.isdir(folder):
        return  # a Hub id: diffusers downloads and checks the file itself
    from safetensors import safe_open

    for name in sorted(os.listdir(folder)):
        if not name.endswith(".safetensors"):
            continue
        path = os.path.join(folder, name)
        try:
            with safe_open(path, framework="pt") as weights:
                dtypes = {key: weights.get_slice(key).get_dtype() for key in weights.keys()}
        except Exception as error:  # noqa: BLE001 - any unreadable file gets the same clear error
            raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from None
        wrong = {key: dtype for key, dtype in dtypes.items() if dtype not in _FLOAT_DTYPES}
        if wrong:
            listed = ", ".join(f"{key} ({dtype})" for key, dtype in list(wrong.items())[:5])
            raise CheckpointError(f"{path}: weights must be floating point, got {listed}")


class QuietDtypeCastMixin:
    """`.to(dtype)` without diffusers 0.42's false warning.

    diffusers 0.42 warns "There are modules ... that should be kept in float32: []" on every dtype cast,
    even when the list is empty. Our models keep nothing in float32, so the message only misleads; it
    is silenced for models with no such modules and kept for any that declare some.
    """

    def to(self, *args, **kwargs):
        if self._keep_in_fp32_modules:
            return super().to(*args, **kwargs)
        modeling_logger = diffusers_logging.get_logger("diffusers.models.modeling_utils")
        level = modeling_logger.level
        modeling_logger.setLevel(diffusers_logging.ERROR)
        try:
            return super().to(*args, **kwargs)
        finally:
            modeling_logger.setLevel(level)
