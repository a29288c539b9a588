"""Pictures a person would put in a paper: class colours that can be told apart, prediction
pictures with a legend, 16-bit images read at their real brightness, event inputs drawn with
their polarities, and plots whose ticks and legends sit where a reader expects them."""

from __future__ import annotations

import itertools
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spikeseg.analysis import plots
from spikeseg.analysis.report import _picture, write_report
from spikeseg.analysis.sweeps import SweepPoint
from spikeseg.config import load_config
from spikeseg.data import builtin, builtin_events, ddd17, dsec, mnist_cifar, voc  # noqa: F401
from spikeseg.data.base import (
    IGNORE_COLOUR,
    IGNORE_INDEX,
    TABLEAU_10,
    DatasetInfo,
    categorical_palette,
    dataset_palette,
    srgb_to_lab,
    voc_palette,
)
from spikeseg.data.transforms import read_image
from spikeseg.engine import train
from spikeseg.errors import SpikesegError
from spikeseg.predict import format_summary, legend_picture, predict_files
from spikeseg.predict import read_image as predict_read_image

from .conftest import tiny_overrides

# --------------------------------------------------------------------------- palettes

MIN_DELTA_E = 20.0
"""Smallest CIE76 colour difference between two classes of a palette spikeseg chooses. One
just-noticeable difference is about ΔE 2.3 (Sharma, "Digital Color Imaging Handbook", 2003);
20 is some nine of them, a difference seen at a glance in small regions of a mask, and well
below Tableau 10's own closest pair (purple/pink, 27.7), so the bound tests the construction
rather than a lucky draw. The VOC colour map fails it (bus/motorbike: 8.8)."""

PUBLISHED_FLOOR = {  # kept as published: the bound pins them to the published minimum
    "voc": 8.0,  # (0,128,128) bus vs (64,128,128) motorbike
    "ddd17": 40.0,  # Cityscapes categories
    "dsec-11": 15.0,  # ESS: fence (190,153,153) vs pole (153,153,153)
    "dsec-19": 15.0,  # Cityscapes: the same pair
}


def _min_delta_e(colours: np.ndarray) -> tuple[float, int, int]:
    lab = srgb_to_lab(colours)
    d, i, j = min((float(np.linalg.norm(lab[i] - lab[j])), i, j)
                  for i, j in itertools.combinations(range(len(colours)), 2))
    return d, i, j


def test_srgb_to_lab_matches_reference_values():
    # CIE L*a*b* (D65) of sRGB primaries, as colour-science tables give them
    lab = srgb_to_lab(np.array([[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 0, 255]]))
    np.testing.assert_allclose(lab[0], [100, 0, 0], atol=0.01)
    np.testing.assert_allclose(lab[1], [0, 0, 0], atol=0.01)
    np.testing.assert_allclose(lab[2], [53.24, 80.09, 67.20], atol=0.05)
    np.testing.assert_allclose(lab[3], [32.30, 79.19, -107.86], atol=0.05)


@pytest.mark.parametrize("name", ["builtin", "builtin_events", "mnist_cifar"])
def test_generated_datasets_have_colours_a_reader_tells_apart(name):
    n = {"mnist_cifar": 2}.get(name, 11)
    pal = dataset_palette(name, n)
    d, i, j = _min_delta_e(pal[:n])
    assert d >= MIN_DELTA_E, f"{name}: classes {i} and {j} are only ΔE {d:.1f} apart"
    assert tuple(pal[0]) == (0, 0, 0)  # background: black, which no class uses
    assert tuple(pal[IGNORE_INDEX]) == IGNORE_COLOUR
    ign = srgb_to_lab(np.array(IGNORE_COLOUR))
    assert np.linalg.norm(srgb_to_lab(pal[:n]) - ign, axis=1).min() >= MIN_DELTA_E


