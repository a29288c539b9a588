"""The PASCAL VOC2012 (+SBD) loader on tiny fixtures in the published on-disk layouts."""

import shutil
import warnings

import numpy as np
import pytest
import scipy.io
import scipy.sparse
import torch
from PIL import Image

from spikeseg.cli import main
from spikeseg.data import build_dataset
from spikeseg.data.base import default_palette
from spikeseg.data.voc import CLASS_NAMES, read_sbd_mat, voc
from spikeseg.errors import SpikesegError

H, W = 20, 30
VOC_TRAIN = ["2007_000032", "2007_000039", "2007_000063"]
VOC_VAL = ["2007_000033", "2007_000042"]
SBD_TRAIN = ["2008_000002", "2007_000032", "2007_000033"]  # a VOC train id and a VOC val id
SBD_VAL = ["2008_000003"]


def _photo(seed):
    return (np.random.default_rng(seed).random((H, W, 3)) * 255).astype(np.uint8)


def _label(seed, border=True):
    """Class-id map: a rectangle of class 1..20 on background, with a 255 boundary ring."""
    rng = np.random.default_rng(seed)
    lab = np.zeros((H, W), np.uint8)
    y0, x0 = int(rng.integers(2, 6)), int(rng.integers(2, 10))
    lab[y0 - 1 : y0 + 9, x0 - 1 : x0 + 13] = 255 if border else 0
    lab[y0 : y0 + 8, x0 : x0 + 12] = 1 + seed % 20
    return lab


def _save_palette_png(path, lab):
    im = Image.fromarray(lab)
    im.putpalette(default_palette(21).ravel().tolist())  # as VOC's SegmentationClass: mode P
    im.save(path)


def _save_sbd_mat(path, seg):
    """An SBD cls/*.mat file: struct GTcls with Boundaries, Segmentation, CategoriesPresent."""
    bounds = np.empty((20, 1), dtype=object)
    for i in range(20):
        bounds[i, 0] = scipy.sparse.csc_matrix(seg == i + 1, dtype=np.float64)
    present = np.unique(seg[(seg > 0) & (seg < 255)]).astype(np.uint8)[:, None]
    scipy.io.savemat(path, {"GTcls": {"Boundaries": bounds, "Segmentation": seg,
                                      "CategoriesPresent": present}})


def _seed(id_):
    return int(id_.replace("_", "")) % 1000


def make_voc(base, aug_list=True, sbd=True):
    """VOCdevkit/VOC2012 (+ train_aug.txt with SegmentationClassAug, + benchmark_RELEASE)."""
    voc_root = base / "VOCdevkit" / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc_root / d).mkdir(parents=True)
    for id_ in VOC_TRAIN + VOC_VAL + ["2008_000002"]:  # VOC has every SBD image but the last
        Image.fromarray(_photo(_seed(id_))).save(voc_root / "JPEGImages" / f"{id_}.jpg",
                                                 quality=95)
    for id_ in VOC_TRAIN + VOC_VAL:
        _save_palette_png(voc_root / "SegmentationClass" / f"{id_}.png", _label(_seed(id_)))
    lists = voc_root / "ImageSets" / "Segmentation"
    (lists / "train.txt").write_text("\n".join(VOC_TRAIN) + "\n")
    (lists / "val.txt").write_text("\n".join(VOC_VAL) + "\n")
    (lists / "trainval.txt").write_text("\n".join(VOC_TRAIN + VOC_VAL) + "\n")
    if aug_list:
        aug = voc_root / "SegmentationClassAug"
        aug.mkdir()
        for id_ in VOC_TRAIN + ["2008_000002"]:
            Image.fromarray(_label(_seed(id_), border=False)).save(aug / f"{id_}.png")  # mode L
        (lists / "train_aug.txt").write_text(
            f"/JPEGImages/{VOC_TRAIN[0]}.jpg /SegmentationClassAug/{VOC_TRAIN[0]}.png\n"
            f"JPEGImages/{VOC_TRAIN[1]}.jpg SegmentationClassAug/{VOC_TRAIN[1]}.png\n"
            f"{VOC_TRAIN[2]}\n\n"
            "2008_000002\n"
        )
    if sbd:
        ds = base / "VOCdevkit" / "benchmark_RELEASE" / "dataset"
        (ds / "img").mkdir(parents=True)
        (ds / "cls").mkdir()
        for id_ in SBD_TRAIN + SBD_VAL:
            Image.fromarray(_photo(_seed(id_))).save(ds / "img" / f"{id_}.jpg", quality=95)
            # SBD's labels differ from VOC's (no boundary, other class) to tell them apart.
            _save_sbd_mat(ds / "cls" / f"{id_}.mat", (_label(_seed(id_) + 1, border=False)))
        (ds / "train.txt").write_text("\n".join(SBD_TRAIN) + "\n")
        (ds / "val.txt").write_text("\n".join(SBD_VAL) + "\n")
    return voc_root


