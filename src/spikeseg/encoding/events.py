"""Event-camera data: Tonic-style event arrays and the frame representations models read.

Events are NumPy structured arrays with Tonic's field names and meaning (``x``, ``y`` pixel
column and row, ``t`` timestamp in microseconds, ``p`` polarity, 1 = ON / brighter, 0 = OFF /
darker), so arrays from Tonic datasets and transforms can be passed in directly, whatever
field order and integer types they use (``int``, ``int16``/``uint16`` coordinates,
``int32``/``int64``/``uint64`` timestamps) and polarities as 0/1, −1/1 or bool; a sensor is
described by ``sensor_size = (W, H)`` or Tonic's ``(W, H, P)``. Every function below also takes
a plain ``[N, 4]`` array of columns ``x, y, t, p`` (validated by :func:`as_events`). Input
arrays are never modified.

Representations, each a ``float32`` NumPy array:

* :func:`to_count_frames` — ``[n_bins, 2, H, W]``: event counts per polarity and
  equal-duration bin (the paper's "frames of accumulated positive/negative events"), in
  Tonic's ``ToFrame`` layout: channel ``c`` counts the events of polarity ``p = c``, i.e.
  :data:`OFF` = 0 then :data:`ON` = 1 (:data:`COUNT_CHANNELS`);
* :func:`to_voxel_grid` — ``[n_bins, H, W]``: the voxel grid of Zhu et al. (2019) with the
  normalisation E-RAFT and ESS use on DSEC: polarity as ±1, each event split between the two
  nearest bins by linear interpolation in normalised time
  ``t* = (n_bins − 1)(t − t_start)/(t_end − t_start)``;
* :func:`event_frames` — ``[T, C, H, W]``: one window split into T steps so a spiking network
  sees T frames (counts: C = 2; voxel: C = bins per step).

Against Tonic 1.7 (``tonic.transforms.ToFrame`` / ``ToVoxelGrid``, i.e.
``tonic/functional/to_frame.py``, ``tonic/slicers.py`` and
``tonic/functional/to_voxel_grid.py``), on the same events:

* channel order: the same (Tonic indexes the frame with ``events["p"].astype(int)``);
* count bins: the same for an explicit window whose length is a multiple of ``n_bins``
  (``ToFrame(time_window=d, start_time=t_start, end_time=t_end)``). With no window given
  spikeseg keeps every event, where ``ToFrame(n_time_bins=n)`` drops the last event and the
  remainder of the integer division (:func:`to_count_frames` says how to get Tonic's frames);
* voxel grid: Tonic scales time by ``n_bins`` instead of ``n_bins − 1``, so its grid of B bins
  is the first B bins of spikeseg's grid of B + 1 (:func:`to_voxel_grid`).

Stored frames of other layouts are not reordered: DDD17's EV-SegNet tensors hold the positive
(ON) count in channel 0 and the negative in channel 1 (:mod:`spikeseg.data.ddd17`); a dataset
says which of its channels are ON and OFF in ``DatasetInfo.on_off_channels``.

Everything is vectorised (``np.bincount``); no Python loop runs over events.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import SpikesegError

__all__ = [
    "EVENT_DTYPE",
    "REPRESENTATIONS",
    "OFF",
    "ON",
    "COUNT_CHANNELS",
    "make_events",
    "as_events",
    "to_count_frames",
    "to_voxel_grid",
    "event_frames",
    "check_steps_per_frame",
    "representation_channels",
]

EVENT_DTYPE = np.dtype([("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "<i1")])
"""Tonic's event fields: x, y (pixels), t (µs), p (1 = ON, 0 = OFF)."""

REPRESENTATIONS = ("counts", "voxel")
"""Names of the frame representations :func:`event_frames` builds."""

OFF = 0
"""Channel of the OFF (``p = 0``, darker) counts in :func:`to_count_frames` frames (Tonic's)."""
ON = 1
"""Channel of the ON (``p = 1``, brighter) counts in :func:`to_count_frames` frames (Tonic's)."""
COUNT_CHANNELS = ("OFF", "ON")
"""Names of the two channels of count frames, in order: channel ``c`` counts polarity ``c``."""

_FIELDS = ("x", "y", "t", "p")
_MAX_SIDE = int(np.iinfo(np.int16).max) + 1  # x, y are stored as int16
_MAX_T = int(np.iinfo(np.int64).max)


