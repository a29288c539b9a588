"""Reading and resizing images and label maps, with one-line errors naming the file.

Shared by the dataset loaders. Conventions (those of :mod:`spikeseg.data.base`):

* an image file is read as ``uint8 [H, W, 3]`` (RGB) or ``[H, W]`` (grey);
* resized images are ``float32`` tensors ``[C, H, W]`` or ``[T, C, H, W]`` (any values:
  intensities in ``[0, 1]``, event counts, ...);
* a label map is an integer ``[H, W]`` array of class ids, 255 = ignore; resized labels are
  ``int64 [H, W]`` tensors;
* sizes are ``(height, width)`` in pixels.

Images are resized with antialiased bilinear interpolation (``torch.nn.functional.interpolate``
with ``antialias=True``: the same triangle filter as Pillow's ``BILINEAR``, whose support
widens with the shrink factor so that every source pixel contributes; a 500×375 VOC photo
shrunk to 64×64 does not alias, and event counts are averaged, not sampled). Labels are
resized with nearest neighbour, so no value that was not in the label appears (no blend of
two class ids or of a class and 255).

Problems a user can cause (a missing, truncated or corrupt file; a colour image where class
ids are expected; label values outside the classes) raise
:class:`~spikeseg.errors.SpikesegError` naming the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from ..errors import SpikesegError
from .base import IGNORE_INDEX

__all__ = [
    "NORMALIZATIONS",
    "check_choice",
    "is_int",
    "normalize_frames",
    "parse_timesteps",
    "parse_size",
    "read_image",
    "read_label",
    "resize_image",
    "resize_label",
    "check_label_values",
]

_LABEL_MODES = ("P", "L", "I", "I;16", "I;16L", "I;16B")
"""Pillow modes whose pixel values are class ids: palette indices, grey levels, integers."""

_READ_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError,
                Image.DecompressionBombError)


NORMALIZATIONS = ("minmax", "log", "none")
"""Per-frame, per-channel normalisations of event frames (:func:`normalize_frames`)."""


def is_int(v: object) -> bool:
    """True for Python and NumPy integers (not for bools)."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def parse_timesteps(timesteps: int | None) -> int | None:
    """A dataset's ``timesteps`` option: ``None`` (single frames) or an int >= 1."""
    if timesteps is None:
        return None
    if not is_int(timesteps) or timesteps < 1:
        raise SpikesegError(f"timesteps must be None or an int >= 1, got {timesteps!r}")
    return int(timesteps)


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``, else a SpikesegError naming them."""
    if value not in choices:
        raise SpikesegError(f"{name} must be one of {', '.join(map(repr, choices))}, not {value!r}")
    return value


def normalize_frames(x: torch.Tensor, mode: str) -> torch.Tensor:
    """Normalise event frames ``[T, C, H, W]`` per frame and per channel (in place).

    Args:
        x: ``float32 [T, C, H, W]``.
        mode: ``"minmax"``: ``(x - min) / (max - min) - 0.5`` over each frame's channel, i.e.
            values in ``[-0.5, 0.5]`` (a constant channel becomes ``-0.5``, like
            scikit-learn's ``MinMaxScaler`` that the paper's code uses); ``"log"``:
            ``sign(x)·log(1 + |x|)``; ``"none"``: unchanged.

    Returns:
        ``x``, normalised.
    """
    if mode == "minmax":
        flat = x.flatten(-2)
        lo = flat.amin(-1, keepdim=True).unsqueeze(-1)
        hi = flat.amax(-1, keepdim=True).unsqueeze(-1)
        span = hi - lo
        x.sub_(lo).div_(torch.where(span > 0, span, torch.ones_like(span))).sub_(0.5)
        x.masked_fill_((span == 0).expand_as(x), -0.5)
    elif mode == "log":
        x.copy_(torch.sign(x) * torch.log1p(x.abs()))
    elif mode != "none":
        raise SpikesegError(f"normalize must be one of {NORMALIZATIONS}, not {mode!r}")
    return x


def parse_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    """``(H, W)`` from an int (square) or an ``(H, W)`` pair, as ``data.image_size`` gives it.

    Raises:
        SpikesegError: not an int or a pair of ints, or a side below 4 pixels.
    """
    if is_int(image_size):
        size = (int(image_size), int(image_size))  # type: ignore[arg-type]
    elif (
        isinstance(image_size, (list, tuple))
        and len(image_size) == 2
        and all(is_int(v) for v in image_size)
    ):
        size = (int(image_size[0]), int(image_size[1]))
    else:
        raise SpikesegError(f"image_size must be an int or [height, width], got {image_size!r}")
    if min(size) < 4:
        raise SpikesegError(f"image_size must be at least 4x4, got {size}")
    return size


_WIDE_GREY = ("I;16", "I;16L", "I;16B", "I;16N", "I")
"""Pillow modes of 16-bit (``I;16*``) and 32-bit signed (``I``) grey images."""


def _to_8bit(im: Image.Image) -> Image.Image:
    """A 16- or 32-bit integer grey image rescaled to 8 bits (``L``); others unchanged.

    ``I;16*``: ``v8 = round(v / 257)``, so 0 → 0 and 65535 → 255 (257 = 65535 / 255).
    ``I`` (32-bit signed): the same when every value lies in 0..65535 (Pillow opens some
    16-bit files, e.g. TIFFs, as ``I``), else ``round(max(v, 0) / (2³¹ − 1) · 255)``.
    """
    if im.mode not in _WIDE_GREY:
        return im
    v = np.asarray(im).astype(np.float64)
    sixteen = im.mode != "I" or v.size == 0 or (v.min() >= 0 and v.max() <= 65535)
    top = 65535.0 if sixteen else float(2**31 - 1)
    return Image.fromarray(np.rint(np.clip(v, 0, top) * (255.0 / top)).astype(np.uint8), "L")


def read_image(
    path: str | Path,
    mode: str = "RGB",
    *,
    what: str = "image",
    missing_hint: str = "check the dataset folder",
    corrupt_hint: str = "extract or download it again",
) -> np.ndarray:
    """Read an image file (JPEG, PNG, TIFF, ...), converted to ``mode``.

    8-bit images are converted by Pillow (grey, palette, CMYK and RGBA to RGB; alpha
    dropped). 16-bit and 32-bit integer grey images, which Pillow's ``convert`` would clip at
    255 (a 0-61380 ramp would become 99.5% white), are first rescaled to the 8-bit range by
    their type's maximum: ``v8 = round(v / 257)`` for 16 bits (65535 → 255), and
    ``round(v / (2³¹ − 1) · 255)`` for 32 bits unless every value fits 16 bits (then as 16-bit
    data: Pillow opens some 16-bit files as 32-bit ``I``). 16-bit RGB(A) PNGs are reduced to
    8 bits per channel by Pillow itself (the high byte).

    Args:
        path: the file.
        mode: ``"RGB"`` or ``"L"`` (grey).
        what: how errors name the file (e.g. ``"input image"``).
        missing_hint: the fix an error suggests for a missing file.
        corrupt_hint: the fix an error suggests for an unreadable one.

    Returns:
        ``uint8 [H, W, 3]`` for ``"RGB"``, ``uint8 [H, W]`` for ``"L"``.

    Raises:
        SpikesegError: missing, unreadable, truncated or corrupt file, or one too large to
            decode safely (a decompression bomb), in one line naming it.
    """
    try:
        with Image.open(path) as im:
            return np.asarray(_to_8bit(im).convert(mode))  # decoding: truncation fails here
    except FileNotFoundError:
        raise SpikesegError(f"{what} {path} not found; {missing_hint}") from None
    except _READ_ERRORS as e:
        raise SpikesegError(
            f"{what} {path} is unreadable or corrupt ({e}); {corrupt_hint}"
        ) from None


def read_label(path: str | Path) -> np.ndarray:
    """Read a label map stored as class ids: a palette (``P``) or grey (``L``) PNG.

    The stored values are returned: for a palette PNG (PASCAL VOC's ``SegmentationClass``)
    these are the palette indices, i.e. the class ids, not colours.

    Returns:
        ``[H, W]`` array, ``uint8`` (wider integers for 16/32-bit PNGs).

    Raises:
        SpikesegError: missing or corrupt file, or a colour image instead of class ids.
    """
    try:
        with Image.open(path) as im:
            if im.mode not in _LABEL_MODES:
                raise SpikesegError(
                    f"label {path} is a {im.mode} image; expected class ids as a palette or "
                    "greyscale PNG (use the class-id labels, not a colour visualisation)"
                )
            arr = np.asarray(im)
    except FileNotFoundError:
        raise SpikesegError(f"label {path} not found; check the dataset folder") from None
    except _READ_ERRORS as e:
        raise SpikesegError(
            f"label {path} is unreadable or corrupt ({e}); extract or download it again"
        ) from None
    return arr


def check_label_values(label: np.ndarray, num_classes: int, source: str | Path) -> None:
    """Raise if ``label`` holds values other than ``0..num_classes-1`` and 255 (ignore).

    Args:
        label: integer ``[H, W]`` class ids.
        num_classes: number of classes of the dataset.
        source: what to name in the error (the label file).
    """
    if label.size == 0 or (int(label.min()) >= 0 and int(label.max()) < num_classes):
        return  # the common case, without np.unique
    vals = np.unique(label)
    bad = vals[(vals >= num_classes) & (vals != IGNORE_INDEX)]
    if (vals < 0).any() or bad.size:
        shown = sorted(set(bad.tolist()) | set(vals[vals < 0].tolist()))[:6]
        raise SpikesegError(
            f"label {source} has values {shown} outside the classes 0..{num_classes - 1} "
            f"(and {IGNORE_INDEX} = ignore); is it the right label file for this dataset?"
        )


def resize_image(x: np.ndarray | torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Antialiased bilinear resize of ``[C, H, W]`` (or ``[T, C, H, W]``) float data.

    Antialiasing averages over the source pixels a target pixel covers, which is the right
    thing for photographs and for event counts alike. The weights are non-negative, so
    values stay within the input's range.

    Args:
        x: ``[..., C, H, W]`` array or tensor (converted to ``float32``).
        size: target ``(height, width)``.

    Returns:
        ``float32 [..., C, h, w]`` tensor (the input itself, as float32, if already that size).
    """
    t = torch.as_tensor(x, dtype=torch.float32)
    if tuple(t.shape[-2:]) == tuple(size):
        return t.contiguous()
    lead = t.shape[:-3]
    flat = t.reshape(-1, *t.shape[-3:])
    out = F.interpolate(flat, size=size, mode="bilinear", align_corners=False, antialias=True)
    return out.reshape(*lead, *out.shape[-3:])


def resize_label(label: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of a label map to ``int64 [H, W]`` (255 stays 255).

    Output pixel ``(i, j)`` takes the input pixel that contains its centre,
    ``(floor((i + 0.5) * H / h), floor((j + 0.5) * W / w))`` (Pillow's ``NEAREST``).

    Args:
        label: integer ``[H, W]`` class ids.
        size: target ``(height, width)``.
    """
    label = np.asarray(label)
    h, w = label.shape
    if (h, w) != tuple(size):
        # Index arithmetic: exact for every integer dtype and value (no uint8 cast).
        rows = np.minimum(((np.arange(size[0]) + 0.5) * (h / size[0])).astype(np.int64), h - 1)
        cols = np.minimum(((np.arange(size[1]) + 0.5) * (w / size[1])).astype(np.int64), w - 1)
        label = label[rows[:, None], cols[None, :]]
    return torch.from_numpy(np.ascontiguousarray(label, dtype=np.int64))
