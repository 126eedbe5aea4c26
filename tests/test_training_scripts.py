"""The training scripts (scripts/train_unet.py, scripts/train_daclip.py), tested as diffusers tests its examples:
`accelerate launch` for a few steps on tiny models, then the written folders are loaded and used. Plus the pieces
in-process: the objectives reduce their loss on a repeated batch, and PSNR/SSIM match scikit-image."""
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO_ROOT
from daclip import CheckpointError

SCRIPTS = REPO_ROOT / "scripts"
TINY_UNET_CONFIG = {"base_channels": 32, "channel_mult": [1, 1, 1, 2], "context_dim": 32}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a shared CPU idle threads spin: one thread is far faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def scripts_on_path():
    sys.path.insert(0, str(SCRIPTS))
    yield
    sys.path.remove(str(SCRIPTS))


@pytest.fixture(scope="module")
def tiny_daclip_args(weights_dir, parity_dir):
    return ["--daclip_model", str(weights_dir / "daclip_tiny.pt"), "--daclip_config", str(parity_dir / "daclip_tiny.json")]


@pytest.fixture(scope="module")
def tiny_daclip(weights_dir, parity_dir):
    from daclip import DACLIPModel

    return DACLIPModel.from_original_checkpoint(weights_dir / "daclip_tiny.pt", config=parity_dir / "daclip_tiny.json")


def launch(script, args, cwd):
    """`accelerate launch --cpu` one process, no mixed precision; returns the combined output (asserts success)."""
    return start_launch(script, args, cwd)()


def start_launch(script, args, cwd):
    """`launch` in the background: returns a function that waits for the run, asserts its success and returns its
    output. A launch trains on one thread, so two at a time use both cores of a 2-core CI machine."""
    if shutil.which("accelerate"):
        launcher = [shutil.which("accelerate"), "launch"]
    else:
        launcher = [sys.executable, "-m", "accelerate.commands.launch"]
    command = launcher + [
        "--cpu", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--num_cpu_threads_per_process", "1", str(SCRIPTS / script), *map(str, args),
    ]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    log = tempfile.TemporaryFile("w+", encoding="utf-8")  # a file, not a pipe: nobody reads it while it runs
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)

    def finish():
        try:
            process.wait(timeout=600)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        log.seek(0)
        output = log.read()
        assert process.returncode == 0, output[-6000:]
        return output

    return finish


