"""Folders and Hub repositories: the authors' released files, and pipeline folders diffusers itself can load.

`DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` only finds classes outside diffusers
through "remote code": `model_index.json` names each class as `[module_stem, ClassName]` and the folder
holds `<module_stem>.py` files that define (here: re-export) them. Our shims are one import line from the
installed `daclip` package, so running them runs nothing but our own code. `DACLIPPipeline.from_pretrained`
never imports them: it resolves each component's class by name among ours (refusing any other name), so
it loads such folders without the flag and runs no code from the folder.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple, Union

from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url, snapshot_download

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
    local_dir: Optional[Union[str, os.PathLike]] = None,
    endpoint: Optional[str] = None,
    progress: bool = True,
) -> Tuple[str, str]:
    """Download the authors' DA-CLIP and UNet files for `variant` ("universal", "mix" or "wild").

    Without `local_dir` the files go to (or are found in) the Hugging Face cache. With `local_dir` they are
    written into that folder under their released names (what ComfyUI's `models/daclip/` wants), see
    `download_file_to_folder`: an existing file is never replaced, and an interrupted download resumes.
    `endpoint` is the Hub's address (default: `HF_ENDPOINT` or huggingface.co).

    Returns the two local paths, for `DACLIPPipeline.from_original_checkpoints`.
    Raises `ValueError` for an unknown variant, `OSError` when a file cannot be fetched or written.
    """
    if variant not in ORIGINAL_CHECKPOINTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {sorted(ORIGINAL_CHECKPOINTS)}.")
    if local_dir is not None:
        return tuple(
            download_file_to_folder(
                repo_id, filename, local_dir, revision=revision, token=token, endpoint=endpoint, progress=progress
            )
            for filename in ORIGINAL_CHECKPOINTS[variant]
        )
    return tuple(
        hf_hub_download(
            repo_id, filename, cache_dir=cache_dir, revision=revision, token=token, local_files_only=local_files_only,
            endpoint=endpoint,
        )
        for filename in ORIGINAL_CHECKPOINTS[variant]
    )


# Partial downloads sit next to their target as `.<name>.<etag>.part`: the Hub's ETag of an LFS file is its
# sha256, so a part is only ever continued with the same version of the same file.
PART_SUFFIX = ".part"
_CHUNK = 1 << 20


def _part_path(folder: Path, filename: str, etag: str) -> Path:
    return folder / f".{filename}.{re.sub(r'[^0-9A-Za-z]', '', etag)[:64]}{PART_SUFFIX}"


def download_file_to_folder(
    repo_id: str,
    filename: str,
    folder: Union[str, os.PathLike],
    revision: Optional[str] = None,
    token: Optional[str] = None,
    endpoint: Optional[str] = None,
    progress: bool = True,
    on_existing: Optional[Callable[[Path], None]] = None,
) -> str:
    """Fetch one file of a Hub repository into `folder`, as `folder/<filename>`; returns that path.

    - Never overwrites: a file already at the target is kept as it is (and reported via `on_existing`).
    - Atomic: the data goes into a hidden `.part` file first; the target appears only once it is complete
      (size checked, and the sha256 for LFS files, whose ETag is their sha256), by a hard link that fails
      rather than replace anything.
    - Resumable: a `.part` left by an interrupted run is continued with an HTTP Range request.

    huggingface_hub's own `local_dir` downloads are not used here because whether they resume an interrupted
    file depends on its version (2.x deletes the partial file on failure).
    """
    folder = Path(folder)
    target = folder / filename
    if target.exists():
        if on_existing is not None:
            on_existing(target)
        return str(target)
    folder.mkdir(parents=True, exist_ok=True)
    url = hf_hub_url(repo_id, filename, revision=revision, endpoint=endpoint)
    metadata = get_hf_file_metadata(url, token=token)
    etag = (metadata.etag or "").strip('"')
    part = _part_path(folder, filename, etag or "unknown")
    for stale in folder.glob(f".{filename}.*{PART_SUFFIX}"):
        if stale != part:  # a partial download of another version of this file
            stale.unlink()
    _fetch_into(url, part, metadata.size, token, progress)
    _check_complete(part, metadata.size, etag, url)
    try:
        os.link(part, target)  # fails if the target appeared meanwhile: nothing is replaced
    except FileExistsError:
        part.unlink()
        if on_existing is not None:
            on_existing(target)
        return str(target)
    except OSError:  # a file system without hard links
        if target.exists():
            raise FileExistsError(f"{target} appeared while downloading; it was kept and the download dropped.")
        os.rename(part, target)
        return str(target)
    part.unlink()
    return str(target)


def _fetch_into(url: str, part: Path, size: Optional[int], token: Optional[str], progress: bool) -> None:
    """Append the rest of `url` to `part` (from its current length), following redirects (the Hub sends LFS
    files from a CDN)."""
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have == size:
        return
    headers = {"User-Agent": "daclip", "Accept-Encoding": "identity"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # the part holds more than the file: start again
            part.unlink()
            return _fetch_into(url, part, size, token, progress)
        raise OSError(f"downloading {url} failed: HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        raise OSError(f"downloading {url} failed: {error.reason}") from None
    with response:
        resumed = have and response.status == 206
        mode = "ab" if resumed else "wb"  # a server that ignores Range sends the whole file again
        bar = None
        if progress:
            from tqdm.auto import tqdm

            name = url.rsplit("/", 1)[-1]
            bar = tqdm(total=size, initial=have if resumed else 0, unit="B", unit_scale=True, desc=name)
        try:
            with open(part, mode) as file:
                while True:
                    chunk = response.read(_CHUNK)
                    if not chunk:
                        break
                    file.write(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
                file.flush()
                os.fsync(file.fileno())
        finally:
            if bar is not None:
                bar.close()


def _check_complete(part: Path, size: Optional[int], etag: str, url: str) -> None:
    """Refuse (and drop) a part whose size or, for LFS files, sha256 is not the Hub's."""
    actual = part.stat().st_size
    if size is not None and actual != size:
        raise OSError(
            f"{url}: got {actual} of {size} bytes (the connection ended early); run the download again to resume."
        )
    if re.fullmatch(r"[0-9a-f]{64}", etag):
        digest = hashlib.sha256()
        with open(part, "rb") as file:
            for chunk in iter(lambda: file.read(_CHUNK), b""):
                digest.update(chunk)
        if digest.hexdigest() != etag:
            part.unlink()
            raise OSError(f"{url}: the downloaded data does not match the Hub's sha256 {etag}; run it again.")


def download_pipeline_folder(repo_id: str, **kwargs) -> str:
    """Snapshot of a pipeline repository on the Hub: configs, safetensors weights and the re-export shims."""
    allowed = {"cache_dir", "revision", "token", "local_files_only", "force_download", "proxies"}
    return snapshot_download(
        repo_id, allow_patterns=PIPELINE_FILE_PATTERNS, **{k: v for k, v in kwargs.items() if k in allowed}
    )


# ----------------------------------------------------------------------------------------------------
# The remote-code layout
# ----------------------------------------------------------------------------------------------------
# How to get the package, for the error a shim raises where `daclip` is not importable. (Written as
# `import daclip as ...` inside try: diffusers scans remote code for `from X import` lines and would print its own
# "Run `pip install daclip`", but no distribution of that name is published.)
INSTALL_HINT = "install it from a clone of its repository: `pip install -e <clone>` (see the README there)"


def shim_source(class_name: str) -> str:
    return (
        "# Re-export for `DiffusionPipeline.from_pretrained(..., trust_remote_code=True)`: the class is the daclip\n"
        "# package's, so that package must be importable.\n"
        "try:\n"
        "    import daclip as _daclip\n"
        "except ImportError as error:\n"
        f'    raise ImportError("this pipeline folder needs the daclip package: {INSTALL_HINT}.") from error\n'
        f"{class_name} = _daclip.{class_name}\n"
    )


def _earlier_shim_source(class_name: str) -> str:
    """The shim written before `shim_source` raised its own hint; folders saved then still load."""
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
