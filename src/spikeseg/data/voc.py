"""PASCAL VOC2012 semantic segmentation, with the SBD-augmented training set (10,582 images).

Where the data comes from (nothing is downloaded by spikeseg):

* VOC2012: ``VOCtrainval_11-May-2012.tar`` from the PASCAL VOC site
  (http://host.robots.ox.ac.uk/pascal/VOC/voc2012/): 1,464 train and 1,449 val images with
  segmentation labels.
* SBD (Hariharan et al., "Semantic contours from inverse detectors", ICCV 2011):
  ``benchmark.tgz`` from the Berkeley semantic contours page, 11,355 images of VOC2011 with
  class labels as MATLAB files; or the widely shared ``SegmentationClassAug`` folder of PNGs
  converted from it, with its ``train_aug.txt`` list (what the paper's code reads).

Expected layout (``data.root`` may be the ``VOC2012`` folder, the ``VOCdevkit`` folder, or the
folder holding ``VOCdevkit``; the ``VOC2012`` folder is found automatically)::

    VOCdevkit/
      VOC2012/
        JPEGImages/<id>.jpg                  # all images (RGB JPEG)
        SegmentationClass/<id>.png           # palette PNGs: index = class id 0-20, 255 = boundary
        SegmentationClassAug/<id>.png        # optional (SBD as PNGs): grey PNGs of class ids
        ImageSets/Segmentation/
          train.txt  val.txt  trainval.txt   # one id per line (e.g. 2007_000032)
          train_aug.txt                      # optional: "/JPEGImages/<id>.jpg
                                             #   /SegmentationClassAug/<id>.png" per line
                                             #   (paths relative to VOC2012/, leading slash
                                             #   optional), or one id per line
        train_aug.txt                        # (also accepted here)
      benchmark_RELEASE/dataset/             # optional: SBD's own release (also found beside
        img/<id>.jpg                         #   VOCdevkit, as VOCdevkit/SBD/, or given with
        cls/<id>.mat                         #   the ``sbd_root`` option)
        train.txt  val.txt                   # SBD's own split, one id per line

Every list file may also hold ``image_path label_path`` pairs (relative to ``VOC2012/``)
instead of ids, as the paper's code writes them.

SBD's ``cls/<id>.mat`` files hold a MATLAB struct ``GTcls`` whose field ``Segmentation`` is
a ``uint8 [H, W]`` map of class ids 0–20 (read with :func:`scipy.io.loadmat`: the array is
``mat["GTcls"][0]["Segmentation"][0]``).

The augmented training set (``augmented`` option) is either read from ``train_aug.txt``
(``"aug_list"``) or built here from SBD (``"sbd"``) as the union of VOC2012 train, SBD train
and SBD val, minus every VOC2012 val id: 10,582 images with the full downloads. Built from
SBD, an image is read from ``JPEGImages/`` when there, else from SBD's ``img/``; its label from
VOC's ``SegmentationClass/`` when VOC annotated it (finer, with a 255 boundary), else from
SBD's ``cls/``. Either way, VOC2012 val ids never enter training.

Items are ``(image, label)``: ``float32 [3, H, W]`` RGB in ``[0, 1]`` resized with antialiased
bilinear interpolation to ``image_size`` (the paper: 64×64, aspect ratio not kept), and
``int64 [H, W]`` class ids resized with nearest neighbour, 255 = ignore (object boundaries).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import SpikesegError
from .base import IGNORE_INDEX, DatasetInfo, SegmentationDataset, register_dataset, voc_palette
from .transforms import (
    parse_size,
    read_image,
    read_label,
    resize_image,
    resize_label,
)

__all__ = ["CLASS_NAMES", "NUM_CLASSES", "VOCSegmentation", "find_voc_root", "voc"]

NUM_CLASSES = 21
CLASS_NAMES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
]
SPLITS = ("train", "val", "trainval")
AUGMENTED = ("auto", "aug_list", "sbd", "none")

_LISTS = Path("ImageSets") / "Segmentation"
_INSTALL_HINT = 'pip install "spikeseg[datasets]"'
_VOC_HINT = (
    "point data.root at VOCdevkit/VOC2012 (extracted from VOCtrainval_11-May-2012.tar)"
)


# --------------------------------------------------------------------------- finding files


def find_voc_root(root: str | os.PathLike[str]) -> Path:
    """The ``VOC2012`` folder under ``root`` (itself, ``root/VOC2012`` or
    ``root/VOCdevkit/VOC2012``): the first that has a ``JPEGImages`` folder.

    Raises:
        SpikesegError: ``root`` missing, or no VOC2012 folder found under it.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise SpikesegError(f"{root}: folder not found; {_VOC_HINT}")
    for cand in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (cand / "JPEGImages").is_dir():
            return cand
    raise SpikesegError(
        f"{root}: not a PASCAL VOC2012 folder (no JPEGImages/ in it, nor in VOC2012/ or "
        f"VOCdevkit/VOC2012/); {_VOC_HINT}"
    )


