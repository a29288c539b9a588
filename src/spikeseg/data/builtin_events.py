"""The built-in event-camera dataset: moving digits on photographs, seen by a simulated DVS.

The event twin of :mod:`spikeseg.data.builtin`, generated from the same ingredients with
nothing to download: the 1,797 8×8 digit scans of ``sklearn.datasets.load_digits`` and the
photographs bundled in the scikit-learn and scikit-image wheels (install
``spikeseg[builtin]``). Train and validation are disjoint in both, exactly as for ``builtin``:
a fixed stratified 80/20 split of the scans (:func:`~spikeseg.data.builtin.digit_split_indices`)
and, of every photograph, a left part for train and a right part for validation
(:func:`~spikeseg.data.builtin.photo_part`); a clip's crop stays inside its part for the whole
pan.

A sample is a short grey-level video (:func:`render_clip`), ``num_frames`` frames evenly
spaced over ``duration_ms`` (default 11 frames over 50 ms, the paper's DDD17 window), of 1–3
digits, each painted in a luminance that contrasts with the photo patch under it, gliding in a
straight line at a random velocity across a crop of a photograph that itself pans slowly (a
moving camera sees the edges of the background too). The video becomes DVS events with
:func:`video_to_events`, the contrast-threshold pixel model of event-camera simulators (ESIM,
Rebecq et al. 2018; v2e): every pixel keeps a reference log intensity; between two frames its
log intensity is interpolated linearly in time, and each crossing of ``reference ± C`` emits an
event at the interpolated time, with the polarity of the change, and moves the reference by
``±C`` (several events per frame interval where the change is large). The label is the
segmentation of the LAST frame: ``digit + 1`` where a digit's stroke covers a pixel (later
digits win), 0 elsewhere — 11 classes, the class names of ``builtin``.

Items are the events of the clip's window ``[0, duration]`` as ``timesteps`` frames ending at
the labelled one, :func:`~spikeseg.encoding.events.event_frames`:
``(float32 [T, C, H, W], int64 [H, W])`` with ``C = 2`` for ``representation="counts"``
(channel 0 OFF, channel 1 ON: Tonic's ``ToFrame`` order, see
:func:`~spikeseg.encoding.events.to_count_frames`) or ``C = bins_per_step`` for ``"voxel"``.
Frame ``i`` of ``T`` covers ``[i·d, (i+1)·d)`` with ``d = (duration + 1 µs)/T``: the window is
``[0, duration]`` with its end included, so the events of the labelled last frame's instant
count (Tonic's ``ToFrame(n_time_bins=T)``, binning from the first to the last event, always
drops the latest event). The sensor has the
output resolution ``image_size``: events are simulated at that size, not resized.

Generation is deterministic in ``(seed, split)`` and the generation options. The events (not
the frames) are cached, so ``timesteps``, ``representation``, ``bins_per_step`` and
``normalize`` can change without regenerating. Cache file (``root``, default
``$SPIKESEG_CACHE`` or ``~/.cache/spikeseg``)::

    <root>/builtin_events-<split>-<H>x<W>-n<count>-<hash of the options>.npz
        x, y    int16 [E]       pixel column / row of every event of the split
        t       int64 [E]       µs from the clip's first frame
        p       int8  [E]       1 = ON, 0 = OFF
        offsets int64 [N + 1]   events of sample i: offsets[i]:offsets[i + 1] (sorted by t)
        labels  uint8 [N, H, W] class ids of each clip's last frame
        photo   int16 [N]       index of the photograph in params' "photos"
        box     float32 [N, 4]  (left, top, right, bottom), in photo pixels, of the region the
                                clip's crop covers over its pan
        digits  int16 [N, K]    scan indices (``load_digits``) of the pasted digits, -1 padded
        params  str             JSON of the generation options (checked when read)
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..encoding.events import (
    EVENT_DTYPE,
    OFF,
    ON,
    REPRESENTATIONS,
    check_steps_per_frame,
    event_frames,
    make_events,
    representation_channels,
)
from ..errors import SpikesegError
from . import builtin as bi
from .base import DatasetInfo, SegmentationDataset, categorical_palette, register_dataset
from .transforms import NORMALIZATIONS, is_int, normalize_frames

__all__ = ["BuiltinEvents", "builtin_events", "render_clip", "video_to_events"]

FORMAT_VERSION = 1
"""Bumped whenever generation changes, so stale cache files are not reused."""

SPLITS = bi.SPLITS
NUM_CLASSES = bi.NUM_CLASSES
CLASS_NAMES = list(bi.CLASS_NAMES)

LOG_EPS = 0.02
"""Offset of the log response, ``log(I + LOG_EPS)`` for intensities ``I`` in ``[0, 1]``: it
bounds the sensitivity in the dark (a black-to-white edge gives ``log(1.02/0.02)/C`` ≈ 20
events at ``C = 0.2``), as the finite dark current of a real DVS pixel does."""

MIN_THRESHOLD = 0.01
"""Per-pixel thresholds drawn with ``threshold_noise`` are clipped from below to this."""


# --------------------------------------------------------------------------- pixel model


def _thresholds(contrast_threshold: float | Sequence[float]) -> tuple[float, float]:
    if isinstance(contrast_threshold, (int, float, np.integer, np.floating)) and not isinstance(
        contrast_threshold, bool
    ):
        on = off = float(contrast_threshold)
    else:
        try:
            on, off = (float(v) for v in contrast_threshold)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise SpikesegError(
                f"contrast_threshold must be a number or an (on, off) pair, got "
                f"{contrast_threshold!r}"
            ) from None
    if not (0 < on <= 10 and 0 < off <= 10):
        raise SpikesegError(
            f"contrast_threshold must be positive log-intensity steps (e.g. 0.2), got "
            f"{contrast_threshold!r}"
        )
    return on, off


def video_to_events(
    frames: np.ndarray,
    timestamps: Sequence[int] | np.ndarray,
    contrast_threshold: float | Sequence[float] = 0.2,
    *,
    threshold_noise: float = 0.0,
    log_eps: float = LOG_EPS,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Convert a video to DVS events with the contrast-threshold pixel model.

    Every pixel holds a reference log intensity ``L_ref``, initialised from the first frame
    (which emits nothing). Between frames ``k`` and ``k + 1`` its log intensity
    ``L = log(I + log_eps)`` moves linearly in time from ``L_k`` to ``L_{k+1}``; each time it
    reaches ``L_ref + C_on`` an ON event is emitted at the interpolated time
    ``t_k + (level − L_k)/(L_{k+1} − L_k)·(t_{k+1} − t_k)`` (rounded to the µs) and
    ``L_ref += C_on``; likewise OFF events at ``L_ref − C_off``. A frame interval can emit
    several events per pixel, all of one polarity. Vectorised over pixels (loops run over
    frames only).

    Args:
        frames: ``[N, H, W]`` intensities in ``[0, 1]`` (linear, e.g. luminance; ``uint8``
            frames are divided by 255).
        timestamps: ``[N]`` frame times in µs, integers, strictly increasing.
        contrast_threshold: ``C`` in log-intensity units (0.15–0.3 for real sensors), or an
            ``(C_on, C_off)`` pair.
        threshold_noise: standard deviation of a per-pixel, per-polarity Gaussian variation of
            the thresholds (pixel mismatch; ESIM uses ~0.03), fixed for the whole video and
            clipped below at :data:`MIN_THRESHOLD`. 0 gives the exact thresholds.
        log_eps: offset of the log response (see :data:`LOG_EPS`).
        rng: generator for the threshold noise (default: a fresh, unseeded one).

    Returns:
        :data:`~spikeseg.encoding.events.EVENT_DTYPE` ``[E]`` events sorted by time (then by pixel
        index ``y·W + x``), on a sensor of size ``(W, H)``.

    Raises:
        SpikesegError: frames not ``[N, H, W]``, outside ``[0, 1]`` or not finite; timestamps
            not integers, of the wrong length or not increasing; a bad threshold.
    """
    f = np.asarray(frames)
    if f.ndim != 3 or 0 in f.shape:
        raise SpikesegError(f"frames must be a non-empty [N, H, W] array, got shape {f.shape}")
    if f.dtype == np.uint8:
        f = f.astype(np.float32) / 255.0
    elif not (np.issubdtype(f.dtype, np.floating) or np.issubdtype(f.dtype, np.integer)):
        raise SpikesegError(f"frames must be numeric intensities, got dtype {f.dtype}")
    lo, hi = float(np.min(f)), float(np.max(f))
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
        raise SpikesegError(
            f"frames must be intensities in [0, 1], found {lo:.4g}..{hi:.4g} (divide 8-bit "
            "frames by 255)"
        )
    ts = np.asarray(timestamps)
    if ts.shape != (f.shape[0],):
        raise SpikesegError(
            f"timestamps must be [N] = [{f.shape[0]}] (one per frame), got shape {ts.shape}"
        )
    if ts.size and (not np.all(np.isfinite(ts.astype(np.float64)))
                    or not np.all(ts == np.round(ts))):
        raise SpikesegError("timestamps must be whole microseconds")
    ts = ts.astype(np.int64)
    if np.any(np.diff(ts) <= 0):
        raise SpikesegError("timestamps must be strictly increasing")
    c_on, c_off = _thresholds(contrast_threshold)
    for name, value, ok in (("threshold_noise", threshold_noise, lambda v: v >= 0),
                            ("log_eps", log_eps, lambda v: v > 0)):
        if (isinstance(value, bool) or not isinstance(value, (int, float, np.number))
                or not np.isfinite(value) or not ok(value)):
            raise SpikesegError(f"{name} must be a finite number "
                                f"{'>= 0' if name == 'threshold_noise' else '> 0'}, got {value!r}")

    n, H, W = f.shape
    npix = H * W
    thr_on = np.full(npix, c_on)
    thr_off = np.full(npix, c_off)
    if threshold_noise > 0:
        rng = rng if rng is not None else np.random.default_rng()
        thr_on = np.maximum(thr_on + threshold_noise * rng.standard_normal(npix), MIN_THRESHOLD)
        thr_off = np.maximum(thr_off + threshold_noise * rng.standard_normal(npix), MIN_THRESHOLD)

    def log_frame(k: int) -> np.ndarray:
        return np.log(f[k].reshape(-1).astype(np.float64) + log_eps)

    l0 = log_frame(0)
    ref = l0.copy()
    chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (t, pixel, p)
    for k in range(n - 1):
        l1 = log_frame(k + 1)
        dt = float(ts[k + 1] - ts[k])
        # invariant: ref - C_off < l0 < ref + C_on, so every crossing lies in (l0, l1]
        # (up to rounding: a level equal to l0 gives frac 0; l1 == l0 never emits)
        for sign, thr in ((1.0, thr_on), (-1.0, thr_off)):
            count = np.floor(sign * (l1 - ref) / thr)
            pix = np.flatnonzero((count >= 1) & (sign * (l1 - l0) > 0))
            if pix.size == 0:
                continue
            cnt = count[pix].astype(np.int64)
            rep = np.repeat(pix, cnt)
            m = np.arange(rep.size) - np.repeat(np.cumsum(cnt) - cnt, cnt) + 1  # 1..cnt
            level = ref[rep] + sign * m * thr[rep]
            frac = (level - l0[rep]) / (l1[rep] - l0[rep])
            t = ts[k] + np.rint(np.clip(frac, 0.0, 1.0) * dt).astype(np.int64)
            ref[pix] += sign * cnt * thr[pix]
            chunks.append((t, rep, np.full(rep.size, sign > 0)))
        l0 = l1
    if not chunks:
        return make_events([], [], [], [])
    t = np.concatenate([c[0] for c in chunks])
    pix = np.concatenate([c[1] for c in chunks])
    pol = np.concatenate([c[2] for c in chunks])
    order = np.lexsort((pix, t))
    ev = np.empty(t.size, dtype=EVENT_DTYPE)
    ev["x"] = pix[order] % W
    ev["y"] = pix[order] // W
    ev["t"] = t[order]
    ev["p"] = pol[order]
    return ev