def read_metrics(output_dir):
    with open(Path(output_dir) / "logs" / "metrics.jsonl", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def checkpoint_names(output_dir):
    return sorted(path.name for path in Path(output_dir).iterdir() if path.name.startswith("checkpoint-"))


# ---------------------------------------------------------------------------------------------------
# train_unet.py through accelerate launch
# ---------------------------------------------------------------------------------------------------
# EMA and validation, the settings of the train_unet.py runs below that a resume must keep.
UNET_RUN_OPTIONS = ["--num_validation_images", "2", "--validation_steps", "4", "--validation_inference_steps", "2", "--use_ema"]


def unet_data_args(folder, tiny_daclip_args):
    """The other settings of the train_unet.py runs below: data, a new tiny UNet, checkpoints, learning rate."""
    unet_config = folder / "unet.json"
    unet_config.write_text(json.dumps(TINY_UNET_CONFIG))
    return [
        *tiny_daclip_args, "--unet_config", unet_config, "--clean_images", "skimage", "--degradations", "noisy", "hazy",
        "--resolution", 32, "--train_batch_size", 1, "--checkpointing_steps", 2, "--checkpoints_total_limit", 1,
        "--lr_scheduler", "constant",
    ]


@pytest.fixture(scope="module")
def straight_unet_run(tmp_path_factory, tiny_daclip_args):
    """6 steps in one go with `unet_data_args` and UNET_RUN_OPTIONS: one launch, shared by the resume test (its
    reference) and the test that tries to resume it with other settings. It starts in the background, beside the
    resume test's own runs; calling the fixture's value waits for it and returns (output_dir, its `unet_data_args`)."""
    folder = tmp_path_factory.mktemp("unet-straight")
    data = unet_data_args(folder, tiny_daclip_args)
    output_dir = folder / "run"
    finish = start_launch("train_unet.py", data + UNET_RUN_OPTIONS + ["--max_train_steps", 6, "--output_dir", output_dir], folder)
    outputs = []

    def wait():
        if not outputs:
            outputs.append(finish())
        return output_dir, data

    yield wait
    if not outputs:  # nobody waited (the tests that use it failed first): do not leave the run behind
        with contextlib.suppress(AssertionError):
            finish()


def test_train_unet_checkpoints_resume_and_pipeline(tmp_path, tiny_daclip_args, straight_unet_run):
    from daclip import DACLIPPipeline, IRSDEPosteriorScheduler

    output_dir = tmp_path / "unet-run"
    common = unet_data_args(tmp_path, tiny_daclip_args) + UNET_RUN_OPTIONS

    # Batch size 1 (the authors' `t.squeeze()` breaks it), EMA, validation at the last step.
    launch("train_unet.py", common + ["--max_train_steps", 4, "--output_dir", output_dir], tmp_path)
    assert checkpoint_names(output_dir) == ["checkpoint-4"]  # checkpoint-2 pruned by the limit of 1
    checkpoint = output_dir / "checkpoint-4"
    assert json.loads((checkpoint / "training_state.json").read_text()) == {"global_step": 4}
    assert (checkpoint / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (checkpoint / "ema_state.pt").is_file()
    metrics = read_metrics(output_dir)
    assert [m["step"] for m in metrics if "train_loss" in m] == [1, 2, 3, 4]
    validation = [m for m in metrics if "val_psnr" in m]
    assert len(validation) == 1 and validation[0]["step"] == 4 and np.isfinite(validation[0]["val_ssim"])
    saved = sorted(path.name for path in (output_dir / "validation" / "step-4").iterdir())
    assert len(saved) == 6 and {name.rsplit("_", 1)[1] for name in saved} == {"LQ.png", "restored.png", "GT.png"}

    # Resume from the latest checkpoint and go on to step 6 (same arguments, so the same held-out split).
    resumed = ["--max_train_steps", 6, "--resume_from_checkpoint", "latest", "--output_dir", output_dir]
    output = launch("train_unet.py", common + resumed, tmp_path)
    assert "Resuming from checkpoint" in output and "checkpoint-4 (global step 4)" in output
    assert [m["step"] for m in read_metrics(output_dir) if "train_loss" in m] == [1, 2, 3, 4, 5, 6]
    assert checkpoint_names(output_dir) == ["checkpoint-6"]
    assert json.loads((output_dir / "checkpoint-6" / "training_state.json").read_text()) == {"global_step": 6}

    # Resuming continues the run exactly: the same batches, noise, optimizer and EMA states as 6 steps in one go.
    straight_dir = straight_unet_run()[0]
    resumed_unet = load_file(output_dir / "unet" / "diffusion_pytorch_model.safetensors")
    straight_unet = load_file(straight_dir / "unet" / "diffusion_pytorch_model.safetensors")
    for key, value in straight_unet.items():
        torch.testing.assert_close(resumed_unet[key], value, rtol=0, atol=1e-6, msg=key)
    assert [m["train_loss"] for m in read_metrics(output_dir) if "train_loss" in m] == pytest.approx(
        [m["train_loss"] for m in read_metrics(straight_dir) if "train_loss" in m], abs=1e-6
    )

    # The output folder is a pipeline: the trained (EMA) UNet, the DA-CLIP, the default posterior scheduler.
    pipe = DACLIPPipeline.from_pretrained(output_dir)
    assert isinstance(pipe.scheduler, IRSDEPosteriorScheduler)
    sde_keys = ("num_train_timesteps", "max_sigma", "schedule", "eps")
    assert {k: pipe.scheduler.config[k] for k in sde_keys} == {k: IRSDEPosteriorScheduler().config[k] for k in sde_keys}
    assert pipe.unet.config.base_channels == 32 and pipe.daclip.config.embed_dim == 32
    # ... whose UNet holds the EMA weights (the checkpoint's `unet/` holds the raw ones).
    ema_state = torch.load(output_dir / "checkpoint-6" / "ema_state.pt", weights_only=True)
    assert ema_state["optimization_step"] == 6
    for parameter, shadow in zip(pipe.unet.parameters(), ema_state["shadow_params"], strict=True):
        torch.testing.assert_close(parameter.data, shadow, rtol=0, atol=0)
    raw = load_file(output_dir / "checkpoint-6" / "unet" / "diffusion_pytorch_model.safetensors")
    assert any(not torch.equal(raw[key], value) for key, value in pipe.unet.state_dict().items())
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = pipe(image, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="pt")
    assert out.images.shape == (1, 3, 32, 32) and torch.isfinite(out.images).all()
    assert out.degradations[0] in pipe.daclip.config.degradations

    # Every output of the run is a model the CLI, the library and the training scripts take (issue 20 item 7).
    checkpoint = output_dir / "checkpoint-6"
    assert (checkpoint / "scheduler" / "scheduler_config.json").is_file()  # the sampler settings travel with it
    check_checkpoint_is_usable(checkpoint, tmp_path, tiny_daclip_args)


def check_checkpoint_is_usable(checkpoint, tmp_path, tiny_daclip_args):
    from daclip import DACLIPPipeline, load_pipeline, load_unet
    from daclip.cli import main

    photo = tmp_path / "photo.png"
    PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(photo)
    raw = load_file(checkpoint / "unet" / "diffusion_pytorch_model.safetensors")
    # --model checkpoint-N: its UNet, with the DA-CLIP and scheduler of the run's pipeline
    pipe = load_pipeline(checkpoint)
    assert all(torch.equal(value, raw[key]) for key, value in pipe.unet.state_dict().items())
    assert main(["restore", str(photo), "-o", str(tmp_path / "from-checkpoint"), "--steps", "1", "--model", str(checkpoint)]) == 0
    # --unet checkpoint-N with a DA-CLIP: the same pixels
    parts = ["--unet", str(checkpoint), "--daclip", tiny_daclip_args[1], "--daclip-config", tiny_daclip_args[3]]
    assert main(["restore", str(photo), "-o", str(tmp_path / "from-parts"), "--steps", "1", *parts]) == 0
    np.testing.assert_array_equal(
        np.asarray(PIL.Image.open(tmp_path / "from-checkpoint" / "photo.png")),
        np.asarray(PIL.Image.open(tmp_path / "from-parts" / "photo.png")),
    )
    # a run stopped before its final pipeline: the DA-CLIP its recorded arguments name
    stopped = tmp_path / "stopped-run"
    shutil.copytree(checkpoint, stopped / checkpoint.name)
    shutil.copytree(checkpoint.parent / "logs", stopped / "logs")
    assert main(["restore", str(photo), "-o", str(tmp_path / "from-stopped"), "--steps", "1", "--model", str(stopped / checkpoint.name)]) == 0
    np.testing.assert_array_equal(
        np.asarray(PIL.Image.open(tmp_path / "from-checkpoint" / "photo.png")),
        np.asarray(PIL.Image.open(tmp_path / "from-stopped" / "photo.png")),
    )
    with pytest.raises(CheckpointError, match="no final model yet.*checkpoint-6"):
        DACLIPPipeline.from_pretrained(stopped)
    (stopped / "logs" / "config.json").unlink()
    assert main(["restore", str(photo), "-o", str(tmp_path / "x"), "--model", str(stopped / checkpoint.name)]) == 3
    assert load_unet(stopped / checkpoint.name)[1]["num_train_timesteps"] == 100
    # the training scripts' model options take it too
    sys.path.insert(0, str(SCRIPTS))
    try:
        import train_unet

        args = train_unet.parse_args(["--pretrained_model", str(checkpoint), "--clean_images", "skimage", "--output_dir", str(tmp_path / "next")])
        _, unet, sde_config = train_unet.load_models(args)
        assert all(torch.equal(value, raw[key]) for key, value in unet.state_dict().items())
        assert sde_config["num_train_timesteps"] == 100
        args = train_unet.parse_args([*tiny_daclip_args, "--unet_checkpoint", str(checkpoint), "--clean_images", "skimage"])
        assert all(torch.equal(value, raw[key]) for key, value in train_unet.load_models(args)[1].state_dict().items())
    finally:
        sys.path.remove(str(SCRIPTS))


def test_train_unet_fine_tunes_a_pipeline_with_accumulation(tmp_path, weights_dir, parity_dir):
    """--pretrained_model (a folder converted from the authors' files), gradient accumulation and checkpointing,
    and new IR-SDE settings (a UNet that predicts x0, trained on the x0 objective) carried into the saved pipeline."""
    from daclip import DACLIPPipeline

    source = tmp_path / "source-pipeline"
    DACLIPPipeline.from_original_checkpoints(
        weights_dir / "daclip_tiny.pt", weights_dir / "universal-ir_tiny.pth", daclip_config=parity_dir / "daclip_tiny.json"
    ).save_pretrained(source)
    output_dir = tmp_path / "fine-tuned"
    launch(
        "train_unet.py",
        [
            "--pretrained_model", source, "--clean_images", "skimage", "--degradations", "rainy", "--resolution", 32,
            "--train_batch_size", 2, "--gradient_accumulation_steps", 2, "--gradient_checkpointing",
            "--max_train_steps", 2, "--checkpointing_steps", 100, "--learning_rate", 1e-3,
            "--output_dir", output_dir, "--prediction_type", "sample", "--objective", "x0", "--max_sigma", 10,
        ],
        tmp_path,
    )
    assert checkpoint_names(output_dir) == []
    assert [m["step"] for m in read_metrics(output_dir)] == [1, 2]
    before, after = DACLIPPipeline.from_pretrained(source), DACLIPPipeline.from_pretrained(output_dir)
    unet_before, unet_after = before.unet.state_dict(), after.unet.state_dict()
    assert any(not torch.equal(unet_before[key], value) for key, value in unet_after.items())
    daclip_before = before.daclip.state_dict()
    assert all(torch.equal(daclip_before[key], value) for key, value in after.daclip.state_dict().items())
    assert after.scheduler.config.prediction_type == "sample" and after.scheduler.config.max_sigma == 10
    assert before.scheduler.config.prediction_type == "epsilon"


# ---------------------------------------------------------------------------------------------------
# train_daclip.py through accelerate launch
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def daclip_runs(tmp_path_factory, tiny_daclip_args, tiny_daclip, parity_dir, scripts_on_path):
    """The two train_daclip.py runs below, started at once in the background (one thread each: together they use
    both cores of a 2-core CI machine). {name: a function that waits for the run and returns its output_dir}."""
    import PIL.Image

    from daclip.data import degrade, write_caption_csv

    controller = tmp_path_factory.mktemp("daclip-controller")
    runs = {"controller": (controller / "daclip-run", start_launch(
        "train_daclip.py",
        [
            *tiny_daclip_args, "--clean_images", "skimage", "--degradations", "noisy", "hazy", "low-light",
            "--resolution", 48, "--train_batch_size", 3, "--max_train_steps", 3, "--learning_rate", 1e-3,
            "--lr_warmup_steps", 0, "--checkpointing_steps", 2, "--validation_steps", 3, "--num_validation_images", 3,
            "--output_dir", controller / "daclip-run",
        ],
        controller,
    ))}

    captions = tmp_path_factory.mktemp("daclip-captions")
    clip_weights = captions / "clip.pt"
    torch.save(tiny_daclip.clip.state_dict(), clip_weights)
    rows = []
    for index, crop in enumerate(_photo_crops(48, 4)):
        for label in ("noisy", "hazy"):
            path = captions / f"{index}_{label}.png"
            lq = degrade(crop, label, np.random.default_rng(index))
            PIL.Image.fromarray((lq * 255).round().astype(np.uint8)).save(path)
            rows.append((path.name, f"a photo number {index}", label))
    csv_path = write_caption_csv(captions / "train.csv", rows)
    runs["captions"] = (captions / "new-daclip", start_launch(
        "train_daclip.py",
        [
            "--clip_config", parity_dir / "daclip_tiny.json", "--clip_pretrained", clip_weights, "--train_csv", csv_path,
            "--train_batch_size", 2, "--gradient_accumulation_steps", 2, "--max_train_steps", 2, "--learning_rate", 1e-3,
            "--lr_warmup_steps", 0, "--use_ema", "--ema_decay", 0.5, "--checkpointing_steps", 100,
            "--num_validation_images", 2, "--validation_steps", 2, "--output_dir", captions / "new-daclip",
        ],
        captions,
    ))
    waited = set()

    def wait(name):
        output_dir, finish = runs[name]
        waited.add(name)
        finish()
        return output_dir

    yield wait
    for name in runs.keys() - waited:  # a test that failed before waiting: do not leave its run behind
        with contextlib.suppress(AssertionError):
            runs[name][1]()


def test_train_daclip_trains_the_controller_only(tmp_path, daclip_runs, tiny_daclip_args, tiny_daclip):
    from daclip import DACLIPModel

    output_dir = daclip_runs("controller")
    assert checkpoint_names(output_dir) == ["checkpoint-2"]
    assert (output_dir / "checkpoint-2" / "daclip" / "config.json").is_file()
    metrics = read_metrics(output_dir)
    assert [m["step"] for m in metrics if "train_loss" in m] == [1, 2, 3]
    assert all("contrastive_loss" not in m for m in metrics)  # no captions: degradation loss only
    accuracy = [m["val_accuracy"] for m in metrics if "val_accuracy" in m]
    assert len(accuracy) == 1 and 0.0 <= accuracy[0] <= 1.0

    trained = DACLIPModel.from_pretrained(output_dir)
    before, after = tiny_daclip.state_dict(), trained.state_dict()
    assert before.keys() == after.keys()
    changed = {key for key in before if not torch.equal(before[key], after[key])}
    assert changed and all(key.startswith("visual_control.") or key == "logit_scale" for key in changed)
    assert not any(key.startswith("clip.") for key in changed)
    # Without captions nothing trains the injection layers.
    assert not any(".zero_modules." in key for key in changed)
    assert any(".resblocks." in key for key in changed)
    trained.detect_degradation(np.zeros((32, 32, 3), np.uint8))  # usable as a model

    # The run's folder and its checkpoint are DA-CLIPs for the CLI and the training scripts (issue 20 item 7).
    from daclip.cli import main

    photo = tmp_path / "photo.png"
    PIL.Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(photo)
    for option in ("--daclip", "--model"):
        for source in (output_dir, output_dir / "checkpoint-2"):
            assert main(["detect", str(photo), option, str(source)]) == 0
    assert main(["restore", str(photo), "-o", str(tmp_path / "o"), "--model", str(output_dir)]) == 3
    from daclip import DACLIPUNet2DModel

    unet_dir = tmp_path / "tiny-unet"
    DACLIPUNet2DModel(**TINY_UNET_CONFIG).save_pretrained(unet_dir)
    assert main(["restore", str(photo), "-o", str(tmp_path / "o"), "--steps", "1", "--daclip", str(output_dir), "--unet", str(unet_dir)]) == 0
    sys.path.insert(0, str(SCRIPTS))
    try:
        import training_utils

        assert training_utils.load_daclip(output_dir / "checkpoint-2").config.embed_dim == 32
    finally:
        sys.path.remove(str(SCRIPTS))


def test_train_daclip_new_model_on_captions(daclip_runs, tiny_daclip):
    """--clip_config + --clip_pretrained (a new DA-CLIP), the authors' caption CSV, EMA, accumulation."""
    from daclip import DACLIPModel

    output_dir = daclip_runs("captions")
    metrics = read_metrics(output_dir)
    losses = [m for m in metrics if "train_loss" in m]
    assert [m["step"] for m in losses] == [1, 2]
    assert all(m["train_loss"] == pytest.approx(m["degra_loss"] + m["contrastive_loss"]) for m in losses)
    assert [m["step"] for m in metrics if "val_accuracy" in m] == [2]

    trained = DACLIPModel.from_pretrained(output_dir)
    assert list(trained.config.degradations) == ["hazy", "noisy"]  # the CSV's labels, in the released order
    before, after = tiny_daclip.state_dict(), trained.state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before if key.startswith("clip."))
    # The controller started as a copy of the CLIP image tower with zero injections; captions train both.
    assert any(value.abs().sum() > 0 for key, value in after.items() if ".zero_modules." in key)
    copied = {key: value for key, value in after.items() if key.startswith("clip.visual.transformer.")}
    assert any(
        not torch.equal(value, after[key.replace("clip.visual.transformer.", "visual_control.transformer.transformer.")])
        for key, value in copied.items()
    )


# ---------------------------------------------------------------------------------------------------
# The objectives, in-process: a repeated batch gets a lower loss
# ---------------------------------------------------------------------------------------------------
def _photo_crops(size, count):
    import training_utils

    return [photo[:size, :size].astype(np.float32) / 255 for photo in training_utils.skimage_photos()[:count]]


@pytest.mark.parametrize("objective", ["matching", "x0"])
def test_unet_objective_learns_a_fixed_batch(scripts_on_path, tiny_daclip, objective):
    import train_unet
    from daclip import DACLIPUNet2DModel, IRSDEScheduler
    from daclip.data import degrade

    torch.manual_seed(0)
    gt_images = _photo_crops(16, 2)
    lq_images = [degrade(gt, "noisy", np.random.default_rng(index)) for index, gt in enumerate(gt_images)]
    to_batch = lambda images: torch.stack([torch.from_numpy(image).permute(2, 0, 1) for image in images])
    gt, lq = to_batch(gt_images), to_batch(lq_images)
    content_embeds, degradation_embeds = train_unet.daclip_embeddings(tiny_daclip, tiny_daclip.preprocess(list(lq)))
    scheduler = IRSDEScheduler()
    timesteps = torch.tensor([70, 90])
    noise = torch.randn_like(gt)

    # The script's optimiser settings (the authors': AdamW, betas (0.9, 0.99), no weight decay).
    unet = DACLIPUNet2DModel(**TINY_UNET_CONFIG).train()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.0)
    losses = []
    for _ in range(60):
        loss = train_unet.irsde_loss(
            unet, scheduler, gt, lq, timesteps, noise, degradation_embeds, content_embeds, objective
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]

    # Batch size 1 works (a 1-element time, not the authors' 0-d squeeze).
    single = train_unet.irsde_loss(
        unet, scheduler, gt[:1], lq[:1], timesteps[:1], noise[:1], degradation_embeds[:1], content_embeds[:1], objective
    )
    assert single.ndim == 0 and torch.isfinite(single)


