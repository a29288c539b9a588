"""The DDD17 (EV-SegNet release) loader on tiny fixtures in the published on-disk layout."""

import numpy as np
import pytest
import torch
from PIL import Image

from spikeseg.cli import main
from spikeseg.data import build_dataset, dataset_accepts
from spikeseg.data.ddd17 import CLASS_NAMES, ddd17, parse_frame_name
from spikeseg.errors import SpikesegError

H, W = 20, 30  # the release is 200 x 346
TRAIN = {"1487339175": [10, 11, 12, 14, 15], "1487842276": [5, 6]}  # a gap at frame 13
TEST = {"1487417411": [20, 21, 22]}


def _name(rec, frame):
    return f"rec{rec}_export_{frame}"


def _events(seed):
    """An EV-SegNet event tensor: counts in channels 0-1, timestamp statistics in 2-5."""
    rng = np.random.default_rng(seed)
    ev = np.zeros((H, W, 6), np.float32)
    ev[..., :2] = rng.integers(0, 5, size=(H, W, 2))
    ev[..., 2:] = rng.uniform(-1, 1, size=(H, W, 4))
    return ev


def _label(seed):
    rng = np.random.default_rng(seed + 1000)
    lab = rng.integers(0, 6, size=(H, W)).astype(np.uint8)
    lab[0, :3] = 255  # ignore
    return lab


def _seed(rec, frame):
    return int(rec) % 1000 + frame


def make_ddd17(base, lists=True):
    """``base/events|labels|images/<split>/rec<rec>_export_<frame>.*`` (+ datalists/)."""
    for split, recs in (("train", TRAIN), ("test", TEST)):
        for kind in ("events", "labels", "images"):
            (base / kind / split).mkdir(parents=True)
        lines = []
        for rec, frames in recs.items():
            for f in frames:
                name, s = _name(rec, f), _seed(rec, f)
                np.save(base / "events" / split / f"{name}.npy", _events(s))
                Image.fromarray(_label(s)).save(base / "labels" / split / f"{name}.png")
                Image.fromarray(np.full((H, W), s % 256, np.uint8)).save(
                    base / "images" / split / f"{name}.png")
                lines.append(f"events/{split}/{name}.npy labels/{split}/{name}.png\n")
        if lists:
            (base / "datalists").mkdir(exist_ok=True)
            (base / "datalists" / f"{split}.txt").write_text("".join(lines))
    return base


@pytest.fixture
def root(tmp_path):
    return make_ddd17(tmp_path / "ddd17")


def _stems(sample):
    return [None if p is None else p.stem for p in sample.events]


def _minmax(a):
    """Reference: per-channel min-max to [-0.5, 0.5] of ``[C, H, W]``."""
    lo = a.min(axis=(1, 2), keepdims=True)
    hi = a.max(axis=(1, 2), keepdims=True)
    return (a - lo) / (hi - lo) - 0.5


def test_single_frames_at_native_size(root):
    ds = ddd17("train", root, image_size=(H, W))
    assert ds.list_file == root / "datalists" / "train.txt"
    assert len(ds) == 7
    info = ds.info
    assert info.name == "ddd17" and info.num_classes == 6 and info.class_names == CLASS_NAMES
    assert info.in_channels == 2 and not info.temporal
    assert tuple(info.palette[5]) == (0, 0, 142)  # vehicle
    x, y = ds[3]  # rec1487339175 frame 14
    assert _stems(ds.samples[3]) == [_name("1487339175", 14)]
    assert x.dtype == torch.float32 and x.shape == (2, H, W)
    ev = _events(_seed("1487339175", 14)).transpose(2, 0, 1)
    np.testing.assert_allclose(x.numpy(), _minmax(ev[:2]), atol=1e-6)
    assert x.amin(dim=(1, 2)).tolist() == [-0.5, -0.5] and x.amax(dim=(1, 2)).tolist() == [0.5, 0.5]
    assert y.dtype == torch.int64 and y.shape == (H, W)
    np.testing.assert_array_equal(y.numpy(), _label(_seed("1487339175", 14)))
    assert set(y.unique().tolist()) <= {0, 1, 2, 3, 4, 5, 255}
    t1 = ddd17("train", root, image_size=(H, W), timesteps=1)  # a model's T = 1: [1, C, H, W]
    assert t1.info.temporal and t1[3][0].shape == (1, 2, H, W)
    torch.testing.assert_close(t1[3][0][0], x)


