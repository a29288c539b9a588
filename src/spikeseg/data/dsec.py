"""DSEC-Semantic: event windows from the DSEC driving dataset with semantic labels.

Where the data comes from (nothing is downloaded by spikeseg): DSEC (Gehrig et al., RA-L 2021,
https://dsec.ifi.uzh.ch) recorded driving scenes with a stereo pair of 640×480 Prophesee
event cameras; DSEC-Semantic (Sun et al., "ESS", ECCV 2022,
https://dsec.ifi.uzh.ch/dsec-semantic/) labels 11 of its sequences (8 train: zurich_city_00_a,
01_a, 02_a, 04_a, 05_a, 06_a, 07_a, 08_a; 3 test: zurich_city_13_a, 14_c, 15_a, as listed in
ESS's ``DSEC/dataset/provider.py``) in the event camera's rectified frame, in two class sets:
11 classes and Cityscapes' 19. Labels cover the top 440 of the 480 sensor rows (the car's hood
is cut off) and come with the 20 Hz image frames, a timestamp each.

Accepted layouts (``data.root`` is the folder holding them; ``<s>`` is ``train`` or ``test``,
``<seq>`` a sequence name)::

    # 1. the released archives, each extracted into a folder of its own name
    <root>/<s>_events/<seq>/events/left/events.h5          # <s>_events.zip
    <root>/<s>_events/<seq>/events/left/rectify_map.h5
    <root>/<s>_semantic_segmentation/<s>/<seq>/            # <s>_semantic_segmentation.zip
        11classes/000000.png ...                           #   (the <s>/ level may be absent)
        19classes/000000.png ...
        <seq>_semantic_timestamps.txt
    # 2. ESS's layout (README and DSEC/dataset/sequence.py of github.com/uzh-rpg/ess)
    <root>/<s>/<seq>/events/left/{events.h5, rectify_map.h5}
    <root>/<s>/<seq>/semantic/[left/]{11classes,19classes}/data/000000.png ...
    <root>/<s>/<seq>/semantic/timestamps.txt

Also accepted: label folders ``semantic/[left/]<K>classes/`` without ``data/``, timestamp files
``semantic/[left/]<seq>_semantic_timestamps.txt``, and events in ``<seq>/events_left/``
(Tonic's download layout) or in ``<root>/<s>/<seq>/`` next to labels from the archives. Only
sequences with labels are read: ``train_events.zip`` holds 41 sequences, 8 of them labelled.
The ``"val"`` split is the released test sequences.

Files, as the DSEC data-format page and ESS's code read them:

* ``events.h5`` (Blosc/ZSTD-compressed HDF5, hence ``import hdf5plugin`` before reading):
  ``/events/{x, y, t, p}`` (pixel column, row, time in µs, polarity 1 = ON / 0 = OFF),
  ``/ms_to_idx`` with ``t[ms_to_idx[ms]] >= 1000·ms > t[ms_to_idx[ms] - 1]``, and
  ``/t_offset`` (µs), to be added to ``t`` to reach the clock of the label timestamps.
* ``rectify_map.h5``: ``/rectify_map`` ``float32 [480, 640, 2]``; an event at ``(x, y)`` has
  rectified coordinates ``rectify_map[y, x]``. ESS rectifies every event this way before it
  builds a representation, and so does this loader (``rectify=True``) where the file exists;
  rectified coordinates are rounded to the nearest pixel, events leaving the frame dropped.
* timestamps: one integer per line, the time of the label in µs (``#`` comment lines are
  skipped); the n-th timestamp belongs to the n-th label file in name order.
* labels: 8-bit grey PNGs of 640×440 holding class ids, 255 = ignore.

A sample is the label at time ``τ`` and the events of the window ``[τ − window_ms, τ)``,
found through ``ms_to_idx`` without reading the rest of the file (a fixed duration, like
ESS's ``fixed_duration`` option; ESS's default takes a fixed number of events instead). A
label whose window does not lie inside the recorded stream (before the first millisecond, or
past the last entry of ``ms_to_idx``) is dropped; ESS drops the first labels of every
sequence for the same reason.
The window becomes ``T = timesteps`` frames with :func:`spikeseg.encoding.events.event_frames`
(``representation="counts"``: event counts, C = 2, channel 0 OFF and channel 1 ON as in
Tonic's ``ToFrame``, over ``T`` equal bins of ``[τ − window, τ)``: on the same (rectified)
events, Tonic's ``ToFrame(time_window=window/T, start_time=τ − window, end_time=τ)`` when the
window in µs is divisible by T; ``"voxel"``: the voxel grid of E-RAFT and ESS,
C = ``bins_per_step``), cropped to the 440 labelled rows, resized to ``image_size``
with antialiased bilinear interpolation (labels: nearest neighbour) and optionally normalised
per frame and channel. Items: ``(float32 [C, H, W], int64 [H, W])`` for ``timesteps=None``,
``(float32 [T, C, H, W], int64 [H, W])`` otherwise (also for T = 1). The default ``image_size`` is
(88, 128): the labelled 440×640 reduced 5× with its aspect ratio kept.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..encoding.events import (
    OFF,
    ON,
    REPRESENTATIONS,
    as_events,
    check_steps_per_frame,
    event_frames,
    make_events,
)
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
    "CLASS_NAMES_11",
    "CLASS_NAMES_19",
    "LABEL_HEIGHT",
    "SENSOR_SIZE",
    "DSECSemantic",
    "DSECSequence",
    "dsec",
    "find_sequences",
]

SENSOR_SIZE = (640, 480)
"""(W, H) of DSEC's event cameras."""
LABEL_HEIGHT = 440
"""Rows of the sensor that DSEC-Semantic labels (the top ones)."""
SPLITS = {"train": "train", "val": "test", "test": "test"}
"""spikeseg split -> DSEC folder ("val" is the released test sequences)."""