def test_the_true_noise_scores_best_and_makes_the_x0_objective_vanish(scripts_on_path):
    import train_unet
    from daclip import IRSDEScheduler

    class NoiseOracle(torch.nn.Module):  # "predicts" a fixed tensor, whatever it is given
        def __init__(self, answer):
            super().__init__()
            self.answer = answer

        def forward(self, *args, **kwargs):
            return types.SimpleNamespace(sample=self.answer)

    generator = torch.Generator().manual_seed(0)
    gt, lq, noise = (torch.rand(2, 3, 8, 8, generator=generator) for _ in range(3))
    timesteps, scheduler = torch.tensor([3, 97]), IRSDEScheduler()
    for objective in ("matching", "x0"):
        loss = lambda answer, objective=objective: train_unet.irsde_loss(
            NoiseOracle(answer), scheduler, gt, lq, timesteps, noise, None, None, objective
        ).item()
        assert loss(noise) < 0.5 * min(loss(noise + 0.1), loss(noise - 0.1), loss(noise * 0.9))
    # x̂₀ of the true noise is the clean image itself (the authors' Euler-step mean is not the posterior mean, so
    # their objective keeps a small floor).
    assert train_unet.irsde_loss(NoiseOracle(noise), scheduler, gt, lq, timesteps, noise, None, None, "x0") < 1e-8
    # A UNet that predicts x₀ is scored on x₀ itself.
    by_sample = IRSDEScheduler(prediction_type="sample")
    assert train_unet.irsde_loss(NoiseOracle(gt), by_sample, gt, lq, timesteps, noise, None, None, "x0") < 1e-12
    assert train_unet.irsde_loss(NoiseOracle(gt + 0.1), by_sample, gt, lq, timesteps, noise, None, None, "x0") > 1e-3
    with pytest.raises(ValueError, match="objective"):
        train_unet.irsde_loss(NoiseOracle(noise), scheduler, gt, lq, timesteps, noise, None, None, "eps")


