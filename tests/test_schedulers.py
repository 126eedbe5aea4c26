"""IR-SDE schedulers against the authors' arrays, plus diffusers' common scheduler checks."""
import itertools
import logging
import warnings

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
        ours, theirs = getattr(scheduler, name).numpy(), reference[f"{key}.{name}"]
        np.testing.assert_allclose(ours, theirs, atol=1e-6, rtol=0, err_msg=name)
    np.testing.assert_allclose(float(scheduler.dt), reference[f"{key}.dt"], atol=1e-6)
    assert scheduler.sample_scale == pytest.approx(float(reference[f"{key}.sample_scale"]))
    assert scheduler.max_sigma == pytest.approx(float(reference[f"{key}.max_sigma"]))
    coef_xt, coef_x0, std = scheduler.posterior_coefficients()
    # The weights are ratios of 1 − e^{−2θ̄dt} terms, which cancel at small t: one ulp of difference in a float32
    # exp (libm and SIMD exp differ by CPU) moves them by up to ~1e-5. Allow exactly that sensitivity, no more.
    slack_xt, slack_x0 = _one_ulp_exp_sensitivity(scheduler)
    np.testing.assert_array_less(np.abs(coef_xt.numpy() - reference[f"{key}.posterior_coef_xt"]), 1e-6 + slack_xt)
    np.testing.assert_array_less(np.abs(coef_x0.numpy() - reference[f"{key}.posterior_coef_x0"]), 1e-6 + slack_x0)
    np.testing.assert_allclose(std.numpy(), reference[f"{key}.posterior_std"], atol=1e-6)


def _one_ulp_exp_sensitivity(scheduler):
    """Per t, how far the posterior weights move when each of their exponentials e^{−θ_t dt}, e^{−θ̄_t dt},
    e^{−θ̄_{t−1} dt} is one float32 ulp off: the float32 round-off a CPU's exp may add (`[N]` each)."""
    schedule = scheduler.sampling_schedule
    index = torch.arange(1, scheduler.num_inference_steps + 1)
    decays = [torch.exp(-values * schedule.dt) for values in
              (schedule.thetas[index], schedule.thetas_cumsum[index], schedule.thetas_cumsum[index - 1])]
    slack_xt, slack_x0 = torch.zeros(len(index)), torch.zeros(len(index))
    for shifts in itertools.product((-1, 0, 1), repeat=3):
        a, b, c = (torch.nextafter(d, d + shift) if shift else d for d, shift in zip(decays, shifts))
        a0, b0, c0 = decays
        slack_xt = torch.maximum(slack_xt, (a * (1 - c**2) / (1 - b**2) - a0 * (1 - c0**2) / (1 - b0**2)).abs())
        slack_x0 = torch.maximum(slack_x0, (c * (1 - a**2) / (1 - b**2) - c0 * (1 - a0**2) / (1 - b0**2)).abs())
    return slack_xt.nan_to_num(0.0).numpy(), slack_x0.nan_to_num(0.0).numpy()


def _teacher_forced(reference, prefix, noise_prefix, scheduler, use_noise=True):
    """Every recorded step: from the authors' x_t and ε̂ (and z), our x_{t−1} must be theirs.

    Returns the largest error over all steps, relative to max(1, |x|): the states reach about ±200 with the
    random tiny UNet, where one float32 ulp is 1.5e-5.
    """
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
        worst = max(worst, float(((prev - expected).abs() / expected.abs().clamp(min=1.0)).max()))
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
    use_noise = scheduler.config.get("solver") != "ode"  # the probability-flow ODE step has no noise
    assert _teacher_forced(reference, prefix, noise_prefix, scheduler, use_noise=use_noise) < 1e-6


def test_start_state_is_mu_plus_max_sigma_noise(reference):
    scheduler = IRSDEPosteriorScheduler()
    mu, noise = (torch.from_numpy(reference[f"sample_tiny.{name}"]) for name in ("LQ", "noise_state_noise"))
    start = scheduler.prepare_start_sample(mu, noise=noise)
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


