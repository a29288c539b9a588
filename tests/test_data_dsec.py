"""The DSEC-Semantic loader on tiny fixtures in the published on-disk layouts."""

import pickle
import shutil

import h5py
import hdf5plugin
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from spikeseg.cli import main
from spikeseg.data import build_dataset, dataset_accepts
from spikeseg.data.dsec import CLASS_NAMES_11, CLASS_NAMES_19, dsec
from spikeseg.data.events import to_count_frames, to_voxel_grid
from spikeseg.errors import SpikesegError

W, H, LH = 640, 480, 440  # sensor width and height, labelled rows
A, B, C = "zurich_city_00_a", "zurich_city_01_a", "zurich_city_13_a"
# Per sequence: split, t_offset (µs, nonzero), label times (ms after the stream start),
# the last event time (µs) and the rectification (x, y shift; None = no rectify_map.h5).
SEQS = {
    A: ("train", 5_000_000_000, [30, 100, 150, 200, 399.5], 395_000, (0.0, 0.0)),
    B: ("train", 7_300_000_123, [100, 150, 220], 300_000, (1.2, -0.3)),
    C: ("test", 9_000_000_000, [60, 110], 200_000, (0.0, 0.0)),
}
# Hand-placed events of A (x, y, t µs, p) around the window [100, 150) ms of its 3rd label.
HAND = [
    (5, 7, 100_000, 1),  # window start: inside, first bin
    (5, 7, 124_999, 1),  # last µs of the first bin (of 2)
    (10, 20, 125_000, 0),  # first µs of the second bin
    (10, 20, 149_999, 0),
    (10, 20, 150_000, 0),  # the label's time: outside (belongs to the next window)
    (3, 3, 99_999, 1),  # before the window
    (600, 450, 130_000, 1),  # below the 440 labelled rows: never counted
]


def _events(name):
    """x, y, t, p of a sequence: a few hundred random events (away from the hand-placed
    pixels) plus, for A, the hand-placed ones; sorted by time."""
    _, _, _, t_last, _ = SEQS[name]
    rng = np.random.default_rng(len(name) + ord(name[-3]))
    n = 300
    x = rng.integers(100, W, n)
    y = rng.integers(100, H, n)
    t = np.sort(rng.integers(0, t_last, n))
    t[-1] = t_last
    p = rng.integers(0, 2, n)
    if name == A:
        hx, hy, ht, hp = (np.array(c) for c in zip(*HAND, strict=True))
        x, y, t, p = (np.concatenate([a, b]) for a, b in ((x, hx), (y, hy), (t, ht), (p, hp)))
        order = np.argsort(t, kind="stable")
        x, y, t, p = x[order], y[order], t[order], p[order]
    return x, y, t, p


