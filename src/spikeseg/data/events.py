"""Event-camera data: Tonic-style event arrays and the frame representations models read.

Events are NumPy structured arrays with Tonic's field names and meaning (``x``, ``y`` pixel
coordinates, ``t`` timestamp in microseconds, ``p`` polarity, 1 = ON / brighter, 0 = OFF), so
arrays from Tonic datasets and transforms can be passed in directly; a sensor is described by
``sensor_size = (W, H)`` or Tonic's ``(W, H, P)``.

Representations, each a float32 NumPy array:

* :func:`to_count_frames` — ``[n_bins, 2, H, W]``: positive and negative event counts per
  equal-duration bin (the paper's "frames of accumulated positive/negative events");
* :func:`to_voxel_grid` — ``[n_bins, H, W]``: the voxel grid of Zhu et al. (2019), as E-RAFT
  and ESS use it on DSEC: polarity as ±1, each event split between the two nearest bins by
  linear interpolation in normalised time ``t* = (n_bins − 1)(t − t_start)/(t_end − t_start)``;
* :func:`event_frames` — ``[T, C, H, W]``: one window split into T steps so a spiking network
  sees T frames (counts: C = 2; voxel: C = bins per step).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import SpikesegError

__all__ = [
    "EVENT_DTYPE",
    "make_events",
    "as_events",
    "to_count_frames",
    "to_voxel_grid",
    "event_frames",
    "REPRESENTATIONS",
]

EVENT_DTYPE = np.dtype([("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "<i1")])
"""Tonic's event fields: x, y (pixels), t (µs), p (1 = ON, 0 = OFF)."""

REPRESENTATIONS = ("counts", "voxel")


def _sensor(sensor_size: Sequence[int]) -> tuple[int, int]:
    if len(sensor_size) not in (2, 3) or any(int(v) < 1 for v in sensor_size[:2]):
        raise SpikesegError(f"sensor_size must be (W, H) or (W, H, P), got {tuple(sensor_size)}")
    return int(sensor_size[0]), int(sensor_size[1])


def make_events(x, y, t, p) -> np.ndarray:
    """An event array of :data:`EVENT_DTYPE` from columns; ``p`` in {0, 1}, {−1, 1} or bool."""
    x, y, t, p = (np.asarray(v) for v in (x, y, t, p))
    if not (x.shape == y.shape == t.shape == p.shape) or x.ndim != 1:
        raise SpikesegError(
            f"event columns must be 1-D of one length, got {x.shape}, {y.shape}, {t.shape}, {p.shape}"
        )
    ev = np.empty(x.shape[0], dtype=EVENT_DTYPE)
    ev["x"], ev["y"], ev["t"] = x, y, t
    ev["p"] = (p > 0).astype(np.int8)
    return ev


def as_events(events: np.ndarray, sensor_size: Sequence[int], *, source: str = "events") -> np.ndarray:
    """Validate ``events`` and return them as :data:`EVENT_DTYPE`.

    Accepts a structured array with fields ``x, y, t, p`` (any numeric types, e.g. Tonic's) or
    a plain ``[N, 4]`` array of columns ``x, y, t, p``.

    Raises:
        SpikesegError: one line naming ``source``: wrong shape or fields, coordinates outside
            the sensor, polarities other than 0/1 (or −1/1), or timestamps that decrease.
    """
    W, H = _sensor(sensor_size)
    a = np.asarray(events)
    if a.dtype.names is not None:
        missing = [f for f in ("x", "y", "t", "p") if f not in a.dtype.names]
        if missing or a.ndim != 1:
            raise SpikesegError(
                f"{source}: expected a 1-D event array with fields x, y, t, p; "
                f"got fields {a.dtype.names} and shape {a.shape}"
            )
        x, y, t, p = a["x"], a["y"], a["t"], a["p"]
    elif a.ndim == 2 and a.shape[1] == 4:
        x, y, t, p = a[:, 0], a[:, 1], a[:, 2], a[:, 3]
    else:
        raise SpikesegError(
            f"{source}: expected a structured event array (x, y, t, p) or an [N, 4] array, "
            f"got shape {a.shape}"
        )
    if x.size:
        for name, v, hi in (("x", x, W), ("y", y, H)):
            if np.issubdtype(v.dtype, np.floating) and not np.all(v == np.floor(v)):
                raise SpikesegError(f"{source}: {name} coordinates must be integers")
            if v.min() < 0 or v.max() >= hi:
                raise SpikesegError(
                    f"{source}: {name} coordinates span {v.min()}..{v.max()}, outside the "
                    f"sensor's 0..{hi - 1} (sensor_size {W}x{H})"
                )
        pol = np.unique(p)
        if not (set(pol.tolist()) <= {0, 1} or set(pol.tolist()) <= {-1, 1}):
            raise SpikesegError(f"{source}: polarities must be 0/1 or -1/1, found {pol[:6].tolist()}")
        if np.any(np.diff(t) < 0):
            raise SpikesegError(f"{source}: timestamps decrease; sort the events by t")
    return make_events(x.astype(np.int64), y.astype(np.int64), t.astype(np.int64), p)


