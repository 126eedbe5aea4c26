"""MR Sampler (`MRSamplerScheduler`) against what the MR Sampler's own code computes on the tiny fixtures
(../shared/parity/mrs), plus independent checks of its maths and of its place among the three schedulers."""
import json
import logging
import warnings

import numpy as np
import pytest
import torch
from diffusers.utils import logging as diffusers_logging

from daclip import DACLIPPipeline, IRSDEPosteriorScheduler, IRSDEScheduler, MRSamplerScheduler
from daclip.schedulers import SAMPLERS, scheduler_for_sampler


def _configs(parity_dir):
    return json.loads((parity_dir / "mrs" / "reference_mrs_tiny_manifest.json").read_text())["configs"]


CONFIGS = [
    "ode_data_o2_n20",
    "ode_noise_o1_n10",
    "ode_data_o3_n12_karras",
    "ode_noise_o2_n8_trailing",
    "sde_data_o2_n20",
    "sde_noise_o1_n5",
    "ode_data_o2_n6_lambda_thr_last",
    "ode_data_o2_n10_x0model",
    "sde_noise_o2_n8_trailing_lmin3",
    "ode_data_o3_n7_karrast",
]


@pytest.fixture(scope="module")
def mrs_reference(parity_dir):
    with np.load(parity_dir / "mrs" / "reference_mrs_tiny.npz") as data:
        return {key: data[key] for key in data.files}


def _scheduler(options):
    """The MR Sampler's options (its names) → our scheduler, set for its number of steps."""
    scheduler = MRSamplerScheduler(
        solver=options["solver_type"],
        solver_order=options["order"],
        parameterization=options["parameterization"],
        prediction_type={"noise": "epsilon", "data": "sample"}[options["fit_target"]],
        timestep_spacing=options["time_schedule"],
        lambda_min=options["lambda_min"],
        thresholding=options.get("thresholding", False),
        threshold_ratio=options.get("threshold_ratio", 0.995),
        threshold_max=options.get("threshold_max", 1.5),
        denoise_last=options.get("denoise_last", False),
    )
    scheduler.set_timesteps(options["num_sample_steps"])
    return scheduler


def test_the_fixture_covers_every_configuration(parity_dir):
    assert sorted(_configs(parity_dir)) == sorted(CONFIGS)


@pytest.mark.parametrize("prefix", CONFIGS)
def test_time_grid_matches_the_mr_sampler(parity_dir, mrs_reference, prefix):
    scheduler = _scheduler(_configs(parity_dir)[prefix])
    for ours, theirs in (("time_grid", "timesteps"), ("alphas", "alphas"), ("sigma_bars", "sigmas"), ("lambdas", "lambdas")):
        expected = mrs_reference[f"{prefix}.{theirs}"]
        assert getattr(scheduler, ours).shape == expected.shape, ours
        np.testing.assert_allclose(getattr(scheduler, ours).numpy(), expected, atol=1e-5, rtol=0, err_msg=ours)
    # one UNet evaluation per timestep, at the time the MR Sampler gives its UNet
    np.testing.assert_allclose(scheduler.timesteps.numpy(), mrs_reference[f"{prefix}.unet_in_t"], atol=1e-5, rtol=0)
    assert scheduler.num_inference_steps == len(mrs_reference[f"{prefix}.unet_in_t"])


@pytest.mark.parametrize("prefix", CONFIGS)
def test_each_step_alone_matches_the_mr_sampler(parity_dir, mrs_reference, reference, prefix):
    """The recorded UNet outputs fed back, step by step: every state to 1e-6 relative."""
    options = _configs(parity_dir)[prefix]
    scheduler = _scheduler(options)
    get = lambda name: torch.from_numpy(mrs_reference[f"{prefix}.{name}"])
    mu = torch.from_numpy(reference["sample_tiny.LQ"])
    start = scheduler.prepare_start_sample(mu, noise=get("prior_noise"))
    torch.testing.assert_close(start, get("x_start"), atol=1e-6, rtol=0)
    inputs, outputs, states, step_noise = get("unet_in_x"), get("unet_out"), get("states"), get("step_noise")
    assert len(step_noise) == (len(scheduler.timesteps) if options["solver_type"] == "sde" else 0)
    for k, timestep in enumerate(scheduler.timesteps):
        noise = step_noise[k] if options["solver_type"] == "sde" else None
        prev = scheduler.step(outputs[k], timestep, inputs[k], mu=mu, variance_noise=noise).prev_sample
        relative = ((prev - states[k]).abs() / states[k].abs().clamp(min=1)).max()
        assert relative <= 1e-6, f"step {k + 1}: {float(relative):.3g}"
    np.testing.assert_allclose(prev.clamp(0, 1).numpy(), mrs_reference[f"{prefix}.out"], atol=1e-6, rtol=0)


