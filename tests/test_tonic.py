"""Tonic's conventions: its event arrays go in unchanged, its frames come out the same.

The first tests need no Tonic: they build arrays with the dtypes Tonic's datasets use. The
comparisons with ``tonic.transforms.ToFrame`` / ``ToVoxelGrid`` need Tonic, which the
``dev`` extra installs (and CI with it).

Where spikeseg and Tonic 1.7 agree and differ is stated in
:mod:`spikeseg.encoding.events`; these tests pin each statement on random events.
"""

from __future__ import annotations

import numpy as np
import pytest

from spikeseg.encoding.events import (
    COUNT_CHANNELS,
    EVENT_DTYPE,
    OFF,
    ON,
    as_events,
    event_frames,
    to_count_frames,
    to_voxel_grid,
)
from spikeseg.errors import SpikesegError

SENSOR = (7, 5, 2)  # Tonic's (W, H, P)

# The event dtypes of Tonic 1.7's datasets (x/y/t/p types and field orders as they declare
# them: tonic/io.py, datasets/dvsgesture.py, nmnist.py, dsec.py, ...).
TONIC_DTYPES = [
    [("x", np.int16), ("y", np.int16), ("t", np.int64), ("p", bool)],  # tonic.io.events_struct
    [("x", int), ("y", int), ("t", int), ("p", int)],
    [("t", int), ("x", int), ("y", int), ("p", int)],
    [("p", int), ("t", int), ("x", int), ("y", int)],
    [("x", np.int16), ("y", np.int16), ("p", bool), ("t", np.int64)],
    [("t", np.uint64), ("x", np.uint16), ("y", np.uint16), ("p", bool)],
    [("t", np.int32), ("x", np.int16), ("y", np.int16), ("p", bool)],
    [("x", ">u2"), ("y", ">u2"), ("t", ">u8"), ("p", np.uint8)],  # big-endian files
]


def _tonic_events(dtype, n=400, seed=0, sensor=SENSOR, t0=1000, span=9973, signed_p=False):
    """Random events sorted by t, in a Tonic-style structured array of ``dtype``."""
    rng = np.random.default_rng(seed)
    ev = np.zeros(n, dtype=dtype)
    ev["x"] = rng.integers(0, sensor[0], n)
    ev["y"] = rng.integers(0, sensor[1], n)
    ev["t"] = np.sort(rng.integers(t0, t0 + span + 1, n))
    ev["t"][[0, -1]] = t0, t0 + span  # the span is exact
    p = rng.integers(0, 2, n)
    ev["p"] = 2 * p - 1 if signed_p else p
    return ev


@pytest.mark.parametrize("dtype", TONIC_DTYPES, ids=lambda d: ",".join(str(f[1]) for f in d))
def test_tonic_dtypes_go_in_unchanged(dtype):
    a = _tonic_events(dtype, n=50)
    before = a.copy()
    ev = as_events(a, SENSOR)
    np.testing.assert_array_equal(a, before)  # the caller's array is not touched
    assert ev.dtype == EVENT_DTYPE
    for f in "xyt":
        assert ev[f].tolist() == a[f].astype(np.int64).tolist()
    assert ev["p"].tolist() == (a["p"] > 0).astype(int).tolist()
    # the representations read them directly, the same as the converted array
    np.testing.assert_array_equal(to_count_frames(a, SENSOR, 3), to_count_frames(ev, SENSOR, 3))
    np.testing.assert_array_equal(to_voxel_grid(a, SENSOR, 3), to_voxel_grid(ev, SENSOR, 3))
    np.testing.assert_array_equal(a, before)


@pytest.mark.parametrize("p", [[0, 1, 1, 0], [-1, 1, 1, -1], [False, True, True, False]])
def test_polarity_conventions_give_one_channel_order(p):
    a = np.zeros(4, dtype=[("x", int), ("y", int), ("t", int), ("p", np.asarray(p).dtype)])
    a["x"], a["t"], a["p"] = [0, 1, 2, 3], [0, 1, 2, 3], p
    f = to_count_frames(a, (4, 1), 1)[0, :, 0]  # [2, W]
    assert COUNT_CHANNELS[OFF] == "OFF" and COUNT_CHANNELS[ON] == "ON" and (OFF, ON) == (0, 1)
    assert f[ON].tolist() == [0, 1, 1, 0] and f[OFF].tolist() == [1, 0, 0, 1]


def test_unsigned_timestamps_that_decrease_are_refused():
    a = np.zeros(3, dtype=[("t", np.uint64), ("x", np.uint16), ("y", np.uint16), ("p", bool)])
    a["t"] = [5, 3, 7]  # np.diff would wrap around to a huge positive step
    with pytest.raises(SpikesegError, match="timestamps decrease"):
        as_events(a, SENSOR)
    a["t"] = [1, 2, 2**63 + 5]
    with pytest.raises(SpikesegError, match="beyond int64"):
        as_events(a, SENSOR)


# --------------------------------------------------------------------------- against Tonic


@pytest.fixture(scope="module")
def tonic_transforms():
    tonic = pytest.importorskip("tonic")
    if tuple(int(v) for v in tonic.__version__.split(".")[:2]) < (1, 7):
        pytest.skip(f"compared against tonic 1.7, found {tonic.__version__}")
    import tonic.transforms as T

    return T


