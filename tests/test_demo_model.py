"""The bundled demo model (assets/demo-model): small, safetensors only, and still detecting and restoring.

The guards use crops of scikit-image's "coffee" and "rocket", photos the demo model never saw in training
(scripts/demo/train_demo_model.sh), degraded with the project's synthesis module. They are guards, not the
measurement (benchmarks/evaluate_demo_model.py, README "Demo model").
"""
import numpy as np
import PIL.Image
import pytest
import torch

from daclip import DACLIPPipeline, demo_model_path
from daclip.cli import main
from daclip.data import degrade
from daclip.demo import DEMO_MODEL_DIR, demo_daclip_path
from daclip.utils.image_metrics import lost_regions, psnr

EXAMPLES = DEMO_MODEL_DIR.parent / "examples"
SIZE_LIMIT_BYTES = 30 * 1024 * 1024  # the budget for everything the demo ships
# The quality guard samples 20 steps with the demo's own sampler: on its crop these labels gain 4.2-12.3 dB (haze
# gains +0.1 dB there, too close to guard, and 9.4 dB on the held-out photos of benchmarks/REAL_USE.md; JPEG loses,
# see README "Demo model").
GUARD_STEPS = 20
GUARDED_LABELS = ("low-light", "noisy", "rainy", "snowy")
MIN_GAIN_DB = 1.0
# An undegraded crop comes back at 29.7 dB; the model before stage 8b shifted its colours (26.3 dB).
MIN_CLEAN_PSNR_DB = 28.0
# The collapse guard restores the eight bundled examples with few steps (a collapse is the UNet's clean-image
# estimate at large t, which the first steps already show; 20 steps would cost minutes on 2 cores).
COLLAPSE_GUARD_STEPS = 5
# Examples whose brightness is meant to change (the benchmark's rule, benchmarks/evaluate_real_use.py): whole-image
# brightness is checked there instead of 32 × 32 blocks.
BRIGHTNESS_MEANT_TO_CHANGE = ("hazy", "low-light")


@pytest.fixture(scope="module")
def demo_pipeline():
    pipe = DACLIPPipeline.from_pretrained(DEMO_MODEL_DIR)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def held_out_crops(size=256):
    from skimage import data

    coffee, rocket = data.coffee(), data.rocket()
    crops = [coffee[40 : 40 + size, 60 : 60 + size], coffee[120 : 120 + size, 300 : 300 + size],
             rocket[150 : 150 + size, 100 : 100 + size]]
    return [crop.astype(np.float32) / 255 for crop in crops]


def test_the_bundled_demo_is_small_and_safetensors_only():
    files = [path for path in DEMO_MODEL_DIR.rglob("*") if path.is_file()]
    assert {DEMO_MODEL_DIR / "model_index.json", DEMO_MODEL_DIR / "daclip" / "config.json",
            DEMO_MODEL_DIR / "unet" / "config.json"} <= set(files)
    assert sum(path.stat().st_size for path in files) <= SIZE_LIMIT_BYTES
    assert all(path.suffix in (".json", ".safetensors", ".py") for path in files)


def test_demo_detects_held_out_degradations(demo_pipeline):
    labels = list(demo_pipeline.daclip.config.degradations)
    assert labels == ["hazy", "low-light", "noisy", "rainy", "snowy", "jpeg-compressed"]
    images, truth = [], []
    for crop_index, clean in enumerate(held_out_crops()):
        for label_index, label in enumerate(labels):
            rng = np.random.default_rng([crop_index, label_index])
            images.append(np.round(np.clip(degrade(clean, label, rng=rng), 0, 1) * 255).astype(np.uint8))
            truth.append(label)
    detected = [result.label for result in demo_pipeline.daclip.detect_degradation(images)]
    pairs = list(zip(truth, detected))
    # README: 90–100% for these three labels, 90% for rain and 72.5% for snow, 90.5% overall on 200 held-out
    # images: the robust labels must stay right, and most of the rest.
    assert all(d == t for t, d in pairs if t in ("hazy", "low-light", "noisy")), pairs
    assert sum(d == t for t, d in pairs) >= 11, pairs


def guard_crop() -> np.ndarray:
    """The quality guards' crop: 128 × 128 of coffee (held out of training), float32 HWC in [0, 1]."""
    from skimage import data

    return data.coffee()[150:278, 250:378].astype(np.float32) / 255