def _find_sbd(voc_root: Path, sbd_root: str | os.PathLike[str] | None) -> Path | None:
    """SBD's ``dataset`` folder (the one holding ``cls/``), or None when not found.

    With ``sbd_root`` given it must be found there (``sbd_root``, ``sbd_root/dataset`` or
    ``sbd_root/benchmark_RELEASE/dataset``); otherwise it is looked for next to VOC2012.
    """
    if sbd_root is not None:
        p = Path(sbd_root).expanduser()
        cands = (p, p / "dataset", p / "benchmark_RELEASE" / "dataset")
        for c in cands:
            if (c / "cls").is_dir():
                return c
        raise SpikesegError(
            f"sbd_root {p}: no SBD cls/ folder in it, nor in dataset/ or "
            "benchmark_RELEASE/dataset/; point sbd_root at benchmark_RELEASE/dataset of the "
            "extracted benchmark.tgz"
        )
    for base in (voc_root, voc_root.parent, voc_root.parent.parent):
        for c in (
            base / "benchmark_RELEASE" / "dataset",
            base / "SBD" / "dataset",
            base / "SBD",
            base / "sbd" / "dataset",
            base / "sbd",
        ):
            if (c / "cls").is_dir():
                return c
    return None


def _find_aug_list(voc_root: Path) -> Path | None:
    for cand in (voc_root / _LISTS / "train_aug.txt", voc_root / "train_aug.txt"):
        if cand.is_file():
            return cand
    return None


def _read_list(path: Path) -> list[tuple[int, list[str]]]:
    """Non-empty, non-comment lines of a list file as ``(line number, tokens)``.

    Raises:
        SpikesegError: unreadable file, or a line with neither one nor two fields.
    """
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise SpikesegError(f"{path}: cannot read the list file ({e})") from None
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        if len(tokens) > 2:
            raise SpikesegError(
                f"{path}, line {n}: expected an image id or 'image_path label_path', got "
                f"{line.strip()!r}"
            )
        out.append((n, tokens))
    return out


def _resolve(rel: str, bases: Sequence[Path]) -> Path | None:
    """``base / rel`` for the first base where it exists (``rel`` may start with '/')."""
    rel = rel.lstrip("/\\")
    for base in bases:
        p = base / rel
        if p.is_file():
            return p
    return None


class _Lister:
    """Turns list files into ``(image, label)`` path pairs, checking every file exists."""

    def __init__(self, voc_root: Path) -> None:
        self.root = voc_root

    def required_list(self, name: str, why: str = "") -> Path:
        path = self.root / _LISTS / f"{name}.txt"
        if not path.is_file():
            raise SpikesegError(
                f"{path}: list file not found{why}; the VOC2012 trainval archive has it under "
                "ImageSets/Segmentation/ (re-extract VOCtrainval_11-May-2012.tar)"
            )
        return path

    def pairs(self, path: Path, label_dir: str) -> list[tuple[Path, Path]]:
        """Pairs of a list of ids (``JPEGImages/<id>.jpg``, ``<label_dir>/<id>.png``) or of
        ``image_path label_path`` lines (relative to VOC2012/, else to the list's folder)."""
        out = []
        bases = (self.root, path.parent, self.root.parent)
        for n, tokens in _read_list(path):
            if len(tokens) == 1:
                image = self.root / "JPEGImages" / f"{tokens[0]}.jpg"
                label = self.root / label_dir / f"{tokens[0]}.png"
                for kind, p in (("image", image), ("label", label)):
                    if not p.is_file():
                        raise SpikesegError(
                            f"{path}, line {n}: {kind} {p} not found; re-extract the dataset "
                            "or remove the line"
                        )
                out.append((image, label))
                continue
            found = []
            for kind, rel in (("image", tokens[0]), ("label", tokens[1])):
                p = _resolve(rel, bases)
                if p is None:
                    raise SpikesegError(
                        f"{path}, line {n}: {kind} {self.root / rel.lstrip('/')} not found "
                        f"(paths are read relative to {self.root}); re-extract the dataset "
                        "or fix the line"
                    )
                found.append(p)
            out.append((found[0], found[1]))
        return out

    def ids(self, path: Path) -> list[tuple[int, str]]:
        """``(line number, id)`` of every entry of a list (the image file's stem for pairs)."""
        return [(n, Path(t[0]).stem) for n, t in _read_list(path)]