def test_daclip_objective_learns_a_fixed_batch(scripts_on_path, tiny_daclip):
    import copy

    import train_daclip
    from daclip.data import degrade

    model = copy.deepcopy(tiny_daclip)
    labels = ["noisy", "hazy", "low-light", "rainy"]
    crops = _photo_crops(64, 4)
    degraded = [degrade(crop, label, np.random.default_rng(index)) for index, (crop, label) in enumerate(zip(crops, labels))]
    pixel_values = model.preprocess([torch.from_numpy(image).permute(2, 0, 1) for image in degraded])
    embed_texts = train_daclip.TextEmbedder(model)
    degradation_text_embeds = embed_texts(labels, cache=True)
    caption_embeds = embed_texts([f"a photo, number {index}" for index in range(4)])

    named = train_daclip.trainable_parameters(model, train_injection=True)
    assert {name.split(".")[0] for name, _ in named} == {"visual_control", "logit_scale"}
    assert not any(parameter.requires_grad for name, parameter in model.named_parameters() if name.startswith("clip."))
    optimizer = torch.optim.AdamW(train_daclip.optimizer_groups(named, 0.0), lr=1e-3)
    clip_before = {key: value.clone() for key, value in model.clip.state_dict().items()}
    losses = []
    for _ in range(20):
        output = train_daclip.daclip_contrastive_loss(
            model, model.logit_scale, pixel_values, degradation_text_embeds, caption_embeds
        )
        optimizer.zero_grad()
        output["loss"].backward()
        optimizer.step()
        losses.append(output["loss"].item())
    assert set(output) == {"degra_loss", "contrastive_loss", "loss"}
    assert losses[-1] < 0.5 * losses[0], losses
    assert all(torch.equal(clip_before[key], value) for key, value in model.clip.state_dict().items())
    assert any(module.weight.abs().sum() > 0 for module in model.visual_control.transformer.zero_modules)


