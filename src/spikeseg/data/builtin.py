"""The built-in dataset: real handwritten digits pasted onto crops of real photographs.

Nothing is downloaded. The digits are the 1,797 8×8 scans of ``sklearn.datasets.load_digits``
(grey levels 0–16); the backgrounds are random crops of the colour photographs bundled inside
the scikit-learn wheel (china, flower) and the scikit-image wheel (astronaut, chelsea, coffee,
rocket, the two motorcycle views, the Hubble deep field, retina, ihc).

Each sample is a crop of one photograph, resized to ``image_size``, with 1–3 digits upsampled
smoothly to a random size, painted in a colour that contrasts with the patch they cover and
alpha-blended with anti-aliased edges. The label of a pixel is ``digit + 1`` where a digit's
stroke covers it (later digits win) and 0 (background) elsewhere: 11 classes.

Train and validation are disjoint in both ingredients: a fixed, stratified 80/20 split of the
digit scans, and of every photograph a left part (train) and a right part (validation) —
crops lie fully inside their part. A split is generated once, deterministically from
``(seed, split)`` and the other options, and cached as one compressed ``.npz`` file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import SpikesegError
from .base import DatasetInfo, SegmentationDataset, categorical_palette, register_dataset

__all__ = ["BuiltinDigits", "builtin", "digit_split_indices", "photo_part", "render_sample"]

FORMAT_VERSION = 1
"""Bumped whenever generation changes, so stale cache files are not reused."""

SPLITS = ("train", "val")
NUM_CLASSES = 11
CLASS_NAMES = ["background"] + [str(d) for d in range(10)]

INSTALL_HINT = 'pip install "spikeseg[builtin]"'

_SKIMAGE_PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "ihc.png",
)

_SPLIT_LINE = 0.75
"""Photos are cut by a vertical line at this fraction of their width: train left, val right."""

_TRAIN_END = {"motorcycle_right.png": 0.65}
"""Exceptions to the train part's right edge. The motorcycle views are a stereo pair: a point at
column ``x`` of the left view is at ``x - d`` in the right view, with disparity ``d`` up to 60
of 741 px, so the right view's train part stops 10% short of the line to show nothing of the
left view's validation part."""

_DIGIT_VAL_FRACTION = 0.2
_DIGIT_SPLIT_SEED = 20240917  # fixed: the digit split must not depend on the dataset seed
_CROP_FRACTION = (0.25, 0.6)  # crop's shorter side / photo's shorter side
MASK_THRESHOLD = 0.4  # upsampled intensity (0..1) above which a pixel is labelled digit
ALPHA_RAMP = 0.5  # width of the intensity ramp (centred on the threshold) used as opacity
_MIN_CONTRAST = 0.4  # luminance difference (0..1) between a digit and the patch it covers
LUMA = np.array([0.299, 0.587, 0.114])
_MIN_SIZE = 16


# --------------------------------------------------------------------------- sources


def require_packages() -> None:
    """Import scikit-learn and scikit-image, or raise a one-line :class:`SpikesegError`."""
    try:
        import skimage  # noqa: F401
        import sklearn.datasets  # noqa: F401
    except ImportError as e:
        raise SpikesegError(
            f"the built-in dataset needs scikit-learn and scikit-image ({e.name or e} is "
            f"missing): {INSTALL_HINT}"
        ) from None


@functools.lru_cache(maxsize=1)
def load_digit_scans() -> tuple[np.ndarray, np.ndarray]:
    """The digit scans: ``float32 [1797, 8, 8]`` in ``[0, 1]`` and ``int64 [1797]`` digits."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (np.asarray(bunch.images, dtype=np.float32) / 16.0).clip(0.0, 1.0)
    return images, np.asarray(bunch.target, dtype=np.int64)


def _skimage_data_dir() -> str:
    import skimage.data

    return os.path.dirname(skimage.data.__file__)


def available_photo_names() -> list[str]:
    """Names of the photographs present in this installation (the cache key depends on it)."""
    data_dir = _skimage_data_dir()
    names = ["china.jpg", "flower.jpg"]
    names += [n for n in _SKIMAGE_PHOTOS if os.path.isfile(os.path.join(data_dir, n))]
    return names


@functools.lru_cache(maxsize=1)
def load_photos() -> tuple[tuple[str, np.ndarray], ...]:
    """All photographs as ``(name, uint8 [H, W, 3])``, scikit-learn's first; missing ones skipped."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos: list[tuple[str, np.ndarray]] = []
    bunch = load_sample_images()
    for path, img in zip(bunch.filenames, bunch.images, strict=True):
        photos.append((os.path.basename(path), np.ascontiguousarray(img[..., :3], np.uint8)))
    data_dir = _skimage_data_dir()
    for name in _SKIMAGE_PHOTOS:
        path = os.path.join(data_dir, name)
        if not os.path.isfile(path):
            continue
        try:
            with Image.open(path) as im:
                photos.append((name, np.asarray(im.convert("RGB"), dtype=np.uint8)))
        except OSError:
            continue
    return tuple(photos)


