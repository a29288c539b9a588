"""DDD17 event frames with EV-SegNet's semantic labels (the paper's event dataset).

Where the data comes from (nothing is downloaded by spikeseg): DDD17, the DAVIS Driving
Dataset (Binas et al., 2017), recorded with a 346×260 DAVIS camera; Alonso & Murillo
(EV-SegNet, CVPRW 2019) released a subset of its recordings as per-frame event tensors with
semantic pseudo-labels (https://github.com/Shathe/Ev-SegNet, "Download it here" in its
README). The labels come from a Cityscapes network run on the grey APS frames, mapped to six
categories, with the noisy bottom rows cut off: every array is 200 rows × 346 columns.

Expected layout (``data.root`` is the extracted folder, or the folder that holds it)::

    <root>/
      events/train/rec<recording>_export_<frame>.npy   # float32 [200, 346, 6]
      events/test/...                                  # recording 1487417411 only
      labels/train/rec<recording>_export_<frame>.png   # grey PNG, class ids 0-5 (255 = ignore)
      labels/test/...
      images/train/, images/test/                      # grey APS frames (PNG; not read)
      datalists/train.txt, datalists/test.txt          # optional list files (see below)

Checked against the sources: EV-SegNet's ``generate_dataset.py`` writes one file per exported
frame named ``rec<recording>_export`` + ``_`` + frame number (``np.save`` adds ``.npy``;
images and labels are ``.png``), keeps rows ``[:200]``, and puts recording
``rec1487417411`` in ``test/`` (``other/`` for ``rec1487356509``), all others in ``train/``;
its ``utils/Loader.py`` pairs events and labels by sorted file name. The list files are those
of the paper's code (``Intelligent-Computing-Lab-Yale/SNN-Segmentation``,
``data/ddd17/datalists.py``): one ``events/<split>/<name>.npy labels/<split>/<name>.png``
pair per line, paths relative to the root. Without a list file the two folders are scanned
and paired by file name. A frame number written as ``<n>.0`` (the generator run under
Python 3) is read as ``<n>``.

Event tensor channels (EV-SegNet's encoding of the events of one exported frame, 50 ms):
0 positive count, 1 negative count, 2 positive mean timestamp, 3 positive timestamp std,
4 negative mean timestamp, 5 negative timestamp std. The paper (and its code) uses channels
0–1; ``channels="all"`` reads all six. Channels are read in the order ``channels`` lists them
and never reordered, so the default input is (positive = ON, negative = OFF): the *reverse* of
spikeseg's and Tonic's count frames (:func:`~spikeseg.encoding.events.to_count_frames`:
channel 0 OFF, 1 ON), which the other event datasets give. A model trained on DDD17 therefore
reads ON first; to train on DDD17 with the count-frame order, pass ``channels=[1, 0]``.
``DatasetInfo.on_off_channels`` records where the ON and OFF counts are (for pictures).
Classes: 0 flat, 1 construction+sky, 2 object, 3 nature, 4 human, 5 vehicle; 255 = ignore.

Items, with ``T = timesteps``:

* ``timesteps=None``: ``(float32 [C, H, W], int64 [H, W])``, one frame and its label;
* ``timesteps=T``: ``(float32 [T, C, H, W], int64 [H, W])``: the ``T`` consecutive frames
  ending at a labelled frame, with that frame's label. A sequence never crosses a recording or
  a gap in the frame numbers. With ``pad="none"`` (default) a labelled frame whose ``T - 1``
  predecessors are not all present is dropped; ``pad="repeat"`` repeats the earliest frame
  of its run instead, ``pad="zeros"`` puts empty frames (no events) in front. Predecessors
  are looked up among the frames of the split (of the list file, when one is read).

Each frame is resized to ``image_size`` with antialiased bilinear interpolation (an average
over the source pixels a target pixel covers: right for counts) and then normalised per frame
and per channel: ``normalize="minmax"`` (default) maps a channel's ``[min, max]`` to
``[-0.5, 0.5]`` as the paper's code meant to (it scaled each image *column* instead, which
turns empty columns into negative values); a constant channel (e.g. no events) becomes
``-0.5``, the value of "no events" in any other frame. ``"log"`` gives
``sign(x)·log(1 + |x|)`` and ``"none"`` the raw values. Labels are resized with nearest
neighbour. The default ``image_size`` is 64, the paper's 64×64 (aspect ratio not kept).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import SpikesegError
from .base import DatasetInfo, SegmentationDataset, default_palette, register_dataset
from .transforms import (
    NORMALIZATIONS,
    check_choice,
    check_label_values,
    is_int,
    normalize_frames,
    parse_size,
    parse_timesteps,
    read_label,
    resize_image,
    resize_label,
)

__all__ = [
    "CLASS_NAMES",
    "EVENT_CHANNELS",
    "NUM_CLASSES",
    "DDD17",
    "Sample",
    "ddd17",
    "find_ddd17_root",
    "normalize_frames",
    "parse_frame_name",
]

NUM_CLASSES = 6
CLASS_NAMES = ["flat", "construction+sky", "object", "nature", "human", "vehicle"]
CLASS_COLOURS = [  # Cityscapes category colours (as ESS draws DDD17)
    (128, 64, 128), (70, 70, 70), (220, 220, 0), (107, 142, 35), (220, 20, 60), (0, 0, 142),
]
EVENT_CHANNELS = (
    "positive count", "negative count",
    "positive mean timestamp", "positive timestamp std",
    "negative mean timestamp", "negative timestamp std",
)
SPLITS = {"train": "train", "val": "test", "test": "test"}
"""spikeseg split -> EV-SegNet folder ("val" is the released test recording)."""
PADS = ("none", "repeat", "zeros")

_NAME = re.compile(r"^rec(?P<rec>\d+)_export_(?P<frame>\d+)(?:\.0)?$")
_HINT = (
    "point data.root at the extracted EV-SegNet DDD17 folder (the one holding events/ and "
    "labels/; download link in the README of github.com/Shathe/Ev-SegNet)"
)


# --------------------------------------------------------------------------- finding files


def parse_frame_name(name: str) -> tuple[str, int] | None:
    """``(recording, frame)`` of an EV-SegNet file name, or None if it is not one.

    >>> parse_frame_name("rec1487417411_export_100.npy")
    ('1487417411', 100)
    """
    stem = name[: -len(Path(name).suffix)] if Path(name).suffix in (".npy", ".png") else name
    m = _NAME.match(stem)
    return (m["rec"], int(m["frame"])) if m else None


def find_ddd17_root(root: str | os.PathLike[str]) -> Path:
    """The folder under ``root`` that holds ``events/`` and ``labels/``: ``root`` itself or
    one of its subfolders (e.g. the folder a downloaded archive extracts to).

    Raises:
        SpikesegError: ``root`` missing, or no such folder.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise SpikesegError(f"{root}: folder not found; {_HINT}")
    if (root / "events").is_dir() and (root / "labels").is_dir():
        return root
    subs = sorted(p for p in root.iterdir() if (p / "events").is_dir() and (p / "labels").is_dir())
    if len(subs) == 1:
        return subs[0]
    if len(subs) > 1:
        raise SpikesegError(
            f"{root}: several DDD17 folders in it ({', '.join(p.name for p in subs)}); "
            "point data.root at one of them"
        )
    raise SpikesegError(
        f"{root}: no events/ and labels/ folders in it (nor in a subfolder); {_HINT}"
    )