def _int(value: object, name: str) -> int:
    """``value`` as an int, or raise: bools and non-integral numbers are refused."""
    if isinstance(value, (bool, np.bool_)):
        raise SpikesegError(f"{name} must be an integer, got {value!r}")
    try:
        f = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise SpikesegError(f"{name} must be an integer, got {value!r}") from None
    if not np.isfinite(f) or f != int(f):
        raise SpikesegError(f"{name} must be an integer, got {value!r}")
    return int(value)  # type: ignore[call-overload]


def _sensor(sensor_size: Sequence[int]) -> tuple[int, int]:
    """``(W, H)`` from ``(W, H)`` or ``(W, H, P)``."""
    try:
        n = len(sensor_size)
    except TypeError:
        n = 0
    if n not in (2, 3):
        raise SpikesegError(f"sensor_size must be (W, H) or (W, H, P), got {sensor_size!r}")
    w, h = _int(sensor_size[0], "sensor width"), _int(sensor_size[1], "sensor height")
    if not (1 <= w <= _MAX_SIDE and 1 <= h <= _MAX_SIDE):
        raise SpikesegError(
            f"sensor_size {tuple(sensor_size)} must have a width and height in 1..{_MAX_SIDE}"
        )
    return w, h


def _integral(v: np.ndarray) -> bool:
    """Whether every value of a numeric array is a finite whole number."""
    if not np.issubdtype(v.dtype, np.floating):
        return True
    return bool(np.all(np.isfinite(v)) and np.all(v == np.floor(v)))


def make_events(x, y, t, p) -> np.ndarray:
    """An event array of :data:`EVENT_DTYPE` from four columns.

    Args:
        x: pixel columns ``[N]`` (integers, ``0 <= x < 32768``).
        y: pixel rows ``[N]``.
        t: timestamps ``[N]`` in microseconds (integers).
        p: polarities ``[N]`` in {0, 1}, {−1, 1} or bool; stored as 1 (ON) and 0 (OFF).

    Returns:
        ``EVENT_DTYPE [N]``, in the given order (no sorting, no sensor bounds check: use
        :func:`as_events` to validate data that comes from outside).

    Raises:
        SpikesegError: columns of different lengths or not 1-D, non-integral coordinates or
            timestamps, coordinates that do not fit ``int16``, polarities other than −1, 0, 1.
    """
    x, y, t, p = (np.asarray(v) for v in (x, y, t, p))
    if not (x.shape == y.shape == t.shape == p.shape) or x.ndim != 1:
        raise SpikesegError(
            "event columns x, y, t, p must be 1-D and of one length, got shapes "
            f"{x.shape}, {y.shape}, {t.shape}, {p.shape}"
        )
    ev = np.empty(x.shape[0], dtype=EVENT_DTYPE)
    if x.size == 0:
        return ev
    for name, v in (("x", x), ("y", y), ("t", t), ("p", p)):
        if not (np.issubdtype(v.dtype, np.number) or v.dtype == np.bool_):
            raise SpikesegError(f"event column {name} must be numeric, got dtype {v.dtype}")
        if not _integral(v):
            raise SpikesegError(f"event column {name} must hold whole numbers (t in µs)")
    for name, v in (("x", x), ("y", y)):
        if v.min() < 0 or v.max() >= _MAX_SIDE:
            raise SpikesegError(
                f"event {name} coordinates span {v.min()}..{v.max()}; they must lie in "
                f"0..{_MAX_SIDE - 1}"
            )
    if np.issubdtype(t.dtype, np.unsignedinteger) and int(t.max()) > _MAX_T:
        raise SpikesegError(
            f"event timestamps reach {int(t.max())} µs, beyond int64; subtract the first "
            "timestamp (t - t[0]) before passing them"
        )
    if p.dtype != np.bool_ and (p.min() < -1 or p.max() > 1):
        raise SpikesegError(
            f"event polarities must be 0/1, -1/1 or bool, found {p.min()}..{p.max()}"
        )
    ev["x"], ev["y"], ev["t"] = x, y, t
    ev["p"] = p > 0
    return ev


