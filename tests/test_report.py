"""Timestep sweeps and the one-command report."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from spikeseg import models
from spikeseg.analysis import timestep_sweep
from spikeseg.cli import main
from spikeseg.config import load_config
from spikeseg.engine import train
from spikeseg.errors import SpikesegError

from .conftest import tiny_overrides

REPORT_FILES = ["report.json", "report.md", "report.html", "class_iou.png", "spike_rates.png",
                "robustness.png", "timesteps.png", "predictions.png"]


def test_streaming_checkpoints_equal_separate_runs():
    m = models.create("spiking_fcn", 3, timesteps=4, width=0.125).eval()
    x = torch.rand(2, 3, 32, 32)
    out = m.forward_checkpoints(x, [9, 2, 5], generator=torch.Generator().manual_seed(0))
    assert sorted(out) == [2, 5, 9]
    for T, logits in out.items():
        ref = m(x, timesteps=T, generator=torch.Generator().manual_seed(0))
        assert torch.allclose(logits, ref, atol=1e-6)
    frames = (torch.rand(6, 2, 3, 32, 32) < 0.5).float()
    ev = m.forward_checkpoints(frames, [3, 6])
    assert torch.allclose(ev[6], m(frames), atol=1e-6)
    with pytest.raises(ValueError, match="6 frames given"):
        m.forward_checkpoints(frames, [7])


def test_timestep_sweep_scores_each_window():
    m = models.create("spiking_deeplab", 2, timesteps=2, width=0.125)
    x = torch.rand(4, 3, 16, 16)
    loader = DataLoader(TensorDataset(x, (x[:, 0] > 0.5).long()), batch_size=2)
    pts = timestep_sweep(m, loader, [4, 1, 2], progress=False)
    assert [p.timesteps for p in pts] == [1, 2, 4]
    assert all(0 <= p.miou <= 1 for p in pts)


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    cache = tmp_path_factory.getbasetemp() / "builtin-cache-report"
    out = {}
    for name in ("spiking_deeplab", "deeplab"):
        cfg = load_config(None, tiny_overrides(root / "runs", cache, name)
                          + [f"train.name={name}", "train.epochs=1"])
        out[name] = train(cfg, progress=False, log=lambda *_: None).best_checkpoint
    return root, out


def test_report_writes_every_file(twins, capsys):
    root, ck = twins
    out = root / "rep"
    assert main(["report", "--checkpoint", str(ck["spiking_deeplab"]), "--ann-checkpoint",
                 str(ck["deeplab"]), "--out", str(out), "--sigmas", "0,0.2",
                 "--timesteps", "1,2,4", "--pictures", "3", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "E_ANN/E_SNN" in printed and "report written to" in printed
    for f in REPORT_FILES:
        assert (out / f).is_file(), f
    for png in [f for f in REPORT_FILES if f.endswith(".png")]:
        img = np.asarray(Image.open(out / png).convert("L"))
        assert img.shape[0] >= 300 and img.shape[1] >= 300, (png, img.shape)
        assert img.std() > 5, png  # not a blank picture
    r = json.loads((out / "report.json").read_text())
    assert r["ann"] is not None and 0 <= r["snn"]["miou"] <= 1
    assert [p["timesteps"] for p in r["timestep_sweep"]] == [1, 2, 4]
    assert [p["sigma"] for p in r["robustness"]["ANN"]] == [0.0, 0.2]
    assert r["robustness"]["SNN"][0]["drop_percent"] == 0.0
    assert r["energy"]["ratio_ann_over_snn"] > 0
    assert len(r["spike_rates"]) == 8  # the LIF layers of Spiking-DeepLab
    md = (out / "report.md").read_text()
    assert "E_ANN / E_SNN" in md and "![" in md
    assert "<table>" in (out / "report.html").read_text()


def test_report_refuses_mismatched_inputs(twins, tmp_path):
    _, ck = twins
    with pytest.raises(SpikesegError, match="is an ANN"):
        from spikeseg.analysis.report import write_report

        write_report(ck["deeplab"], tmp_path, progress=False)
    assert main(["report", "--checkpoint", str(ck["spiking_deeplab"]), "--ann-checkpoint",
                 str(ck["spiking_deeplab"]), "--out", str(tmp_path)]) == 2


def test_window_sweep_reads_the_last_t_frames_for_each_t():
    """On event data a sweep point T sees the T frames ending at the label: one run per T,
    each on samples built for T, scored as a separate evaluation of those samples."""
    from spikeseg.analysis.sweeps import window_sweep
    from spikeseg.engine.evaluate import evaluate

    m = models.create("spiking_deeplab", 3, in_channels=2, timesteps=4, width=0.125).eval()
    g = torch.Generator().manual_seed(0)
    video = (torch.rand(4, 6, 2, 16, 16, generator=g) < 0.3).float()  # [N, frames, C, H, W]
    labels = torch.randint(0, 3, (4, 16, 16), generator=g)
    built = []

    def make_loader(t):
        built.append(t)
        return DataLoader(TensorDataset(video[:, -t:], labels), batch_size=2)

    pts = window_sweep(m, make_loader, [4, 1, 2], progress=False)
    assert [p.timesteps for p in pts] == [1, 2, 4] and built == [1, 2, 4]
    for p in pts:
        ref = evaluate(m, make_loader(p.timesteps), progress=False)
        assert p.miou == pytest.approx(ref.scores.miou)


def test_report_on_event_data(tmp_path, capsys):
    """The whole event pipeline: train an SNN and its ANN twin on the built-in event set, then
    report; each sweep point reads the T frames ending at the label."""
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    common = ["--no-progress", "--set", "model.width=0.125", "--set", "model.timesteps=2",
              "--set", "data.dataset=builtin_events", "--set", f"data.root={cache}",
              "--set", "data.image_size=24", "--set", "data.options={num_train: 8, num_val: 4}",
              "--set", "train.epochs=1", "--set", "train.batch_size=4",
              "--set", f"train.out_dir={runs}", "--set", "train.report=false"]
    for model in ("spiking_deeplab", "deeplab"):
        assert main(["train", *common, "--set", f"model.name={model}",
                     "--set", f"train.name={model}"]) == 0
    out = tmp_path / "rep"
    assert main(["report", "--checkpoint", str(runs / "spiking_deeplab/checkpoints/best"),
                 "--ann-checkpoint", str(runs / "deeplab/checkpoints/best"), "--out", str(out),
                 "--timesteps", "1,2,3", "--sigmas", "0,0.1", "--pictures", "2",
                 "--no-progress"]) == 0
    r = json.loads((out / "report.json").read_text())
    assert [p["timesteps"] for p in r["timestep_sweep"]] == [1, 2, 3]
    assert r["dataset"]["name"] == "builtin_events" and r["ann"] is not None
    for f in REPORT_FILES:
        assert (out / f).is_file(), f
    with Image.open(out / "predictions.png") as im:
        assert im.width > 200 and im.height > 100


def test_report_sweeps_only_windows_that_hold_whole_frames(tmp_path):
    """With ``steps_per_frame = 2`` a window of T steps is T/2 frames held twice: the default
    sweep (T/4 .. 4T) keeps the windows of whole frames only, and the T-step row agrees with
    the evaluation at the trained T."""
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    assert main(["train", "--no-progress", "--set", "model.width=0.125",
                 "--set", "model.timesteps=4", "--set", "data.dataset=builtin_events",
                 "--set", f"data.root={cache}", "--set", "data.image_size=24",
                 "--set", "data.options={num_train: 8, num_val: 4, steps_per_frame: 2}",
                 "--set", "train.epochs=1", "--set", "train.batch_size=4",
                 "--set", f"train.out_dir={runs}", "--set", "train.report=false",
                 "--set", "train.name=held"]) == 0
    out = tmp_path / "rep"
    assert main(["report", "--checkpoint", str(runs / "held/checkpoints/best"), "--out",
                 str(out), "--sigmas", "0", "--pictures", "1", "--no-progress"]) == 0
    r = json.loads((out / "report.json").read_text())
    assert [p["timesteps"] for p in r["timestep_sweep"]] == [2, 4, 8, 16]
    at_t = next(p for p in r["timestep_sweep"] if p["timesteps"] == 4)
    assert at_t["miou"] == pytest.approx(r["snn"]["miou"])


def test_every_evaluation_path_gives_the_same_score_at_the_trained_T(twins, tmp_path, capsys):
    """The run's validation, `evaluate`, the report's score and its T sweep at the trained T
    code each sample with the same Poisson stream (keyed by seed and sample index), so they
    agree exactly, for any batch size."""
    from spikeseg.engine import evaluate_checkpoint
    from spikeseg.engine.checkpoint import read_metadata

    root, ck = twins
    snn = ck["spiking_deeplab"]
    recorded = read_metadata(snn)["eval"]["miou"]
    for batch in (3, 16):
        result, _ = evaluate_checkpoint(snn, batch_size=batch, progress=False, device="cpu")
        assert result.scores.miou == recorded
    out = tmp_path / "rep"
    assert main(["report", "--checkpoint", str(snn), "--out", str(out), "--sigmas", "0",
                 "--blur-sigmas", "", "--salt-pepper", "", "--timesteps", "1,2,3",
                 "--pictures", "1", "--batch-size", "5", "--no-progress"]) == 0
    capsys.readouterr()
    report = json.loads((out / "report.json").read_text())
    T = report["snn"]["timesteps"]
    sweep = {p["timesteps"]: p["miou"] for p in report["timestep_sweep"]}
    assert report["snn"]["miou"] == recorded == sweep[T]
    assert report["robustness"]["SNN"][0]["miou"] == recorded  # σ = 0
