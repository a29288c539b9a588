"""Event arrays and their frame representations against hand computations.

Tonic is not a dependency (nor installed in CI), so the references are written here by hand
from the definitions: bin edges in exact rational arithmetic for count frames, and the voxel
grid's defining sum ``V[k] = Σ v·max(0, 1 − |k − t*|)`` with ESS's / E-RAFT's time
normalisation.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

import spikeseg.encoding as encoding
from spikeseg.data import events as E
from spikeseg.data.events import (
    EVENT_DTYPE,
    as_events,
    event_frames,
    make_events,
    representation_channels,
    to_count_frames,
    to_voxel_grid,
)
from spikeseg.errors import SpikesegError

SENSOR = (4, 3)  # W, H


def _events():
    # x, y, t (µs), p
    return make_events([0, 1, 1, 3, 2, 0], [0, 2, 2, 1, 0, 0],
                       [0, 10, 49, 50, 99, 100], [1, 0, 0, 1, 1, 0])


def _random_events(n=200, seed=0, sensor=(5, 4), t_max=1000):
    rng = np.random.default_rng(seed)
    return make_events(rng.integers(0, sensor[0], n), rng.integers(0, sensor[1], n),
                       np.sort(rng.integers(0, t_max, n)), rng.integers(0, 2, n))


def _reference_counts(ev, sensor, n_bins, t0, t1):
    """Counts by a loop over events, bin edges ``t0 + k (t1 - t0) / n`` as exact fractions."""
    W, H = sensor
    out = np.zeros((n_bins, 2, H, W))
    edges = [t0 + Fraction(k * (t1 - t0), n_bins) for k in range(n_bins + 1)]
    for e in ev:
        t = int(e["t"])
        for k in range(n_bins):
            if edges[k] <= t < edges[k + 1]:
                out[k, 1 if e["p"] == 1 else 0, e["y"], e["x"]] += 1  # OFF, ON (Tonic's)
    return out


def _reference_voxel(ev, sensor, n_bins, t0, t1):
    """The defining sum V[k] = Σ v·max(0, 1 - |k - t*|), t* = (B-1)(t - t0)/(t1 - t0)."""
    W, H = sensor
    out = np.zeros((n_bins, H, W))
    for e in ev:
        ts = (n_bins - 1) * (int(e["t"]) - t0) / (t1 - t0)
        for k in range(n_bins):
            out[k, e["y"], e["x"]] += (1.0 if e["p"] == 1 else -1.0) * max(0.0, 1 - abs(k - ts))
    return out


# --------------------------------------------------------------------------- count frames


def test_count_frames_by_hand():
    f = to_count_frames(_events(), SENSOR, 2, 0, 100)  # bins [0,50) and [50,100)
    assert f.shape == (2, 2, 3, 4) and f.dtype == np.float32
    want = np.zeros_like(f)
    # channel 0 counts OFF (p = 0), channel 1 ON (p = 1): Tonic's ToFrame order
    want[0, 1, 0, 0] = 1  # t=0 ON at (0, 0)
    want[0, 0, 2, 1] = 2  # t=10, 49 OFF at (x=1, y=2)
    want[1, 1, 1, 3] = 1  # t=50 ON at (3, 1): bin edges belong to the later bin
    want[1, 1, 0, 2] = 1  # t=99 ON
    # t=100 lies at the window's end: dropped
    np.testing.assert_array_equal(f, want)
    # default window: first event to just after the last, so t=100 counts
    default = to_count_frames(_events(), (4, 3, 2), 1)
    assert default.sum() == 6 and default[0, 0, 0, 0] == 1  # t=100 OFF at (0, 0)


def test_count_frames_edges_of_unequal_division():
    # 3 bins over [0, 100): edges at 33 1/3 and 66 2/3; events before/after the window dropped
    ev = make_events([0] * 7, [0] * 7, [-1, 0, 33, 34, 66, 67, 100], [1] * 7)
    f = to_count_frames(ev, SENSOR, 3, 0, 100)
    assert f[:, 1, 0, 0].tolist() == [2, 2, 1]  # {0, 33}, {34, 66}, {67}, all ON
    assert f[:, 0].sum() == 0
    np.testing.assert_array_equal(f, _reference_counts(ev, SENSOR, 3, 0, 100))


@pytest.mark.parametrize("n_bins, t0, t1", [(1, 0, 1000), (3, 0, 1000), (7, 100, 901),
                                            (5, -50, 2000)])
def test_count_frames_match_the_reference(n_bins, t0, t1):
    ev = _random_events()
    np.testing.assert_array_equal(to_count_frames(ev, (5, 4), n_bins, t0, t1),
                                  _reference_counts(ev, (5, 4), n_bins, t0, t1))


def test_no_events_give_zero_frames():
    empty = make_events([], [], [], [])
    assert to_count_frames(empty, SENSOR, 3).shape == (3, 2, 3, 4)
    assert not to_count_frames(empty, SENSOR, 3, 0, 10).any()
    assert not to_voxel_grid(empty, SENSOR, 2).any()
    assert event_frames(np.zeros((0, 4)), SENSOR, 2, representation="voxel",
                        bins_per_step=2).shape == (2, 2, 3, 4)


# --------------------------------------------------------------------------- voxel grid


def test_voxel_grid_by_hand():
    ev = make_events([0, 0, 2, 1], [0, 0, 1, 0], [0, 25, 60, 100], [1, 0, 1, 1])
    g = to_voxel_grid(ev, SENSOR, 3, 0, 100)  # t* = 2 t / 100; window [0, 100)
    assert g.shape == (3, 3, 4) and g.dtype == np.float32
    # (0,0): t=0 ON -> bin 0 +1; t=25 OFF, t*=0.5 -> bins 0 and 1 get -0.5
    np.testing.assert_allclose(g[:, 0, 0], [1 - 0.5, -0.5, 0])
    # (2,1): t=60 ON, t*=1.2 -> bin 1 +0.8, bin 2 +0.2
    np.testing.assert_allclose(g[:, 1, 2], [0, 0.8, 0.2], rtol=1e-6)
    assert not g[:, 0, 1].any()  # t=100 lies outside [0, 100)
    # default window = [first, last] as ESS/E-RAFT: the last event sits on the last bin
    d = to_voxel_grid(ev, SENSOR, 3)
    np.testing.assert_allclose(d, g + np.pad(np.ones((1, 1, 1)), ((2, 0), (0, 2), (1, 2))))
    np.testing.assert_allclose(d, _reference_voxel(ev, SENSOR, 3, 0, 100), atol=1e-6)


@pytest.mark.parametrize("n_bins, window", [(5, (0, 1000)), (6, (200, 700)), (2, None)])
def test_voxel_grid_matches_the_defining_sum(n_bins, window):
    ev = _random_events(seed=1)
    if window is None:  # the default window: the first and the last event, both included
        t0, t1 = int(ev["t"][0]), int(ev["t"][-1])
        sel = ev
        got = to_voxel_grid(ev, (5, 4), n_bins)
    else:
        t0, t1 = window
        sel = ev[(ev["t"] >= t0) & (ev["t"] < t1)]
        got = to_voxel_grid(ev, (5, 4), n_bins, t0, t1)
    np.testing.assert_allclose(got, _reference_voxel(sel, (5, 4), n_bins, t0, t1), atol=1e-5)


def test_voxel_grid_conserves_mass_per_polarity():
    rng = np.random.default_rng(3)
    t = np.sort(rng.integers(0, 1000, 300))
    for p in (0, 1):
        ev = make_events(rng.integers(0, 4, 300), rng.integers(0, 3, 300), t, np.full(300, p))
        inside = int(((t >= 100) & (t < 900)).sum())
        g = to_voxel_grid(ev, SENSOR, 5, 100, 900)
        assert np.abs(g).sum() == pytest.approx(inside, rel=1e-6)
        assert np.sign(g[g != 0]).tolist() == [1 if p else -1] * int((g != 0).sum())
        assert np.abs(to_voxel_grid(ev, SENSOR, 4)).sum() == pytest.approx(300, rel=1e-6)


def test_voxel_grid_degenerate_windows():
    ev = make_events([1, 2], [0, 0], [500, 500], [1, 0])  # one timestamp: t* = 0
    g = to_voxel_grid(ev, SENSOR, 3)
    assert g[0, 0, 1] == 1 and g[0, 0, 2] == -1 and not g[1:].any()
    one = to_voxel_grid(_events(), SENSOR, 1)  # one bin: every event adds its polarity
    assert one[0, 0, 0] == 1 - 1 and one[0, 2, 1] == -2 and one.sum() == 3 - 3


# --------------------------------------------------------------------------- T frames


def test_event_frames_split_a_window():
    ev = _random_events(seed=2)
    frames = event_frames(ev, (5, 4), 4, t_start=0, t_end=1000)
    assert frames.shape == (4, 2, 4, 5) and frames.dtype == np.float32
    np.testing.assert_array_equal(frames, to_count_frames(ev, (5, 4), 4, 0, 1000))
    # each frame is the count frame of its quarter of the window
    for i in range(4):
        np.testing.assert_array_equal(
            frames[i], to_count_frames(ev, (5, 4), 1, 250 * i, 250 * (i + 1))[0])
    np.testing.assert_array_equal(frames.sum(0), to_count_frames(ev, (5, 4), 1, 0, 1000)[0])
    v = event_frames(ev, (5, 4), 2, representation="voxel", bins_per_step=3, t_start=0,
                     t_end=1000)
    assert v.shape == (2, 3, 4, 5)
    np.testing.assert_array_equal(v.reshape(6, 4, 5), to_voxel_grid(ev, (5, 4), 6, 0, 1000))
    # defaults follow the representation functions' defaults
    np.testing.assert_array_equal(event_frames(ev, (5, 4), 3), to_count_frames(ev, (5, 4), 3))
    assert representation_channels("counts") == 2
    assert representation_channels("voxel", 5) == 5
    # steps_per_frame: T / r frames of the window, each held for r consecutive steps
    held = event_frames(ev, (5, 4), 4, t_start=0, t_end=1000, steps_per_frame=2)
    assert held.shape == (4, 2, 4, 5)
    halves = to_count_frames(ev, (5, 4), 2, 0, 1000)
    for i in range(4):
        np.testing.assert_array_equal(held[i], halves[i // 2])
    vh = event_frames(ev, (5, 4), 4, representation="voxel", bins_per_step=3, t_start=0,
                      t_end=1000, steps_per_frame=2)
    np.testing.assert_array_equal(vh[::2], v)
    np.testing.assert_array_equal(vh[1::2], v)


@pytest.mark.parametrize("kwargs, match", [
    ({"representation": "time_surface"}, "representation must be one of counts, voxel"),
    ({"timesteps": 0}, "timesteps must be >= 1"),
    ({"timesteps": 2.5}, "timesteps must be an integer"),
    ({"representation": "voxel", "bins_per_step": 0}, "bins_per_step must be >= 1"),
    ({"steps_per_frame": 0}, "steps_per_frame must be an int >= 1"),
    ({"timesteps": 3, "steps_per_frame": 2}, "timesteps=3 is not a multiple of steps_per_frame=2"),
    ({"t_start": 50, "t_end": 50}, "empty time window"),
    ({"sensor_size": (4,)}, r"sensor_size must be \(W, H\)"),
    ({"sensor_size": (0, 3)}, "width and height in 1..32768"),
])
def test_event_frames_bad_arguments(kwargs, match):
    args = {"sensor_size": SENSOR, "timesteps": 2, **kwargs}
    with pytest.raises(SpikesegError, match=match):
        event_frames(_events(), args.pop("sensor_size"), args.pop("timesteps"), **args)


def test_encoding_reexports_the_event_functions():
    for name in ("EVENT_DTYPE", "make_events", "as_events", "to_count_frames", "to_voxel_grid",
                 "event_frames"):
        assert getattr(encoding, name) is getattr(E, name) and name in encoding.__all__


# --------------------------------------------------------------------------- arrays in


def test_make_events_polarity_conventions():
    for p in ([1, 0, 1], [1, -1, 1], [True, False, True], [1.0, -1.0, 1.0]):
        ev = make_events([0, 1, 2], [0, 0, 0], [1, 2, 3], p)
        assert ev.dtype == EVENT_DTYPE and ev["p"].tolist() == [1, 0, 1]
    with pytest.raises(SpikesegError, match="polarities"):
        make_events([0], [0], [0], [2])
    with pytest.raises(SpikesegError, match="one length"):
        make_events([0, 1], [0], [0], [1])
    with pytest.raises(SpikesegError, match="whole numbers"):
        make_events([0.5], [0], [0], [1])
    with pytest.raises(SpikesegError, match="0..32767"):
        make_events([40000], [0], [0], [1])


def test_as_events_accepts_tonic_and_plain_arrays():
    # Tonic's datasets use several dtypes and field orders: t first, int64, bool polarity ...
    for dtype in ([("x", "<i8"), ("y", "<i8"), ("t", "<i8"), ("p", "<i8")],
                  [("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "?")],
                  [("x", "<u2"), ("y", "<u2"), ("t", "<f8"), ("p", "<i1")]):
        a = np.zeros(3, dtype=dtype)
        a["x"], a["y"], a["t"], a["p"] = [0, 1, 3], [2, 0, 1], [1, 2, 3], [1, 0, 1]
        ev = as_events(a, (4, 3, 2))
        assert ev.dtype == EVENT_DTYPE
        assert ev["x"].tolist() == [0, 1, 3] and ev["y"].tolist() == [2, 0, 1]
        assert ev["t"].tolist() == [1, 2, 3] and ev["p"].tolist() == [1, 0, 1]
        # the representations take them directly
        np.testing.assert_array_equal(to_count_frames(a, (4, 3, 2), 2),
                                      to_count_frames(ev, (4, 3), 2))
        np.testing.assert_array_equal(to_voxel_grid(a, (4, 3), 2), to_voxel_grid(ev, (4, 3), 2))
    plain = np.array([[0, 0, 5, -1], [3, 2, 6, 1]], dtype=np.float64)
    ev2 = as_events(plain, SENSOR)
    assert ev2["p"].tolist() == [0, 1] and ev2["t"].tolist() == [5, 6]
    assert ev2["x"].tolist() == [0, 3] and ev2["y"].tolist() == [0, 2]
    big_t = np.array([[1, 1, 1_700_000_000_000_000, 1]])  # absolute µs timestamps fit
    assert as_events(big_t, SENSOR)["t"][0] == 1_700_000_000_000_000
    np.testing.assert_array_equal(to_count_frames(plain, SENSOR, 1)[0, :, :, :],
                                  to_count_frames(ev2, SENSOR, 1)[0])


_FIELDLESS = np.zeros(2, dtype=[("x", "<i2"), ("y", "<i2"), ("ts", "<i8"), ("p", "<i1")])


@pytest.mark.parametrize("bad, match", [
    (np.zeros((3, 3)), r"\[N, 4\] array"),
    (np.zeros(4), r"\[N, 4\] array"),
    (np.zeros((2, 4, 1)), r"\[N, 4\] array"),
    (_FIELDLESS, "fields x, y, t, p"),
    (np.zeros((2, 2), dtype=EVENT_DTYPE), "1-D event array"),
    (np.array([["a", "b", "c", "d"]]), "non-numeric"),
    (np.array([[4, 0, 0, 1]]), "x coordinates span 4..4, outside the sensor's 0..3"),
    (np.array([[-1, 0, 0, 1]]), "x coordinates span -1..-1"),
    (np.array([[0, 3, 0, 1]]), "y coordinates span 3..3, outside the sensor's 0..2"),
    (np.array([[0, 0, 0, 2]]), "polarities must be 0/1 or -1/1, found"),
    (np.array([[0, 0, 0, -1], [0, 0, 1, 0], [0, 0, 2, 1]]), "polarities"),
    (np.array([[0, 0, 5, 1], [0, 0, 4, 1]]), "timestamps decrease"),
    (np.array([[0.5, 0, 5, 1]]), "x coordinates must be integers"),
    (np.array([[0, 0, 0.25, 1]]), "whole microseconds"),
    (np.array([[0, 0, np.nan, 1]]), "whole microseconds"),
    (np.array([[np.nan, 0, 1, 1]]), "x coordinates must be integers"),
])
def test_as_events_errors_name_the_source(bad, match):
    with pytest.raises(SpikesegError, match=match) as e:
        as_events(bad, SENSOR, source="rec1.npy")
    msg = str(e.value)
    assert msg.startswith("rec1.npy: ") and "\n" not in msg


def test_representations_validate_their_input():
    outside = make_events([0, 4], [0, 0], [0, 1], [1, 1])  # x = 4 on a 4-wide sensor
    for fn in (to_count_frames, to_voxel_grid):
        with pytest.raises(SpikesegError, match="outside the sensor's 0..3"):
            fn(outside, SENSOR, 2)
        with pytest.raises(SpikesegError, match="n_bins must be >= 1"):
            fn(_events(), SENSOR, 0)
        with pytest.raises(SpikesegError, match="empty time window"):
            fn(_events(), SENSOR, 2, 100, 10)
        with pytest.raises(SpikesegError, match="timestamps decrease"):
            fn(np.array([[0, 0, 5, 1], [0, 0, 4, 1]]), SENSOR, 2)
