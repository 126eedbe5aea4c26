"""Training data: degradation synthesis and datasets (the authors' paired layout, on-the-fly synthetic pairs,
DA-CLIP caption CSVs)."""
from .datasets import (
    CaptionDataset,
    PairedDegradationDataset,
    SyntheticDegradationDataset,
    UnpairedImagesError,
    write_caption_csv,
)
from .degradations import DEGRADATION_FUNCTIONS, SYNTHESISABLE, degrade, random_stroke_mask

__all__ = [
    "CaptionDataset",
    "DEGRADATION_FUNCTIONS",
    "PairedDegradationDataset",
    "SYNTHESISABLE",
    "SyntheticDegradationDataset",
    "UnpairedImagesError",
    "degrade",
    "random_stroke_mask",
    "write_caption_csv",
]