@dataclass(frozen=True)
class _Frame:
    events: Path
    label: Path
    key: tuple[str, int] | None  # (recording, frame number)


@dataclass(frozen=True)
class Sample:
    """One item: the event files of its frames (None = an empty frame) and the label file."""

    events: tuple[Path | None, ...]
    label: Path


def _resolve_list(root: Path, native: str, datalist: str | None) -> Path | None:
    """The list file to read, or None for a folder scan."""
    if datalist is None:
        path = root / "datalists" / f"{native}.txt"
        return path if path.is_file() else None
    if datalist == "scan":
        return None
    if not isinstance(datalist, str) or not datalist:
        raise SpikesegError(f"datalist must be None, 'scan' or a list name/path, got {datalist!r}")
    cands = [Path(datalist).expanduser(), root / datalist,
             root / "datalists" / datalist, root / "datalists" / f"{datalist}.txt"]
    for c in cands:
        if c.is_file():
            return c
    raise SpikesegError(
        f"datalist {datalist!r}: no such list file (looked for {cands[-1]} and {cands[0]}); "
        "give a file name under datalists/ or a path, or 'scan' to read the folders"
    )


def _read_datalist(path: Path, root: Path) -> list[_Frame]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise SpikesegError(f"{path}: cannot read the list file ({e})") from None
    frames = []
    for n, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        if len(tokens) != 2:
            raise SpikesegError(
                f"{path}, line {n}: expected 'events/<split>/<name>.npy "
                f"labels/<split>/<name>.png', got {line.strip()!r}"
            )
        found = []
        for kind, rel in (("events", tokens[0]), ("label", tokens[1])):
            p = Path(rel)
            if not (p.is_absolute() and p.is_file()):
                p = root / rel.lstrip("/\\")  # relative to the root, leading slash or not
            if not p.is_file():
                raise SpikesegError(
                    f"{path}, line {n}: {kind} file {p} not found (paths are read relative to "
                    f"{root}); re-extract the dataset or fix the line"
                )
            found.append(p)
        frames.append(_Frame(found[0], found[1], parse_frame_name(found[0].name)))
    if not frames:
        raise SpikesegError(f"{path}: the list file has no entries")
    return frames


