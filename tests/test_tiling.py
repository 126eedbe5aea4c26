"""Tiled noise prediction: coverage, exactness for local models, no seams, and the pipeline option."""
import numpy as np
import pytest
import torch

from daclip.pipelines.daclip.tiling import blend_ramp, tile_starts, tiled_noise_prediction


@pytest.mark.parametrize("length, tile, overlap", [(100, 32, 8), (64, 64, 16), (65, 64, 16), (257, 128, 32), (20, 64, 8)])
def test_tiles_cover_everything_with_the_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    covered = np.zeros(length, bool)
    for start in starts:
        covered[start : start + tile] = True
    assert covered.all() and starts[0] == 0
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))
    assert max(starts) + min(tile, length) == length


def test_blend_weights_are_positive_and_one_inside():
    weights = blend_ramp(32, 8, True, True)
    assert float(weights.min()) > 0 and torch.all(weights[8:-8] == 1)
    assert torch.all(blend_ramp(32, 8, False, False) == 1)


def test_pointwise_predictor_gives_the_untiled_result():
    generator = torch.Generator().manual_seed(0)
    sample, condition = torch.randn(2, 3, 70, 101, generator=generator), torch.rand(2, 3, 70, 101, generator=generator)
    predict = lambda s, c: 2 * s - c
    tiled = tiled_noise_prediction(predict, sample, condition, tile_size=32, overlap=8)
    torch.testing.assert_close(tiled, predict(sample, condition), atol=1e-6, rtol=1e-6)


def test_blending_leaves_no_seam_between_disagreeing_tiles():
    """Each tile call adds a different constant: blended, neighbouring pixels never jump by the full offset."""
    calls = iter(range(1000))
    predict = lambda s, c: torch.zeros_like(s) + float(next(calls))
    sample = torch.zeros(1, 3, 96, 96)
    tiled = tiled_noise_prediction(predict, sample, sample, tile_size=48, overlap=16)
    value_range = float(tiled.max()) - float(tiled.min())
    assert value_range >= 8, "nine tiles were used (their offsets 0..8 show)"
    largest_jump = max(float(tiled.diff(dim=-1).abs().max()), float(tiled.diff(dim=-2).abs().max()))
    # Hard cuts would jump by a whole offset step (1 across columns, 3 across rows); the blend spreads
    # each step over the overlap.
    assert largest_jump < 0.06 * value_range, largest_jump


def test_pipeline_restores_in_tiles(weights_dir, parity_dir):
    from daclip import DACLIPPipeline

    pipe = DACLIPPipeline.from_original_checkpoints(
        weights_dir / "daclip_tiny.pt", weights_dir / "universal-ir_tiny.pth", daclip_config=parity_dir / "daclip_tiny.json"
    )
    pipe.set_progress_bar_config(disable=True)
    image = np.random.default_rng(0).integers(0, 256, (80, 100, 3), dtype=np.uint8)
    run = lambda **tiling: pipe(image, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np", **tiling).images
    tiled = run(tile_size=48, tile_overlap=16)
    assert tiled.shape == (1, 80, 100, 3) and np.isfinite(tiled).all()
    np.testing.assert_array_equal(run(tile_size=128), run()), "an image smaller than a tile is not tiled"
    with pytest.raises(ValueError, match="tile_size"):
        run(tile_size=8)
    with pytest.raises(ValueError, match="tile_overlap"):
        run(tile_size=64, tile_overlap=40)
