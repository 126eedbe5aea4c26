#!/usr/bin/env python
"""Fit a DA-CLIP's detection temperature on held-out images, so its probabilities mean what they say.

The authors turn cosine similarities into probabilities with a literal factor of 100. For the bundled demo
model (64-d embeddings, a random text tower) that factor makes every answer, right or wrong, come out at
probability 1.000. Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017)
fits the one factor s that minimises the negative log-likelihood of the right labels on held-out data; the
argmax, and so the detection accuracy, does not change.

Data: random crops of scikit-image's "coffee" and "rocket" (photos the demo model never trained on) degraded
with each of the model's labels by `daclip.data.degrade`, drawn with `--seed` (default 1, so that they are
other crops and other degradation draws than `benchmarks/evaluate_demo_model.py`'s seed 0, which reports
accuracy).

    python scripts/demo/calibrate_detection.py --model assets/demo-model/daclip            # print only
    python scripts/demo/calibrate_detection.py --model assets/demo-model/daclip --write    # store in config.json

Prints s, the negative log-likelihood and the expected calibration error (ECE, 10 bins) before and after.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
from evaluate_demo_model import HELD_OUT_PHOTOS, held_out_crops  # noqa: E402  (one definition of the held-out crops)
from quality_vs_steps import quantize_8bit  # noqa: E402


def cosine_similarities(model, crops, labels, seed: int):
    """`[N, len(labels)]` cosines between each degraded crop's degradation embedding and each label's text."""
    from daclip.data import degrade

    cosines, targets = [], []
    text_embeds = F.normalize(model._label_text_embeds(tuple(labels)), dim=-1)
    for label_index, label in enumerate(labels):
        for name, crop_index, clean in crops:
            rng = np.random.default_rng([seed, label_index, HELD_OUT_PHOTOS.index(name), crop_index])
            degraded = quantize_8bit(np.clip(degrade(clean, label, rng=rng), 0, 1).astype(np.float32)).astype(np.float32)
            with torch.no_grad():
                embeds = model(pixel_values=model.preprocess(degraded)).degradation_embeds.float()
            cosines.append(F.normalize(embeds, dim=-1) @ text_embeds.T)
            targets.append(label_index)
    return torch.cat(cosines), torch.tensor(targets)


def expected_calibration_error(probabilities: torch.Tensor, targets: torch.Tensor, bins: int = 10) -> float:
    confidence, predicted = probabilities.max(dim=-1)
    correct = (predicted == targets).float()
    error = 0.0
    for low in np.linspace(0, 1, bins, endpoint=False):
        inside = (confidence > low) & (confidence <= low + 1 / bins)
        if inside.any():
            error += inside.float().mean().item() * abs(correct[inside].mean().item() - confidence[inside].mean().item())
    return error


def fit_scale(cosines: torch.Tensor, targets: torch.Tensor) -> float:
    """argmin_s NLL(softmax(s · cosines), targets), optimised in log s (s > 0)."""
    log_scale = torch.tensor(np.log(10.0), requires_grad=True)
    optimizer = torch.optim.LBFGS([log_scale], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(log_scale.exp() * cosines, targets)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_scale.detach().exp())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(REPO / "assets" / "demo-model" / "daclip"), help="a DACLIPModel folder")
    parser.add_argument("--crops", type=int, default=20, help="crops per held-out photo and label")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--write", action="store_true", help="store the fitted scale in the folder's config.json")
    args = parser.parse_args(argv)

    from daclip import DACLIPModel

    model = DACLIPModel.from_pretrained(args.model).eval()
    labels = list(model.config.degradations)
    crops = held_out_crops(HELD_OUT_PHOTOS, args.size, args.crops, args.seed)
    cosines, targets = cosine_similarities(model, crops, labels, args.seed)
    scale = fit_scale(cosines, targets)
    accuracy = (cosines.argmax(-1) == targets).float().mean().item()
    print(f"{len(targets)} held-out images, accuracy {accuracy:.1%} (any scale)")
    for name, s in (("authors' 100", 100.0), (f"fitted {scale:.2f}", scale)):
        probabilities = (s * cosines).softmax(-1)
        nll = F.cross_entropy(s * cosines, targets).item()
        mean_confidence = probabilities.max(-1).values.mean().item()
        print(f"{name:>14}: NLL {nll:.3f}, ECE {expected_calibration_error(probabilities, targets):.3f}, "
              f"mean confidence {mean_confidence:.3f}")
    if args.write:
        config_path = Path(args.model) / "config.json"
        config = json.loads(config_path.read_text())
        config["degradation_logit_scale"] = round(scale, 3)
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        print(f"wrote degradation_logit_scale = {round(scale, 3)} into {config_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
