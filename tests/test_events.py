"""Event arrays and their frame representations against hand computations."""

import numpy as np
import pytest

from spikeseg.data.events import (
    EVENT_DTYPE,
    as_events,
    event_frames,
    make_events,
    to_count_frames,
    to_voxel_grid,
)
from spikeseg.errors import SpikesegError

SENSOR = (4, 3)  # W, H


def _events():
    # x, y, t (µs), p
    return make_events([0, 1, 1, 3, 2, 0], [0, 2, 2, 1, 0, 0],
                       [0, 10, 49, 50, 99, 100], [1, 0, 0, 1, 1, 0])


def test_count_frames_by_hand():
    f = to_count_frames(_events(), SENSOR, 2, 0, 100)  # bins [0,50) and [50,100)
    assert f.shape == (2, 2, 3, 4) and f.dtype == np.float32
    want = np.zeros_like(f)
    want[0, 0, 0, 0] = 1  # t=0 ON at (0, 0)
    want[0, 1, 2, 1] = 2  # t=10, 49 OFF at (x=1, y=2)
    want[1, 0, 1, 3] = 1  # t=50 ON at (3, 1): bin edges belong to the later bin
    want[1, 0, 0, 2] = 1  # t=99 ON
    # t=100 lies at the window's end: dropped
    np.testing.assert_array_equal(f, want)
    # default window: first event to just after the last, so t=100 counts
    assert to_count_frames(_events(), (4, 3, 2), 1).sum() == 6


def test_voxel_grid_by_hand_and_mass():
    ev = make_events([0, 0, 1], [0, 0, 0], [0, 25, 100], [1, 0, 1])
    g = to_voxel_grid(ev, SENSOR, 3, 0, 100)  # t* = 2 t / 100
    # t=0: t*=0 -> bin 0 weight 1 (+1); t=25: t*=0.5 -> bins 0, 1 half each (-1)
    assert g[0, 0, 0] == pytest.approx(1 - 0.5) and g[1, 0, 0] == pytest.approx(-0.5)
    assert g[:, 0, 1].sum() == 0  # t=100 outside [0, 100)
    many = make_events(np.arange(50) % 4, np.zeros(50, int), np.sort(np.random.default_rng(0)
                       .integers(0, 1000, 50)), np.ones(50, int))
    assert to_voxel_grid(many, SENSOR, 5, 0, 1000).sum() == pytest.approx(50, rel=1e-5)


def test_event_frames_split_a_window():
    ev = _events()
    np.testing.assert_array_equal(event_frames(ev, SENSOR, 4, t_start=0, t_end=101),
                                  to_count_frames(ev, SENSOR, 4, 0, 101))
    v = event_frames(ev, SENSOR, 2, representation="voxel", bins_per_step=3, t_start=0,
                     t_end=101)
    assert v.shape == (2, 3, 3, 4)
    np.testing.assert_allclose(v.reshape(6, 3, 4), to_voxel_grid(ev, SENSOR, 6, 0, 101))
    with pytest.raises(SpikesegError, match="representation"):
        event_frames(ev, SENSOR, 2, representation="time_surface")


def test_as_events_accepts_tonic_and_plain_arrays():
    tonic_dtype = np.dtype([("x", "<i8"), ("y", "<i8"), ("t", "<i8"), ("p", "<i8")])
    a = np.zeros(3, dtype=tonic_dtype)
    a["x"], a["t"], a["p"] = [0, 1, 3], [1, 2, 3], [1, 0, 1]
    ev = as_events(a, (4, 3, 2))
    assert ev.dtype == EVENT_DTYPE and ev["p"].tolist() == [1, 0, 1]
    plain = np.array([[0, 0, 5, -1], [3, 2, 6, 1]], dtype=np.float64)
    ev2 = as_events(plain, SENSOR)
    assert ev2["p"].tolist() == [0, 1] and ev2["t"].tolist() == [5, 6]


@pytest.mark.parametrize("bad, match", [
    (np.zeros((3, 3)), r"\[N, 4\]"),
    (np.array([[4, 0, 0, 1]]), "outside the sensor"),
    (np.array([[0, 3, 0, 1]]), "y coordinates"),
    (np.array([[0, 0, 0, 2]]), "polarities"),
    (np.array([[0, 0, 5, 1], [0, 0, 4, 1]]), "decrease"),
    (np.array([[0.5, 0, 5, 1]]), "integers"),
])
def test_as_events_errors_name_the_source(bad, match):
    with pytest.raises(SpikesegError, match=match) as e:
        as_events(bad, SENSOR, source="rec1.npy")
    assert str(e.value).startswith("rec1.npy")