def as_events(
    events: np.ndarray, sensor_size: Sequence[int], *, source: str = "events"
) -> np.ndarray:
    """Validate ``events`` and return them as :data:`EVENT_DTYPE`.

    Args:
        events: a structured array with fields ``x, y, t, p`` (others are ignored) of any
            numeric or bool types and in any field order, as Tonic's datasets give them (e.g.
            ``int16`` x/y with ``int64`` t and ``bool`` p, ``uint16``/``uint64``, or ``int``
            throughout), or a plain ``[N, 4]`` numeric array of columns ``x, y, t, p``.
            Timestamps are whole microseconds (integers, or floats holding whole numbers);
            polarities 0/1 (OFF/ON), −1/1 or bool. Not modified.
        sensor_size: ``(W, H)`` or ``(W, H, P)``; coordinates must satisfy ``0 <= x < W``,
            ``0 <= y < H``.
        source: what to name in an error (e.g. the file the events came from).

    Returns:
        ``EVENT_DTYPE [N]`` (a copy): the same events in the same order, polarity stored as
        1 (ON: ``p`` = 1, True) or 0 (OFF: ``p`` = 0, −1, False).

    Raises:
        SpikesegError: one line starting with ``source``: wrong shape or fields, non-numeric
            or non-integral values, coordinates outside the sensor, polarities other than
            0/1 (or −1/1), or timestamps that decrease.
    """
    W, H = _sensor(sensor_size)
    a = np.asarray(events)
    if a.dtype.names is not None:
        missing = [f for f in _FIELDS if f not in a.dtype.names]
        if missing or a.ndim != 1:
            raise SpikesegError(
                f"{source}: expected a 1-D event array with fields x, y, t, p; got fields "
                f"{a.dtype.names} and shape {a.shape}"
            )
        cols = [a[f] for f in _FIELDS]
    elif a.ndim == 2 and a.shape[1] == 4:
        cols = [a[:, i] for i in range(4)]
    else:
        raise SpikesegError(
            f"{source}: expected a structured event array (x, y, t, p) or an [N, 4] array of "
            f"columns x, y, t, p, got shape {a.shape} and dtype {a.dtype}"
        )
    for name, v in zip(_FIELDS, cols, strict=True):
        if not (np.issubdtype(v.dtype, np.number) or v.dtype == np.bool_):
            raise SpikesegError(f"{source}: event field {name} has non-numeric dtype {v.dtype}")
    x, y, t, p = cols
    if x.size:
        for name, v, hi in (("x", x, W), ("y", y, H)):
            if not _integral(v):
                raise SpikesegError(f"{source}: {name} coordinates must be integers (pixels)")
            if v.min() < 0 or v.max() >= hi:
                raise SpikesegError(
                    f"{source}: {name} coordinates span {v.min()}..{v.max()}, outside the "
                    f"sensor's 0..{hi - 1} (sensor_size {W}x{H}); is sensor_size right?"
                )
        if not _integral(t):
            raise SpikesegError(
                f"{source}: timestamps must be whole microseconds (found fractional or "
                "non-finite values; convert seconds with np.round(t * 1e6))"
            )
        pol = set(np.unique(p).tolist())
        if not (pol <= {0, 1} or pol <= {-1, 1}):
            raise SpikesegError(
                f"{source}: polarities must be 0/1 or -1/1, found {sorted(pol)[:6]}"
            )
        if np.any(t[1:] < t[:-1]):  # not np.diff: it wraps around for unsigned t
            raise SpikesegError(f"{source}: timestamps decrease; sort the events by t")
    return make_events(x, y, t, p)


def _prepare(events: np.ndarray, sensor_size: Sequence[int]) -> tuple[np.ndarray, int, int]:
    """``(EVENT_DTYPE events, W, H)``: other layouts go through :func:`as_events`; events
    already of :data:`EVENT_DTYPE` get only the (cheap) sensor bounds check."""
    W, H = _sensor(sensor_size)
    a = np.asarray(events)
    if a.dtype != EVENT_DTYPE:
        return as_events(a, (W, H)), W, H
    if a.ndim != 1:
        raise SpikesegError(f"events: expected a 1-D event array, got shape {a.shape}")
    if a.size:
        for name, hi in (("x", W), ("y", H)):
            v = a[name]
            if v.min() < 0 or v.max() >= hi:
                raise SpikesegError(
                    f"events: {name} coordinates span {v.min()}..{v.max()}, outside the "
                    f"sensor's 0..{hi - 1} (sensor_size {W}x{H}); is sensor_size right?"
                )
    return a, W, H


def _bins(n_bins: int) -> int:
    n = _int(n_bins, "n_bins")
    if n < 1:
        raise SpikesegError(f"n_bins must be >= 1, got {n_bins}")
    return n


