"""Datasets: the interface, the registry, and the datasets that ship with spikeseg."""

# Importing a dataset module registers its builders.
from . import (
    builtin,  # noqa: F401  ("builtin")
    builtin_events,  # noqa: F401  ("builtin_events")
    ddd17,  # noqa: F401  ("ddd17")
    dsec,  # noqa: F401  ("dsec")
    mnist_cifar,  # noqa: F401  ("mnist_cifar")
    voc,  # noqa: F401  ("voc")
)
from .base import (
    IGNORE_INDEX,
    DatasetInfo,
    SegmentationDataset,
    build_dataset,
    categorical_palette,
    dataset_accepts,
    dataset_palette,
    default_palette,
    list_datasets,
    register_dataset,
    voc_palette,
)

__all__ = [
    "IGNORE_INDEX",
    "DatasetInfo",
    "SegmentationDataset",
    "build_dataset",
    "categorical_palette",
    "dataset_accepts",
    "dataset_palette",
    "default_palette",
    "list_datasets",
    "register_dataset",
    "voc_palette",
]