def _window(events: np.ndarray, t_start, t_end) -> tuple[int, int]:
    if t_start is None:
        t_start = int(events["t"][0]) if events.size else 0
    if t_end is None:
        t_end = int(events["t"][-1]) + 1 if events.size else int(t_start) + 1
    if t_end <= t_start:
        raise SpikesegError(f"empty time window [{t_start}, {t_end})")
    return int(t_start), int(t_end)


def to_count_frames(
    events: np.ndarray,
    sensor_size: Sequence[int],
    n_bins: int,
    t_start: int | None = None,
    t_end: int | None = None,
) -> np.ndarray:
    """Positive / negative event counts in ``n_bins`` equal-duration bins, ``[n_bins, 2, H, W]``.

    Bin ``k`` covers ``[t_start + k·d, t_start + (k+1)·d)`` with ``d = (t_end − t_start)/n_bins``;
    events outside ``[t_start, t_end)`` are dropped. Channel 0 counts ON events, channel 1 OFF.
    Defaults: the window from the first event to just after the last.
    """
    W, H = _sensor(sensor_size)
    if n_bins < 1:
        raise SpikesegError(f"n_bins must be >= 1, got {n_bins}")
    t0, t1 = _window(events, t_start, t_end)
    out = np.zeros((n_bins, 2, H, W), dtype=np.float32)
    if events.size == 0:
        return out
    t = events["t"].astype(np.int64)
    keep = (t >= t0) & (t < t1)
    ev = events[keep]
    b = ((t[keep] - t0) * n_bins // (t1 - t0)).astype(np.int64)
    c = (ev["p"] <= 0).astype(np.int64)  # ON -> 0, OFF -> 1
    flat = ((b * 2 + c) * H + ev["y"].astype(np.int64)) * W + ev["x"].astype(np.int64)
    out.reshape(-1)[:] = np.bincount(flat, minlength=out.size).astype(np.float32)
    return out


def to_voxel_grid(
    events: np.ndarray,
    sensor_size: Sequence[int],
    n_bins: int,
    t_start: int | None = None,
    t_end: int | None = None,
) -> np.ndarray:
    """The voxel grid of Zhu et al. 2019 (E-RAFT / ESS convention), ``[n_bins, H, W]``.

    Each event in ``[t_start, t_end)`` contributes its polarity (+1 ON, −1 OFF) to bins
    ``floor(t*)`` and ``floor(t*) + 1`` with weights ``1 − |t* − bin|`` (bilinear in time),
    ``t* = (n_bins − 1)(t − t_start)/(t_end − t_start)``. No normalisation is applied.
    """
    W, H = _sensor(sensor_size)
    if n_bins < 1:
        raise SpikesegError(f"n_bins must be >= 1, got {n_bins}")
    t0, t1 = _window(events, t_start, t_end)
    out = np.zeros((n_bins, H, W), dtype=np.float32)
    if events.size == 0:
        return out
    t = events["t"].astype(np.int64)
    keep = (t >= t0) & (t < t1)
    ev = events[keep]
    ts = (n_bins - 1) * (t[keep] - t0).astype(np.float64) / (t1 - t0)
    pol = np.where(ev["p"] > 0, 1.0, -1.0)
    pix = ev["y"].astype(np.int64) * W + ev["x"].astype(np.int64)
    lo = np.floor(ts).astype(np.int64)
    flat = out.reshape(-1)
    for b, w in ((lo, 1.0 - (ts - lo)), (lo + 1, ts - lo)):
        ok = (b < n_bins) & (w > 0)
        flat += np.bincount(b[ok] * H * W + pix[ok], weights=(pol * w)[ok],
                            minlength=flat.size).astype(np.float32)
    return out


def event_frames(
    events: np.ndarray,
    sensor_size: Sequence[int],
    timesteps: int,
    *,
    representation: str = "counts",
    bins_per_step: int = 1,
    t_start: int | None = None,
    t_end: int | None = None,
) -> np.ndarray:
    """One window of events as T frames for a spiking network, ``[T, C, H, W]``.

    ``"counts"``: :func:`to_count_frames` with T bins (C = 2). ``"voxel"``: one voxel grid of
    ``T·bins_per_step`` bins over the window, split into T steps (C = ``bins_per_step``).
    """
    if representation not in REPRESENTATIONS:
        raise SpikesegError(
            f"representation must be one of {REPRESENTATIONS}, not {representation!r}"
        )
    if timesteps < 1:
        raise SpikesegError(f"timesteps must be >= 1, got {timesteps}")
    if representation == "counts":
        return to_count_frames(events, sensor_size, timesteps, t_start, t_end)
    if bins_per_step < 1:
        raise SpikesegError(f"bins_per_step must be >= 1, got {bins_per_step}")
    grid = to_voxel_grid(events, sensor_size, timesteps * bins_per_step, t_start, t_end)
    return grid.reshape(timesteps, bins_per_step, *grid.shape[1:])


def representation_channels(representation: str, bins_per_step: int = 1) -> int:
    """Channels per frame of a representation (2 for counts, ``bins_per_step`` for voxel)."""
    return 2 if representation == "counts" else int(bins_per_step)