def _val_ids(lister: _Lister) -> set[str] | None:
    path = lister.root / _LISTS / "val.txt"
    return {i for _, i in lister.ids(path)} if path.is_file() else None


def _drop_val(
    pairs: list[tuple[Path, Path]], val_ids: set[str] | None, source: Path
) -> list[tuple[Path, Path]]:
    if not val_ids:
        return pairs
    kept = [p for p in pairs if p[0].stem not in val_ids]
    if len(kept) < len(pairs):
        warnings.warn(
            f"{source}: {len(pairs) - len(kept)} of its images belong to the VOC2012 val split "
            "and were left out of training (validation images must not be trained on)",
            stacklevel=4,
        )
    return kept


def _sbd_train_pairs(lister: _Lister, sbd: Path) -> list[tuple[Path, Path]]:
    """VOC2012 train ∪ SBD train ∪ SBD val, minus VOC2012 val (10,582 images in full)."""
    root = lister.root
    val_list = lister.required_list(
        "val", " (needed to keep the VOC2012 val images out of the SBD-augmented training set)"
    )
    val_ids = {i for _, i in lister.ids(val_list)}
    sources: list[tuple[Path, list[tuple[int, str]]]] = []
    voc_train = root / _LISTS / "train.txt"
    if voc_train.is_file():
        sources.append((voc_train, lister.ids(voc_train)))
    sbd_lists = [sbd / "train.txt", sbd / "val.txt"]
    if not any(p.is_file() for p in sbd_lists):
        raise SpikesegError(
            f"{sbd}: SBD list files train.txt and val.txt not found; re-extract SBD's "
            "benchmark.tgz (they are in benchmark_RELEASE/dataset/)"
        )
    sources += [(p, lister.ids(p)) for p in sbd_lists if p.is_file()]
    seen: set[str] = set()
    out = []
    for list_path, entries in sources:
        for n, id_ in entries:
            if id_ in seen or id_ in val_ids:
                continue
            seen.add(id_)
            image = root / "JPEGImages" / f"{id_}.jpg"
            if not image.is_file():
                image = sbd / "img" / f"{id_}.jpg"
            label = root / "SegmentationClass" / f"{id_}.png"
            if not label.is_file():
                label = sbd / "cls" / f"{id_}.mat"
            for kind, p, where in (
                ("image", image, f"{root / 'JPEGImages'} nor {sbd / 'img'}"),
                ("label", label, f"{root / 'SegmentationClass'} nor {sbd / 'cls'}"),
            ):
                if not p.is_file():
                    raise SpikesegError(
                        f"{list_path}, line {n}: {kind} of {id_!r} found neither in {where}; "
                        "re-extract the dataset or remove the line"
                    )
            out.append((image, label))
    return out


def _require_scipy() -> None:
    try:
        import scipy.io  # noqa: F401
    except ImportError:
        raise SpikesegError(
            f"reading SBD's .mat labels needs SciPy: {_INSTALL_HINT} (or use "
            "data.options={augmented: none})"
        ) from None


# --------------------------------------------------------------------------- reading labels


def read_sbd_mat(path: str | os.PathLike[str]) -> np.ndarray:
    """Class ids of an SBD ``cls/<id>.mat`` file: ``GTcls.Segmentation``, ``uint8 [H, W]``.

    Raises:
        SpikesegError: SciPy missing, unreadable file, or no ``GTcls.Segmentation`` in it.
    """
    _require_scipy()
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        mat = loadmat(path, variable_names=["GTcls"])
    except FileNotFoundError:
        raise SpikesegError(f"{path}: SBD label not found; re-extract benchmark.tgz") from None
    except (OSError, ValueError, TypeError, MatReadError) as e:
        raise SpikesegError(
            f"{path}: cannot read the SBD label ({type(e).__name__}: {e}); the file is corrupt: "
            "extract benchmark.tgz again"
        ) from None
    gt = mat.get("GTcls")
    seg = None
    if isinstance(gt, np.ndarray) and gt.dtype.names and "Segmentation" in gt.dtype.names:
        seg = np.asarray(gt["Segmentation"].ravel()[0])  # mat["GTcls"][0]["Segmentation"][0]
    if seg is None or seg.ndim != 2 or seg.dtype.kind not in "iu":
        raise SpikesegError(
            f"{path}: no GTcls.Segmentation map of class ids in it; expected a file of SBD's "
            "cls/ folder (not inst/)"
        )
    return seg