def _run(pipe, mu, steps, start, content, degradation, step_noise=None):
    """The pipeline from a given start state; the last state before clamping, and the output."""
    captured = {}
    rows = iter(step_noise) if step_noise is not None else None
    if rows is not None:
        original_step = pipe.scheduler.step
        pipe.scheduler.step = lambda *args, **kwargs: original_step(*args, **{**kwargs, "variance_noise": next(rows)})

    def keep_last(pipe, step_index, timestep, tensors):
        captured["latents"] = tensors["latents"].clone()
        return tensors

    try:
        output = pipe(
            mu, num_inference_steps=steps, latents=start, content_embeds=content, degradation_embeds=degradation,
            callback_on_step_end=keep_last, output_type="pt",
        )
    finally:
        if rows is not None:
            del pipe.scheduler.step
    return captured["latents"], output.images


@pytest.mark.parametrize("prefix", CONFIGS)
def test_whole_run_with_our_unet_matches_the_mr_sampler(tiny_pipeline, parity_dir, mrs_reference, reference, prefix):
    options = _configs(parity_dir)[prefix]
    pipe = DACLIPPipeline(tiny_pipeline.daclip, tiny_pipeline.unet, _scheduler(options))
    pipe.set_progress_bar_config(disable=True)
    get = lambda name: torch.from_numpy(mrs_reference[f"{prefix}.{name}"])
    mu = torch.from_numpy(reference["sample_tiny.LQ"])
    content = torch.from_numpy(reference["sample_tiny.image_context"])
    degradation = torch.from_numpy(reference["sample_tiny.text_context"])
    noise = get("step_noise") if options["solver_type"] == "sde" else None
    final, images = _run(pipe, mu, options["num_sample_steps"], get("x_start"), content, degradation, noise)
    np.testing.assert_allclose(final.numpy(), mrs_reference[f"{prefix}.states"][-1], atol=1e-3, rtol=0)
    np.testing.assert_allclose(images.numpy(), mrs_reference[f"{prefix}.out"], atol=1e-3, rtol=0)


# -- independent checks --------------------------------------------------------------------------------
def _oracle_noise(scheduler, x0, mu, prediction_type):
    """A perfect model for the path x_t = μ + α_t(x₀ − μ) + σ̄_t ε: its ε̂ (or x̂₀) at any state and time."""
    times, alphas, sigma_bars = scheduler.train_times, scheduler.train_alphas, scheduler.train_sigma_bars
    from daclip.schedulers.scheduling_mrs import interpolate

    def model(x, t):
        t = torch.as_tensor(t, dtype=torch.float32).reshape(1)
        alpha, sigma_bar = interpolate(t, times, alphas), interpolate(t, times, sigma_bars)
        if prediction_type == "sample":
            return x0
        return (x - mu - alpha * (x0 - mu)) / sigma_bar

    return model


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("parameterization", ["data", "noise"])
@pytest.mark.parametrize("spacing, steps", [("linspace", 10), ("leading", 9), ("trailing", 9), ("linspace", 4)])
def test_the_ode_solver_is_exact_for_a_perfect_model(order, parameterization, spacing, steps):
    """With the true x₀ (so constant x̂₀ and ε̂), the exponential integrator has no error at any order:
    every state stays on μ + α_t(x₀ − μ) + σ̄_t ε — derived from the paper's formulas, not the reference.

    On integer times only: between them the MR Sampler interpolates λ linearly apart from α and σ̄, so
    λ ≠ log α − log σ̄ there (by up to ~1e-3) and the identity holds only approximately."""
    generator = torch.Generator().manual_seed(order)
    x0, mu, eps = (torch.rand(1, 3, 8, 8, generator=generator) for _ in range(3))
    # The model predicts what the parameterization integrates (x̂₀ or ε̂), so that no conversion's float32
    # round-off (x̂₀ from ε̂ divides by α = 0.005 at t = T) hides the solver's own exactness.
    prediction_type = "sample" if parameterization == "data" else "epsilon"
    scheduler = MRSamplerScheduler(
        solver_order=order, parameterization=parameterization, timestep_spacing=spacing, prediction_type=prediction_type
    )
    scheduler.set_timesteps(steps)
    assert torch.equal(scheduler.time_grid, scheduler.time_grid.round())
    model = _oracle_noise(scheduler, x0, mu, prediction_type)
    x = mu + scheduler.alphas[0] * (x0 - mu) + scheduler.sigma_bars[0] * eps
    for i, t in enumerate(scheduler.timesteps, start=1):
        x = scheduler.step(model(x, t), t, x, mu=mu).prev_sample
        on_path = mu + scheduler.alphas[i] * (x0 - mu) + scheduler.sigma_bars[i] * eps
        # float32: x̂₀ divides by α (0.005 at t = T), so round-off reaches ~5e-5; a wrong term is off by ≫ 1e-3
        torch.testing.assert_close(x, on_path, atol=2e-4, rtol=0)


