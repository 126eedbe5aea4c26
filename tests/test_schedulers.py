"""IR-SDE schedulers against the authors' arrays, plus diffusers' common scheduler checks."""
import logging

import numpy as np
import pytest
import torch
from diffusers.utils import logging as diffusers_logging

from daclip import IRSDEPosteriorScheduler, IRSDEScheduler

SCHEDULE_CASES = [("cosine", 100), ("cosine", 50), ("cosine", 20), ("linear", 100), ("constant", 100)]


def _scheduler_for(schedule, sample_T, cls=IRSDEPosteriorScheduler):
    scheduler = cls(num_train_timesteps=100, max_sigma=50, schedule=schedule, eps=0.005)
    scheduler.set_timesteps(sample_T)
    return scheduler


@pytest.mark.parametrize("schedule, sample_T", SCHEDULE_CASES)
def test_schedule_arrays_match_the_authors(reference, schedule, sample_T):
    key = f"sde.{schedule}.T100.sampleT{sample_T}"
    scheduler = _scheduler_for(schedule, sample_T)
    for name in ("thetas", "sigmas", "thetas_cumsum", "sigma_bars"):
        np.testing.assert_allclose(getattr(scheduler, name).numpy(), reference[f"{key}.{name}"], atol=1e-6, err_msg=name)
    np.testing.assert_allclose(float(scheduler.dt), reference[f"{key}.dt"], atol=1e-6)
    assert scheduler.sample_scale == pytest.approx(float(reference[f"{key}.sample_scale"]))
    assert scheduler.max_sigma == pytest.approx(float(reference[f"{key}.max_sigma"]))
    coef_xt, coef_x0, std = scheduler.posterior_coefficients()
    np.testing.assert_allclose(coef_xt.numpy(), reference[f"{key}.posterior_coef_xt"], atol=1e-6)
    np.testing.assert_allclose(coef_x0.numpy(), reference[f"{key}.posterior_coef_x0"], atol=1e-6)
    np.testing.assert_allclose(std.numpy(), reference[f"{key}.posterior_std"], atol=1e-6)


def _teacher_forced(reference, prefix, noise_prefix, scheduler, use_noise=True):
    """Every recorded step: from the authors' x_t and ε̂ (and z), our x_{t−1} must be theirs."""
    states = torch.from_numpy(reference[f"{prefix}.unet_in_x"])
    outputs = torch.from_numpy(reference[f"{prefix}.unet_out"])
    noise = torch.from_numpy(reference[f"{noise_prefix}.step_noise"])
    mu = torch.from_numpy(reference[f"{noise_prefix}.LQ"])
    np.testing.assert_array_equal(scheduler.timesteps.numpy(), reference[f"{prefix}.unet_in_t"])
    worst = 0.0
    for k, timestep in enumerate(scheduler.timesteps):
        prev = scheduler.step(
            outputs[k], timestep, states[k], mu=mu, variance_noise=noise[k] if use_noise else None
        ).prev_sample
        expected = states[k + 1] if k + 1 < len(states) else torch.from_numpy(reference[f"{prefix}.out"])
        worst = max(worst, float((prev - expected).abs().max()))
    return worst


@pytest.mark.parametrize(
    "prefix, noise_prefix, scheduler, steps",
    [
        ("sample_tiny.posterior", "sample_tiny", IRSDEPosteriorScheduler(), 100),
        ("sample_tiny.sde", "sample_tiny", IRSDEScheduler(), 100),
        ("sample_tiny.ode", "sample_tiny", IRSDEScheduler(solver="ode"), 100),
        ("sample_tiny_sT20.posterior", "sample_tiny_sT20", IRSDEPosteriorScheduler(), 20),
        ("sample_wild_tiny.posterior", "sample_wild_tiny", IRSDEPosteriorScheduler(), 100),
    ],
)
def test_teacher_forced_steps_match_the_authors(reference, prefix, noise_prefix, scheduler, steps):
    scheduler.set_timesteps(steps)
    assert _teacher_forced(reference, prefix, noise_prefix, scheduler) < 1e-5


