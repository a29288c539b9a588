"""Training augmentation of image and event batches, label-aligned and keyed per sample.

``data.augment`` switches each transform on; every random choice of a sample comes from its
key (:func:`spikeseg.rng.sample_keys` with purpose ``"augment"``, from the seed, the epoch and
the sample's index), so a sample is augmented the same way whatever its batch, position or
number of processes, and a resumed run repeats the same augmentations.

Static images ``[B, C, H, W]`` (values in [0, 1]) with labels ``[B, H, W]``:

* ``flip: true`` — horizontal flip with probability 1/2;
* ``scale: [lo, hi]`` — random scale-crop: zoom by ``s ~ U(lo, hi)`` about a random centre
  (bilinear for the image, nearest for the label); where a zoom-out leaves the image, the
  image is 0 and the label 255 (ignored);
* ``photometric: p`` — brightness, contrast and saturation each scaled by ``U(1−p, 1+p)``.

Event frames ``[B, T, C, H, W]`` (as the loader stacks them):

* ``flip: true`` — horizontal flip of every frame and the label (polarity unchanged: a mirrored
  scene moving the mirrored way makes the same ON/OFF events, mirrored);
* ``shift: k`` — a translation by ``(dx, dy) ∈ [−k, k]²`` whole pixels of every frame and the
  label, empty pixels 0 (no events) and 255 (ignored);
* ``time_crop: f`` — the first ``n ~ U{0, …, ⌊f·T⌋}`` frames emptied: the window starts later,
  the labelled end stays.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import rng
from ..errors import SpikesegError
from .base import IGNORE_INDEX

__all__ = ["AUGMENTATIONS", "check_augment", "augment_batch"]

AUGMENTATIONS = {
    "flip": "bool: horizontal flips (images and events)",
    "scale": "[lo, hi]: random scale-crop with zoom in [lo, hi] (images)",
    "photometric": "p in [0, 1): brightness, contrast, saturation jitter by 1 ± p (images)",
    "shift": "k >= 0: random translation by up to k pixels (events)",
    "time_crop": "f in [0, 1): empty up to a fraction f of the earliest frames (events)",
}
"""The transforms ``data.augment`` may switch on, and their values."""


def check_augment(spec: Mapping[str, Any], source: str = "data.augment") -> dict[str, Any]:
    """Validate ``data.augment`` (SpikesegError naming the key and the valid values)."""
    if not isinstance(spec, Mapping):
        raise SpikesegError(f"{source} must be a mapping, e.g. {{flip: true, scale: [0.75, 1.5]}}")
    out: dict[str, Any] = {}
    for key, v in spec.items():
        if key not in AUGMENTATIONS:
            raise SpikesegError(f"{source}: unknown augmentation {key!r}; valid: "
                                + "; ".join(f"{k} ({d})" for k, d in AUGMENTATIONS.items()))
        bad = f"{source}.{key} must be {AUGMENTATIONS[key].split(':')[0]}, got {v!r}"
        if key == "flip":
            if not isinstance(v, bool):
                raise SpikesegError(bad)
        elif key == "scale":
            if not (isinstance(v, (list, tuple)) and len(v) == 2
                    and all(isinstance(s, (int, float)) and not isinstance(s, bool)
                            and math.isfinite(s) and s > 0 for s in v) and v[0] <= v[1]):
                raise SpikesegError(bad)
            v = [float(v[0]), float(v[1])]
        elif key == "shift":
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
                raise SpikesegError(bad)
        else:  # photometric, time_crop
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1):
                raise SpikesegError(bad)
            v = float(v)
        out[key] = v
    return out


def _u(keys: Tensor, step: int, shape: tuple[int, ...] = ()) -> Tensor:
    return rng.uniform(keys, step, shape or (1,)).reshape(keys.shape[0], *shape)


def _flip(x: Tensor, y: Tensor, keys: Tensor) -> tuple[Tensor, Tensor]:
    m = _u(keys, 0) < 0.5
    if m.any():
        x, y = x.clone(), y.clone()
        x[m] = x[m].flip(-1)
        y[m] = y[m].flip(-1)
    return x, y


def _scale_crop(x: Tensor, y: Tensor, keys: Tensor, lo: float, hi: float
                ) -> tuple[Tensor, Tensor]:
    b = x.shape[0]
    s = lo + (hi - lo) * _u(keys, 1)                      # zoom factor per sample
    # The centre moves so that a zoom-in stays inside the image, a zoom-out stays centred.
    room = (1.0 - 1.0 / s).clamp(min=0.0)
    tx = (2 * _u(keys, 2) - 1) * room
    ty = (2 * _u(keys, 3) - 1) * room
    theta = torch.zeros(b, 2, 3, dtype=x.dtype)
    theta[:, 0, 0] = 1.0 / s
    theta[:, 1, 1] = 1.0 / s
    theta[:, 0, 2] = tx
    theta[:, 1, 2] = ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    xs = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    lab = F.grid_sample(y[:, None].to(x.dtype), grid, mode="nearest", padding_mode="zeros",
                        align_corners=False)[:, 0]
    inside = F.grid_sample(torch.ones_like(y[:, None], dtype=x.dtype), grid, mode="nearest",
                           padding_mode="zeros", align_corners=False)[:, 0] > 0.5
    ys = torch.where(inside, lab.round().to(y.dtype), torch.full_like(y, IGNORE_INDEX))
    return xs, ys


def _photometric(x: Tensor, keys: Tensor, p: float) -> Tensor:
    f = 1.0 + p * (2 * _u(keys, 4, (3,)) - 1)             # brightness, contrast, saturation
    view = (-1,) + (1,) * (x.dim() - 1)
    x = x * f[:, 0].view(view).to(x.dtype)
    mean = x.mean(dim=tuple(range(1, x.dim())), keepdim=True)
    x = (x - mean) * f[:, 1].view(view).to(x.dtype) + mean
    if x.shape[1] == 3:
        grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]
        x = grey + (x - grey) * f[:, 2].view(view).to(x.dtype)
    return x.clamp(0.0, 1.0)


def _shift(x: Tensor, y: Tensor, keys: Tensor, k: int) -> tuple[Tensor, Tensor]:
    d = (_u(keys, 5, (2,)) * (2 * k + 1)).floor().long() - k     # [B, 2] in [-k, k]
    xs, ys = torch.zeros_like(x), torch.full_like(y, IGNORE_INDEX)
    h, w = y.shape[-2:]
    for i, (dy, dx) in enumerate(d.tolist()):
        src_y, dst_y = slice(max(0, -dy), min(h, h - dy)), slice(max(0, dy), min(h, h + dy))
        src_x, dst_x = slice(max(0, -dx), min(w, w - dx)), slice(max(0, dx), min(w, w + dx))
        xs[i, ..., dst_y, dst_x] = x[i, ..., src_y, src_x]
        ys[i, dst_y, dst_x] = y[i, src_y, src_x]
    return xs, ys


def _time_crop(x: Tensor, keys: Tensor, f: float) -> Tensor:
    T = x.shape[1]
    n = (_u(keys, 6) * (math.floor(f * T) + 1)).floor().long().clamp(max=T - 1)
    if not bool((n > 0).any()):
        return x
    keep = torch.arange(T)[None, :] >= n[:, None]                 # [B, T]
    return x * keep.view(*keep.shape, *([1] * (x.dim() - 2))).to(x.dtype)


def augment_batch(x: Tensor, y: Tensor, keys: Tensor, spec: Mapping[str, Any]
                  ) -> tuple[Tensor, Tensor]:
    """Augment a batch as ``spec`` (a checked ``data.augment``) says; see the module docstring.

    Args:
        x: images ``[B, C, H, W]`` or event frames ``[B, T, C, H, W]`` (on the CPU).
        y: labels ``[B, H, W]``.
        keys: per-sample keys ``[B]`` of the ``"augment"`` stream.
        spec: the transforms to apply.

    Returns:
        ``(x, y)`` augmented, same shapes and types.
    """
    if not spec:
        return x, y
    events = x.dim() == 5
    if spec.get("flip"):
        x, y = _flip(x, y, keys)
    if events:
        if spec.get("shift"):
            x, y = _shift(x, y, keys, int(spec["shift"]))
        if spec.get("time_crop"):
            x = _time_crop(x, keys, float(spec["time_crop"]))
        return x, y
    if spec.get("scale") and tuple(spec["scale"]) != (1.0, 1.0):
        x, y = _scale_crop(x, y, keys, *spec["scale"])
    if spec.get("photometric"):
        x = _photometric(x, keys, float(spec["photometric"]))
    return x, y
