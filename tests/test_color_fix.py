"""The optional colour fix: it moves the colour to the input's and keeps the restoration's detail."""
import numpy as np
import pytest
import torch

from daclip.pipelines.daclip.color_fix import COLOR_FIX_METHODS, apply_color_fix, wavelet_low_pass


def _smooth_image(height=64, width=80, seed=0):
    """A smooth colour field (sky-like gradients): all of it lives in the wavelet's low band."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 3, 3, generator=generator) * 0.6 + 0.2
    return torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=True)


def _texture(shape, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=generator) - 0.5) * 0.1


def test_none_returns_the_restoration_unchanged():
    restored, reference = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    assert apply_color_fix(restored, reference, "none") is restored


def test_low_pass_keeps_a_flat_image_and_any_size():
    for height, width in ((1, 1), (5, 7), (40, 33)):
        flat = torch.full((1, 3, height, width), 0.37)
        assert torch.allclose(wavelet_low_pass(flat), flat, atol=1e-6)


@pytest.mark.parametrize("method", ["wavelet", "adain"])
def test_a_colour_cast_is_removed_and_the_detail_kept(method):
    reference = _smooth_image()
    detail = _texture(reference.shape)
    cast = torch.tensor([0.12, -0.05, 0.08]).view(1, 3, 1, 1)   # the restoration tinted the picture
    restored = (reference + detail + cast).clamp(0, 1)
    fixed = apply_color_fix(restored, reference, method)
    cast_before = (restored - reference).mean(dim=(0, 2, 3)).abs().max().item()
    cast_after = (fixed - reference).mean(dim=(0, 2, 3)).abs().max().item()
    assert cast_before > 0.1 and cast_after < 0.01, (cast_before, cast_after)
    # The texture the restoration produced is still there (the fix must not blur the result).
    kept = torch.nn.functional.cosine_similarity((fixed - reference).flatten(), detail.flatten(), dim=0)
    assert kept > 0.8, kept
    assert fixed.min() >= 0 and fixed.max() <= 1


def test_adain_matches_the_reference_statistics():
    reference, restored = _smooth_image(seed=3), torch.rand(1, 3, 64, 80) * 0.3
    fixed = apply_color_fix(restored, reference, "adain")
    assert torch.allclose(fixed.mean(dim=(2, 3)), reference.mean(dim=(2, 3)), atol=2e-3)
    assert torch.allclose(fixed.std(dim=(2, 3)), reference.std(dim=(2, 3)), atol=2e-3)


def test_bad_arguments_say_what_was_expected():
    with pytest.raises(ValueError, match="one of"):
        apply_color_fix(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), "histogram")
    with pytest.raises(ValueError, match="one shape"):
        apply_color_fix(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9), "wavelet")
    assert COLOR_FIX_METHODS[0] == "none"


# -----------------------------------------------------------------------------------------------------------
# Wired into the pipeline, the CLI and the Restore node: the same function on the same restoration
# -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["wavelet", "adain"])
def test_the_pipeline_applies_the_fix_to_its_own_result(tiny_pipeline, reference, method):
    image = torch.from_numpy(reference["preproc.lq_37x53.uint8_hwc_rgb"]).permute(2, 0, 1)[None].float() / 255

    def run(color_fix):
        return tiny_pipeline(image, num_inference_steps=2, generator=torch.Generator().manual_seed(3), output_type="pt",
                         color_fix=color_fix).images

    plain, fixed = run("none"), run(method)
    torch.testing.assert_close(fixed, apply_color_fix(plain, image, method), rtol=0, atol=1e-6)
    assert not torch.allclose(fixed, plain.clamp(0, 1))
    with pytest.raises(ValueError, match="color_fix must be one of"):
        run("histogram")


def test_the_cli_and_the_node_take_the_option(tmp_path, reference, tiny_model_args, parity_dir, weights_dir):
    import PIL.Image

    from daclip.cli import main

    photo = tmp_path / "photo.png"
    PIL.Image.fromarray(reference["preproc.lq_37x53.uint8_hwc_rgb"]).save(photo)
    outputs = {}
    for method in ("none", "wavelet"):
        out = tmp_path / method
        assert main(["restore", str(photo), "-o", str(out), "--steps", "2", "--color-fix", method, *tiny_model_args]) == 0
        outputs[method] = np.asarray(PIL.Image.open(out / "photo.png"))
    assert np.abs(outputs["none"].astype(int) - outputs["wavelet"].astype(int)).max() > 0
    with pytest.raises(SystemExit) as usage:
        main(["restore", str(photo), "-o", str(tmp_path / "x"), "--color-fix", "histogram", *tiny_model_args])
    assert usage.value.code == 2

    from daclip.daclip_nodes import nodes

    assert nodes.DACLIPRestore.INPUT_TYPES()["optional"]["color_fix"][0] == list(COLOR_FIX_METHODS)