@pytest.mark.parametrize("order", [1, 2])
def test_the_sde_solver_keeps_the_marginal_for_a_perfect_model(order):
    """Given x₀, the SDE step's mean and spread are those of the exact posterior of the mean-reverting path: from many
    independent starts on the t₀ marginal, the states at t_M have mean μ + α_M(x₀ − μ) and std σ̄_M."""
    generator = torch.Generator().manual_seed(0)
    x0, mu = torch.full((4096, 1, 1, 1), 0.8), torch.full((4096, 1, 1, 1), 0.3)
    scheduler = MRSamplerScheduler(solver="sde", solver_order=order, lambda_min=-3.0, prediction_type="sample")
    scheduler.set_timesteps(6)
    model = _oracle_noise(scheduler, x0, mu, "sample")
    x = mu + scheduler.alphas[0] * (x0 - mu) + scheduler.sigma_bars[0] * torch.randn(x0.shape, generator=generator)
    for t in scheduler.timesteps:
        x = scheduler.step(model(x, t), t, x, mu=mu, generator=generator).prev_sample
    expected_mean = float(mu[0] + scheduler.alphas[-1] * (x0[0] - mu[0]))
    assert float(x.mean()) == pytest.approx(expected_mean, abs=4 * float(scheduler.sigma_bars[-1]) / 64 + 1e-4)
    assert float(x.std()) == pytest.approx(float(scheduler.sigma_bars[-1]), rel=0.05)


@pytest.mark.parametrize(
    "bad",
    [
        {"parameterization": "noise", "thresholding": True},
        {"parameterization": "noise", "denoise_last": True},
        {"solver": "sde", "solver_order": 3},
        {"solver_order": 4},
        {"solver_order": 0},
        {"solver": "heun"},
        {"parameterization": "velocity"},
        {"timestep_spacing": "cosine"},
        {"threshold_ratio": 0.0},
        {"threshold_max": 0.5},
        {"lambda_min": float("nan")},
        {"prediction_type": "v_prediction"},
        {"max_sigma": -1},
    ],
)
def test_combinations_the_reference_gets_wrong_and_bad_values_are_refused(bad):
    with pytest.raises(ValueError, match=next(iter(bad)) if "parameterization" not in bad or len(bad) == 1 else "parameterization"):
        MRSamplerScheduler(**bad)


def test_bad_step_counts_and_out_of_order_steps_are_refused():
    scheduler = MRSamplerScheduler(timestep_spacing="leading")
    with pytest.raises(ValueError, match="strictly decreasing"):
        scheduler.set_timesteps(100)  # t_max // 101 = 0: every time is 0
    for bad in (0, 101, 2.5, True):
        with pytest.raises(ValueError, match="num_inference_steps"):
            scheduler.set_timesteps(bad)
    scheduler.set_timesteps(5)
    x = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match="in order"):
        scheduler.step(x, scheduler.timesteps[2], x, mu=x)
    with pytest.raises(ValueError, match="not on this time grid"):
        scheduler.step(x, 42.5, x, mu=x)
    with pytest.raises(ValueError, match="one time"):
        scheduler.step(x.expand(2, -1, -1, -1), torch.tensor([100.0, 80.0]), x.expand(2, -1, -1, -1), mu=x)


def test_a_diverging_state_is_an_error_not_a_silent_stop():
    scheduler = MRSamplerScheduler()
    scheduler.set_timesteps(5)
    x = torch.zeros(1, 3, 4, 4)
    with pytest.raises(FloatingPointError, match="finite"):
        scheduler.step(torch.full_like(x, float("nan")), scheduler.timesteps[0], x, mu=x)


def test_swaps_silently_in_every_direction_and_round_trips(tmp_path, caplog):
    diffusers_logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            classes = (IRSDEScheduler, IRSDEPosteriorScheduler, MRSamplerScheduler)
            for source in classes:
                for target in classes:
                    target.from_config(source(max_sigma=30).config)
            mrs = MRSamplerScheduler(solver_order=3, timestep_spacing="karras-n", max_sigma=30)
            back = MRSamplerScheduler.from_config(IRSDEPosteriorScheduler.from_config(mrs.config).config)
    finally:
        diffusers_logging.disable_propagation()
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == []
    assert [str(warning.message) for warning in caught] == []
    # the other classes keep the MR Sampler's keys hidden, so a round trip restores them
    assert (back.config.solver_order, back.config.timestep_spacing, back.config.max_sigma) == (3, "karras-n", 30)
    for scheduler in (IRSDEScheduler(), IRSDEPosteriorScheduler(), MRSamplerScheduler()):
        assert set(scheduler.compatibles) == {IRSDEScheduler, IRSDEPosteriorScheduler, MRSamplerScheduler}
    mrs.save_pretrained(tmp_path)
    loaded = MRSamplerScheduler.from_pretrained(tmp_path)
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}
    assert public(loaded.config) == public(mrs.config)


