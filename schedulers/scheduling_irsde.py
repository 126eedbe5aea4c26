# IR-SDE schedulers: "Image Restoration with Mean-Reverting Stochastic Differential Equations"
# (Luo et al., ICML 2023), as used by DA-CLIP (Luo et al., ICLR 2024).
"""
The IR-SDE is the mean-reverting SDE

    dx = θ_t (μ − x) dt + σ_t dW,       σ_t² = 2 λ² θ_t

whose mean μ is the degraded image and whose stationary spread is λ (`max_sigma`). Its marginal from a
clean image x₀ is Gaussian:

    x_t = μ + (x₀ − μ) e^{−θ̄_t dt} + σ̄_t ε,      θ̄_t = Σ_{i≤t} θ_i − θ_0,   σ̄_t² = λ² (1 − e^{−2 θ̄_t dt})

Sampling starts at x_N = μ + λ ε and walks back to x_0 with the noise ε̂ predicted by the UNet. Everything
is computed in float32, in the order of operations of the authors' `utils/sde_utils.py`, so that the
released models give the authors' numbers.

Quirks reproduced on purpose (see the parity README, §4):
- the schedule is rebuilt for N = `num_inference_steps` (the authors' `sample_T`), and the UNet sees the
  time `t · T / N`;
- θ of the cosine schedule is `1 − ᾱ_t` itself (not a beta), and `dt` is chosen so that e^{−θ̄_N dt} = eps;
- the start uses λ, not σ̄_N; the posterior step draws noise at every step, t = 1 included.

Both schedulers share one contract: μ is a (keyword) argument of every call, never scheduler state, so one
scheduler serves any batch of images.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields
from typing import List, Optional, Tuple, Union

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

SCHEDULES = ("cosine", "linear", "constant")
SOLVERS = ("sde", "ode")
PREDICTION_TYPES = ("epsilon", "sample")

Generators = Union[torch.Generator, List[torch.Generator], None]


@dataclass
class IRSDESchedulerOutput(BaseOutput):
    """
    Args:
        prev_sample (`torch.Tensor` `[B, C, H, W]`): x_{t−1}, the next state of the reverse process.
        pred_original_sample (`torch.Tensor` `[B, C, H, W]`): x̂₀ = (x_t − μ − σ̄_t ε̂) e^{θ̄_t dt} + μ, the clean
            image the current noise prediction implies.
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


@dataclass
class IRSDESchedule:
    """θ_t, σ_t, θ̄_t, σ̄_t for t = 0..N (`[N + 1]`; index 0 is never a state) and dt (`[]`), float32, CPU."""

    thetas: torch.Tensor
    sigmas: torch.Tensor
    thetas_cumsum: torch.Tensor
    sigma_bars: torch.Tensor
    dt: torch.Tensor


@dataclass
class StepCoefficients:
    """What a reverse step needs at schedule index t, as one record: for every t = 0..N of the sampling schedule
    (each field `[N + 1]`, float32, CPU; built once by `set_timesteps`), or gathered for one step (`at`).

    Fields: `theta` θ_t, `sigma` σ_t, `thetas_cumsum` θ̄_t, `sigma_bar` σ̄_t; `coef_xt`, `coef_x0`, `std`: the
    weights and std of the posterior q(x_{t−1} | x_t, x₀) (`_IRSDESchedulerBase._posterior`; NaN at t = 0, never a
    state); `dt` (`[]`).
    """

    theta: torch.Tensor
    sigma: torch.Tensor
    thetas_cumsum: torch.Tensor
    sigma_bar: torch.Tensor
    coef_xt: torch.Tensor
    coef_x0: torch.Tensor
    std: torch.Tensor
    dt: torch.Tensor

    def at(self, index: torch.Tensor, like: torch.Tensor) -> "StepCoefficients":
        """The record at index t (0-d or `[B]` long), each value shaped to broadcast over `like` `[B, C, H, W]` and
        on its device."""
        gathered = {
            field.name: broadcast_per_image(getattr(self, field.name)[index], like)
            for field in fields(self)
            if field.name != "dt"
        }
        return StepCoefficients(**gathered, dt=self.dt.to(like.device))


