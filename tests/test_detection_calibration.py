"""Honest confidence: a calibrated detection scale, and a warning when a text is steered through a random text tower."""
import numpy as np
import pytest
import torch

from daclip import DACLIPModel, DACLIPPipeline
from daclip.demo import DEMO_MODEL_DIR
from daclip.pipelines.daclip import pipeline_daclip


@pytest.fixture(scope="module")
def demo_daclip():
    return DACLIPModel.from_pretrained(DEMO_MODEL_DIR / "daclip").eval()


def test_the_scale_changes_confidence_never_the_answer(demo_daclip):
    embeds = torch.randn(6, demo_daclip.config.embed_dim, generator=torch.Generator().manual_seed(0))
    calibrated = demo_daclip.classify_degradation_embeds(embeds)
    fitted = demo_daclip.config.degradation_logit_scale
    assert fitted is not None and 0 < fitted < 100
    demo_daclip.register_to_config(degradation_logit_scale=None)   # the authors' literal 100
    try:
        authors = demo_daclip.classify_degradation_embeds(embeds)
        logits_100 = demo_daclip.degradation_logits(embeds)
    finally:
        demo_daclip.register_to_config(degradation_logit_scale=fitted)
    logits_fitted = demo_daclip.degradation_logits(embeds)
    assert [p.label for p in calibrated] == [p.label for p in authors]
    torch.testing.assert_close(logits_fitted, logits_100 * (fitted / 100.0), rtol=1e-5, atol=1e-5)
    assert max(p.probability for p in calibrated) < max(p.probability for p in authors)


def test_the_demo_detection_is_no_longer_certain_of_everything(demo_daclip):
    """With the authors' 100 every demo answer read 1.000, the wrong ones too; the fitted scale (31.4,
    scripts/demo/calibrate_detection.py) keeps held-out answers above chance, and below certainty where the
    embedding is less clear (the answers themselves do not change)."""
    from skimage import data
    from daclip.data import degrade

    clean = data.coffee()[40:296, 60:316].astype(np.float32) / 255
    images = [np.round(np.clip(degrade(clean, label, rng=np.random.default_rng(i)), 0, 1) * 255).astype(np.uint8)
              for i, label in enumerate(demo_daclip.config.degradations)]
    calibrated = demo_daclip.detect_degradation(images)
    fitted = demo_daclip.config.degradation_logit_scale
    demo_daclip.register_to_config(degradation_logit_scale=None)
    try:
        authors = demo_daclip.detect_degradation(images)
    finally:
        demo_daclip.register_to_config(degradation_logit_scale=fitted)
    assert [p.label for p in calibrated] == [p.label for p in authors]
    assert all(p.probability > 0.9999 for p in authors), [p.probability for p in authors]
    probabilities = [p.probability for p in calibrated]
    assert all(1 / len(images) < p for p in probabilities), probabilities
    assert sum(p < 0.99 for p in probabilities) >= 2, probabilities


def test_the_scale_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        DACLIPModel(embed_dim=16, vision_cfg={"image_size": 32, "layers": 1, "width": 32, "patch_size": 16,
                                              "head_width": 32},
                    text_cfg={"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 1, "layers": 1},
                    degradation_logit_scale=0.0)


def test_steering_a_random_text_tower_with_unknown_text_is_warned(demo_daclip, monkeypatch):
    assert demo_daclip.unknown_steering_texts(["hazy", "fog", "rainy", "fog"]) == ["fog"]
    pipe = DACLIPPipeline.from_pretrained(DEMO_MODEL_DIR)
    warnings = []
    monkeypatch.setattr(pipeline_daclip.logger, "warning", lambda message, *args: warnings.append(message))
    image_embeds = torch.randn(1, pipe.daclip.config.embed_dim)
    pipe.degradation_condition("snowy", image_embeds, torch.device("cpu"))
    assert warnings == []
    pipe.degradation_condition("heavy fog at dawn", image_embeds, torch.device("cpu"))
    assert len(warnings) == 1 and "'heavy fog at dawn'" in warnings[0] and "random" in warnings[0]


def test_a_pretrained_text_tower_takes_any_text(parity_dir, weights_dir):
    model = DACLIPModel.from_original_checkpoint(weights_dir / "daclip_tiny.pt", config=parity_dir / "daclip_tiny.json")
    assert model.config.text_tower_pretrained and model.config.degradation_logit_scale is None
    assert model.unknown_steering_texts(["a photo taken in thick fog"]) == []