def test_val_is_the_test_recording_and_parent_root_is_accepted(root):
    ds = ddd17("val", root.parent, image_size=16)  # the folder holding the dataset folder
    assert ds.root == root and ds.split == "test"
    assert [_stems(s)[0] for s in ds.samples] == [_name("1487417411", f) for f in (20, 21, 22)]
    assert ds[0][0].shape == (2, 16, 16) and ds[0][1].shape == (16, 16)
    assert len(ddd17("test", root)) == 3  # the release's own name is an alias


def test_sequences_never_cross_recordings_or_gaps(root):
    ds = ddd17("train", root, image_size=(H, W), timesteps=2)
    assert ds.info.temporal and ds.info.in_channels == 2
    a, b = "1487339175", "1487842276"
    assert [_stems(s) for s in ds.samples] == [
        [_name(a, 10), _name(a, 11)], [_name(a, 11), _name(a, 12)],
        [_name(a, 14), _name(a, 15)],  # not (12, 14): frame 13 is missing
        [_name(b, 5), _name(b, 6)],  # not (a 15, b 5): another recording
    ]
    x, y = ds[2]
    assert x.shape == (2, 2, H, W)
    for t, frame in enumerate((14, 15)):
        ev = _events(_seed(a, frame)).transpose(2, 0, 1)[:2]
        np.testing.assert_allclose(x[t].numpy(), _minmax(ev), atol=1e-6)
    np.testing.assert_array_equal(y.numpy(), _label(_seed(a, 15)))  # the last frame's label
    three = ddd17("train", root, image_size=(H, W), timesteps=3)
    assert [_stems(s) for s in three.samples] == [[_name(a, f) for f in (10, 11, 12)]]


@pytest.mark.parametrize("pad", ["repeat", "zeros"])
def test_padding_keeps_every_labelled_frame(root, pad):
    ds = ddd17("train", root, image_size=(H, W), timesteps=3, pad=pad, normalize="none")
    assert len(ds) == 7
    a = "1487339175"
    first = _name(a, 10) if pad == "repeat" else None
    assert _stems(ds.samples[0]) == [first, first, _name(a, 10)]
    assert _stems(ds.samples[4]) == [first and _name(a, 14), _name(a, 14), _name(a, 15)]
    x, _ = ds[0]
    raw = torch.from_numpy(_events(_seed(a, 10)).transpose(2, 0, 1)[:2].copy())
    assert torch.equal(x[2], raw)
    assert torch.equal(x[0], raw if pad == "repeat" else torch.zeros_like(raw))


def test_channels_and_normalisations(root):
    ev = _events(_seed("1487842276", 6)).transpose(2, 0, 1)
    raw = ddd17("train", root, image_size=(H, W), channels="all", normalize="none")
    assert raw.info.in_channels == 6
    np.testing.assert_array_equal(raw[6][0].numpy(), ev)
    two = ddd17("train", root, image_size=(H, W), channels=[3, 0], normalize="log")
    sel = ev[[3, 0]]
    np.testing.assert_allclose(two[6][0].numpy(), np.sign(sel) * np.log1p(np.abs(sel)), atol=1e-6)
    mm = ddd17("train", root, image_size=(H, W), channels="all")
    np.testing.assert_allclose(mm[6][0].numpy(), _minmax(ev), atol=1e-6)


