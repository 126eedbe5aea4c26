"""Datasets: the authors' paired layout, on-the-fly synthetic pairs, and DA-CLIP caption CSVs."""
import numpy as np
import PIL.Image
import pytest
import torch
from torch.utils.data import DataLoader, WeightedRandomSampler

from daclip.data.datasets import (
    CLEAN_LABEL,
    CaptionDataset,
    PairedDegradationDataset,
    SyntheticDegradationDataset,
    pad_to_size,
    paired_flip,
    split_title,
    write_caption_csv,
)
from daclip.data.degradations import SYNTHESISABLE
from daclip.pipelines.daclip.modeling_daclip import preprocess_images

skimage_data = pytest.importorskip("skimage.data")


def _photo(name: str, height: int, width: int) -> np.ndarray:
    """A scikit-image photo resized to height × width, uint8."""
    return np.asarray(PIL.Image.fromarray(getattr(skimage_data, name)()).resize((width, height), PIL.Image.BICUBIC))


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(array).save(path)
    return path


@pytest.fixture
def paired_root(tmp_path):
    """root/{hazy,noisy}/{LQ,GT}: LQ = 255 − GT (lossless PNG), so any crop/flip mismatch shows."""
    root = tmp_path / "universal" / "train"
    for label, names in {"noisy": ["a", "b", "c"], "hazy": ["x", "y"]}.items():
        for i, name in enumerate(names):
            gt = _photo(["astronaut", "chelsea", "coffee"][i], 40 + 8 * i, 56)
            _save(root / label / "GT" / f"{name}.png", gt)
            _save(root / label / "LQ" / f"{name}.png", 255 - gt)
    return root


def _assert_paired(item):
    np.testing.assert_allclose(item["lq"].numpy(), 1 - item["gt"].numpy(), atol=1e-6)


# ---------------------------------------------------------------------------------------------------
# PairedDegradationDataset
# ---------------------------------------------------------------------------------------------------
def test_paired_discovers_labels_in_released_order_and_pairs_by_name(paired_root):
    dataset = PairedDegradationDataset(paired_root, crop_size=32, seed=0)
    assert dataset.degradations == ["hazy", "noisy"]  # the released models' order, not alphabetical by chance
    assert len(dataset) == 5
    assert [label for _, _, label in dataset.samples] == ["hazy"] * 2 + ["noisy"] * 3
    assert all(lq.name == gt.name for lq, gt, _ in dataset.samples)
    for index in range(len(dataset)):
        item = dataset[index]
        assert item["lq"].shape == item["gt"].shape == (3, 32, 32)
        assert item["lq"].dtype == item["gt"].dtype == torch.float32
        assert 0 <= item["gt"].min() and item["gt"].max() <= 1
        assert item["degradation"] == dataset.samples[index][2]
        _assert_paired(item)


def test_paired_crops_and_flips_identically(paired_root):
    dataset = PairedDegradationDataset(paired_root, ["noisy"], crop_size=24, rotate=True, seed=0)
    gts = set()
    for epoch in range(12):
        dataset.set_epoch(epoch)
        item = dataset[0]
        _assert_paired(item)
        gts.add(item["gt"].numpy().tobytes())
    assert len(gts) > 6  # new crops / flips each epoch


def test_paired_items_are_reproducible(paired_root):
    first = PairedDegradationDataset(paired_root, crop_size=32, seed=3)
    second = PairedDegradationDataset(paired_root, crop_size=32, seed=3)
    other = PairedDegradationDataset(paired_root, crop_size=32, seed=4)
    for index in range(len(first)):
        torch.testing.assert_close(first[index]["gt"], second[index]["gt"], rtol=0, atol=0)
    assert any(not torch.equal(first[i]["gt"], other[i]["gt"]) for i in range(len(first)))