def test_start_state_is_mu_plus_max_sigma_noise(reference):
    scheduler = IRSDEPosteriorScheduler()
    start = scheduler.prepare_start_sample(
        torch.from_numpy(reference["sample_tiny.LQ"]), noise=torch.from_numpy(reference["sample_tiny.noise_state_noise"])
    )
    np.testing.assert_allclose(start.numpy(), reference["sample_tiny.noisy_state"], atol=1e-6)
    assert scheduler.init_noise_sigma == pytest.approx(50 / 255)


def test_training_objective_matches_the_authors(reference):
    scheduler = IRSDEPosteriorScheduler()
    scheduler.set_timesteps(20)  # training helpers must ignore the sampling schedule
    get = lambda name: torch.from_numpy(reference[f"train_loss_tiny.{name}"])
    timesteps = get("timesteps").reshape(-1)
    states = scheduler.add_noise(get("GT"), get("noise"), timesteps, mu=get("LQ"))
    np.testing.assert_allclose(states.numpy(), reference["train_loss_tiny.states"], atol=1e-6)
    optimum = scheduler.optimum_prev_sample(get("states"), get("GT"), timesteps, mu=get("LQ"))
    np.testing.assert_allclose(optimum.numpy(), reference["train_loss_tiny.xt_1_optimum"], atol=1e-6)
    expected = scheduler.expected_prev_sample(get("states"), get("pred_noise"), timesteps, mu=get("LQ"))
    np.testing.assert_allclose(expected.numpy(), reference["train_loss_tiny.xt_1_expection"], atol=1e-6)
    loss = torch.nn.functional.l1_loss(expected, optimum)
    assert abs(float(loss) - float(reference["train_loss_tiny.loss"])) < 1e-6


def test_training_timesteps_cover_one_to_T():
    scheduler = IRSDEScheduler()
    drawn = scheduler.sample_training_timesteps(5000, generator=torch.Generator().manual_seed(0))
    assert drawn.dtype == torch.long and int(drawn.min()) == 1 and int(drawn.max()) == 100


def test_timesteps_are_the_unet_times_in_sampling_order():
    scheduler = IRSDEPosteriorScheduler()
    scheduler.set_timesteps(4)
    assert scheduler.timesteps.tolist() == [100.0, 75.0, 50.0, 25.0]
    scheduler.set_timesteps(1)
    assert scheduler.timesteps.tolist() == [100.0]
    for bad in (0, 101, 2.5, None):
        with pytest.raises(ValueError, match="num_inference_steps"):
            scheduler.set_timesteps(bad)
    with pytest.raises(ValueError, match="outside this schedule"):
        scheduler.step(torch.zeros(1, 3, 4, 4), 0.0, torch.zeros(1, 3, 4, 4), mu=torch.zeros(1, 3, 4, 4))


@pytest.mark.parametrize("bad", [dict(schedule="quadratic"), dict(eps=0), dict(max_sigma=-1), dict(solver="heun")])
def test_bad_config_is_refused(bad):
    with pytest.raises(ValueError):
        IRSDEScheduler(**bad)


def test_max_sigma_accepts_fractions_and_the_255_scale():
    assert IRSDEScheduler(max_sigma=50).max_sigma == pytest.approx(50 / 255)
    assert IRSDEScheduler(max_sigma=0.2).max_sigma == pytest.approx(0.2)


@pytest.mark.parametrize("cls", [IRSDEScheduler, IRSDEPosteriorScheduler])
def test_save_load_round_trip(tmp_path, cls):
    scheduler = cls(max_sigma=30, schedule="linear", eps=0.01)
    scheduler.save_pretrained(tmp_path)
    loaded = cls.from_pretrained(tmp_path)
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}
    assert public(loaded.config) == public(scheduler.config)
    np.testing.assert_array_equal(loaded.sigma_bars.numpy(), scheduler.sigma_bars.numpy())


def test_from_config_swaps_both_ways_without_warnings(caplog):
    diffusers_logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING):
            sde = IRSDEScheduler(max_sigma=30, solver="ode")
            posterior = IRSDEPosteriorScheduler.from_config(sde.config)
            back = IRSDEScheduler.from_config(posterior.config)
    finally:
        diffusers_logging.disable_propagation()
    assert [record for record in caplog.records if record.levelno >= logging.WARNING] == []
    assert posterior.config.max_sigma == 30 and back.config.max_sigma == 30
    # diffusers keeps the other class's keys hidden in the config, so a round trip restores the solver
    assert back.config.solver == "ode"
    assert IRSDEPosteriorScheduler in IRSDEScheduler().compatibles


