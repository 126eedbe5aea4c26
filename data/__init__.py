"""Training data: degradation synthesis and datasets (the authors' paired layout, on-the-fly synthetic pairs,
DA-CLIP caption CSVs)."""
from .datasets import (
    CLEAN_LABEL,
    CaptionDataset,
    PairedDegradationDataset,
    SyntheticDegradationDataset,
    UnpairedImagesError,
    write_caption_csv,
)
from .degradations import DEGRADATION_FUNCTIONS, SYNTHESISABLE, degrade, random_stroke_mask
from .procedural import dead_leaves

__all__ = [
    "CLEAN_LABEL",
    "CaptionDataset",
    "DEGRADATION_FUNCTIONS",
    "PairedDegradationDataset",
    "SYNTHESISABLE",
    "SyntheticDegradationDataset",
    "UnpairedImagesError",
    "dead_leaves",
    "degrade",
    "random_stroke_mask",
    "write_caption_csv",
]