def broadcast_per_image(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-image value (0-d or `[B]`), shaped to broadcast over `like` (`[B, C, H, W]`), on its device."""
    if values.ndim == 1:
        values = values.reshape(-1, *([1] * (like.ndim - 1)))
    return values.to(like.device)


def theta_schedule(name: str, num_steps: int) -> torch.Tensor:
    """θ_0..θ_N (`[N + 1]`, float32) of the `cosine`, `linear` or `constant` schedule on N steps."""
    if name == "cosine":
        # ᾱ of the improved-DDPM cosine schedule on N + 2 intervals, both ends cut off; θ_t is 1 − ᾱ_t itself.
        intervals, offset = num_steps + 2, 0.008
        x = torch.linspace(0, intervals, intervals + 1, dtype=torch.float32)
        alphas_cumprod = torch.cos(((x / intervals) + offset) / (1 + offset) * math.pi * 0.5) ** 2
        alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
        return 1 - alphas_cumprod[1:-1]
    if name == "linear":
        # DDPM's 1e-4..0.02 betas, rescaled from 1000 steps to N + 1.
        scale = 1000 / (num_steps + 1)
        return torch.linspace(scale * 0.0001, scale * 0.02, num_steps + 1, dtype=torch.float32)
    if name == "constant":
        return torch.ones(num_steps + 1, dtype=torch.float32)
    raise ValueError(f"schedule must be one of {SCHEDULES}, not {name!r}.")


def build_schedule(name: str, num_steps: int, max_sigma: float, eps: float) -> IRSDESchedule:
    """The IR-SDE schedule on N = `num_steps` steps with stationary spread λ = `max_sigma` (a fraction)."""
    thetas = theta_schedule(name, num_steps)
    sigmas = torch.sqrt(max_sigma**2 * 2 * thetas)  # σ_t² = 2 λ² θ_t
    thetas_cumsum = torch.cumsum(thetas, dim=0) - thetas[0]  # θ̄_0 = 0
    dt = -1 / thetas_cumsum[-1] * math.log(eps)  # e^{−θ̄_N dt} = eps
    sigma_bars = torch.sqrt(max_sigma**2 * (1 - torch.exp(-2 * thetas_cumsum * dt)))
    return IRSDESchedule(thetas, sigmas, thetas_cumsum, sigma_bars, dt)


def check_sde_config(num_train_timesteps, max_sigma, schedule: str, eps, prediction_type: str) -> float:
    """Validate the IR-SDE keys every scheduler here shares; returns λ (`max_sigma`) as a fraction.

    The authors read λ on a 0..255 scale when it is ≥ 1 and as a fraction otherwise (50 → 0.196).
    Raises `ValueError` naming the key and what it expects.
    """
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"prediction_type must be one of {PREDICTION_TYPES} (what the UNet predicts: the noise ε, as the "
            f"authors, or the clean image x₀), not {prediction_type!r}."
        )
    if isinstance(num_train_timesteps, bool) or not isinstance(num_train_timesteps, numbers.Integral):
        raise ValueError(f"num_train_timesteps must be a positive integer, not {num_train_timesteps!r}.")
    if num_train_timesteps < 1:
        raise ValueError(f"num_train_timesteps must be a positive integer, not {num_train_timesteps!r}.")
    if isinstance(max_sigma, bool) or not isinstance(max_sigma, numbers.Real) or not max_sigma > 0:
        raise ValueError(
            f"max_sigma must be a positive number (50 on a 0..255 scale, or a fraction such as 0.2), "
            f"not {max_sigma!r}."
        )
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not 0 < eps < 1:
        raise ValueError(f"eps (e^(-θ̄_N dt), the share of x₀ − μ left at t = N) must lie in (0, 1), not {eps!r}.")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, not {schedule!r}.")
    return float(max_sigma) / 255 if max_sigma >= 1 else float(max_sigma)


def draw_noise(shape, generator: Generators, device, variance_noise: Optional[torch.Tensor]) -> torch.Tensor:
    """z ~ N(0, I) in float32: `variance_noise` if given (checked against `shape`), otherwise drawn with `generator`."""
    if variance_noise is not None:
        if tuple(variance_noise.shape) != tuple(shape):
            raise ValueError(f"variance_noise must have shape {tuple(shape)}, got {tuple(variance_noise.shape)}.")
        return variance_noise.to(device=device, dtype=torch.float32)
    return randn_tensor(tuple(shape), generator=generator, device=device, dtype=torch.float32)


def compatible_schedulers() -> list:
    """The three IR-SDE schedulers, which swap with `from_config` in every direction.

    diffusers looks for compatible classes only inside diffusers; ours live here. Listing all three lets
    `from_config` hide the other classes' keys (e.g. `solver_order`) instead of warning about them.
    """
    from .scheduling_mrs import MRSamplerScheduler  # that module builds on this one

    return [IRSDEScheduler, IRSDEPosteriorScheduler, MRSamplerScheduler]


class _IRSDESchedulerBase(SchedulerMixin, ConfigMixin):
    """What both IR-SDE samplers share: the schedule maths, time bookkeeping, the start state and training.

    Subclasses register the config (`num_train_timesteps`, `max_sigma`, `schedule`, `eps`, …), call
    `_setup` and implement `step`.
    """

    order = 1

    def _setup(
        self, num_train_timesteps: int, max_sigma: float, schedule: str, eps: float, prediction_type: str
    ) -> None:
        # `self.max_sigma` is λ as a fraction (0.196 for the default 50); `self.config.max_sigma` keeps the value as given.
        self.max_sigma = check_sde_config(num_train_timesteps, max_sigma, schedule, eps, prediction_type)
        self.init_noise_sigma = self.max_sigma
        # Training always uses the schedule on T steps; sampling may rebuild it on N (`set_timesteps`).
        self.training_schedule = build_schedule(schedule, int(num_train_timesteps), self.max_sigma, float(eps))
        self.num_inference_steps = int(num_train_timesteps)
        self._use_sampling_schedule(self.training_schedule)
        self.timesteps = self._unet_timesteps(self.num_inference_steps)

    def _use_sampling_schedule(self, schedule: IRSDESchedule) -> None:
        """Sample on `schedule` (N = `self.num_inference_steps` steps); its step coefficients are gathered when a
        step first needs them (`step_coefficients`)."""
        self.sampling_schedule = schedule
        self._step_coefficients: Optional[StepCoefficients] = None

    @property
    def step_coefficients(self) -> StepCoefficients:
        """The `StepCoefficients` of every t = 0..N of the sampling schedule, gathered once per `set_timesteps`."""
        if self._step_coefficients is None:
            self._step_coefficients = self._gather_step_coefficients(self.sampling_schedule)
        return self._step_coefficients

    def _gather_step_coefficients(self, schedule: IRSDESchedule) -> StepCoefficients:
        # The posterior weights one t at a time (0-d tensors), as a step would compute them: a CPU's vectorised
        # exp may differ from its scalar exp by an ulp, and these weights cancel at small t.
        posterior = [self._posterior(schedule, torch.tensor(t)) for t in range(1, len(schedule.thetas))]
        nan = torch.tensor([math.nan])
        coef_xt, coef_x0, std = (torch.cat([nan, torch.stack(values)]) for values in zip(*posterior))
        return StepCoefficients(
            theta=schedule.thetas,
            sigma=schedule.sigmas,
            thetas_cumsum=schedule.thetas_cumsum,
            sigma_bar=schedule.sigma_bars,
            coef_xt=coef_xt,
            coef_x0=coef_x0,
            std=std,
            dt=schedule.dt,
        )

    # -- the sampling schedule in use, as float32 CPU tensors ------------------------------------------
    thetas = property(lambda self: self.sampling_schedule.thetas, doc="θ_0..θ_N `[N + 1]`.")
    sigmas = property(lambda self: self.sampling_schedule.sigmas, doc="σ_0..σ_N `[N + 1]`.")
    thetas_cumsum = property(lambda self: self.sampling_schedule.thetas_cumsum, doc="θ̄_0..θ̄_N `[N + 1]`.")
    sigma_bars = property(lambda self: self.sampling_schedule.sigma_bars, doc="σ̄_0..σ̄_N `[N + 1]`.")
    dt = property(lambda self: self.sampling_schedule.dt, doc="dt `[]`, with e^{−θ̄_N dt} = eps.")

    @property
    def sample_scale(self) -> float:
        """T / N: the factor from a schedule index t to the time the UNet sees."""
        return self.config.num_train_timesteps / self.num_inference_steps

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    @classmethod
    def _get_compatibles(cls):
        return compatible_schedulers()

    # -- time ------------------------------------------------------------------------------------------
    def _unet_timesteps(self, num_steps: int, device=None) -> torch.Tensor:
        # t · T/N in Python floats, then float32: exactly what the authors' UNet receives.
        scale = self.config.num_train_timesteps / num_steps
        return torch.tensor([t * scale for t in range(num_steps, 0, -1)], dtype=torch.float32, device=device)

    def set_timesteps(self, num_inference_steps: int, device: Union[str, torch.device, None] = None) -> None:
        """Rebuild the schedule on N = `num_inference_steps` steps (1..T), as the authors' `sample_T`.

        `self.timesteps` (`[N]` float32, on `device`) then holds, in sampling order, the times to pass to the
        UNet: N·T/N, …, 1·T/N, and `self.step_coefficients` what each step needs. The training helpers keep using
        the schedule on T steps.

        Raises:
            `ValueError`: `num_inference_steps` is not an integer from 1 to `num_train_timesteps`.
        """
        num_train_timesteps = self.config.num_train_timesteps
        if (
            isinstance(num_inference_steps, bool)
            or not isinstance(num_inference_steps, numbers.Integral)
            or not 1 <= num_inference_steps <= num_train_timesteps
        ):
            raise ValueError(
                f"num_inference_steps must be an integer from 1 to {num_train_timesteps} (num_train_timesteps), "
                f"got {num_inference_steps!r}."
            )
        self.num_inference_steps = int(num_inference_steps)
        self._use_sampling_schedule(
            build_schedule(self.config.schedule, self.num_inference_steps, self.max_sigma, float(self.config.eps))
        )
        self.timesteps = self._unet_timesteps(self.num_inference_steps, device)

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        """The IR-SDE UNet takes the state as it is."""
        return sample

    def index_for_timestep(self, timestep: Union[float, torch.Tensor]) -> torch.Tensor:
        """UNet time t·T/N (a number, a 0-d or `[B]` tensor, any device) → schedule index t (long, CPU)."""
        times = torch.as_tensor(timestep).detach().cpu().to(torch.float64)
        position = times / self.sample_scale
        index = torch.round(position).long()
        off_grid = (position - index).abs() > 1e-3
        if bool((off_grid | (index < 1) | (index > self.num_inference_steps)).any()):
            raise ValueError(
                f"timestep {timestep} is outside this schedule (multiples of T/N = {self.sample_scale:g} from "
                f"T/N to T, N = {self.num_inference_steps}); pass values from `scheduler.timesteps`."
            )
        return index

    def _training_index(self, timesteps: Union[int, torch.Tensor]) -> torch.Tensor:
        """Integer training times t (a number, `[B]` or `[B, 1, 1, 1]`) → `[B]` long CPU index, checked."""
        index = torch.as_tensor(timesteps).detach().cpu()
        if index.is_floating_point() and not bool((index == index.round()).all()):
            raise ValueError(f"training timesteps must be integers t in 1..T, got {timesteps}.")
        index = index.long().reshape(-1)
        if bool(((index < 1) | (index > self.config.num_train_timesteps)).any()):
            raise ValueError(
                f"training timesteps must lie in 1..{self.config.num_train_timesteps}, got {index.tolist()}."
            )
        return index

    # -- shared pieces ---------------------------------------------------------------------------------
    _broadcast = staticmethod(broadcast_per_image)

    @classmethod
    def _at(cls, values: torch.Tensor, index: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """values[index] broadcast over `like`."""
        return cls._broadcast(values[index], like)

    @staticmethod
    def _float32(*tensors: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return tuple(tensor.float() for tensor in tensors)

    _noise = staticmethod(draw_noise)

    @staticmethod
    def _reverse_drift(theta, sigma, sigma_bar, dt, sample, model_output, mu, diffusion_weight: float):
        """(θ_t (μ − x) − w σ_t² s) dt with the score s = −ε̂ / σ̄_t; w = 1 for the SDE, ½ for its ODE."""
        score = -model_output / sigma_bar
        return (theta * (mu - sample) - diffusion_weight * sigma**2 * score) * dt

    @staticmethod
    def _pred_original_sample(thetas_cumsum, sigma_bar, dt, sample, model_output, mu) -> torch.Tensor:
        """x̂₀ = (x_t − μ − σ̄_t ε̂) e^{θ̄_t dt} + μ."""
        return (sample - mu - sigma_bar * model_output) * torch.exp(thetas_cumsum * dt) + mu

    # x_t = μ + (x₀ − μ) e^{−θ̄_t dt} + σ̄_t ε links the two things a UNet may predict (`config.prediction_type`);
    # each step asks only for the one it needs, so the authors' ε path does no extra work. σ̄_t > 0 for every
    # t ≥ 1 that a step or a training helper uses.
    def _noise_from_output(self, thetas_cumsum, sigma_bar, dt, sample, model_output, mu):
        """ε̂ from the UNet's output."""
        if self.config.prediction_type == "epsilon":
            return model_output
        return (sample - mu - (model_output - mu) * torch.exp(-thetas_cumsum * dt)) / sigma_bar

    def _original_from_output(self, thetas_cumsum, sigma_bar, dt, sample, model_output, mu):
        """x̂₀ from the UNet's output."""
        if self.config.prediction_type == "sample":
            return model_output
        return self._pred_original_sample(thetas_cumsum, sigma_bar, dt, sample, model_output, mu)

    def _posterior(self, schedule: IRSDESchedule, index: torch.Tensor):
        """Weights and std of q(x_{t−1} | x_t, x₀) for index t (0-d or `[B]`): (coef_xt, coef_x0, std).

        With A = e^{−θ_t dt}, B = e^{−θ̄_t dt}, C = e^{−θ̄_{t−1} dt}:
            mean = A(1 − C²)/(1 − B²) (x_t − μ) + C(1 − A²)/(1 − B²) (x₀ − μ) + μ
            std  = λ √((1 − A²)(1 − C²)/(1 − B²))
        """
        dt = schedule.dt
        theta, cumsum_t, cumsum_prev = (
            schedule.thetas[index], schedule.thetas_cumsum[index], schedule.thetas_cumsum[index - 1]
        )
        decay_step = torch.exp(-theta * dt)  # A
        decay_t = torch.exp(-cumsum_t * dt)  # B
        decay_prev = torch.exp(-cumsum_prev * dt)  # C
        coef_xt = decay_step * (1 - decay_prev**2) / (1 - decay_t**2)
        coef_x0 = decay_prev * (1 - decay_step**2) / (1 - decay_t**2)
        # The authors compute the variance from e^{−2θdt} afresh (not from A²), and take the root through a
        # log clamped at 1e-20·dt; at t = 1 the variance is 0 and the std ≈ 6e-12. Kept for bitwise parity.
        decay_step_sq, decay_t_sq = torch.exp(-2 * theta * dt), torch.exp(-2 * cumsum_t * dt)
        decay_prev_sq = torch.exp(-2 * cumsum_prev * dt)
        variance = (1 - decay_step_sq) * (1 - decay_prev_sq) / (1 - decay_t_sq)
        std = (0.5 * torch.log(torch.clamp(variance, min=1e-20 * dt))).exp() * self.max_sigma
        return coef_xt, coef_x0, std

    @staticmethod
    def _posterior_mean(coef_xt, coef_x0, sample, original_sample, mu) -> torch.Tensor:
        return coef_xt * (sample - mu) + coef_x0 * (original_sample - mu) + mu

    def posterior_coefficients(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For t = 1..N of the sampling schedule: the x_t and x₀ weights of the posterior mean and its std (`[N]`),
        as the steps use them."""
        coefficients = self.step_coefficients
        return coefficients.coef_xt[1:], coefficients.coef_x0[1:], coefficients.std[1:]

    # -- sampling --------------------------------------------------------------------------------------
    def prepare_start_sample(
        self, mu: torch.Tensor, generator: Generators = None, noise: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """x_N = μ + λ ε (`[B, C, H, W]`, float32 on μ's device), the authors' `noise_state`.

        The degraded image plus noise of the stationary spread λ (not σ̄_N). `noise` supplies ε; otherwise it
        is drawn with `generator` (one per image allowed). The state stays float32 through sampling.
        """
        (mu,) = self._float32(mu)
        noise = self._noise(mu.shape, generator, mu.device, noise)
        return mu + noise * self.max_sigma

    def _output(self, prev_sample, pred_original, dtype, return_dict):
        prev_sample, pred_original = prev_sample.to(dtype), pred_original.to(dtype)
        if not return_dict:
            return prev_sample, pred_original
        return IRSDESchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original)

    # -- training --------------------------------------------------------------------------------------
    def sample_training_timesteps(
        self,
        batch_size: int,
        generator: Optional[torch.Generator] = None,
        device: Union[str, torch.device, None] = None,
    ) -> torch.Tensor:
        """t ~ U{1, …, T} (`[B]` long, on `device`), as the authors' `generate_random_states`."""
        draw_device = generator.device if generator is not None else "cpu"
        timesteps = torch.randint(
            1, self.config.num_train_timesteps + 1, (batch_size,), generator=generator, device=draw_device
        )
        return timesteps.to(device) if device is not None else timesteps

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, *, mu: torch.Tensor
    ) -> torch.Tensor:
        """The forward marginal x_t = μ̄_t + σ̄_t ε with μ̄_t = μ + (x₀ − μ) e^{−θ̄_t dt}.

        Args:
            original_samples (`[B, C, H, W]`): x₀, the clean image.
            noise (`[B, C, H, W]`): ε.
            timesteps (`int`, `[B]` or `[B, 1, 1, 1]`): integer training times t in 1..T, one per image.
            mu (`[B, C, H, W]`): μ, the degraded image.
        Returns:
            x_t `[B, C, H, W]`, computed in float32, in `original_samples`' dtype. Always on the T-step schedule.
        """
        dtype = original_samples.dtype
        x0, noise, mu = self._float32(original_samples, noise, mu)
        index, schedule = self._training_index(timesteps), self.training_schedule
        thetas_cumsum = self._at(schedule.thetas_cumsum, index, x0)
        sigma_bar = self._at(schedule.sigma_bars, index, x0)
        state_mean = mu + (x0 - mu) * torch.exp(-thetas_cumsum * schedule.dt.to(x0.device))
        return (noise * sigma_bar + state_mean).to(dtype)

    def optimum_prev_sample(
        self, sample: torch.Tensor, original_samples: torch.Tensor, timesteps: torch.Tensor, *, mu: torch.Tensor
    ) -> torch.Tensor:
        """The optimal x_{t−1} given x_t and the true x₀ (the posterior mean): the training target.

        Shapes as `add_noise`; returned in `sample`'s dtype. The authors' `reverse_optimum_step`.
        """
        dtype = sample.dtype
        x, x0, mu = self._float32(sample, original_samples, mu)
        index = self._training_index(timesteps)
        coef_xt, coef_x0, _ = (self._broadcast(c, x) for c in self._posterior(self.training_schedule, index))
        return self._posterior_mean(coef_xt, coef_x0, x, x0, mu).to(dtype)

    def predicted_original_sample(
        self, sample: torch.Tensor, model_output: torch.Tensor, timesteps: torch.Tensor, *, mu: torch.Tensor
    ) -> torch.Tensor:
        """x̂₀ = μ + (x_t − μ − σ̄_t ε̂) e^{θ̄_t dt}, the clean image that the UNet's output implies (the output
        itself with `prediction_type="sample"`).

        The posterior sampler only ever uses ε̂ through this estimate, so its error is what sampling feels (a
        training objective; not the authors'). Shapes as `add_noise`; returned in `sample`'s dtype.
        """
        dtype = sample.dtype
        x, model_output, mu = self._float32(sample, model_output, mu)
        index, schedule = self._training_index(timesteps), self.training_schedule
        thetas_cumsum, sigma_bar = self._at(schedule.thetas_cumsum, index, x), self._at(schedule.sigma_bars, index, x)
        dt = schedule.dt.to(x.device)
        return self._original_from_output(thetas_cumsum, sigma_bar, dt, x, model_output, mu).to(dtype)

    def expected_prev_sample(
        self, sample: torch.Tensor, model_output: torch.Tensor, timesteps: torch.Tensor, *, mu: torch.Tensor
    ) -> torch.Tensor:
        """The reverse-SDE mean x_t − (θ_t(μ − x_t) + σ_t² ε̂/σ̄_t) dt from the predicted noise ε̂: the prediction.

        The authors' objective is `l1(expected_prev_sample(x_t, ε̂, t, mu=μ), optimum_prev_sample(x_t, x₀, t, mu=μ))`.
        Shapes as `add_noise`; returned in `sample`'s dtype.
        """
        dtype = sample.dtype
        x, model_output, mu = self._float32(sample, model_output, mu)
        index, schedule = self._training_index(timesteps), self.training_schedule
        at = lambda values: self._at(values, index, x)
        theta, sigma, sigma_bar = at(schedule.thetas), at(schedule.sigmas), at(schedule.sigma_bars)
        dt = schedule.dt.to(x.device)
        noise = self._noise_from_output(at(schedule.thetas_cumsum), sigma_bar, dt, x, model_output, mu)
        drift = self._reverse_drift(theta, sigma, sigma_bar, dt, x, noise, mu, 1.0)
        return (x - drift).to(dtype)


class IRSDEScheduler(_IRSDESchedulerBase):
    r"""
    Reverse-time IR-SDE sampler: Euler–Maruyama on the reverse SDE (`solver="sde"`), or the Euler step of its
    probability-flow ODE (`solver="ode"`, deterministic).

        sde:  x_{t−1} = x_t − (θ_t(μ − x_t) − σ_t² s) dt − σ_t √dt z,    s = −ε̂ / σ̄_t,  z ~ N(0, I)
        ode:  x_{t−1} = x_t − (θ_t(μ − x_t) − ½ σ_t² s) dt

    Args:
        num_train_timesteps (`int`, defaults to 100): T.
        max_sigma (`float`, defaults to 50): λ, the stationary spread; ≥ 1 means a 0..255 scale (50 → 0.196).
        schedule (`str`, defaults to "cosine"): the θ schedule, "cosine", "linear" or "constant".
        eps (`float`, defaults to 0.005): e^{−θ̄_N dt}, the share of x₀ − μ left in x_N.
        solver (`str`, defaults to "sde"): "sde" or "ode".
        prediction_type (`str`, defaults to "epsilon"): what the UNet predicts: "epsilon", the noise ε (the
            authors' models), or "sample", the clean image x₀ (diffusers' name). The step turns one into the other.
    """

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 100,
        max_sigma: float = 50.0,
        schedule: str = "cosine",
        eps: float = 0.005,
        solver: str = "sde",
        prediction_type: str = "epsilon",
    ):
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, not {solver!r}.")
        self._setup(num_train_timesteps, max_sigma, schedule, eps, prediction_type)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Union[float, torch.Tensor],
        sample: torch.Tensor,
        *,
        mu: torch.Tensor,
        generator: Generators = None,
        variance_noise: Optional[torch.Tensor] = None,
        return_dict: bool = True,
    ) -> Union[IRSDESchedulerOutput, Tuple[torch.Tensor, torch.Tensor]]:
        """One reverse step from x_t to x_{t−1}, computed in float32.

        Args:
            model_output (`[B, C, H, W]`): the UNet's prediction at x_t: ε̂ (or x̂₀ with `prediction_type="sample"`).
            timestep (`float`, 0-d or `[B]` tensor): the UNet time of x_t, a value of `self.timesteps`.
            sample (`[B, C, H, W]`): x_t.
            mu (`[B, C, H, W]`): μ, the degraded image.
            generator: draws z (sde only; one generator per image allowed); unused if `variance_noise` is given.
            variance_noise (`[B, C, H, W]`, optional): z itself (sde only; the ode step has no noise).
        Returns:
            `IRSDESchedulerOutput(prev_sample, pred_original_sample)` in `sample`'s dtype, or that tuple.
        """
        dtype = sample.dtype
        x, model_output, mu = self._float32(sample, model_output, mu)
        # 1. The coefficients of step t (θ_t, σ_t, θ̄_t, σ̄_t, dt), gathered once by `set_timesteps`.
        c = self.step_coefficients.at(self.index_for_timestep(timestep), x)
        # 2. ε̂ and x̂₀ from the UNet's output (whichever it predicts).
        noise = self._noise_from_output(c.thetas_cumsum, c.sigma_bar, c.dt, x, model_output, mu)
        pred_original = self._original_from_output(c.thetas_cumsum, c.sigma_bar, c.dt, x, model_output, mu)
        if self.config.solver == "sde":
            # 3. Euler–Maruyama: x_{t−1} = x_t − drift − σ_t √dt z.
            drift = self._reverse_drift(c.theta, c.sigma, c.sigma_bar, c.dt, x, noise, mu, 1.0)
            z = self._noise(x.shape, generator, x.device, variance_noise)
            prev_sample = x - drift - c.sigma * (z * math.sqrt(float(self.step_coefficients.dt)))
        else:
            # 3. The probability-flow ODE's Euler step: half the score term, no noise.
            prev_sample = x - self._reverse_drift(c.theta, c.sigma, c.sigma_bar, c.dt, x, noise, mu, 0.5)
        # 4. Back to the caller's dtype.
        return self._output(prev_sample, pred_original, dtype, return_dict)


