"""A run killed at any point resumes bit-identical; SIGTERM saves; one writer; divergence stops.

Each interrupted run is a subprocess that kills itself at a chosen point (an optimizer step,
or just before a given file is renamed into place), then ``spikeseg train --resume`` finishes
it; its final weights must equal those of an uninterrupted run bit for bit.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from spikeseg.engine.rundir import RunLock

from .conftest import tiny_overrides

pytestmark = pytest.mark.slow

RUNNER = textwrap.dedent('''
    import os, signal, sys
    import torch
    mode, n, target = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    argv = sys.argv[4:]
    count = [0]
    if mode in ("kill-step", "term-step"):
        sig = signal.SIGKILL if mode == "kill-step" else signal.SIGTERM
        for cls in (torch.optim.Adam, torch.optim.SGD):
            orig = cls.step
            def step(self, *a, _orig=orig, **k):
                count[0] += 1
                if count[0] == n:
                    os.kill(os.getpid(), sig)   # SIGTERM: delivered, the step completes
                return _orig(self, *a, **k)
            cls.step = step
    elif mode == "kill-replace":   # SIGKILL just before the n-th rename onto `target`
        orig_replace = os.replace
        def replace(src, dst, _orig=orig_replace):
            if os.path.basename(str(dst)) == target:
                count[0] += 1
                if count[0] == n:
                    os.kill(os.getpid(), signal.SIGKILL)
            return _orig(src, dst)
        os.replace = replace
    from spikeseg.cli import main
    sys.exit(main(argv))
''')


def _argv(out: Path, cache: Path, name: str, *extra: str) -> list[str]:
    sets = []
    for o in tiny_overrides(out, cache) + ["train.epochs=3", f"train.name={name}", *extra]:
        sets += ["--set", o]
    return ["train", "--no-progress", *sets]


def _run(tmp: Path, mode: str, n: int, target: str, argv: list[str]) -> subprocess.CompletedProcess:
    script = tmp / "runner.py"
    script.write_text(RUNNER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(script), mode, str(n), target, *argv],
                          capture_output=True, text=True, env=env, timeout=600)


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "checkpoints" / "last.safetensors"))


def _epochs(run_dir: Path) -> list[str]:
    return [r["epoch"] for r in csv.DictReader((run_dir / "metrics.csv").open())]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reference")
    cache = tmp_path_factory.getbasetemp() / "builtin-cache-safety"
    r = _run(tmp, "none", 0, "", _argv(tmp / "runs", cache, "full"))
    assert r.returncode == 0, r.stderr[-2000:]
    run_dir = tmp / "runs" / "full"
    return cache, _weights(run_dir), list(csv.DictReader((run_dir / "metrics.csv").open()))


@pytest.mark.parametrize("mode,n,target", [
    ("kill-step", 6, ""),                                # mid-epoch 2 (4 steps per epoch)
    ("kill-replace", 1, "train_state.safetensors"),      # during the first save of the state
    ("kill-replace", 2, "train_state.safetensors"),      # epoch 2's checkpoints written, no state
    ("kill-replace", 3, "metrics.csv"),                  # epoch 2's state saved, no metrics row
    ("kill-replace", 2, "last.safetensors"),             # in the middle of epoch 2's checkpoints
], ids=["mid-epoch", "first-state-save", "before-state", "between-state-and-metrics",
        "between-checkpoints"])
def test_killed_run_resumes_bit_identical(mode, n, target, reference, tmp_path):
    cache, ref_weights, ref_rows = reference
    argv = _argv(tmp_path / "runs", cache, "cut")
    r = _run(tmp_path, mode, n, target, argv)
    assert r.returncode == -9, (r.returncode, r.stderr[-2000:])
    run_dir = tmp_path / "runs" / "cut"
    r2 = _run(tmp_path, "none", 0, "", [*argv[:1], "--resume", *argv[1:]])
    assert r2.returncode == 0, r2.stderr[-2000:]
    got = _weights(run_dir)
    assert got.keys() == ref_weights.keys()
    for k, v in ref_weights.items():
        assert torch.equal(got[k], v), k
    assert _epochs(run_dir) == ["1", "2", "3"]
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    for a, b in zip(rows, ref_rows, strict=True):
        assert a["train_loss"] == b["train_loss"] and a["val_miou"] == b["val_miou"]
    leftovers = [p for p in run_dir.rglob(".*.tmp")]
    assert leftovers == []


def test_sigterm_finishes_the_step_saves_and_resumes(reference, tmp_path):
    cache, ref_weights, _ = reference
    argv = _argv(tmp_path / "runs", cache, "term")
    r = _run(tmp_path, "term-step", 6, "", argv)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "stopped by SIGTERM" in r.stdout
    run_dir = tmp_path / "runs" / "term"
    assert _epochs(run_dir) == ["1"]
    r2 = _run(tmp_path, "none", 0, "", [*argv[:1], "--resume", *argv[1:]])
    assert r2.returncode == 0, r2.stderr[-2000:]
    assert "epoch 2, step 2" in r2.stdout  # continued inside the epoch
    got = _weights(run_dir)
    for k, v in ref_weights.items():
        assert torch.equal(got[k], v), k
    assert _epochs(run_dir) == ["1", "2", "3"]


def test_a_second_writer_is_refused_and_a_stale_lock_taken_over(reference, tmp_path):
    cache, _, _ = reference
    argv = _argv(tmp_path / "runs", cache, "locked", "train.epochs=1")
    assert _run(tmp_path, "none", 0, "", argv).returncode == 0
    run_dir = tmp_path / "runs" / "locked"
    resume = [*argv[:1], "--resume", *argv[1:-2], "--set", "train.epochs=2"]
    with RunLock(run_dir):  # as if another process were training this run
        r = _run(tmp_path, "none", 0, "", resume)
    assert r.returncode == 2
    assert "is being written by pid" in r.stderr and r.stderr.count("\n") == 1
    # A lock file left by a dead process (no flock held) does not block.
    (run_dir / ".lock").write_text("pid 999999 on elsewhere since 2020-01-01 00:00:00")
    r = _run(tmp_path, "none", 0, "", resume)
    assert r.returncode == 0, r.stderr[-2000:]
    assert _epochs(run_dir) == ["1", "2"]


def test_a_run_that_blows_up_stops_and_leaves_only_finite_checkpoints(reference, tmp_path):
    cache, _, _ = reference
    argv = _argv(tmp_path / "runs", cache, "boom", "train.lr=1e9", "train.optimizer=sgd")
    r = _run(tmp_path, "none", 0, "", argv)
    assert r.returncode == 2, r.stderr[-2000:]
    err = r.stderr.strip().splitlines()[-1]
    assert err.startswith("spikeseg: error: training diverged at epoch"), err
    assert "lower train.lr" in err
    for f in (tmp_path / "runs" / "boom" / "checkpoints").glob("*.safetensors"):
        for k, v in load_file(str(f)).items():
            assert not v.is_floating_point() or torch.isfinite(v).all(), (f.name, k)
