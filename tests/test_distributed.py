"""Multi-process training through torchrun (DDP, Gloo backend on CPU)."""

import csv
import json
import os
import subprocess
import sys

import pytest
import torch

from spikeseg.engine.distributed import DistInfo, ShardSampler
from spikeseg.engine.evaluate import evaluate_checkpoint

from .conftest import tiny_overrides


def test_shards_are_disjoint_and_cover_the_data():
    n, world = 23, 3
    for shuffle, drop_last in [(False, False), (True, False), (True, True)]:
        shards = [list(ShardSampler(n, DistInfo(r, world), shuffle=shuffle, seed=1,
                                    drop_last=drop_last)) for r in range(world)]
        flat = [i for s in shards for i in s]
        assert len(flat) == len(set(flat))
        assert len(flat) == (21 if drop_last else 23)
        if drop_last:
            assert len({len(s) for s in shards}) == 1
    a = ShardSampler(10, DistInfo(), shuffle=True, seed=0)
    first = list(a)
    a.set_epoch(1)
    assert sorted(first) == list(range(10)) and list(a) != first


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    sets = []
    for o in tiny_overrides(tmp_path / "runs", tmp_path / "cache") + ["train.batch_size=4"]:
        sets += ["--set", o]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "spikeseg", "train", "--no-progress", *sets],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("validation mIoU") == 1  # only rank 0 reports
    assert "x 2 processes" in r.stdout
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == ["tiny"]  # both processes agreed on one run directory
    rows = list(csv.DictReader((tmp_path / "runs" / "tiny" / "metrics.csv").open()))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    # Sharded validation summed over both processes equals a single-process evaluation.
    ck = tmp_path / "runs" / "tiny" / "checkpoints" / "epoch_002.safetensors"
    meta = json.loads(ck.with_suffix(".json").read_text())
    single, _ = evaluate_checkpoint(ck, progress=False, batch_size=4, device="cpu")
    assert single.num_images == 16
    assert meta["eval"]["miou"] == pytest.approx(single.scores.miou, abs=1e-9)
    assert meta["eval"]["num_images"] == 16
    assert torch.distributed.is_available()


def _train_once(tmp_path, name, nproc, model, batch, optimizer, precision, extra=()):
    from safetensors.torch import load_file

    sets = []
    for o in tiny_overrides(tmp_path / "runs", tmp_path / "cache", model) + [
            f"train.batch_size={batch}", "train.epochs=1", "train.max_steps_per_epoch=2",
            f"train.optimizer={optimizer}", f"train.name={name}", "train.lr=0.05",
            f"train.precision={precision}", *extra]:
        sets += ["--set", o]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = (["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
                if nproc > 1 else [])
    r = subprocess.run([sys.executable, *launcher, "-m", "spikeseg", "train", "--no-progress",
                        *sets], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return load_file(str(tmp_path / "runs" / name / "checkpoints" / "last.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize("model,optimizer,precision", [
    ("spiking_deeplab", "sgd", "fp64"), ("spiking_deeplab", "adam", "fp64"),
    ("deeplab", "sgd", "fp32"), ("deeplab", "adam", "fp64"),
])
def test_two_processes_train_exactly_like_one(model, optimizer, precision, tmp_path):
    """Two steps with 2 processes x batch 4 equal 2 steps with 1 process x batch 8: synchronised
    norm statistics (per timestep for BNTT), per-sample spike trains and a loss normalised by
    the global number of labelled pixels. The SNN and Adam run in fp64: in fp32 the different
    order of the sums lets a membrane within rounding error of the threshold fire in one run
    only, and Adam's first step, g/(|g| + 1e-8), turns rounding differences of gradients near
    zero (dilated taps that read only padding) into differences of the update itself."""
    one = _train_once(tmp_path, "one", 1, model, 8, optimizer, precision)
    two = _train_once(tmp_path, "two", 2, model, 4, optimizer, precision)
    _assert_same_weights(one, two, f"{model} {optimizer} {precision}")


@pytest.mark.slow
def test_two_processes_train_exactly_like_one_with_the_extra_losses(tmp_path):
    """The same with class weights, the Lovász loss (a sum over images) and distillation from
    a teacher (a sum over pixels): each is normalised by the global count, so the split over
    processes still computes one process's step."""
    _train_once(tmp_path, "teacher", 1, "deeplab", 8, "sgd", "fp64")
    extra = ["train.class_weight=inv_sqrt_freq", "train.lovasz_weight=0.5",
             f"train.teacher={tmp_path / 'runs' / 'teacher' / 'checkpoints' / 'last.safetensors'}",
             "train.distill_weight=2", "train.distill_temperature=2"]
    one = _train_once(tmp_path, "one", 1, "spiking_deeplab", 8, "sgd", "fp64", extra)
    two = _train_once(tmp_path, "two", 2, "spiking_deeplab", 4, "sgd", "fp64", extra)
    plain = _train_once(tmp_path, "plain", 1, "spiking_deeplab", 8, "sgd", "fp64")
    _assert_same_weights(one, two, "extra losses")
    assert any(not torch.equal(one[k], plain[k]) for k in one)  # the options were in effect


def _assert_same_weights(one, two, what):
    moved, worst = 0, 0.0
    for k, a in one.items():
        b = two[k]
        if not a.is_floating_point():
            assert torch.equal(a, b), k
            continue
        scale = float(a.abs().max()) or 1.0
        worst = max(worst, float((a - b).abs().max()) / scale)
        assert float((a - b).abs().max()) <= 1e-5 * scale, (k, float((a - b).abs().max()), scale)
        moved += "running" in k
    assert moved > 0  # BN statistics were compared
    print(f"{what}: largest relative difference {worst:.2e}")
