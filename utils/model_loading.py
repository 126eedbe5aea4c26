"""Loading diffusers models so that results do not depend on where their weights came from."""
from __future__ import annotations

import itertools

import torch


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