def _scan(root: Path, native: str) -> list[_Frame]:
    ev_dir, lab_dir = root / "events" / native, root / "labels" / native
    for d in (ev_dir, lab_dir):
        if not d.is_dir():
            raise SpikesegError(f"{d}: folder not found; {_HINT}")
    events = {p.stem: p for p in ev_dir.iterdir() if p.suffix == ".npy"}
    labels = {p.stem: p for p in lab_dir.iterdir() if p.suffix == ".png"}
    unpaired = sorted(set(labels) - set(events))
    if unpaired:
        stem = unpaired[0]
        raise SpikesegError(
            f"label {labels[stem]} has no events file ({ev_dir / (stem + '.npy')} is missing"
            f"{f', and {len(unpaired) - 1} more' if len(unpaired) > 1 else ''}); re-extract the "
            "dataset or delete the label"
        )
    unpaired = sorted(set(events) - set(labels))
    if unpaired:
        stem = unpaired[0]
        raise SpikesegError(
            f"events file {events[stem]} has no label ({lab_dir / (stem + '.png')} is missing"
            f"{f', and {len(unpaired) - 1} more' if len(unpaired) > 1 else ''}); re-extract the "
            "dataset or delete the events file"
        )
    if not events:
        raise SpikesegError(f"{ev_dir}: no .npy event files in it; {_HINT}")
    frames = [_Frame(events[s], labels[s], parse_frame_name(s)) for s in events]
    # Natural order: by recording, then frame number (names that do not parse go last).
    return sorted(frames, key=lambda f: (f.key is None, f.key or ("", 0), f.events.name))


def _make_samples(frames: list[_Frame], timesteps: int, pad: str) -> list[Sample]:
    """Samples of ``timesteps`` consecutive frames ending at each labelled frame."""
    if timesteps == 1:
        return [Sample((f.events,), f.label) for f in frames]
    unnamed = [f for f in frames if f.key is None]
    if unnamed:
        raise SpikesegError(
            f"events file {unnamed[0].events} is not named rec<recording>_export_<frame>.npy, so "
            "its predecessors cannot be found; rename it as the release does, or use timesteps=1"
        )
    by_key = {f.key: f for f in frames}
    samples = []
    for f in frames:
        rec, n = f.key  # type: ignore[misc]
        run = [f.events]
        while len(run) < timesteps and (rec, n - len(run)) in by_key:
            run.insert(0, by_key[(rec, n - len(run))].events)
        missing = timesteps - len(run)
        if missing and pad == "none":
            continue  # history incomplete: the start of a recording or a gap in frame numbers
        fill: list[Path | None] = [run[0] if pad == "repeat" else None] * missing
        samples.append(Sample(tuple(fill + run), f.label))
    return samples


# --------------------------------------------------------------------------- dataset


