"""What a dataset on disk holds: split sizes, class histogram, one sample's shapes.

The fastest way for a user to check a download: :func:`dataset_summary` builds each split
through the same builders training uses, so every layout problem surfaces as the same one-line
error training would give, before any model is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import SpikesegError
from ..progress import progress as progress_bar
from .base import IGNORE_INDEX, build_dataset, dataset_accepts

__all__ = ["SplitSummary", "dataset_summary"]


@dataclass
class SplitSummary:
    """One split of a dataset, as :func:`dataset_summary` found it."""

    split: str
    size: int
    scanned: int
    """Samples whose labels entered the histogram (all, or the first ``max_samples``)."""
    pixels: np.ndarray = field(repr=False)
    """Labelled pixels per class over the scanned samples, ``int64 [num_classes]``."""
    ignored: int = 0
    """Pixels labelled 255 (ignore)."""
    input_shape: tuple[int, ...] = ()
    input_dtype: str = ""
    input_range: tuple[float, float] = (0.0, 0.0)
    label_shape: tuple[int, ...] = ()
    label_dtype: str = ""

    def as_dict(self, class_names: Sequence[str]) -> dict[str, Any]:
        total = int(self.pixels.sum())
        return {
            "split": self.split, "size": self.size, "scanned": self.scanned,
            "class_pixels": {n: int(c) for n, c in zip(class_names, self.pixels, strict=True)},
            "class_fraction": {n: (int(c) / total if total else 0.0)
                               for n, c in zip(class_names, self.pixels, strict=True)},
            "ignored_pixels": self.ignored,
            "input_shape": list(self.input_shape), "input_dtype": self.input_dtype,
            "input_range": list(self.input_range), "label_shape": list(self.label_shape),
            "label_dtype": self.label_dtype,
        }


def dataset_summary(
    name: str,
    root: str | None = None,
    *,
    splits: Sequence[str] = ("train", "val"),
    image_size: int | Sequence[int] = 64,
    timesteps: int | None = None,
    options: dict[str, Any] | None = None,
    max_samples: int | None = 200,
    progress: bool = True,
) -> dict[str, Any]:
    """Build each split of dataset ``name`` and describe it.

    Args:
        name: a registered dataset name.
        root: its folder.
        splits: which splits to read.
        image_size: as in the data config.
        timesteps: frames per sample for event datasets (passed when the builder takes it).
        options: dataset options, as ``data.options`` in a config.
        max_samples: scan the labels of at most this many samples per split (evenly spread);
            ``None`` scans all.

    Returns:
        ``{"dataset", "root", "resolved_root" (the folder read), "num_classes", "class_names",
        "in_channels", "temporal",
        "splits": [SplitSummary.as_dict(...)]}``.

    Raises:
        SpikesegError: the dataset cannot be read (with the builder's one-line reason).
    """
    opts = dict(options or {})
    if timesteps is not None and "timesteps" not in opts and dataset_accepts(name, "timesteps"):
        opts["timesteps"] = int(timesteps)
    size = tuple(image_size) if isinstance(image_size, (list, tuple)) else (int(image_size),) * 2
    info = None
    out = []
    resolved: str | None = None
    for split in splits:
        ds = build_dataset(name, split, root=root, image_size=size, **opts)
        info = ds.info
        where = getattr(ds, "root", None) or getattr(ds, "cache_path", None)
        if resolved is None and where is not None:
            p = Path(where)
            resolved = str(p.parent if p.suffix else p)
        n = len(ds)
        if max_samples is None or max_samples >= n:
            idx = list(range(n))
        else:
            idx = sorted({int(i) for i in np.linspace(0, n - 1, max_samples)})
        k = info.num_classes
        pixels = np.zeros(k, dtype=np.int64)
        ignored = 0
        first: tuple[torch.Tensor, torch.Tensor] | None = None
        lo, hi = float("inf"), float("-inf")
        for i in progress_bar(idx, desc=f"{name} {split}", disable=not progress):
            x, y = ds[i]
            if first is None:
                first = (x, y)
            lo, hi = min(lo, float(x.min())), max(hi, float(x.max()))
            y = y.reshape(-1)
            ignored += int((y == IGNORE_INDEX).sum())
            valid = y[y != IGNORE_INDEX]
            if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= k):
                raise SpikesegError(
                    f"{name} {split} sample {i}: label values outside 0..{k - 1} (and 255)"
                )
            pixels += np.bincount(valid.numpy(), minlength=k)[:k]
        s = SplitSummary(split, n, len(idx), pixels, ignored)
        if first is not None:
            x, y = first
            s.input_shape, s.input_dtype = tuple(x.shape), str(x.dtype).removeprefix("torch.")
            s.input_range = (lo, hi)
            s.label_shape, s.label_dtype = tuple(y.shape), str(y.dtype).removeprefix("torch.")
        out.append(s)
    assert info is not None
    return {
        "dataset": name, "root": None if root is None else str(root),
        "resolved_root": resolved,
        "num_classes": info.num_classes, "class_names": list(info.class_names),
        "in_channels": info.in_channels, "temporal": info.temporal,
        "splits": [s.as_dict(info.class_names) for s in out],
    }
