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

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from ..errors import SpikesegError

IGNORE_INDEX = 255
"""Label value of pixels ignored by the loss and the metrics (PASCAL VOC convention)."""


TABLEAU_10 = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)
"""Tableau 10, the qualitative palette that is matplotlib's ``tab10`` (blue, orange, green,
red, purple, brown, pink, grey, olive, cyan): classes 1-10 of :func:`categorical_palette`."""

BACKGROUND_COLOUR = (0, 0, 0)
"""Class 0 (background) in :func:`categorical_palette`: black, which no class uses."""

IGNORE_COLOUR = (224, 224, 192)
"""Label 255 (:data:`IGNORE_INDEX`) in every palette: PASCAL VOC's cream boundary colour."""


def voc_palette(num_classes: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map (bit-interleaved), ``uint8 [max(num_classes, 256), 3]``.

    Class ``i`` takes bits ``3j, 3j+1, 3j+2`` of ``i`` as bit ``7 − j`` of red, green and blue
    (the devkit's ``VOClabelcolormap``). Class 0 is black; 255 (ignore) is the VOC cream colour
    (224, 224, 192). Kept for VOC, whose published figures use it; its colours are poor for
    other class sets (e.g. classes 1, 8 and 9 are three reds, 8 = (64, 0, 0) nearly black).
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
    palette[IGNORE_INDEX] = IGNORE_COLOUR
    return palette


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIE L*a*b* (D65 white) of sRGB colours ``uint8 [..., 3]`` (or floats in 0-255).

    sRGB is linearised (``c/12.92`` below 0.04045, else ``((c + 0.055)/1.055)^2.4``), taken to
    XYZ by the sRGB matrix and to L*a*b* by the CIE formulas; the CIE76 colour difference is
    then the Euclidean distance ``ΔE = ‖Lab₁ − Lab₂‖`` (about 2.3 is just noticeable).
    """
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124564, 0.3575761, 0.1804375],
                  [0.2126729, 0.7151522, 0.0721750],
                  [0.0193339, 0.1191920, 0.9503041]])
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883])
    d = 6.0 / 29.0
    f = np.where(xyz > d**3, np.cbrt(xyz), xyz / (3 * d * d) + 4.0 / 29.0)
    return np.stack([116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]),
                     200.0 * (f[..., 1] - f[..., 2])], axis=-1)


@functools.lru_cache(maxsize=4)
def _categorical(n: int) -> np.ndarray:
    colours = [BACKGROUND_COLOUR, *TABLEAU_10]
    levels = np.arange(0, 256, 17)  # a 16-level sRGB grid of candidates
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
    lab = srgb_to_lab(grid)
    # distance of every candidate to the nearest colour taken so far (and to the ignore colour)
    near = np.full(len(grid), np.inf)
    for c in (*colours, IGNORE_COLOUR):
        near = np.minimum(near, np.linalg.norm(lab - srgb_to_lab(np.array(c)), axis=1))
    while len(colours) < n:
        k = int(np.argmax(near))  # Glasbey et al. (2007): the farthest from all taken
        colours.append(tuple(int(v) for v in grid[k]))
        near = np.minimum(near, np.linalg.norm(lab - lab[k], axis=1))
    palette = np.asarray(colours[:n], dtype=np.uint8)
    palette[IGNORE_INDEX] = IGNORE_COLOUR
    palette.setflags(write=False)
    return palette


def categorical_palette(num_classes: int) -> np.ndarray:
    """Colours a reader tells apart, ``uint8 [max(num_classes, 256), 3]``; 255 = ignore.

    Class 0 (background) is black (:data:`BACKGROUND_COLOUR`), classes 1-10 are Tableau 10
    (:data:`TABLEAU_10`, matplotlib's ``tab10``), and every further class takes, from a
    16-level sRGB grid, the colour farthest in CIE76 ΔE (:func:`srgb_to_lab`) from all colours
    before it and from the ignore colour (the greedy construction of Glasbey et al., "Colour
    displays for categorical images", 2007). Up to 48 classes the colours are at least ΔE 27
    apart (closest: Tableau's purple and pink), up to 64 at least ΔE 24. The colours of the first
    classes do not depend on ``num_classes``. 255 (ignore) is :data:`IGNORE_COLOUR`.
    """
    return _categorical(max(int(num_classes), 256)).copy()


def default_palette(num_classes: int) -> np.ndarray:
    """The palette of a dataset that has no published one: :func:`categorical_palette`.

    ``uint8 [max(num_classes, 256), 3]``. Datasets with published colours set their own
    (VOC: :func:`voc_palette`; DDD17 and DSEC: Cityscapes'). It used to be the VOC colour map
    for every dataset, whose first classes are hard to tell apart (see :func:`voc_palette`).
    """
    return categorical_palette(num_classes)


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
    """``uint8 [>= 256, 3]`` colour of each class id (255 = ignore); default
    :func:`dataset_palette` of ``name``."""
    on_off_channels: tuple[int, int] | None = None
    """Input channels holding the ON and the OFF event counts, in that order, for pictures:
    ``(1, 0)`` for count frames (:func:`spikeseg.encoding.events.to_count_frames`, Tonic's
    order), ``(0, 1)`` for DDD17's stored EV-SegNet tensors; None for images and voxel grids."""

    def __post_init__(self) -> None:
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"{self.name}: {len(self.class_names)} class names for {self.num_classes} classes"
            )
        if self.palette is None:
            self.palette = dataset_palette(self.name, self.num_classes)


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
_PALETTES: dict[str, Callable[[int], np.ndarray]] = {}


def register_dataset(
    name: str, *, palette: Callable[[int], np.ndarray] | None = None
) -> Callable:
    """Decorator: register a dataset builder ``fn(split, root=None, **options)`` under ``name``.

    Args:
        name: the dataset's name (configs, checkpoints, the CLI).
        palette: ``palette(num_classes) -> uint8 [>= 256, 3]``, the dataset's published class
            colours (e.g. :func:`voc_palette`), so that pictures of a checkpoint's predictions
            use them without building the dataset (:func:`dataset_palette`). Default:
            :func:`default_palette`.
    """

    def wrap(fn: Callable[..., SegmentationDataset]) -> Callable[..., SegmentationDataset]:
        if name in _DATASETS:
            raise ValueError(f"dataset {name!r} is already registered")
        _DATASETS[name] = fn
        if palette is not None:
            _PALETTES[name] = palette
        return fn

    return wrap


def dataset_palette(name: str | None, num_classes: int) -> np.ndarray:
    """The class colours of dataset ``name`` (registered with it), else :func:`default_palette`.

    Returns:
        ``uint8 [max(num_classes, 256), 3]``, a fresh array.
    """
    fn = _PALETTES.get(name or "", default_palette)
    return np.array(fn(num_classes), dtype=np.uint8)


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