def test_empty_channel_normalises_to_minus_half(root):
    path = root / "events" / "train" / f"{_name('1487842276', 5)}.npy"
    ev = _events(0)
    ev[..., 1] = 0.0  # no negative events in this frame
    np.save(path, ev)
    x, _ = ddd17("train", root, image_size=(H, W))[5]
    assert torch.all(x[1] == -0.5)


def test_resize_averages_events_and_picks_nearest_labels(root):
    ev = np.zeros((H, W, 6), np.float32)
    ev[..., 0] = 3.0  # uniform: stays uniform
    ev[:, : W // 2, 1] = 4.0  # left half: averaged across the edge, never beyond [0, 4]
    np.save(root / "events" / "train" / f"{_name('1487842276', 5)}.npy", ev)
    x, y = ddd17("train", root, image_size=(10, 15), normalize="none")[5]
    assert x.shape == (2, 10, 15) and y.shape == (10, 15)
    assert torch.allclose(x[0], torch.full((10, 15), 3.0))
    assert torch.all(x[1, :, :6] == 4.0) and torch.all(x[1, :, 9:] == 0.0)
    assert 0.0 < x[1, 0, 7].item() < 4.0
    lab = _label(_seed("1487842276", 5))
    np.testing.assert_array_equal(y.numpy(), lab[1::2, 1::2])  # centres of the 2x2 cells


def test_folder_scan_matches_the_list_files(tmp_path, root):
    listed = ddd17("train", root, timesteps=2)
    scanned = ddd17("train", root, timesteps=2, datalist="scan")
    assert scanned.list_file is None and scanned.samples == listed.samples
    bare = make_ddd17(tmp_path / "nolists", lists=False)
    assert ddd17("val", bare).list_file is None and len(ddd17("val", bare)) == 3


def test_named_list_file_selects_frames(root):
    (root / "datalists" / "train-new.txt").write_text(
        "/events/train/rec1487339175_export_11.npy /labels/train/rec1487339175_export_11.png\n"
        "\n"
        "events/train/rec1487339175_export_12.npy labels/train/rec1487339175_export_12.png\n"
    )
    ds = ddd17("train", root, datalist="train-new", timesteps=2)
    assert [_stems(s) for s in ds.samples] == [[_name("1487339175", 11), _name("1487339175", 12)]]


def test_frame_names():
    assert parse_frame_name("rec1487417411_export_100.npy") == ("1487417411", 100)
    assert parse_frame_name("rec1487417411_export_7.0.png") == ("1487417411", 7)
    assert parse_frame_name("frame_0001.npy") is None


def test_registry_passes_options(root):
    assert dataset_accepts("ddd17", "timesteps")
    ds = build_dataset("ddd17", "val", root=str(root), image_size=(16, 24), timesteps=2)
    x, y = ds[0]
    assert x.shape == (2, 2, 16, 24) and y.shape == (16, 24)


def _err(fn, *args, **kw):
    with pytest.raises(SpikesegError) as e:
        fn(*args, **kw)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_errors_in_folders_and_lists(tmp_path, root):
    assert "folder not found" in _err(ddd17, "train", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    assert "no events/ and labels/" in _err(ddd17, "train", tmp_path / "empty")
    assert "data.root" in _err(ddd17, "train", None)
    assert "datalist 'nope'" in _err(ddd17, "train", root, datalist="nope")
    lines = (root / "datalists" / "train.txt").read_text().splitlines()
    (root / "datalists" / "train.txt").write_text("\n".join([lines[0] + " extra"] + lines[1:]))
    assert "train.txt, line 1" in _err(ddd17, "train", root)
    gone = root / "events" / "train" / f"{_name('1487339175', 12)}.npy"
    gone.unlink()
    (root / "datalists" / "train.txt").write_text("\n".join(lines))
    msg = _err(ddd17, "train", root)
    assert "line 3" in msg and "events file" in msg and gone.name in msg
    msg = _err(ddd17, "train", root, datalist="scan")  # label left without its events
    assert f"label {root / 'labels' / 'train' / gone.with_suffix('.png').name}" in msg
    (root / "labels" / "train" / gone.with_suffix(".png").name).unlink()
    (root / "labels" / "train" / f"{_name('1487339175', 10)}.png").unlink()
    assert "has no label" in _err(ddd17, "train", root, datalist="scan")


def test_errors_in_options(root):
    assert "channels" in _err(ddd17, "train", root, channels=[0, 9])
    assert "normalize" in _err(ddd17, "train", root, normalize="zscore")
    assert "pad" in _err(ddd17, "train", root, pad="edge")
    assert "timesteps" in _err(ddd17, "train", root, timesteps=0)
    assert "unknown split" in _err(ddd17, "other", root)
    assert "image_size" in _err(ddd17, "train", root, image_size=(2, 2))
    assert "no run of 4 consecutive frames" in _err(ddd17, "val", root, timesteps=4)


def test_unnamed_frames_only_work_one_at_a_time(tmp_path):
    base = tmp_path / "d"
    for kind in ("events", "labels"):
        (base / kind / "train").mkdir(parents=True)
    np.save(base / "events" / "train" / "a.npy", _events(1))
    Image.fromarray(_label(1)).save(base / "labels" / "train" / "a.png")
    assert len(ddd17("train", base)) == 1
    assert "rec<recording>_export_<frame>" in _err(ddd17, "train", base, timesteps=2)


@pytest.mark.parametrize(
    "content, expected",
    [
        (np.zeros((H, W, 4), np.float32), "float32 [H, W, 6]"),
        (np.zeros((H, W, 6), np.int64), "int64"),
        (b"not a numpy file", "unreadable or corrupt"),
    ],
)
def test_malformed_event_files_are_named(root, content, expected):
    ds = ddd17("train", root, timesteps=2)
    path = ds.samples[0].events[0]
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        np.save(path, content)
    msg = _err(ds.__getitem__, 0)
    assert str(path) in msg and expected in msg


def test_bad_labels_are_named(root):
    ds = ddd17("train", root)
    lab = _label(3)
    lab[5, 5] = 7
    Image.fromarray(lab).save(ds.samples[1].label)
    msg = _err(ds.__getitem__, 1)
    assert str(ds.samples[1].label) in msg and "[7]" in msg
    Image.fromarray(np.zeros((H, W + 1), np.uint8)).save(ds.samples[2].label)
    assert "must match" in _err(ds.__getitem__, 2)
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(ds.samples[3].label)
    assert "RGB image" in _err(ds.__getitem__, 3)


@pytest.mark.parametrize("model", ["spiking_deeplab", "deeplab"])
def test_cli_trains_one_epoch(tmp_path, root, model):
    out = tmp_path / "runs"
    args = ["train", "--no-progress"]
    for o in [f"model.name={model}", "model.width=0.125", "model.timesteps=2",
              "data.dataset=ddd17", f"data.root={root}", "data.image_size=32",
              "train.epochs=1", "train.batch_size=2", f"train.out_dir={out}",
              "train.name=tiny", "train.report=false"]:
        args += ["--set", o]
    assert main(args) == 0
    assert (out / "tiny" / "checkpoints" / "best.safetensors").is_file()


def test_event_files_with_nan_or_inf_are_refused_with_their_name(root):
    ds = ddd17("train", root, timesteps=2)
    path = ds.samples[0].events[-1]
    bad = np.full((H, W, 6), np.nan, np.float32)
    np.save(path, bad)
    msg = _err(ds.__getitem__, 0)
    assert str(path) in msg and "NaN or infinite" in msg
    bad = _events(0)
    bad[3, 4, 1] = np.inf
    np.save(path, bad)
    assert "1 NaN or infinite" in _err(ds.__getitem__, 0)
