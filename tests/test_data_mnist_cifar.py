"""MNIST-on-CIFAR10: the generator on tiny real-format MNIST/CIFAR-10 files, and the loader."""

import gzip
import json
import pickle
import shutil
import struct

import numpy as np
import pytest
import torch
from PIL import Image

import spikeseg.data.mnist_cifar as mc
from spikeseg.cli import main
from spikeseg.data import build_dataset
from spikeseg.data.mnist_cifar import load_cifar10, load_mnist, make_mnist_cifar, mnist_cifar
from spikeseg.errors import SpikesegError

TRAIN_DIGITS = [3, 1, 4, 1, 5, 9]
TEST_DIGITS = [2, 7, 8]


def _digits(n, seed):
    """28×28 uint8 'digits': a random stroke pattern with values on both sides of 0.3·255."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        block = rng.integers(0, 256, size=(20, 16))
        block[rng.random((20, 16)) < 0.4] = 0
        out[i, 4:24, 6:22] = block
    return out


def _backgrounds(n, lo, hi, seed):
    return np.random.default_rng(seed).integers(lo, hi, size=(n, 32, 32, 3), dtype=np.uint8)


def write_idx(path, arr, gz):
    """An IDX file: magic 00 00 08 <ndim>, big-endian uint32 sizes, the bytes."""
    data = bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    if gz:
        with gzip.open(f"{path}.gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def write_cifar_batch(path, images, labels):
    """A CIFAR-10 python batch as the original files hold it: a protocol-2 pickle of a dict
    with bytes keys, b"data" uint8 [N, 3072] (R, G, B planes, rows) and numpy 1's module name."""
    data = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    batch = {b"batch_label": b"a batch", b"labels": [int(v) for v in labels], b"data": data,
             b"filenames": [f"{i}.png".encode() for i in range(len(images))]}
    raw = pickle.dumps(batch, protocol=2).replace(b"numpy._core.multiarray\n",
                                                 b"numpy.core.multiarray\n")
    path.write_bytes(raw)


class Sources:
    def __init__(self, base, gz=True, mnist_sub="", cifar_nested=True):
        self.mnist = base / "mnist"
        (self.mnist / mnist_sub).mkdir(parents=True)
        self.train_digits, self.test_digits = _digits(6, 1), _digits(3, 2)
        d = self.mnist / mnist_sub
        write_idx(d / "train-images-idx3-ubyte", self.train_digits, gz)
        write_idx(d / "train-labels-idx1-ubyte", np.array(TRAIN_DIGITS, np.uint8), gz)
        write_idx(d / "t10k-images-idx3-ubyte", self.test_digits, gz)
        write_idx(d / "t10k-labels-idx1-ubyte", np.array(TEST_DIGITS, np.uint8), gz)
        self.cifar = base / "cifar"
        batches = self.cifar / "cifar-10-batches-py" if cifar_nested else self.cifar
        batches.mkdir(parents=True)
        self.train_bg = _backgrounds(10, 0, 120, 3)  # dark train, bright test: told apart
        self.test_bg = _backgrounds(3, 130, 256, 4)
        for i in range(5):
            write_cifar_batch(batches / f"data_batch_{i + 1}", self.train_bg[2 * i : 2 * i + 2],
                              [i, i])
        write_cifar_batch(batches / "test_batch", self.test_bg, [0, 1, 2])


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    return Sources(tmp_path_factory.mktemp("sources"))


@pytest.fixture(scope="module")
def generated(src, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "mnist_cifar"
    make_mnist_cifar(src.mnist, src.cifar, out, num_train=8, num_test=5, seed=3, progress=False)
    return out


def _recipe(bg, digit, y, x, value):
    """The recipe, written out by hand."""
    small = digit[::2, ::2].astype(np.float64) / 255.0
    img = bg.astype(np.float64)
    img[y : y + 14, x : x + 14, :] += 200.0 * small[:, :, None]
    lab = np.zeros((32, 32), np.uint8)
    lab[y : y + 14, x : x + 14][small > 0.3] = value
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), lab


def _read(out, split, i):
    img = np.asarray(Image.open(out / "images" / split / f"{i:06d}.png"))
    lab = Image.open(out / "labels" / split / f"{i:06d}.png")
    assert lab.mode == "P"
    return img, np.asarray(lab)