@pytest.fixture
def voc_root(tmp_path):
    return make_voc(tmp_path)


def _ids(ds):
    return [img.stem for img, _ in ds.pairs]


def _jpeg(path):
    return np.array(Image.open(path).convert("RGB"))


def test_val_items_at_native_size_are_the_files(voc_root):
    ds = voc("val", voc_root, image_size=(H, W))
    assert len(ds) == 2 and _ids(ds) == VOC_VAL
    assert ds.info.num_classes == 21 and ds.info.class_names == CLASS_NAMES
    assert ds.info.class_names[-1] == "tvmonitor" and ds.info.in_channels == 3
    assert not ds.info.temporal
    x, y = ds[1]
    assert x.dtype == torch.float32 and x.shape == (3, H, W)
    assert y.dtype == torch.int64 and y.shape == (H, W)
    expected = _jpeg(voc_root / "JPEGImages" / f"{VOC_VAL[1]}.jpg")
    assert torch.equal(x, torch.from_numpy(expected).permute(2, 0, 1).float() / 255)
    assert np.array_equal(y.numpy(), _label(_seed(VOC_VAL[1])))  # 255 kept as ignore


def test_resize_bilinear_antialiased_and_nearest_labels(voc_root):
    ds = voc("val", voc_root, image_size=(8, 12))
    x, y = ds[0]
    assert x.shape == (3, 8, 12) and y.shape == (8, 12)
    src = Image.open(voc_root / "JPEGImages" / f"{VOC_VAL[0]}.jpg").convert("RGB")
    pil = np.asarray(src.resize((12, 8), Image.Resampling.BILINEAR)).astype(np.float32) / 255
    assert np.abs(x.permute(1, 2, 0).numpy() - pil).max() <= 1.5 / 255  # Pillow's filter
    lab = Image.fromarray(_label(_seed(VOC_VAL[0])))
    near = np.asarray(lab.resize((12, 8), Image.Resampling.NEAREST))
    assert np.array_equal(y.numpy(), near)
    assert set(np.unique(y.numpy())) <= set(np.unique(np.asarray(lab)))  # no blended ids
    x2, y2 = voc("val", voc_root, image_size=16)[0]
    assert x2.shape == (3, 16, 16) and y2.shape == (16, 16)


@pytest.mark.parametrize("level", ["VOC2012", "VOCdevkit", "parent"])
def test_root_may_be_voc2012_vocdevkit_or_their_parent(voc_root, level):
    root = {"VOC2012": voc_root, "VOCdevkit": voc_root.parent,
            "parent": voc_root.parent.parent}[level]
    ds = voc("val", root, image_size=8)
    assert [p[0].parent.parent for p in ds.pairs] == [voc_root, voc_root]


