# Re-export for `DiffusionPipeline.from_pretrained(..., trust_remote_code=True)`; needs `pip install daclip`.
from daclip import MRSamplerScheduler  # noqa: F401
