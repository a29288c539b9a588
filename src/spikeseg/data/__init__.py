"""Datasets: the interface, the registry, and the datasets that ship with spikeseg."""

from .base import (
    IGNORE_INDEX,
    DatasetInfo,
    SegmentationDataset,
    build_dataset,
    default_palette,
    list_datasets,
    register_dataset,
)
from . import builtin  # noqa: E402,F401  (registers "builtin")

__all__ = [
    "IGNORE_INDEX",
    "DatasetInfo",
    "SegmentationDataset",
    "build_dataset",
    "default_palette",
    "list_datasets",
    "register_dataset",
]
