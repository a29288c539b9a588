"""Class-weighted cross-entropy (``train.class_weight``): weights from the training labels.

Segmentation sets are dominated by background (on the built-in sets about 85% of the
pixels), and a network trained on the plain pixel-wise cross-entropy of eq. (5) under-calls
the rare classes: the spiking models here miss digit pixels (a recall gap, docs/accuracy.md).
A weighted cross-entropy counts each labelled pixel ``i`` with ``w[y_i]``:

.. math::

    L = \\frac{1}{N} \\sum_i w_{y_i}\\, \\mathrm{CE}(o_i, y_i)

with ``N`` the number of labelled pixels (as in eq. (5), so under torchrun N processes still
compute one process's step). The named schemes take the class frequencies ``f_c`` of the
training labels and are normalised so that ``Σ_c f_c w_c = 1``: the average pixel still counts
once, so the loss keeps eq. (5)'s scale and the paper's learning rate carries over.

* ``median_freq``: ``w_c ∝ median(f) / f_c`` (median-frequency balancing, Eigen & Fergus
  2015, as in SegNet);
* ``inv_sqrt_freq``: ``w_c ∝ 1 / sqrt(f_c)``, a milder balance;
* a list of one positive number per class: used as given (not normalised).

A class absent from the scanned labels gets the largest weight of the present ones. The
frequencies come from up to :data:`SCAN_SAMPLES` training samples spread evenly over the split
(the same samples in every process and on resume, so the weights are too).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import IGNORE_INDEX
from ..errors import SpikesegError
from ..io import atomic_write_text

__all__ = ["SCHEMES", "SCAN_SAMPLES", "label_frequencies", "class_weights", "weights_for",
           "write_class_weights"]

SCHEMES = ("median_freq", "inv_sqrt_freq")
SCAN_SAMPLES = 512
"""Training samples whose labels are counted for the class frequencies (all, if fewer)."""


def label_frequencies(dataset: Any, num_classes: int, max_samples: int = SCAN_SAMPLES,
                      ) -> np.ndarray:
    """``float64 [num_classes]``: each class's share of the labelled pixels of up to
    ``max_samples`` samples of ``dataset`` (items ``(input, label)``), spread evenly."""
    n = len(dataset)
    if n == 0:
        raise SpikesegError("train.class_weight: the training split is empty")
    idx = np.unique(np.linspace(0, n - 1, min(n, max_samples)).round().astype(np.int64))
    counts = np.zeros(num_classes, dtype=np.int64)
    for i in idx:
        y = torch.as_tensor(dataset[int(i)][1]).reshape(-1)
        y = y[y != IGNORE_INDEX]
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            bad = int(y[(y < 0) | (y >= num_classes)][0])
            raise SpikesegError(
                f"train.class_weight: training sample {int(i)} has label {bad}, outside the "
                f"classes 0..{num_classes - 1} (255 = ignore); check the dataset's labels")
        counts += torch.bincount(y.long(), minlength=num_classes).numpy()
    total = counts.sum()
    if total == 0:
        raise SpikesegError("train.class_weight: the scanned training labels have no labelled "
                            "pixel (all 255)")
    return counts / total


def class_weights(scheme: str, freqs: np.ndarray) -> np.ndarray:
    """The weights of a named scheme (:data:`SCHEMES`) for class frequencies ``freqs``,
    normalised to ``Σ f_c w_c = 1`` (see the module docstring)."""
    f = np.asarray(freqs, dtype=np.float64)
    present = f > 0
    if not present.any():
        raise SpikesegError("train.class_weight: no class has labelled pixels")
    w = np.zeros_like(f)
    if scheme == "median_freq":
        w[present] = np.median(f[present]) / f[present]
    elif scheme == "inv_sqrt_freq":
        w[present] = 1.0 / np.sqrt(f[present])
    else:
        raise SpikesegError(f"train.class_weight: unknown scheme {scheme!r} (one of "
                            f"{', '.join(SCHEMES)}, a list of weights, or null)")
    w[~present] = w[present].max()
    return w / float((f * w).sum())


def weights_for(spec: Any, dataset: Any, num_classes: int) -> tuple[torch.Tensor, np.ndarray | None]:
    """``(weights, frequencies)`` for ``train.class_weight = spec`` (a scheme name or a list;
    frequencies are None for a list)."""
    if isinstance(spec, str):
        freqs = label_frequencies(dataset, num_classes)
        return torch.tensor(class_weights(spec, freqs), dtype=torch.float32), freqs
    w = [float(v) for v in spec]
    if len(w) != num_classes:
        raise SpikesegError(
            f"train.class_weight has {len(w)} weights but the dataset has {num_classes} "
            f"classes: give one weight per class (or median_freq / inv_sqrt_freq)")
    return torch.tensor(w, dtype=torch.float32), None


def write_class_weights(path: Path, spec: Any, class_names: list[str], weights: torch.Tensor,
                        freqs: np.ndarray | None) -> None:
    """The run's weights (and the frequencies they came from) as JSON beside its config."""
    rows = []
    for i, (name, w) in enumerate(zip(class_names, weights.tolist(), strict=True)):
        rows.append({"name": name, "weight": float(w)}
                    | ({"frequency": float(freqs[i])} if freqs is not None else {}))
    doc = {"class_weight": spec, "scanned_samples": SCAN_SAMPLES if freqs is not None else None,
           "classes": rows}
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
