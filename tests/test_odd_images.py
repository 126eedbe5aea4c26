"""Property-based checks over odd images: a valid image of the input's size, or a clear error; never a crash."""
import numpy as np
import PIL.Image
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daclip import DACLIPPipeline
from daclip.pipelines.daclip.image_processing import to_rgb_tensors
from daclip.pipelines.daclip.modeling_daclip import preprocess_images

EXPECTED_ERRORS = (ValueError, TypeError)
PIL_MODES = ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "I;16", "I", "F"]


@st.composite
def pil_images(draw):
    mode = draw(st.sampled_from(PIL_MODES))
    height, width = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**16))
    rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = PIL.Image.fromarray(rgb)
    if mode == "I;16":
        return PIL.Image.fromarray((rgb[:, :, 0].astype(np.uint16) * 257))
    if mode == "I":
        return PIL.Image.fromarray(rgb[:, :, 0].astype(np.int32) * 257)
    if mode == "F":
        return PIL.Image.fromarray(rgb[:, :, 0].astype(np.float32) / 255)
    if mode in ("P", "PA"):
        return image.convert("P").convert(mode)
    return image.convert(mode)


@st.composite
def arrays(draw):
    dtype = draw(st.sampled_from([np.uint8, np.uint16, np.float32, np.float64, np.int32, np.bool_]))
    shape = draw(
        st.one_of(
            st.tuples(st.integers(1, 30), st.integers(1, 30)),
            st.tuples(st.integers(1, 30), st.integers(1, 30), st.sampled_from([1, 2, 3, 4, 5])),
            st.tuples(st.integers(1, 3), st.integers(1, 20), st.integers(1, 20), st.sampled_from([1, 3, 4])),
        )
    )
    special = draw(st.sampled_from([None, np.nan, np.inf, -0.5, 1.5]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if dtype in (np.float32, np.float64):
        array = rng.random(shape).astype(dtype)
        if special is not None:
            array.flat[0] = special
    elif dtype == np.bool_:
        array = rng.random(shape) > 0.5
    else:
        array = rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)
    return array


def _check_converted(tensors, expected_sizes):
    assert [tuple(t.shape[-2:]) for t in tensors] == expected_sizes
    for tensor in tensors:
        assert tensor.shape[0] == 3 and tensor.dtype == torch.float32
        assert torch.isfinite(tensor).all() and float(tensor.min()) >= 0 and float(tensor.max()) <= 1


@settings(max_examples=150, deadline=None)
@given(pil_images())
def test_every_pil_mode_converts_to_rgb_of_the_same_size(image):
    tensors = to_rgb_tensors(image)
    _check_converted(tensors, [(image.height, image.width)])
    assert preprocess_images(image).shape == (1, 3, 224, 224)


@settings(max_examples=200, deadline=None)
@given(arrays())
def test_arrays_convert_or_get_a_clear_error(array):
    try:
        tensors = to_rgb_tensors(array)
    except EXPECTED_ERRORS as error:
        assert str(error)  # a message that says what is wrong
        return
    height, width = (array.shape[1:3] if array.ndim == 4 else array.shape[:2])
    _check_converted(tensors, [(height, width)] * (array.shape[0] if array.ndim == 4 else 1))


@pytest.fixture(scope="module")
def tiny_pipe(weights_dir, parity_dir):
    pipe = DACLIPPipeline.from_original_checkpoints(
        weights_dir / "daclip_tiny.pt", weights_dir / "universal-ir_tiny.pth", daclip_config=parity_dir / "daclip_tiny.json"
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(height=st.integers(1, 70), width=st.integers(1, 70))
def test_pipeline_keeps_any_size_or_says_it_is_too_small(tiny_pipe, height, width):
    image = np.random.default_rng(height * 100 + width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    try:
        out = tiny_pipe(image, num_inference_steps=1, generator=torch.Generator().manual_seed(0), output_type="np")
    except ValueError as error:
        assert min(height, width) < tiny_pipe.unet.min_sample_size and "too small" in str(error)
        return
    assert out.images.shape == (1, height, width, 3) and np.isfinite(out.images).all()


def test_mixed_sizes_in_one_call(tiny_pipe):
    images = [np.zeros((12, 30, 3), np.uint8), np.full((40, 9, 3), 200, np.uint8), PIL.Image.new("L", (17, 23))]
    out = tiny_pipe(images, num_inference_steps=1, generator=torch.Generator().manual_seed(0))
    assert [image.size for image in out.images] == [(30, 12), (9, 40), (17, 23)]