# --------------------------------------------------------------------------- rendering


def _place(intensity: np.ndarray, y: float, x: float, size: tuple[int, int]) -> np.ndarray:
    """An ``[s, s]`` map placed with its top-left corner at the sub-pixel position ``(y, x)``
    of an ``[H, W]`` canvas (bilinear shift; parts outside the canvas are cut)."""
    H, W = size
    s = intensity.shape[0]
    iy, ix = math.floor(y), math.floor(x)
    fy, fx = y - iy, x - ix
    shifted = np.zeros((s + 1, s + 1), dtype=np.float32)
    shifted[:s, :s] += (1 - fy) * (1 - fx) * intensity
    shifted[1:, :s] += fy * (1 - fx) * intensity
    shifted[:s, 1:] += (1 - fy) * fx * intensity
    shifted[1:, 1:] += fy * fx * intensity
    out = np.zeros(size, dtype=np.float32)
    y0, x0 = max(iy, 0), max(ix, 0)
    y1, x1 = min(iy + s + 1, H), min(ix + s + 1, W)
    if y1 > y0 and x1 > x0:
        out[y0:y1, x0:x1] = shifted[y0 - iy : y1 - iy, x0 - ix : x1 - ix]
    return out


def _endpoint(rng: np.random.Generator, start: np.ndarray, high: np.ndarray,
              distance: float) -> np.ndarray:
    """Where a straight move of ``distance`` px in a random direction from ``start`` ends,
    kept inside ``[0, high]`` per axis (reflected, then clipped, at the borders)."""
    angle = rng.uniform(0.0, 2.0 * math.pi)
    d = distance * np.array([math.sin(angle), math.cos(angle)])
    end = start + d
    out = (end < 0) | (end > high)
    end[out] = start[out] - d[out]
    return np.clip(end, 0.0, high)