CLASS_NAMES_11 = [
    "background", "building", "fence", "person", "pole", "road", "sidewalk", "vegetation",
    "car", "wall", "traffic sign",
]
COLOURS_11 = [  # ESS's colours
    (0, 0, 0), (70, 70, 70), (190, 153, 153), (220, 20, 60), (153, 153, 153), (128, 64, 128),
    (244, 35, 232), (107, 142, 35), (0, 0, 142), (102, 102, 156), (220, 220, 0),
]
CLASS_NAMES_19 = [  # Cityscapes train ids
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
]
COLOURS_19 = [  # Cityscapes colours
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
]
CLASSES = {11: (CLASS_NAMES_11, COLOURS_11), 19: (CLASS_NAMES_19, COLOURS_19)}

_EVENT_KEYS = ("events/x", "events/y", "events/t", "events/p", "ms_to_idx")
_INSTALL_HINT = 'pip install "spikeseg[datasets]"'
_SITE = "https://dsec.ifi.uzh.ch/dsec-semantic/"


# --------------------------------------------------------------------------- HDF5


def _h5py() -> Any:
    """``h5py``, with ``hdf5plugin`` imported so that Blosc-compressed data can be read."""
    try:
        import h5py
        import hdf5plugin  # noqa: F401  (registers the Blosc/ZSTD filter before any read)
    except ImportError as e:
        raise SpikesegError(
            f"reading DSEC needs h5py and hdf5plugin ({e.name or e} is missing): {_INSTALL_HINT}"
        ) from None
    return h5py


