"""Loading diffusers models so that results do not depend on where their weights came from."""
from __future__ import annotations

import itertools

import torch
from diffusers.utils import logging as diffusers_logging


class OwnedWeightsMixin:
    """`from_pretrained` that leaves every weight in its own freshly allocated tensor.

    safetensors hands out tensors that view the (memory-mapped) file at arbitrary offsets. CPU kernels
    pick different code paths for unaligned data, so a model loaded that way computes results that differ
    in the last bits from the same weights held in ordinary memory (seen: 5e-6 after a few sampling steps).
    Copying each tensor once makes a saved-and-reloaded model give bit-identical results, and releases
    the file mapping.
    """

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        model = super().from_pretrained(*args, **kwargs)
        with torch.no_grad():
            for tensor in itertools.chain(model.parameters(), model.buffers()):
                tensor.data = tensor.data.clone()
        return model


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