def _window(t: np.ndarray, t_start, t_end, end_default: int) -> tuple[int, int]:
    """``(t_start, t_end)`` as ints, defaults from the events: the earliest timestamp, and the
    latest plus ``end_default`` (0 or 1)."""
    t0 = _int(t_start, "t_start") if t_start is not None else (int(t.min()) if t.size else 0)
    if t_end is not None:
        t1 = _int(t_end, "t_end")
        if t1 <= t0:
            raise SpikesegError(f"empty time window: t_end {t1} <= t_start {t0} (µs)")
    else:
        t1 = max(int(t.max()) + end_default, t0) if t.size else t0 + end_default
    return t0, t1


def to_count_frames(
    events: np.ndarray,
    sensor_size: Sequence[int],
    n_bins: int,
    t_start: int | None = None,
    t_end: int | None = None,
) -> np.ndarray:
    """Event counts per polarity in ``n_bins`` equal-duration bins, in Tonic's layout.

    Channel ``c`` counts the events of polarity ``p = c``: channel :data:`OFF` = 0 the OFF
    events (``p`` = 0, −1 or False), channel :data:`ON` = 1 the ON events — the order of
    Tonic's ``ToFrame``, which indexes its ``[T, P, H, W]`` frames with
    ``events["p"].astype(int)`` (``tonic/functional/to_frame.py``), so a model trained on
    these frames reads Tonic's and the other way round; DDD17's stored EV-SegNet tensors are
    the exception (ON first, see :mod:`spikeseg.data.ddd17`). Polarities −1/1 are read as
    OFF/ON here; Tonic's ``ToFrame`` would index −1 as the last channel, i.e. count them as ON
    (give it 0/1 polarities).

    Bin ``k`` covers ``[t_start + k·d, t_start + (k+1)·d)`` with
    ``d = (t_end − t_start)/n_bins`` (computed exactly, in integer arithmetic: an event at ``t``
    falls in bin ``floor((t − t_start)·n_bins / (t_end − t_start))``, so an event on a bin
    edge belongs to the later bin). Events outside ``[t_start, t_end)`` are dropped.

    Where this agrees with Tonic 1.7 and where it differs (same events, same sensor):

    * explicit window with ``(t_end − t_start)`` a multiple of ``n_bins``: identical to
      ``ToFrame(sensor_size, time_window=d, start_time=t_start, end_time=t_end)`` (its
      ``SliceByTime`` takes ``[t_start + k·d, t_start + (k+1)·d)`` by ``searchsorted``).
    * no window given: spikeseg counts every event, in bins of ``(t_last + 1 − t_first)/n_bins``
      µs over ``[t_first, t_last + 1)``. ``ToFrame(sensor_size, n_time_bins=n_bins)``
      (``SliceByTimeBins``) instead uses the integer width ``d_T = (t_last − t_first) //
      n_bins`` and drops every event from ``t_first + n_bins·d_T`` on: always the last event
      (so a window's final instant, e.g. the labelled frame's, is lost), up to
      ``n_bins − 1`` µs more, and everything when ``t_last − t_first < n_bins``. spikeseg
      keeps them because a segmentation label belongs to the window's end. Tonic's frames are
      ``to_count_frames(events, sensor_size, n_bins, t_first, t_first + n_bins·d_T)``
      (for ``d_T >= 1``).
    * dtype ``float32`` (Tonic: ``int16``); the ``P`` of a ``(W, H, P)`` sensor is ignored:
      there are always two channels (Tonic's ``P = 1`` merges the polarities).

    Args:
        events: :data:`EVENT_DTYPE` array, a Tonic structured array or ``[N, 4]`` array.
        sensor_size: ``(W, H)`` or ``(W, H, P)``.
        n_bins: number of bins.
        t_start: window start in µs (default: the earliest event).
        t_end: window end in µs, exclusive (default: the latest event + 1, so it counts).

    Returns:
        ``float32 [n_bins, 2, H, W]``: channel 0 counts OFF events, channel 1 ON events.

    Raises:
        SpikesegError: malformed events (see :func:`as_events`), a bad ``n_bins`` or an empty
            window.
    """
    ev, W, H = _prepare(events, sensor_size)
    n = _bins(n_bins)
    t = ev["t"]
    t0, t1 = _window(t, t_start, t_end, 1)
    out = np.zeros((n, 2, H, W), dtype=np.float32)
    keep = (t >= t0) & (t < t1)
    if not keep.any():
        return out
    ev = ev[keep]
    b = (ev["t"] - t0) * n // (t1 - t0)  # int64, exact
    c = (ev["p"] > 0).astype(np.int64)  # channel = polarity: OFF -> 0, ON -> 1 (Tonic's)
    flat = ((b * 2 + c) * H + ev["y"].astype(np.int64)) * W + ev["x"].astype(np.int64)
    out.reshape(-1)[:] = np.bincount(flat, minlength=out.size)
    return out