def test_clip_loss_is_open_clips(scripts_on_path):
    import train_daclip

    generator = torch.Generator().manual_seed(0)
    image = torch.nn.functional.normalize(torch.randn(5, 8, generator=generator), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(5, 8, generator=generator), dim=-1)
    scale = torch.tensor(14.0)
    logits_image, logits_text = scale * image @ text.T, scale * text @ image.T
    labels = torch.arange(5)
    expected = (torch.nn.functional.cross_entropy(logits_image, labels) + torch.nn.functional.cross_entropy(logits_text, labels)) / 2
    assert torch.allclose(train_daclip.clip_loss(image, text, scale), expected)


def test_clip_weights_start_the_controller(scripts_on_path, tiny_daclip, tmp_path, parity_dir):
    import train_daclip
    from daclip import DACLIPModel
    from daclip.pipelines.daclip.convert_original import load_open_clip_config

    path = tmp_path / "clip.pt"
    torch.save(tiny_daclip.clip.state_dict(), path)
    model = DACLIPModel(**load_open_clip_config(parity_dir / "daclip_tiny.json"))
    train_daclip.load_clip_weights(model, path)
    assert all(torch.equal(value, tiny_daclip.clip.state_dict()[key]) for key, value in model.clip.state_dict().items())
    controller = model.visual_control.state_dict()
    for name, value in model.clip.visual.state_dict().items():
        target = "transformer." + name if name.startswith("transformer.") else name
        assert torch.equal(controller[target], value), name
    assert all(not module.weight.any() and not module.bias.any() for module in model.visual_control.transformer.zero_modules)
    assert torch.equal(model.logit_scale, model.clip.logit_scale)
    # With zero injections the content embedding is plain CLIP's.
    pixel_values = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        content, _ = model.encode_image(pixel_values)
        plain, _ = model.encode_image(pixel_values, control=False)
    torch.testing.assert_close(content, plain)