def test_aug_list_paths_with_and_without_slash_and_bare_ids(tmp_path):
    root = make_voc(tmp_path, sbd=False)
    with open(root / "ImageSets" / "Segmentation" / "train_aug.txt", "a") as f:
        f.write(f"/JPEGImages/{VOC_VAL[0]}.jpg /SegmentationClass/{VOC_VAL[0]}.png\n")
    with pytest.warns(UserWarning, match="1 of its images belong to the VOC2012 val split"):
        ds = voc("train", root, image_size=(H, W), augmented="aug_list")
    assert _ids(ds) == VOC_TRAIN + ["2008_000002"]  # the val id was left out
    assert all(lab.parent.name == "SegmentationClassAug" for _, lab in ds.pairs)
    assert ds.source.endswith("train_aug.txt")
    _, y = ds[3]
    assert np.array_equal(y.numpy(), _label(_seed("2008_000002"), border=False))


def test_aug_list_at_the_voc2012_root_is_found(tmp_path):
    root = make_voc(tmp_path, sbd=False)
    (root / "ImageSets" / "Segmentation" / "train_aug.txt").rename(root / "train_aug.txt")
    ds = voc("train", root, image_size=8)
    assert len(ds) == 4 and ds.source == "train_aug.txt"


def test_sbd_union_excludes_voc_val_and_prefers_voc_labels(voc_root):
    ds = voc("train", voc_root, image_size=(H, W), augmented="sbd")
    # VOC train ∪ SBD train ∪ SBD val, minus VOC val (2007_000033), each id once.
    assert _ids(ds) == VOC_TRAIN + ["2008_000002", "2008_000003"]
    assert VOC_VAL[0] not in _ids(ds)
    sources = {img.stem: (img.parent.name, lab.parent.name, lab.suffix) for img, lab in ds.pairs}
    assert sources["2007_000032"] == ("JPEGImages", "SegmentationClass", ".png")  # VOC's label
    assert sources["2008_000002"] == ("JPEGImages", "cls", ".mat")
    assert sources["2008_000003"] == ("img", "cls", ".mat")  # image only in SBD's img/
    x, y = ds[4]
    assert np.array_equal(y.numpy(), _label(_seed("2008_000003") + 1, border=False))
    sbd_img = voc_root.parent / "benchmark_RELEASE" / "dataset" / "img" / "2008_000003.jpg"
    assert torch.equal(x, torch.from_numpy(_jpeg(sbd_img)).permute(2, 0, 1).float() / 255)
    _, y0 = ds[0]
    assert np.array_equal(y0.numpy(), _label(_seed("2007_000032")))


def test_read_sbd_mat_matches_the_published_access_path(tmp_path):
    seg = _label(3, border=False)
    _save_sbd_mat(tmp_path / "a.mat", seg)
    mat = scipy.io.loadmat(tmp_path / "a.mat")
    assert np.array_equal(mat["GTcls"][0]["Segmentation"][0], seg)  # torchvision's SBDataset
    out = read_sbd_mat(tmp_path / "a.mat")
    assert out.dtype == np.uint8 and np.array_equal(out, seg)


@pytest.mark.parametrize("where", ["benchmark_RELEASE", "dataset"])
def test_sbd_root_elsewhere(tmp_path, where):
    root = make_voc(tmp_path / "a", aug_list=False)
    moved = tmp_path / "elsewhere" / "benchmark_RELEASE"
    shutil.move(root.parent / "benchmark_RELEASE", moved)
    with pytest.raises(SpikesegError, match="SBD not found"):
        voc("train", root, augmented="sbd")
    sbd_root = moved if where == "benchmark_RELEASE" else moved / "dataset"
    ds = voc("train", root, image_size=8, augmented="sbd", sbd_root=sbd_root)
    assert len(ds) == 5


def test_auto_prefers_aug_list_then_sbd_then_plain_train(tmp_path):
    both = make_voc(tmp_path / "both")
    assert voc("train", both, image_size=8).source.endswith("train_aug.txt")
    sbd_only = make_voc(tmp_path / "sbd", aug_list=False)
    assert voc("train", sbd_only, image_size=8).source.startswith("VOC2012 train + SBD")
    plain = make_voc(tmp_path / "plain", aug_list=False, sbd=False)
    with pytest.warns(UserWarning, match="1,464 VOC2012 train images only"):
        ds = voc("train", plain, image_size=8)
    assert _ids(ds) == VOC_TRAIN
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _ids(voc("train", plain, image_size=8, augmented="none")) == VOC_TRAIN


