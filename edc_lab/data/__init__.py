"""Data layer: the canonical sample, synthetic scenes, clouds, readers, torch datasets, transforms."""

from edc_lab.data.sample import (
    IGNORE_INDEX,
    M3MCR_CLASSES,
    M3MCR_COLORS,
    OPTICAL_BANDS,
    WHU_CLASSES,
    WHU_COLORS,
    DataError,
    from_torch,
    make_sample,
    to_torch,
)
