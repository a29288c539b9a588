"""Tests of the built-in digits-on-photographs dataset (spikeseg.data.builtin)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")
pytest.importorskip("skimage")

from spikeseg.data import build_dataset, list_datasets  # noqa: E402
from spikeseg.data import builtin as B  # noqa: E402
from spikeseg.errors import SpikesegError  # noqa: E402

SMALL = {"image_size": 32, "num_train": 24, "num_val": 12}


def test_registered_and_info(tmp_path):
    assert "builtin" in list_datasets()
    ds = build_dataset("builtin", "val", root=str(tmp_path), **SMALL)
    assert isinstance(ds, B.BuiltinDigits)
    assert ds.info.name == "builtin"
    assert ds.info.num_classes == 11
    assert ds.info.class_names == ["background"] + [str(d) for d in range(10)]
    assert ds.info.in_channels == 3
    assert ds.info.temporal is False


@pytest.mark.parametrize("size", [32, (24, 40), (48, 20)])
@pytest.mark.parametrize("split", ["train", "val"])
def test_items(tmp_path, split, size):
    ds = B.builtin(split, root=tmp_path, **{**SMALL, "image_size": size})
    h, w = (size, size) if isinstance(size, int) else size
    assert len(ds) == (24 if split == "train" else 12)
    assert ds.images.shape == (len(ds), h, w, 3) and ds.images.dtype == np.uint8
    assert ds.labels.shape == (len(ds), h, w) and ds.labels.dtype == np.uint8
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.dtype == torch.float32 and x.shape == (3, h, w)
        assert y.dtype == torch.int64 and y.shape == (h, w)
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
        assert 0 <= int(y.min()) and int(y.max()) <= 10
        assert (y > 0).any(), "every sample shows at least one digit"
        assert (y == 0).any(), "every sample shows some background"
    # the tensors are the stored arrays
    x, y = ds[0]
    assert torch.equal(x, torch.from_numpy(ds.images[0]).permute(2, 0, 1).float() / 255)
    assert torch.equal(y, torch.from_numpy(ds.labels[0]).long())


def test_digits_are_visible(tmp_path):
    """Digit pixels contrast with the background around them."""
    ds = B.builtin("train", root=tmp_path, **SMALL)
    luma = ds.images.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / 255
    diffs = [
        abs(luma[i][ds.labels[i] > 0].mean() - luma[i][ds.labels[i] == 0].mean())
        for i in range(len(ds))
    ]
    assert np.median(diffs) > 0.1


def test_deterministic(tmp_path):
    a = B.builtin("train", cache=False, **SMALL)
    b = B.builtin("train", cache=False, **SMALL)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    c = B.builtin("train", cache=False, seed=1, **SMALL)
    assert not np.array_equal(a.images, c.images)
    v = B.builtin("val", cache=False, num_val=24, **{k: SMALL[k] for k in ("image_size",)})
    assert not np.array_equal(a.images, v.images)
    assert a.cache_path is None


def test_cache_written_and_reused(tmp_path, monkeypatch):
    a = B.builtin("train", root=tmp_path, **SMALL)
    assert a.cache_path is not None and a.cache_path.parent == tmp_path
    assert a.cache_path.suffix == ".npz" and a.cache_path.is_file()
    assert [p.name for p in tmp_path.iterdir()] == [a.cache_path.name]  # no temp files left

    def boom(*args, **kwargs):
        raise AssertionError("should have loaded the cache")

    monkeypatch.setattr(B, "_generate", boom)
    b = B.builtin("train", root=tmp_path, **SMALL)
    assert b.cache_path == a.cache_path
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    # other options: another file, so it must generate
    with pytest.raises(AssertionError, match="should have loaded"):
        B.builtin("train", root=tmp_path, seed=3, **SMALL)


def test_cache_default_root_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKESEG_CACHE", str(tmp_path / "cache"))
    ds = B.builtin("val", **SMALL)
    assert ds.cache_path.parent == tmp_path / "cache" and ds.cache_path.is_file()


def test_corrupt_cache_regenerated(tmp_path):
    a = B.builtin("val", root=tmp_path, **SMALL)
    path = a.cache_path
    path.write_bytes(b"this is not a zip file")
    with pytest.warns(UserWarning, match="regenerating"):
        b = B.builtin("val", root=tmp_path, **SMALL)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    with np.load(path) as z:  # rewritten properly
        assert np.array_equal(z["labels"], a.labels)
    # truncated file
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match="regenerating"):
        c = B.builtin("val", root=tmp_path, **SMALL)
    assert np.array_equal(a.images, c.images)


def test_digit_split_disjoint_and_stratified():
    _, targets = B._load_digits()
    train = B.digit_split_indices(targets, "train")
    val = B.digit_split_indices(targets, "val")
    assert len(np.intersect1d(train, val)) == 0
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(targets)))
    assert 0.18 < len(val) / len(targets) < 0.22
    for d in range(10):
        frac = np.mean(targets[val] == d) / np.mean(targets == d)
        assert 0.9 < frac < 1.1
    assert np.array_equal(val, B.digit_split_indices(targets, "val"))  # fixed


def test_photo_parts_disjoint():
    for name, width in [("china.jpg", 640), ("retina.jpg", 1411), ("chelsea.png", 451)]:
        t0, t1 = B.photo_part(name, width, "train")
        v0, v1 = B.photo_part(name, width, "val")
        assert 0 == t0 < t1 <= v0 < v1 == width
    # the motorcycle views are a stereo pair: column x of the left view is column x - d of the
    # right view (0 < d <= 60 px at 741 px), so the right view's train part must end early
    t0, t1 = B.photo_part("motorcycle_right.png", 741, "train")
    v0, _ = B.photo_part("motorcycle_left.png", 741, "val")
    assert t1 + 60 <= v0
    # the actual parts cut from the loaded photographs
    photos = B._load_photos()
    for split in ("train", "val"):
        parts = B._photo_parts(split)
        assert len(parts) == len(photos) >= 2
        for (name, arr), part in zip(photos, parts, strict=True):
            x0, x1 = B.photo_part(name, arr.shape[1], split)
            assert (part.width, part.height) == (x1 - x0, arr.shape[0])
            assert np.array_equal(np.asarray(part), arr[:, x0:x1])


@pytest.mark.parametrize("out_hw", [(64, 64), (24, 40), (48, 20)])
def test_crops_inside_part(out_hw):
    rng = np.random.default_rng(0)
    for part_hw, short in [((427, 480), 427), ((427, 160), 427), ((1411, 353), 1411)]:
        for _ in range(200):
            left, top, right, bottom = B._sample_crop_box(rng, part_hw, short, out_hw)
            assert 0 <= left < right <= part_hw[1] + 1e-9
            assert 0 <= top < bottom <= part_hw[0] + 1e-9
            assert (bottom - top) / (right - left) == pytest.approx(out_hw[0] / out_hw[1])
            assert min(bottom - top, right - left) <= 0.6 * short + 1e-9


def test_render_sample_labels_match_digits():
    images, targets = B._load_digits()
    rng = np.random.default_rng(5)
    background = np.full((40, 56, 3), 128, np.uint8)
    # only 7s: every labelled pixel is class 8
    sevens = targets == 7
    img, lab = B.render_sample(rng, background, images[sevens], targets[sevens], (2, 2))
    assert set(np.unique(lab)) == {0, 8}
    assert img.shape == (40, 56, 3) and img.dtype == np.uint8
    assert (img[lab == 0] == 128).mean() > 0.8  # most background pixels untouched
    assert (np.abs(img[lab > 0].astype(int) - 128).max(axis=1) > 40).all()  # painted strokes


def test_bad_split():
    with pytest.raises(SpikesegError, match="train, val"):
        B.builtin("test", cache=False, **SMALL)
    with pytest.raises(SpikesegError, match="train, val"):
        build_dataset("builtin", "training", cache=False, **SMALL)


@pytest.mark.parametrize(
    "options",
    [
        {"image_size": 8},
        {"image_size": (32, 32, 3)},
        {"image_size": "64"},
        {"digits_per_image": (3, 1)},
        {"digit_scale": (0.0, 2.0)},
        {"num_train": -1},
        {"seed": -5},
    ],
)
def test_bad_options(options):
    with pytest.raises(SpikesegError):
        B.builtin("train", cache=False, **{**SMALL, **options})


def test_missing_packages(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(SpikesegError, match=r'pip install "spikeseg\[builtin\]"'):
        B.builtin("train", cache=False, **SMALL)
