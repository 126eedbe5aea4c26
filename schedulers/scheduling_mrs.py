# MR Sampler: "A Fast Sampler for Mean Reverting Diffusion based on ODE and SDE Solvers" (Li et al., ICLR 2025),
# authors' code: GitHub grrrute/mr-sampler, universal-image-restoration/utils/sampler.py (class `MRSampler`).
r"""
The MR Sampler solves the IR-SDE's reverse SDE or its probability-flow ODE semi-analytically: the
mean-reverting part exactly, the network term by an exponential integrator in the half log-SNR

    α_t = e^{−θ̄_t dt},   σ̄_t = λ √(1 − α_t²),   λ_t = log α_t − log σ̄_t      (λ here: `lambdas`; the
                                                                            stationary spread is `max_sigma`)

With y = x − μ, x_t = μ + α_t (x₀ − μ) + σ̄_t ε, and h_i = λ_{t_i} − λ_{t_{i−1}} > 0, the first-order steps are
(shapes: x, μ, ε̂, x̂₀ all `[B, C, H, W]`; α, σ̄, h scalars):

    ODE, data  (DPM-Solver++ form):  x_i = σ̄_i/σ̄_{i−1} x_{i−1} − α_i (e^{−h} − 1) x̂₀
                                          + μ (1 − σ̄_i/σ̄_{i−1} + σ̄_i/σ̄_{i−1} α_{i−1} − α_i)
    ODE, noise (DPM-Solver form):    x_i = α_i/α_{i−1} x_{i−1} − σ̄_i (e^{h} − 1) ε̂ + μ (1 − α_i/α_{i−1})
    SDE, data:   x_i = σ̄_i/σ̄_{i−1} e^{−h} x_{i−1} + α_i (1 − e^{−2h}) x̂₀ + σ̄_i √(1 − e^{−2h}) z
                       + μ (1 − α_i/α_{i−1} e^{−2h} − α_i (1 − e^{−2h}))
    SDE, noise:  x_i = α_i/α_{i−1} x_{i−1} − 2 σ̄_i (e^{h} − 1) ε̂ + σ̄_i √(e^{2h} − 1) z + μ (1 − α_i/α_{i−1})

Orders 2 and 3 add the multistep differences D1 = (q₀ − q₁)/r, r = h_{i−1}/h_i (q = x̂₀ or ε̂ at the last
steps; not the midpoint form) and, for order 3, D2; see `_ode_step` / `_sde_step`.

MR Sampler conventions reproduced on purpose (they differ from the authors' DA-CLIP sampler in
`scheduling_irsde.py`):
- θ̄_t = Σ_{i≤t} θ_i on the T-step schedule, **without** subtracting θ₀, so dt = −ln(eps)/θ̄_T, α_t and σ̄_t
  differ slightly from the posterior sampler's (α_0 < 1, σ̄_0 > 0, λ finite everywhere);
- α, σ̄, λ are computed on the integer grid t = 0…T in float32 and linearly interpolated at fractional times;
- the UNet receives the (fractional) time t_{i−1} on the 0…T scale itself;
- the first `solver_order − 1` steps use orders 1, 2, …; with fewer than 10 steps, step i < M uses
  min(solver_order, M − i), and the last step the full order again.
Everything is float32, in the order of operations of the authors' code, so that their outputs are
reproduced to float32 round-off.

Combinations the authors' code gets wrong are refused: thresholding or `denoise_last` with the noise
parameterization (it would threshold ε̂ / return ε̂ as the image) and order 3 with the SDE (not derived).
"""
from __future__ import annotations

import math
import numbers
from typing import List, Optional, Tuple, Union

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from .scheduling_irsde import (
    Generators,
    IRSDESchedulerOutput,
    check_sde_config,
    compatible_schedulers,
    draw_noise,
    theta_schedule,
)