def to_voxel_grid(
    events: np.ndarray,
    sensor_size: Sequence[int],
    n_bins: int,
    t_start: int | None = None,
    t_end: int | None = None,
) -> np.ndarray:
    """The event voxel grid of Zhu et al. (2019), as E-RAFT and ESS build it for DSEC.

    Each event contributes its polarity ``v = ±1`` (ON = +1) to the bins around its
    normalised time ``t* = (n_bins − 1)(t − t_start)/(t_end − t_start)``, with linear
    ("bilinear in time") weights::

        V[k, y, x] = Σ_events v · max(0, 1 − |k − t*|)

    so an event adds ``v·(1 − f)`` to bin ``floor(t*)`` and ``v·f`` to bin ``floor(t*) + 1``,
    ``f = t* − floor(t*)``, and each event's ``|contributions|`` sum to 1. Bin ``k`` is centred
    at ``t_start + k(t_end − t_start)/(n_bins − 1)``: the first bin at ``t_start``, the last at
    ``t_end``.

    Normalisation followed: ESS's and E-RAFT's ``VoxelGrid.convert`` (from rpg_e2vid),
    ``t* = (C − 1)(t − t[0])/(t[−1] − t[0])`` over the events of the window, because these
    are the references for the DSEC-Semantic numbers. With the default window
    (``t_start``/``t_end`` None: the earliest and the latest event, the latest included) the
    result is identical to theirs without their optional mean/std normalisation of the
    non-zero entries. Given an explicit window, events in ``[t_start, t_end)`` are used, like
    :func:`to_count_frames`. When all events share one timestamp under the default window,
    ``t* = 0`` (rpg_e2vid's convention for a zero span; Tonic divides by zero).

    Tonic 1.7's ``ToVoxelGrid(sensor_size, n_time_bins=B)`` (``tonic/functional/
    to_voxel_grid.py``) sums the same terms but scales time by ``B``, not ``B − 1``:
    ``t*_T = B(t − t_first)/(t_last − t_first)``, so its bin ``k`` is centred at
    ``t_first + k(t_last − t_first)/B``, the weight an event would give bin ``B`` is dropped,
    and the last event falls off the grid. With the same events, Tonic's grid is the first
    ``B`` bins of this one with ``B + 1`` bins (default window)::

        ToVoxelGrid(sensor_size, n_time_bins=B)(events)[:, 0]
            == to_voxel_grid(events, sensor_size, B + 1)[:B]

    Tonic returns ``[B, 1, H, W]`` float64, and needs signed integer polarities: it turns
    ``p == 0`` into −1 in its copy, which for ``bool`` polarities makes every event +1 and
    fails for unsigned ones. spikeseg reads 0/1, −1/1 and bool alike.

    Args:
        events: :data:`EVENT_DTYPE` array, a Tonic structured array or ``[N, 4]`` array.
        sensor_size: ``(W, H)`` or ``(W, H, P)``.
        n_bins: number of temporal bins ``B``; with ``B = 1`` every event adds ``v`` to bin 0.
        t_start: window start in µs (default: the earliest event).
        t_end: window end in µs (default: the latest event, included).

    Returns:
        ``float32 [n_bins, H, W]``, no further normalisation.

    Raises:
        SpikesegError: malformed events (see :func:`as_events`), a bad ``n_bins`` or an empty
            window.
    """
    ev, W, H = _prepare(events, sensor_size)
    n = _bins(n_bins)
    t = ev["t"]
    t0, t1 = _window(t, t_start, t_end, 0)
    out = np.zeros((n, H, W), dtype=np.float32)
    keep = (t >= t0) & ((t <= t1) if t_end is None else (t < t1))
    if not keep.any():
        return out
    ev = ev[keep]
    span = max(t1 - t0, 1)
    # (n-1)*dt is exact in float64 (< 2**53), so t = t_end gives t* = n - 1 exactly
    ts = (n - 1) * (ev["t"] - t0).astype(np.float64) / span
    lo = np.floor(ts).astype(np.int64)
    frac = ts - lo
    pol = np.where(ev["p"] > 0, 1.0, -1.0)
    pix = ev["y"].astype(np.int64) * W + ev["x"].astype(np.int64)
    acc = np.zeros(out.size, dtype=np.float64)
    for b, w in ((lo, 1.0 - frac), (lo + 1, frac)):
        ok = b < n
        acc += np.bincount(b[ok] * (H * W) + pix[ok], weights=(pol * w)[ok], minlength=acc.size)
    out.reshape(-1)[:] = acc
    return out


