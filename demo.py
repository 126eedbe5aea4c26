"""The small demo model bundled in `assets/demo-model`: restores out of the box, with no download.

It is a toy next to the authors' released weights (a random frozen CLIP, a 2.3M-parameter UNet, five synthetic
degradation types); README's "Demo model" section says how it was trained and how well it does. The CLI uses it
when no model is given.
"""
from pathlib import Path

DEMO_MODEL_DIR = Path(__file__).resolve().parent / "assets" / "demo-model"


def demo_model_path() -> Path:
    """The bundled demo pipeline folder (for `DACLIPPipeline.from_pretrained`); a clear error if it is missing."""
    if not (DEMO_MODEL_DIR / "model_index.json").is_file():
        raise FileNotFoundError(
            f"the bundled demo model is missing ({DEMO_MODEL_DIR}); reinstall daclip, or rebuild it with "
            "scripts/demo/train_demo_model.sh"
        )
    return DEMO_MODEL_DIR
