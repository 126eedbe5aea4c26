"""The small demo model that ships in `assets/demo-model/` (see README, "Demo model"), so that the project restores
and detects on a fresh machine with no download.

It is a whole `DACLIPPipeline` (a small DA-CLIP and a small restoration UNet) trained with this project's own
scripts on synthetic degradations (hazy, low-light, noisy, rainy, snowy, jpeg-compressed) of scikit-image's photos
and dead-leaves images, as `scripts/demo/train_demo_model.sh` does. `daclip restore` and `daclip detect` use it when no model is given, and
the ComfyUI loaders list it as `demo-model/`.
"""
from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
DEMO_MODEL_DIR = ASSETS_DIR / "demo-model"
BUILD_SCRIPT = "scripts/demo/train_demo_model.sh"


def demo_model_path() -> Path:
    """The demo pipeline folder (for `DACLIPPipeline.from_pretrained`); a clear error if it has not been built."""
    if not (DEMO_MODEL_DIR / "model_index.json").is_file():
        raise FileNotFoundError(f"there is no demo model at {DEMO_MODEL_DIR} (build it with {BUILD_SCRIPT})")
    return DEMO_MODEL_DIR


def demo_daclip_path() -> Path:
    """The demo pipeline's DA-CLIP folder (for `DACLIPModel.from_pretrained`)."""
    return demo_model_path() / "daclip"
