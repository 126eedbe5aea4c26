"""The one PSNR/SSIM the project reports with (training validation, benchmarks, the demo model's guard)."""
import numpy as np
import pytest
import torch

from daclip.utils import image_metrics


def test_psnr_and_ssim_match_skimage():
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(0)
    target = rng.random((2, 3, 40, 52))
    prediction = np.clip(target + 0.1 * rng.standard_normal(target.shape), 0, 1)
    prediction[1] = rng.random((3, 40, 52))  # one unrelated pair
    psnr = image_metrics.psnr(torch.from_numpy(prediction), torch.from_numpy(target))
    ssim = image_metrics.ssim(torch.from_numpy(prediction).float(), torch.from_numpy(target).float())
    for index in range(2):
        x, y = prediction[index].transpose(1, 2, 0), target[index].transpose(1, 2, 0)
        expected_psnr = metrics.peak_signal_noise_ratio(y, x, data_range=1.0)
        expected_ssim = metrics.structural_similarity(
            x, y, data_range=1.0, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        )
        assert abs(psnr[index].item() - expected_psnr) < 1e-3
        assert abs(ssim[index].item() - expected_ssim) < 1e-3
    identical = image_metrics.ssim(torch.from_numpy(target), torch.from_numpy(target))
    torch.testing.assert_close(identical, torch.ones(2, dtype=torch.float64))


def test_metrics_refuse_mismatched_or_tiny_images():
    with pytest.raises(ValueError, match="differ in shape"):
        image_metrics.psnr(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))
    with pytest.raises(ValueError, match="at least 11"):
        image_metrics.ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


def test_quantize_8bit_rounds_to_png_levels():
    values = torch.tensor([-0.2, 0.0, 0.5, 0.999, 1.3]).view(1, 1, 1, 5)
    expected = torch.tensor([0.0, 0.0, 128 / 255, 1.0, 1.0]).view(1, 1, 1, 5)
    torch.testing.assert_close(image_metrics.quantize_8bit(values), expected)


def test_lost_regions_count_darkened_blocks_not_flakes():
    rng = np.random.default_rng(0)
    degraded = torch.from_numpy(rng.uniform(0.3, 0.9, size=(3, 96, 128)).astype(np.float32))
    assert image_metrics.lost_regions(degraded, degraded).tolist() == [0]
    wrecked = degraded.clone()
    wrecked[:, :32, :64] *= 0.2  # two whole blocks turned almost black
    wrecked[:, 40:70, 100:128] *= 0.5  # darker, but not lost
    assert image_metrics.lost_regions(wrecked, degraded).tolist() == [2]
    flakes = degraded.clone()
    flakes[:, ::4, ::4] = 0.0  # dark specks on one pixel in 16: the median filter ignores them
    assert image_metrics.lost_regions(flakes, degraded).tolist() == [0]
    with pytest.raises(ValueError, match="RGB"):
        image_metrics.lost_regions(degraded[:1], degraded[:1])
