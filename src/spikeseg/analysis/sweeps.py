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

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data import IGNORE_INDEX
from ..engine.evaluate import to_input, use_channels_last
from ..engine.metrics import ConfusionMatrix

__all__ = ["SweepPoint", "timestep_sweep"]


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
    gen = torch.Generator(device=device).manual_seed(seed)
    cms = {t: ConfusionMatrix(model.num_classes, IGNORE_INDEX) for t in marks}
    total = len(loader) if max_batches is None else min(len(loader), max_batches)
    bar = tqdm(loader, total=total, desc=f"T sweep to {marks[-1]}", leave=False,
               disable=not progress, dynamic_ncols=True)
    for i, (x, y) in enumerate(bar):
        if max_batches is not None and i >= max_batches:
            break
        logits = model.forward_checkpoints(to_input(x, device, cl), marks, generator=gen)
        for t, lg in logits.items():
            cms[t].update(lg.argmax(1).cpu(), y)
    bar.close()
    points = []
    for t in marks:
        cms[t].all_reduce()
        s = cms[t].compute()
        points.append(SweepPoint(t, s.miou, s.pixel_accuracy))
    return points