def test_paired_small_images_are_reflect_padded(paired_root):
    dataset = PairedDegradationDataset(paired_root, ["noisy"], crop_size=64, flip=False, seed=0)
    item = dataset[0]  # a 40 × 56 image
    assert item["gt"].shape == (3, 64, 64)
    _assert_paired(item)
    gt = np.asarray(PIL.Image.open(dataset.samples[0][1]), dtype=np.float32) / 255
    np.testing.assert_allclose(item["gt"].permute(1, 2, 0).numpy(), pad_to_size(gt, 64), atol=1e-6)
    # Reflected, not zero-filled: the padded rows mirror the image.
    padded = item["gt"].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(padded[11], padded[13], atol=1e-6)  # 12 rows of padding on top, mirrored at 12


def test_paired_without_crop_keeps_whole_images(paired_root):
    dataset = PairedDegradationDataset(paired_root, ["noisy"], crop_size=None, flip=False)
    assert dataset[1]["gt"].shape == (3, 48, 56)
    gt = np.asarray(PIL.Image.open(dataset.samples[1][1]), dtype=np.float32) / 255
    np.testing.assert_array_equal(dataset[1]["gt"].permute(1, 2, 0).numpy(), gt)


def test_paired_matches_names_across_extensions_and_subfolders(tmp_path):
    root = tmp_path / "data"
    gt = _photo("coffee", 32, 32)
    _save(root / "rainy" / "GT" / "scene1" / "0001.png", gt)
    _save(root / "rainy" / "LQ" / "scene1" / "0001.jpg", gt)
    dataset = PairedDegradationDataset(root, crop_size=16)
    assert len(dataset) == 1 and dataset[0]["degradation"] == "rainy"


def test_paired_sample_weights_balance_the_labels(paired_root):
    dataset = PairedDegradationDataset(paired_root, crop_size=16)
    weights = dataset.sample_weights()
    assert weights.shape == (5,)
    assert weights[:2].sum().item() == pytest.approx(1) and weights[2:].sum().item() == pytest.approx(1)
    WeightedRandomSampler(weights, len(dataset))


def test_paired_batches_through_a_dataloader(paired_root):
    dataset = PairedDegradationDataset(paired_root, crop_size=32, seed=0)
    batch = next(iter(DataLoader(dataset, batch_size=4)))
    assert batch["lq"].shape == (4, 3, 32, 32) and len(batch["degradation"]) == 4


def test_paired_errors_are_clear(tmp_path, paired_root):
    with pytest.raises(FileNotFoundError, match="dataset root not found"):
        PairedDegradationDataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"root/<degradation>/\{LQ,GT\}"):
        PairedDegradationDataset(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=r"snowy.LQ"):
        PairedDegradationDataset(paired_root, ["noisy", "snowy"])
    # An LQ without its GT.
    _save(paired_root / "noisy" / "LQ" / "extra.png", _photo("coffee", 40, 56))
    with pytest.raises(ValueError, match=r"unpaired images for 'noisy'.*only in .*LQ \['extra'\]"):
        PairedDegradationDataset(paired_root)
    with pytest.warns(UserWarning, match="extra"):
        dataset = PairedDegradationDataset(paired_root, strict=False)
    assert len(dataset) == 5
    # Two files with the same name but different extensions cannot be paired.
    _save(paired_root / "noisy" / "LQ" / "a.jpg", _photo("coffee", 40, 56))
    with pytest.raises(ValueError, match="share the name 'a'"):
        PairedDegradationDataset(paired_root, strict=False)


def test_paired_size_mismatch_is_reported_at_load(tmp_path):
    root = tmp_path / "data"
    _save(root / "hazy" / "GT" / "0.png", _photo("coffee", 32, 32))
    _save(root / "hazy" / "LQ" / "0.png", _photo("coffee", 30, 32))
    with pytest.raises(ValueError, match="differ in size"):
        PairedDegradationDataset(root, crop_size=16)[0]


def test_paired_clip_view_is_the_authors_training_view(paired_root):
    dataset = PairedDegradationDataset(paired_root, ["hazy"], crop_size=48, seed=0, clip_preprocess=True)
    item = dataset[0]
    assert item["lq_clip"].shape == (3, 224, 224)
    lq = item["lq"].permute(1, 2, 0).numpy()
    expected = preprocess_images(PIL.Image.fromarray((lq * 255).astype(np.uint8)))[0]
    torch.testing.assert_close(item["lq_clip"], expected)
    # A callable (e.g. a loaded model's `preprocess`) is used as given.
    fake_preprocess = lambda image: torch.zeros(1, 3, 8, 8)  # noqa: E731
    custom = PairedDegradationDataset(paired_root, ["hazy"], crop_size=48, clip_preprocess=fake_preprocess)
    assert custom[0]["lq_clip"].shape == (3, 8, 8)
    with pytest.raises(TypeError, match="clip_preprocess"):
        PairedDegradationDataset(paired_root, clip_preprocess="yes")


