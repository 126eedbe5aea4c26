"""daclip: DA-CLIP universal image restoration for 🤗 diffusers and ComfyUI.

Imported two ways: as the installed package `daclip`, and by ComfyUI from the cloned folder under a
name of its own choosing. Everything inside uses relative imports so both work.
"""
from .pipelines.daclip.modeling_daclip import DEGRADATIONS, DACLIPModel
from .pipelines.daclip.unet_daclip import DACLIPUNet2DModel
from .pipelines.daclip.pipeline_daclip import DACLIPPipeline, DACLIPPipelineOutput
from .pipelines.daclip.hub import download_original_checkpoints
from .pipelines.daclip.loading import load_daclip, load_pipeline, load_pipeline_from_parts, load_unet
from .schedulers import IRSDEPosteriorScheduler, IRSDEScheduler, MRSamplerScheduler
from .utils import CheckpointError
from .demo import demo_model_path

# ComfyUI looks for these names in the package it imports.
from .daclip_nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, WEB_DIRECTORY

__version__ = "0.1.0"

__all__ = [
    "DEGRADATIONS",
    "DACLIPPipeline",
    "DACLIPPipelineOutput",
    "download_original_checkpoints",
    "load_daclip",
    "load_unet",
    "load_pipeline",
    "load_pipeline_from_parts",
    "DACLIPModel",
    "DACLIPUNet2DModel",
    "IRSDEScheduler",
    "IRSDEPosteriorScheduler",
    "MRSamplerScheduler",
    "CheckpointError",
    "demo_model_path",
    "NODE_CLASS_MAPPINGS",
    "NODE_DISPLAY_NAME_MAPPINGS",
    "WEB_DIRECTORY",
]