def render_clip(
    rng: np.random.Generator,
    background: np.ndarray,
    digit_images: np.ndarray,
    digit_targets: np.ndarray,
    *,
    size: tuple[int, int],
    num_frames: int = 11,
    digits_per_image: tuple[int, int] = (1, 3),
    digit_scale: tuple[float, float] = (0.3, 0.6),
    digit_motion: tuple[float, float] = (0.1, 0.3),
    background_motion: tuple[float, float] = (0.0, 0.1),
    photo_short: int | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Render a grey-level video of digits gliding over a panning crop of ``background``.

    A crop box of the output's aspect ratio is drawn inside ``background`` (its shorter side
    25–60% of ``photo_short``, as in ``builtin``) and moves in a straight line by
    ``background_motion`` × the output's shorter side (in output pixels) over the clip,
    staying inside ``background``. Each digit (``builtin``'s sizes and contrast rule, in
    luminance) moves in a straight line by ``digit_motion`` × the shorter side, staying inside
    the frame; positions are sub-pixel. Frame ``i`` shows the state at fraction
    ``i / (num_frames − 1)`` of the clip.

    Args:
        rng: the random generator (consumed deterministically).
        background: ``float32 [h, w]`` luminance in ``[0, 1]`` (e.g. a photograph's part).
        digit_images: ``float32 [N, 8, 8]`` digit scans in ``[0, 1]``.
        digit_targets: ``int [N]`` their digits.
        size: output ``(H, W)``.
        num_frames: frames of the video (>= 2).
        digits_per_image: inclusive range of the number of digits.
        digit_scale: range of a digit's height as a fraction of the output's shorter side.
        digit_motion: range of a digit's displacement over the clip, same unit.
        background_motion: range of the background's pan over the clip, same unit.
        photo_short: shorter side of the whole photograph the crop size is relative to
            (default: that of ``background``).

    Returns:
        ``(frames, label, info)``: ``float32 [num_frames, H, W]`` luminance in ``[0, 1]``;
        ``uint8 [H, W]`` label of the last frame (``digit + 1`` on strokes, 0 elsewhere);
        ``{"box": (left, top, right, bottom)`` of ``background`` covered by the crop over the
        whole pan, ``"digits": [indices into digit_images]}``.
    """
    from PIL import Image

    if num_frames < 2:
        raise SpikesegError(f"num_frames must be >= 2, got {num_frames}")
    H, W = size
    bh, bw = background.shape
    short = min(H, W)
    box = np.array(bi.sample_crop_box(rng, (bh, bw), photo_short or min(bh, bw), size))
    scale = (box[2] - box[0]) / W  # photo pixels per output pixel
    pan = rng.uniform(*background_motion) * short * scale
    angle = rng.uniform(0.0, 2.0 * math.pi)
    dx = float(np.clip(pan * math.cos(angle), -box[0], bw - box[2]))
    dy = float(np.clip(pan * math.sin(angle), -box[1], bh - box[3]))
    cover = (min(box[0], box[0] + dx), min(box[1], box[1] + dy),
             max(box[2], box[2] + dx), max(box[3], box[3] + dy))
    # resample from a small region around the covered area, not the whole photograph
    m = int(math.ceil(scale)) + 2
    rx0, ry0 = max(int(cover[0]) - m, 0), max(int(cover[1]) - m, 0)
    rx1, ry1 = min(int(math.ceil(cover[2])) + m, bw), min(int(math.ceil(cover[3])) + m, bh)
    region = Image.fromarray(np.ascontiguousarray(background[ry0:ry1, rx0:rx1], np.float32),
                             mode="F")

    digits = []
    count = int(rng.integers(digits_per_image[0], digits_per_image[1] + 1))
    first = np.asarray(region.resize((W, H), Image.Resampling.BILINEAR,
                                     box=(box[0] - rx0, box[1] - ry0, box[2] - rx0,
                                          box[3] - ry0)), dtype=np.float32)
    for _ in range(count):
        k = int(rng.integers(len(digit_images)))
        s = max(8, min(int(round(rng.uniform(*digit_scale) * short)), short))
        high = np.array([H - s, W - s], dtype=np.float64)
        start = rng.uniform(0.0, 1.0, 2) * high
        end = _endpoint(rng, start, high, rng.uniform(*digit_motion) * short)
        intensity = bi.upsample_digit(digit_images[k], (s, s))
        y0, x0 = int(start[0]), int(start[1])
        patch_luma = float(first[y0 : y0 + s, x0 : x0 + s].mean())
        luma = float(bi.contrasting_colour(rng, patch_luma) @ bi.LUMA)
        digits.append((k, intensity, start, end, luma))

    frames = np.empty((num_frames, H, W), dtype=np.float32)
    label = np.zeros((H, W), dtype=np.uint8)
    for i in range(num_frames):
        a = i / (num_frames - 1)
        fbox = (box[0] + a * dx - rx0, box[1] + a * dy - ry0, box[2] + a * dx - rx0,
                box[3] + a * dy - ry0)
        canvas = np.asarray(region.resize((W, H), Image.Resampling.BILINEAR, box=fbox),
                            dtype=np.float32).copy()
        for k, intensity, start, end, luma in digits:
            pos = start + a * (end - start)
            placed = _place(intensity, float(pos[0]), float(pos[1]), (H, W))
            alpha = ((placed - bi.MASK_THRESHOLD) / bi.ALPHA_RAMP + 0.5).clip(0.0, 1.0)
            canvas += alpha * (luma - canvas)
            if i == num_frames - 1:
                label[placed > bi.MASK_THRESHOLD] = digit_targets[k] + 1
        frames[i] = canvas.clip(0.0, 1.0)
    return frames, label, {"box": cover, "digits": [d[0] for d in digits]}


@functools.lru_cache(maxsize=2)
def _luma_parts(split: str) -> tuple[tuple[np.ndarray, int, int], ...]:
    """Every photograph's part for ``split`` as ``(float32 luminance [h, w], x0, shorter
    side of the photograph)``."""
    out = []
    for name, arr in bi.load_photos():
        x0, x1 = bi.photo_part(name, arr.shape[1], split)
        luma = (arr[:, x0:x1].astype(np.float32) @ bi.LUMA.astype(np.float32)) / 255.0
        out.append((np.ascontiguousarray(luma), x0, min(arr.shape[:2])))
    return tuple(out)


def _generate(split: str, params: dict[str, Any]) -> dict[str, np.ndarray]:
    """Generate a whole split (the arrays of the cache file, see the module docstring)."""
    digits, targets = bi.load_digit_scans()
    pool = bi.digit_split_indices(targets, split)
    parts = _luma_parts(split)
    if not parts:
        raise SpikesegError(
            f"no background photographs found; reinstall them: {bi.INSTALL_HINT}"
        )
    rng = np.random.default_rng([params["seed"], SPLITS.index(split), FORMAT_VERSION])
    H, W = params["image_size"]
    count, nf = params["count"], params["num_frames"]
    stamps = np.rint(np.linspace(0.0, params["duration_ms"] * 1000.0, nf)).astype(np.int64)
    max_digits = params["digits_per_image"][1]
    labels = np.empty((count, H, W), dtype=np.uint8)
    photo = np.empty(count, dtype=np.int16)
    box = np.empty((count, 4), dtype=np.float32)
    used = np.full((count, max_digits), -1, dtype=np.int16)
    chunks = []
    offsets = np.zeros(count + 1, dtype=np.int64)
    for i in range(count):
        p = int(rng.integers(len(parts)))
        luma, x0, short = parts[p]
        frames, labels[i], info = render_clip(
            rng, luma, digits[pool], targets[pool], size=(H, W), num_frames=nf,
            digits_per_image=tuple(params["digits_per_image"]),
            digit_scale=tuple(params["digit_scale"]),
            digit_motion=tuple(params["digit_motion"]),
            background_motion=tuple(params["background_motion"]), photo_short=short,
        )
        ev = video_to_events(frames, stamps, params["contrast_threshold"],
                             threshold_noise=params["threshold_noise"], rng=rng)
        chunks.append(ev)
        offsets[i + 1] = offsets[i] + ev.size
        photo[i] = p
        left, top, right, bottom = info["box"]
        box[i] = (left + x0, top, right + x0, bottom)  # in the whole photograph
        used[i, : len(info["digits"])] = pool[info["digits"]]
    ev = np.concatenate(chunks) if chunks else make_events([], [], [], [])
    return {"x": ev["x"], "y": ev["y"], "t": ev["t"], "p": ev["p"], "offsets": offsets,
            "labels": labels, "photo": photo, "box": box, "digits": used}


# --------------------------------------------------------------------------- cache

_ARRAYS = {  # name: (dtype, shape from (E, N, H, W, K))
    "x": (np.int16, lambda e, n, h, w, k: (e,)),
    "y": (np.int16, lambda e, n, h, w, k: (e,)),
    "t": (np.int64, lambda e, n, h, w, k: (e,)),
    "p": (np.int8, lambda e, n, h, w, k: (e,)),
    "offsets": (np.int64, lambda e, n, h, w, k: (n + 1,)),
    "labels": (np.uint8, lambda e, n, h, w, k: (n, h, w)),
    "photo": (np.int16, lambda e, n, h, w, k: (n,)),
    "box": (np.float32, lambda e, n, h, w, k: (n, 4)),
    "digits": (np.int16, lambda e, n, h, w, k: (n, k)),
}


def _valid(data: dict[str, np.ndarray], params: dict[str, Any]) -> bool:
    h, w = params["image_size"]
    n, k = params["count"], params["digits_per_image"][1]
    off = data["offsets"]
    e = int(off[-1]) if off.ndim == 1 and off.size else -1
    for name, (dtype, shape) in _ARRAYS.items():
        if data[name].dtype != dtype or data[name].shape != shape(e, n, h, w, k):
            return False
    return bool(
        off[0] == 0
        and np.all(np.diff(off) >= 0)
        and (n == 0 or int(data["labels"].max()) < NUM_CLASSES)
        and (e == 0 or (data["x"].min() >= 0 and data["x"].max() < w
                        and data["y"].min() >= 0 and data["y"].max() < h))
    )


def _read_cache(path: Path, params: dict[str, Any]) -> dict[str, np.ndarray] | None:
    """The cached split's arrays, or None (see :func:`spikeseg.data.builtin.read_cache`)."""
    return bi.read_cache(path, params, tuple(_ARRAYS), _valid)