def test_none_ignores_the_augmented_sets(voc_root):
    ds = voc("train", voc_root, image_size=8, augmented="none")
    assert _ids(ds) == VOC_TRAIN and ds.source.endswith("train.txt")


def test_trainval(voc_root):
    assert _ids(voc("trainval", voc_root, image_size=8, augmented="none")) == VOC_TRAIN + VOC_VAL
    ds = voc("trainval", voc_root, image_size=8, augmented="sbd")
    assert _ids(ds) == VOC_TRAIN + ["2008_000002", "2008_000003"] + VOC_VAL


def test_ignore_to_background_only_in_training_splits(voc_root):
    ds = voc("train", voc_root, image_size=(H, W), augmented="none", ignore_to_background=True)
    _, y = ds[0]
    lab = _label(_seed(VOC_TRAIN[0]))
    assert (lab == 255).any() and not (y == 255).any()
    assert np.array_equal(y.numpy(), np.where(lab == 255, 0, lab))
    _, yv = voc("val", voc_root, image_size=(H, W), ignore_to_background=True)[0]
    assert (yv == 255).any()


def test_build_dataset_passes_options(voc_root):
    ds = build_dataset("voc", "train", root=str(voc_root), image_size=(8, 8), augmented="none")
    assert len(ds) == 3 and ds[0][0].shape == (3, 8, 8)
    with pytest.raises(SpikesegError, match="has no option 'timesteps'"):
        build_dataset("voc", "train", root=str(voc_root), timesteps=4)


# --------------------------------------------------------------------------- errors


def _lists(root):
    return root / "ImageSets" / "Segmentation"


