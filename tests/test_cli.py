"""The CLI end to end on a tiny config, and its one-line errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from spikeseg.cli import format_table, main

from .conftest import sets as _sets
from .conftest import tiny_overrides


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run through `spikeseg train` (shared by the tests of this module)."""
    root = tmp_path_factory.mktemp("cli")
    cfg = root / "tiny.yaml"
    cfg.write_text("model:\n  name: spiking_deeplab\ntrain:\n  seed: 1\n")
    cache = tmp_path_factory.getbasetemp() / "builtin-cache-cli"
    code = main(["train", "--config", str(cfg), "--no-progress",
                 *_sets(tiny_overrides(root / "runs", cache))])
    assert code == 0
    return root, root / "runs" / "tiny" / "checkpoints" / "best.safetensors"


def test_train_prints_miou_and_outputs(trained, capsys):
    root, ck = trained
    assert ck.is_file()


def test_train_output_lines(tmp_path, capsys):
    code = main(["train", "--no-progress",
                 *_sets(tiny_overrides(tmp_path / "runs", tmp_path / "cache", "fcn")),
                 "--set", "train.epochs=1"])
    out = capsys.readouterr().out
    assert code == 0
    assert "validation mIoU" in out and "all-background baseline" in out
    assert "outputs: " in out and "background" in out  # the per-class table


def test_evaluate(trained, capsys, tmp_path):
    _, ck = trained
    out_json = tmp_path / "scores.json"
    assert main(["evaluate", "--checkpoint", str(ck), "--timesteps", "3", "--no-progress",
                 "--out", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "mIoU" in out and "(T=3)" in out
    scores = json.loads(out_json.read_text())
    assert scores["timesteps"] == 3 and 0 <= scores["miou"] <= 1
    assert set(scores["iou"]) == {"background", *map(str, range(10))}


def test_predict_writes_masks_and_pairs(trained, tmp_path, capsys):
    _, ck = trained
    img = (np.random.default_rng(0).random((45, 70, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "photo.jpg")
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(ck), str(tmp_path / "photo.jpg"),
                 "--out", str(out)]) == 0
    mask = Image.open(out / "photo_mask.png")
    assert mask.mode == "P" and mask.size == (70, 45)
    assert np.asarray(mask).max() <= 10
    pair = Image.open(out / "photo_pair.png")
    assert pair.width >= 140 and pair.height > 45  # image | mask, with the legend below
    assert "1 prediction(s) written" in capsys.readouterr().out


def test_models_lists_parameter_counts(capsys):
    assert main(["models", "--num-classes", "21"]) == 0
    out = capsys.readouterr().out
    for name in ("spiking_deeplab", "spiking_fcn", "deeplab", "fcn"):
        assert name in out
    assert "4.16 M" in out  # Spiking-DeepLab at full width, 21 classes


@pytest.mark.parametrize("argv,message", [
    (["train", "--set", "train.lrr=1"], "unknown key 'train.lrr'"),
    (["train", "--config", "/nonexistent.yaml"], "config file /nonexistent.yaml not found"),
    (["evaluate", "--checkpoint", "/nonexistent/best.safetensors"], "checkpoint /nonexistent/best.safetensors not found"),
    (["train", "--set", "model.name=unet"], "unknown model 'unet'"),
    (["train", "--set", "data.dataset=coco"], "unknown dataset 'coco'"),
    (["train", "--set", "data.options={num_trian: 3}"], "dataset 'builtin' has no option 'num_trian'"),
])
def test_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("spikeseg: error: ") and message in err
    assert "\n" not in err and "Traceback" not in err


def test_unreadable_image_is_one_line(trained, tmp_path, capsys):
    _, ck = trained
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    assert main(["predict", "--checkpoint", str(ck), str(bad), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"spikeseg: error: input image {bad} is unreadable")
    assert "\n" not in err


def test_no_traceback_from_the_real_command(tmp_path):
    r = subprocess.run([sys.executable, "-m", "spikeseg", "evaluate", "--checkpoint",
                        str(tmp_path / "x.safetensors")], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "not found" in r.stderr


def test_format_table():
    t = format_table([("a", 0.5), ("bb", float("nan"))], ["name", "v"])
    assert t.splitlines() == ["name  v", "----  ------", "a     0.5000", "bb         -"]


def test_train_can_end_with_the_report(tmp_path, capsys):
    code = main(["train", "--no-progress",
                 *_sets(tiny_overrides(tmp_path / "runs", tmp_path / "cache")),
                 "--set", "train.epochs=1", "--set", "train.report=true"])
    out = capsys.readouterr().out
    assert code == 0
    assert (tmp_path / "runs" / "tiny" / "report" / "report.md").is_file()
    assert "spike rates (eq. 8)" in out and "report/report.md" in out


def test_export_commands(trained, tmp_path, capsys):
    """spikeseg export: NIR refuses the BNTT model with the option to use, ONNX writes it."""
    _, ck = trained
    assert main(["export", "--checkpoint", str(ck), "--format", "nir",
                 "--out", str(tmp_path / "m.nir")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("spikeseg: error:") and "model.norm=bn" in err
    pytest.importorskip("onnx")
    assert main(["export", "--checkpoint", str(ck), "--format", "onnx", "--legacy-exporter",
                 "--out", str(tmp_path / "m.onnx")]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "m.onnx").is_file() and "input: " in out and "left out:" in out


def test_import_original_command(tmp_path, capsys):
    from .test_import_original import _save, make_original

    state = make_original("dl-vgg9", "snn", T=2)
    orig = _save(tmp_path, state)
    out = tmp_path / "imported"
    assert main(["import-original", "--checkpoint", str(orig), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "spiking_deeplab" in printed and (tmp_path / "imported.safetensors").is_file()
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    assert main(["import-original", "--checkpoint", str(bad), "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith("spikeseg: error:")
