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
