"""The dataset interface every spikeseg dataset follows, and a registry of datasets by name.

A segmentation dataset is a :class:`torch.utils.data.Dataset` whose items are pairs
``(image, label)``:

* ``image``: ``float32`` tensor ``[C, H, W]`` for static images (values in ``[0, 1]``), or
  ``[T, C, H, W]`` for event frames (T frames ending at the labelled one);
* ``label``: ``int64`` tensor ``[H, W]`` of class ids in ``[0, num_classes)``, or
  :data:`IGNORE_INDEX` (255) for pixels that take no part in the loss or the metrics.

Each dataset also describes itself (:class:`DatasetInfo`): class names, number of input
channels, whether its samples are already time series, and a colour palette for pictures.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from ..errors import SpikesegError

IGNORE_INDEX = 255
"""Label value of pixels ignored by the loss and the metrics (PASCAL VOC convention)."""


def default_palette(num_classes: int) -> np.ndarray:
    """The PASCAL VOC colour map (bit-interleaved), ``uint8 [max(num_classes, 256), 3]``.

    Class 0 is black; 255 (ignore) is the VOC cream colour (224, 224, 192).
    """
    n = max(num_classes, 256)
    palette = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette[i] = (r, g, b)
    palette[IGNORE_INDEX] = (224, 224, 192)
    return palette


@dataclass
class DatasetInfo:
    """What a model and a report need to know about a dataset."""

    name: str
    num_classes: int
    class_names: list[str]
    in_channels: int
    temporal: bool = False
    """True when samples are already time series ``[T, C, H, W]`` (event frames)."""
    palette: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"{self.name}: {len(self.class_names)} class names for {self.num_classes} classes"
            )
        if self.palette is None:
            self.palette = default_palette(self.num_classes)


class SegmentationDataset(Dataset):
    """Base class: subclasses set ``self.info`` and implement ``__len__``/``__getitem__``."""

    info: DatasetInfo

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    @property
    def class_names(self) -> list[str]:
        return self.info.class_names


_DATASETS: dict[str, Callable[..., SegmentationDataset]] = {}


def register_dataset(name: str) -> Callable:
    """Decorator: register a dataset builder ``fn(split, root=None, **options)`` under ``name``."""

    def wrap(fn: Callable[..., SegmentationDataset]) -> Callable[..., SegmentationDataset]:
        if name in _DATASETS:
            raise ValueError(f"dataset {name!r} is already registered")
        _DATASETS[name] = fn
        return fn

    return wrap


def list_datasets() -> list[str]:
    """Names of the registered datasets, sorted."""
    return sorted(_DATASETS)


def dataset_accepts(name: str, option: str) -> bool:
    """Whether the builder of dataset ``name`` takes keyword ``option`` (e.g. ``timesteps``)."""
    if name not in _DATASETS:
        return False
    params = inspect.signature(_DATASETS[name]).parameters
    return option in params


def build_dataset(name: str, split: str, root: str | None = None, **options: Any) -> SegmentationDataset:
    """Build the ``split`` (``"train"`` or ``"val"``) of dataset ``name``.

    Raises:
        SpikesegError: unknown dataset name, or (from the builder) a problem with the data.
    """
    if name not in _DATASETS:
        raise SpikesegError(
            f"unknown dataset {name!r}; choose one of: {', '.join(list_datasets())}"
        )
    builder = _DATASETS[name]
    params = inspect.signature(builder).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        valid = [p for p in params if p not in ("split", "root")]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise SpikesegError(
                f"dataset {name!r} has no option {', '.join(map(repr, unknown))}; "
                f"valid options: {', '.join(valid)}"
            )
    return builder(split=split, root=root, **options)