# --------------------------------------------------------------------------- dataset


class BuiltinEvents(SegmentationDataset):
    """Simulated DVS clips of moving digits on photographs, as event frames.

    Build it with :func:`builtin_events` (or ``build_dataset("builtin_events", split)``). The
    split's events are held in memory; frames are built per item.

    Items: ``(float32 [T, C, H, W], int64 [H, W])`` (``[C, H, W]`` when ``timesteps`` is
    None): the clip's window as T frames ending at the labelled last frame, and its label.

    Attributes:
        events: :data:`~spikeseg.encoding.events.EVENT_DTYPE` ``[E]``, all samples, each sorted
            by t (µs from its clip's first frame).
        offsets: ``int64 [N + 1]``: sample ``i``'s events are ``events[offsets[i]:offsets[i+1]]``.
        labels: ``uint8 [N, H, W]`` class ids (0 = background, ``d + 1`` = digit ``d``).
        duration_us: the clip's length; the window is ``[0, duration_us]``.
        photos: names of the photographs; ``photo[i]`` indexes it, ``box[i]`` is the region
            (photo pixels) sample ``i`` shows, ``digits[i]`` its scan indices (-1 padded).
        cache_path: the ``.npz`` file backing the data, or None when not cached.
    """

    def __init__(
        self,
        data: dict[str, np.ndarray],
        split: str,
        *,
        duration_us: int,
        photos: list[str],
        timesteps: int | None,
        representation: str,
        bins_per_step: int,
        normalize: str,
        cache_path: Path | None = None,
        steps_per_frame: int = 1,
    ) -> None:
        self.events = make_events(data["x"], data["y"], data["t"], data["p"])
        self.offsets = data["offsets"]
        self.labels = data["labels"]
        self.photo, self.box, self.digits = data["photo"], data["box"], data["digits"]
        self.photos = photos
        self.split = split
        self.duration_us = int(duration_us)
        self.timesteps = timesteps
        self.representation = representation
        self.bins_per_step = bins_per_step
        self.normalize = normalize
        self.cache_path = cache_path
        self.steps_per_frame = check_steps_per_frame(timesteps, steps_per_frame)
        self.info = DatasetInfo(
            name="builtin_events",
            num_classes=NUM_CLASSES,
            class_names=list(CLASS_NAMES),
            in_channels=representation_channels(representation, bins_per_step),
            temporal=timesteps is not None,
            palette=categorical_palette(NUM_CLASSES),  # builtin's colours
            on_off_channels=(ON, OFF) if representation == "counts" else None,
        )

    @property
    def sensor_size(self) -> tuple[int, int, int]:
        """Tonic's ``(W, H, P)`` of the simulated sensor."""
        return int(self.labels.shape[2]), int(self.labels.shape[1]), 2

    def sample_events(self, index: int) -> np.ndarray:
        """The events of sample ``index`` (a view), sorted by t in ``[0, duration_us]``."""
        return self.events[self.offsets[index] : self.offsets[index + 1]]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        index %= len(self)
        frames = event_frames(
            self.sample_events(index), self.sensor_size, self.timesteps or 1,
            representation=self.representation, bins_per_step=self.bins_per_step,
            t_start=0, t_end=self.duration_us + 1,
            steps_per_frame=self.steps_per_frame if self.timesteps is not None else 1,
        )  # [T, C, H, W]; the window includes the last frame's instant
        x = normalize_frames(torch.from_numpy(frames), self.normalize)
        y = torch.from_numpy(self.labels[index].astype(np.int64))
        return (x if self.timesteps is not None else x[0]), y

    def __repr__(self) -> str:
        n, h, w = self.labels.shape
        return (f"BuiltinEvents(split={self.split!r}, n={n}, size={h}x{w}, "
                f"events={self.events.size}, T={self.timesteps}, {self.representation})")