def photo_part(name: str, width: int, split: str) -> tuple[int, int]:
    """Columns ``[x0, x1)`` of a photograph that crops of ``split`` may use.

    Train crops come from the left of a vertical line at 75% of the width, validation crops
    from the right of it (for the right view of the motorcycle stereo pair the train part
    stops earlier, see ``_TRAIN_END``), so the two splits never share a photo pixel.

    Args:
        name: file name of the photograph (e.g. ``"china.jpg"``).
        width: its width in pixels.
        split: ``"train"`` or ``"val"``.

    Returns:
        ``(x0, x1)`` with ``0 <= x0 < x1 <= width``.
    """
    check_split(split)
    line = int(round(_SPLIT_LINE * width))
    if split == "train":
        return 0, int(round(_TRAIN_END.get(name, _SPLIT_LINE) * width))
    return line, width


@functools.lru_cache(maxsize=2)
def _photo_parts(split: str) -> tuple[Any, ...]:
    """The split's part of every photograph, as PIL images (crops never read outside them)."""
    from PIL import Image

    parts = []
    for name, arr in load_photos():
        x0, x1 = photo_part(name, arr.shape[1], split)
        parts.append(Image.fromarray(np.ascontiguousarray(arr[:, x0:x1])))
    return tuple(parts)


def digit_split_indices(targets: np.ndarray, split: str) -> np.ndarray:
    """Indices of the digit scans that belong to ``split``: a fixed, stratified 80/20 split.

    The split uses its own fixed seed, so it is the same whatever the dataset's seed.

    Args:
        targets: ``int [N]`` digit of every scan.
        split: ``"train"`` or ``"val"``.

    Returns:
        ``int64 [M]`` sorted indices into ``targets``; train and val are disjoint and together
        cover all ``N``.
    """
    check_split(split)
    targets = np.asarray(targets)
    rng = np.random.default_rng(_DIGIT_SPLIT_SEED)
    chosen = []
    for digit in np.unique(targets):
        idx = rng.permutation(np.flatnonzero(targets == digit))
        n_val = int(round(_DIGIT_VAL_FRACTION * len(idx)))
        chosen.append(idx[:n_val] if split == "val" else idx[n_val:])
    return np.sort(np.concatenate(chosen)).astype(np.int64)


# --------------------------------------------------------------------------- rendering


def sample_crop_box(
    rng: np.random.Generator, part_hw: tuple[int, int], photo_short: int, out_hw: tuple[int, int]
) -> tuple[float, float, float, float]:
    """A random crop ``(left, top, right, bottom)`` inside a ``part_hw`` part of a photograph.

    The crop has the aspect ratio of ``out_hw``; its shorter side is drawn uniformly between
    25% and 60% of the photograph's shorter side, capped so that the crop fits in the part.
    """
    ph, pw = part_hw
    oh, ow = out_hw
    # crop size per unit of its shorter side
    uh, uw = (1.0, ow / oh) if oh <= ow else (oh / ow, 1.0)
    s_fit = min(ph / uh, pw / uw)
    s_max = min(_CROP_FRACTION[1] * photo_short, s_fit)
    s_min = min(_CROP_FRACTION[0] * photo_short, s_max)
    s = rng.uniform(s_min, s_max)
    ch, cw = min(s * uh, ph), min(s * uw, pw)
    top = rng.uniform(0.0, ph - ch)
    left = rng.uniform(0.0, pw - cw)
    return left, top, left + cw, top + ch


