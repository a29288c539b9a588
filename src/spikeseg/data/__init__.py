"""Datasets: the interface, the registry, and the datasets that ship with spikeseg."""

from . import builtin  # noqa: E402,F401  (registers "builtin")
from .base import (
    IGNORE_INDEX,
    DatasetInfo,
    SegmentationDataset,
    build_dataset,
    dataset_accepts,
    default_palette,
    list_datasets,
    register_dataset,
)

__all__ = [
    "IGNORE_INDEX",
    "DatasetInfo",
    "SegmentationDataset",
    "build_dataset",
    "dataset_accepts",
    "default_palette",
    "list_datasets",
    "register_dataset",
]
