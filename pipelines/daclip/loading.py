"""What is at this path? The one answer for every front door: Python, the CLI, the ComfyUI loaders and
the training scripts all load models through `load_daclip`, `load_unet` and `load_pipeline`.

| source (a path, or a Hub id)                              | `load_daclip`  | `load_unet`            | `load_pipeline`               |
| --------------------------------------------------------- | -------------- | ---------------------- | ----------------------------- |
| the authors' `.pt`/`.pth` (+ a same-name `.json` config)  | the DA-CLIP    | the UNet               | refused: "is a file"          |
| a single `.safetensors` file (authors' or our key names)  | the DA-CLIP    | the UNet               | refused: "is a file"          |
| a model folder (`config.json`, e.g. `train_daclip.py`'s)  | a DACLIPModel  | a DACLIPUNet2DModel    | refused: names the model      |
| a pipeline folder (`model_index.json`; `train_unet.py`'s, | its `daclip/`  | its `unet/` + scheduler| the pipeline                  |
|   the bundled demo model)                                 |                |                        |                               |
| a run's `checkpoint-N/` (`daclip/` or `unet/` inside)      | its `daclip/`  | its `unet/` (+ the     | the checkpoint's UNet with the|
|                                                           |                |   run's scheduler)     |   DA-CLIP the run trained with|
| `owner/name` that is not a local path                      | Hub repo       | Hub repo               | Hub repo                      |

Everything else (a missing path, a folder or file in another format, the other component) raises one
`CheckpointError` that says what the source is; `error.found` names the other kind ("daclip", "unet",
"file") so each front end can add its own "load it with …" advice. A string goes to the Hub only when it
has the form `owner/name` and is not a local path; `HF_HUB_OFFLINE=1` is honoured (only the cache is read).
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch

from ...utils.checkpoint_io import CheckpointError, load_torch_checkpoint, read_json

logger = logging.getLogger("daclip")

PIPELINE_MARKER, COMPONENT_MARKER, SCHEDULER_MARKER = "model_index.json", "config.json", "scheduler_config.json"
WEIGHTS_STEM = "diffusion_pytorch_model"  # diffusers' weight file name: <stem>[.<variant>].safetensors
# What the training scripts write (scripts/training_utils.py): `checkpoint-<step>/` folders holding the trained
# model as a save_pretrained folder (`daclip/` or `unet/`), and the run's arguments in `logs/config.json`.
CHECKPOINT_PATTERN = re.compile(r"checkpoint-(\d+)")
RUN_CONFIG = Path("logs", "config.json")
COMPONENT_FOLDERS = {"daclip": "DACLIPModel", "unet": "DACLIPUNet2DModel"}
# Suffixes that make a string a file name, never a Hub id.
FILE_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".json", ".onnx", ".gguf", ".h5", ".keras", ".zip", ".npz"}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
Source = Union[str, os.PathLike]


@dataclass(frozen=True)
class ModelSource:
    """What `identify` found. `kind`: "file", "pipeline", "component", "checkpoint", "run" or "hub";
    `component`: for a model folder or a checkpoint, the model it holds ("daclip" or "unet")."""

    kind: str
    path: str
    component: Optional[str] = None


def looks_like_hub_id(text: str) -> bool:
    """`owner/name` (one slash, no leading `.`, `/` or `~`, no file suffix) that is not a local path."""
    return (
        not os.path.exists(text)
        and _HUB_ID.fullmatch(text) is not None
        and ".." not in text
        and os.path.splitext(text)[1].lower() not in FILE_SUFFIXES
    )


def identify(source: Source) -> ModelSource:
    """What is at `source`: a file, one of our folders, or a Hub id. Raises `CheckpointError` for a missing
    path and for a folder that is none of ours (naming what it looks like); files are identified when read."""
    path = os.fspath(source)
    if os.path.isfile(path):
        return ModelSource("file", path)
    if os.path.isdir(path):
        return _identify_folder(path)
    if looks_like_hub_id(path):
        return ModelSource("hub", path)
    if os.path.splitext(path)[1].lower() in FILE_SUFFIXES:
        raise CheckpointError(f"{path}: no such file")
    raise CheckpointError(f"{path}: no such folder (nor file; a Hub id has the form owner/name)")


def _identify_folder(path: str) -> ModelSource:
    folder = Path(path)
    if (folder / PIPELINE_MARKER).is_file():
        class_name = _class_name(read_json(folder / PIPELINE_MARKER, "model_index.json"))
        if class_name != "DACLIPPipeline":
            raise CheckpointError(f"{path}: a saved {class_name or 'diffusers'} folder, not a DA-CLIP pipeline.")
        return ModelSource("pipeline", path)
    if (folder / COMPONENT_MARKER).is_file():
        config = read_json(folder / COMPONENT_MARKER, "model config")
        class_name = _class_name(config)
        for component, expected in COMPONENT_FOLDERS.items():
            if class_name == expected:
                return ModelSource("component", path, component)
        raise CheckpointError(f"{path}: {_describe_foreign_config(config)}, not a DA-CLIP model.")
    held = [name for name in COMPONENT_FOLDERS if (folder / name / COMPONENT_MARKER).is_file()]
    if len(held) == 1:
        return ModelSource("checkpoint", path, held[0])
    if held:
        raise CheckpointError(f"{path}: has daclip/ and unet/ but no model_index.json: an incomplete pipeline folder.")
    if _checkpoints(folder):
        return ModelSource("run", path)
    raise CheckpointError(f"{path}: {_describe_foreign_folder(folder)}")


def check_weights_variant(folder: Source, variant: Optional[str] = None) -> None:
    """Raise `CheckpointError` naming the variants a model folder holds when the asked one is not there
    (`save_pretrained(d, variant="fp16")` writes `diffusion_pytorch_model.fp16.safetensors`)."""
    folder = Path(folder)
    if not folder.is_dir():
        return  # a Hub folder: diffusers resolves it
    names = [name for name in os.listdir(folder) if name.startswith(WEIGHTS_STEM + ".")]
    if not names or any(name.endswith(".index.json") for name in names):
        return  # no weights at all (diffusers says so) or sharded weights (diffusers resolves them)
    wanted = WEIGHTS_STEM + (f".{variant}" if variant else "")
    if any(os.path.splitext(name)[0] == wanted for name in names):
        return
    held = sorted({name.split(".")[1] for name in names if name.count(".") == 2})
    plain = any(name.count(".") == 1 for name in names)
    offer = ([] if not plain else ["no variant"]) + [f"variant={name!r}" for name in held]
    raise CheckpointError(f"{folder}: has no {'variant ' + repr(variant) if variant else 'weights without a variant'}; it holds {', '.join(offer)}.")


def _class_name(config: Dict[str, Any]) -> Optional[str]:
    name = config.get("_class_name")
    return name[-1] if isinstance(name, list) and name else name if isinstance(name, str) else None


def _describe_foreign_config(config: Dict[str, Any]) -> str:
    if _class_name(config):
        return f"a saved {_class_name(config)} (diffusers)"
    if config.get("architectures"):
        return f"a transformers model folder ({', '.join(map(str, config['architectures']))})"
    if "model_cfg" in config:
        return "an open_clip model folder (a CLIP without DA-CLIP's controller)"
    return "a folder whose config.json is not a diffusers model config"


def _describe_foreign_folder(folder: Path) -> str:
    names = sorted(entry.name for entry in folder.iterdir())
    if not names:
        return "an empty folder, not a model folder (expected model_index.json or config.json)"
    if "saved_model.pb" in names:
        return "a TensorFlow SavedModel folder, not a DA-CLIP model"
    if SCHEDULER_MARKER in names:
        return "a scheduler folder: it holds settings, no weights"
    weights = [name for name in names if os.path.splitext(name)[1].lower() in FILE_SUFFIXES - {".json"}]
    if weights:
        return f"a folder of model files, not a model folder: pass one of its files ({', '.join(weights[:4])})"
    return "a folder with no model in it (no model_index.json, config.json or checkpoint-N/)"


def _checkpoints(run: Path):
    found = [(int(m.group(1)), p) for p in run.iterdir() if p.is_dir() and (m := CHECKPOINT_PATTERN.fullmatch(p.name))]
    return [path for _, path in sorted(found)]


def _run_without_model(source: ModelSource) -> CheckpointError:
    checkpoints = _checkpoints(Path(source.path))
    return CheckpointError(
        f"{source.path}: a training run with no final model yet (still running, or stopped): load one of its "
        f"checkpoints, e.g. the latest, {checkpoints[-1]}."
    )


def _other_component(source: ModelSource, wanted: str) -> CheckpointError:
    names = {"daclip": "a DA-CLIP (DACLIPModel)", "unet": "a restoration UNet (DACLIPUNet2DModel)"}
    where = "a training checkpoint holding" if source.kind == "checkpoint" else "a model folder of"
    from .convert_original import OTHER_KIND_HINTS

    return CheckpointError(
        f"{source.path}: {where} {names[source.component]}, not {names[wanted]}.",
        found=source.component,
        hint=OTHER_KIND_HINTS[source.component],
    )


# ---------------------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------------------
def load_daclip(source: Source, config: Any = None, dtype: Optional[torch.dtype] = None, **hub_kwargs):
    """The DA-CLIP at `source` (any row of the module's table). `config`: an open_clip config for an authors'
    file whose shapes do not tell its architecture (default: the same-name JSON beside it). Raises
    `CheckpointError`."""
    from .modeling_daclip import DACLIPModel

    found = identify(source)
    if found.kind == "file":
        return DACLIPModel.from_original_checkpoint(found.path, config=config, dtype=dtype)
    if found.kind == "run":
        raise _run_without_model(found)
    if found.component not in (None, "daclip"):
        raise _other_component(found, "daclip")
    subfolder = None if found.kind == "component" else "daclip"
    model = _from_pretrained(DACLIPModel, found, subfolder, hub_kwargs)
    return model.to(dtype=dtype) if dtype is not None else model


def load_unet(source: Source, dtype: Optional[torch.dtype] = None, **hub_kwargs) -> Tuple[Any, Optional[Dict[str, Any]]]:
    """The restoration UNet at `source` and the scheduler config it was saved with (a pipeline folder's, a
    checkpoint's or its run's), or None when the source has none (the authors' files: use the authors'
    sampler settings, the scheduler's defaults). Raises `CheckpointError`."""
    from .unet_daclip import DACLIPUNet2DModel

    found = identify(source)
    if found.kind == "file":
        return DACLIPUNet2DModel.from_original_checkpoint(found.path, dtype=dtype), None
    if found.kind == "run":
        raise _run_without_model(found)
    if found.component not in (None, "unet"):
        raise _other_component(found, "unet")
    subfolder = None if found.kind == "component" else "unet"
    unet = _from_pretrained(DACLIPUNet2DModel, found, subfolder, hub_kwargs)
    if dtype is not None:
        unet = unet.to(dtype=dtype)
    return unet, _scheduler_config(found, hub_kwargs)


def load_pipeline(source: Source, dtype: Optional[torch.dtype] = None, **kwargs):
    """The `DACLIPPipeline` at `source`: a pipeline folder, a Hub id, or a `train_unet.py` checkpoint (its UNet
    with the DA-CLIP and scheduler of its run, a warning says so). `kwargs` go to `DACLIPPipeline.from_pretrained`.
    Raises `CheckpointError`: for a file (the authors' files come in pairs: `load_pipeline_from_parts`), a model
    folder of one component, or a checkpoint whose run does not tell which DA-CLIP it trained with."""
    from .pipeline_daclip import DACLIPPipeline

    found = identify(source)
    if found.kind in ("pipeline", "hub"):
        return _converting_hub_errors(found, lambda: DACLIPPipeline.from_pretrained(found.path, dtype=dtype, **kwargs))
    if found.kind == "file":
        load_torch_checkpoint(found.path)  # another format, an unsafe pickle, a Lightning .ckpt: named as such
        raise CheckpointError(
            f"{found.path}: is a file, not a pipeline folder.",
            found="file",
            hint="The authors' files come in pairs: load them with DACLIPPipeline.from_original_checkpoints(daclip_file, unet_file).",
        )
    if found.kind == "run":
        raise _run_without_model(found)
    if found.kind == "component" or found.component == "daclip":
        return _raise_one_component(found)
    return _checkpoint_pipeline(found, dtype, kwargs)


def load_pipeline_from_parts(daclip: Source, unet: Source, daclip_config: Any = None, dtype: Optional[torch.dtype] = None):
    """A `DACLIPPipeline` from a DA-CLIP source and a UNet source (each any row of the module's table), with the
    UNet source's scheduler if it has one, else the authors' sampler settings. Raises `CheckpointError`, and
    `ValueError` for a pair whose embedding sizes differ."""
    from .pipeline_daclip import DACLIPPipeline
    from .unet_daclip import check_components_match

    daclip_model = load_daclip(daclip, config=daclip_config)
    unet_model, scheduler_config = load_unet(unet)
    check_components_match(daclip_model, unet_model, os.fspath(daclip), os.fspath(unet))
    pipe = DACLIPPipeline(daclip=daclip_model, unet=unet_model, scheduler=scheduler_from_config(scheduler_config))
    return pipe.to(dtype=dtype) if dtype is not None else pipe


def scheduler_from_config(config: Optional[Dict[str, Any]]):
    """The scheduler a saved config names (one of the pipeline's compatible ones), or the authors' default."""
    from .pipeline_daclip import compatible_schedulers
    from ...schedulers import IRSDEPosteriorScheduler

    if config is None:
        return IRSDEPosteriorScheduler()
    by_name = {scheduler.__name__: scheduler for scheduler in compatible_schedulers()}
    return by_name.get(config.get("_class_name"), IRSDEPosteriorScheduler).from_config(config)


# ---------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------
def _raise_one_component(found: ModelSource):
    what = {"daclip": "a DA-CLIP", "unet": "a restoration UNet"}[found.component]
    other = {"daclip": "a restoration UNet", "unet": "a DA-CLIP"}[found.component]
    origin = "a training checkpoint" if found.kind == "checkpoint" else "a model folder"
    raise CheckpointError(
        f"{found.path}: {origin} holding {what} only, not a whole pipeline; it needs {other} beside it.",
        found=found.component,
        hint="Combine them with daclip.load_pipeline_from_parts(daclip=..., unet=...).",
    )


def _from_pretrained(model_class, found: ModelSource, subfolder: Optional[str], hub_kwargs: Dict[str, Any]):
    if found.kind != "hub":
        check_weights_variant(os.path.join(found.path, subfolder or ""), hub_kwargs.get("variant"))

    def load():
        return model_class.from_pretrained(found.path, subfolder=subfolder, **hub_kwargs)

    return _converting_hub_errors(found, load)


def _converting_hub_errors(found: ModelSource, load):
    """Run `load`; a Hub or folder failure becomes a `CheckpointError` naming the source (our own errors pass)."""
    try:
        return load()
    except CheckpointError:
        raise
    except (OSError, ValueError) as error:
        if isinstance(error, ValueError) and found.kind != "hub":
            raise
        if found.kind != "hub":
            raise CheckpointError(f"{found.path}: {_first_line(error)}") from None
        offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
        reason = (
            "not a local path, and as a Hub id it is not in the local cache (HF_HUB_OFFLINE is set)"
            if offline
            else f"not a local path, and the Hub did not provide it ({_first_line(error)})"
        )
        raise CheckpointError(f"{found.path}: {reason}") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _scheduler_config(found: ModelSource, hub_kwargs: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    from ...schedulers import IRSDEPosteriorScheduler

    if found.kind == "component":
        return None
    candidates = [found.path]
    if found.kind == "checkpoint":
        run = Path(found.path).parent
        candidates = [found.path] + ([str(run)] if (run / PIPELINE_MARKER).is_file() else [])
    for folder in candidates:
        if found.kind == "hub" or (Path(folder) / "scheduler" / SCHEDULER_MARKER).is_file():
            return _converting_hub_errors(
                found, lambda: dict(IRSDEPosteriorScheduler.load_config(folder, subfolder="scheduler", **hub_kwargs))
            )
    if found.kind == "checkpoint":
        logger.warning(
            "%s has no scheduler settings (a checkpoint of an older train_unet.py) and its run has no final "
            "pipeline: sampling uses the authors' settings; if the run changed them (--num_train_timesteps, "
            "--max_sigma, --prediction_type, ...), the results will be wrong.", found.path
        )
    return None


def _recorded_run_arguments(checkpoint: Path) -> Dict[str, Any]:
    path = checkpoint.parent / RUN_CONFIG
    return read_json(path, "training run record") if path.is_file() else {}


def _checkpoint_pipeline(found: ModelSource, dtype, kwargs):
    """A `train_unet.py` checkpoint as a pipeline: the checkpoint's UNet, with the DA-CLIP of the run's final
    pipeline, else the DA-CLIP its recorded arguments name (`--pretrained_model` / `--daclip_model`)."""
    from .pipeline_daclip import DACLIPPipeline

    checkpoint, run = Path(found.path), Path(found.path).parent
    unet, scheduler_config = load_unet(found.path)
    if (run / PIPELINE_MARKER).is_file():
        logger.warning("%s: using its UNet with the DA-CLIP and scheduler of the run's pipeline in %s", checkpoint, run)
        return DACLIPPipeline.from_pretrained(run, unet=unet, dtype=dtype, **kwargs)
    dtype = dtype or kwargs.pop("torch_dtype", None)
    if kwargs:
        raise TypeError(f"{checkpoint}: a checkpoint of a run without a final pipeline takes only dtype, not {', '.join(kwargs)}.")
    recorded = _recorded_run_arguments(checkpoint)
    daclip_source = recorded.get("pretrained_model") or recorded.get("daclip_model")
    if not daclip_source:
        raise CheckpointError(
            f"{checkpoint}: a training checkpoint holding a restoration UNet only, and its run ({run}) has no final "
            f"pipeline and no record ({RUN_CONFIG}) of the DA-CLIP it trained with.",
            found="unet",
            hint="Combine it with that DA-CLIP: daclip.load_pipeline_from_parts(daclip=..., unet=checkpoint).",
        )
    if not os.path.exists(daclip_source) and not looks_like_hub_id(daclip_source):
        raise CheckpointError(
            f"{checkpoint}: a training checkpoint holding a restoration UNet only; its run trained with the DA-CLIP "
            f"{daclip_source}, which is not there any more (a path relative to where training ran?).",
            found="unet",
            hint="Combine it with that DA-CLIP: daclip.load_pipeline_from_parts(daclip=..., unet=checkpoint).",
        )
    logger.warning("%s: using its UNet with the DA-CLIP its run trained with, %s", checkpoint, daclip_source)
    daclip = load_daclip(daclip_source, config=None if recorded.get("pretrained_model") else recorded.get("daclip_config"))
    pipe = DACLIPPipeline(daclip=daclip, unet=unet, scheduler=scheduler_from_config(scheduler_config))
    return pipe.to(dtype=dtype) if dtype is not None else pipe
