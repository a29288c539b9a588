"""MNIST-on-CIFAR10: handwritten digits added onto CIFAR-10 photos, to segment the digit.

The paper's synthetic dataset (its section on MNIST-CIFAR10-Segmentation, generator of
https://robromijnders.github.io/segm/): 48,000 training and 12,000 test images of 32×32
pixels. :func:`make_mnist_cifar` generates it once from the user's own copies of MNIST and
CIFAR-10 (nothing is downloaded) and writes it to disk; the dataset ``"mnist_cifar"`` reads
the written folder.

Recipe of one sample (constants of this module in brackets):

1. background: a CIFAR-10 image, ``uint8 [32, 32, 3]``;
2. digit: an MNIST image scaled to ``[0, 1]`` (÷255) and downsampled to 14×14 by taking every
   second pixel (``digit[::2, ::2]``); its mask is ``digit > 0.3`` [``MASK_THRESHOLD``];
3. a random offset ``(y, x)``, each uniform in ``0..17`` [``MAX_OFFSET``], so the digit lies
   fully inside the image;
4. image = ``clip(round(background + 200 · digit), 0, 255)`` [``DIGIT_GAIN``], the digit added
   to all three channels at the offset;
5. label = the mask at the offset: 1 (``labels="binary"``, 2 classes: background, digit) or
   ``digit identity + 1`` (``labels="digits"``, 11 classes: background, 0, ..., 9).

Training samples draw from MNIST train and CIFAR-10 train, test samples from MNIST test and
CIFAR-10 test. The draws are deterministic given the seed: for each split, with
``rng = numpy.random.default_rng([seed, s])`` (``s`` = 0 for train, 1 for test), the MNIST
indices, then the CIFAR indices (each a concatenation of random permutations of its pool,
cut to the sample count, so no image repeats before all were used), then the offsets
``rng.integers(0, 18, size=(n, 2))``.

Inputs it reads::

    MNIST_DIR/             # or MNIST_DIR/raw/, MNIST_DIR/MNIST/raw/ (torchvision), MNIST_DIR/MNIST/
      train-images-idx3-ubyte[.gz]   train-labels-idx1-ubyte[.gz]
      t10k-images-idx3-ubyte[.gz]    t10k-labels-idx1-ubyte[.gz]
      (names with ".idx3-ubyte" instead of "-idx3-ubyte" are accepted too)
    CIFAR_DIR/cifar-10-batches-py/   # or CIFAR_DIR itself
      data_batch_1 ... data_batch_5  test_batch   # Python pickles: {b"data": uint8 [N, 3072],
                                                  #   b"labels": [N ints], ...}

Folder it writes (and the dataset reads)::

    OUT/
      meta.json                      # options, classes, counts, recipe constants
      train.txt  test.txt            # "images/<split>/<i>.png labels/<split>/<i>.png" per line
      images/train/000000.png ...    # RGB PNG, 32×32
      labels/train/000000.png ...    # palette PNG of class ids (index = class id)
      images/test/...  labels/test/...

Generation is atomic: everything is written into a hidden sibling folder that is renamed to
``OUT`` at the end, so an interrupted run leaves no ``OUT`` that looks complete.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import secrets
import shutil
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import SpikesegError
from .base import IGNORE_INDEX, DatasetInfo, SegmentationDataset, default_palette, register_dataset
from .transforms import (
    parse_size,
    read_image,
    read_label,
    resize_image,
    resize_label,
)

__all__ = [
    "MNISTOnCIFAR",
    "compose_sample",
    "load_cifar10",
    "load_mnist",
    "make_mnist_cifar",
    "mnist_cifar",
]

FORMAT = "spikeseg.mnist_cifar"
FORMAT_VERSION = 1
IMAGE_SIZE = 32
"""Side of a CIFAR-10 image and of every sample, pixels."""
DIGIT_SIZE = 14
"""Side of the downsampled digit (every second pixel of MNIST's 28×28), pixels."""
MAX_OFFSET = IMAGE_SIZE - DIGIT_SIZE - 1
"""Largest offset of the digit's top-left corner on each axis (17): offsets are 0..17."""
MASK_THRESHOLD = 0.3
"""A digit pixel (in [0, 1]) belongs to the digit, i.e. is labelled, above this value."""
DIGIT_GAIN = 200.0
"""The digit, in [0, 1], is added times this to the background's 0–255 values."""
LABEL_MODES = {
    "binary": ["background", "digit"],
    "digits": ["background"] + [str(d) for d in range(10)],
}
SPLITS = {"train": "train", "val": "test", "test": "test"}
"""Split names accepted by the dataset -> list written by the generator."""

_MAKE_HINT = "run `spikeseg data make-mnist-cifar --mnist DIR --cifar DIR --out DIR` first"
_MNIST_FILES = {
    "train-images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train-labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "t10k-images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "t10k-labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}
_MNIST_SUBDIRS = ("", "raw", "MNIST/raw", "mnist/raw", "MNIST", "mnist")


# --------------------------------------------------------------------------- MNIST


def _find_mnist_file(mnist_dir: Path, key: str) -> Path:
    for sub in _MNIST_SUBDIRS:
        for name in _MNIST_FILES[key]:
            for suffix in ("", ".gz"):
                p = mnist_dir / sub / f"{name}{suffix}"
                if p.is_file():
                    return p
    looked = ", ".join(f"{s}/" if s else "./" for s in _MNIST_SUBDIRS)
    raise SpikesegError(
        f"{mnist_dir}: MNIST file {_MNIST_FILES[key][0]}[.gz] not found (looked in {looked}); "
        "put MNIST's four IDX files (train-images, train-labels, t10k-images, t10k-labels) there"
    )


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes (gzipped when its name ends in ``.gz``) as a uint8 array.

    IDX: magic ``00 00 08 <ndim>``, then ``ndim`` big-endian uint32 sizes, then the bytes.
    """
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise SpikesegError(
            f"{path}: cannot read the MNIST file ({type(e).__name__}: {e}); download it again"
        ) from None
    header = 4 + 4 * ndim
    if len(data) < header or data[:3] != b"\x00\x00\x08" or data[3] != ndim:
        raise SpikesegError(
            f"{path}: not an MNIST IDX file of {ndim}-d unsigned bytes (magic "
            f"{data[:4].hex() or 'missing'}, expected 0000080{ndim}); download it again"
        )
    dims = struct.unpack(f">{ndim}I", data[4:header])
    count = int(np.prod(dims))
    if len(data) - header != count:
        raise SpikesegError(
            f"{path}: {len(data) - header} data bytes for the sizes {list(dims)} in its header "
            f"(expected {count}); the file is truncated or corrupt: download it again"
        )
    return np.frombuffer(data, dtype=np.uint8, count=count, offset=header).reshape(dims)


def load_mnist(mnist_dir: str | os.PathLike[str], split: str) -> tuple[np.ndarray, np.ndarray]:
    """One split of MNIST from its IDX files.

    Args:
        mnist_dir: folder with the IDX files (or ``raw/``, ``MNIST/raw/``, ``MNIST/`` in it).
        split: ``"train"`` (60,000 digits) or ``"test"`` (``t10k``, 10,000).

    Returns:
        ``uint8 [N, 28, 28]`` images (0 = background) and ``uint8 [N]`` digits 0–9.

    Raises:
        SpikesegError: a missing, corrupt or inconsistent file (naming it).
    """
    root = Path(mnist_dir).expanduser()
    if not root.is_dir():
        raise SpikesegError(f"{root}: MNIST folder not found; pass the folder of its IDX files")
    prefix = "train" if split == "train" else "t10k"
    img_path = _find_mnist_file(root, f"{prefix}-images")
    lbl_path = _find_mnist_file(root, f"{prefix}-labels")
    images, labels = _read_idx(img_path, 3), _read_idx(lbl_path, 1)
    if images.shape[1:] != (28, 28):
        raise SpikesegError(
            f"{img_path}: images are {images.shape[2]}x{images.shape[1]}, expected MNIST's 28x28"
        )
    if len(labels) != len(images):
        raise SpikesegError(
            f"{lbl_path}: {len(labels)} labels for the {len(images)} images of {img_path.name}; "
            "the two files do not belong together"
        )
    if labels.size and int(labels.max()) > 9:
        raise SpikesegError(f"{lbl_path}: digit labels above 9; not an MNIST label file")
    return images, labels


# --------------------------------------------------------------------------- CIFAR-10


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles CIFAR-10 batches and nothing else: only numpy arrays are reconstructed, so
    a tampered file cannot run code."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # bytes written by Python 3 at protocol 2
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in the pickle")
        if module.startswith("numpy.") and hasattr(np, "_core"):
            module = "numpy._core.multiarray"  # numpy 2 moved numpy.core to numpy._core
        elif module.startswith("numpy."):
            module = "numpy.core.multiarray"
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise SpikesegError(
            f"{path}: CIFAR-10 batch not found; extract cifar-10-python.tar.gz there"
        )
    try:
        with open(path, "rb") as f:
            batch = _CifarUnpickler(f, encoding="latin1").load()
    except (OSError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            pickle.UnpicklingError) as e:
        raise SpikesegError(
            f"{path}: cannot read the CIFAR-10 batch ({type(e).__name__}: {e}); extract "
            "cifar-10-python.tar.gz again"
        ) from None
    if isinstance(batch, dict):
        batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data = batch.get("data") if isinstance(batch, dict) else None
    labels = batch.get("labels") if isinstance(batch, dict) else None
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != 3 * IMAGE_SIZE * IMAGE_SIZE
        or labels is None
        or len(labels) != len(data)
    ):
        raise SpikesegError(
            f"{path}: not a CIFAR-10 python batch (expected a dict with 'data' uint8 [N, 3072] "
            "and N 'labels'); use the python version, cifar-10-python.tar.gz"
        )
    # Rows are 1024 red, 1024 green, 1024 blue values, each 32×32 row-major.
    images = data.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), np.asarray(labels, dtype=np.int64)


def _find_cifar_dir(cifar_dir: str | os.PathLike[str]) -> Path:
    root = Path(cifar_dir).expanduser()
    if not root.is_dir():
        raise SpikesegError(
            f"{root}: CIFAR-10 folder not found; pass the folder of cifar-10-batches-py"
        )
    for cand in (root, root / "cifar-10-batches-py"):
        if (cand / "data_batch_1").is_file() or (cand / "test_batch").is_file():
            return cand
    raise SpikesegError(
        f"{root}: no CIFAR-10 python batches (data_batch_1, test_batch) in it nor in "
        "cifar-10-batches-py/; extract cifar-10-python.tar.gz there"
    )


def load_cifar10(cifar_dir: str | os.PathLike[str], split: str) -> np.ndarray:
    """The images of one split of CIFAR-10 (python version).

    Args:
        cifar_dir: ``cifar-10-batches-py`` or the folder holding it.
        split: ``"train"`` (``data_batch_1..5``, 50,000 images) or ``"test"`` (``test_batch``).

    Returns:
        ``uint8 [N, 32, 32, 3]`` RGB images.

    Raises:
        SpikesegError: a missing or corrupt batch (naming it).
    """
    folder = _find_cifar_dir(cifar_dir)
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    return np.concatenate([_read_cifar_batch(folder / n)[0] for n in names])


# --------------------------------------------------------------------------- generation


def compose_sample(
    background: np.ndarray, digit: np.ndarray, offset: tuple[int, int], value: int
) -> tuple[np.ndarray, np.ndarray]:
    """One sample of the recipe (see the module docstring).

    Args:
        background: ``uint8 [32, 32, 3]`` CIFAR-10 image.
        digit: ``uint8 [28, 28]`` MNIST image.
        offset: ``(y, x)`` of the digit's top-left corner, each in ``0..17``.
        value: the label of digit pixels (1, or digit + 1).

    Returns:
        ``uint8 [32, 32, 3]`` image and ``uint8 [32, 32]`` label (0 = background).
    """
    y, x = int(offset[0]), int(offset[1])
    small = digit.astype(np.float64)[::2, ::2] / 255.0  # [14, 14] in [0, 1]
    canvas = background.astype(np.float64)
    canvas[y : y + DIGIT_SIZE, x : x + DIGIT_SIZE] += DIGIT_GAIN * small[..., None]
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    label = np.zeros(background.shape[:2], dtype=np.uint8)
    label[y : y + DIGIT_SIZE, x : x + DIGIT_SIZE][small > MASK_THRESHOLD] = value
    return image, label


def _balanced_draw(rng: np.random.Generator, n: int, pool: int) -> np.ndarray:
    """``n`` indices into ``range(pool)``: permutations of the pool one after another."""
    reps = -(-n // pool)
    return np.concatenate([rng.permutation(pool) for _ in range(reps)])[:n]


def _check_count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise SpikesegError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def make_mnist_cifar(
    mnist_dir: str | os.PathLike[str],
    cifar_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    num_train: int = 48000,
    num_test: int = 12000,
    labels: str = "binary",
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Generate MNIST-on-CIFAR10 from local MNIST and CIFAR-10 and write it to ``out_dir``.

    Args:
        mnist_dir: folder with MNIST's IDX files (plain or ``.gz``; also found in ``raw/``,
            ``MNIST/raw/`` or ``MNIST/`` under it).
        cifar_dir: ``cifar-10-batches-py`` (python version of CIFAR-10) or its parent.
        out_dir: output folder; must not exist yet, or be empty.
        num_train: training samples (the paper: 48,000), from MNIST/CIFAR-10 train.
        num_test: test samples (the paper: 12,000), from MNIST/CIFAR-10 test.
        labels: ``"binary"`` (2 classes: background, digit) or ``"digits"`` (11 classes:
            background and the digit's identity 0–9).
        seed: seed of all random draws; the same inputs and options give identical files.
        progress: show a progress bar.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`: the ``root`` of the ``"mnist_cifar"`` dataset.

    Raises:
        SpikesegError: a bad option; ``out_dir`` exists and is not empty; a missing or corrupt
            MNIST or CIFAR-10 file (naming it).
    """
    from ..progress import progress as progress_bar

    num_train = _check_count(num_train, "num_train")
    num_test = _check_count(num_test, "num_test")
    seed = _check_count(seed, "seed")
    if labels not in LABEL_MODES:
        raise SpikesegError(f"labels={labels!r}; choose one of: {', '.join(LABEL_MODES)}")
    out = Path(out_dir).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SpikesegError(f"{out}: already exists and is not empty; choose another output "
                            "folder or delete it")

    # Read every input before writing anything, so a missing file fails fast.
    counts = {"train": num_train, "test": num_test}
    sources: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for split, n in counts.items():
        if n == 0:
            continue
        digits, targets = load_mnist(mnist_dir, split)
        backgrounds = load_cifar10(cifar_dir, split)
        for what, arr in (("MNIST", digits), ("CIFAR-10", backgrounds)):
            if len(arr) == 0:
                raise SpikesegError(f"the {split} split of {what} is empty; cannot draw samples")
        sources[split] = (digits, targets, backgrounds)

    names = LABEL_MODES[labels]
    palette = default_palette(len(names))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        bar = progress_bar(total=num_train + num_test, desc="MNIST-on-CIFAR10", unit="img",
                           disable=not progress)
        with bar:
            for s, (split, n) in enumerate(counts.items()):
                (tmp / "images" / split).mkdir(parents=True)
                (tmp / "labels" / split).mkdir(parents=True)
                lines = []
                if n:
                    digits, targets, backgrounds = sources[split]
                    rng = np.random.default_rng([seed, s])
                    d_idx = _balanced_draw(rng, n, len(digits))
                    b_idx = _balanced_draw(rng, n, len(backgrounds))
                    offsets = rng.integers(0, MAX_OFFSET + 1, size=(n, 2))
                    for i in range(n):
                        d = int(d_idx[i])
                        value = 1 if labels == "binary" else int(targets[d]) + 1
                        image, label = compose_sample(
                            backgrounds[b_idx[i]], digits[d], offsets[i], value
                        )
                        img_rel = f"images/{split}/{i:06d}.png"
                        lbl_rel = f"labels/{split}/{i:06d}.png"
                        Image.fromarray(image).save(tmp / img_rel)  # RGB
                        lbl = Image.fromarray(label)  # L; putpalette makes it P, same values
                        lbl.putpalette(palette.ravel().tolist())
                        lbl.save(tmp / lbl_rel)
                        lines.append(f"{img_rel} {lbl_rel}\n")
                        bar.update(1)
                (tmp / f"{split}.txt").write_text("".join(lines))
        meta = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "labels": labels,
            "num_classes": len(names),
            "class_names": names,
            "counts": counts,
            "seed": seed,
            "image_size": [IMAGE_SIZE, IMAGE_SIZE],
            "recipe": {
                "digit_size": DIGIT_SIZE,
                "max_offset": MAX_OFFSET,
                "mask_threshold": MASK_THRESHOLD,
                "digit_gain": DIGIT_GAIN,
            },
            "mnist": str(Path(mnist_dir).expanduser().resolve()),
            "cifar": str(_find_cifar_dir(cifar_dir).resolve()),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        if out.is_dir():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# --------------------------------------------------------------------------- dataset


def _read_meta(root: Path) -> dict[str, Any]:
    path = root / "meta.json"
    if not path.is_file():
        raise SpikesegError(
            f"{root}: not a generated MNIST-on-CIFAR10 folder (no meta.json); {_MAKE_HINT}"
        )
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SpikesegError(f"{path}: unreadable ({e}); generate the dataset again") from None
    ok = (
        isinstance(meta, dict)
        and meta.get("format") == FORMAT
        and isinstance(meta.get("num_classes"), int)
        and 2 <= meta["num_classes"] <= IGNORE_INDEX
        and isinstance(meta.get("class_names"), list)
        and len(meta["class_names"]) == meta["num_classes"]
    )
    if not ok:
        raise SpikesegError(
            f"{path}: not a spikeseg MNIST-on-CIFAR10 description (format, num_classes, "
            "class_names); generate the dataset again"
        )
    return meta


def _read_pairs(root: Path, list_path: Path) -> list[tuple[Path, Path]]:
    if not list_path.is_file():
        raise SpikesegError(f"{list_path}: list file not found; generate the dataset again")
    try:
        text = list_path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise SpikesegError(f"{list_path}: cannot read the list file ({e})") from None
    pairs = []
    for n, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != 2:
            raise SpikesegError(
                f"{list_path}, line {n}: expected 'image_path label_path', got {line.strip()!r}"
            )
        found = []
        for kind, rel in zip(("image", "label"), tokens, strict=True):
            p = root / rel
            if not p.is_file():
                raise SpikesegError(
                    f"{list_path}, line {n}: {kind} {p} not found; generate the dataset again"
                )
            found.append(p)
        pairs.append((found[0], found[1]))
    return pairs


class MNISTOnCIFAR(SegmentationDataset):
    """A generated MNIST-on-CIFAR10 folder: items ``(float32 [3, H, W] in [0, 1],
    int64 [H, W])``.

    Build it with :func:`mnist_cifar` (or ``build_dataset("mnist_cifar", split, root=...)``).
    Files are read at each access; label values are checked against the classes of
    ``meta.json`` when read.

    Attributes:
        pairs: ``(image path, label path)`` per item.
        split: ``"train"`` or ``"val"`` (the generator's test list).
        size: output ``(H, W)``; 32×32 is the native size (no resizing).
        meta: the folder's ``meta.json``.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[Path, Path]],
        split: str,
        size: tuple[int, int],
        meta: dict[str, Any],
    ) -> None:
        self.pairs = list(pairs)
        self.split = split
        self.size = size
        self.meta = meta
        self.info = DatasetInfo(
            name="mnist_cifar",
            num_classes=int(meta["num_classes"]),
            class_names=[str(n) for n in meta["class_names"]],
            in_channels=3,
            temporal=False,
        )

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_path, label_path = self.pairs[index]
        image = read_image(image_path)
        label = read_label(label_path)
        if image.shape[:2] != label.shape:
            raise SpikesegError(
                f"{label_path}: label is {label.shape[1]}x{label.shape[0]} but its image is "
                f"{image.shape[1]}x{image.shape[0]}; generate the dataset again"
            )
        k = self.info.num_classes
        bad = (label >= k) & (label != IGNORE_INDEX)
        if bad.any():
            raise SpikesegError(
                f"{label_path}: label value {int(label[bad].max())} outside the {k} classes of "
                f"{self.meta.get('labels', '?')!r} labels in meta.json (0-{k - 1}, or "
                f"{IGNORE_INDEX} = ignore); generate the dataset again"
            )
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).div(255.0)
        return resize_image(x, self.size), resize_label(label, self.size)

    def __repr__(self) -> str:
        h, w = self.size
        return (
            f"MNISTOnCIFAR(split={self.split!r}, n={len(self)}, size={h}x{w}, "
            f"classes={self.info.num_classes})"
        )


@register_dataset("mnist_cifar")
def mnist_cifar(
    split: str,
    root: str | os.PathLike[str] | None = None,
    *,
    image_size: int | Sequence[int] = IMAGE_SIZE,
) -> MNISTOnCIFAR:
    """Build one split of a generated MNIST-on-CIFAR10 folder (see :func:`make_mnist_cifar`).

    Args:
        split: ``"train"``, or ``"val"`` (the test list; ``"test"`` is accepted too).
        root: the folder written by :func:`make_mnist_cifar`.
        image_size: output ``H = W`` as an int, or ``(H, W)``; 32 (default) is native,
            anything else resizes (images bilinear, antialiased; labels nearest).

    Returns:
        The dataset: items ``(float32 [3, H, W] in [0, 1], int64 [H, W])``, 2 classes
        (background, digit) or 11 (background, 0–9) as generated.

    Raises:
        SpikesegError: a bad split or size; a missing folder, ``meta.json`` or list file; a
            listed file missing. Labels outside the classes raise when the item is read.
    """
    if split not in SPLITS:
        raise SpikesegError(
            f"unknown split {split!r} for mnist_cifar; choose one of: {', '.join(SPLITS)}"
        )
    size = parse_size(image_size)
    if root is None:
        raise SpikesegError(f"the mnist_cifar dataset needs data.root; {_MAKE_HINT}")
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise SpikesegError(f"{folder}: folder not found; {_MAKE_HINT}")
    meta = _read_meta(folder)
    pairs = _read_pairs(folder, folder / f"{SPLITS[split]}.txt")
    return MNISTOnCIFAR(pairs, "val" if split == "test" else split, size, meta)