def test_a_models_own_preprocess_plugs_in(paired_root, caption_files):
    from daclip import DACLIPModel

    tiny = DACLIPModel(
        embed_dim=16,
        vision_cfg={"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
        text_cfg={"context_length": 8, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1},
    )
    paired = PairedDegradationDataset(paired_root, ["hazy"], crop_size=48, seed=0, clip_preprocess=tiny.preprocess)
    item = paired[0]
    lq = PIL.Image.fromarray((item["lq"].permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    torch.testing.assert_close(item["lq_clip"], preprocess_images(lq, 32)[0])
    captions = CaptionDataset(caption_files[0], clip_preprocess=tiny.preprocess)
    assert captions[0]["pixel_values"].shape == (3, 32, 32)


# ---------------------------------------------------------------------------------------------------
# Pure augmentation helpers
# ---------------------------------------------------------------------------------------------------
def test_paired_flip_applies_one_transform_to_all_and_covers_all_eight():
    image = np.arange(4 * 6 * 3, dtype=np.float32).reshape(4, 6, 3)
    seen = set()
    for seed in range(64):
        a, b = paired_flip([image, image.copy()], np.random.default_rng(seed), flip=True, rotate=True)
        np.testing.assert_array_equal(a, b)
        seen.add(a.tobytes())
    assert len(seen) == 8
    (same,) = paired_flip([image], np.random.default_rng(0), flip=False, rotate=False)
    np.testing.assert_array_equal(same, image)


def test_pad_to_size_handles_tiny_images():
    assert pad_to_size(np.ones((3, 2, 3), np.float32), 16).shape == (16, 16, 3)
    assert pad_to_size(np.ones((1, 1, 3), np.float32), 8).shape == (8, 8, 3)
    big = np.zeros((20, 30, 3), np.float32)
    assert pad_to_size(big, 16) is big


# ---------------------------------------------------------------------------------------------------
# SyntheticDegradationDataset
# ---------------------------------------------------------------------------------------------------
@pytest.fixture
def clean_folder(tmp_path):
    folder = tmp_path / "clean"
    _save(folder / "astronaut.png", _photo("astronaut", 72, 72))
    _save(folder / "nested" / "coffee.jpg", _photo("coffee", 60, 80))
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_synthetic_cycles_through_every_label_per_image(clean_folder):
    dataset = SyntheticDegradationDataset(clean_folder, crop_size=48, seed=0)
    assert len(dataset) == 2 * len(SYNTHESISABLE)
    labels = [dataset[i]["degradation"] for i in range(len(SYNTHESISABLE))]
    assert labels == SYNTHESISABLE
    for index in (0, len(SYNTHESISABLE) + 3):
        item = dataset[index]
        assert item["lq"].shape == item["gt"].shape == (3, 48, 48)
        assert item["lq"].dtype == torch.float32
        assert 0 <= item["lq"].min() and item["lq"].max() <= 1
        assert not torch.equal(item["lq"], item["gt"])
    assert dataset[len(SYNTHESISABLE)]["image_index"] == 1


def test_synthetic_is_deterministic_per_seed_and_epoch(clean_folder):
    first = SyntheticDegradationDataset(clean_folder, ["rainy", "noisy"], crop_size=32, seed=7)
    second = SyntheticDegradationDataset(clean_folder, ["rainy", "noisy"], crop_size=32, seed=7)
    other = SyntheticDegradationDataset(clean_folder, ["rainy", "noisy"], crop_size=32, seed=8)
    for index in range(len(first)):
        torch.testing.assert_close(first[index]["lq"], second[index]["lq"], rtol=0, atol=0)
        assert not torch.equal(first[index]["lq"], other[index]["lq"])
    before = first[1]["lq"]
    first.set_epoch(1)
    assert not torch.equal(first[1]["lq"], before)


def test_synthetic_gt_is_the_clean_image_and_lq_its_degradation(clean_folder):
    photo = _photo("chelsea", 40, 50)
    dataset = SyntheticDegradationDataset([photo], ["low-light"], crop_size=None, flip=False, seed=0)
    item = dataset[0]
    np.testing.assert_allclose(item["gt"].permute(1, 2, 0).numpy(), photo / 255, atol=1e-6)
    assert item["lq"].mean() < 0.35 * item["gt"].mean()
    # In-memory float images and PIL images work too; small images are padded to the crop.
    floats = SyntheticDegradationDataset([photo / 255.0, PIL.Image.fromarray(photo)], ["noisy"], crop_size=64)
    assert floats[0]["gt"].shape == floats[1]["gt"].shape == (3, 64, 64)


def test_synthetic_augmentation_varies_the_clean_crop_reproducibly():
    photo = _photo("astronaut", 160, 160)
    plain = SyntheticDegradationDataset([photo], ["noisy"], crop_size=64, seed=3)
    augmented = SyntheticDegradationDataset([photo], ["noisy"], crop_size=64, seed=3, augment=True)
    again = SyntheticDegradationDataset([photo], ["noisy"], crop_size=64, seed=3, augment=True)
    gts = []
    for epoch in range(4):
        for dataset in (plain, augmented, again):
            dataset.set_epoch(epoch)
        item = augmented[0]
        assert item["gt"].shape == item["lq"].shape == (3, 64, 64)
        assert 0 <= item["gt"].min() and item["gt"].max() <= 1
        torch.testing.assert_close(item["gt"], again[0]["gt"])  # same seed and epoch, same item
        assert not torch.equal(item["gt"], plain[0]["gt"])
        gts.append(item["gt"])
    # each epoch another scale, exposure and saturation: the mean brightness and colourfulness vary
    means = torch.stack([gt.mean() for gt in gts])
    assert means.max() - means.min() > 0.02


def test_synthetic_parameter_overrides_and_clip_view(clean_folder):
    dataset = SyntheticDegradationDataset(
        clean_folder, ["noisy"], crop_size=32, seed=0, degradation_params={"noisy": {"sigma_range": (50, 50)}},
        clip_preprocess=True,
    )
    item = dataset[0]
    assert (item["lq"] - item["gt"]).std() > 0.12
    assert item["lq_clip"].shape == (3, 224, 224)


def test_synthetic_clean_pairs_leave_the_crop_untouched(clean_folder):
    dataset = SyntheticDegradationDataset(clean_folder, ["noisy", CLEAN_LABEL], crop_size=32, seed=0)
    assert len(dataset) == 4
    assert [dataset[i]["degradation"] for i in range(4)] == ["noisy", CLEAN_LABEL] * 2
    for index in (1, 3):
        assert torch.equal(dataset[index]["lq"], dataset[index]["gt"])
    assert not torch.equal(dataset[0]["lq"], dataset[0]["gt"])


def test_synthetic_errors_are_clear(tmp_path, clean_folder):
    with pytest.raises(ValueError, match="cannot synthesise \\['foggy'\\].*motion-blurry"):
        SyntheticDegradationDataset(clean_folder, ["foggy"])
    with pytest.raises(ValueError, match="not in degradations"):
        SyntheticDegradationDataset(clean_folder, ["noisy"], degradation_params={"hazy": {}})
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        SyntheticDegradationDataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        SyntheticDegradationDataset(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="clean image not found"):
        SyntheticDegradationDataset([tmp_path / "missing.png"])
    with pytest.raises(IndexError):
        SyntheticDegradationDataset(clean_folder)[10_000]


# ---------------------------------------------------------------------------------------------------
# CaptionDataset
# ---------------------------------------------------------------------------------------------------
@pytest.fixture
def caption_files(tmp_path):
    root = tmp_path / "datasets" / "universal"
    lq = [
        _save(root / "train" / "hazy" / "LQ" / "1.png", _photo("astronaut", 64, 80)),
        _save(root / "train" / "rainy" / "LQ" / "2.png", _photo("coffee", 50, 50)),
    ]
    # Exactly what the authors' generate_captions.py writes (pandas, sep="\t", index=False), paths
    # relative to the working directory they ran from.
    text = (
        "filepath\ttitle\n"
        "train/hazy/LQ/1.png\ta woman in an orange space suit: hazy\n"
        'train/rainy/LQ/2.png\t"a cup of coffee, on a saucer: with a spoon: rainy"\n'
    )
    csv_path = root / "daclip_train.csv"
    csv_path.write_text(text)
    return csv_path, lq


def test_caption_csv_in_the_authors_format(caption_files):
    csv_path, lq = caption_files
    dataset = CaptionDataset(csv_path)  # relative paths fall back to the CSV's folder
    assert len(dataset) == 2
    assert dataset.captions == ["a woman in an orange space suit", "a cup of coffee, on a saucer: with a spoon"]
    assert dataset.degradations == ["hazy", "rainy"]
    item = dataset[0]
    assert item["pixel_values"].shape == (3, 224, 224)
    torch.testing.assert_close(item["pixel_values"], preprocess_images(PIL.Image.open(lq[0]).convert("RGB"))[0])
    assert item["caption"] == "a woman in an orange space suit" and item["degradation"] == "hazy"


def test_caption_tokenizer_random_crop_and_image_root(caption_files, tmp_path):
    csv_path, _ = caption_files
    tokenizer = lambda texts: torch.tensor([[len(text), 0, 0] for text in texts])  # noqa: E731
    dataset = CaptionDataset(csv_path, image_root=csv_path.parent, tokenizer=tokenizer, random_crop=True, seed=0)
    item = dataset[1]
    assert item["caption_ids"].tolist() == [len("a cup of coffee, on a saucer: with a spoon"), 0, 0]
    assert item["degradation_ids"].tolist() == [len("rainy"), 0, 0]
    assert item["pixel_values"].shape == (3, 224, 224)
    with pytest.raises(FileNotFoundError, match="set image_root"):
        CaptionDataset(csv_path, image_root=tmp_path / "elsewhere")


def test_write_caption_csv_round_trips(caption_files, tmp_path):
    _, lq = caption_files
    rows = [(lq[0], "a photo", "hazy"), (lq[1], 'a "cup"\tof tea', "rainy")]
    csv_path = write_caption_csv(tmp_path / "out.csv", rows)
    assert csv_path.read_text().splitlines()[0] == "filepath\ttitle"
    dataset = CaptionDataset(csv_path)
    assert dataset.captions == ["a photo", 'a "cup"\tof tea'] and dataset.degradations == ["hazy", "rainy"]


def test_caption_errors_are_clear(caption_files, tmp_path):
    csv_path, lq = caption_files
    with pytest.raises(ValueError, match=r"no column\(s\) \['filepath', 'title'\].*tab-separated"):
        CaptionDataset(csv_path, sep=",")
    bad = tmp_path / "bad.csv"
    bad.write_text(f"filepath\ttitle\n{lq[0]}\ta caption without a label\n")
    with pytest.raises(ValueError, match="line 2.*'<clean caption>: <degradation>'"):
        CaptionDataset(bad)
    missing = tmp_path / "missing.csv"
    missing.write_text("filepath\ttitle\nnowhere.png\ta: hazy\n")
    with pytest.raises(FileNotFoundError, match="nowhere.png"):
        CaptionDataset(missing)
    with pytest.raises(FileNotFoundError, match="caption CSV not found"):
        CaptionDataset(tmp_path / "none.csv")
    assert split_title("a: b: noisy") == ("a: b", "noisy")


def test_synthetic_items_do_not_depend_on_the_worker(clean_folder):
    dataset = SyntheticDegradationDataset(clean_folder, ["noisy", "snowy"], crop_size=32, seed=1)
    in_process = [batch["lq"] for batch in DataLoader(dataset, batch_size=2)]
    in_workers = [batch["lq"] for batch in DataLoader(dataset, batch_size=2, num_workers=2)]
    for a, b in zip(in_process, in_workers):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
