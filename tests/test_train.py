"""Training: the loss falls, checkpoints round-trip exactly, runs resume, bad input is clear."""

import csv
import json

import pytest
import torch

from spikeseg.config import load_config
from spikeseg.engine import load_checkpoint, save_checkpoint, train
from spikeseg.engine.train import segmentation_loss
from spikeseg.errors import SpikesegError
from spikeseg.models import create

from .conftest import tiny_overrides


@pytest.mark.parametrize("name", ["spiking_deeplab", "spiking_fcn", "deeplab"])
def test_loss_falls_when_fitting_a_batch(name):
    torch.manual_seed(0)
    m = create(name, 3, timesteps=3, width=0.125, **({"encoding": "direct"} if "spiking" in name else {}))
    x = torch.rand(4, 3, 24, 24)
    y = (x.mean(1) > 0.5).long()
    y[:, :2] = 2
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    losses = []
    for _ in range(30):
        loss = segmentation_loss(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5


def test_loss_ignores_label_255():
    logits = torch.randn(1, 3, 2, 2)
    y = torch.tensor([[[0, 1], [255, 255]]])
    ref = torch.nn.functional.cross_entropy(logits.permute(0, 2, 3, 1)[0, 0], y[0, 0])
    assert torch.allclose(segmentation_loss(logits, y), ref)


def test_training_run_writes_everything(tiny_config):
    r = train(tiny_config, progress=False, log=lambda *_: None)
    assert (r.run_dir / "config.yaml").is_file()
    rows = list(csv.DictReader((r.run_dir / "metrics.csv").open()))
    assert [int(row["epoch"]) for row in rows] == [1, 2]
    assert all(0 <= float(row["val_miou"]) <= 1 for row in rows)
    for name in ("epoch_001", "epoch_002", "best", "last"):
        assert (r.run_dir / "checkpoints" / f"{name}.safetensors").is_file()
        meta = json.loads((r.run_dir / "checkpoints" / f"{name}.json").read_text())
        assert meta["model"]["name"] == "spiking_deeplab"
        assert meta["dataset"]["class_names"][0] == "background"
    assert r.best_miou == max(float(row["val_miou"]) for row in rows)
    assert float(rows[1]["lr"]) == pytest.approx(3e-4)  # ÷10 at 50% of 2 epochs


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    for name in ("spiking_fcn", "deeplab"):
        m = create(name, 4, timesteps=3, width=0.125)
        m.train()
        m(torch.rand(2, 3, 32, 32))  # move the running statistics away from their init
        m.eval()
        save_checkpoint(tmp_path / name, m, name, {"epoch": 1})
        m2, meta = load_checkpoint(tmp_path / f"{name}.safetensors")
        assert meta["epoch"] == 1 and meta["model"]["timesteps"] == 3
        x = torch.rand(1, 3, 32, 32)
        g = dict(generator=torch.Generator().manual_seed(0)) if m.spiking else {}
        g2 = dict(generator=torch.Generator().manual_seed(0)) if m.spiking else {}
        assert torch.equal(m(x, **g), m2(x, **g2))


def test_checkpoint_errors(tmp_path):
    with pytest.raises(SpikesegError, match="not found"):
        load_checkpoint(tmp_path / "nope.safetensors")
    m = create("spiking_deeplab", 4, timesteps=2, width=0.125)
    w, meta = save_checkpoint(tmp_path / "a", m, "spiking_deeplab")
    w.write_bytes(b"garbage")
    with pytest.raises(SpikesegError, match="unreadable"):
        load_checkpoint(w)
    # Weights of another model under this metadata.
    other = create("spiking_deeplab", 4, timesteps=2, width=0.25)
    save_checkpoint(tmp_path / "b", other, "spiking_deeplab")
    (tmp_path / "b.json").write_text((tmp_path / "a.json").read_text())
    with pytest.raises(SpikesegError, match="does not fit this model.*another shape"):
        load_checkpoint(tmp_path / "b")
    (tmp_path / "c.json").write_text("{}")
    (tmp_path / "c.safetensors").write_bytes(b"")
    with pytest.raises(SpikesegError, match="not a spikeseg checkpoint"):
        load_checkpoint(tmp_path / "c")


def test_resume_continues_where_it_stopped(tmp_path, data_cache):
    base = tiny_overrides(tmp_path / "runs", data_cache)
    full = train(load_config(None, base + ["train.epochs=3", "train.name=full"]),
                 progress=False, log=lambda *_: None)
    # An interrupted run: stopped (Ctrl-C) after its second epoch was saved, then resumed.
    cut = load_config(None, base + ["train.epochs=3", "train.name=cut"])

    def interrupt_after_epoch_2(line):
        if line.startswith("epoch   2/3"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cut, progress=False, log=interrupt_after_epoch_2)
    again = train(load_config(None, base + ["train.epochs=1", "train.name=cut"]),
                  progress=False, log=lambda *_: None)
    assert again.run_dir.name == "cut-2"  # an existing run is never overwritten
    resumed = train(cut, resume=True, progress=False, log=lambda *_: None)
    rows_full = list(csv.DictReader((full.run_dir / "metrics.csv").open()))
    rows_cut = list(csv.DictReader((resumed.run_dir / "metrics.csv").open()))
    assert [r["epoch"] for r in rows_cut] == ["1", "2", "3"]
    for a, b in zip(rows_full, rows_cut, strict=True):
        assert float(a["train_loss"]) == pytest.approx(float(b["train_loss"]), rel=1e-4)
        assert float(a["val_miou"]) == pytest.approx(float(b["val_miou"]), rel=1e-4)
    with pytest.raises(SpikesegError, match="nothing to resume"):
        train(load_config(None, base + ["train.name=never"]), resume=True, progress=False)


def test_label_outside_class_range_is_a_clear_error(tiny_config, monkeypatch):
    from spikeseg.data import builtin as builtin_module

    orig = builtin_module.BuiltinDigits.__getitem__

    def corrupt(self, i):
        x, y = orig(self, i)
        y[0, 0] = 12  # 11 classes: 0..10
        return x, y

    monkeypatch.setattr(builtin_module.BuiltinDigits, "__getitem__", corrupt)
    with pytest.raises(SpikesegError, match=r"label 12 is outside the classes 0..10"):
        train(tiny_config, progress=False, log=lambda *_: None)


def test_output_layer_gradient_matches_finite_differences():
    """The accumulator output stage is smooth: autograd agrees with finite differences."""
    torch.manual_seed(0)
    m = create("spiking_fcn", 3, timesteps=2, width=0.125, encoding="direct").double().eval()
    frames = torch.rand(1, 3, 16, 16, dtype=torch.float64).expand(2, 1, 3, 16, 16)

    def logits(score1_weight, up3_weight):
        params = {"score1.weight": score1_weight, "up3.weight": up3_weight}
        return torch.func.functional_call(m, params, (frames,))

    inputs = (m.score1.weight.detach().clone().requires_grad_(),
              m.up3.weight.detach().clone().requires_grad_())
    assert torch.autograd.gradcheck(logits, inputs)


def test_checkpoint_names_with_dots_keep_them(tmp_path):
    from spikeseg.engine.checkpoint import checkpoint_paths

    for given in ("run/layer-p99.9", "run/layer-p99.9.safetensors", "run/layer-p99.9.json"):
        w, m = checkpoint_paths(tmp_path / given)
        assert (w.name, m.name) == ("layer-p99.9.safetensors", "layer-p99.9.json")