def _number(value: Any, name: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise SpikesegError(f"{name} must be a number, got {value!r}")
    if not (lo <= float(value) <= hi):
        raise SpikesegError(f"{name} must lie in [{lo}, {hi}], got {value!r}")
    return float(value)


def _count(value: Any, name: str, lo: int, hi: int | None = None) -> int:
    if not is_int(value) or value < lo or (hi is not None and value > hi):
        bound = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise SpikesegError(f"{name} must be an int {bound}, got {value!r}")
    return int(value)


@register_dataset("builtin_events", palette=categorical_palette)
def builtin_events(
    split: str,
    root: str | os.PathLike[str] | None = None,
    *,
    image_size: int | Sequence[int] = 64,
    timesteps: int | None = 8,
    representation: str = "counts",
    bins_per_step: int = 1,
    steps_per_frame: int = 1,
    normalize: str = "none",
    num_train: int = 1000,
    num_val: int = 200,
    num_frames: int = 11,
    duration_ms: float = 50.0,
    digits_per_image: Sequence[int] = (1, 3),
    digit_scale: Sequence[float] = (0.3, 0.6),
    digit_motion: Sequence[float] = (0.1, 0.3),
    background_motion: Sequence[float] = (0.0, 0.1),
    contrast_threshold: float = 0.2,
    threshold_noise: float = 0.03,
    seed: int = 0,
    cache: bool = True,
) -> BuiltinEvents:
    """Build one split of the built-in event-camera dataset (generated, no download).

    Args:
        split: ``"train"`` or ``"val"`` (disjoint in digit scans and in photo regions).
        root: cache folder; default ``$SPIKESEG_CACHE`` or ``~/.cache/spikeseg``.
        image_size: sensor and output ``H = W`` as an int, or an ``(H, W)`` pair (>= 16).
        timesteps: frames per sample, ``[T, C, H, W]`` (the engine passes the model's T);
            None gives one frame ``[C, H, W]`` over the whole window.
        representation: ``"counts"`` (OFF, ON counts: C = 2) or ``"voxel"`` (voxel grid of
            ``timesteps · bins_per_step`` bins: C = ``bins_per_step``).
        bins_per_step: voxel bins per frame.
        steps_per_frame: the window becomes ``timesteps / steps_per_frame`` frames, each held
            for ``steps_per_frame`` consecutive steps (1: T frames, one per step).
        normalize: ``"none"`` (raw counts / voxel values), ``"minmax"`` (per frame and channel
            to ``[-0.5, 0.5]``, as the paper's DDD17 code) or ``"log"``
            (``sign(x)·log(1 + |x|)``).
        num_train: number of train clips (the default generates in ~10 s on one core and
            holds ~150 MB of events in memory at 64×64).
        num_val: number of validation clips.
        num_frames: rendered frames per clip (>= 2); more frames, finer motion.
        duration_ms: the clip's length in milliseconds (frame times are evenly spaced).
        digits_per_image: inclusive ``(min, max)`` number of digits per clip.
        digit_scale: ``(min, max)`` digit height, fraction of the shorter side.
        digit_motion: ``(min, max)`` distance a digit travels over the clip, fraction of the
            shorter side.
        background_motion: ``(min, max)`` pan of the background over the clip, same unit.
        contrast_threshold: the DVS contrast threshold ``C`` (log intensity).
        threshold_noise: per-pixel standard deviation of ``C``.
        seed: generation seed (non-negative); the same options give bit-identical events.
        cache: read/write the split's events as a compressed ``.npz`` in ``root``.

    Returns:
        The dataset.

    Raises:
        SpikesegError: a bad split or option, or scikit-learn / scikit-image not installed.
    """
    bi.check_split(split)
    size = bi.parse_builtin_size(image_size)
    if timesteps is not None:
        timesteps = _count(timesteps, "timesteps", 1)
    if representation not in REPRESENTATIONS:
        raise SpikesegError(
            f"representation must be one of {', '.join(REPRESENTATIONS)}, not {representation!r}"
        )
    bins_per_step = _count(bins_per_step, "bins_per_step", 1)
    check_steps_per_frame(timesteps, steps_per_frame)
    if normalize not in NORMALIZATIONS:
        raise SpikesegError(
            f"normalize must be one of {', '.join(NORMALIZATIONS)}, not {normalize!r}"
        )
    count = _count(num_train if split == "train" else num_val, f"num_{split}", 0)
    seed = _count(seed, "seed", 0)
    params = {
        "version": FORMAT_VERSION,
        "split": split,
        "image_size": list(size),
        "count": count,
        "num_frames": _count(num_frames, "num_frames", 2, 1000),
        "duration_ms": _number(duration_ms, "duration_ms", 0.001, 1e6),
        "digits_per_image": list(bi.parse_range(digits_per_image, "digits_per_image", int,
                                                 1, 64)),
        "digit_scale": list(bi.parse_range(digit_scale, "digit_scale", float, 0.05, 1.0)),
        "digit_motion": list(bi.parse_range(digit_motion, "digit_motion", float, 0.0, 2.0)),
        "background_motion": list(bi.parse_range(background_motion, "background_motion",
                                                  float, 0.0, 1.0)),
        "contrast_threshold": _number(contrast_threshold, "contrast_threshold", 0.01, 5.0),
        "threshold_noise": _number(threshold_noise, "threshold_noise", 0.0, 1.0),
        "seed": seed,
    }
    if params["num_frames"] - 1 > params["duration_ms"] * 1000:
        raise SpikesegError(
            f"num_frames={num_frames} frames do not fit in duration_ms={duration_ms} at 1 µs "
            "resolution; use fewer frames or a longer clip"
        )
    bi.require_packages()
    params["photos"] = bi.available_photo_names()

    path = None
    data = None
    if cache:
        root_dir = Path(root) if root is not None else bi.default_cache_root()
        path = bi.split_cache_path(root_dir, params, "builtin_events")
        data = _read_cache(path, params)
    if data is None:
        data = _generate(split, params)
        if path is not None and not bi.write_cache(path, params, data):
            path = None
    return BuiltinEvents(
        data, split, duration_us=int(round(params["duration_ms"] * 1000)),
        photos=params["photos"], timesteps=timesteps, representation=representation,
        bins_per_step=bins_per_step, normalize=normalize, cache_path=path,
        steps_per_frame=steps_per_frame,
    )