def test_builtin_palette_is_tableau_10_after_a_black_background():
    p = dataset_palette("builtin", 11)
    assert [tuple(c) for c in p[1:11]] == list(TABLEAU_10)
    # the review's complaints: digits 0, 7, 8 were three reds, 1 and 9 two greens
    lab = srgb_to_lab(p[:11])
    for a, b in ((1, 8), (1, 9), (8, 9), (2, 10), (0, 8)):
        assert np.linalg.norm(lab[a] - lab[b]) >= MIN_DELTA_E


@pytest.mark.parametrize("n", [2, 11, 21, 32, 48, 64])
def test_categorical_palette_stays_apart_as_classes_grow(n):
    p = categorical_palette(n)
    assert p.shape == (256, 3) and p.dtype == np.uint8
    d, i, j = _min_delta_e(p[:n])
    assert d >= MIN_DELTA_E, (n, i, j, d)
    np.testing.assert_array_equal(p[:n], categorical_palette(300)[:n])  # prefix-stable
    assert categorical_palette(300).shape == (300, 3)


@pytest.mark.parametrize("key", sorted(PUBLISHED_FLOOR))
def test_published_palettes_are_kept(key):
    if key == "voc":
        pal, n = dataset_palette("voc", 21), 21
        np.testing.assert_array_equal(pal, voc_palette(21))
        assert tuple(pal[1]) == (128, 0, 0) and tuple(pal[15]) == (192, 128, 128)  # person
    elif key == "ddd17":
        pal, n = ddd17._ddd17_palette(), ddd17.NUM_CLASSES
        np.testing.assert_array_equal(pal[:n], np.array(ddd17.CLASS_COLOURS))
    else:
        n = int(key.split("-")[1])
        pal = dataset_palette("dsec", n)
        np.testing.assert_array_equal(pal[:n], np.array(dsec.CLASSES[n][1]))
    d, i, j = _min_delta_e(pal[:n])
    assert d >= PUBLISHED_FLOOR[key], (key, i, j, d)
    assert tuple(pal[IGNORE_INDEX]) == IGNORE_COLOUR


def test_unknown_datasets_get_the_default_palette():
    np.testing.assert_array_equal(dataset_palette("mine", 5), categorical_palette(5))
    np.testing.assert_array_equal(dataset_palette(None, 5), categorical_palette(5))
    info = DatasetInfo("mine", 3, ["a", "b", "c"], 3)
    np.testing.assert_array_equal(info.palette, categorical_palette(3))
    assert info.on_off_channels is None


# --------------------------------------------------------------------------- 16-bit images


