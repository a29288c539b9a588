"""`spikeseg data info`: split sizes, class histogram and sample shapes of any dataset."""

import json

import numpy as np

from spikeseg.cli import main
from spikeseg.data.info import dataset_summary


def test_summary_counts_every_labelled_pixel(data_cache):
    r = dataset_summary("builtin", str(data_cache), image_size=32,
                        options={"num_train": 32, "num_val": 16}, max_samples=None,
                        progress=False)
    assert r["num_classes"] == 11 and r["in_channels"] == 3 and not r["temporal"]
    train, val = r["splits"]
    assert (train["size"], val["size"]) == (32, 16) and train["scanned"] == 32
    assert sum(train["class_pixels"].values()) + train["ignored_pixels"] == 32 * 32 * 32
    assert train["input_shape"] == [3, 32, 32] and train["label_dtype"] == "int64"
    assert 0.0 <= train["input_range"][0] <= train["input_range"][1] <= 1.0
    assert np.isclose(sum(val["class_fraction"].values()), 1.0)


def test_summary_samples_evenly_when_capped(data_cache):
    r = dataset_summary("builtin", str(data_cache), splits=["val"], image_size=32,
                        options={"num_train": 32, "num_val": 16}, max_samples=5,
                        progress=False)
    assert r["splits"][0]["scanned"] == 5


def test_cli_data_info(data_cache, tmp_path, capsys):
    out = tmp_path / "info.json"
    assert main(["data", "info", "--dataset", "builtin", "--root", str(data_cache),
                 "--image-size", "32", "--option", "num_train=32", "--option", "num_val=16",
                 "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "11 classes" in text and "background" in text and "3x32x32" in text
    assert json.loads(out.read_text())["splits"][1]["size"] == 16


def test_cli_data_info_errors(tmp_path, capsys):
    assert main(["data", "info", "--dataset", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown dataset 'nope'" in err
    assert main(["data", "info", "--dataset", "builtin", "--option", "novalue"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