def _open_h5(path: Path) -> Any:
    try:
        return _h5py().File(path, "r")
    except FileNotFoundError:
        raise SpikesegError(f"{path}: file not found; re-extract the DSEC archive") from None
    except OSError as e:
        raise SpikesegError(
            f"{path}: not a readable HDF5 file ({e}); download and extract it again"
        ) from None


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn a failure to decode HDF5 data (corrupt chunk, missing filter) into one line."""
    try:
        yield
    except (OSError, KeyError, ValueError) as e:
        raise SpikesegError(
            f"{path}: cannot read its data ({e}); check that hdf5plugin is installed "
            f"({_INSTALL_HINT}), or download the file again"
        ) from None


def _inspect_events(path: Path) -> tuple[int, int, int]:
    """``(number of events, length of ms_to_idx, t_offset)`` of an ``events.h5`` (metadata
    and one scalar only: nothing is decompressed)."""
    with _open_h5(path) as f:
        missing = []
        for key in _EVENT_KEYS:
            try:
                ok = key in f and hasattr(f[key], "shape")
            except (KeyError, TypeError, ValueError):
                ok = False
            if not ok:
                missing.append("/" + key)
        if missing:
            raise SpikesegError(
                f"{path}: dataset(s) {', '.join(missing)} missing; a DSEC events.h5 holds "
                "/events/{x,y,t,p}, /ms_to_idx and /t_offset: download and extract it again"
            )
        shapes = {k: f[k].shape for k in _EVENT_KEYS}
        n = shapes["events/t"][0] if len(shapes["events/t"]) == 1 else -1
        if any(len(s) != 1 for s in shapes.values()) or any(
            shapes[f"events/{c}"] != (n,) for c in "xyp"
        ):
            raise SpikesegError(
                f"{path}: /events/x, y, t, p must be 1-D and of one length, found "
                f"{', '.join(f'{k} {v}' for k, v in shapes.items())}; download it again"
            )
        t_offset = 0
        if "t_offset" in f:
            value = np.asarray(f["t_offset"][()]).reshape(-1)
            if value.size != 1:
                raise SpikesegError(f"{path}: /t_offset must be one number, found {value.size}")
            t_offset = int(value[0])
        return int(n), int(shapes["ms_to_idx"][0]), t_offset


def _check_rectify_map(path: Path) -> None:
    with _open_h5(path) as f:
        shape = f["rectify_map"].shape if "rectify_map" in f else None
    expected = (SENSOR_SIZE[1], SENSOR_SIZE[0], 2)
    if shape != expected:
        raise SpikesegError(
            f"{path}: expected a dataset /rectify_map of shape {expected}, found "
            f"{shape or 'none'}; extract rectify_map.h5 again, or pass rectify=false"
        )


# --------------------------------------------------------------------------- finding files


@dataclass
class DSECSequence:
    """One labelled sequence.

    Attributes:
        name: e.g. ``zurich_city_00_a``.
        events: its ``events.h5``; ``rectify_map``: its ``rectify_map.h5`` or None.
        labels: label PNGs in name order; ``timestamps``: ``int64`` µs, one per label.
        t_offset: µs added to event times to reach the clock of ``timestamps``.
        num_events: length of ``/events/t``; ``num_ms``: length of ``/ms_to_idx``.
    """

    name: str
    events: Path
    rectify_map: Path | None
    labels: list[Path]
    timestamps: np.ndarray
    t_offset: int
    num_events: int
    num_ms: int


def _label_dir(seq_dir: Path, classes: int) -> Path | None:
    for rel in (f"{classes}classes", f"semantic/{classes}classes/data",
                f"semantic/left/{classes}classes/data", f"semantic/{classes}classes",
                f"semantic/left/{classes}classes"):
        if (seq_dir / rel).is_dir():
            return seq_dir / rel
    return None


def _timestamps_file(seq_dir: Path) -> Path | None:
    name = f"{seq_dir.name}_semantic_timestamps.txt"
    for rel in (name, "semantic/timestamps.txt", "semantic/left/timestamps.txt",
                f"semantic/{name}", f"semantic/left/{name}", "timestamps.txt"):
        if (seq_dir / rel).is_file():
            return seq_dir / rel
    return None


def _read_timestamps(path: Path) -> np.ndarray:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise SpikesegError(f"{path}: cannot read the timestamps file ({e})") from None
    values = []
    for n, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        try:
            values.append(int(s.replace(",", " ").split()[0]))
        except ValueError:
            raise SpikesegError(
                f"{path}, line {n}: expected a timestamp in microseconds, got {s!r}"
            ) from None
    return np.asarray(values, dtype=np.int64)


def _label_roots(root: Path, native: str) -> list[Path]:
    return [root / f"{native}_semantic_segmentation" / native,
            root / f"{native}_semantic_segmentation", root / native]


def _events_file(root: Path, native: str, seq_dir: Path) -> tuple[Path | None, list[Path]]:
    cands = [seq_dir / "events" / "left" / "events.h5"]
    for base in (root / f"{native}_events", root / native):
        cands += [base / seq_dir.name / "events" / "left" / "events.h5",
                  base / seq_dir.name / "events_left" / "events.h5"]
    return next((c for c in cands if c.is_file()), None), cands


def find_sequences(
    root: str | os.PathLike[str], split: str, classes: int = 11
) -> list[DSECSequence]:
    """The labelled sequences of a DSEC-Semantic split under ``root`` (layouts: module docstring).

    Args:
        root: the folder holding the extracted archives (or ESS's ``train/``, ``test/``).
        split: ``"train"``, or ``"val"`` / ``"test"`` (the released test sequences).
        classes: 11 or 19, the label set to read.

    Raises:
        SpikesegError: no labels found, a sequence without labels of this class set, without
            timestamps, with a number of timestamps other than that of its label files, or
            without a readable ``events.h5`` holding DSEC's datasets.
    """
    if split not in SPLITS:
        raise SpikesegError(f"unknown split {split!r} for dsec; choose one of: train, val (= test)")
    native = SPLITS[split]
    root = Path(root).expanduser()
    if not root.is_dir():
        raise SpikesegError(f"{root}: folder not found; point data.root at the DSEC folder")
    seq_dirs: list[Path] = []
    for base in _label_roots(root, native):
        if base.is_dir():
            seq_dirs = sorted(d for d in base.iterdir() if d.is_dir()
                              and (_label_dir(d, 11) or _label_dir(d, 19)))
            if seq_dirs:
                break
    if not seq_dirs:
        raise SpikesegError(
            f"{root}: no DSEC-Semantic labels for the {native} split (looked for "
            f"{native}_semantic_segmentation/{native}/<sequence>/11classes/ and "
            f"{native}/<sequence>/semantic/); download {native}_semantic_segmentation.zip "
            f"from {_SITE} and extract it into {root / f'{native}_semantic_segmentation'}"
        )
    out = []
    for seq_dir in seq_dirs:
        label_dir = _label_dir(seq_dir, classes)
        if label_dir is None:
            other = 19 if classes == 11 else 11
            raise SpikesegError(
                f"{seq_dir}: no {classes}classes labels (only {other}classes); use "
                f"classes={other} or extract the {classes}-class labels too"
            )
        labels = sorted(label_dir.glob("*.png"))
        ts_path = _timestamps_file(seq_dir)
        if ts_path is None:
            raise SpikesegError(
                f"{seq_dir}: timestamps file {seq_dir.name}_semantic_timestamps.txt not found; "
                "re-extract the semantic segmentation archive"
            )
        stamps = _read_timestamps(ts_path)
        if len(labels) != len(stamps):
            raise SpikesegError(
                f"{label_dir}: {len(labels)} label files but {len(stamps)} timestamps in "
                f"{ts_path}; labels are missing or extra: re-extract the archive"
            )
        events, cands = _events_file(root, native, seq_dir)
        if events is None:
            raise SpikesegError(
                f"sequence {seq_dir.name}: events.h5 not found (expected {cands[1]}); download "
                f"{native}_events.zip from {_SITE} and extract it into {root / f'{native}_events'}"
            )
        n_events, n_ms, t_offset = _inspect_events(events)
        rect = events.parent / "rectify_map.h5"
        out.append(DSECSequence(seq_dir.name, events, rect if rect.is_file() else None, labels,
                                stamps, t_offset, n_events, n_ms))
    return out


# --------------------------------------------------------------------------- dataset


def _palette(classes: int) -> np.ndarray:
    """ESS's colours for 11 classes, Cityscapes' for 19 (others: the default palette)."""
    palette = default_palette(classes)
    if classes in CLASSES:
        palette[:classes] = np.asarray(CLASSES[classes][1], dtype=np.uint8)
    return palette


class DSECSemantic(SegmentationDataset):
    """DSEC-Semantic label windows; build it with :func:`dsec` (details: module docstring).

    Attributes:
        sequences: the labelled sequences read.
        items: ``(sequence index, label index)`` of every item.
        window_us: the window length in µs.
    """

    def __init__(
        self,
        sequences: list[DSECSequence],
        items: list[tuple[int, int]],
        *,
        split: str,
        size: tuple[int, int],
        timesteps: int | None,
        window_us: int,
        representation: str,
        bins_per_step: int,
        classes: int,
        rectify: bool,
        normalize: str,
        steps_per_frame: int = 1,
    ) -> None:
        self.sequences = sequences
        self.items = items
        self.split = split
        self.size = size
        self.timesteps = timesteps
        self.window_us = window_us
        self.representation = representation
        self.bins_per_step = bins_per_step
        self.classes = classes
        self.rectify = rectify
        self.normalize = normalize
        self.steps_per_frame = check_steps_per_frame(timesteps, steps_per_frame)
        self.info = DatasetInfo(
            name="dsec",
            num_classes=classes,
            class_names=list(CLASSES[classes][0]),
            in_channels=2 if representation == "counts" else bins_per_step,
            temporal=timesteps is not None,
            palette=_palette(classes),
            on_off_channels=(ON, OFF) if representation == "counts" else None,
        )
        self._files: dict[Path, Any] = {}
        self._ms_to_idx: dict[Path, np.ndarray] = {}
        self._maps: dict[Path, np.ndarray] = {}
        self._pid = os.getpid()

    # HDF5 handles are opened lazily, once per process (DataLoader workers open their own).
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_files={}, _ms_to_idx={}, _maps={})
        return state

    def _file(self, path: Path) -> Any:
        if self._pid != os.getpid():
            self._files, self._pid = {}, os.getpid()
        if path not in self._files:
            self._files[path] = _open_h5(path)
        return self._files[path]

    def _index(self, seq: DSECSequence) -> np.ndarray:
        if seq.events not in self._ms_to_idx:
            with _reading(seq.events):
                self._ms_to_idx[seq.events] = np.asarray(self._file(seq.events)["ms_to_idx"],
                                                         dtype=np.int64)
        return self._ms_to_idx[seq.events]

    def _rectify_map(self, path: Path) -> np.ndarray:
        if path not in self._maps:
            with _open_h5(path) as f, _reading(path):
                rmap = np.asarray(f["rectify_map"], dtype=np.float32)
            if rmap.shape != (SENSOR_SIZE[1], SENSOR_SIZE[0], 2):
                _check_rectify_map(path)  # raises, naming the file
            self._maps[path] = rmap
        return self._maps[path]

    def __len__(self) -> int:
        return len(self.items)

    def window_events(self, index: int) -> tuple[np.ndarray, int, int]:
        """The events of item ``index`` as the model sees them, with their window.

        Returns:
            ``(events, t_start, t_end)``: an :data:`~spikeseg.encoding.events.EVENT_DTYPE` array
            of the events with ``t_start <= t < t_end`` (µs in the file's clock, i.e. without
            ``t_offset``), rectified when asked and the map exists, restricted to the 440
            labelled rows.
        """
        seq = self.sequences[self.items[index][0]]
        stamp = int(seq.timestamps[self.items[index][1]])
        t_end = stamp - seq.t_offset
        t_start = t_end - self.window_us
        ms = self._index(seq)
        f = self._file(seq.events)
        lo_ms, hi_ms = t_start // 1000, -(-t_end // 1000)
        i0 = int(ms[lo_ms]) if lo_ms < len(ms) else seq.num_events
        i1 = int(ms[hi_ms]) if hi_ms < len(ms) else seq.num_events
        if not 0 <= i0 <= i1 <= seq.num_events:
            raise SpikesegError(
                f"{seq.events}: /ms_to_idx points outside the {seq.num_events} events "
                f"({i0}..{i1} for ms {lo_ms}..{hi_ms}); download the file again"
            )
        with _reading(seq.events):
            t = np.asarray(f["events/t"][i0:i1], dtype=np.int64)
        if t.size and (
            (lo_ms < len(ms) and t[0] < lo_ms * 1000) or (hi_ms < len(ms) and t[-1] >= hi_ms * 1000)
        ):
            raise SpikesegError(
                f"{seq.events}: /ms_to_idx does not match /events/t (events {i0}..{i1} for ms "
                f"{lo_ms}..{hi_ms} span t={t[0]}..{t[-1]} µs); download the file again"
            )
        j0, j1 = i0 + int(np.searchsorted(t, t_start)), i0 + int(np.searchsorted(t, t_end))
        with _reading(seq.events):
            cols = {c: np.asarray(f[f"events/{c}"][j0:j1]) for c in "xyp"}
        # The columns keep their stored types, so as_events refuses fractional or NaN ones.
        raw = np.empty(j1 - j0, dtype=[("x", cols["x"].dtype), ("y", cols["y"].dtype),
                                        ("t", "<i8"), ("p", cols["p"].dtype)])
        raw["t"] = t[j0 - i0 : j1 - i0]
        for c, v in cols.items():
            raw[c] = v
        ev = as_events(raw, SENSOR_SIZE, source=f"{seq.events} (events {j0}..{j1})")
        x, y = ev["x"].astype(np.int64), ev["y"].astype(np.int64)
        if self.rectify and seq.rectify_map is not None:
            xy = self._rectify_map(seq.rectify_map)[y, x]  # [N, 2] rectified (x, y), float
            x = np.floor(xy[:, 0] + 0.5).astype(np.int64)
            y = np.floor(xy[:, 1] + 0.5).astype(np.int64)
        keep = (x >= 0) & (x < SENSOR_SIZE[0]) & (y >= 0) & (y < LABEL_HEIGHT)
        return make_events(x[keep], y[keep], ev["t"][keep], ev["p"][keep]), t_start, t_end

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        seq_i, k = self.items[index]
        path = self.sequences[seq_i].labels[k]
        events, t_start, t_end = self.window_events(index)
        frames = event_frames(
            events, (SENSOR_SIZE[0], LABEL_HEIGHT), self.timesteps or 1,
            representation=self.representation, bins_per_step=self.bins_per_step,
            t_start=t_start, t_end=t_end,
            steps_per_frame=self.steps_per_frame if self.timesteps is not None else 1,
        )  # [T, C, 440, 640]
        x = normalize_frames(resize_image(torch.from_numpy(frames), self.size), self.normalize)
        label = read_label(path)
        if label.shape != (LABEL_HEIGHT, SENSOR_SIZE[0]):
            raise SpikesegError(
                f"label {path} is {'x'.join(map(str, label.shape[::-1]))}; DSEC-Semantic labels "
                f"are {SENSOR_SIZE[0]}x{LABEL_HEIGHT} (width x height): re-extract the archive"
            )
        check_label_values(label, self.classes, path)
        y = resize_label(label, self.size)
        return (x if self.info.temporal else x[0]), y

    def __repr__(self) -> str:
        t = f", timesteps={self.timesteps}" if self.timesteps else ""
        return (f"DSECSemantic(split={self.split!r}, n={len(self)}, sequences="
                f"{len(self.sequences)}, classes={self.classes}, size={self.size[0]}x"
                f"{self.size[1]}, {self.representation}{t})")


def _positive_int(name: str, value: Any) -> int:
    if not is_int(value) or value < 1:
        raise SpikesegError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


@register_dataset("dsec", palette=_palette)
def dsec(
    split: str,
    root: str | os.PathLike[str] | None = None,
    *,
    image_size: int | Sequence[int] = (88, 128),
    timesteps: int | None = None,
    window_ms: float = 50,
    representation: str = "counts",
    bins_per_step: int = 1,
    steps_per_frame: int = 1,
    classes: int = 11,
    rectify: bool = True,
    normalize: str = "none",
    label_stride: int = 1,
) -> DSECSemantic:
    """Build one split of DSEC-Semantic (layouts and sample construction: module docstring).

    Args:
        split: ``"train"``, or ``"val"`` (= ``"test"``, the released test sequences).
        root: the folder holding the extracted DSEC archives.
        image_size: output ``H = W`` as an int, or ``(H, W)``; default (88, 128), the
            labelled 440×640 reduced 5×.
        timesteps: frames the window is split into, ``[T, C, H, W]``; None gives one frame
            ``[C, H, W]`` over the whole window.
        window_ms: length of the window of events before each label, in milliseconds.
        representation: ``"counts"`` (OFF, ON counts, 2 channels) or ``"voxel"`` (voxel grid of
            ``timesteps · bins_per_step`` bins, ``bins_per_step`` channels per frame).
        bins_per_step: voxel bins per frame (ESS: one frame of 5 bins).
        steps_per_frame: the window becomes ``timesteps / steps_per_frame`` frames, each held
            for ``steps_per_frame`` consecutive steps (1: T frames, one per step).
        classes: 11 or 19, the label set.
        rectify: rectify events with ``rectify_map.h5`` where it exists (as ESS does).
        normalize: ``"none"`` (raw counts / voxel values, as ESS), ``"minmax"`` (per frame and
            channel to ``[-0.5, 0.5]``) or ``"log"`` (``sign(x)·log(1 + |x|)``).
        label_stride: use every n-th label of a sequence (labels come at 20 Hz; ESS uses 2).

    Returns:
        The dataset.

    Raises:
        SpikesegError: a bad option, or a missing or malformed folder, timestamps file or
            ``events.h5`` (see :func:`find_sequences`). Unreadable labels, label values
            outside the classes (and 255) and malformed events are reported when the item
            is read.
    """
    if split not in SPLITS:
        raise SpikesegError(f"unknown split {split!r} for dsec; choose one of: train, val (= test)")
    size = parse_size(image_size)
    steps = parse_timesteps(timesteps)
    if isinstance(window_ms, bool) or not isinstance(window_ms, (int, float, np.number)) or not (
        math.isfinite(window_ms) and window_ms > 0
    ):
        raise SpikesegError(f"window_ms must be a positive number, got {window_ms!r}")
    window_us = int(round(window_ms * 1000))
    check_choice("representation", representation, REPRESENTATIONS)
    bins = _positive_int("bins_per_step", bins_per_step)
    hold = check_steps_per_frame(steps, steps_per_frame)
    stride = _positive_int("label_stride", label_stride)
    if classes not in CLASSES:
        raise SpikesegError(f"classes must be 11 or 19, got {classes!r}")
    if not isinstance(rectify, bool):
        raise SpikesegError(f"rectify must be true or false, got {rectify!r}")
    check_choice("normalize", normalize, NORMALIZATIONS)
    if root is None:
        raise SpikesegError(
            f"the dsec dataset needs data.root: the folder holding train_events/ and "
            f"train_semantic_segmentation/ (from {_SITE})"
        )
    sequences = find_sequences(root, split, int(classes))
    if rectify:
        for seq in sequences:
            if seq.rectify_map is not None:
                _check_rectify_map(seq.rectify_map)
        unrectified = [s for s in sequences if s.rectify_map is None]
        if unrectified:
            warnings.warn(
                f"{len(unrectified)} DSEC sequence(s) have no rectify_map.h5 next to events.h5 "
                f"(e.g. {unrectified[0].events.parent}); their events are used unrectified, "
                "out of alignment with the labels: extract rectify_map.h5 too, or pass "
                "rectify=false to silence this",
                stacklevel=2,
            )
    items = []
    for i, seq in enumerate(sequences):
        t_end = seq.timestamps - seq.t_offset
        t_start = t_end - window_us
        inside = (t_start >= 0) & (-(-t_end // 1000) < seq.num_ms)
        items += [(i, int(k)) for k in np.flatnonzero(inside)[::stride]]
    if not items:
        raise SpikesegError(
            f"{root}: no label of the {SPLITS[split]} split has a full {window_ms} ms window "
            "of events (label timestamps outside the event streams?); check that the events "
            "and labels belong to the same sequences"
        )
    return DSECSemantic(
        sequences, items, split=SPLITS[split], size=size, timesteps=steps, window_us=window_us,
        representation=representation, bins_per_step=bins, classes=int(classes),
        rectify=rectify, normalize=normalize, steps_per_frame=hold,
    )