def _random_step_inputs(seed=0, batch=2, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    make = lambda: torch.randn(batch, 3, 8, 8, generator=generator).to(dtype)
    return make(), make(), make()


@pytest.mark.parametrize("scheduler", [IRSDEScheduler(), IRSDEScheduler(solver="ode"), IRSDEPosteriorScheduler()])
def test_step_shapes_dtypes_dict_and_tuple(scheduler):
    scheduler.set_timesteps(10)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        eps, x, mu = _random_step_inputs(dtype=dtype)
        out = scheduler.step(eps, scheduler.timesteps[3], x, mu=mu, generator=torch.Generator().manual_seed(1))
        assert out.prev_sample.shape == x.shape and out.prev_sample.dtype == dtype
        assert out.pred_original_sample.dtype == dtype
        prev, original = scheduler.step(
            eps, scheduler.timesteps[3], x, mu=mu, generator=torch.Generator().manual_seed(1), return_dict=False
        )
        assert torch.equal(prev, out.prev_sample) and torch.equal(original, out.pred_original_sample)
    # half precision inputs are computed in float32 internally
    eps, x, mu = _random_step_inputs(dtype=torch.float32)
    full = scheduler.step(eps.half(), scheduler.timesteps[3], x.half(), mu=mu.half(), variance_noise=torch.zeros_like(x))
    reference = scheduler.step(eps.half().float(), scheduler.timesteps[3], x.half().float(), mu=mu.half().float(), variance_noise=torch.zeros_like(x))
    torch.testing.assert_close(full.prev_sample.float(), reference.prev_sample.half().float())


def test_generator_makes_steps_reproducible_and_different_seeds_differ():
    scheduler = IRSDEPosteriorScheduler()
    scheduler.set_timesteps(10)
    eps, x, mu = _random_step_inputs()
    run = lambda seed: scheduler.step(eps, scheduler.timesteps[0], x, mu=mu, generator=torch.Generator().manual_seed(seed)).prev_sample
    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


@pytest.mark.parametrize("scheduler", [IRSDEScheduler(), IRSDEPosteriorScheduler()])
def test_per_sample_timesteps_equal_separate_steps(scheduler):
    scheduler.set_timesteps(10)
    eps, x, mu = _random_step_inputs(batch=2)
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    times = torch.stack([scheduler.timesteps[0], scheduler.timesteps[6]])
    together = scheduler.step(eps, times, x, mu=mu, variance_noise=noise).prev_sample
    for i in range(2):
        alone = scheduler.step(eps[i : i + 1], times[i], x[i : i + 1], mu=mu[i : i + 1], variance_noise=noise[i : i + 1])
        torch.testing.assert_close(together[i : i + 1], alone.prev_sample, atol=1e-6, rtol=0)
    # and the training helpers take per-sample integer times too
    states = scheduler.add_noise(x, noise, torch.tensor([3, 90]), mu=mu)
    assert states.shape == x.shape


def test_ode_is_deterministic_and_sde_is_not():
    eps, x, mu = _random_step_inputs()
    ode = IRSDEScheduler(solver="ode")
    ode.set_timesteps(10)
    a = ode.step(eps, ode.timesteps[2], x, mu=mu, generator=torch.Generator().manual_seed(0)).prev_sample
    b = ode.step(eps, ode.timesteps[2], x, mu=mu, generator=torch.Generator().manual_seed(1)).prev_sample
    assert torch.equal(a, b)
    sde = IRSDEScheduler()
    sde.set_timesteps(10)
    c = sde.step(eps, sde.timesteps[2], x, mu=mu, generator=torch.Generator().manual_seed(0)).prev_sample
    d = sde.step(eps, sde.timesteps[2], x, mu=mu, generator=torch.Generator().manual_seed(1)).prev_sample
    assert not torch.equal(c, d)