MRS_SOLVERS = ("ode", "sde")
PARAMETERIZATIONS = ("data", "noise")
TIMESTEP_SPACINGS = ("linspace", "leading", "trailing", "karras-n", "karras-t", "linear-lambda")
KARRAS_RHO = 7.0  # the MR Sampler's default ρ for both Karras grids


def interpolate(x: torch.Tensor, xp: torch.Tensor, yp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear y(x) through the points (xp, yp), `xp` increasing (`[K]`, K ≥ 2); `x` is `[N]`.

    Outside [xp₀, xp_{K−1}] the end segments are extended, as DPM-Solver's `interpolate_fn` that the MR
    Sampler uses; a point on a knot takes the segment that starts there, so knots map to their own value.
    """
    start = (torch.searchsorted(xp, x, right=True) - 1).clamp(0, xp.numel() - 2)
    start_x, end_x, start_y, end_y = xp[start], xp[start + 1], yp[start], yp[start + 1]
    return start_y + (x - start_x) * (end_y - start_y) / (end_x - start_x)


class MRSamplerScheduler(SchedulerMixin, ConfigMixin):
    r"""
    MR Sampler (Li et al., ICLR 2025): a training-free multistep solver of the IR-SDE's reverse SDE / ODE that
    restores with the released weights in 5–20 UNet evaluations instead of 100. Same contract as
    [`IRSDEPosteriorScheduler`]: μ is an argument of every call, never scheduler state, and `timesteps` are the
    values to pass to the UNet. Between `set_timesteps` calls it keeps the last `solver_order` model
    predictions; a run that restarts at the first timestep starts afresh.

    Args (MR Sampler option name in brackets):
        num_train_timesteps (`int`, defaults to 100): T [`sde.T`].
        max_sigma (`float`, defaults to 50): λ, the stationary spread; ≥ 1 means a 0..255 scale [`sde.max_sigma`].
        schedule (`str`, defaults to "cosine"): the θ schedule, "cosine", "linear" or "constant" [`sde.schedule`].
        eps (`float`, defaults to 0.005): e^{−θ̄_T dt} [`sde.eps`].
        prediction_type (`str`, defaults to "epsilon"): what the UNet predicts: "epsilon" (the authors' UNet)
            or "sample", x₀ [`fit_target`: "noise" or "data"].
        solver (`str`, defaults to "ode"): "ode" (deterministic) or "sde" (draws one z per step) [`solver_type`].
        solver_order (`int`, defaults to 2): 1, 2 or 3 (3 for the ODE only) [`order`].
        parameterization (`str`, defaults to "data"): "data", integrate the x̂₀ prediction (recommended), or
            "noise", the ε̂ prediction [`parameterization`].
        timestep_spacing (`str`, defaults to "linspace"): the time grid [`time_schedule`]: "linspace" (N + 1
            points from t_max to 0), "leading", "trailing", "karras-n" (Karras in σ̄/α), "karras-t" (Karras in t)
            or "linear-lambda" (uniform in λ). "trailing" has fewer points when `lambda_min` binds.
        lambda_min (`float`, defaults to −5.0): the smallest λ used; t_max is cut where λ_t falls below it
            [`lambda_min`]. It does not bind at the authors' settings (λ_T ≈ −3.7).
        thresholding (`bool`, defaults to False): dynamic thresholding of x̂₀ (data parameterization only)
            [`thresholding`]: s = quantile(|x̂₀|, threshold_ratio) per image, clamped to [1, threshold_max];
            x̂₀ ← clamp(x̂₀, −s, s)/s.
        threshold_ratio (`float`, defaults to 0.995) [`threshold_ratio`]; threshold_max (`float`, defaults to 1.5)
            [`threshold_max`].
        denoise_last (`bool`, defaults to False): the last step returns the (thresholded) x̂₀ at t_{M−1} instead of
            solving to t_M (data parameterization only) [`denoise_last`].

    The MR Sampler's `timestep_offset` (0) and `rho` (7) are fixed at its defaults.
    """

    order = 1  # UNet evaluations per step (diffusers' meaning); the solver's own order is `solver_order`

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 100,
        max_sigma: float = 50.0,
        schedule: str = "cosine",
        eps: float = 0.005,
        prediction_type: str = "epsilon",
        solver: str = "ode",
        solver_order: int = 2,
        parameterization: str = "data",
        timestep_spacing: str = "linspace",
        lambda_min: float = -5.0,
        thresholding: bool = False,
        threshold_ratio: float = 0.995,
        threshold_max: float = 1.5,
        denoise_last: bool = False,
    ):
        self.max_sigma = check_sde_config(num_train_timesteps, max_sigma, schedule, eps, prediction_type)
        self.init_noise_sigma = self.max_sigma
        self._check_solver_config()
        self._build_training_grid()
        try:
            self.set_timesteps(min(20, int(num_train_timesteps)))  # the MR Sampler's default; pipelines set their own
        except ValueError:  # e.g. "leading" on a very short T: refused when set_timesteps is called
            self.timesteps, self.num_inference_steps = torch.zeros(0), 0
            self._reset()

    def _check_solver_config(self) -> None:
        config = self.config
        if config.solver not in MRS_SOLVERS:
            raise ValueError(f"solver must be one of {MRS_SOLVERS}, not {config.solver!r}.")
        if config.parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, not {config.parameterization!r}.")
        max_order = 3 if config.solver == "ode" else 2
        if isinstance(config.solver_order, bool) or config.solver_order not in range(1, max_order + 1):
            raise ValueError(
                f"solver_order must be 1 to {max_order} for solver={config.solver!r}, not {config.solver_order!r} "
                "(the MR Sampler has no third-order SDE step)."
            )
        if config.timestep_spacing not in TIMESTEP_SPACINGS:
            raise ValueError(f"timestep_spacing must be one of {TIMESTEP_SPACINGS}, not {config.timestep_spacing!r}.")
        if isinstance(config.lambda_min, bool) or not isinstance(config.lambda_min, numbers.Real) or math.isnan(config.lambda_min):
            raise ValueError(f"lambda_min must be a number (the smallest half log-SNR used), not {config.lambda_min!r}.")
        if not 0 < config.threshold_ratio <= 1:
            raise ValueError(f"threshold_ratio (a quantile) must lie in (0, 1], not {config.threshold_ratio!r}.")
        if not config.threshold_max >= 1:
            raise ValueError(f"threshold_max must be at least 1, not {config.threshold_max!r}.")
        if config.parameterization == "noise" and (config.thresholding or config.denoise_last):
            option = "thresholding" if config.thresholding else "denoise_last"
            raise ValueError(
                f"{option} needs parameterization='data': it acts on the x̂₀ prediction (with 'noise' it would act on "
                "ε̂, as the MR Sampler's code does by mistake)."
            )

    @classmethod
    def _get_compatibles(cls):
        return compatible_schedulers()

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    # -- the schedule on the integer grid t = 0..T (the MR Sampler's own IR-SDE) -------------------------
    def _build_training_grid(self) -> None:
        """α_t, σ̄_t, λ_t and σ̄_t/α_t for t = 0..T (`[T + 1]` float32), in the MR Sampler's order of operations."""
        T = int(self.config.num_train_timesteps)
        thetas = theta_schedule(self.config.schedule, T)
        # The MR Sampler's convention: θ̄_t = cumsum(θ) keeps θ₀ (the authors' DA-CLIP IR-SDE subtracts it).
        thetas_cumsum = torch.cumsum(thetas, dim=0)
        self.dt = -1 / thetas_cumsum[-1] * math.log(self.config.eps)  # α_T = eps
        self.train_times = torch.linspace(0, T, T + 1, dtype=torch.float32)
        self.train_alphas = torch.exp(-thetas_cumsum * self.dt)
        self.train_sigma_bars = torch.sqrt(self.max_sigma**2 * (1 - torch.exp(-2 * thetas_cumsum * self.dt)))
        self.train_lambdas = torch.log(self.train_alphas) - torch.log(self.train_sigma_bars)
        self.train_noise_levels = self.train_sigma_bars / self.train_alphas  # Karras' σ = σ̄/α

    # -- time grid --------------------------------------------------------------------------------------
    def _time_grid(self, num_steps: int) -> torch.Tensor:
        """t₀ > t₁ > … > t_M on the 0…T scale (float32), the MR Sampler's `set_timesteps`."""
        T, spacing = int(self.config.num_train_timesteps), self.config.timestep_spacing
        lambdas = self.train_lambdas
        clipped = torch.searchsorted(torch.flip(lambdas, [0]), self.config.lambda_min)
        t_max = T - int(clipped)
        rho = KARRAS_RHO
        if spacing == "linspace":
            return torch.linspace(0, t_max, num_steps + 1, dtype=torch.float32).flip(0)
        if spacing == "leading":
            interval = t_max // (num_steps + 1)  # integer division: the grid stops short of t_max
            return (torch.arange(0, num_steps + 1, dtype=torch.float32) * interval).flip(0)
        if spacing == "trailing":
            # The interval uses T, not t_max: with a binding lambda_min the grid has fewer than N + 1 points.
            return torch.arange(t_max, 0, -(T / (num_steps + 1)), dtype=torch.float32)
        ramp = torch.linspace(0, 1, num_steps + 1, dtype=torch.float32)
        if spacing == "karras-n":
            # Over the whole grid t = 0..T (lambda_min is ignored here, as in the MR Sampler).
            sigma_min, sigma_max = self.train_noise_levels.min().item(), self.train_noise_levels.max().item()
            noise_levels = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
            return interpolate(noise_levels, self.train_noise_levels, self.train_times)
        if spacing == "karras-t":
            t_min = 1.0
            return (T ** (1 / rho) + ramp * (t_min ** (1 / rho) - T ** (1 / rho))) ** rho
        # linear-lambda
        lambda_low = max(lambdas.min().item(), self.config.lambda_min)
        uniform = torch.linspace(lambda_low, lambdas.max().item(), num_steps + 1, dtype=torch.float32)
        return interpolate(uniform, torch.flip(lambdas, [0]), torch.flip(self.train_times, [0]))

    def set_timesteps(self, num_inference_steps: int, device: Union[str, torch.device, None] = None) -> None:
        """Build the time grid for N = `num_inference_steps` (the MR Sampler's `num_sample_steps`) and start afresh.

        Sets `time_grid` (`[M + 1]`: t₀ … t_M), `alphas`, `sigma_bars`, `lambdas` on it (`[M + 1]`, float32, CPU)
        and `timesteps` (`[M]` float32 on `device`: t₀ … t_{M−1}, one per UNet evaluation, the values to pass
        to the UNet). M = N except for "trailing" with a binding `lambda_min` (fewer). `num_inference_steps`
        becomes M.

        Raises:
            `ValueError`: N is not an integer from 1 to T, or the grid's times do not strictly decrease (e.g.
            "leading" with N + 1 > t_max).
        """
        T = self.config.num_train_timesteps
        if (
            isinstance(num_inference_steps, bool)
            or not isinstance(num_inference_steps, numbers.Integral)
            or not 1 <= num_inference_steps <= T
        ):
            raise ValueError(f"num_inference_steps must be an integer from 1 to {T} (num_train_timesteps), got {num_inference_steps!r}.")
        grid = self._time_grid(int(num_inference_steps))
        if grid.numel() < 2 or not bool((grid[1:] < grid[:-1]).all()):
            raise ValueError(
                f"timestep_spacing={self.config.timestep_spacing!r} gives no strictly decreasing time grid for "
                f"{num_inference_steps} steps ({grid.tolist()}); use fewer steps or another spacing."
            )
        self.time_grid = grid
        self.alphas = interpolate(grid, self.train_times, self.train_alphas)
        self.sigma_bars = interpolate(grid, self.train_times, self.train_sigma_bars)
        self.lambdas = interpolate(grid, self.train_times, self.train_lambdas)
        self.timesteps = grid[:-1].to(device)
        self.num_inference_steps = grid.numel() - 1
        self._reset()

    def _reset(self) -> None:
        self.model_outputs: List[Optional[torch.Tensor]] = [None] * self.config.solver_order  # q₀ (newest), q₁, …
        self._last_step: Optional[int] = None

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        """The IR-SDE UNet takes the state as it is."""
        return sample

    def step_index_for_timestep(self, timestep: Union[float, torch.Tensor]) -> int:
        """The step i (1..M) whose UNet call was at `timestep` = t_{i−1} (a number, or a tensor of equal values)."""
        times = torch.as_tensor(timestep).detach().cpu().to(torch.float32).reshape(-1)
        if times.numel() == 0 or not bool((times == times[0]).all()):
            raise ValueError(f"the MR Sampler steps a batch at one time; got timesteps {times.tolist()}.")
        matches = (self.timesteps.cpu() - times[0]).abs() <= 1e-4 * max(1.0, abs(float(times[0])))
        if not bool(matches.any()):
            raise ValueError(
                f"timestep {float(times[0]):g} is not on this time grid ({self.timesteps.tolist()}); pass values from "
                "`scheduler.timesteps` (after `set_timesteps`)."
            )
        return int(matches.nonzero()[0]) + 1

    def _step_order(self, i: int) -> int:
        """The MR Sampler's order at step i of M: ramp up, taper when M < 10, full order at the last step."""
        order, M = self.config.solver_order, self.num_inference_steps
        if i < order:
            return i
        if i < M and M < 10:
            return min(order, M - i)
        return min(order, i)  # the MR Sampler would read before t₀ if M < order; use what exists

    # -- model output → the parameterized prediction ----------------------------------------------------
    def _threshold(self, prediction: torch.Tensor) -> torch.Tensor:
        """Dynamic thresholding (Saharia et al. 2022), per image: x ← clamp(x, −s, s)/s, s = clamp(quantile(|x|), 1, max)."""
        flat = prediction.reshape(prediction.shape[0], -1)
        s = torch.quantile(flat.abs(), self.config.threshold_ratio, dim=1)
        s = torch.clamp(s, min=1, max=self.config.threshold_max).unsqueeze(1)
        return (torch.clamp(flat, -s, s) / s).reshape(prediction.shape)

    def _convert_model_output(self, model_output, sample, mu, alpha, sigma_bar) -> Tuple[torch.Tensor, torch.Tensor]:
        """(q, x̂₀): q is x̂₀ (data parameterization) or ε̂ (noise); x̂₀ is the clean image the output implies."""
        from_noise = self.config.prediction_type == "epsilon"
        if from_noise:
            original = (sample - sigma_bar * model_output) / alpha - (1 - alpha) / alpha * mu
        else:
            original = model_output
        if self.config.parameterization == "data":
            q = self._threshold(original) if self.config.thresholding else original
            return q, q
        noise = model_output if from_noise else (sample - mu - (model_output - mu) * alpha) / sigma_bar
        return noise, original

    # -- solver steps (the MR Sampler's `step_ode_*` / `step_sde_*`) -----------------------------------
    def _differences(self, i: int, order: int, h: torch.Tensor):
        """D1 (order ≥ 2) and D2 (order 3) from the stored predictions q₀, q₁, q₂."""
        q, lambdas = self.model_outputs, self.lambdas
        if order == 2:
            r = (lambdas[i - 1] - lambdas[i - 2]) / h
            return (q[0] - q[1]) / r, None
        r0 = (lambdas[i - 1] - lambdas[i - 2]) / h
        r1 = (lambdas[i - 2] - lambdas[i - 3]) / h
        d1_0, d1_1 = (q[0] - q[1]) / r0, (q[1] - q[2]) / r1
        d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
        d2 = (d1_0 - d1_1) / (r0 + r1)
        return d1, d2

    def _ode_step(self, x, mu, i: int, order: int) -> torch.Tensor:
        alpha, alpha_prev, sigma, sigma_prev = self.alphas[i], self.alphas[i - 1], self.sigma_bars[i], self.sigma_bars[i - 1]
        h = self.lambdas[i] - self.lambdas[i - 1]
        q0 = self.model_outputs[0]
        d1, d2 = self._differences(i, order, h) if order > 1 else (None, None)
        if self.config.parameterization == "data":
            phi1 = torch.exp(-h) - 1
            if order == 1:
                prev = sigma / sigma_prev * x - alpha * phi1 * q0
            else:
                phi2 = phi1 / h + 1
                D = phi1 * q0 - phi2 * d1
                if order == 3:
                    D = D + (phi2 / h - 0.5) * d2
                prev = sigma / sigma_prev * x - alpha * D
            return prev + mu * (1 - sigma / sigma_prev + sigma / sigma_prev * alpha_prev - alpha)
        phi1 = torch.exp(h) - 1
        if order == 1:
            prev = alpha / alpha_prev * x - sigma * phi1 * q0
        else:
            phi2 = phi1 / h - 1
            D = phi1 * q0 + phi2 * d1
            if order == 3:
                D = D + (phi2 / h - 0.5) * d2
            prev = alpha / alpha_prev * x - sigma * D
        return prev + mu * (1 - alpha / alpha_prev)

    def _sde_step(self, x, mu, i: int, order: int, z: torch.Tensor) -> torch.Tensor:
        alpha, alpha_prev, sigma, sigma_prev = self.alphas[i], self.alphas[i - 1], self.sigma_bars[i], self.sigma_bars[i - 1]
        h = self.lambdas[i] - self.lambdas[i - 1]
        q0 = self.model_outputs[0]
        d1 = self._differences(i, order, h)[0] if order == 2 else None
        if self.config.parameterization == "data":
            phi1 = 1 - torch.exp(-2 * h)
            prev = sigma / sigma_prev * torch.exp(-h) * x + alpha * phi1 * q0
            if order == 2:
                prev = prev + alpha * (1 - phi1 / 2 / h) * d1
            prev = prev + sigma * torch.sqrt(phi1) * z
            return prev + mu * (1 - alpha / alpha_prev * torch.exp(-2 * h) - alpha * phi1)
        phi1 = torch.exp(h) - 1
        prev = alpha / alpha_prev * x - 2 * sigma * phi1 * q0
        if order == 2:
            prev = prev - 2 * sigma * (phi1 / h - 1) * d1
        prev = prev + sigma * torch.sqrt(torch.exp(2 * h) - 1) * z
        return prev + mu * (1 - alpha / alpha_prev)

    # -- sampling ---------------------------------------------------------------------------------------
    def prepare_start_sample(
        self, mu: torch.Tensor, generator: Generators = None, noise: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """x_{t₀} = μ + λ ε (`[B, C, H, W]`, float32 on μ's device), the MR Sampler's `prior_sample`.

        `noise` supplies ε; otherwise it is drawn with `generator` (one per image allowed).
        """
        mu = mu.float()
        return mu + draw_noise(mu.shape, generator, mu.device, noise) * self.max_sigma

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
        """One MR Sampler step from x_{t_{i−1}} to x_{t_i}, computed in float32.

        Args:
            model_output (`[B, C, H, W]`): the UNet's output at x_{t_{i−1}}: ε̂ (or x̂₀ with `prediction_type="sample"`).
            timestep (`float` or tensor): t_{i−1}, the value of `self.timesteps` the UNet was given.
            sample (`[B, C, H, W]`): x_{t_{i−1}}.
            mu (`[B, C, H, W]`): μ, the degraded image.
            generator: draws z (sde only; one generator per image allowed); unused if `variance_noise` is given.
            variance_noise (`[B, C, H, W]`, optional): z itself (sde only).
        Returns:
            `IRSDESchedulerOutput(prev_sample, pred_original_sample)` in `sample`'s dtype, or that tuple. After the
            last step (i = M), prev_sample is x̂ at t_M (with `denoise_last`: the x̂₀ prediction at t_{M−1}), not
            yet clipped to [0, 1]. pred_original_sample is x̂₀ at t_{i−1}.
        Raises:
            ValueError: a timestep off the grid, or steps out of order (the first timestep starts afresh).
            FloatingPointError: the state is no longer finite (the MR Sampler's code stops silently there).
        """
        dtype = sample.dtype
        x, model_output, mu = sample.float(), model_output.float(), mu.float()
        i = self.step_index_for_timestep(timestep)
        if i == 1:
            self._reset()
        elif self._last_step != i - 1:
            raise ValueError(
                f"MR Sampler steps must follow `scheduler.timesteps` in order: got step {i} after "
                f"{self._last_step or 'none'}. Start again from the first timestep (or call set_timesteps)."
            )
        device = x.device
        alpha_prev, sigma_prev = self.alphas[i - 1].to(device), self.sigma_bars[i - 1].to(device)
        q, original = self._convert_model_output(model_output, x, mu, alpha_prev, sigma_prev)
        self.model_outputs = [q] + self.model_outputs[:-1]
        self._last_step = i
        M = self.num_inference_steps
        if i == M and self.config.denoise_last:
            prev_sample = q
        else:
            order = self._step_order(i)
            if self.config.solver == "sde":
                z = draw_noise(x.shape, generator, device, variance_noise)
                prev_sample = self._sde_step(x, mu, i, order, z)
            else:
                prev_sample = self._ode_step(x, mu, i, order)
        if not bool(torch.isfinite(prev_sample).all()):
            raise FloatingPointError(
                f"the MR Sampler's state is no longer finite after step {i} of {M} (t = {float(self.time_grid[i]):g}); "
                "try more steps, solver_order=1 or parameterization='data'."
            )
        prev_sample, original = prev_sample.to(dtype), original.to(dtype)
        if not return_dict:
            return prev_sample, original
        return IRSDESchedulerOutput(prev_sample=prev_sample, pred_original_sample=original)

    # -- training-side helper ---------------------------------------------------------------------------
    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, *, mu: torch.Tensor
    ) -> torch.Tensor:
        """x_t = μ + α_t (x₀ − μ) + σ̄_t ε on this sampler's schedule (times on the 0…T scale, one per image or one
        for all; fractional times interpolated). Shapes `[B, C, H, W]`; computed in float32, returned in
        `original_samples`' dtype. (Training uses the authors' schedule: `IRSDEScheduler.add_noise`.)"""
        dtype = original_samples.dtype
        x0, noise, mu = original_samples.float(), noise.float(), mu.float()
        times = torch.as_tensor(timesteps, dtype=torch.float32).detach().cpu().reshape(-1)
        T = self.config.num_train_timesteps
        if bool(((times < 0) | (times > T)).any()):
            raise ValueError(f"timesteps must lie in 0..{T}, got {times.tolist()}.")
        shape = (-1,) + (1,) * (x0.ndim - 1)
        alpha = interpolate(times, self.train_times, self.train_alphas).reshape(shape).to(x0.device)
        sigma_bar = interpolate(times, self.train_times, self.train_sigma_bars).reshape(shape).to(x0.device)
        return (mu + alpha * (x0 - mu) + sigma_bar * noise).to(dtype)
