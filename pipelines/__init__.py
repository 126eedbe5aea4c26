from .daclip.modeling_daclip import DEGRADATIONS, DACLIPModel
from .daclip.unet_daclip import DACLIPUNet2DModel
from .daclip.pipeline_daclip import DACLIPPipeline, DACLIPPipelineOutput
