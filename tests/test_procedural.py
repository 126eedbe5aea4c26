"""Dead-leaves clean images (daclip.data.procedural)."""
import numpy as np
import pytest

from daclip.data import dead_leaves


def test_contract_and_seeding():
    image = dead_leaves(64, 3)
    assert image.shape == (64, 64, 3) and image.dtype == np.float32
    assert 0 <= image.min() and image.max() <= 1
    assert np.array_equal(image, dead_leaves(64, np.random.default_rng(3)))
    assert not np.array_equal(image, dead_leaves(64, 4))


def test_occluding_discs_make_many_flat_regions_of_many_colours():
    image = dead_leaves(128, 0, sky_probability=0.0, blur_range=(0.0, 0.0))
    colours = np.unique(np.round(image.reshape(-1, 3), 3), axis=0)
    assert len(colours) > 50  # many leaves, many colours
    flat = (np.abs(np.diff(image, axis=1)).max(axis=2) < 1e-3).mean()
    assert flat > 0.5  # but most neighbouring pixels lie on the same leaf


def test_a_sky_keeps_a_smooth_gradient_above_the_leaves():
    image = dead_leaves(128, 1, sky_probability=1.0, blur_range=(0.0, 0.0))
    top = image[:16]  # the horizon lies below a quarter of the height at the least (minus a 5 % wave)
    assert np.abs(np.diff(top, axis=1)).max() < 1e-6  # constant along each row
    assert np.abs(np.diff(top, axis=0)).max() < 0.05  # and a gentle vertical ramp


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="size >= 16"):
        dead_leaves(8)
    with pytest.raises(ValueError, match="radius_range"):
        dead_leaves(32, radius_range=(0.5, 0.1))