def _search(img, lab, backgrounds, digits):
    """All (background, digit, y, x) that reproduce (img, lab) pixel-exactly."""
    found = []
    for b, bg in enumerate(backgrounds):
        diff = img.astype(int) - bg.astype(int)
        if (diff < 0).any():
            continue
        for d, digit in enumerate(digits):
            for y in range(18):
                for x in range(18):
                    e_img, e_lab = _recipe(bg, digit, y, x, 1)
                    if np.array_equal(e_img, img) and np.array_equal(e_lab, lab):
                        found.append((b, d, y, x))
    return found


def test_layout_lists_and_meta(generated):
    out = generated
    meta = json.loads((out / "meta.json").read_text())
    assert meta["labels"] == "binary" and meta["num_classes"] == 2
    assert meta["class_names"] == ["background", "digit"]
    assert meta["counts"] == {"train": 8, "test": 5} and meta["seed"] == 3
    assert meta["recipe"] == {"digit_size": 14, "max_offset": 17, "mask_threshold": 0.3,
                              "digit_gain": 200.0}
    for split, n in (("train", 8), ("test", 5)):
        lines = (out / f"{split}.txt").read_text().splitlines()
        assert lines[0] == f"images/{split}/000000.png labels/{split}/000000.png"
        assert len(lines) == n and len(list((out / "images" / split).iterdir())) == n
    assert [p.name for p in out.parent.iterdir()] == ["mnist_cifar"]  # no partial folder left


def test_each_sample_follows_the_recipe_from_its_own_split(src, generated):
    for split, bgs, digits in (("train", src.train_bg, src.train_digits),
                               ("test", src.test_bg, src.test_digits)):
        for i in (0, 1):
            img, lab = _read(generated, split, i)
            assert len(_search(img, lab, bgs, digits)) == 1
    img, lab = _read(generated, "test", 0)
    assert _search(img, lab, src.train_bg, src.train_digits) == []  # test draws from test pools