@pytest.mark.parametrize("label", GUARDED_LABELS)
def test_demo_restores_a_held_out_crop(demo_pipeline, label):
    """The quality guard: a degraded crop of a photo the model never saw gets clearly closer to the clean one."""
    clean = guard_crop()
    index = list(demo_pipeline.daclip.config.degradations).index(label)
    degraded = np.clip(degrade(clean, label, rng=np.random.default_rng([0, index])), 0, 1).astype(np.float32)
    restored = demo_pipeline(degraded, num_inference_steps=GUARD_STEPS, generator=torch.Generator().manual_seed(0),
                             output_type="np").images[0]
    target = torch.from_numpy(clean)
    gain = float(psnr(torch.from_numpy(restored), target) - psnr(torch.from_numpy(degraded), target))
    assert gain >= MIN_GAIN_DB, f"{label}: {gain:+.2f} dB"


def test_demo_leaves_a_clean_crop_alone(demo_pipeline):
    """What is not degraded comes back close to untouched (issue 19): no colour shift, no "restoration"."""
    clean = guard_crop()
    restored = demo_pipeline(clean, num_inference_steps=GUARD_STEPS, generator=torch.Generator().manual_seed(0),
                             output_type="np").images[0]
    value = float(psnr(torch.from_numpy(restored), torch.from_numpy(clean)))
    assert value >= MIN_CLEAN_PSNR_DB, f"an undegraded crop came back at {value:.2f} dB"


def test_no_bundled_example_collapses(tmp_path, capsys):
    """README's first command (`daclip restore assets/examples -o restored`, the demo's own sampler) at
    `COLLAPSE_GUARD_STEPS` steps: every example comes back, and none loses a region (a 32 × 32 block darkened below
    a third of the input's brightness, median-filtered: a blue sky turned black, as the first demo model did to
    snowy_real.jpg at any number of steps)."""
    out = tmp_path / "restored"
    assert main(["restore", str(EXAMPLES), "-o", str(out), "--device", "cpu", "--steps", str(COLLAPSE_GUARD_STEPS)]) == 0
    capsys.readouterr()
    examples = sorted(path for path in EXAMPLES.iterdir() if path.suffix in (".png", ".jpg"))
    assert len(examples) == 8
    as_tensor = lambda image: torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)  # noqa: E731
    lost, darkened = {}, {}
    for example in examples:
        with PIL.Image.open(example) as degraded, PIL.Image.open(out / f"{example.stem}.png") as restored:
            before, after = as_tensor(degraded), as_tensor(restored)
        if set(example.stem.split("_")) & set(BRIGHTNESS_MEANT_TO_CHANGE):
            # dehazing rightly darkens what the haze had lifted: only a whole image gone dark counts there
            darkened[example.name] = float(after.mean() / before.mean())
        else:
            lost[example.name] = int(lost_regions(after, before)[0])
    assert len(lost) == 4 and not any(lost.values()), lost
    assert len(darkened) == 4 and min(darkened.values()) > 1 / 3, darkened


def test_cli_detect_without_a_model_uses_the_demo_daclip(capsys):
    assert main(["detect", str(EXAMPLES / "hazy_real.jpg"), "--json", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "using the demo model" in captured.err
    assert '"hazy"' in captured.out


def test_without_the_demo_the_cli_says_what_to_give(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("daclip.demo.DEMO_MODEL_DIR", tmp_path / "none")
    with pytest.raises(FileNotFoundError, match="train_demo_model.sh"):
        demo_daclip_path()
    assert main(["restore", str(EXAMPLES / "hazy_real.jpg"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "--daclip" in err and "no demo model" in err


def test_cli_restore_without_a_model_uses_the_demo(tmp_path, capsys):
    assert demo_model_path() == DEMO_MODEL_DIR and demo_daclip_path() == DEMO_MODEL_DIR / "daclip"
    example = EXAMPLES / "coffee_hazy_synthetic.png"
    out = tmp_path / "restored"
    assert main(["restore", str(example), "-o", str(out), "--steps", "2", "--device", "cpu"]) == 0
    assert f"using the demo model in {DEMO_MODEL_DIR}" in capsys.readouterr().err
    assert main(["restore", str(example), "-o", str(tmp_path / "named"), "--steps", "2", "--device", "cpu",
                 "--model", str(DEMO_MODEL_DIR)]) == 0
    with PIL.Image.open(out / f"{example.stem}.png") as a, PIL.Image.open(tmp_path / "named" / f"{example.stem}.png") as b:
        assert a.size == PIL.Image.open(example).size
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