# ---------------------------------------------------------------------------------------------------
# Shared plumbing
# ---------------------------------------------------------------------------------------------------
def test_checkpoint_pruning_and_resume_resolution(scripts_on_path, tmp_path):
    import training_utils

    for step in (10, 2, 30):
        (tmp_path / f"checkpoint-{step}").mkdir()
    (tmp_path / "checkpoint-notastep").mkdir()
    (tmp_path / "logs").mkdir()
    assert [p.name for p in training_utils.list_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-10", "checkpoint-30"]
    assert training_utils.resolve_resume_checkpoint("latest", tmp_path).name == "checkpoint-30"
    assert training_utils.resolve_resume_checkpoint("checkpoint-10", tmp_path) == tmp_path / "checkpoint-10"
    assert training_utils.resolve_resume_checkpoint(str(tmp_path / "checkpoint-2"), "elsewhere") == tmp_path / "checkpoint-2"
    assert training_utils.resolve_resume_checkpoint(None, tmp_path) is None
    with pytest.raises(FileNotFoundError):
        training_utils.resolve_resume_checkpoint("checkpoint-99", tmp_path)
    assert training_utils.checkpoint_step(tmp_path / "checkpoint-10") == 10

    # A limit of 2: before the next save, keep only the newest one.
    removed = training_utils.prune_checkpoints(tmp_path, 2)
    assert [p.name for p in removed] == ["checkpoint-2", "checkpoint-10"]
    assert [p.name for p in training_utils.list_checkpoints(tmp_path)] == ["checkpoint-30"]
    assert training_utils.prune_checkpoints(tmp_path, None) == []
    assert training_utils.resolve_resume_checkpoint("latest", tmp_path / "empty") is None


def test_held_out_split_is_stratified_seeded_and_keeps_clean_images_apart(scripts_on_path):
    import training_utils

    # Paired data sorted by label (as PairedDegradationDataset lists it): the split covers every label, not the
    # alphabetically first one, and the same seed gives the same split.
    labels = ["hazy"] * 10 + ["noisy"] * 10 + ["rainy"] * 10
    train, held_out = training_utils.held_out_indices(labels, 6, seed=0)
    assert sorted(labels[i] for i in held_out) == ["hazy", "hazy", "noisy", "noisy", "rainy", "rainy"]
    assert sorted(train + held_out) == list(range(30)) and not set(train) & set(held_out)
    assert training_utils.held_out_indices(labels, 6, seed=0) == (train, held_out)
    assert training_utils.held_out_indices(labels, 6, seed=1)[1] != held_out
    assert len({labels[i] for i in training_utils.held_out_indices(labels, 2, seed=3)[1]}) == 2

    # Synthetic data: item i is clean image i // 3 with label i % 3. 4 held out → 2 whole images out of training.
    labels = ["noisy", "hazy", "rainy"] * 10
    groups = [i // 3 for i in range(30)]
    train, held_out = training_utils.held_out_indices(labels, 4, seed=0, groups=groups)
    held_images = {groups[i] for i in held_out}
    assert len(held_images) == 2 and {labels[i] for i in held_out} == {"noisy", "hazy", "rainy"}
    assert not held_images & {groups[i] for i in train} and len(train) == 24
    assert training_utils.held_out_indices(labels, 0, seed=0) == (list(range(30)), [])
    with pytest.raises(ValueError, match="--num_validation_images"):
        training_utils.held_out_indices(["hazy"] * 3, 3, seed=0)


def test_training_loader_never_makes_a_ragged_batch(scripts_on_path):
    import training_utils

    def sizes(length, batch_size, epochs=3):
        loader = training_utils.training_dataloader(list(range(length)), batch_size, collate_fn=torch.tensor)
        return [[len(batch) for batch in loader] for _ in range(epochs)]

    # 35 on-the-fly items in batches of 32: one full batch per epoch, never a batch of 3
    assert sizes(35, 32) == [[32]] * 3
    assert sizes(40, 8) == [[8] * 5] * 3
    # shuffled: the 3 items an epoch leaves out change from epoch to epoch
    loader = training_utils.training_dataloader(list(range(35)), 32, collate_fn=torch.tensor)
    torch.manual_seed(0)
    seen = [set(batch.tolist()) for _ in range(4) for batch in loader]
    assert len(set.union(*seen)) == 35
    # a dataset smaller than one batch still trains, on one short batch per epoch
    assert sizes(5, 8) == [[5]] * 3


def test_degradation_params_are_json_objects_of_overrides(scripts_on_path, capsys):
    import argparse

    import training_utils

    parser = argparse.ArgumentParser()
    training_utils.add_clean_image_arguments(parser, resolution=32)
    args = parser.parse_args(["--clean_images", "skimage", "--degradation_params", '{"noisy": {"sigma_range": [5, 50]}}'])
    assert args.degradation_params == {"noisy": {"sigma_range": [5, 50]}}
    for bad, expected in (("{noisy: 5}", "not valid JSON"), ('{"noisy": 5}', "a JSON object of objects")):
        with pytest.raises(SystemExit):
            parser.parse_args(["--clean_images", "skimage", "--degradation_params", bad])
        assert expected in capsys.readouterr().err


def test_clean_pairs_and_overrides_need_clean_images(scripts_on_path, tmp_path, capsys):
    import train_unet

    base = ["--pretrained_model", str(tmp_path), "--train_data_dir", str(tmp_path), "--output_dir", str(tmp_path / "o")]
    for extra in (["--clean_pairs"], ["--degradation_params", '{"noisy": {}}']):
        with pytest.raises(SystemExit):
            train_unet.parse_args(base + extra)
        assert "go with clean images" in capsys.readouterr().err


def test_skimage_photos_can_be_chosen_to_hold_some_out(scripts_on_path):
    import argparse

    import training_utils

    parser = argparse.ArgumentParser()
    training_utils.add_clean_image_arguments(parser, resolution=32)
    args = parser.parse_args(["--clean_images", "skimage", "--skimage_photos", "camera", "astronaut"])
    photos = training_utils.clean_image_source(args)
    assert [photo.shape for photo in photos] == [(512, 512, 3), (512, 512, 3)]
    assert np.array_equal(photos[0][..., 0], photos[0][..., 2])  # camera is greyscale, repeated into RGB
    everything = training_utils.clean_image_source(parser.parse_args(["--clean_images", "skimage"]))
    assert len(everything) == len(training_utils.SKIMAGE_PHOTOS)
    with pytest.raises(SystemExit):  # not one of the bundled photos
        parser.parse_args(["--clean_images", "skimage", "--skimage_photos", "coffee-cup"])


# ---------------------------------------------------------------------------------------------------
# Runs: one per --output_dir, resumed with its own settings; the recipe; mistakes as usage errors; --help
# ---------------------------------------------------------------------------------------------------
@pytest.fixture
def accelerate_state():
    """The scripts log through accelerate's logger, which needs accelerate's state: in-process calls create it as
    `Accelerator()` would, on the CPU."""
    from accelerate import PartialState

    return PartialState(cpu=True)


def _exit_message(capsys, call):
    """Run `call`, expect argparse-style exit code 2, return stderr."""
    with pytest.raises(SystemExit) as exit_info:
        call()
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def _fake_run(folder):
    for name in ("checkpoint-2", "checkpoint-4", "unet", "validation/step-2"):
        (folder / name).mkdir(parents=True)
    (folder / "logs").mkdir()
    (folder / "logs" / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "train_loss": 1.0}) + "\n" for s in range(1, 7)))
    (folder / "logs" / "config.json").write_text("{}")
    (folder / "model_index.json").write_text("{}")
    (folder / "my_notes.txt").write_text("not the run's")