def _ddd17_palette() -> np.ndarray:
    palette = default_palette(NUM_CLASSES)
    palette[:NUM_CLASSES] = np.asarray(CLASS_COLOURS, dtype=np.uint8)
    return palette


class DDD17(SegmentationDataset):
    """DDD17 / EV-SegNet event frames; build it with :func:`ddd17`.

    Items: ``(float32 [C, H, W], int64 [H, W])`` without ``timesteps``, else
    ``(float32 [T, C, H, W], int64 [H, W])`` (the module docstring has the details).

    Attributes:
        root: the folder holding ``events/`` and ``labels/``.
        split: ``"train"`` or ``"test"`` (the release's folder names).
        samples: one :class:`Sample` per item.
        list_file: the list file read, or None when the folders were scanned.
    """

    def __init__(
        self,
        root: Path,
        split: str,
        samples: list[Sample],
        *,
        size: tuple[int, int],
        timesteps: int | None,
        channels: tuple[int, ...],
        normalize: str,
        list_file: Path | None = None,
    ) -> None:
        self.root = root
        self.split = split
        self.samples = samples
        self.size = size
        self.timesteps = timesteps
        self.channels = channels
        self.normalize = normalize
        self.list_file = list_file
        self.info = DatasetInfo(
            name="ddd17",
            num_classes=NUM_CLASSES,
            class_names=list(CLASS_NAMES),
            in_channels=len(channels),
            temporal=timesteps is not None,
            palette=_ddd17_palette(),
            # EV-SegNet's stored order (positive, negative), kept as the data has it
            on_off_channels=(channels.index(0), channels.index(1))
            if 0 in channels and 1 in channels else None,
        )

    def __len__(self) -> int:
        return len(self.samples)

    def _load_events(self, path: Path) -> np.ndarray:
        """The chosen channels of one event file, ``float32 [C, H, W]``."""
        try:
            arr = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise SpikesegError(f"events file {path} not found; re-extract the dataset") from None
        except (OSError, ValueError, EOFError) as e:
            raise SpikesegError(
                f"events file {path} is unreadable or corrupt ({e}); extract it again"
            ) from None
        if (
            not isinstance(arr, np.ndarray)
            or arr.ndim != 3
            or arr.shape[2] != len(EVENT_CHANNELS)
            or min(arr.shape[:2]) < 1
            or not np.issubdtype(arr.dtype, np.floating)
        ):
            raise SpikesegError(
                f"events file {path} holds a {getattr(arr, 'dtype', type(arr))} array of shape "
                f"{getattr(arr, 'shape', '?')}; expected EV-SegNet's float32 [H, W, 6] "
                "(200 x 346 x 6 in the release)"
            )
        out = np.ascontiguousarray(arr[:, :, list(self.channels)].transpose(2, 0, 1),
                                   dtype=np.float32)
        if not np.isfinite(out).all():
            bad = int((~np.isfinite(out)).sum())
            raise SpikesegError(
                f"events file {path} holds {bad} NaN or infinite values in the channels read; "
                "the file is damaged: extract it again (or leave it out of the datalist)"
            )
        return out

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self.samples[index]
        last = self._load_events(sample.events[-1])  # type: ignore[arg-type]
        frames = []
        for path in sample.events[:-1]:
            arr = np.zeros_like(last) if path is None else self._load_events(path)
            if arr.shape != last.shape:
                raise SpikesegError(
                    f"events file {path} is {arr.shape[1]}x{arr.shape[2]} but "
                    f"{sample.events[-1]} is {last.shape[1]}x{last.shape[2]}; the frames of a "
                    "recording must have one size"
                )
            frames.append(arr)
        frames.append(last)
        label = read_label(sample.label)
        if label.ndim != 2 or label.shape != last.shape[1:]:
            raise SpikesegError(
                f"label {sample.label} is {'x'.join(map(str, label.shape))} but its events file "
                f"{sample.events[-1]} is {last.shape[1]}x{last.shape[2]}; they must match"
            )
        check_label_values(label, NUM_CLASSES, sample.label)
        x = resize_image(torch.from_numpy(np.stack(frames)), self.size)  # [T, C, h, w]
        x = normalize_frames(x, self.normalize)
        y = resize_label(label, self.size)
        return (x if self.info.temporal else x[0]), y

    def __repr__(self) -> str:
        t = f", timesteps={self.timesteps}" if self.timesteps else ""
        return (f"DDD17(split={self.split!r}, n={len(self)}, size={self.size[0]}x{self.size[1]}, "
                f"channels={list(self.channels)}{t})")