def _png16_rgb(path: Path, rgb: np.ndarray) -> None:
    """Write a 48-bit RGB PNG by hand (Pillow cannot write 16 bits per channel)."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2,
                                                                       0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_16_bit_grey_is_rescaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 61380, 64 * 32).round().astype(np.uint16).reshape(32, 64)
    src = Image.fromarray(ramp)  # uint16 -> Pillow's 16-bit grey mode
    assert src.mode == "I;16"
    src.save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as im:
        assert im.mode == "I;16"  # what the file holds
    rgb = read_image(tmp_path / "g16.png")
    assert rgb.shape == (32, 64, 3) and rgb.dtype == np.uint8
    want = np.rint(ramp / 257.0).astype(np.uint8)
    for c in range(3):
        np.testing.assert_array_equal(rgb[..., c], want)
    assert (rgb == 255).mean() < 0.01  # Pillow's convert("RGB") alone: 99.5% white
    np.testing.assert_array_equal(read_image(tmp_path / "g16.png", "L"), want)
    full = np.array([[0, 257, 65535]], dtype=np.uint16)
    Image.fromarray(full).save(tmp_path / "ends.png")
    assert read_image(tmp_path / "ends.png", "L").tolist() == [[0, 1, 255]]


def test_32_bit_grey_is_rescaled_by_its_range(tmp_path):
    wide = np.array([[0, 2**30, 2**31 - 1]], dtype=np.int32)
    Image.fromarray(wide).save(tmp_path / "i32.tif")
    with Image.open(tmp_path / "i32.tif") as im:
        assert im.mode == "I"
    assert read_image(tmp_path / "i32.tif", "L").tolist() == [[0, 128, 255]]
    narrow = np.array([[0, 257, 65535]], dtype=np.int32)  # 16-bit data in a 32-bit image
    Image.fromarray(narrow).save(tmp_path / "i16in32.tif")
    assert read_image(tmp_path / "i16in32.tif", "L").tolist() == [[0, 1, 255]]


def test_16_bit_rgb_and_8_bit_modes_still_read(tmp_path):
    rgb16 = np.zeros((4, 5, 3), dtype=np.uint16)
    rgb16[..., 0] = 65535
    rgb16[..., 1] = np.arange(5) * 16384 % 65536
    _png16_rgb(tmp_path / "rgb16.png", rgb16)
    got = read_image(tmp_path / "rgb16.png")
    assert got.dtype == np.uint8 and (got[..., 0] == 255).all()
    np.testing.assert_allclose(got[..., 1], rgb16[..., 1] / 257.0, atol=1)
    rgba = np.zeros((3, 4, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0  # fully transparent red: alpha is dropped
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    assert read_image(tmp_path / "rgba.png")[..., 0].tolist() == [[200] * 4] * 3
    grey = (np.arange(12, dtype=np.uint8) * 20).reshape(3, 4)
    Image.fromarray(grey, mode="L").save(tmp_path / "l.png")
    np.testing.assert_array_equal(read_image(tmp_path / "l.png"), np.stack([grey] * 3, -1))
    np.testing.assert_array_equal(read_image(tmp_path / "l.png", "L"), grey)


def test_predict_read_image_errors_are_one_line(tmp_path, monkeypatch):
    with pytest.raises(SpikesegError, match="input image .* not found; check the path"):
        predict_read_image(tmp_path / "nope.png")
    with pytest.raises(SpikesegError, match="is a folder"):
        predict_read_image(tmp_path)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(SpikesegError, match=r"input image .*bad\.png is unreadable"):
        predict_read_image(bad)
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1600 px > 2x: a "bomb"
    with pytest.raises(SpikesegError, match="input image .*big.png is unreadable") as e:
        predict_read_image(tmp_path / "big.png")
    assert "\n" not in str(e.value)


# --------------------------------------------------------------------------- predict


def test_summary_quotes_class_names():
    s = format_summary({"1": 0.02, "background": 0.978, "8": 0.001, "9": 0.0})
    assert s == "'background' 98%, '1' 2%, '8' <1%, '9' 0%"
    assert format_summary({"a": 0.996, "b'": 0.004}, top=1) == "'a' >99%"
    assert format_summary({"it's": 1.0}) == "\"it's\" 100%"


def test_legend_picture_draws_each_colour_and_wraps():
    entries = [(f"class {i}", tuple(int(v) for v in c)) for i, c in enumerate(TABLEAU_10)]
    pic = legend_picture(entries, 200, font_size=14)
    assert pic.shape[1] == 200 and pic.shape[0] > 3 * 14  # wrapped into several rows
    colours = {tuple(c) for c in pic.reshape(-1, 3)}
    assert all(tuple(c) in colours for c in TABLEAU_10)
    one = legend_picture([("a very long class name indeed", (255, 0, 0))], 40)
    assert one.shape[1] > 40  # widened to fit its only entry


@pytest.fixture(scope="module")
def snn_checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("pictures")
    cache = tmp_path_factory.getbasetemp() / "builtin-cache-pictures"
    cfg = load_config(None, tiny_overrides(root / "runs", cache, "spiking_deeplab")
                      + ["train.name=snn", "train.epochs=1", "train.report=false"])
    return root, train(cfg, progress=False, log=lambda *_: None).best_checkpoint


def test_predict_pair_has_a_legend_and_records_a_summary(snn_checkpoint, tmp_path):
    _, ck = snn_checkpoint
    img = (np.random.default_rng(0).random((45, 70, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "photo.png")
    (rec,) = predict_files(ck, [tmp_path / "photo.png"], tmp_path / "out", device="cpu")
    assert rec["summary"] == format_summary(rec["classes"])
    assert all(f"'{k}'" in rec["summary"] for k in rec["classes"])
    mask = np.asarray(Image.open(rec["mask"]))
    pal = dataset_palette("builtin", 11)
    with Image.open(rec["mask"]) as m:  # the mask PNG carries the dataset's colours
        np.testing.assert_array_equal(np.array(m.getpalette()[:33]).reshape(11, 3), pal[:11])
    pair = np.asarray(Image.open(rec["pair"]).convert("RGB"))
    k = -(-320 // 140)  # enlarged to at least 320 px wide
    assert pair.shape[1] == 140 * k and pair.shape[0] > 45 * k
    np.testing.assert_array_equal(pair[: 45 * k : k, : 70 * k : k], img)
    np.testing.assert_array_equal(pair[: 45 * k : k, 70 * k :: k], pal[mask])
    legend = {tuple(c) for c in pair[45 * k :].reshape(-1, 3)}
    for c in np.unique(mask):
        assert tuple(pal[c]) in legend  # a swatch of every predicted class


# --------------------------------------------------------------------------- event pictures


def test_event_pictures_draw_on_red_and_off_blue():
    x = torch.zeros(3, 2, 4, 4)  # [T, C, H, W] count frames: channel 0 OFF, 1 ON
    x[:, 1, 0, 0] = 2.0  # ON events at (0, 0)
    x[:, 0, 3, 3] = 1.0  # OFF events at (3, 3)
    info = DatasetInfo("builtin_events", 11, builtin_events.CLASS_NAMES, 2, temporal=True,
                       on_off_channels=(1, 0))
    pic = _picture(x, info)
    assert pic.shape == (4, 4, 3)
    assert pic[0, 0, 0] == 255 and pic[0, 0, 2] == 0  # ON: red
    assert pic[3, 3, 2] > 0 and pic[3, 3, 0] == 0  # OFF: blue
    ddd = DatasetInfo("ddd17", 6, ddd17.CLASS_NAMES, 2, temporal=True, on_off_channels=(0, 1))
    assert _picture(x, ddd)[0, 0, 2] == 255  # DDD17 stores ON first: channel 1 is OFF there
    # min-max normalised counts (empty = -0.5) still draw empty pixels black
    assert _picture(x - 0.5, info)[1, 1].tolist() == [0, 0, 0]
    # voxel grids: signed sums, positive red, negative blue
    vox = torch.zeros(2, 3, 4, 4)
    vox[:, :, 1, 2] = 0.5
    vox[:, :, 2, 1] = -0.5
    vinfo = DatasetInfo("builtin_events", 11, builtin_events.CLASS_NAMES, 3, temporal=True)
    v = _picture(vox, vinfo)
    assert v[1, 2].tolist() == [255, 0, 0] and v[2, 1].tolist() == [0, 0, 255]
    rgb = torch.rand(3, 4, 4)
    np.testing.assert_array_equal(_picture(rgb, DatasetInfo("builtin", 11,
                                                           builtin.CLASS_NAMES, 3)),
                                  (rgb.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


# --------------------------------------------------------------------------- plots


@pytest.fixture
def figures(monkeypatch):
    """Keep the figures the plot functions make (instead of closing them)."""
    kept = []

    def keep(fig, path):
        kept.append(fig)
        fig.canvas.draw()
        return Path(path)

    monkeypatch.setattr(plots, "_save", keep)
    yield kept
    import matplotlib.pyplot as plt

    for f in kept:
        plt.close(f)


def _no_overlap(fig, ax):
    renderer = fig.canvas.get_renderer()
    leg = ax.get_legend() or (fig.legends[0] if fig.legends else None)
    return leg is None or not leg.get_window_extent(renderer).overlaps(
        ax.get_window_extent(renderer))


def test_timestep_plot_has_integer_ticks_at_the_measured_t(figures):
    pytest.importorskip("matplotlib")
    pts = [SweepPoint(t, 0.1 * i, 0.5) for i, t in enumerate([2, 3, 4, 8, 16], 1)]
    plots.plot_sweep({"SNN": pts}, "unused.png", trained_timesteps=4, ann_miou=0.6)
    (fig,) = figures
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert list(ax.get_xticks()) == [2, 3, 4, 8, 16]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2", "3", "4", "8", "16"]
    assert len(ax.xaxis.get_minorticklocs()) == 0  # no "2×10⁰"-style minor labels
    assert _no_overlap(fig, ax)


@pytest.mark.parametrize("kind", ["robustness", "class_iou", "spike_rates"])
def test_legends_sit_beside_the_data(figures, kind):
    pytest.importorskip("matplotlib")
    if kind == "robustness":
        curves = {m: [{"level": q, "drop_percent": 100 * q} for q in (0, 0.05, 0.1)]
                  for m in ("SNN", "ANN")}
        plots.plot_robustness(curves, "unused.png", xlabel="salt-and-pepper fraction q")
        ax = figures[0].axes[0]
        assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "0.05", "0.1"]
    elif kind == "class_iou":
        names = ["background"] + [str(d) for d in range(10)]
        plots.plot_class_iou(names, {"SNN": [0.9] * 11, "ANN": [np.nan] + [0.5] * 10},
                             "unused.png")
        ax = figures[0].axes[0]
        assert [t.get_text() for t in ax.get_xticklabels()] == names
    else:
        plots.plot_spike_rates({f"features.{i}.act": 0.1 * i for i in range(4)}, "unused.png")
        ax = figures[0].axes[0]
        assert [t.get_text() for t in ax.get_xticklabels()][0] == "features.0"
    assert _no_overlap(figures[0], ax)
    for label in ax.get_xticklabels() + ax.get_yticklabels():
        assert label.get_fontsize() >= 9


# --------------------------------------------------------------------------- report


def test_report_adds_blur_and_salt_and_pepper(snn_checkpoint):
    root, ck = snn_checkpoint
    out = root / "report"
    r = write_report(ck, out, sigmas=(0.0, 0.1), blur_sigmas=(0.0, 1.0),
                     salt_pepper=(0.0, 0.1), timesteps=[1, 2], num_pictures=2, device="cpu",
                     progress=False)
    for f in ("robustness.png", "robustness_blur.png", "robustness_salt_pepper.png",
              "timesteps.png", "predictions.png", "class_iou.png", "spike_rates.png"):
        assert (out / f).is_file(), f
        img = np.asarray(Image.open(out / f).convert("L"))
        assert min(img.shape) >= 300 and img.std() > 5, f
    saved = json.loads((out / "report.json").read_text())
    assert saved["files"]["robustness_blur"] == "robustness_blur.png"
    assert [p["sigma"] for p in saved["robustness"]["SNN"]] == [0.0, 0.1]  # unchanged key
    blur = saved["corruptions"]["gaussian_blur"]
    assert blur["input"] == "images" and [p["level"] for p in blur["curves"]["SNN"]] == [0, 1]
    assert blur["curves"]["SNN"][0]["miou"] == pytest.approx(saved["snn"]["miou"])
    assert saved["corruptions"]["salt_pepper"]["curves"]["SNN"][1]["level"] == 0.1
    assert r["dataset"]["input"] == "images"
    md = (out / "report.md").read_text()
    assert "## Gaussian blur: mIoU (relative drop)" in md and "| SNN |" in md
    assert "## Salt-and-pepper noise: mIoU (relative drop)" in md
    assert "robustness_salt_pepper.png" in (out / "report.html").read_text()
    none = write_report(ck, root / "plain", sigmas=(0.0,), blur_sigmas=None, salt_pepper=(),
                        timesteps=[2], num_pictures=1, device="cpu", progress=False)
    assert none["corruptions"] == {} and "robustness_blur" not in none["files"]
