"""Degradation synthesis: contract (shape, dtype, range, seeding), and that each one degrades the way its
name says. Clean images are scikit-image photos, centre-cropped to 256 × 256 (the size the defaults
are tuned for)."""
import time

import numpy as np
import pytest

from daclip import DEGRADATIONS
from daclip.data.degradations import (
    DEGRADATION_FUNCTIONS,
    SYNTHESISABLE,
    convolve2d,
    degrade,
    gaussian_blur,
    line_kernel,
    motion_blur_kernel,
    random_stroke_mask,
)

skimage_data = pytest.importorskip("skimage.data")


def _square(image: np.ndarray, size: int = 256) -> np.ndarray:
    from PIL import Image

    pil = Image.fromarray(image)
    scale = size / min(pil.size)
    pil = pil.resize((max(size, round(pil.width * scale)), max(size, round(pil.height * scale))), Image.BICUBIC)
    left, top = (pil.width - size) // 2, (pil.height - size) // 2
    return np.asarray(pil.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0


@pytest.fixture(scope="module")
def photos():
    return [_square(skimage_data.astronaut()), _square(skimage_data.coffee())]


@pytest.fixture(scope="module")
def photo(photos):
    return photos[0]


def _luminance(image):
    return image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _high_frequency_energy(image):
    """Mean absolute discrete Laplacian of the luminance."""
    y = _luminance(image)
    return np.abs(4 * y[1:-1, 1:-1] - y[:-2, 1:-1] - y[2:, 1:-1] - y[1:-1, :-2] - y[1:-1, 2:]).mean()


def _local_contrast(image):
    y = _luminance(image)
    return np.abs(y - gaussian_blur(y, 4.0)).mean()


def _blockiness(image):
    """Mean |horizontal + vertical step| across 8-px block boundaries over that inside blocks."""
    y = _luminance(image) * 255
    dx, dy = np.abs(np.diff(y, axis=1)), np.abs(np.diff(y, axis=0))
    boundary = np.arange(dx.shape[1]) % 8 == 7
    return (dx[:, boundary].mean() + dy[boundary].mean()) / (dx[:, ~boundary].mean() + dy[~boundary].mean())


# ---------------------------------------------------------------------------------------------------
# Contract
# ---------------------------------------------------------------------------------------------------
def test_all_released_labels_are_synthesisable_in_order():
    assert SYNTHESISABLE == DEGRADATIONS
    assert set(DEGRADATION_FUNCTIONS) == set(DEGRADATIONS)
    for function in DEGRADATION_FUNCTIONS.values():
        assert function.__doc__ and "default" in function.__doc__


@pytest.mark.parametrize("label", SYNTHESISABLE)
def test_contract_shape_dtype_range_seeding(photo, label):
    out = degrade(photo, label, np.random.default_rng(0))
    assert out.shape == photo.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    # Same seed, same output; an int seed is the same as a Generator built from it.
    np.testing.assert_array_equal(out, degrade(photo, label, np.random.default_rng(0)))
    np.testing.assert_array_equal(out, degrade(photo, label, 0))
    assert not np.array_equal(out, degrade(photo, label, 1))
    # The input is not modified.
    assert photo.flags.writeable and np.isfinite(photo).all()


@pytest.mark.parametrize("label", SYNTHESISABLE)
def test_every_degradation_changes_the_image(photos, label):
    for seed in range(3):
        for photo in photos:
            difference = np.abs(degrade(photo, label, seed) - photo).mean()
            assert difference > 0.004, (label, seed, difference)


@pytest.mark.parametrize("label", SYNTHESISABLE)
def test_odd_sizes_and_tiny_images(label):
    rng = np.random.default_rng(5)
    for shape in [(37, 53, 3), (8, 8, 3), (1, 5, 3)]:
        image = rng.random(shape, dtype=np.float32)
        out = degrade(image, label, 0)
        assert out.shape == shape and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1


@pytest.mark.parametrize("label", SYNTHESISABLE)
def test_fast_enough_for_on_the_fly_data(photo, label):
    degrade(photo, label, 0)
    start = time.perf_counter()
    degrade(photo, label, 1)
    # Typically 2–40 ms on one core; the bound is loose for shared CI machines.
    assert time.perf_counter() - start < 0.5


def test_unknown_label_lists_the_known_ones(photo):
    with pytest.raises(ValueError, match="unknown degradation 'foggy'.*motion-blurry.*uncompleted"):
        degrade(photo, "foggy", 0)


def test_bad_inputs_get_clear_errors(photo):
    with pytest.raises(TypeError, match="image / 255"):
        degrade((photo * 255).astype(np.uint8), "noisy", 0)
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        degrade(photo[..., 0], "noisy", 0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        degrade(photo * 255, "noisy", 0)
    with pytest.raises(TypeError, match="Generator"):
        degrade(photo, "noisy", "seed")
    with pytest.raises(ValueError, match="low <= high"):
        degrade(photo, "noisy", 0, sigma_range=(50, 10))


def test_parameters_are_forwarded(photo):
    light = degrade(photo, "noisy", 0, sigma_range=(5, 5))
    heavy = degrade(photo, "noisy", 0, sigma_range=(50, 50))
    assert np.abs(heavy - photo).mean() > 4 * np.abs(light - photo).mean()


# ---------------------------------------------------------------------------------------------------
# Each degradation does what its name says
# ---------------------------------------------------------------------------------------------------
def test_noise_raises_high_frequency_energy_with_the_authors_sigma(photo):
    out = degrade(photo, "noisy", 0, sigma_range=(50, 50))
    assert _high_frequency_energy(out) > 3 * _high_frequency_energy(photo)
    residual = (out - photo)[(photo > 0.3) & (photo < 0.7)]  # away from clipping
    assert residual.std() * 255 == pytest.approx(50, rel=0.05)


def test_motion_blur_removes_high_frequencies(photos):
    for seed, photo in enumerate(photos):
        assert _high_frequency_energy(degrade(photo, "motion-blurry", seed)) < 0.8 * _high_frequency_energy(photo)


def test_jpeg_introduces_8x8_blockiness(photos):
    for seed, photo in enumerate(photos):
        assert _blockiness(degrade(photo, "jpeg-compressed", seed, quality_range=(10, 10))) > 1.3 * _blockiness(photo)
        assert _blockiness(degrade(photo, "jpeg-compressed", seed)) > 1.1 * _blockiness(photo)


def test_low_light_is_much_darker(photos):
    for seed in range(3):
        for photo in photos:
            out = degrade(photo, "low-light", seed)
            assert out.mean() < 0.35 * photo.mean()
            assert out.mean() > 0.005  # dark, not black


def test_haze_lowers_contrast_and_brightens(photos):
    for seed in range(3):
        for photo in photos:
            out = degrade(photo, "hazy", seed)
            # Local contrast: a depth-varying veil adds a smooth gradient, so measure detail, not global std.
            assert _local_contrast(out) < 0.75 * _local_contrast(photo)
            assert out.mean() > photo.mean()
    # On a flat dark scene, the depth proxy is the vertical gradient alone: the top (far) is hazier.
    flat = np.full((128, 128, 3), 0.1, dtype=np.float32)
    for seed in range(3):
        out = degrade(flat, "hazy", seed)
        assert out[:16].mean() > out[-16:].mean() + 0.05


def test_shadow_only_darkens_a_region(photos):
    for seed in range(3):
        for photo in photos:
            out = degrade(photo, "shadowed", seed)
            assert (out <= photo + 1e-6).all()
            darkened = (photo - out).max(axis=2) > 0.02
            assert 0.02 < darkened.mean() < 0.98


def test_rain_streaks_are_bright_and_elongated_along_the_fall_direction(photos):
    for seed in range(3):
        for photo in photos:
            out = degrade(photo, "rainy", seed, angle_range=(0, 0))
            streaks = _luminance(out - photo)
            assert streaks.mean() > 0
            streaks = streaks - streaks.mean()
            vertical = (streaks[4:] * streaks[:-4]).mean()
            horizontal = (streaks[:, 4:] * streaks[:, :-4]).mean()
            assert vertical > 3 * abs(horizontal)


def test_snow_adds_bright_flakes(photos):
    for seed in range(3):
        for photo in photos:
            out = degrade(photo, "snowy", seed)
            assert out.mean() > photo.mean()
            assert (_luminance(out) - _luminance(photo) > 0.3).mean() > 0.005


def test_raindrops_change_local_regions_only(photos):
    for seed in range(3):
        for photo in photos:
            changed = np.abs(degrade(photo, "raindrop", seed) - photo).max(axis=2) > 1e-4
            assert 0.03 < changed.mean() < 0.9


def test_inpainting_whitens_the_stroke_mask(photo):
    for seed in range(3):
        out = degrade(photo, "uncompleted", seed)
        mask = random_stroke_mask(*photo.shape[:2], np.random.default_rng(seed))
        assert 0.02 < mask.mean() < 0.6
        assert (out[mask] == 1.0).all()
        np.testing.assert_array_equal(out[~mask], photo[~mask])
    black = degrade(photo, "uncompleted", 0, fill_value=0.0)
    assert (black[random_stroke_mask(256, 256, 0)] == 0).all()


def test_inpainting_masks_cover_like_the_authors_masks():
    # The authors' 100 masks cover 4–50 % (median 31 %) of a 256 × 256 image.
    coverage = np.array([random_stroke_mask(256, 256, seed).mean() for seed in range(40)])
    assert 0.15 < np.median(coverage) < 0.45
    assert coverage.min() > 0.01 and coverage.max() < 0.7


# ---------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------
def test_blur_helpers_preserve_constants_and_match_an_exact_gaussian():
    rng = np.random.default_rng(0)
    constant = np.full((40, 50, 3), 0.3, dtype=np.float32)
    for sigma in (0.5, 2.0, 6.0):
        np.testing.assert_allclose(gaussian_blur(constant, sigma), 0.3, atol=1e-5)
    # Large σ (by FFT) gives the Gaussian response on an impulse.
    impulse = np.zeros((101, 101), dtype=np.float32)
    impulse[50, 50] = 1
    blurred = gaussian_blur(impulse, 6.0)
    x = np.arange(101) - 50
    exact = np.exp(-(x[:, None] ** 2 + x[None] ** 2) / (2 * 36.0))
    exact /= exact.sum()
    assert np.abs(blurred - exact).sum() < 0.01
    image = rng.random((30, 40, 3), dtype=np.float32)
    delta = np.zeros((5, 5), dtype=np.float32)
    delta[2, 2] = 1
    np.testing.assert_allclose(convolve2d(image, delta), image, atol=1e-5)


def test_kernels_are_normalised_and_centred():
    for seed in range(5):
        kernel = motion_blur_kernel(seed, length=21, curvature=0.3)
        assert kernel.shape[0] % 2 == 1 and kernel.min() >= 0
        assert kernel.sum() == pytest.approx(1, abs=1e-5)
        ys, xs = np.mgrid[: kernel.shape[0], : kernel.shape[1]] - kernel.shape[0] // 2
        assert abs((kernel * ys).sum()) < 0.6 and abs((kernel * xs).sum()) < 0.6
    vertical = line_kernel(15, np.pi / 2)
    assert vertical.sum() == pytest.approx(1, abs=1e-5)
    assert (vertical.sum(axis=1) > 0).sum() > 3 * (vertical.sum(axis=0) > 0).sum() / 2


@pytest.mark.parametrize("label", ["rainy", "snowy", "uncompleted", "raindrop"])
def test_degradations_look_alike_at_other_resolutions(photo, label):
    """Sizes scale with the short side (and densities inversely with its square): a 512-px image gets
    about the same amount of degradation as its 256-px version, not four times as much."""
    from PIL import Image

    large = np.asarray(Image.fromarray((photo * 255).astype(np.uint8)).resize((512, 512), Image.BICUBIC))
    large = large.astype(np.float32) / 255
    small_change = np.mean([np.abs(degrade(photo, label, seed) - photo).mean() for seed in range(3)])
    large_change = np.mean([np.abs(degrade(large, label, seed) - large).mean() for seed in range(3)])
    assert 0.5 < large_change / small_change < 2.0
