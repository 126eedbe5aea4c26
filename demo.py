"""The small demo models that ship in `assets/` (see README, "Demo model"), so that the project does something
on a fresh machine with no download.

- `assets/demo-daclip/`: a `DACLIPModel` trained with `scripts/train_daclip.py` to tell five synthetic
  degradations apart (hazy, low-light, noisy, rainy, snowy). `daclip detect` uses it when no model is given.
- `assets/demo-model/`: a whole `DACLIPPipeline` (DA-CLIP + restoration UNet), built by
  `scripts/demo/train_demo_model.sh`. Not bundled yet: no UNet trained for the time a CPU session allows restores
  reliably (README, "Demo model", says what was tried). When it is there, `daclip restore` uses it if no model is given and the ComfyUI
  loaders list it as `demo-model/`.
"""
from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
DEMO_MODEL_DIR = ASSETS_DIR / "demo-model"
DEMO_DACLIP_DIR = ASSETS_DIR / "demo-daclip"
BUILD_SCRIPT = "scripts/demo/train_demo_model.sh"


def demo_model_path() -> Path:
    """The demo pipeline folder (for `DACLIPPipeline.from_pretrained`); a clear error if it has not been built."""
    if not (DEMO_MODEL_DIR / "model_index.json").is_file():
        raise FileNotFoundError(f"there is no demo restoration model at {DEMO_MODEL_DIR} (build it with {BUILD_SCRIPT})")
    return DEMO_MODEL_DIR


def demo_daclip_path() -> Path:
    """The bundled demo DA-CLIP (for `DACLIPModel.from_pretrained`): the one in the demo pipeline when that has
    been built, else `assets/demo-daclip`."""
    if (DEMO_MODEL_DIR / "daclip" / "config.json").is_file():
        return DEMO_MODEL_DIR / "daclip"
    if (DEMO_DACLIP_DIR / "config.json").is_file():
        return DEMO_DACLIP_DIR
    raise FileNotFoundError(f"there is no demo DA-CLIP at {DEMO_DACLIP_DIR} (build it with {BUILD_SCRIPT})")
