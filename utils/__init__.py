"""Small shared helpers: safe checkpoint reading and errors users can act on."""
from .checkpoint_io import CheckpointError, load_torch_checkpoint, strip_prefix

__all__ = ["CheckpointError", "load_torch_checkpoint", "strip_prefix"]