def upsample_digit(digit: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic resize of an ``[8, 8]`` intensity map in ``[0, 1]`` to ``size`` = ``(h, w)``."""
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(digit, dtype=np.float32), mode="F")
    up = im.resize((size[1], size[0]), Image.Resampling.BICUBIC)
    return np.asarray(up, dtype=np.float32).clip(0.0, 1.0)


def contrasting_colour(rng: np.random.Generator, background_luma: float) -> np.ndarray:
    """A random RGB colour in ``[0, 1]`` whose luminance differs from ``background_luma`` by at
    least ``_MIN_CONTRAST``: a random hue, darkened or lightened to a random allowed luminance."""
    lo = background_luma - _MIN_CONTRAST  # darker colours: luminance in [0, lo]
    hi = background_luma + _MIN_CONTRAST  # lighter colours: luminance in [hi, 1]
    dark_room, light_room = max(lo, 0.0), max(1.0 - hi, 0.0)
    if dark_room + light_room <= 0.0:  # cannot happen while _MIN_CONTRAST <= 0.5
        dark_room = 1.0
    if rng.uniform(0.0, dark_room + light_room) < dark_room:
        target = rng.uniform(0.0, max(lo, 0.0))
    else:
        target = rng.uniform(min(hi, 1.0), 1.0)
    colour = rng.uniform(0.05, 0.95, size=3)
    luma = float(colour @ LUMA)
    if target <= luma:  # scale towards black: luminance scales linearly
        colour = colour * (target / luma)
    else:  # mix towards white
        colour = 1.0 - (1.0 - colour) * ((1.0 - target) / (1.0 - luma))
    return colour.clip(0.0, 1.0)


def render_sample(
    rng: np.random.Generator,
    background: np.ndarray,
    digit_images: np.ndarray,
    digit_targets: np.ndarray,
    digits_per_image: tuple[int, int] = (1, 3),
    digit_scale: tuple[float, float] = (0.3, 0.6),
) -> tuple[np.ndarray, np.ndarray]:
    """Paste random digits onto a background.

    Args:
        rng: the random generator (consumed deterministically).
        background: ``uint8 [H, W, 3]`` image.
        digit_images: ``float32 [N, 8, 8]`` digit scans in ``[0, 1]`` to draw from.
        digit_targets: ``int [N]`` their digits (0..9).
        digits_per_image: inclusive range of the number of digits pasted.
        digit_scale: range of a digit's height as a fraction of the image's shorter side.

    Returns:
        ``(image, label)``: ``uint8 [H, W, 3]`` and ``uint8 [H, W]`` with 0 for background and
        ``digit + 1`` under a digit's stroke (later digits cover earlier ones).
    """
    height, width = background.shape[:2]
    canvas = background.astype(np.float32) / 255.0
    label = np.zeros((height, width), dtype=np.uint8)
    short = min(height, width)
    count = int(rng.integers(digits_per_image[0], digits_per_image[1] + 1))
    for _ in range(count):
        k = int(rng.integers(len(digit_images)))
        size = int(round(rng.uniform(*digit_scale) * short))
        size = max(8, min(size, short))
        y0 = int(rng.integers(0, height - size + 1))
        x0 = int(rng.integers(0, width - size + 1))
        intensity = upsample_digit(digit_images[k], (size, size))
        patch = canvas[y0 : y0 + size, x0 : x0 + size]
        colour = contrasting_colour(rng, float(patch.mean(axis=(0, 1)) @ LUMA))
        alpha = ((intensity - MASK_THRESHOLD) / ALPHA_RAMP + 0.5).clip(0.0, 1.0)[..., None]
        patch *= 1.0 - alpha
        patch += alpha * colour.astype(np.float32)
        mask = intensity > MASK_THRESHOLD
        label[y0 : y0 + size, x0 : x0 + size][mask] = digit_targets[k] + 1
    image = np.rint(canvas * 255.0).clip(0, 255).astype(np.uint8)
    return image, label


def _generate(
    split: str,
    size: tuple[int, int],
    count: int,
    digits_per_image: tuple[int, int],
    digit_scale: tuple[float, float],
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate a whole split: ``uint8 [count, H, W, 3]`` images and ``uint8 [count, H, W]``
    labels, deterministically from ``(seed, split)`` and the other arguments."""
    from PIL import Image

    digits, targets = load_digit_scans()
    pool = digit_split_indices(targets, split)
    pool_images, pool_targets = digits[pool], targets[pool]
    photos = load_photos()
    parts = _photo_parts(split)
    if not parts:
        raise SpikesegError(f"no background photographs found; reinstall them: {INSTALL_HINT}")
    rng = np.random.default_rng([seed, SPLITS.index(split), FORMAT_VERSION])
    height, width = size
    images = np.empty((count, height, width, 3), dtype=np.uint8)
    labels = np.empty((count, height, width), dtype=np.uint8)
    for i in range(count):
        p = int(rng.integers(len(parts)))
        part = parts[p]
        photo_short = min(photos[p][1].shape[:2])
        box = sample_crop_box(rng, (part.height, part.width), photo_short, size)
        crop = part.resize((width, height), Image.Resampling.BILINEAR, box=box)
        background = np.asarray(crop, dtype=np.uint8)
        images[i], labels[i] = render_sample(
            rng, background, pool_images, pool_targets, digits_per_image, digit_scale
        )
    return images, labels


# --------------------------------------------------------------------------- cache


def default_cache_root() -> Path:
    return Path(os.environ.get("SPIKESEG_CACHE") or Path.home() / ".cache" / "spikeseg")


def split_cache_path(root: Path, params: dict[str, Any], stem: str = "builtin") -> Path:
    """``<root>/<stem>-<split>-<H>x<W>-n<count>-<hash of params>.npz``."""
    key = json.dumps(params, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    h, w = params["image_size"]
    return root / f"{stem}-{params['split']}-{h}x{w}-n{params['count']}-{digest}.npz"


def read_cache(
    path: Path,
    params: dict[str, Any],
    names: Sequence[str],
    valid: Callable[[dict[str, np.ndarray], dict[str, Any]], bool],
) -> dict[str, np.ndarray] | None:
    """The arrays ``names`` of a cached split, or None when the file is missing, unreadable,
    written with other ``params``, or its arrays fail ``valid(arrays, params)``.

    Shared by the generated datasets (``builtin``, ``builtin_events``)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            stored = json.loads(str(z["params"]))
            data = {name: z[name] for name in names}
        ok = stored == json.loads(json.dumps(params)) and valid(data, params)
    except Exception as e:  # any failure to read a cache file means: generate it again
        warnings.warn(f"ignoring unreadable cache file {path} ({e}); regenerating", stacklevel=3)
        return None
    if not ok:
        warnings.warn(
            f"ignoring cache file {path} (contents do not match); regenerating", stacklevel=3
        )
        return None
    return data


def write_cache(path: Path, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> bool:
    """Write ``arrays`` and ``params`` atomically (temp file in the same folder, then rename);
    False (with a warning) if it failed."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, params=np.array(json.dumps(params, sort_keys=True)), **arrays)
        os.replace(tmp, path)
        return True
    except OSError as e:
        warnings.warn(
            f"could not write the cache file {path} ({e}); keeping the data in memory", stacklevel=3
        )
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
        return False


def _valid_split(data: dict[str, np.ndarray], params: dict[str, Any]) -> bool:
    """Whether cached ``images`` and ``labels`` have the shapes, types and classes of ``params``."""
    h, w = params["image_size"]
    n = params["count"]
    images, labels = data["images"], data["labels"]
    return (
        images.dtype == np.uint8
        and labels.dtype == np.uint8
        and images.shape == (n, h, w, 3)
        and labels.shape == (n, h, w)
        and (n == 0 or int(labels.max()) < NUM_CLASSES)
    )


# --------------------------------------------------------------------------- dataset


class BuiltinDigits(SegmentationDataset):
    """Digits on photographs: items ``(image float32 [3, H, W] in [0, 1], label int64 [H, W])``.

    Build it with :func:`builtin` (or ``build_dataset("builtin", split)``). The whole split is
    held in memory as ``uint8`` arrays.

    Attributes:
        images: ``uint8 [N, H, W, 3]``.
        labels: ``uint8 [N, H, W]``, class ids 0..10 (0 = background, ``d + 1`` = digit ``d``).
        split: ``"train"`` or ``"val"``.
        cache_path: the ``.npz`` file backing the data, or None when not cached.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        split: str,
        cache_path: Path | None = None,
    ) -> None:
        self.images = images
        self.labels = labels
        self.split = split
        self.cache_path = cache_path
        self.info = DatasetInfo(
            name="builtin",
            num_classes=NUM_CLASSES,
            class_names=list(CLASS_NAMES),
            in_channels=3,
            temporal=False,
            palette=categorical_palette(NUM_CLASSES),  # black background, Tableau 10 digits
        )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = np.ascontiguousarray(self.images[index].transpose(2, 0, 1))
        x = torch.from_numpy(image).to(torch.float32).div_(255.0)
        y = torch.from_numpy(self.labels[index].astype(np.int64))
        return x, y

    def __repr__(self) -> str:
        n, h, w = self.labels.shape
        return f"BuiltinDigits(split={self.split!r}, n={n}, size={h}x{w})"


def parse_builtin_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        size = (int(image_size), int(image_size))
    elif (
        isinstance(image_size, Sequence)
        and len(image_size) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in image_size)
    ):
        size = (int(image_size[0]), int(image_size[1]))
    else:
        raise SpikesegError(f"image_size must be an int or an (H, W) pair, got {image_size!r}")
    if min(size) < _MIN_SIZE:
        raise SpikesegError(f"image_size must be at least {_MIN_SIZE} pixels, got {image_size!r}")
    return size


def parse_range(value: Any, name: str, kind: type, lo: float, hi: float) -> tuple[Any, Any]:
    try:
        a, b = (kind(v) for v in value)
    except (TypeError, ValueError):
        raise SpikesegError(f"{name} must be a (min, max) pair, got {value!r}") from None
    if not (lo <= a <= b <= hi):
        raise SpikesegError(f"{name} must satisfy {lo} <= min <= max <= {hi}, got {value!r}")
    return a, b


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise SpikesegError(
            f"unknown split {split!r} for the builtin dataset; choose one of: {', '.join(SPLITS)}"
        )


@register_dataset("builtin", palette=categorical_palette)
def builtin(
    split: str,
    root: str | os.PathLike[str] | None = None,
    *,
    image_size: int | Sequence[int] = 64,
    num_train: int = 2000,
    num_val: int = 400,
    digits_per_image: Sequence[int] = (1, 3),
    digit_scale: Sequence[float] = (0.3, 0.6),
    seed: int = 0,
    cache: bool = True,
) -> BuiltinDigits:
    """Build one split of the built-in digits-on-photographs dataset (generated, no download).

    Args:
        split: ``"train"`` or ``"val"`` (disjoint in digit scans and in photo regions).
        root: cache folder; default ``$SPIKESEG_CACHE`` or ``~/.cache/spikeseg``.
        image_size: ``H = W`` as an int, or an ``(H, W)`` pair.
        num_train: number of train samples.
        num_val: number of validation samples.
        digits_per_image: inclusive ``(min, max)`` number of digits per image.
        digit_scale: ``(min, max)`` digit height as a fraction of the image's shorter side.
        seed: generation seed (non-negative); the same options give bit-identical data.
        cache: read/write the split as a compressed ``.npz`` in ``root``; False keeps it in
            memory only.

    Returns:
        The dataset: items ``(float32 [3, H, W] in [0, 1], int64 [H, W] in 0..10)``.

    Raises:
        SpikesegError: a bad split or option, or scikit-learn / scikit-image not installed.
    """
    check_split(split)
    size = parse_builtin_size(image_size)
    count = num_train if split == "train" else num_val
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise SpikesegError(f"num_{split} must be a non-negative int, got {count!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SpikesegError(f"seed must be a non-negative int, got {seed!r}")
    n_digits = parse_range(digits_per_image, "digits_per_image", int, 1, 64)
    scale = parse_range(digit_scale, "digit_scale", float, 0.05, 1.0)
    require_packages()

    params = {
        "version": FORMAT_VERSION,
        "split": split,
        "image_size": list(size),
        "count": int(count),
        "digits_per_image": list(n_digits),
        "digit_scale": list(scale),
        "seed": int(seed),
        "photos": available_photo_names(),
    }
    path = None
    data = None
    if cache:
        path = split_cache_path(Path(root) if root is not None else default_cache_root(), params)
        data = read_cache(path, params, ("images", "labels"), _valid_split)
    if data is None:
        images, labels = _generate(split, size, int(count), n_digits, scale, int(seed))
        data = {"images": images, "labels": labels}
        if path is not None and not write_cache(path, params, data):
            path = None
    return BuiltinDigits(data["images"], data["labels"], split, cache_path=path)


# The names these had before they were shared with spikeseg.data.builtin_events.
_load_digits = load_digit_scans
_load_photos = load_photos
_sample_crop_box = sample_crop_box
