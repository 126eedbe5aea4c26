"""Everything the nodes need from ComfyUI, in one place, with fallbacks so the pack imports without it.

Inside ComfyUI this module uses its `folder_paths` registry (the `models/daclip/` folder), its progress bar
(with step previews), its interruption flag and its memory manager (models wrapped in its `ModelPatcher`).
Without ComfyUI (tests, scripts) the same functions work on folders set with `set_model_folders`, move models
to their device and back around each use, report progress nowhere and are never interrupted.
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import List, Optional

import torch

from ..pipelines.daclip.loading import CHECKPOINT_PATTERN, COMPONENT_FOLDERS, COMPONENT_MARKER, PIPELINE_MARKER

# ComfyUI has imported its `folder_paths` and `comfy` modules before it imports custom nodes. Only then are
# they used: importing them ourselves elsewhere (say, tests run from inside a ComfyUI checkout) would run
# ComfyUI's device setup, which reads ComfyUI's command line.
if "folder_paths" in sys.modules:
    import comfy.cli_args as _cli_args
    import comfy.model_management as _model_management
    import comfy.model_patcher as _model_patcher
    import comfy.utils as _comfy_utils
    import folder_paths as _folder_paths
else:
    _cli_args = _model_management = _model_patcher = _comfy_utils = _folder_paths = None

IN_COMFYUI = _folder_paths is not None

MODEL_FOLDER = "daclip"
# Model files; a diffusers folder is recognised by its marker file next to its weights (see model_entries).
MODEL_EXTENSIONS = {".pt", ".pth", ".safetensors"}

_fallback_folders: List[str] = []


def register_model_folder() -> None:
    """Add `models/daclip` to ComfyUI's model folders, keeping any paths a user configured for "daclip"
    (e.g. in `extra_model_paths.yaml`, which ComfyUI reads before it imports custom nodes), and the pack's
    `assets/` folder, so that the bundled demo pipeline (`demo-model/`) is in both loaders with nothing to download."""
    if not IN_COMFYUI:
        return
    from ..demo import ASSETS_DIR, DEMO_MODEL_DIR

    default = os.path.join(_folder_paths.models_dir, MODEL_FOLDER)
    _folder_paths.add_model_folder_path(MODEL_FOLDER, default, is_default=True)
    if DEMO_MODEL_DIR.is_dir():
        _folder_paths.add_model_folder_path(MODEL_FOLDER, str(ASSETS_DIR))
    paths, _ = _folder_paths.folder_names_and_paths[MODEL_FOLDER]
    _folder_paths.folder_names_and_paths[MODEL_FOLDER] = (paths, set(MODEL_EXTENSIONS))


def set_model_folders(folders: List[str]) -> None:
    """Outside ComfyUI: the folders searched for models (inside ComfyUI, `extra_model_paths.yaml` does this)."""
    _fallback_folders[:] = [os.fspath(folder) for folder in folders]


def model_folders() -> List[str]:
    if IN_COMFYUI:
        return _folder_paths.get_folder_paths(MODEL_FOLDER)
    return list(_fallback_folders)


def _list_files() -> List[str]:
    """Model files under the model folders, relative to their folder (as `folder_paths.get_filename_list`)."""
    if IN_COMFYUI:
        return _folder_paths.get_filename_list(MODEL_FOLDER)
    found = set()
    for root in _fallback_folders:
        for directory, subdirectories, files in os.walk(root, followlinks=True):
            subdirectories[:] = [name for name in subdirectories if name != ".git"]
            for name in files:
                if os.path.splitext(name)[1].lower() in MODEL_EXTENSIONS:
                    found.add(os.path.relpath(os.path.join(directory, name), root))
    return sorted(found)


def _full_path_or_raise(filename: str) -> str:
    """A listed file's absolute path (as `folder_paths.get_full_path_or_raise`: never outside the folders)."""
    if IN_COMFYUI:
        return _folder_paths.get_full_path_or_raise(MODEL_FOLDER, filename)
    relative = os.path.relpath(os.path.join("/", filename), "/")
    for root in _fallback_folders:
        candidate = os.path.join(root, relative)
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(f"Model in folder '{MODEL_FOLDER}' with filename '{filename}' not found.")


