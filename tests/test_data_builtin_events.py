"""Tests of the built-in event-camera dataset (spikeseg.data.builtin_events)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")
pytest.importorskip("skimage")

from spikeseg.cli import main  # noqa: E402
from spikeseg.data import build_dataset, list_datasets  # noqa: E402
from spikeseg.data import builtin as B  # noqa: E402
from spikeseg.data import builtin_events as BE  # noqa: E402
from spikeseg.data.events import EVENT_DTYPE, to_count_frames  # noqa: E402
from spikeseg.errors import SpikesegError  # noqa: E402

SMALL = {"image_size": 32, "num_train": 6, "num_val": 4}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("builtin-events-cache")


# --------------------------------------------------------------------------- pixel model


def _ramp(values, eps=BE.LOG_EPS):
    """One-pixel frames whose log intensity log(I + eps) is log(0.5) + values."""
    return (0.5 * np.exp(np.asarray(values, dtype=np.float64)) - eps).reshape(-1, 1, 1)


def test_pixel_model_on_a_one_pixel_ramp():
    # log intensity (relative to the first frame): 0 -> 0.5 -> 0.1 -> 0.1 -> -0.35, C = 0.2
    frames = _ramp([0.0, 0.5, 0.1, 0.1, -0.35])
    ev = BE.video_to_events(frames, [0, 1000, 2000, 3000, 4000], 0.2)
    assert ev.dtype == EVENT_DTYPE
    # up: levels 0.2, 0.4 at 2/5 and 4/5 of the interval; ref ends at 0.4
    # down to 0.1: level 0.2 at (0.5-0.2)/0.4 = 3/4; ref 0.2; static frame: nothing
    # down to -0.35: levels 0.0, -0.2 at 0.1/0.45 and 0.3/0.45 of the interval
    assert ev["t"].tolist() == [400, 800, 1750, 3000 + round(1000 / 4.5), 3000 + round(3000 / 4.5)]
    assert ev["p"].tolist() == [1, 1, 0, 0, 0]
    assert ev["x"].tolist() == [0] * 5 and ev["y"].tolist() == [0] * 5
    # asymmetric thresholds: C_on = 0.3 gives one ON event (at 0.3: 3/5), C_off = 0.15 then
    # crosses 0.15 (at (0.5-0.15)/0.4 of the next interval) from ref 0.3
    ev2 = BE.video_to_events(frames[:3], [0, 1000, 2000], (0.3, 0.15))
    assert ev2["t"].tolist() == [600, 1875] and ev2["p"].tolist() == [1, 0]


def test_pixel_model_vectorises_over_pixels():
    # a 2x3 video: pixel (x=2, y=1) ramps like the test above, pixel (0, 0) goes down
    frames = np.full((3, 2, 3), 0.3)
    frames[:, 1, 2] = _ramp([0.0, 0.5, 0.1])[:, 0, 0]
    frames[:, 0, 0] = [0.3, 0.3, 0.3 * math.exp(-0.5) - 0.02 * (1 - math.exp(-0.5))]
    ev = BE.video_to_events(frames, [0, 1000, 2000], 0.2)
    # (0, 0): log drops by 0.5 in the second interval: levels -0.2, -0.4 at 2/5 and 4/5
    got = list(zip(ev["t"].tolist(), ev["x"].tolist(), ev["y"].tolist(), ev["p"].tolist(),
                   strict=True))
    assert got == [(400, 2, 1, 1), (800, 2, 1, 1), (1400, 0, 0, 0), (1750, 2, 1, 0),
                   (1800, 0, 0, 0)]


def test_static_video_gives_no_events():
    rng = np.random.default_rng(0)
    still = np.repeat(rng.random((1, 8, 9)), 6, axis=0)
    for noise in (0.0, 0.05):
        ev = BE.video_to_events(still, np.arange(6) * 1000, 0.2, threshold_noise=noise, rng=rng)
        assert ev.dtype == EVENT_DTYPE and ev.size == 0
    # one frame: nothing to compare with
    assert BE.video_to_events(still[:1], [0], 0.2).size == 0


def test_pixel_model_accepts_uint8_and_counts_full_swings():
    up = np.array([0, 255], dtype=np.uint8).reshape(2, 1, 1)
    ev = BE.video_to_events(up, [0, 100], 0.2)
    # log(1.02) - log(0.02) = 3.93: 19 crossings, all ON, at increasing times in (0, 100]
    assert ev.size == int(math.log(1.02 / 0.02) / 0.2) == 19
    assert ev["p"].all() and np.all(np.diff(ev["t"]) >= 0)
    assert 0 < ev["t"][0] and ev["t"][-1] <= 100
    np.testing.assert_array_equal(ev, BE.video_to_events(up / 255.0, [0, 100], 0.2))


@pytest.mark.parametrize("frames, stamps, kw, match", [
    (np.zeros((4, 4)), [0], {}, r"\[N, H, W\]"),
    (np.full((2, 2, 2), 1.5), [0, 1], {}, r"intensities in \[0, 1\]"),
    (np.full((2, 2, 2), np.nan), [0, 1], {}, r"intensities in \[0, 1\]"),
    (np.zeros((2, 2, 2)), [0], {}, "one per frame"),
    (np.zeros((2, 2, 2)), [5, 5], {}, "strictly increasing"),
    (np.zeros((2, 2, 2)), [0, 0.5], {}, "whole microseconds"),
    (np.zeros((2, 2, 2)), [0, 1], {"contrast_threshold": 0}, "contrast_threshold"),
    (np.zeros((2, 2, 2)), [0, 1], {"contrast_threshold": "big"}, "contrast_threshold"),
    (np.zeros((2, 2, 2)), [0, 1], {"threshold_noise": -1}, "threshold_noise"),
])
def test_pixel_model_errors(frames, stamps, kw, match):
    with pytest.raises(SpikesegError, match=match):
        BE.video_to_events(frames, stamps, **kw)


# --------------------------------------------------------------------------- rendering


def test_label_is_the_last_frame():
    """On a flat grey background a digit's label covers exactly the pixels it paints more
    than half opaque in the LAST frame (it has moved since the first)."""
    digits, targets = B._load_digits()
    rng = np.random.default_rng(5)
    bg = np.full((120, 120), 0.5, dtype=np.float32)
    checked = 0
    for _ in range(6):
        frames, label, info = BE.render_clip(
            rng, bg, digits, targets, size=(32, 32), num_frames=6, digits_per_image=(1, 1),
            digit_motion=(0.3, 0.4))
        assert frames.shape == (6, 32, 32) and label.shape == (32, 32)
        assert set(np.unique(label).tolist()) == {0, int(targets[info["digits"][0]]) + 1}
        dev = [np.abs(f - 0.5) for f in (frames[-1], frames[0])]
        half = 0.5 * dev[0].max()  # the digit's full contrast, halved
        agree_last = np.mean((dev[0] > half + 1e-4) == (label > 0))
        agree_first = np.mean((dev[1] > half + 1e-4) == (label > 0))
        assert agree_last > 0.995 and agree_last > agree_first
        checked += 1
    assert checked == 6


def test_events_gather_at_the_digit_edges_of_the_last_frame(cache):
    ds = BE.builtin_events("train", root=cache, **SMALL, background_motion=(0.0, 0.0),
                           threshold_noise=0.0, timesteps=8)
    inside = total = area = 0.0
    for i in range(len(ds)):
        lab = ds.labels[i]
        edge = np.zeros(lab.shape, bool)  # label boundaries, dilated by 2 px
        edge[1:] |= lab[1:] != lab[:-1]
        edge[:-1] |= lab[1:] != lab[:-1]
        edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
        edge[:, :-1] |= lab[:, 1:] != lab[:, :-1]
        for _ in range(2):
            grown = edge.copy()
            grown[1:] |= edge[:-1]
            grown[:-1] |= edge[1:]
            grown[:, 1:] |= edge[:, :-1]
            grown[:, :-1] |= edge[:, 1:]
            edge = grown
        x, _ = ds[i]
        last = x[-1].sum(0).numpy()  # events of the last step, both polarities
        inside += last[edge].sum()
        total += last.sum()
        area += edge.mean()
    assert total > 0
    assert inside / total > 0.9 > area / len(ds) + 0.2  # far more than the edges' share


# --------------------------------------------------------------------------- dataset


def test_registered_and_info(cache):
    assert "builtin_events" in list_datasets()
    ds = build_dataset("builtin_events", "val", root=str(cache), **SMALL)
    assert isinstance(ds, BE.BuiltinEvents)
    assert ds.info.name == "builtin_events"
    assert ds.info.num_classes == 11 and ds.info.class_names == B.CLASS_NAMES
    assert ds.info.in_channels == 2 and ds.info.temporal is True
    vox = BE.builtin_events("val", root=cache, **SMALL, representation="voxel", bins_per_step=3)
    assert vox.info.in_channels == 3 and vox.cache_path == ds.cache_path
    single = BE.builtin_events("val", root=cache, **SMALL, timesteps=None)
    assert single.info.temporal is False and single[0][0].shape == (2, 32, 32)


@pytest.mark.parametrize("size", [32, (24, 40)])
def test_items(cache, size):
    ds = BE.builtin_events("train", root=cache, **{**SMALL, "image_size": size}, timesteps=4)
    h, w = (size, size) if isinstance(size, int) else size
    assert len(ds) == 6 and ds.labels.shape == (6, h, w) and ds.labels.dtype == np.uint8
    assert ds.sensor_size == (w, h, 2)
    assert ds.events.dtype == EVENT_DTYPE and ds.offsets.shape == (7,)
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.dtype == torch.float32 and x.shape == (4, 2, h, w)
        assert y.dtype == torch.int64 and y.shape == (h, w)
        assert 0 <= int(y.min()) and int(y.max()) <= 10 and (y > 0).any() and (y == 0).any()
        ev = ds.sample_events(i)
        assert ev.size > 0 and np.all(np.diff(ev["t"]) >= 0)
        assert 0 < ev["t"].min() and ev["t"].max() <= ds.duration_us == 50_000
        # counts: non-negative integers, all of the clip's events in the T frames
        assert float(x.min()) >= 0 and torch.equal(x, x.round())
        assert x.sum().item() == ev.size
        assert x[:, 1].sum().item() == int(ev["p"].sum())  # channel 1 = ON (Tonic's order)
        np.testing.assert_array_equal(x.numpy(), to_count_frames(ev, (w, h), 4, 0, 50_001))
    assert (x[:, 0].sum() > 0) and (x[:, 1].sum() > 0)  # both polarities occur
    vox = BE.builtin_events("train", root=cache, **{**SMALL, "image_size": size},
                            timesteps=3, representation="voxel", bins_per_step=2)
    xv, _ = vox[0]
    assert xv.shape == (3, 2, h, w)
    ev = ds.sample_events(0)  # each event adds its polarity, split over two bins
    assert xv.sum().item() == pytest.approx(2 * int(ev["p"].sum()) - ev.size, abs=1e-2)
    held = BE.builtin_events("train", root=cache, **{**SMALL, "image_size": size},
                             timesteps=4, steps_per_frame=2)
    xh, _ = held[0]  # two frames of the window, each twice
    halves = to_count_frames(ev, (w, h), 2, 0, 50_001)
    assert xh.shape == (4, 2, h, w)
    for i in range(4):
        np.testing.assert_array_equal(xh[i].numpy(), halves[i // 2])
    mm = BE.builtin_events("train", root=cache, **{**SMALL, "image_size": size},
                           normalize="minmax")
    xm, _ = mm[0]
    assert xm.shape == (8, 2, h, w) and -0.5 <= float(xm.min()) and float(xm.max()) <= 0.5


def test_deterministic_by_seed():
    a = BE.builtin_events("train", cache=False, **SMALL)
    b = BE.builtin_events("train", cache=False, **SMALL)
    assert a.cache_path is None
    np.testing.assert_array_equal(a.events, b.events)
    np.testing.assert_array_equal(a.offsets, b.offsets)
    np.testing.assert_array_equal(a.labels, b.labels)
    c = BE.builtin_events("train", cache=False, **SMALL, seed=1)
    assert not np.array_equal(a.labels, c.labels)
    d = BE.builtin_events("train", cache=False, **SMALL, contrast_threshold=0.3)
    np.testing.assert_array_equal(a.labels, d.labels)  # same clips, fewer events
    assert d.events.size < a.events.size


def test_train_and_val_ingredients_are_disjoint():
    n = {"image_size": 32, "num_train": 30, "num_val": 30}
    tr = BE.builtin_events("train", cache=False, **n)
    va = BE.builtin_events("val", cache=False, **n)
    _, targets = B._load_digits()
    widths = {name: arr.shape[1] for name, arr in B._load_photos()}
    heights = {name: arr.shape[0] for name, arr in B._load_photos()}
    used = {}
    for ds in (tr, va):
        for i in range(len(ds)):
            name = ds.photos[ds.photo[i]]
            x0, x1 = B.photo_part(name, widths[name], ds.split)
            left, top, right, bottom = ds.box[i].tolist()
            assert x0 - 1e-3 <= left < right <= x1 + 1e-3, (ds.split, name, ds.box[i])
            assert 0 <= top < bottom <= heights[name] + 1e-3
        k = ds.digits[ds.digits >= 0]
        assert np.isin(k, B.digit_split_indices(targets, ds.split)).all()
        used[ds.split] = set(k.tolist())
        # the label shows the recorded digits (some may be covered by later ones)
        for i in range(len(ds)):
            shown = set(np.unique(ds.labels[i]).tolist()) - {0}
            assert shown <= {int(targets[j]) + 1 for j in ds.digits[i] if j >= 0}
    assert used["train"] and used["val"] and not used["train"] & used["val"]


def test_cache_round_trip(tmp_path, monkeypatch):
    a = BE.builtin_events("train", root=tmp_path, **SMALL)
    assert a.cache_path is not None and a.cache_path.parent == tmp_path
    assert [p.name for p in tmp_path.iterdir()] == [a.cache_path.name]  # no temp files left
    assert a.cache_path.name.startswith("builtin_events-train-32x32-n6-")

    def no_generation(*args, **kwargs):
        raise AssertionError("regenerated although cached")

    monkeypatch.setattr(BE, "_generate", no_generation)
    for kw in ({}, {"timesteps": 3}, {"representation": "voxel", "bins_per_step": 2},
               {"normalize": "log"}):
        b = BE.builtin_events("train", root=tmp_path, **SMALL, **kw)
        assert b.cache_path == a.cache_path
        np.testing.assert_array_equal(a.events, b.events)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.box, b.box)
        np.testing.assert_array_equal(a.digits, b.digits)
    monkeypatch.undo()
    c = BE.builtin_events("train", root=tmp_path, **SMALL, contrast_threshold=0.25)
    assert c.cache_path != a.cache_path and len(list(tmp_path.iterdir())) == 2
    # a damaged file is ignored (with a warning) and rewritten
    a.cache_path.write_bytes(b"not a zip file")
    with pytest.warns(UserWarning, match="unreadable cache file"):
        d = BE.builtin_events("train", root=tmp_path, **SMALL)
    np.testing.assert_array_equal(a.events, d.events)
    assert BE._read_cache(a.cache_path, _params_of(d)) is not None


def _params_of(ds):
    import json

    with np.load(ds.cache_path) as z:
        return json.loads(str(z["params"]))


@pytest.mark.parametrize("kw, match", [
    ({"split": "test"}, "unknown split 'test'"),
    ({"representation": "frames"}, "representation must be one of counts, voxel"),
    ({"timesteps": 0}, "timesteps must be an int >= 1"),
    ({"bins_per_step": 0}, "bins_per_step must be an int >= 1"),
    ({"timesteps": 8, "steps_per_frame": 3}, "timesteps=8 is not a multiple of steps_per_frame"),
    ({"steps_per_frame": True}, "steps_per_frame must be an int >= 1"),
    ({"normalize": "zscore"}, "normalize must be one of minmax, log, none"),
    ({"num_frames": 1}, "num_frames must be an int in 2..1000"),
    ({"num_train": -1}, "num_train must be an int >= 0"),
    ({"contrast_threshold": 0}, r"contrast_threshold must lie in \[0.01, 5.0\]"),
    ({"duration_ms": 0}, "duration_ms must lie in"),
    ({"duration_ms": 0.005}, "do not fit in duration_ms=0.005"),
    ({"digit_motion": (0.5, 0.1)}, "digit_motion must satisfy"),
    ({"image_size": 8}, "image_size must be at least 16"),
])
def test_bad_options(kw, match):
    args = {"split": "train", **SMALL, "cache": False, **kw}
    with pytest.raises(SpikesegError, match=match):
        BE.builtin_events(**args)


def test_unknown_option_names_the_valid_ones():
    with pytest.raises(SpikesegError, match="has no option 'contrast'.*contrast_threshold"):
        build_dataset("builtin_events", "train", contrast=0.2)


@pytest.mark.parametrize("model", ["spiking_deeplab", "deeplab"])
def test_cli_trains_one_step(model, cache, tmp_path):
    runs = tmp_path / "runs"
    sets = [
        f"model.name={model}", "model.width=0.125", "model.timesteps=2",
        "data.dataset=builtin_events", f"data.root={cache}", "data.image_size=32",
        "data.options={num_train: 4, num_val: 2}",
        "train.epochs=1", "train.batch_size=2", f"train.out_dir={runs}", "train.name=tiny",
        "train.report=false",
    ]
    argv = ["train", "--no-progress"]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0
    assert (runs / "tiny" / "checkpoints" / "best.safetensors").is_file()
