from .scheduling_irsde import IRSDEPosteriorScheduler, IRSDEScheduler
from .scheduling_mrs import MRSamplerScheduler
from .samplers import SAMPLERS, scheduler_for_sampler