def test_the_sampler_vocabulary_has_mrs_and_keeps_what_the_unet_predicts():
    assert SAMPLERS == ("posterior", "sde", "ode", "mrs")
    from daclip.pipelines.daclip import pipeline_daclip  # where it was imported from before

    assert pipeline_daclip.SAMPLERS is SAMPLERS and pipeline_daclip.scheduler_for_sampler is scheduler_for_sampler
    saved = IRSDEScheduler(prediction_type="sample", max_sigma=10, solver="sde").config
    mrs = scheduler_for_sampler("mrs", saved)
    assert isinstance(mrs, MRSamplerScheduler)
    # the Euler sampler's solver does not carry over: the MR Sampler starts from its own defaults
    assert (mrs.config.prediction_type, mrs.config.max_sigma, mrs.config.solver, mrs.config.solver_order) == ("sample", 10, "ode", 2)
    # an MR Sampler config keeps its own settings; overrides apply
    kept = scheduler_for_sampler("mrs", MRSamplerScheduler(solver="sde", solver_order=1).config, solver_order=2)
    assert (kept.config.solver, kept.config.solver_order) == ("sde", 2)
    assert isinstance(scheduler_for_sampler("posterior", mrs.config), IRSDEPosteriorScheduler)
    with pytest.raises(ValueError, match="mrs"):
        scheduler_for_sampler("dpm", saved)


def test_saved_pipeline_reloads_with_the_mr_sampler(tiny_pipeline, tmp_path):
    pipe = DACLIPPipeline(tiny_pipeline.daclip, tiny_pipeline.unet, MRSamplerScheduler(solver_order=3))
    pipe.save_pretrained(tmp_path / "pipe")
    loaded = DACLIPPipeline.from_pretrained(tmp_path / "pipe")
    assert isinstance(loaded.scheduler, MRSamplerScheduler) and loaded.scheduler.config.solver_order == 3
    assert (tmp_path / "pipe" / "scheduler" / "scheduling_mrs.py").is_file()


@pytest.mark.parametrize("solver", ["ode", "sde"])
def test_no_state_leaks_between_calls(tiny_pipeline, reference, solver):
    """Two calls in a row, and an interrupted call followed by a new one, equal fresh runs."""
    lq = torch.from_numpy(reference["sample_tiny.LQ"])
    run = lambda pipe, **kwargs: pipe(
        lq, num_inference_steps=6, generator=torch.Generator().manual_seed(3), output_type="pt", **kwargs
    ).images
    fresh = lambda: DACLIPPipeline(tiny_pipeline.daclip, tiny_pipeline.unet, MRSamplerScheduler(solver=solver, solver_order=2))
    expected = run(fresh())
    pipe = fresh()
    pipe.set_progress_bar_config(disable=True)
    torch.testing.assert_close(run(pipe), expected, atol=0, rtol=0)
    torch.testing.assert_close(run(pipe), expected, atol=0, rtol=0)

    def stop_after_three(pipe, step_index, timestep, tensors):
        pipe._interrupt = step_index == 2
        return tensors

    run(pipe, callback_on_step_end=stop_after_three)
    torch.testing.assert_close(run(pipe), expected, atol=0, rtol=0)


def test_generator_lists_equal_single_runs(tiny_pipeline, reference):
    lq = torch.from_numpy(reference["sample_tiny.LQ"])
    pipe = DACLIPPipeline(tiny_pipeline.daclip, tiny_pipeline.unet, MRSamplerScheduler(solver="sde"))
    pipe.set_progress_bar_config(disable=True)
    batch = pipe(
        torch.cat([lq, lq.flip(-1)]), num_inference_steps=5, output_type="pt",
        generator=[torch.Generator().manual_seed(seed) for seed in (1, 2)],
    ).images
    for position, (image, seed) in enumerate(((lq, 1), (lq.flip(-1), 2))):
        single = pipe(image, num_inference_steps=5, generator=torch.Generator().manual_seed(seed), output_type="pt").images
        torch.testing.assert_close(batch[position : position + 1], single, atol=1e-4, rtol=0)  # batched convolutions