def test_a_used_output_dir_is_refused_unless_resumed_or_overwritten(scripts_on_path, tmp_path, capsys, tiny_daclip_args):
    import train_unet
    import training_utils

    _fake_run(tmp_path / "run")
    base = [*tiny_daclip_args, "--unet_config", "u.json", "--clean_images", "skimage", "--output_dir", tmp_path / "run"]
    base = list(map(str, base))
    message = _exit_message(capsys, lambda: train_unet.parse_args(base))
    assert "already holds a training run" in message and "--resume_from_checkpoint latest" in message
    assert "--overwrite_output_dir" in message and "checkpoint-2" in message
    assert train_unet.parse_args(base + ["--resume_from_checkpoint", "latest"]).resume_from_checkpoint == "latest"
    message = _exit_message(capsys, lambda: train_unet.parse_args(base + ["--overwrite_output_dir", "--resume_from_checkpoint", "latest"]))
    assert "pick one" in message
    # A run without checkpoints cannot be resumed, only overwritten.
    _fake_run(tmp_path / "no-checkpoints")
    for name in ("checkpoint-2", "checkpoint-4"):
        (tmp_path / "no-checkpoints" / name).rmdir()
    no_checkpoints = base[:-1] + [str(tmp_path / "no-checkpoints"), "--resume_from_checkpoint", "latest"]
    assert "no checkpoint-<step> folder" in _exit_message(capsys, lambda: train_unet.parse_args(no_checkpoints))

    # --overwrite_output_dir deletes what the run wrote (and nothing else); a fresh folder needs nothing.
    args = train_unet.parse_args(base + ["--overwrite_output_dir"])
    training_utils.clear_run(args)
    assert sorted(path.name for path in (tmp_path / "run").iterdir()) == ["my_notes.txt"]
    assert train_unet.parse_args(base).output_dir == str(tmp_path / "run")


def test_a_resume_drops_the_steps_the_interrupted_run_logged_after_its_checkpoint(scripts_on_path, tmp_path):
    import training_utils

    _fake_run(tmp_path)
    training_utils.forget_logged_steps_after(tmp_path / "logs" / "metrics.jsonl", 4)
    assert [m["step"] for m in read_metrics(tmp_path)] == [1, 2, 3, 4]


def test_train_unet_resume_with_other_settings_is_refused_and_listed(straight_unet_run, scripts_on_path, capsys):
    """A 6-step run with EMA and validation; resuming it without them (or with another objective or seed) would
    corrupt it: refused, listing every difference. A harmless difference is allowed."""
    output_dir, data = straight_unet_run()
    recorded = json.loads((output_dir / "logs" / "config.json").read_text())
    assert recorded["use_ema"] is True and recorded["objective"] == "matching" and recorded["num_validation_images"] == 2

    import train_unet

    resume = [str(value) for value in data + ["--max_train_steps", 8, "--resume_from_checkpoint", "latest", "--output_dir", output_dir]]
    message = _exit_message(capsys, lambda: train_unet.main(resume + ["--objective", "x0", "--learning_rate", "1e-3"]))
    for difference in ("--use_ema: the run used True, now False", "--objective: the run used 'matching', now 'x0'",
                       "--num_validation_images: the run used 2, now 0", "--learning_rate"):
        assert difference in message, message
    assert "would corrupt the run" in message and "validation images would become training data" in message
    message = _exit_message(capsys, lambda: train_unet.main(resume + UNET_RUN_OPTIONS + ["--seed", "1"]))
    assert "--seed: the run used 0, now 1" in message and "--learning_rate" not in message
    assert [m["step"] for m in read_metrics(output_dir) if "train_loss" in m] == [1, 2, 3, 4, 5, 6]  # nothing trained


def test_the_recipe_travels_with_the_model(tmp_path, scripts_on_path, caplog, accelerate_state):
    """The demo model records objective x0, clean-image prediction and EMA; fine-tuning it without those options
    keeps them, and an option that differs is warned about loudly."""
    import logging

    import train_unet

    demo = REPO_ROOT / "assets" / "demo-model"
    recipe = json.loads((demo / "training_recipe.json").read_text())
    assert (recipe["objective"], recipe["prediction_type"], recipe["use_ema"]) == ("x0", "sample", True)
    base = ["--pretrained_model", str(demo), "--clean_images", "skimage", "--output_dir", str(tmp_path / "out")]
    args = train_unet.parse_args(base)
    assert args.objective is None and args.use_ema is None
    _, _, sde_config = train_unet.load_models(args)
    assert (args.objective, args.use_ema, args.ema_decay) == ("x0", True, 0.9999)
    assert sde_config["prediction_type"] == "sample" and sde_config["max_sigma"] == 50

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        args = train_unet.parse_args(base + ["--objective", "matching", "--no-use_ema", "--max_sigma", "10"])
        _, _, sde_config = train_unet.load_models(args)
    assert (args.objective, args.use_ema, sde_config["max_sigma"]) == ("matching", False, 10)
    warnings = "\n".join(record.getMessage() for record in caplog.records if "!!" in record.getMessage())
    assert "--objective matching differs" in warnings and "--objective x0" in warnings
    assert "--use_ema False differs" in warnings and "max_sigma 10" in warnings

    # A model with no recipe (e.g. converted from the authors' files) trains with the authors' settings.
    args = train_unet.parse_args(["--daclip_model", str(demo / "daclip"), "--unet_checkpoint", str(tmp_path / "none"),
                                  "--clean_images", "skimage", "--output_dir", str(tmp_path / "out")])
    import training_utils

    training_utils.reuse_recipe(args, {}, None, {"objective": "matching", "use_ema": False, "ema_decay": 0.9999}, None)
    assert (args.objective, args.use_ema) == ("matching", False)


