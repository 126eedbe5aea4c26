from .modeling_daclip import DEGRADATIONS, DACLIPModel
from .unet_daclip import DACLIPUNet2DModel
from .pipeline_daclip import DACLIPPipeline, DACLIPPipelineOutput