def _label(name, k, classes):
    """A class-id map: stripes of classes, varying with the label index, 255 in a corner."""
    rows, cols = np.mgrid[0:LH, 0:W]
    lab = ((k + (rows // 40 if classes == 11 else cols // 32)) % classes).astype(np.uint8)
    lab[:12, :12] = 255
    return lab


BLOSC = hdf5plugin.Blosc(cname="zstd", clevel=1, shuffle=hdf5plugin.Blosc.SHUFFLE)


def write_events_h5(path, x, y, t, p, t_offset, drop=()):
    """An events.h5 as DSEC publishes it (Blosc/ZSTD), optionally without some datasets."""
    n_ms = int(t[-1]) // 1000 + 1
    ms_to_idx = np.searchsorted(t, np.arange(n_ms) * 1000, side="left")
    data = {"events/x": x.astype(np.uint16), "events/y": y.astype(np.uint16),
            "events/t": t.astype(np.uint32), "events/p": p.astype(np.uint8),
            "ms_to_idx": ms_to_idx.astype(np.uint64)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for key, value in data.items():
            if key not in drop:
                f.create_dataset(key, data=value, **BLOSC)
        f.create_dataset("t_offset", data=np.int64(t_offset))


def write_rectify_map(path, shift):
    cols, rows = np.meshgrid(np.arange(W, dtype=np.float32), np.arange(H, dtype=np.float32))
    rmap = np.stack([cols + shift[0], rows + shift[1]], axis=-1)
    with h5py.File(path, "w") as f:
        f.create_dataset("rectify_map", data=rmap, **BLOSC)


def make_dsec(base, layout="release"):
    """DSEC-Semantic under ``base``: the released archives extracted into folders of their
    own names ("release"), or ESS's merged layout ("ess")."""
    for name, (split, t_offset, label_ms, _, shift) in SEQS.items():
        if layout == "release":
            ev_dir = base / f"{split}_events" / name / "events" / "left"
            seq_dir = base / f"{split}_semantic_segmentation" / split / name
            label_dirs = {k: seq_dir / f"{k}classes" for k in (11, 19)}
            ts_file = seq_dir / f"{name}_semantic_timestamps.txt"
        else:
            ev_dir = base / split / name / "events" / "left"
            sem = base / split / name / "semantic"
            label_dirs = {k: sem / f"{k}classes" / "data" for k in (11, 19)}
            ts_file = sem / "timestamps.txt"
        write_events_h5(ev_dir / "events.h5", *_events(name), t_offset)
        if shift is not None:
            write_rectify_map(ev_dir / "rectify_map.h5", shift)
        for k_cls, d in label_dirs.items():
            d.mkdir(parents=True)
            for k in range(len(label_ms)):
                Image.fromarray(_label(name, k, k_cls)).save(d / f"{k:06d}.png")
        stamps = [t_offset + int(round(ms * 1000)) for ms in label_ms]
        ts_file.write_text("".join(f"{s}\n" for s in stamps))
    # An unlabelled sequence of train_events.zip: ignored.
    other = base / ("train_events" if layout == "release" else "train") / "interlaken_00_c"
    write_events_h5(other / "events" / "left" / "events.h5", *_events(C), 0)
    return base


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return make_dsec(tmp_path_factory.mktemp("dsec-pristine"))


@pytest.fixture
def root(pristine, tmp_path):
    """A fresh copy (tests may damage it)."""
    return shutil.copytree(pristine, tmp_path / "dsec")


def _reference_counts(name, t0_ms, t1_ms, bins, shift=(0.0, 0.0)):
    """Brute force: ON/OFF counts per bin of [t0, t1) over the labelled rows."""
    out = np.zeros((bins, 2, LH, W), np.float32)
    t0, t1 = t0_ms * 1000, t1_ms * 1000
    for x, y, t, p in zip(*_events(name), strict=True):
        xr, yr = int(np.floor(x + shift[0] + 0.5)), int(np.floor(y + shift[1] + 0.5))
        if t0 <= t < t1 and 0 <= xr < W and 0 <= yr < LH:
            out[(t - t0) * bins // (t1 - t0), 1 if p else 0, yr, xr] += 1  # OFF, ON
    return out


def _item(ds, name, k):
    names = [s.name for s in ds.sequences]
    return ds.items.index((names.index(name), k))


def test_windows_match_hand_computed_counts(pristine):
    ds = dsec("train", pristine, image_size=(LH, W), timesteps=2)
    assert [s.name for s in ds.sequences] == [A, B]  # interlaken_00_c has no labels
    assert ds.sequences[0].t_offset == SEQS[A][1]
    info = ds.info
    assert info.name == "dsec" and info.num_classes == 11 and info.class_names == CLASS_NAMES_11
    assert info.in_channels == 2 and info.temporal
    x, y = ds[_item(ds, A, 2)]  # the label at 150 ms: window [100, 150) ms, bins of 25 ms
    assert x.dtype == torch.float32 and x.shape == (2, 2, LH, W)
    # channel 0 = OFF, 1 = ON (Tonic's order)
    assert x[0, 1, 7, 5] == 2 and x[1, 1, 7, 5] == 0  # ON at (5, 7): 100.000 and 124.999 ms
    assert x[1, 0, 20, 10] == 2 and x[0, 0, 20, 10] == 0  # OFF at (10, 20): 125.000, 149.999
    assert x[:, :, 3, 3].sum() == 0  # 99.999 ms is before the window
    np.testing.assert_array_equal(x.numpy(), _reference_counts(A, 100, 150, 2))
    events, t0, t1 = ds.window_events(_item(ds, A, 2))
    assert (t0, t1) == (100_000, 150_000)
    assert events["t"].min() >= t0 and events["t"].max() < t1 and events["y"].max() < LH
    nxt, _ = ds[_item(ds, A, 3)]  # the label at 200 ms sees the event at 150.000 ms
    assert nxt[0, 0, 20, 10] == 1
    np.testing.assert_array_equal(nxt.numpy(), _reference_counts(A, 150, 200, 2))
    assert y.dtype == torch.int64 and y.shape == (LH, W)
    np.testing.assert_array_equal(y.numpy(), _label(A, 2, 11))


def test_labels_without_a_full_window_are_dropped(pristine):
    ds = dsec("train", pristine)
    # A: 30 ms starts before the stream, 399.5 ms ends after its last millisecond.
    assert [k for s, k in ds.items if s == 0] == [1, 2, 3]
    assert [k for s, k in ds.items if s == 1] == [0, 1, 2]
    assert [k for s, k in dsec("train", pristine, label_stride=2).items if s == 0] == [1, 3]
    assert [k for s, k in dsec("train", pristine, window_ms=120).items if s == 0] == [2, 3]


def test_single_frame_and_voxel_grid(pristine):
    one = dsec("train", pristine, image_size=(LH, W))
    x, _ = one[_item(one, A, 2)]
    assert not one.info.temporal and x.shape == (2, LH, W)
    np.testing.assert_array_equal(x.numpy(), _reference_counts(A, 100, 150, 1)[0])
    t1 = dsec("train", pristine, image_size=(LH, W), timesteps=1)  # a model's T = 1
    x1, _ = t1[_item(t1, A, 2)]
    assert t1.info.temporal and x1.shape == (1, 2, LH, W)
    np.testing.assert_array_equal(x1[0].numpy(), x.numpy())
    vox = dsec("train", pristine, image_size=(LH, W), timesteps=2, representation="voxel",
               bins_per_step=3)
    assert vox.info.in_channels == 3
    i = _item(vox, B, 1)
    x, _ = vox[i]
    events, t0, t1 = vox.window_events(i)
    assert x.shape == (2, 3, LH, W)
    expected = to_voxel_grid(events, (W, LH), 6, t0, t1).reshape(2, 3, LH, W)
    np.testing.assert_allclose(x.numpy(), expected, atol=1e-6)
    assert x.abs().sum() > 0
    held = dsec("train", pristine, image_size=(LH, W), timesteps=4, steps_per_frame=2)
    xh, _ = held[i]  # the window's two count frames, each held for two steps
    halves = to_count_frames(events, (W, LH), 2, t0, t1)
    assert xh.shape == (4, 2, LH, W)
    for k in range(4):
        np.testing.assert_array_equal(xh[k].numpy(), halves[k // 2])


def test_rectification_uses_the_map(root):
    ds = dsec("train", root, image_size=(LH, W))
    raw = dsec("train", root, image_size=(LH, W), rectify=False)
    i = _item(ds, B, 1)  # B's map moves events 1.2 px right, 0.3 px up: (x + 1, y)
    x, x_raw = ds[i][0], raw[i][0]
    np.testing.assert_array_equal(x.numpy(), _reference_counts(B, 100, 150, 1, (1.2, -0.3))[0])
    assert torch.equal(x[:, :, 1:], x_raw[:, :, :-1]) and x[:, :, 0].sum() == 0
    (root / "train_events" / B / "events" / "left" / "rectify_map.h5").unlink()
    with pytest.warns(UserWarning, match="rectify_map.h5"):
        unrect = dsec("train", root, image_size=(LH, W))
    assert torch.equal(unrect[i][0], x_raw)


def test_both_class_sets_and_resizing(pristine):
    ds = dsec("train", pristine, classes=19, image_size=(44, 64))
    assert ds.info.num_classes == 19 and ds.info.class_names == CLASS_NAMES_19
    assert tuple(ds.info.palette[13]) == (0, 0, 142)  # car
    x, y = ds[_item(ds, A, 1)]
    assert x.shape == (2, 44, 64) and y.shape == (44, 64)
    lab = _label(A, 1, 19)
    np.testing.assert_array_equal(y.numpy(), lab[5::10, 5::10])  # nearest: the cell centres
    assert y[y != 255].max() == 18 and y[0, 0] == 255
    full = dsec("train", pristine, image_size=(LH, W))[_item(ds, A, 1)][0]
    assert torch.allclose(x.sum() * 100, full.sum(), rtol=0.02)  # averaging keeps the mass
    y11 = dsec("train", pristine, classes=11)[0][1]
    assert set(y11.unique().tolist()) <= set(range(11)) | {255}


def test_val_is_the_test_sequences_at_the_default_size(pristine):
    ds = dsec("val", pristine)
    assert ds.split == "test" and [s.name for s in ds.sequences] == [C]
    assert len(ds) == 2  # both of C's labels have 50 ms of events before them
    x, y = ds[0]
    assert x.shape == (2, 88, 128) and y.shape == (88, 128)


def test_ess_layout_reads_the_same_samples(pristine, tmp_path):
    ess = make_dsec(tmp_path / "ess", layout="ess")
    a = dsec("train", pristine, timesteps=2, image_size=32)
    b = dsec("train", ess, timesteps=2, image_size=32)
    assert a.items == b.items
    assert str(b.sequences[0].events).endswith("train/zurich_city_00_a/events/left/events.h5")
    for i in (0, len(a) - 1):
        assert torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][1], b[i][1])


def test_registry_and_pickling(pristine):
    assert dataset_accepts("dsec", "timesteps")
    ds = build_dataset("dsec", "val", root=str(pristine), image_size=(16, 24), timesteps=3,
                       normalize="minmax")
    x, y = ds[1]
    assert x.shape == (3, 2, 16, 24) and y.shape == (16, 24)
    assert x.min() >= -0.5 and x.max() <= 0.5
    copy = pickle.loads(pickle.dumps(ds))  # as DataLoader workers receive it
    assert torch.equal(copy[1][0], x)


def test_dataloader_workers_open_their_own_files(pristine):
    ds = dsec("train", pristine, image_size=32, timesteps=2)
    first = ds[0][0]  # the parent process has its HDF5 handles open before the workers start
    batches = list(DataLoader(ds, batch_size=2, num_workers=2))
    xs = torch.cat([x for x, _ in batches])
    assert xs.shape == (len(ds), 2, 2, 32, 32) and torch.equal(xs[0], first)


def _err(fn, *args, **kw):
    with pytest.raises(SpikesegError) as e:
        fn(*args, **kw)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_errors_in_the_folders(root, tmp_path):
    assert "data.root" in _err(dsec, "train", None)
    assert "folder not found" in _err(dsec, "train", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    msg = _err(dsec, "train", tmp_path / "empty")
    assert "no DSEC-Semantic labels" in msg and "train_semantic_segmentation.zip" in msg
    events = root / "train_events" / B / "events" / "left" / "events.h5"
    events.rename(events.with_suffix(".bak"))
    msg = _err(dsec, "train", root)
    assert f"sequence {B}: events.h5 not found" in msg and str(events) in msg
    events.with_suffix(".bak").rename(events)
    labels = root / "train_semantic_segmentation" / "train" / A
    (labels / "11classes" / "000004.png").unlink()
    msg = _err(dsec, "train", root)
    assert "4 label files but 5 timestamps" in msg and str(labels / "11classes") in msg
    shutil.rmtree(labels / "19classes")
    assert "no 19classes labels" in _err(dsec, "train", root, classes=19)
    (labels / f"{A}_semantic_timestamps.txt").write_text("# t_us\n5000030000\n5000100000 x\nabc\n")
    assert "line 4" in _err(dsec, "train", root)


@pytest.mark.parametrize("drop", ["ms_to_idx", "events/p"])
def test_malformed_events_h5_is_named(root, drop):
    path = root / "train_events" / B / "events" / "left" / "events.h5"
    write_events_h5(path, *_events(B), SEQS[B][1], drop=(drop,))
    msg = _err(dsec, "train", root)
    assert str(path) in msg and f"/{drop} missing" in msg


def test_unreadable_files_are_named(root):
    path = root / "train_events" / A / "events" / "left" / "events.h5"
    path.write_bytes(b"not hdf5")
    assert f"{path}: not a readable HDF5 file" in _err(dsec, "train", root)
    rect = root / "train_events" / B / "events" / "left" / "rectify_map.h5"
    with h5py.File(rect, "w") as f:
        f.create_dataset("rectify_map", data=np.zeros((H, W), np.float32))
    shutil.copy(root / "test_events" / C / "events" / "left" / "rectify_map.h5",
                root / "train_events" / A / "events" / "left" / "rectify_map.h5")
    write_events_h5(path, *_events(A), SEQS[A][1])
    assert f"{rect}: expected a dataset /rectify_map" in _err(dsec, "train", root)


def test_bad_items_are_named_when_read(root):
    ds = dsec("train", root, rectify=False)
    lab = _label(A, 1, 11)
    lab[100, 100] = 11
    path = ds.sequences[0].labels[1]
    Image.fromarray(lab).save(path)
    msg = _err(ds.__getitem__, 0)
    assert str(path) in msg and "[11]" in msg
    Image.fromarray(np.zeros((H, W), np.uint8)).save(path)  # a full-height label
    assert "640x440" in _err(ds.__getitem__, 0)
    x, y, t, p = _events(B)
    x[np.flatnonzero((t >= 100_000) & (t < 150_000))[0]] = 700  # in the window of B's 2nd label
    write_events_h5(ds.sequences[1].events, x, y, t, p, SEQS[B][1])
    msg = _err(ds.__getitem__, _item(ds, B, 1))
    assert str(ds.sequences[1].events) in msg and "x coordinates" in msg


def test_inconsistent_ms_to_idx_is_named(root):
    path = root / "train_events" / A / "events" / "left" / "events.h5"
    with h5py.File(path, "a") as f:
        ms = f["ms_to_idx"][()]
        del f["ms_to_idx"]
        f.create_dataset("ms_to_idx", data=ms + 3, **BLOSC)
    ds = dsec("train", root)
    msg = _err(ds.__getitem__, _item(ds, A, 2))
    assert str(path) in msg and "ms_to_idx does not match" in msg


def test_errors_in_options(pristine):
    assert "classes must be 11 or 19" in _err(dsec, "train", pristine, classes=12)
    assert "representation" in _err(dsec, "train", pristine, representation="histogram")
    assert "window_ms" in _err(dsec, "train", pristine, window_ms=0)
    assert "label_stride" in _err(dsec, "train", pristine, label_stride=0)
    assert "bins_per_step" in _err(dsec, "train", pristine, bins_per_step=0)
    assert "not a multiple of steps_per_frame" in _err(dsec, "train", pristine, timesteps=3,
                                                       steps_per_frame=2)
    assert "rectify" in _err(dsec, "train", pristine, rectify="yes")
    assert "unknown split" in _err(dsec, "trainval", pristine)
    assert "timesteps" in _err(dsec, "train", pristine, timesteps=-1)
    assert "full 500 ms window" in _err(dsec, "val", pristine, window_ms=500)


def test_cli_trains_one_epoch(tmp_path, pristine):
    out = tmp_path / "runs"
    args = ["train", "--no-progress"]
    for o in ["model.name=spiking_deeplab", "model.width=0.125", "model.timesteps=2",
              "data.dataset=dsec", f"data.root={pristine}", "data.image_size=32",
              "data.options={classes: 19}", "train.epochs=1", "train.batch_size=2",
              f"train.out_dir={out}", "train.name=tiny", "train.report=false"]:
        args += ["--set", o]
    assert main(args) == 0
    assert (out / "tiny" / "checkpoints" / "best.safetensors").is_file()


@pytest.mark.parametrize("bad", ["fractional", "nan"])
def test_fractional_or_nan_coordinates_are_refused_with_the_file(root, bad):
    path = root / "train_events" / B / "events" / "left" / "events.h5"
    x, y, t, p = _events(B)
    x = x.astype(np.float32) + (0.5 if bad == "fractional" else 0.0)
    if bad == "nan":
        x[np.flatnonzero((t >= 100_000) & (t < 150_000))[0]] = np.nan
    data = {"events/x": x, "events/y": y.astype(np.uint16),
            "events/t": t.astype(np.uint32), "events/p": p.astype(np.uint8),
            "ms_to_idx": np.searchsorted(t, np.arange(int(t[-1]) // 1000 + 1) * 1000,
                                         side="left").astype(np.uint64)}
    with h5py.File(path, "w") as f:
        for key, value in data.items():
            f.create_dataset(key, data=value, **BLOSC)
        f.create_dataset("t_offset", data=np.int64(SEQS[B][1]))
    ds = dsec("train", root, rectify=False)
    msg = _err(ds.__getitem__, _item(ds, B, 1))
    assert str(path) in msg and "must be integers" in msg