def _pairs(root, labels=("hazy", "noisy"), count=3, size=40):
    import PIL.Image

    rng = np.random.default_rng(0)
    for label in labels:
        for kind in ("LQ", "GT"):
            (root / label / kind).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            for kind in ("LQ", "GT"):
                pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
                PIL.Image.fromarray(pixels).save(root / label / kind / f"{index:03d}.png")
    return root


def test_data_and_config_mistakes_are_usage_errors_naming_the_fix(
    tmp_path, scripts_on_path, capsys, tiny_daclip_args, accelerate_state
):
    import train_daclip
    import train_unet

    pairs = _pairs(tmp_path / "pairs")
    demo = REPO_ROOT / "assets" / "demo-model"
    unet = ["--pretrained_model", str(demo), "--resolution", "32", "--max_train_steps", "1"]

    # One folder too deep: name the parent.
    message = _exit_message(capsys, lambda: train_unet.main(
        unet + ["--train_data_dir", str(pairs / "hazy"), "--output_dir", str(tmp_path / "a")]))
    assert "give its parent folder" in message and str(pairs) in message and "Traceback" not in message
    # Unpaired images: the flag, not a Python keyword.
    (pairs / "noisy" / "GT" / "001.png").unlink()
    message = _exit_message(capsys, lambda: train_daclip.main(
        ["--daclip_model", str(demo / "daclip"), "--train_data_dir", str(pairs), "--output_dir", str(tmp_path / "b")]))
    assert "--skip_unpaired" in message and "strict" not in message and "001" in message
    # The UNet config: a width that does not fit the DA-CLIP, an unknown key.
    config = tmp_path / "unet.json"
    config.write_text(json.dumps({**TINY_UNET_CONFIG, "context_dim": 48}))
    new_unet = [*map(str, tiny_daclip_args), "--unet_config", str(config), "--clean_images", "skimage",
                "--output_dir", str(tmp_path / "c")]
    message = _exit_message(capsys, lambda: train_unet.load_models(train_unet.parse_args(new_unet)))
    assert "set context_dim to 32 in your UNet config" in message
    config.write_text(json.dumps({**TINY_UNET_CONFIG, "base_channel": 32}))
    message = _exit_message(capsys, lambda: train_unet.load_models(train_unet.parse_args(new_unet)))
    assert "unknown key(s) base_channel" in message and "base_channels" in message


def test_train_daclip_reads_the_paired_layout(tmp_path, scripts_on_path):
    import train_daclip

    pairs = _pairs(tmp_path / "pairs", labels=("rainy", "hazy"), count=4)
    args = train_daclip.parse_args(["--daclip_model", "unused", "--train_data_dir", str(pairs), "--validation_steps", "1",
                                    "--num_validation_images", "2", "--output_dir", str(tmp_path / "out")])
    train_set, validation_set, labels, has_captions = train_daclip.build_datasets(args, 32)
    assert labels == ["hazy", "rainy"] and not has_captions  # the released label order
    assert len(train_set) == 6 and sorted(item["degradation"] for item in validation_set) == ["hazy", "rainy"]
    batch = train_daclip.collate([train_set[0], train_set[1]])
    assert batch["pixel_values"].shape == (2, 3, 32, 32) and batch["caption"] is None


@pytest.mark.parametrize("script", ["train_unet", "train_daclip"])
def test_help_shows_every_option_with_text_and_defaults(script, scripts_on_path, capsys):
    import importlib

    module = importlib.import_module(script)
    with pytest.raises(SystemExit):
        module.parse_args(["--help"])
    text = capsys.readouterr().out
    assert "--learning_rate LEARNING_RATE" in text and "(default: " in text
    assert "(default: 0.9)" in text  # adam_beta1
    # Every option has its text; every option --help names is one the script accepts.
    parser = module.build_parser()
    accepted = {option for action in parser._actions for option in action.option_strings}
    assert all(action.help for action in parser._actions), [a.dest for a in parser._actions if not a.help]
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*", text))
    assert named <= accepted, named - accepted


def test_clean_pairs_take_the_shares_asked_for(tmp_path, scripts_on_path, capsys):
    import train_unet

    folder = tmp_path / "clean"
    folder.mkdir()
    for index in range(3):
        PIL.Image.fromarray(np.full((40, 40, 3), 60 * index, np.uint8)).save(folder / f"{index}.png")
    base = ["--daclip_model", "unused", "--unet_config", "unused", "--clean_images_dir", str(folder), "--resolution",
            "32", "--num_validation_images", "0", "--degradations", "hazy", "noisy", "--output_dir", str(tmp_path / "o")]
    for extra, clean_share in (([], 0), (["--clean_pairs"], 1 / 3), (["--clean_pairs", "2"], 2 / 4)):
        train_set, _, labels = train_unet.build_datasets(train_unet.parse_args(base + extra), 32)
        kinds = [train_set[index]["degradation"] for index in range(len(train_set))]
        assert labels == ["hazy", "noisy"]  # "clean" is a share of the data, not a label the UNet is told about
        assert kinds.count("clean") == pytest.approx(clean_share * len(kinds))
        assert all(bool((item := train_set[index])["lq"].equal(item["gt"])) == (kinds[index] == "clean")
                   for index in range(len(train_set)))
    with pytest.raises(SystemExit):
        train_unet.parse_args(base + ["--clean_pairs", "-1"])
    assert "number of shares" in capsys.readouterr().err
