"""Reading the authors' released checkpoints (`daclip_ViT-B-32.pt`, `universal-ir.pth`, ...) into our models.

Each converter pops every key it understands and fails loudly on anything left over or missing, so a
wrong or partial file never loads silently.
"""
from __future__ import annotations

# ---------------------------------------------------------------------------------------------------
# DA-CLIP (`*.pt`)
# ---------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------
# Restoration UNet (`*.pth`)
# ---------------------------------------------------------------------------------------------------