def _read_voc_label(path: Path) -> np.ndarray:
    return read_sbd_mat(path) if path.suffix.lower() == ".mat" else read_label(path)


def _check_label_values(label: np.ndarray, path: Path) -> None:
    if label.size == 0:
        return
    if int(label.max()) < NUM_CLASSES and int(label.min()) >= 0:
        return
    values = np.unique(label)
    bad = values[((values < 0) | (values >= NUM_CLASSES)) & (values != IGNORE_INDEX)]
    if bad.size:
        shown = ", ".join(str(int(v)) for v in bad[:8]) + (", ..." if bad.size > 8 else "")
        raise SpikesegError(
            f"{path}: label values {shown} are outside the VOC classes 0-{NUM_CLASSES - 1} and "
            f"{IGNORE_INDEX} (ignore); is it a class-id PNG (SegmentationClass) and not a "
            "colour or instance map (SegmentationObject)?"
        )


# --------------------------------------------------------------------------- dataset


class VOCSegmentation(SegmentationDataset):
    """PASCAL VOC2012 segmentation: items ``(float32 [3, H, W] in [0, 1], int64 [H, W])``.

    Build it with :func:`voc` (or ``build_dataset("voc", split, root=...)``). Files are read
    at each access; a label is checked (class ids 0–20 or 255, same size as its image) when it
    is read.

    Attributes:
        pairs: ``(image path, label path)`` per item; labels are PNGs or SBD ``.mat`` files.
        split: ``"train"``, ``"val"`` or ``"trainval"``.
        size: output ``(H, W)``.
        ignore_to_background: labels' 255 is turned into 0 (background).
        source: how the list was made (e.g. ``"ImageSets/Segmentation/train_aug.txt"``).
    """

    def __init__(
        self,
        pairs: Sequence[tuple[Path, Path]],
        split: str,
        size: tuple[int, int],
        ignore_to_background: bool = False,
        source: str = "",
    ) -> None:
        self.pairs = list(pairs)
        self.split = split
        self.size = size
        self.ignore_to_background = ignore_to_background
        self.source = source
        self.info = DatasetInfo(
            name="voc",
            num_classes=NUM_CLASSES,
            class_names=list(CLASS_NAMES),
            in_channels=3,
            temporal=False,
            palette=voc_palette(NUM_CLASSES),  # the devkit's colour map, as published figures
        )

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_path, label_path = self.pairs[index]
        image = read_image(image_path)
        label = _read_voc_label(label_path)
        if image.shape[:2] != label.shape:
            raise SpikesegError(
                f"{label_path}: label is {label.shape[1]}x{label.shape[0]} but its image "
                f"{image_path} is {image.shape[1]}x{image.shape[0]}; the two files do not "
                "belong together (re-extract the dataset)"
            )
        _check_label_values(label, label_path)
        if self.ignore_to_background:
            label = np.where(label == IGNORE_INDEX, 0, label)
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).div(255.0)
        return resize_image(x, self.size), resize_label(label, self.size)

    def __repr__(self) -> str:
        h, w = self.size
        return (
            f"VOCSegmentation(split={self.split!r}, n={len(self)}, size={h}x{w}, "
            f"source={self.source!r})"
        )


def _train_pairs(
    lister: _Lister, augmented: str, sbd_root: str | os.PathLike[str] | None
) -> tuple[list[tuple[Path, Path]], str]:
    """Training pairs for the ``augmented`` choice, and a description of their source."""
    root = lister.root
    if augmented in ("auto", "aug_list"):
        aug = _find_aug_list(root)
        if aug is not None:
            pairs = lister.pairs(aug, "SegmentationClassAug")
            return _drop_val(pairs, _val_ids(lister), aug), str(aug.relative_to(root))
        if augmented == "aug_list":
            raise SpikesegError(
                f"{root / _LISTS / 'train_aug.txt'}: list file not found (nor {root}/"
                "train_aug.txt); put the SBD-augmented list and SegmentationClassAug/ there, "
                "or use data.options={augmented: sbd} with SBD's release, or augmented: none"
            )
    if augmented in ("auto", "sbd"):
        sbd = _find_sbd(root, sbd_root)
        if sbd is not None:
            _require_scipy()
            return _sbd_train_pairs(lister, sbd), f"VOC2012 train + SBD ({sbd})"
        if augmented == "sbd":
            raise SpikesegError(
                f"{root}: SBD not found (looked for benchmark_RELEASE/dataset/cls/ and SBD/cls/ "
                "in it, in its parent and grandparent); pass its folder with "
                "data.options={sbd_root: PATH}"
            )
        warnings.warn(
            f"{root}: neither train_aug.txt nor SBD found, training on the "
            "1,464 VOC2012 train images only (the paper uses the 10,582-image SBD-augmented "
            "set; see the 'augmented' and 'sbd_root' options); set augmented: none to silence",
            stacklevel=4,
        )
    path = lister.required_list("train")
    return lister.pairs(path, "SegmentationClass"), str(path.relative_to(root))