def _tonic_window(ev, n_bins):
    """``(t_start, t_end)`` that give Tonic's ``ToFrame(n_time_bins=n)`` bins."""
    t0, t1 = int(ev["t"][0]), int(ev["t"][-1])
    return t0, t0 + n_bins * ((t1 - t0) // n_bins)


@pytest.mark.parametrize("n_bins", [1, 3, 8, 10])
@pytest.mark.parametrize("seed", [0, 1])
def test_count_frames_against_tonic_to_frame(tonic_transforms, n_bins, seed):
    T = tonic_transforms
    ev = _tonic_events([("x", int), ("y", int), ("t", int), ("p", int)], seed=seed)
    tonic = T.ToFrame(SENSOR, n_time_bins=n_bins)(ev.copy())
    assert tonic.shape == (n_bins, 2, SENSOR[1], SENSOR[0])  # [T, P, H, W], channel = p
    # Tonic's bins: width (t_last - t_first) // n from the first event; the rest is dropped
    ours = to_count_frames(ev, SENSOR, n_bins, *_tonic_window(ev, n_bins))
    np.testing.assert_array_equal(ours, tonic)
    # spikeseg's default keeps every event; Tonic always loses the last one
    full = to_count_frames(ev, SENSOR, n_bins)
    assert full.sum() == ev.size and tonic.sum() < ev.size
    last = ev[-1]
    assert full[-1, int(last["p"]), last["y"], last["x"]] >= 1
    # the same frames from Tonic's bool-polarity arrays, and through event_frames
    evb = ev.astype([("x", np.int16), ("y", np.int16), ("t", np.int64), ("p", bool)])
    np.testing.assert_array_equal(T.ToFrame(SENSOR, n_time_bins=n_bins)(evb.copy()), tonic)
    np.testing.assert_array_equal(
        event_frames(evb, SENSOR, n_bins, t_start=_tonic_window(ev, n_bins)[0],
                     t_end=_tonic_window(ev, n_bins)[1]), tonic)


@pytest.mark.parametrize("n_bins", [2, 5])
def test_count_frames_of_a_window_against_tonic_time_window(tonic_transforms, n_bins):
    """An explicit window divisible by n_bins: ToFrame(time_window, start_time, end_time)."""
    T = tonic_transforms
    ev = _tonic_events([("x", int), ("y", int), ("t", int), ("p", int)], seed=3)
    t_start, t_end = 2000, 2000 + n_bins * 1500  # events before and after it are dropped
    tonic = T.ToFrame(SENSOR, time_window=1500, start_time=t_start, end_time=t_end)(ev.copy())
    np.testing.assert_array_equal(to_count_frames(ev, SENSOR, n_bins, t_start, t_end), tonic)


@pytest.mark.parametrize("n_bins", [1, 2, 5, 9])
@pytest.mark.parametrize("seed", [0, 4])
def test_voxel_grid_against_tonic_to_voxel_grid(tonic_transforms, n_bins, seed):
    T = tonic_transforms
    ev = _tonic_events([("x", int), ("y", int), ("t", int), ("p", int)], seed=seed)
    tonic = T.ToVoxelGrid(SENSOR, n_time_bins=n_bins)(ev.copy())
    assert tonic.shape == (n_bins, 1, SENSOR[1], SENSOR[0])
    # Tonic scales time by B, spikeseg (ESS, E-RAFT) by B - 1: Tonic's B bins are the first
    # B of spikeseg's B + 1
    ours = to_voxel_grid(ev, SENSOR, n_bins + 1)[:n_bins]
    np.testing.assert_allclose(ours, tonic[:, 0], atol=1e-5)
    # Tonic's grid misses the last event; spikeseg's grid keeps every event's polarity
    full = to_voxel_grid(ev, SENSOR, n_bins)
    np.testing.assert_allclose(full.sum(), (2 * ev["p"] - 1).sum(), atol=1e-3)
    # signed polarities give Tonic the same grid; spikeseg reads them the same way
    evs = ev.copy()
    evs["p"] = 2 * ev["p"] - 1
    np.testing.assert_allclose(T.ToVoxelGrid(SENSOR, n_time_bins=n_bins)(evs.copy()), tonic)
    np.testing.assert_array_equal(to_voxel_grid(evs, SENSOR, n_bins + 1), to_voxel_grid(
        ev, SENSOR, n_bins + 1))


def test_tonic_voxel_grid_needs_signed_polarities(tonic_transforms):
    """With bool polarities Tonic's ToVoxelGrid counts every event +1 (as the docstring of
    :func:`~spikeseg.encoding.events.to_voxel_grid` says); spikeseg reads bool as OFF/ON."""
    T = tonic_transforms
    ev = _tonic_events([("x", np.int16), ("y", np.int16), ("t", np.int64), ("p", bool)])
    tonic = T.ToVoxelGrid(SENSOR, n_time_bins=4)(ev.copy())
    all_on = ev.copy()
    all_on["p"] = True
    np.testing.assert_allclose(tonic[:, 0], to_voxel_grid(all_on, SENSOR, 5)[:4], atol=1e-5)
    signed = to_voxel_grid(ev, SENSOR, 5)[:4]
    assert signed.min() < 0 and tonic.min() >= 0


def test_tonic_to_frame_counts_minus_one_polarities_as_on(tonic_transforms):
    """Tonic indexes the frame with p itself, so p = -1 lands in the last channel (ON), as the
    docstring of :func:`~spikeseg.encoding.events.to_count_frames` warns; spikeseg reads -1
    as OFF."""
    T = tonic_transforms
    ev = np.zeros(4, dtype=[("x", int), ("y", int), ("t", int), ("p", int)])
    ev["x"], ev["t"], ev["p"] = [0, 1, 2, 3], [0, 1, 2, 4], [-1, 1, -1, 1]
    tonic = T.ToFrame((4, 1, 2), n_time_bins=1)(ev.copy())[0, :, 0]
    assert tonic[OFF].sum() == 0 and tonic[ON].tolist() == [1, 1, 1, 0]
    ours = to_count_frames(ev, (4, 1), 1)[0, :, 0]
    assert ours[OFF].tolist() == [1, 0, 1, 0] and ours[ON].tolist() == [0, 1, 0, 1]
