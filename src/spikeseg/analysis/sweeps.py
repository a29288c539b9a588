"""Accuracy against the number of inference timesteps (section 5.3, figures 12-13).

:func:`timestep_sweep` evaluates a trained spiking model at several inference windows in one
streaming pass over time (see :meth:`SegmentationModel.forward_checkpoints`): the network runs
once to the longest window and the output layer is read at every checkpoint, so a sweep to
T = 2000 costs one 2000-step run. Beyond the trained T, BNTT uses the last trained timestep's
statistics.

The other sweep of the paper — train at several T, evaluate each at its own T (figure 12) —
is a loop over training runs::

    for T in 10 15 20 25 30 35 40; do
        spikeseg train --config configs/paper_spiking_deeplab.yaml \\
            --set model.timesteps=$T --set train.name=train-T$T
    done
"""

from __future__ import annotations

import csv
import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..data import IGNORE_INDEX
from ..engine.evaluate import batch_keys, model_dtype, to_input, use_channels_last
from ..engine.metrics import ConfusionMatrix
from ..progress import progress as progress_bar

__all__ = ["SweepPoint", "timestep_sweep", "window_sweep", "sweep_checkpoints"]


@dataclass
class SweepPoint:
    timesteps: int
    miou: float
    pixel_accuracy: float


@torch.no_grad()
def timestep_sweep(
    model: nn.Module,
    loader: DataLoader,
    timesteps: Sequence[int],
    device: torch.device | str = "cpu",
    *,
    seed: int = 0,
    max_batches: int | None = None,
    progress: bool = True,
) -> list[SweepPoint]:
    """mIoU of a spiking ``model`` after each number of timesteps in ``timesteps``."""
    device = torch.device(device)
    marks = sorted({int(t) for t in timesteps})
    cl = use_channels_last(device, None)
    model.eval()
    cms = {t: ConfusionMatrix(model.num_classes, IGNORE_INDEX) for t in marks}
    total = len(loader) if max_batches is None else min(len(loader), max_batches)
    bar = progress_bar(loader, total=total, desc=f"T sweep to {marks[-1]}", disable=not progress)
    n = 0
    for i, batch in enumerate(bar):
        if max_batches is not None and i >= max_batches:
            break
        x, y = batch[0], batch[1]
        keys = batch_keys(batch, seed, n, device)  # the streams evaluate() uses
        n += y.shape[0]
        logits = model.forward_checkpoints(to_input(x, device, cl, model_dtype(model)), marks,
                                            keys=keys)
        for t, lg in logits.items():
            cms[t].update(lg.argmax(1).cpu(), y)
    bar.close()
    points = []
    for t in marks:
        cms[t].all_reduce()
        s = cms[t].compute()
        points.append(SweepPoint(t, s.miou, s.pixel_accuracy))
    return points


def window_sweep(
    model: nn.Module,
    make_loader: Callable[[int], DataLoader],
    timesteps: Sequence[int],
    device: torch.device | str = "cpu",
    *,
    seed: int = 0,
    max_batches: int | None = None,
    progress: bool = True,
) -> list[SweepPoint]:
    """mIoU of a spiking ``model`` on event data seen through windows of several lengths.

    For event frames, "T timesteps" means the T frames *ending at the labelled one*, so each T
    needs its own samples (``make_loader(T)``) and its own run; a streaming pass over one long
    window would read the oldest frames instead.
    """
    from ..engine.evaluate import evaluate

    points = []
    for t in sorted({int(t) for t in timesteps}):
        res = evaluate(model, make_loader(t), device, max_batches=max_batches, seed=seed,
                       progress=progress, desc=f"T={t}")
        points.append(SweepPoint(t, res.scores.miou, res.scores.pixel_accuracy))
    return points