class IRSDEPosteriorScheduler(_IRSDESchedulerBase):
    r"""
    Optimal-posterior IR-SDE sampler (the authors' default): estimate x̂₀ from ε̂, then sample the exact
    Gaussian q(x_{t−1} | x_t, x̂₀).

        x̂₀ = (x_t − μ − σ̄_t ε̂) e^{θ̄_t dt} + μ
        x_{t−1} = A(1 − C²)/(1 − B²) (x_t − μ) + C(1 − A²)/(1 − B²) (x̂₀ − μ) + μ + λ √((1 − A²)(1 − C²)/(1 − B²)) z
        with A = e^{−θ_t dt}, B = e^{−θ̄_t dt}, C = e^{−θ̄_{t−1} dt}

    Args:
        num_train_timesteps (`int`, defaults to 100): T.
        max_sigma (`float`, defaults to 50): λ; ≥ 1 means a 0..255 scale (50 → 0.196).
        schedule (`str`, defaults to "cosine"): "cosine", "linear" or "constant".
        eps (`float`, defaults to 0.005): e^{−θ̄_N dt}.
        clip_sample (`bool`, defaults to `False`): clamp x̂₀ to the image range [0, 1] before the posterior step,
            as diffusers' `DDPMScheduler(clip_sample=True)`. Off reproduces the authors. x̂₀ divides the noise
            prediction's error by e^{−θ̄_t dt} (down to `eps`, so ×200 at t = T): a weak model's trajectory then
            runs away, and the clamp keeps it within the images' range.
        prediction_type (`str`, defaults to "epsilon"): what the UNet predicts: "epsilon", the noise ε (the
            authors' models), or "sample", the clean image x₀ (diffusers' name). The step turns one into the other.
    """

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 100,
        max_sigma: float = 50.0,
        schedule: str = "cosine",
        eps: float = 0.005,
        clip_sample: bool = False,
        prediction_type: str = "epsilon",
    ):
        self._setup(num_train_timesteps, max_sigma, schedule, eps, prediction_type)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Union[float, torch.Tensor],
        sample: torch.Tensor,
        *,
        mu: torch.Tensor,
        generator: Generators = None,
        variance_noise: Optional[torch.Tensor] = None,
        return_dict: bool = True,
    ) -> Union[IRSDESchedulerOutput, Tuple[torch.Tensor, torch.Tensor]]:
        """One posterior step from x_t to x_{t−1}; arguments and returns as `IRSDEScheduler.step`.

        z is drawn at every step, t = 1 included (where its std is ≈ 6e-12), as the authors do, so that a
        generator gives their sequence of draws.
        """
        dtype = sample.dtype
        x, model_output, mu = self._float32(sample, model_output, mu)
        # 1. The coefficients of step t (θ̄_t, σ̄_t, dt and the posterior's weights and std), gathered by `set_timesteps`.
        c = self.step_coefficients.at(self.index_for_timestep(timestep), x)
        # 2. x̂₀ from the UNet's output (optionally clamped to the image range).
        pred_original = self._original_from_output(c.thetas_cumsum, c.sigma_bar, c.dt, x, model_output, mu)
        if self.config.clip_sample:
            pred_original = pred_original.clamp(0.0, 1.0)
        # 3. Sample q(x_{t−1} | x_t, x̂₀): its mean plus std · z.
        z = self._noise(x.shape, generator, x.device, variance_noise)
        prev_sample = self._posterior_mean(c.coef_xt, c.coef_x0, x, pred_original, mu) + c.std * z
        # 4. Back to the caller's dtype.
        return self._output(prev_sample, pred_original, dtype, return_dict)