def representation_channels(representation: str, bins_per_step: int = 1) -> int:
    """Channels per frame of a representation: 2 for ``"counts"``, ``bins_per_step`` for
    ``"voxel"``."""
    if representation not in REPRESENTATIONS:
        raise SpikesegError(
            f"representation must be one of {', '.join(REPRESENTATIONS)}, not {representation!r}"
        )
    return 2 if representation == "counts" else _int(bins_per_step, "bins_per_step")


def event_frames(
    events: np.ndarray,
    sensor_size: Sequence[int],
    timesteps: int,
    *,
    representation: str = "counts",
    bins_per_step: int = 1,
    t_start: int | None = None,
    t_end: int | None = None,
    steps_per_frame: int = 1,
) -> np.ndarray:
    """One window of events as T frames for a spiking network, the last ending at ``t_end``.

    Args:
        events: :data:`EVENT_DTYPE` array, a Tonic structured array or ``[N, 4]`` array.
        sensor_size: ``(W, H)`` or ``(W, H, P)``.
        timesteps: number of frames ``T``: the window is split into T equal sub-windows.
        representation: ``"counts"``: :func:`to_count_frames` with T bins (C = 2: OFF then
            ON, as Tonic). ``"voxel"``: one :func:`to_voxel_grid` of ``T·bins_per_step`` bins
            over the whole window, frame ``i`` holding bins ``i·bins_per_step ..
            (i+1)·bins_per_step − 1`` (C = ``bins_per_step``).
        bins_per_step: voxel bins per frame (ignored for counts).
        t_start: window start in µs (default: the earliest event).
        t_end: window end in µs (defaults as in :func:`to_count_frames` /
            :func:`to_voxel_grid`).
        steps_per_frame: ``r``: the window is split into ``T / r`` sub-windows instead, and
            each of their frames is held for ``r`` consecutive steps (denser frames, each seen
            for longer, as direct coding holds a static image; ``T`` must be a multiple of
            ``r``).

    Returns:
        ``float32 [T, C, H, W]``.

    Raises:
        SpikesegError: an unknown representation, ``timesteps``, ``bins_per_step`` or
            ``steps_per_frame`` below 1, ``timesteps`` not a multiple of ``steps_per_frame``,
            or malformed events.
    """
    if representation not in REPRESENTATIONS:
        raise SpikesegError(
            f"representation must be one of {', '.join(REPRESENTATIONS)}, not {representation!r}"
        )
    steps = _int(timesteps, "timesteps")
    if steps < 1:
        raise SpikesegError(f"timesteps must be >= 1, got {timesteps}")
    hold = check_steps_per_frame(steps, steps_per_frame)
    steps //= hold
    if representation == "counts":
        frames = to_count_frames(events, sensor_size, steps, t_start, t_end)
    else:
        per = _int(bins_per_step, "bins_per_step")
        if per < 1:
            raise SpikesegError(f"bins_per_step must be >= 1, got {bins_per_step}")
        grid = to_voxel_grid(events, sensor_size, steps * per, t_start, t_end)
        frames = grid.reshape(steps, per, *grid.shape[1:])
    return frames if hold == 1 else np.repeat(frames, hold, axis=0)


def check_steps_per_frame(timesteps: int | None, steps_per_frame: object) -> int:
    """``steps_per_frame`` as an int >= 1 that divides ``timesteps`` (None: any).

    Raises:
        SpikesegError: not an int >= 1, or not a divisor of ``timesteps``.
    """
    if isinstance(steps_per_frame, bool) or not isinstance(steps_per_frame, (int, np.integer)) \
            or steps_per_frame < 1:
        raise SpikesegError(f"steps_per_frame must be an int >= 1, got {steps_per_frame!r}")
    r = int(steps_per_frame)
    if timesteps is not None and timesteps % r:
        raise SpikesegError(
            f"timesteps={timesteps} is not a multiple of steps_per_frame={r}: each of the "
            f"T / steps_per_frame frames is held for steps_per_frame steps"
        )
    return r