@pytest.mark.parametrize(
    "bad",
    [dict(schedule="quadratic"), dict(eps=0), dict(max_sigma=-1), dict(solver="heun"), dict(prediction_type="v")],
)
def test_bad_config_is_refused(bad):
    with pytest.raises(ValueError):
        IRSDEScheduler(**bad)


@pytest.mark.parametrize("make", [IRSDEScheduler, lambda **kw: IRSDEScheduler(solver="ode", **kw), IRSDEPosteriorScheduler])
def test_a_clean_image_prediction_steps_like_the_noise_it_implies(make):
    """prediction_type="sample": the UNet gives x̂₀; every step and training helper equals the "epsilon" one fed the
    noise that x̂₀ implies, at any number of steps."""
    by_noise, by_sample = make(), make(prediction_type="sample")
    noise, x0, mu = _random_step_inputs(batch=2)
    x0 = x0.sigmoid()
    t = torch.tensor([3, 80])
    xt = by_noise.add_noise(x0, noise, t, mu=mu)
    close = lambda a, b: torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-4)
    close(by_sample.predicted_original_sample(xt, x0, t, mu=mu), x0)
    close(by_sample.expected_prev_sample(xt, x0, t, mu=mu), by_noise.expected_prev_sample(xt, noise, t, mu=mu))
    for steps in (100, 10):
        by_noise.set_timesteps(steps)
        by_sample.set_timesteps(steps)
        for timestep in by_noise.timesteps[[0, steps // 2, -1]]:
            z = torch.randn(xt.shape, generator=torch.Generator().manual_seed(1))
            index = int(by_noise.index_for_timestep(timestep))
            # x_t on this N-step schedule, so that `noise` is exactly the noise x̂₀ = x0 implies
            at = lambda values: values[index]
            xt_n = mu + (x0 - mu) * torch.exp(-at(by_noise.thetas_cumsum) * by_noise.dt) + at(by_noise.sigma_bars) * noise
            a = by_noise.step(noise, timestep, xt_n, mu=mu, variance_noise=z)
            b = by_sample.step(x0, timestep, xt_n, mu=mu, variance_noise=z)
            close(b.prev_sample, a.prev_sample)
            close(b.pred_original_sample, a.pred_original_sample)


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
        with caplog.at_level(logging.WARNING), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sde = IRSDEScheduler(max_sigma=30, solver="ode")
            posterior = IRSDEPosteriorScheduler.from_config(sde.config)
            back = IRSDEScheduler.from_config(posterior.config)
            # the pipeline's sampler switch: any IR-SDE config plus an explicit solver
            switched = IRSDEScheduler.from_config(IRSDEPosteriorScheduler().config, solver="ode")
            fresh = IRSDEPosteriorScheduler.from_config(IRSDEScheduler().config)
    finally:
        diffusers_logging.disable_propagation()
    assert [record for record in caplog.records if record.levelno >= logging.WARNING] == []
    assert [str(warning.message) for warning in caught] == []
    assert posterior.config.max_sigma == 30 and back.config.max_sigma == 30
    # diffusers keeps the other class's keys hidden in the config, so a round trip restores the solver
    assert back.config.solver == "ode" and switched.config.solver == "ode"
    assert isinstance(fresh, IRSDEPosteriorScheduler) and fresh.config.eps == 0.005
    from daclip import MRSamplerScheduler

    assert set(IRSDEScheduler().compatibles) == set(IRSDEPosteriorScheduler().compatibles) == {
        IRSDEScheduler,
        IRSDEPosteriorScheduler,
        MRSamplerScheduler,
    }


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
    t, zeros = scheduler.timesteps[3], torch.zeros_like(x)
    half = scheduler.step(eps.half(), t, x.half(), mu=mu.half(), variance_noise=zeros)
    full = scheduler.step(eps.half().float(), t, x.half().float(), mu=mu.half().float(), variance_noise=zeros)
    assert torch.equal(half.prev_sample, full.prev_sample.half())


def test_generator_makes_steps_reproducible_and_different_seeds_differ():
    scheduler = IRSDEPosteriorScheduler()
    scheduler.set_timesteps(10)
    eps, x, mu = _random_step_inputs()
    def run(seed):
        generator = torch.Generator().manual_seed(seed)
        return scheduler.step(eps, scheduler.timesteps[0], x, mu=mu, generator=generator).prev_sample

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
        one = slice(i, i + 1)
        alone = scheduler.step(eps[one], times[i], x[one], mu=mu[one], variance_noise=noise[one])
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


def test_defaults_are_the_authors_test_settings():
    for cls in (IRSDEScheduler, IRSDEPosteriorScheduler):
        scheduler = cls()
        config = scheduler.config
        settings = (config.num_train_timesteps, config.max_sigma, config.schedule, config.eps)
        assert settings == (100, 50.0, "cosine", 0.005)
        assert len(scheduler) == 100 and scheduler.order == 1
        assert scheduler.num_inference_steps == 100  # the training schedule applies before set_timesteps
        assert scheduler.timesteps.tolist() == [float(t) for t in range(100, 0, -1)]
        for name in ("thetas", "sigmas", "thetas_cumsum", "sigma_bars", "dt"):
            assert getattr(scheduler, name).dtype == torch.float32
    assert IRSDEScheduler().config.solver == "sde"


def test_other_num_train_timesteps_and_integer_types():
    scheduler = IRSDEScheduler(num_train_timesteps=30)
    scheduler.set_timesteps(np.int64(7))  # numpy integers are integers too
    assert scheduler.num_inference_steps == 7 and len(scheduler.timesteps) == 7
    assert scheduler.timesteps[0] == 30.0 and float(scheduler.timesteps[-1]) == pytest.approx(30 / 7)
    # every listed time maps back to its schedule index, whatever the rounding of t·T/N in float32
    assert scheduler.index_for_timestep(scheduler.timesteps).tolist() == list(range(7, 0, -1))


@pytest.mark.parametrize(
    "bad",
    [
        dict(num_train_timesteps=0),
        dict(num_train_timesteps=2.5),
        dict(num_train_timesteps=True),
        dict(max_sigma="50"),
        dict(max_sigma=0),
        dict(eps=1),
        dict(eps=-0.1),
    ],
)
def test_more_bad_config_is_refused_with_the_key_in_the_message(bad):
    (key,) = bad
    for cls in (IRSDEScheduler, IRSDEPosteriorScheduler):
        with pytest.raises(ValueError, match=key):
            cls(**bad)


def test_timesteps_off_the_sampling_grid_are_refused():
    scheduler = IRSDEScheduler()
    scheduler.set_timesteps(20)  # times 100, 95, …, 5
    x = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match="outside this schedule"):
        scheduler.step(x, 37.0, x, mu=x)  # an index of the 100-step schedule, not a time of this one
    with pytest.raises(ValueError, match="outside this schedule"):
        scheduler.step(x, 105.0, x, mu=x)
    scheduler.step(x, torch.tensor(95.0), x, mu=x)  # a 0-d tensor is fine


def test_mu_is_a_required_keyword():
    scheduler = IRSDEPosteriorScheduler()
    x = torch.zeros(1, 3, 4, 4)
    with pytest.raises(TypeError):
        scheduler.step(x, 100.0, x, x)
    with pytest.raises(TypeError):
        scheduler.step(x, 100.0, x)
    with pytest.raises(TypeError):
        scheduler.add_noise(x, x, torch.tensor([3]), x)


def test_training_timesteps_are_validated_and_take_either_shape():
    scheduler = IRSDEPosteriorScheduler()
    eps, x, mu = _random_step_inputs(batch=2)
    for bad in (torch.tensor([0, 5]), torch.tensor([5, 101]), torch.tensor([2.5, 3.0])):
        with pytest.raises(ValueError, match="training timesteps"):
            scheduler.add_noise(x, eps, bad, mu=mu)
    flat = scheduler.add_noise(x, eps, torch.tensor([4, 77]), mu=mu)
    boxed = scheduler.add_noise(x, eps, torch.tensor([4, 77]).reshape(2, 1, 1, 1), mu=mu)
    assert torch.equal(flat, boxed)
    scalar = scheduler.add_noise(x, eps, 4, mu=mu)
    assert torch.equal(scalar[:1], flat[:1])


def test_training_helpers_keep_the_input_dtype():
    scheduler = IRSDEScheduler()
    for dtype in (torch.float16, torch.bfloat16):
        eps, x, mu = _random_step_inputs(dtype=dtype)
        t = torch.tensor([10, 60])
        assert scheduler.add_noise(x, eps, t, mu=mu).dtype == dtype
        assert scheduler.optimum_prev_sample(x, x, t, mu=mu).dtype == dtype
        assert scheduler.expected_prev_sample(x, eps, t, mu=mu).dtype == dtype
        assert scheduler.predicted_original_sample(x, eps, t, mu=mu).dtype == dtype


def test_true_noise_recovers_the_clean_image_and_the_optimum():
    """With ε̂ = ε, x̂₀ is x₀ and the posterior mean is the training optimum (schedule on N = T)."""
    scheduler = IRSDEPosteriorScheduler()
    noise, x0, mu = _random_step_inputs(batch=2)
    t = torch.tensor([30, 30])
    xt = scheduler.add_noise(x0, noise, t, mu=mu)
    out = scheduler.step(noise, scheduler.timesteps[100 - 30], xt, mu=mu, variance_noise=torch.zeros_like(xt))
    torch.testing.assert_close(out.pred_original_sample, x0, atol=1e-4, rtol=0)
    torch.testing.assert_close(out.prev_sample, scheduler.optimum_prev_sample(xt, x0, t, mu=mu), atol=1e-4, rtol=0)
    # The training helper is the sampler's x̂₀, at any mix of times.
    mixed = torch.tensor([3, 30])
    xt = scheduler.add_noise(x0, noise, mixed, mu=mu)
    torch.testing.assert_close(scheduler.predicted_original_sample(xt, noise, mixed, mu=mu), x0, atol=1e-4, rtol=0)


def test_the_last_posterior_step_still_draws_noise():
    """The authors draw z at t = 1 too (std ≈ 6e-12), so a generator stays in step with their draws."""
    scheduler = IRSDEPosteriorScheduler()
    eps, x, mu = _random_step_inputs()
    generator = torch.Generator().manual_seed(0)
    scheduler.step(eps, scheduler.timesteps[-1], x, mu=mu, generator=generator)
    assert not torch.equal(generator.get_state(), torch.Generator().manual_seed(0).get_state())
    _, _, std = scheduler.posterior_coefficients()
    assert 0 < float(std[0]) < 1e-10


@pytest.mark.parametrize("scheduler", [IRSDEScheduler(), IRSDEPosteriorScheduler()])
def test_generator_lists_draw_one_image_each(scheduler):
    scheduler.set_timesteps(10)
    eps, x, mu = _random_step_inputs(batch=2)
    t = scheduler.timesteps[4]
    together = scheduler.step(
        eps, t, x, mu=mu, generator=[torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]
    ).prev_sample
    for i, seed in enumerate((1, 2)):
        alone = scheduler.step(
            eps[i : i + 1], t, x[i : i + 1], mu=mu[i : i + 1], generator=torch.Generator().manual_seed(seed)
        ).prev_sample
        torch.testing.assert_close(together[i : i + 1], alone, atol=1e-6, rtol=0)
    generators = [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]
    start = scheduler.prepare_start_sample(mu, generator=generators)
    assert start.shape == mu.shape and start.dtype == torch.float32


def test_sample_training_timesteps_device_and_shape():
    scheduler = IRSDEPosteriorScheduler()
    drawn = scheduler.sample_training_timesteps(3, device="cpu")
    assert drawn.shape == (3,) and drawn.device.type == "cpu"
    again = scheduler.sample_training_timesteps(3, generator=torch.Generator().manual_seed(7))
    assert torch.equal(again, scheduler.sample_training_timesteps(3, generator=torch.Generator().manual_seed(7)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("scheduler", [IRSDEScheduler(), IRSDEScheduler(solver="ode"), IRSDEPosteriorScheduler()])
def test_cuda_matches_cpu(scheduler):
    eps, x, mu = _random_step_inputs(batch=2)
    noise = torch.randn_like(x)
    cpu_scheduler = type(scheduler).from_config(scheduler.config)
    cpu_scheduler.set_timesteps(10)
    scheduler.set_timesteps(10, device="cuda")
    times = torch.stack([scheduler.timesteps[1], scheduler.timesteps[8]])
    on_gpu = scheduler.step(eps.cuda(), times, x.cuda(), mu=mu.cuda(), variance_noise=noise.cuda())
    on_cpu = cpu_scheduler.step(eps, times.cpu(), x, mu=mu, variance_noise=noise)
    assert on_gpu.prev_sample.device.type == "cuda"
    torch.testing.assert_close(on_gpu.prev_sample.cpu(), on_cpu.prev_sample, atol=1e-5, rtol=1e-5)
    generator = torch.Generator("cuda").manual_seed(0)
    half = scheduler.step(eps.cuda().half(), times, x.cuda().half(), mu=mu.cuda().half(), generator=generator)
    assert half.prev_sample.dtype == torch.float16
    t = scheduler.sample_training_timesteps(2, device="cuda")
    states = scheduler.add_noise(x.cuda(), noise.cuda(), t, mu=mu.cuda())
    assert states.device.type == "cuda"


def test_clip_sample_is_off_by_default_and_clamps_the_clean_estimate():
    assert IRSDEPosteriorScheduler().config.clip_sample is False  # the authors' behaviour
    plain, clipped = IRSDEPosteriorScheduler(), IRSDEPosteriorScheduler(clip_sample=True)
    sample, noise, mu = _random_step_inputs(seed=4)  # unit-scale noise: x̂₀ far outside [0, 1] at t = T
    steps = [
        scheduler.step(noise, 100, sample, mu=mu, generator=torch.Generator().manual_seed(0))
        for scheduler in (plain, clipped)
    ]
    assert steps[0].pred_original_sample.min() < -1 and steps[0].pred_original_sample.max() > 2
    torch.testing.assert_close(steps[1].pred_original_sample, steps[0].pred_original_sample.clamp(0, 1))
    assert not torch.equal(steps[1].prev_sample, steps[0].prev_sample)
    # where x̂₀ is already in range the two agree
    inside = IRSDEPosteriorScheduler(clip_sample=True).step(
        torch.zeros_like(noise), 1, mu.clamp(0, 1), mu=mu.clamp(0, 1), generator=torch.Generator().manual_seed(0)
    )
    reference = IRSDEPosteriorScheduler().step(
        torch.zeros_like(noise), 1, mu.clamp(0, 1), mu=mu.clamp(0, 1), generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(inside.prev_sample, reference.prev_sample)
    # the option survives save/load and a swap to the SDE sampler and back
    back = IRSDEPosteriorScheduler.from_config(IRSDEScheduler.from_config(clipped.config).config)
    assert back.config.clip_sample is True


def test_switching_sampler_keeps_what_the_unet_predicts():
    """The CLI's --sampler and the Restore node's sampler rebuild the scheduler from the saved config: a UNet that
    predicts x₀ must still be read as one."""
    from daclip.schedulers import SAMPLERS, scheduler_for_sampler

    saved = IRSDEPosteriorScheduler(prediction_type="sample", max_sigma=10).config
    for sampler in SAMPLERS:
        scheduler = scheduler_for_sampler(sampler, saved)
        assert (scheduler.config.prediction_type, scheduler.config.max_sigma) == ("sample", 10)