def test_documented_draws_reproduce_every_sample(src, generated):
    for s, (split, n, bgs, digits) in enumerate(
        (("train", 8, src.train_bg, src.train_digits), ("test", 5, src.test_bg, src.test_digits))
    ):
        rng = np.random.default_rng([3, s])
        d_idx = np.concatenate([rng.permutation(len(digits)) for _ in range(-(-n // len(digits)))])
        b_idx = np.concatenate([rng.permutation(len(bgs)) for _ in range(-(-n // len(bgs)))])
        offsets = rng.integers(0, 18, size=(n, 2))
        if split == "train":  # 8 samples from 6 digits: each digit once before any repeats
            assert sorted(d_idx[:6]) == list(range(6))
        for i in range(n):
            e_img, e_lab = _recipe(bgs[b_idx[i]], digits[d_idx[i]], *offsets[i], 1)
            img, lab = _read(generated, split, i)
            assert np.array_equal(img, e_img) and np.array_equal(lab, e_lab)
            assert lab.any()  # the digit is labelled


def test_digit_labels_and_determinism(src, tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for out, seed in ((a, 0), (b, 0), (c, 1)):
        make_mnist_cifar(src.mnist, src.cifar, out, num_train=4, num_test=2, labels="digits",
                         seed=seed, progress=False)
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert len(files) == 12
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert any((a / f).read_bytes() != (c / f).read_bytes() for f in files)
    meta = json.loads((a / "meta.json").read_text())
    assert meta["num_classes"] == 11 and meta["class_names"][1:] == [str(d) for d in range(10)]
    for i in range(4):
        img, lab = _read(a, "train", i)
        ((_, d, _, _),) = _search(img, (lab > 0).astype(np.uint8), src.train_bg,
                                  src.train_digits)
        assert set(np.unique(lab)) == {0, TRAIN_DIGITS[d] + 1}
    ds = mnist_cifar("train", a)
    assert ds.info.num_classes == 11 and ds.info.class_names[0] == "background"


@pytest.mark.parametrize("gz, sub, nested", [(False, "", False), (True, "MNIST/raw", True),
                                             (False, "raw", True)])
def test_inputs_plain_or_gzipped_in_usual_folders(tmp_path, gz, sub, nested):
    s = Sources(tmp_path, gz=gz, mnist_sub=sub, cifar_nested=nested)
    images, labels = load_mnist(s.mnist, "train")
    assert images.shape == (6, 28, 28) and np.array_equal(images, s.train_digits)
    assert labels.tolist() == TRAIN_DIGITS
    assert np.array_equal(load_mnist(s.mnist, "test")[0], s.test_digits)
    assert np.array_equal(load_cifar10(s.cifar, "train"), s.train_bg)
    assert np.array_equal(load_cifar10(s.cifar / "cifar-10-batches-py" if nested else s.cifar,
                                       "test"), s.test_bg)


def test_interrupted_run_leaves_no_output(src, tmp_path, monkeypatch):
    real, calls = mc.compose_sample, []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 3:  # Ctrl-C while writing the third sample
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(mc, "compose_sample", interrupted)
    with pytest.raises(KeyboardInterrupt):
        make_mnist_cifar(src.mnist, src.cifar, tmp_path / "out", num_train=5, num_test=0,
                         progress=False)
    assert len(calls) == 3
    assert list(tmp_path.iterdir()) == []  # neither the output nor a partial folder


def test_existing_output_is_refused_unless_empty(src, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    make_mnist_cifar(src.mnist, src.cifar, out, num_train=2, num_test=2, progress=False)
    assert (out / "meta.json").is_file()
    with pytest.raises(SpikesegError, match="already exists and is not empty"):
        make_mnist_cifar(src.mnist, src.cifar, out, num_train=2, num_test=2, progress=False)


# --------------------------------------------------------------------------- input errors


def _mnist_file(s, name):
    return s.mnist / f"{name}.gz"


@pytest.mark.parametrize(
    "case, match",
    [
        ("missing_mnist", r"MNIST file t10k-labels-idx1-ubyte\[\.gz\] not found"),
        ("bad_magic", r"t10k-images-idx3-ubyte\.gz: not an MNIST IDX file"),
        ("truncated_idx", r"train-images-idx3-ubyte\.gz: \d+ data bytes .* truncated"),
        ("bad_gzip", r"train-labels-idx1-ubyte\.gz: cannot read the MNIST file"),
        ("count_mismatch", r"train-labels-idx1-ubyte\.gz: 2 labels for the 6 images"),
        ("missing_batch", r"data_batch_4: CIFAR-10 batch not found"),
        ("corrupt_batch", r"test_batch: cannot read the CIFAR-10 batch"),
        ("not_a_batch", r"data_batch_2: not a CIFAR-10 python batch"),
        ("evil_pickle", r"data_batch_1: cannot read .*unexpected object posix\.system"),
        ("no_cifar", r"no CIFAR-10 python batches"),
        ("no_mnist_dir", r"MNIST folder not found"),
        ("bad_labels", r"labels='colour'; choose one of: binary, digits"),
        ("bad_count", r"num_train must be a non-negative integer"),
    ],
)
def test_generator_errors_name_the_file(tmp_path, case, match):
    s = Sources(tmp_path)
    batches = s.cifar / "cifar-10-batches-py"
    kw = {"num_train": 2, "num_test": 2, "progress": False}
    mnist, cifar = s.mnist, s.cifar
    if case == "missing_mnist":
        _mnist_file(s, "t10k-labels-idx1-ubyte").unlink()
    elif case == "bad_magic":
        with gzip.open(_mnist_file(s, "t10k-images-idx3-ubyte"), "wb") as f:
            f.write(b"\x00\x00\x09\x03" + bytes(100))
    elif case == "truncated_idx":
        data = gzip.decompress(_mnist_file(s, "train-images-idx3-ubyte").read_bytes())
        with gzip.open(_mnist_file(s, "train-images-idx3-ubyte"), "wb") as f:
            f.write(data[:-10])
    elif case == "bad_gzip":
        _mnist_file(s, "train-labels-idx1-ubyte").write_bytes(b"\x1f\x8bnot gzip at all")
    elif case == "count_mismatch":
        _mnist_file(s, "train-labels-idx1-ubyte").unlink()
        write_idx(s.mnist / "train-labels-idx1-ubyte", np.array([1, 2], np.uint8), gz=True)
    elif case == "missing_batch":
        (batches / "data_batch_4").unlink()
    elif case == "corrupt_batch":
        (batches / "test_batch").write_bytes(b"\x80\x02}q\x00(X")
    elif case == "not_a_batch":
        (batches / "data_batch_2").write_bytes(pickle.dumps({b"data": [1, 2, 3]}, protocol=2))
    elif case == "evil_pickle":
        (batches / "data_batch_1").write_bytes(b"cposix\nsystem\n(S'echo hacked'\ntR.")
    elif case == "no_cifar":
        cifar = tmp_path
    elif case == "no_mnist_dir":
        mnist = tmp_path / "nope"
    elif case == "bad_labels":
        kw["labels"] = "colour"
    elif case == "bad_count":
        kw["num_train"] = -1
    out = tmp_path / "out"
    with pytest.raises(SpikesegError, match=match) as e:
        make_mnist_cifar(mnist, cifar, out, **kw)
    assert "\n" not in str(e.value)
    assert not out.exists()


# --------------------------------------------------------------------------- the dataset


def test_dataset_items_splits_and_resize(generated):
    ds = build_dataset("mnist_cifar", "train", root=str(generated), image_size=(32, 32))
    assert len(ds) == 8 and ds.info.num_classes == 2 and ds.info.in_channels == 3
    assert ds.info.class_names == ["background", "digit"] and not ds.info.temporal
    x, y = ds[0]
    img, lab = _read(generated, "train", 0)
    assert x.dtype == torch.float32 and x.shape == (3, 32, 32)
    assert torch.equal(x, torch.from_numpy(img.copy()).permute(2, 0, 1).float() / 255)
    assert y.dtype == torch.int64 and np.array_equal(y.numpy(), lab)
    val = mnist_cifar("val", generated)
    assert len(val) == 5 and val.pairs[0][0].parent.name == "test"
    assert len(mnist_cifar("test", generated)) == 5
    x16, y16 = mnist_cifar("train", generated, image_size=16)[0]
    assert x16.shape == (3, 16, 16) and y16.shape == (16, 16)
    assert set(np.unique(y16.numpy())) <= {0, 1}
    assert x16.min() >= 0 and x16.max() <= 1


@pytest.mark.parametrize(
    "case, match",
    [
        ("no_root", r"needs data\.root; run `spikeseg data make-mnist-cifar --mnist DIR"),
        ("missing", r"folder not found; run `spikeseg data make-mnist-cifar"),
        ("no_meta", r"no meta\.json\); run `spikeseg data make-mnist-cifar"),
        ("bad_meta", r"meta\.json: not a spikeseg MNIST-on-CIFAR10 description"),
        ("no_list", r"test\.txt: list file not found"),
        ("missing_file", r"train\.txt, line 2: image .*000001\.png not found"),
        ("bad_split", r"unknown split 'trainval'"),
    ],
)
def test_dataset_errors(generated, tmp_path, case, match):
    root = tmp_path / "copy"
    if case not in ("no_root", "missing"):
        shutil.copytree(generated, root)
    split = "val"
    if case == "no_root":
        root = None
    elif case == "no_meta":
        (root / "meta.json").unlink()
    elif case == "bad_meta":
        (root / "meta.json").write_text('{"format": "other"}')
    elif case == "no_list":
        (root / "test.txt").unlink()
    elif case == "missing_file":
        (root / "images" / "train" / "000001.png").unlink()
        split = "train"
    elif case == "bad_split":
        split = "trainval"
    with pytest.raises(SpikesegError, match=match) as e:
        mnist_cifar(split, root)
    assert "\n" not in str(e.value)


def test_label_outside_the_meta_classes_fails_on_access(generated, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(generated, root)
    lab = np.zeros((32, 32), np.uint8)
    lab[3, 4] = 7
    Image.fromarray(lab).save(root / "labels" / "train" / "000002.png")
    ds = mnist_cifar("train", root)
    ds[1]
    with pytest.raises(SpikesegError, match=r"000002\.png: label value 7 outside the 2 classes"):
        ds[2]


def test_cli_makes_the_set_and_trains_one_step(src, tmp_path, capsys):
    out = tmp_path / "set"
    assert main(["data", "make-mnist-cifar", "--mnist", str(src.mnist), "--cifar",
                 str(src.cifar), "--out", str(out), "--num-train", "4", "--num-test", "2",
                 "--no-progress"]) == 0
    assert f"data.root={out}" in capsys.readouterr().out
    assert main(["data", "make-mnist-cifar", "--mnist", str(tmp_path), "--cifar",
                 str(src.cifar), "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    assert "MNIST file train-images-idx3-ubyte[.gz] not found" in capsys.readouterr().err
    runs = tmp_path / "runs"
    sets = [
        "model.name=spiking_deeplab", "model.width=0.125", "model.timesteps=2",
        "data.dataset=mnist_cifar", f"data.root={out}", "data.image_size=32",
        "train.epochs=1", "train.batch_size=2", f"train.out_dir={runs}", "train.name=tiny",
        "train.report=false",
    ]
    argv = ["train", "--no-progress"]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0
    assert (runs / "tiny" / "checkpoints" / "best.safetensors").is_file()