def _diffusers_folder_of(filename: str) -> Optional[str]:
    """The diffusers folder (relative, `/`-separated) that a listed weights file belongs to, if any.

    The nearest folder with a `model_index.json` (a saved pipeline) wins over the component folder with a
    `config.json` inside it, so a saved pipeline appears once, not once per component.
    """
    parts = filename.replace("\\", "/").split("/")[:-1]
    file_directory = os.path.dirname(_full_path_or_raise(filename))
    directory = file_directory
    # A training run's `checkpoint-N/` (its model in `unet/` or `daclip/`, beside EMA and optimizer state) is
    # one entry, which both loaders take (see pipelines/daclip/loading.py), even inside a saved pipeline.
    for depth in range(len(parts), 0, -1):
        if CHECKPOINT_PATTERN.fullmatch(parts[depth - 1]) and any(
            os.path.isfile(os.path.join(directory, name, COMPONENT_MARKER)) for name in COMPONENT_FOLDERS
        ):
            return "/".join(parts[:depth])
        directory = os.path.dirname(directory)
    directory = file_directory
    for depth in range(len(parts), 0, -1):
        if os.path.isfile(os.path.join(directory, PIPELINE_MARKER)):
            return "/".join(parts[:depth])
        directory = os.path.dirname(directory)
    if parts and os.path.isfile(os.path.join(file_directory, COMPONENT_MARKER)):
        return "/".join(parts)
    return None


def model_entries() -> List[str]:
    """What the loaders' dropdowns offer: model files, and diffusers folders shown as `name/`."""
    entries = set()
    for filename in _list_files():
        try:
            folder = _diffusers_folder_of(filename)
        except (FileNotFoundError, OSError):
            continue
        entries.add(folder + "/" if folder else filename)
    return sorted(entries)


def resolve_model_entry(entry: str) -> str:
    """A dropdown entry → the absolute path of its file or diffusers folder.

    Only names from `model_entries` resolve: a folder entry is resolved through one of its listed weight
    files, so every path goes through the registry's own lookup (no free paths).
    """
    if not entry.endswith("/"):
        return _full_path_or_raise(entry)
    folder = entry.rstrip("/")
    for filename in _list_files():
        normalized = filename.replace("\\", "/")
        if normalized.startswith(folder + "/") and _diffusers_folder_of(filename) == folder:
            path = _full_path_or_raise(filename)
            for _ in range(normalized[len(folder) + 1:].count("/") + 1):
                path = os.path.dirname(path)
            return path
    raise FileNotFoundError(
        f"Model folder '{folder}' not found in {MODEL_FOLDER} (or it holds no weights): refresh the node list."
    )


# -------------------------------------------------------------------------------------------------------
# Devices and memory
# -------------------------------------------------------------------------------------------------------
def load_device(choice: str = "default") -> torch.device:
    """Where models run: ComfyUI's device ("default") or the CPU."""
    if choice == "cpu":
        return torch.device("cpu")
    if IN_COMFYUI:
        return _model_management.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def offload_device(choice: str = "default") -> torch.device:
    """Where models wait between runs (the CPU, unless ComfyUI runs with --gpu-only / --highvram)."""
    if choice == "cpu":
        return torch.device("cpu")
    if IN_COMFYUI:
        return _model_management.unet_offload_device()
    return torch.device("cpu")


def module_size(module: torch.nn.Module) -> int:
    return sum(tensor.nelement() * tensor.element_size() for tensor in module.state_dict().values())