@register_dataset("voc", palette=voc_palette)  # the official colours
def voc(
    split: str,
    root: str | os.PathLike[str] | None = None,
    *,
    image_size: int | Sequence[int] = 64,
    augmented: str = "auto",
    sbd_root: str | os.PathLike[str] | None = None,
    ignore_to_background: bool = False,
) -> VOCSegmentation:
    """Build one split of PASCAL VOC2012 segmentation (21 classes, 255 = ignore).

    Args:
        split: ``"train"``, ``"val"`` (the 1,449 VOC2012 val images) or ``"trainval"``
            (the training set chosen by ``augmented`` plus val).
        root: the ``VOC2012`` folder, or ``VOCdevkit``, or the folder holding ``VOCdevkit``.
        image_size: output ``H = W`` as an int, or ``(H, W)``; the paper uses 64.
        augmented: the training set (ignored for ``"val"``):
            ``"auto"`` (default): ``train_aug.txt`` if present, else built from SBD if found,
            else VOC2012 train only (with a warning);
            ``"aug_list"``: ``train_aug.txt`` with ``SegmentationClassAug/`` labels;
            ``"sbd"``: VOC2012 train ∪ SBD train ∪ SBD val minus VOC2012 val, read from SBD's
            release (needs SciPy);
            ``"none"``: VOC2012 ``train.txt`` (1,464 images; ``trainval.txt`` for trainval).
            VOC2012 val ids are never trained on (removed from ``train_aug.txt`` with a warning).
        sbd_root: SBD's ``benchmark_RELEASE`` (or its ``dataset``) folder when it is not next
            to VOC2012.
        ignore_to_background: turn the 255 boundary label into background (0) in the training
            splits (``"train"``, ``"trainval"``), as the paper's code did; ``"val"`` always
            keeps 255 as ignore so that scores stay comparable.

    Returns:
        The dataset: items ``(float32 [3, H, W] RGB in [0, 1], int64 [H, W] in 0..20 or 255)``.

    Raises:
        SpikesegError: a bad option; a missing folder or list file; a listed id whose image or
            label is missing (naming the list and line). Corrupt files and labels with values
            outside 0–20/255 raise when the item is read.
    """
    if split not in SPLITS:
        raise SpikesegError(
            f"unknown split {split!r} for voc; choose one of: {', '.join(SPLITS)}"
        )
    if augmented not in AUGMENTED:
        raise SpikesegError(
            f"voc option augmented={augmented!r}; choose one of: {', '.join(AUGMENTED)}"
        )
    if not isinstance(ignore_to_background, bool):
        raise SpikesegError(
            f"voc option ignore_to_background must be true or false, got {ignore_to_background!r}"
        )
    size = parse_size(image_size)
    if root is None:
        raise SpikesegError(f"the voc dataset needs data.root; {_VOC_HINT}")
    lister = _Lister(find_voc_root(root))

    if split == "val":
        path = lister.required_list("val")
        pairs, source = lister.pairs(path, "SegmentationClass"), str(path.relative_to(lister.root))
    elif split == "trainval" and augmented == "none":
        path = lister.required_list("trainval")
        pairs, source = lister.pairs(path, "SegmentationClass"), str(path.relative_to(lister.root))
    else:
        pairs, source = _train_pairs(lister, augmented, sbd_root)
        if split == "trainval":
            val = lister.pairs(lister.required_list("val"), "SegmentationClass")
            pairs, source = pairs + val, f"{source} + {_LISTS / 'val.txt'}"
    return VOCSegmentation(
        pairs,
        split,
        size,
        ignore_to_background=ignore_to_background and split != "val",
        source=source,
    )
