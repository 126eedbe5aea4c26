from .scheduling_irsde import IRSDEPosteriorScheduler, IRSDEScheduler, compatible_schedulers
from .scheduling_mrs import MRSamplerScheduler
from .samplers import DEFAULT_STEPS, SAMPLERS, sampler_of, scheduler_for_sampler