class _PatchedModule(torch.nn.Module):
    """What ComfyUI's `ModelPatcher` holds: our model inside a plain module, because the patcher writes its
    bookkeeping (`device`, `model_loaded_weight_memory`, ...) onto the module it manages, and diffusers models
    define `device` as a read-only property."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module

    def get_dtype(self) -> torch.dtype:
        return next(self.module.parameters()).dtype


def manage_model(module: torch.nn.Module, load_device: torch.device, offload_device: torch.device):
    """Inside ComfyUI: a `ModelPatcher` for `module`, so that ComfyUI's memory manager can see it, make room
    for it, and unload it ("Unload Models", "Free model and node cache", other models' loads). None outside."""
    if not IN_COMFYUI:
        return None
    # Named after the model, since ComfyUI's log says "Requested to load <class name>".
    container = type(type(module).__name__, (_PatchedModule,), {})(module)
    return _model_patcher.ModelPatcher(
        container, load_device=load_device, offload_device=offload_device, size=module_size(container)
    )


@contextlib.contextmanager
def model_on_device(
    module: torch.nn.Module, device: torch.device, offload: torch.device, working_memory: int = 0, patcher=None
):
    """Run a block with `module` on `device`.

    With a `patcher` (inside ComfyUI) the memory manager loads it, after making room for it and the block's
    `working_memory` (bytes), and decides when to unload it, as it does for its own models: it stays loaded
    between runs until the room is needed or the user frees it. Fully, never partially: our layers are
    plain torch layers, which cannot run with some weights left on the CPU.

    Without one, the module moves to `device` and back to `offload` afterwards, even when the block fails or
    is cancelled (the way `nodes_upscale_model.py` handles its model).
    """
    if patcher is not None:
        _model_management.load_models_gpu([patcher], memory_required=working_memory, force_full_load=True)
        yield
        return
    if IN_COMFYUI:
        _model_management.free_memory(module_size(module) + working_memory, device)
    module.to(device)
    try:
        yield
    finally:
        module.to(offload)
        empty_cache()


def empty_cache() -> None:
    """Give cached device memory back (after running out of it)."""
    if IN_COMFYUI:
        _model_management.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


def images_that_fit(device: torch.device, bytes_per_image: int, batch: int) -> int:
    """How many images to run at once on `device`: all of them, unless its free memory (ComfyUI's count, or
    CUDA's) holds fewer. Unknown free memory (the CPU outside ComfyUI) puts no limit; running out later still
    halves the sub-batch (`nodes.restore_in_sub_batches`)."""
    free = None
    if IN_COMFYUI:
        free = _model_management.get_free_memory(device)
    elif device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    if free is None or bytes_per_image <= 0:
        return batch
    return max(1, min(batch, int(free // bytes_per_image)))


# -------------------------------------------------------------------------------------------------------
# Progress and cancel
# -------------------------------------------------------------------------------------------------------
class _NoProgressBar:
    def __init__(self, total: int):
        self.total, self.current = total, 0

    def update(self, value: int) -> None:
        self.current = min(self.current + value, self.total)

    def update_absolute(self, value: int, total: Optional[int] = None, preview=None) -> None:
        self.total = self.total if total is None else total
        self.current = min(value, self.total)


def progress_bar(total: int):
    """ComfyUI's progress bar for the running node (a silent counter outside ComfyUI)."""
    return _comfy_utils.ProgressBar(total) if IN_COMFYUI else _NoProgressBar(total)


# About this many previews per run: each costs one image conversion (well under 1% of a UNet step, see
# benchmarks/benchmark_previews.py), and more would not be seen anyway.
PREVIEWS_PER_RUN = 20


def preview_interval(steps: int) -> Optional[int]:
    """Every how many steps the sampler sends a preview; None when ComfyUI's preview method is "none"
    (`--preview-method`, the same setting that turns KSampler's previews on and off) or outside ComfyUI."""
    if not IN_COMFYUI or _cli_args.args.preview_method == _cli_args.LatentPreviewMethod.NoPreviews:
        return None
    return max(1, steps // PREVIEWS_PER_RUN)


def preview_image(images: torch.Tensor, max_size: Optional[int] = None):
    """The first image of a `[B, 3, H, W]` batch (0..1, any device) as a preview for ComfyUI's progress bar:
    `("JPEG", PIL image, max_size)`, what its own samplers send (`latent_preview.py`). Shrunk on the tensor's
    device to at most `max_size` pixels (ComfyUI's `--preview-size`) before it is copied to the CPU."""
    import PIL.Image

    if max_size is None:
        max_size = _cli_args.args.preview_size if IN_COMFYUI else 512
    image = images[:1].detach().float()
    height, width = image.shape[-2:]
    scale = max_size / max(height, width)
    if scale < 1:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        image = torch.nn.functional.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False)
    pixels = image[0].clamp(0, 1).mul(255).round().to(torch.uint8).movedim(0, -1).cpu().numpy()
    return ("JPEG", PIL.Image.fromarray(pixels), max_size)


def throw_if_interrupted() -> None:
    """Raise ComfyUI's interruption exception when the user pressed Cancel (a no-op outside ComfyUI)."""
    if IN_COMFYUI:
        _model_management.throw_exception_if_processing_interrupted()
