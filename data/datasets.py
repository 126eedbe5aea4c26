"""torch Datasets for fine-tuning: the authors' paired folders, on-the-fly synthetic pairs, caption CSVs.

- `PairedDegradationDataset`: the authors' layout `root/<degradation>/{LQ,GT}/*`, pairs matched by name.
- `SyntheticDegradationDataset`: clean images degraded on the fly with `degradations.degrade`.
- `CaptionDataset`: the DA-CLIP training CSV written by the authors' `generate_captions.py`
  (tab-separated, columns `filepath` (the LQ image) and `title` = `"<clean caption>: <degradation>"`).

Restoration items are dicts: `lq`, `gt` float32 tensors `[3, H, W]` in [0, 1], `degradation` (label), and
with `clip_preprocess` set, `lq_clip`: the CLIP view of the (cropped) LQ, `[3, 224, 224]`, as the
authors' training loader computes it. Randomness (crop position, flips, synthetic degradation) comes
from a generator seeded by `(seed, epoch, index)`, so an item is reproducible; call `set_epoch` to draw
new crops each epoch. With `seed=None` it comes from torch's RNG instead (seeded per DataLoader worker).
"""
from __future__ import annotations

import csv
import os
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import PIL.Image
import torch
from torch.utils.data import Dataset

from ..pipelines.daclip.image_processing import IMAGE_SUFFIXES, UnreadableImageError, read_image_file, to_float_image
from ..pipelines.daclip.modeling_daclip import DEGRADATIONS
from .degradations import DEGRADATION_FUNCTIONS, SYNTHESISABLE, degrade

PathLike = Union[str, os.PathLike]
ClipPreprocess = Union[bool, int, Callable[[PIL.Image.Image], torch.Tensor]]

# One list for the command line and the training loaders (see image_processing).
IMAGE_EXTENSIONS = IMAGE_SUFFIXES


