"""Folders and Hub repositories: the authors' released files, and pipeline folders diffusers itself can load.

`DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` only finds classes outside diffusers
through "remote code": `model_index.json` names each class as `[module_stem, ClassName]` and the folder
holds `<module_stem>.py` files that define (here: re-export) them. Our shims are one import line from the
installed `daclip` package, so running them runs nothing but our own code. `DACLIPPipeline.from_pretrained`
never imports them: it resolves each component's class by name among ours (refusing any other name), so
it loads such folders without the flag and runs no code from the folder.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

from huggingface_hub import hf_hub_download, snapshot_download

ORIGINAL_REPO_ID = "weblzw/daclip-uir-ViT-B-32-irsde"
# variant → (DA-CLIP file, UNet file), as released by the authors.
ORIGINAL_CHECKPOINTS: Dict[str, Tuple[str, str]] = {
    "universal": ("daclip_ViT-B-32.pt", "universal-ir.pth"),
    "mix": ("daclip_ViT-B-32_mix.pt", "universal-ir-mix.pth"),
    "wild": ("wild-daclip_ViT-L-14.pt", "wild-ir.pth"),
}

MODEL_INDEX = "model_index.json"
# What a pipeline folder needs from a Hub repository (never the authors' pickles or anything else).
PIPELINE_FILE_PATTERNS = [MODEL_INDEX, "*.py", "*/*.py", "*/*.json", "*/*.safetensors"]


def download_original_checkpoints(
    variant: str = "universal",
    repo_id: str = ORIGINAL_REPO_ID,
    cache_dir: Optional[Union[str, os.PathLike]] = None,
    revision: Optional[str] = None,
    token: Optional[str] = None,
    local_files_only: bool = False,
) -> Tuple[str, str]:
    """Download (or find in the Hugging Face cache) the authors' DA-CLIP and UNet files for `variant`.

    Returns the two local paths, for `DACLIPPipeline.from_original_checkpoints`.
    """
    if variant not in ORIGINAL_CHECKPOINTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {sorted(ORIGINAL_CHECKPOINTS)}.")
    return tuple(
        hf_hub_download(
            repo_id, filename, cache_dir=cache_dir, revision=revision, token=token, local_files_only=local_files_only
        )
        for filename in ORIGINAL_CHECKPOINTS[variant]
    )


def download_pipeline_folder(repo_id: str, **kwargs) -> str:
    """Snapshot of a pipeline repository on the Hub: configs, safetensors weights and the re-export shims."""
    allowed = {"cache_dir", "revision", "token", "local_files_only", "force_download", "proxies"}
    return snapshot_download(
        repo_id, allow_patterns=PIPELINE_FILE_PATTERNS, **{k: v for k, v in kwargs.items() if k in allowed}
    )


# ----------------------------------------------------------------------------------------------------
# The remote-code layout
# ----------------------------------------------------------------------------------------------------
def shim_source(class_name: str) -> str:
    return (
        "# Re-export for `DiffusionPipeline.from_pretrained(..., trust_remote_code=True)`; needs `pip install daclip`.\n"
        f"from daclip import {class_name}  # noqa: F401\n"
    )


def _module_stem(obj) -> str:
    return type(obj).__module__.rsplit(".", 1)[-1]


def write_remote_code_layout(folder: Union[str, os.PathLike], pipeline) -> None:
    """Rewrite a saved pipeline folder's `model_index.json` to the `[module_stem, Class]` form, with shims."""
    folder = Path(folder)
    index_path = folder / MODEL_INDEX
    index = json.loads(index_path.read_text())
    pipeline_stem = _module_stem(pipeline)
    index["_class_name"] = [pipeline_stem, type(pipeline).__name__]
    (folder / f"{pipeline_stem}.py").write_text(shim_source(type(pipeline).__name__))
    for name in pipeline.components:
        component = getattr(pipeline, name)
        if component is None:
            continue
        stem, class_name = _module_stem(component), type(component).__name__
        index[name] = [stem, class_name]
        (folder / name / f"{stem}.py").write_text(shim_source(class_name))
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def is_remote_code_layout(folder: Union[str, os.PathLike]) -> bool:
    index_path = Path(folder) / MODEL_INDEX
    return index_path.is_file() and isinstance(json.loads(index_path.read_text()).get("_class_name"), list)
