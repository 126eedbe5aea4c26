"""The one sampler vocabulary of the CLI (`--sampler`), the ComfyUI Restore node and Python.

| name        | scheduler                                             | UNet evaluations |
|-------------|-------------------------------------------------------|------------------|
| "posterior" | `IRSDEPosteriorScheduler` (the authors' default)      | N (100)          |
| "sde"       | `IRSDEScheduler(solver="sde")`, Euler–Maruyama        | N                |
| "ode"       | `IRSDEScheduler(solver="ode")`, probability-flow Euler | N                |
| "mrs"       | `MRSamplerScheduler` (MR Sampler, Li et al. 2025)     | N (10–20)        |
"""
from __future__ import annotations

from typing import Union

from .scheduling_irsde import IRSDEPosteriorScheduler, IRSDEScheduler
from .scheduling_mrs import MRSamplerScheduler

SAMPLERS = ("posterior", "sde", "ode", "mrs")

# The steps each sampler is meant for: the authors' 100, or the MR Sampler's 20 (its authors' default).
DEFAULT_STEPS = {"posterior": 100, "sde": 100, "ode": 100, "mrs": 20}

AnyScheduler = Union[IRSDEPosteriorScheduler, IRSDEScheduler, MRSamplerScheduler]


def scheduler_for_sampler(sampler: str, config, **overrides) -> AnyScheduler:
    """`sampler` (one of `SAMPLERS`) → a scheduler with the IR-SDE settings of `config` (any of the three
    schedulers' configs: `num_train_timesteps`, `max_sigma`, `schedule`, `eps`, `prediction_type` carry over).

    "mrs" keeps the MR Sampler settings of an MR Sampler config; from another scheduler's config it starts from
    the MR Sampler's defaults (ODE, order 2), not from that scheduler's `solver`. `overrides` set config keys
    (e.g. `solver_order=3`). Raises `ValueError` for an unknown sampler.
    """
    if sampler == "posterior":
        return IRSDEPosteriorScheduler.from_config(config, **overrides)
    if sampler in ("sde", "ode"):
        return IRSDEScheduler.from_config(config, **{**overrides, "solver": sampler})
    if sampler == "mrs":
        if not _is_mr_sampler_config(config):
            overrides = {"solver": "ode", **overrides}
        return MRSamplerScheduler.from_config(config, **overrides)
    raise ValueError(f"sampler must be one of {SAMPLERS}, not {sampler!r}.")


def sampler_of(scheduler: AnyScheduler) -> str:
    """The `SAMPLERS` name of a scheduler (e.g. a loaded pipeline's): "posterior", "sde", "ode" or "mrs"."""
    if isinstance(scheduler, MRSamplerScheduler):
        return "mrs"
    if isinstance(scheduler, IRSDEScheduler):
        return scheduler.config.solver
    if isinstance(scheduler, IRSDEPosteriorScheduler):
        return "posterior"
    raise ValueError(f"{type(scheduler).__name__} is not one of the IR-SDE schedulers ({SAMPLERS}).")


def _is_mr_sampler_config(config) -> bool:
    """A saved config names its class; an in-memory one is the MR Sampler's if it has the MR Sampler's keys
    (`IRSDEScheduler`'s `solver` is its Euler solver, whose "sde" would mean another thing here)."""
    class_name = config.get("_class_name")
    if class_name is not None:
        return class_name == MRSamplerScheduler.__name__
    return "solver_order" in config