# ---------------------------------------------------------------------------------------------------
# Reading and augmenting images
# ---------------------------------------------------------------------------------------------------
def list_images(folder: PathLike) -> List[Path]:
    """Image files under `folder` (recursively), sorted; errors if the folder is missing or has none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {folder}")
    return paths


def load_image(path: PathLike) -> np.ndarray:
    """Read an image file as float32 `[H, W, 3]` RGB in [0, 1], upright (alpha dropped, grayscale repeated).

    The rules are `image_processing`'s (the pipeline's). A file with several frames (animated GIF/WebP,
    multi-page TIFF) is one training picture: its first frame, with a warning.

    Raises:
        ValueError: the file cannot be read (named, with Pillow's reason).
    """
    frames = read_image_file(path)
    if len(frames) > 1:
        warnings.warn(f"{path} has {len(frames)} frames; the training loaders use the first.", stacklevel=2)
    return to_float_image(frames[0])


def pad_to_size(image: np.ndarray, size: int) -> np.ndarray:
    """Reflect-pad an `[H, W, C]` image (centred) so both sides are at least `size`."""
    height, width = image.shape[:2]
    pad_h, pad_w = max(0, size - height), max(0, size - width)
    if pad_h == 0 and pad_w == 0:
        return image
    mode = "reflect" if min(height, width) > 1 else "edge"
    # numpy reflects repeatedly when the pad is wider than the image, so tiny images work too.
    return np.pad(image, ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)), mode=mode)


def paired_random_crop(images: Sequence[np.ndarray], size: Optional[int], rng: np.random.Generator) -> List[np.ndarray]:
    """The same random `size`×`size` window of each image (reflect-padded first where smaller).

    `size=None` returns the images unchanged. The images must have the same height and width.
    """
    shapes = {image.shape[:2] for image in images}
    if len(shapes) != 1:
        raise ValueError(f"paired images differ in size: {sorted(shapes)}")
    if size is None:
        return list(images)
    images = [pad_to_size(image, size) for image in images]
    height, width = images[0].shape[:2]
    top = int(rng.integers(0, height - size + 1))
    left = int(rng.integers(0, width - size + 1))
    return [image[top : top + size, left : left + size] for image in images]


def paired_flip(
    images: Sequence[np.ndarray], rng: np.random.Generator, flip: bool = True, rotate: bool = False
) -> List[np.ndarray]:
    """The same random augmentation of each image: horizontal and vertical flips (each with probability
    ½) when `flip`, and a transpose (with the flips, any multiple of 90°) with probability ½ when `rotate`."""
    horizontal = flip and rng.random() < 0.5
    vertical = flip and rng.random() < 0.5
    transpose = rotate and rng.random() < 0.5
    out = []
    for image in images:
        if horizontal:
            image = image[:, ::-1]
        if vertical:
            image = image[::-1]
        if transpose:
            image = image.transpose(1, 0, 2)
        out.append(image)
    return out


def random_zoomed_crop(
    image: np.ndarray, size: Optional[int], rng: np.random.Generator, scale_range: Tuple[float, float]
) -> np.ndarray:
    """A random `size`×`size` crop of the image seen at a random scale from `scale_range` (a window of
    `size / scale` pixels, resized with antialiasing): the same scene at other scales, so that a few photos give
    crops with more kinds of content. Only the window is resized, so large photos cost no more than small ones.
    `size=None`: the whole image, rescaled."""
    scale = float(rng.uniform(*scale_range))
    if size is None:
        height, width = image.shape[:2]
        window, target = image, (max(1, round(width * scale)), max(1, round(height * scale)))
    else:
        (window,) = paired_random_crop([image], max(size, int(np.ceil(size / scale))), rng)
        target = (size, size)
    if window.shape[1::-1] == target:
        return window
    pixels = PIL.Image.fromarray(np.round(np.clip(window, 0, 1) * 255).astype(np.uint8))
    return np.asarray(pixels.resize(target, PIL.Image.BICUBIC), dtype=np.float32) / 255


def photometric_jitter(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random exposure (×0.7–1.3), gamma (0.7–1.4) and saturation (×0.6–1.4) of a clean image in [0, 1]:
    a detector then learns the degradation, not the brightness or colours of the few training photos."""
    image = np.clip(image * rng.uniform(0.7, 1.3), 0, 1) ** rng.uniform(0.7, 1.4)
    grey = image.mean(axis=2, keepdims=True)
    return np.clip(grey + (image - grey) * rng.uniform(0.6, 1.4), 0, 1).astype(np.float32)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """float32 `[H, W, 3]` → float32 tensor `[3, H, W]`."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))


def clip_view(image: Union[np.ndarray, PIL.Image.Image], clip_preprocess: ClipPreprocess) -> torch.Tensor:
    """The CLIP view `[3, S, S]` of an image, as DA-CLIP sees it.

    `clip_preprocess`: True (224, the released models' size) or an int size — the authors' transform via
    `modeling_daclip.preprocess_images`, i.e. what `DACLIPModel.preprocess` does —, or a callable such as
    a loaded model's `preprocess` (PIL image in, `[1, 3, S, S]` or `[3, S, S]` out).
    """
    if isinstance(image, np.ndarray):
        # The authors' training loader truncates (`(img * 255).astype(uint8)`), unlike their app; follow it.
        image = PIL.Image.fromarray((image * 255).astype(np.uint8))
    if callable(clip_preprocess):
        pixel_values = clip_preprocess(image)
    else:
        from ..pipelines.daclip.modeling_daclip import preprocess_images

        size = 224 if clip_preprocess is True else int(clip_preprocess)
        pixel_values = preprocess_images(image, size)
    return pixel_values[0] if pixel_values.ndim == 4 else pixel_values


def _check_clip_preprocess(clip_preprocess: ClipPreprocess) -> ClipPreprocess:
    if clip_preprocess is False or clip_preprocess is None:
        return False
    if clip_preprocess is True or callable(clip_preprocess):
        return clip_preprocess
    if isinstance(clip_preprocess, int) and clip_preprocess > 0:
        return clip_preprocess
    raise TypeError(f"clip_preprocess must be a bool, a positive int size or a callable, got {clip_preprocess!r}")


class _SeededItems:
    """Per-item generators seeded by (seed, epoch, index), and one bad file never sinks a training run: an item
    whose image cannot be read (damaged, not an image, a decompression bomb) is replaced by the next readable
    item, with a warning naming the file once."""

    seed: Optional[int]
    epoch: int = 0

    def __getitem__(self, index: int) -> Dict[str, Any]:
        index = _check_index(index, len(self))
        for offset in range(len(self)):
            candidate = (index + offset) % len(self)
            try:
                return self._load_item(candidate)
            except UnreadableImageError as error:
                if str(error) not in _reported_unreadable:
                    _reported_unreadable.add(str(error))
                    warnings.warn(f"skipping an unreadable training image: {error}", stacklevel=2)
        raise ValueError(f"none of the {len(self)} items of this dataset can be read (see the warnings).")

    def set_epoch(self, epoch: int) -> None:
        """Draw new crops / flips / degradations: items depend on (seed, epoch, index)."""
        self.epoch = int(epoch)

    def _item_rng(self, index: int) -> np.random.Generator:
        if self.seed is None:
            return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
        return np.random.default_rng([int(self.seed), self.epoch, int(index)])


_reported_unreadable: set = set()


def _check_index(index: int, length: int) -> int:
    if index < 0:
        index += length
    if not 0 <= index < length:
        raise IndexError(f"index {index} out of range for a dataset of {length} items")
    return index


# ---------------------------------------------------------------------------------------------------
# Paired folders
# ---------------------------------------------------------------------------------------------------
def _by_stem(folder: Path) -> Dict[str, Path]:
    """Images under `folder` keyed by their path relative to it, without extension (LQ may be .jpg, GT .png)."""
    found: Dict[str, Path] = {}
    for path in list_images(folder):
        key = path.relative_to(folder).with_suffix("").as_posix()
        if key in found:
            raise ValueError(f"two images in {folder} share the name {key!r}: {found[key].name}, {path.name}")
        found[key] = path
    return found


class UnpairedImagesError(ValueError):
    """A paired folder has LQ images without a GT of the same name, or GT images without an LQ. `details` says
    which; the message adds the Python fix (`strict=False`); the training scripts name their flag instead."""

    def __init__(self, details: str):
        super().__init__(details + " (pass strict=False to skip them)")
        self.details = details


class PairedDegradationDataset(_SeededItems, Dataset):
    """LQ/GT pairs in the authors' layout: `root/<degradation>/LQ/*` and `root/<degradation>/GT/*`.

    Files pair up by name without extension (sub-folders allowed). Every item is one pair; to sample the
    labels evenly however many pairs each has (as the authors' loader does), give a
    `torch.utils.data.WeightedRandomSampler(dataset.sample_weights(), len(dataset))`.

    Args:
        root: the dataset folder, e.g. `datasets/universal/train`.
        degradations: labels (sub-folders) to use; None = every sub-folder holding `LQ` and `GT`, in the
            released models' label order, then others alphabetically.
        crop_size: side of the random square crop (smaller images are reflect-padded first); None keeps
            whole images (for evaluation, batch size 1 unless all images share a size).
        flip: random horizontal and vertical flips, applied identically to LQ and GT.
        rotate: also random transposes (so all 8 flips/rotations of the square), as the authors' `use_rot`.
        seed: items depend on (seed, epoch, index); None draws from torch's RNG.
        clip_preprocess: add `lq_clip`, the CLIP view of the LQ crop (see `clip_view`).
        strict: unpaired files are an error (True) or skipped with a warning (False).
    """

    def __init__(
        self,
        root: PathLike,
        degradations: Optional[Sequence[str]] = None,
        crop_size: Optional[int] = 256,
        flip: bool = True,
        rotate: bool = False,
        seed: Optional[int] = None,
        clip_preprocess: ClipPreprocess = False,
        strict: bool = True,
    ):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset root not found: {self.root}")
        if degradations is None:
            found = [p.name for p in self.root.iterdir() if (p / "LQ").is_dir() and (p / "GT").is_dir()]
            if not found:
                hint = (
                    f"; {self.root} itself holds LQ/ and GT/: give its parent folder {self.root.parent}, with one "
                    f"sub-folder per degradation named by its label ({self.root.name} is read as a label)"
                    if (self.root / "LQ").is_dir() or (self.root / "GT").is_dir()
                    else ""
                )
                raise ValueError(
                    f"no <degradation>/LQ and <degradation>/GT folders under {self.root}; expected the layout "
                    f"root/<degradation>/{{LQ,GT}}/<images>, e.g. root/hazy/LQ/0001.png and root/hazy/GT/0001.png"
                    + hint
                )
            degradations = [label for label in DEGRADATIONS if label in found]
            degradations += sorted(label for label in found if label not in DEGRADATIONS)
        self.degradations = list(degradations)
        self.crop_size = crop_size
        self.flip = flip
        self.rotate = rotate
        self.seed = seed
        self.clip_preprocess = _check_clip_preprocess(clip_preprocess)
        self.samples: List[Tuple[Path, Path, str]] = []
        for label in self.degradations:
            lq_dir, gt_dir = self.root / label / "LQ", self.root / label / "GT"
            for folder in (lq_dir, gt_dir):
                if not folder.is_dir():
                    raise FileNotFoundError(f"missing folder {folder} (expected root/<degradation>/{{LQ,GT}})")
            lq, gt = _by_stem(lq_dir), _by_stem(gt_dir)
            only_lq, only_gt = sorted(lq.keys() - gt.keys()), sorted(gt.keys() - lq.keys())
            if only_lq or only_gt:
                message = (
                    f"unpaired images for {label!r}: {len(only_lq)} only in {lq_dir} {only_lq[:5]}, "
                    f"{len(only_gt)} only in {gt_dir} {only_gt[:5]}"
                )
                if strict:
                    raise UnpairedImagesError(message)
                warnings.warn(message + "; skipping them")
            keys = sorted(lq.keys() & gt.keys())
            if not keys:
                raise ValueError(f"no LQ/GT pairs for {label!r} under {self.root / label}")
            self.samples.extend((lq[key], gt[key], label) for key in keys)

    def __len__(self) -> int:
        return len(self.samples)

    def sample_weights(self) -> torch.Tensor:
        """Per-item weights `1 / (pairs of its label)`: equal total weight per label, for a WeightedRandomSampler."""
        counts = Counter(label for _, _, label in self.samples)
        return torch.tensor([1.0 / counts[label] for _, _, label in self.samples], dtype=torch.float64)

    def _load_item(self, index: int) -> Dict[str, Any]:
        lq_path, gt_path, label = self.samples[index]
        rng = self._item_rng(index)
        lq, gt = load_image(lq_path), load_image(gt_path)
        if lq.shape != gt.shape:
            raise ValueError(f"LQ and GT differ in size: {lq_path} {lq.shape[:2]} vs {gt_path} {gt.shape[:2]}")
        lq, gt = paired_random_crop([lq, gt], self.crop_size, rng)
        lq, gt = paired_flip([lq, gt], rng, self.flip, self.rotate)
        item = {
            "lq": to_tensor(lq),
            "gt": to_tensor(gt),
            "degradation": label,
            "lq_path": str(lq_path),
            "gt_path": str(gt_path),
        }
        if self.clip_preprocess:
            item["lq_clip"] = clip_view(np.ascontiguousarray(lq), self.clip_preprocess)
        return item


# ---------------------------------------------------------------------------------------------------
# Clean images, degraded on the fly
# ---------------------------------------------------------------------------------------------------
# The pseudo-label of clean → clean pairs in `SyntheticDegradationDataset` (not a DA-CLIP degradation).
CLEAN_LABEL = "clean"


class SyntheticDegradationDataset(_SeededItems, Dataset):
    """Clean images degraded on the fly: item `i` is image `i // len(degradations)` with degradation
    `degradations[i % len(degradations)]` (every image gets every label once per epoch).

    The clean image is cropped (and flipped) first, then degraded, so `gt` is exactly the clean crop.
    Items depend only on (seed, epoch, index): the same seed and epoch give the same pairs in any
    DataLoader worker.

    Args:
        images: a folder of clean images (searched recursively), a list of image paths, or a list of
            in-memory images (PIL, or numpy uint8 / float in [0, 1]).
        degradations: labels to synthesise, default all of `SYNTHESISABLE`; `CLEAN_LABEL` ("clean") among them
            gives clean → clean pairs (`lq` is `gt`), so that a restorer learns to leave undegraded images alone.
            A label listed twice is drawn twice as often.
        crop_size: side of the random square crop (smaller images are reflect-padded); None = whole images.
        seed: base seed (default 0); None draws from torch's RNG (not reproducible).
        flip, rotate, clip_preprocess: as in `PairedDegradationDataset`.
        degradation_params: per-label keyword overrides, e.g. `{"noisy": {"sigma_range": (50, 50)}}`.
        augment: vary the clean image before it is cropped and degraded: a random rescale (×0.5–1) and
            photometric jitter (`photometric_jitter`). Off by default: `gt` is then a crop of the image as given.
    """

    AUGMENT_SCALE_RANGE = (0.5, 1.0)

    def __init__(
        self,
        images: Union[PathLike, Sequence[Union[PathLike, PIL.Image.Image, np.ndarray]]],
        degradations: Sequence[str] = tuple(SYNTHESISABLE),
        crop_size: Optional[int] = 256,
        seed: Optional[int] = 0,
        flip: bool = True,
        rotate: bool = False,
        clip_preprocess: ClipPreprocess = False,
        degradation_params: Optional[Mapping[str, Mapping[str, Any]]] = None,
        augment: bool = False,
    ):
        if isinstance(images, (str, os.PathLike)):
            self.images: List[Any] = list(list_images(images))
        else:
            self.images = list(images)
            if not self.images:
                raise ValueError("no clean images given")
            for image in self.images:
                if isinstance(image, (str, os.PathLike)) and not Path(image).is_file():
                    raise FileNotFoundError(f"clean image not found: {image}")
        self.degradations = list(degradations)
        unknown = [label for label in self.degradations if label not in DEGRADATION_FUNCTIONS and label != CLEAN_LABEL]
        if unknown or not self.degradations:
            raise ValueError(f"cannot synthesise {unknown or 'an empty list'}; known: {', '.join(SYNTHESISABLE)} (and {CLEAN_LABEL!r})")
        self.degradation_params = {label: dict(params) for label, params in (degradation_params or {}).items()}
        unused = sorted(set(self.degradation_params) - set(self.degradations))
        if unused:
            raise ValueError(f"degradation_params given for labels not in degradations: {unused}")
        self.crop_size = crop_size
        self.seed = seed
        self.flip = flip
        self.rotate = rotate
        self.augment = augment
        self.clip_preprocess = _check_clip_preprocess(clip_preprocess)

    def __len__(self) -> int:
        return len(self.images) * len(self.degradations)

    def _clean(self, image_index: int) -> np.ndarray:
        image = self.images[image_index]
        return load_image(image) if isinstance(image, (str, os.PathLike)) else to_float_image(image)

    def _load_item(self, index: int) -> Dict[str, Any]:
        image_index, label = index // len(self.degradations), self.degradations[index % len(self.degradations)]
        rng = self._item_rng(index)
        clean = self._clean(image_index)
        if self.augment:
            (gt,) = [random_zoomed_crop(clean, self.crop_size, rng, self.AUGMENT_SCALE_RANGE)]
        else:
            (gt,) = paired_random_crop([clean], self.crop_size, rng)
        (gt,) = paired_flip([gt], rng, self.flip, self.rotate)
        gt = np.ascontiguousarray(gt)
        if self.augment:
            gt = photometric_jitter(gt, rng)
        lq = gt.copy() if label == CLEAN_LABEL else degrade(gt, label, rng, **self.degradation_params.get(label, {}))
        item = {"lq": to_tensor(lq), "gt": to_tensor(gt), "degradation": label, "image_index": image_index}
        if self.clip_preprocess:
            item["lq_clip"] = clip_view(lq, self.clip_preprocess)
        return item


# ---------------------------------------------------------------------------------------------------
# DA-CLIP caption CSVs
# ---------------------------------------------------------------------------------------------------
def split_title(title: str) -> Tuple[str, str]:
    """`"<clean caption>: <degradation>"` → (caption, degradation).

    Splits at the last `": "`: the authors split at every one (and so fail on captions containing one).
    """
    caption, sep, degradation = title.rpartition(": ")
    if not sep or not degradation.strip():
        raise ValueError(f"caption {title!r} is not of the form '<clean caption>: <degradation>'")
    return caption.strip(), degradation.strip()


def write_caption_csv(
    csv_path: PathLike,
    rows: Iterable[Tuple[PathLike, str, str]],
    sep: str = "\t",
    img_key: str = "filepath",
    caption_key: str = "title",
) -> Path:
    """Write a DA-CLIP caption CSV in the authors' format from `(lq_image_path, clean_caption, degradation)`
    rows: tab-separated, header `filepath\\ttitle`, titles `"<clean caption>: <degradation>"`."""
    csv_path = Path(csv_path)
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=sep, lineterminator="\n")
        writer.writerow([img_key, caption_key])
        for filepath, caption, degradation in rows:
            writer.writerow([str(filepath), f"{caption}: {degradation}"])
    return csv_path


class CaptionDataset(_SeededItems, Dataset):
    """The DA-CLIP training CSV of the authors' `generate_captions.py` / open_clip's `CsvDataset`.

    Each row: `filepath` (a degraded LQ image) and `title` = `"<caption of the clean GT>: <degradation>"`,
    tab-separated with a header. Items: `pixel_values` (the CLIP view, `[3, 224, 224]`), `caption`,
    `degradation`, `filepath`, and with a `tokenizer`, `caption_ids` and `degradation_ids` (the authors
    concatenate the two token rows into one text tensor; we keep them apart).

    Args:
        csv_path: the CSV file.
        image_root: folder that relative `filepath`s are relative to. None: as the authors, relative to the
            working directory, falling back to the CSV's folder.
        img_key, caption_key, sep: column names and separator (the authors' open_clip defaults).
        clip_preprocess: True (224) / an int size / a callable such as `model.preprocess` (see `clip_view`).
        tokenizer: optional callable, list of strings → `[N, context_length]` ids (e.g. open_clip's).
        random_crop: as the authors' `--crop`: with probability 0.8, a random square crop with a side
            between `min_crop_size` and the short side, before the CLIP view.
        seed: for the random crops, as in `PairedDegradationDataset`.
    """

    def __init__(
        self,
        csv_path: PathLike,
        image_root: Optional[PathLike] = None,
        img_key: str = "filepath",
        caption_key: str = "title",
        sep: str = "\t",
        clip_preprocess: ClipPreprocess = True,
        tokenizer: Optional[Callable[[List[str]], torch.Tensor]] = None,
        random_crop: bool = False,
        min_crop_size: int = 64,
        seed: Optional[int] = None,
    ):
        self.csv_path = Path(csv_path)
        if not self.csv_path.is_file():
            raise FileNotFoundError(f"caption CSV not found: {self.csv_path}")
        with open(self.csv_path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle, delimiter=sep)
            columns = reader.fieldnames or []
            missing = [key for key in (img_key, caption_key) if key not in columns]
            if missing:
                raise ValueError(
                    f"{self.csv_path} has no column(s) {missing}; its header reads {columns} with separator "
                    f"{sep!r} (the authors' files are tab-separated with columns 'filepath' and 'title')"
                )
            rows = list(reader)
        if not rows:
            raise ValueError(f"{self.csv_path} has a header but no rows")
        self.filepaths: List[Path] = []
        self.captions: List[str] = []
        self.degradations: List[str] = []
        missing_files = []
        for line, row in enumerate(rows, start=2):
            try:
                caption, degradation = split_title(row[caption_key] or "")
            except ValueError as error:
                raise ValueError(f"{self.csv_path}, line {line}: {error}") from None
            path = self._resolve(row[img_key] or "", image_root)
            if path is None:
                missing_files.append(row[img_key])
            self.filepaths.append(path)
            self.captions.append(caption)
            self.degradations.append(degradation)
        if missing_files:
            raise FileNotFoundError(
                f"{len(missing_files)} image(s) listed in {self.csv_path} not found, e.g. {missing_files[:3]}; "
                f"set image_root to the folder their paths are relative to"
            )
        self.clip_preprocess = _check_clip_preprocess(clip_preprocess) or True
        self.tokenizer = tokenizer
        self.random_crop = random_crop
        self.min_crop_size = min_crop_size
        self.seed = seed

    def _resolve(self, filepath: str, image_root: Optional[PathLike]) -> Optional[Path]:
        path = Path(filepath)
        if path.is_absolute() or image_root is not None:
            candidates = [path if path.is_absolute() else Path(image_root) / path]
        else:
            candidates = [path, self.csv_path.parent / path]
        return next((candidate for candidate in candidates if candidate.is_file()), None)

    def __len__(self) -> int:
        return len(self.filepaths)

    def _load_item(self, index: int) -> Dict[str, Any]:
        # The pipeline's reading rules (upright, 16-bit, CMYK through its profile), as 8-bit RGB for the CLIP view.
        pixels = load_image(self.filepaths[index])
        image = PIL.Image.fromarray(np.round(pixels * 255.0).astype(np.uint8))
        if self.random_crop:
            rng = self._item_rng(index)
            if rng.random() < 0.8:
                width, height = image.size
                side = int(rng.integers(min(self.min_crop_size, width, height), min(width, height) + 1))
                left, top = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
                image = image.crop((left, top, left + side, top + side))
        item = {
            "pixel_values": clip_view(image, self.clip_preprocess),
            "caption": self.captions[index],
            "degradation": self.degradations[index],
            "filepath": str(self.filepaths[index]),
        }
        if self.tokenizer is not None:
            item["caption_ids"] = self.tokenizer([self.captions[index]])[0]
            item["degradation_ids"] = self.tokenizer([self.degradations[index]])[0]
        return item


__all__ = [
    "CLEAN_LABEL",
    "CaptionDataset",
    "IMAGE_EXTENSIONS",
    "PairedDegradationDataset",
    "SyntheticDegradationDataset",
    "clip_view",
    "list_images",
    "load_image",
    "pad_to_size",
    "paired_flip",
    "paired_random_crop",
    "split_title",
    "to_float_image",
    "to_tensor",
    "write_caption_csv",
]