def sweep_checkpoints(
    checkpoints: Sequence[str | Path],
    timesteps: Sequence[int],
    out_dir: str | Path,
    labels: Sequence[str] | None = None,
    *,
    split: str = "val",
    batch_size: int = 16,
    max_batches: int | None = None,
    device: str = "auto",
    data_root: str | None = None,
    seed: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """mIoU against inference T for several checkpoints; writes CSV, JSON and a plot.

    Spiking checkpoints (directly trained or converted) are swept in one streaming pass each;
    an ANN checkpoint is evaluated once and drawn as a horizontal reference line.

    Writes ``sweep.csv`` (label, checkpoint, timesteps, miou, pixel_accuracy), ``sweep.json``
    and ``sweep.png`` into ``out_dir``.

    Returns:
        ``{"curves": {label: [point dicts]}, "ann": {label: miou}, "files": [...]}``.
    """
    from ..engine.checkpoint import load_checkpoint
    from ..engine.evaluate import (
        checkpoint_dataset,
        checkpoint_seed,
        evaluate,
        prepare_model,
        resolve_device,
    )
    from ..errors import SpikesegError

    marks = sorted({int(t) for t in timesteps})
    if not marks or marks[0] < 1:
        raise SpikesegError(f"timesteps must be positive integers, got {list(timesteps)}")
    if labels is not None and len(labels) != len(checkpoints):
        raise SpikesegError(f"{len(labels)} labels for {len(checkpoints)} checkpoints")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    curves: dict[str, list[SweepPoint]] = {}
    anns: dict[str, float] = {}
    trained: int | None = None
    rows = []
    for i, ck in enumerate(checkpoints):
        model, meta = load_checkpoint(ck, map_location="cpu")
        ck_seed = checkpoint_seed(meta) if seed is None else seed
        label = labels[i] if labels else _default_label(meta, ck)
        frames = model.timesteps
        ds = checkpoint_dataset(meta, model, split, frames, data_root, source=str(ck))
        loader = DataLoader(ds, batch_size=batch_size, shuffle=False)
        model = prepare_model(model, dev)
        if not model.spiking:
            res = evaluate(model, loader, dev, max_batches=max_batches, progress=progress,
                           desc=label, seed=ck_seed)
            anns[label] = res.scores.miou
            rows.append([label, str(ck), "", res.scores.miou, res.scores.pixel_accuracy])
            continue
        if "conversion" not in meta:
            trained = trained or model.timesteps
        if ds.info.temporal:
            def make_loader(t: int, meta=meta, model=model, ck=ck) -> DataLoader:
                d = checkpoint_dataset(meta, model, split, t, data_root, source=str(ck))
                return DataLoader(d, batch_size=batch_size, shuffle=False)

            pts = window_sweep(model, make_loader, marks, dev, seed=ck_seed,
                               max_batches=max_batches, progress=progress)
        else:
            pts = timestep_sweep(model, loader, marks, dev, seed=ck_seed, max_batches=max_batches,
                                 progress=progress)
        curves[label] = pts
        rows += [[label, str(ck), p.timesteps, p.miou, p.pixel_accuracy] for p in pts]
    with open(out / "sweep.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "checkpoint", "timesteps", "miou", "pixel_accuracy"])
        w.writerows(rows)
    result = {
        "timesteps": marks,
        "curves": {k: [asdict(p) for p in v] for k, v in curves.items()},
        "ann": anns,
        "checkpoints": [str(c) for c in checkpoints],
    }
    (out / "sweep.json").write_text(json.dumps(result, indent=2))
    files = [out / "sweep.csv", out / "sweep.json"]
    try:
        from .plots import plot_sweep

        ann_line = next(iter(anns.values()), None) if len(anns) == 1 else None
        files.append(plot_sweep(curves, out / "sweep.png", trained_timesteps=trained,
                                ann_miou=ann_line))
    except SpikesegError as e:  # no matplotlib: numbers only
        warnings.warn(str(e), stacklevel=2)
    result["files"] = [str(p) for p in files]
    return result


def _default_label(meta: dict[str, Any], checkpoint: str | Path) -> str:
    name = meta["model"]["name"]
    conv = meta.get("conversion")
    if conv:
        p = conv.get("percentile", 100)
        return f"{name} converted ({conv['method']}" + (f", p{p:g})" if p < 100 else ")")
    return name