@pytest.mark.parametrize(
    "case, match",
    [
        ("no_root", "needs data.root"),
        ("missing_root", "folder not found"),
        ("not_voc", "not a PASCAL VOC2012 folder"),
        ("no_val_list", r"val\.txt: list file not found"),
        ("missing_jpeg", r"val\.txt, line 2: image .*2007_000042\.jpg not found"),
        ("missing_label", r"val\.txt, line 1: label .*2007_000033\.png not found"),
        ("missing_aug_label", r"train_aug\.txt, line 2: label .*SegmentationClassAug.* not found"),
        ("bad_line", r"val\.txt, line 1: expected an image id or 'image_path label_path'"),
        ("no_aug_list", r"train_aug\.txt: list file not found"),
        ("sbd_missing", "SBD not found"),
        ("bad_sbd_root", "sbd_root .*no SBD cls/ folder"),
        ("sbd_missing_mat", r"train\.txt, line 1: label of '2008_000002' found neither"),
        ("bad_split", "unknown split 'test'"),
        ("bad_augmented", "augmented='yes'"),
        ("bad_flag", "ignore_to_background must be true or false"),
        ("bad_size", "image_size must be an int"),
    ],
)
def test_builder_errors_are_one_line_and_name_the_file(tmp_path, case, match):
    root = make_voc(tmp_path / "d")
    kw = {"split": "val", "root": root}
    if case == "no_root":
        kw["root"] = None
    elif case == "missing_root":
        kw["root"] = tmp_path / "nope"
    elif case == "not_voc":
        (tmp_path / "empty").mkdir()
        kw["root"] = tmp_path / "empty"
    elif case == "no_val_list":
        (_lists(root) / "val.txt").unlink()
    elif case == "missing_jpeg":
        (root / "JPEGImages" / f"{VOC_VAL[1]}.jpg").unlink()
    elif case == "missing_label":
        (root / "SegmentationClass" / f"{VOC_VAL[0]}.png").unlink()
    elif case == "missing_aug_label":
        (root / "SegmentationClassAug" / f"{VOC_TRAIN[1]}.png").unlink()
        kw.update(split="train", augmented="aug_list")
    elif case == "bad_line":
        (_lists(root) / "val.txt").write_text("a b c\n")
    elif case == "no_aug_list":
        (_lists(root) / "train_aug.txt").unlink()
        kw.update(split="train", augmented="aug_list")
    elif case == "sbd_missing":
        shutil.rmtree(root.parent / "benchmark_RELEASE")
        kw.update(split="train", augmented="sbd")
    elif case == "bad_sbd_root":
        kw.update(split="train", augmented="sbd", sbd_root=tmp_path)
    elif case == "sbd_missing_mat":
        (root.parent / "benchmark_RELEASE" / "dataset" / "cls" / "2008_000002.mat").unlink()
        kw.update(split="train", augmented="sbd")
    elif case == "bad_split":
        kw["split"] = "test"
    elif case == "bad_augmented":
        kw["augmented"] = "yes"
    elif case == "bad_flag":
        kw["ignore_to_background"] = "yes"
    elif case == "bad_size":
        kw["image_size"] = "64"
    with pytest.raises(SpikesegError, match=match) as e:
        voc(**kw)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "case, match",
    [
        ("out_of_range", r"2007_000033\.png: label values 21, 40 are outside the VOC classes"),
        ("corrupt_jpeg", r"image .*2007_000033\.jpg is unreadable or corrupt"),
        ("truncated_jpeg", r"image .*2007_000033\.jpg is unreadable or corrupt"),
        ("rgb_label", r"label .*2007_000033\.png is a RGB image; expected class ids"),
        ("size_mismatch", r"2007_000033\.png: label is 10x5 but its image .* is 30x20"),
    ],
)
def test_item_errors_name_the_file(voc_root, case, match):
    img = voc_root / "JPEGImages" / f"{VOC_VAL[0]}.jpg"
    lab = voc_root / "SegmentationClass" / f"{VOC_VAL[0]}.png"
    if case == "out_of_range":
        bad = _label(1)
        bad[0, 0], bad[0, 1] = 21, 40
        _save_palette_png(lab, bad)
    elif case == "corrupt_jpeg":
        img.write_bytes(b"not a jpeg at all")
    elif case == "truncated_jpeg":
        img.write_bytes(img.read_bytes()[:300])
    elif case == "rgb_label":
        Image.fromarray(_photo(1)).save(lab)
    elif case == "size_mismatch":
        _save_palette_png(lab, np.zeros((5, 10), np.uint8))
    ds = voc("val", voc_root, image_size=8)  # per-item problems surface on access
    with pytest.raises(SpikesegError, match=match) as e:
        ds[0]
    assert "\n" not in str(e.value)
    ds[1]  # the other item is fine


def test_sbd_mat_without_gtcls(voc_root):
    mat = voc_root.parent / "benchmark_RELEASE" / "dataset" / "cls" / "2008_000003.mat"
    scipy.io.savemat(mat, {"GTinst": {"Segmentation": np.zeros((H, W), np.uint8)}})
    ds = voc("train", voc_root, image_size=8, augmented="sbd")
    with pytest.raises(SpikesegError, match="no GTcls.Segmentation map"):
        ds[4]
    mat.write_bytes(b"garbage")
    with pytest.raises(SpikesegError, match="cannot read the SBD label"):
        ds[4]


# --------------------------------------------------------------------------- end to end


def test_cli_trains_one_step_on_voc(tmp_path):
    root = make_voc(tmp_path / "data")
    out = tmp_path / "runs"
    sets = [
        "model.name=spiking_deeplab", "model.width=0.125", "model.timesteps=2",
        "data.dataset=voc", f"data.root={root.parent}", "data.image_size=32",
        "data.options={augmented: sbd}", "train.epochs=1", "train.batch_size=2",
        f"train.out_dir={out}", "train.name=tiny", "train.report=false",
    ]
    argv = ["train", "--no-progress"]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0
    assert (out / "tiny" / "checkpoints" / "best.safetensors").is_file()