def _parse_channels(channels: str | Sequence[int]) -> tuple[int, ...]:
    if channels == "all":
        return tuple(range(len(EVENT_CHANNELS)))
    if isinstance(channels, str) or not isinstance(channels, Sequence) or not channels:
        raise SpikesegError(
            f"channels must be 'all' or a list of channel indices 0-5, got {channels!r}"
        )
    if not all(is_int(c) and 0 <= c < len(EVENT_CHANNELS) for c in channels):
        raise SpikesegError(
            "channels must be indices 0-5 ("
            + ", ".join(f"{i} {n}" for i, n in enumerate(EVENT_CHANNELS))
            + f"), got {list(channels)!r}"
        )
    if len(set(channels)) != len(channels):
        raise SpikesegError(f"channels lists a channel twice: {list(channels)!r}")
    return tuple(int(c) for c in channels)


@register_dataset("ddd17")
def ddd17(
    split: str,
    root: str | os.PathLike[str] | None = None,
    *,
    image_size: int | Sequence[int] = 64,
    timesteps: int | None = None,
    channels: str | Sequence[int] = (0, 1),
    normalize: str = "minmax",
    pad: str = "none",
    datalist: str | None = None,
) -> DDD17:
    """Build one split of DDD17 in the EV-SegNet release layout (see the module docstring).

    Args:
        split: ``"train"``, or ``"val"`` (= ``"test"``, the released test recording).
        root: the extracted dataset folder (holding ``events/`` and ``labels/``) or its parent.
        image_size: output ``H = W`` as an int, or ``(H, W)``; default 64 (the paper).
        timesteps: frames per sample ``[T, C, H, W]`` (the engine passes the model's T;
            T = 1 gives ``[1, C, H, W]``, so a spiking model reads the frame as is); None
            gives single frames ``[C, H, W]``.
        channels: event channels to read: indices 0–5 (default ``(0, 1)``, the positive and
            negative counts the paper uses) or ``"all"``.
        normalize: ``"minmax"`` (per frame and channel to ``[-0.5, 0.5]``), ``"log"`` or
            ``"none"`` (raw values).
        pad: frames with an incomplete history when ``timesteps > 1``: ``"none"`` drops them,
            ``"repeat"`` repeats the earliest available frame, ``"zeros"`` adds empty frames.
        datalist: None reads ``datalists/<train|test>.txt`` when present and scans the folders
            otherwise; ``"scan"`` always scans; any other string names a list file (under
            ``datalists/``, with or without ``.txt``, or a path).

    Returns:
        The dataset.

    Raises:
        SpikesegError: a bad option, a missing folder or list file, a list line naming a
            missing file, an events file without label or a label without events file.
            Unreadable files, malformed event arrays and label values outside 0–5 (and 255)
            are reported when the item is read.
    """
    if split not in SPLITS:
        raise SpikesegError(
            f"unknown split {split!r} for ddd17; choose one of: train, val (= test)"
        )
    native = SPLITS[split]
    size = parse_size(image_size)
    steps = parse_timesteps(timesteps)
    chans = _parse_channels(channels)
    check_choice("normalize", normalize, NORMALIZATIONS)
    check_choice("pad", pad, PADS)
    if root is None:
        raise SpikesegError(f"the ddd17 dataset needs data.root; {_HINT}")
    base = find_ddd17_root(root)
    list_file = _resolve_list(base, native, datalist)
    frames = _read_datalist(list_file, base) if list_file else _scan(base, native)
    samples = _make_samples(frames, steps or 1, pad)
    if not samples:
        raise SpikesegError(
            f"{list_file or base / 'events' / native}: no run of {steps} consecutive frames, so "
            "no samples; lower timesteps or use pad='repeat'"
        )
    return DDD17(base, native, samples, size=size, timesteps=steps, channels=chans,
                 normalize=normalize, list_file=list_file)
