"""Robustness to Gaussian input noise (section 5.4, figure 11 of the paper).

For each noise level σ the inputs get ``N(0, σ²)`` noise added (before rate coding, for a
spiking model on static images, whose encoder then clips the intensities to [0, 1]); the
score is the relative mIoU drop

.. math::  \\text{drop}(σ) = \\frac{\\text{mIoU}_{clean} - \\text{mIoU}_{σ}}{\\text{mIoU}_{clean}} × 100

in percent. The noise is seeded, so ANN and SNN checkpoints see the same noisy inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..engine.evaluate import evaluate

__all__ = ["NoisePoint", "relative_drop", "noise_robustness"]


@dataclass
class NoisePoint:
    sigma: float
    miou: float
    drop_percent: float
    """Relative mIoU drop against σ = 0, in percent."""


def relative_drop(clean: float, noisy: float) -> float:
    """``(clean - noisy) / clean × 100`` (NaN when the clean mIoU is 0)."""
    return (clean - noisy) / clean * 100.0 if clean > 0 else float("nan")


def noise_robustness(
    model: nn.Module,
    loader: DataLoader,
    sigmas: Sequence[float],
    device: torch.device | str = "cpu",
    *,
    timesteps: int | None = None,
    seed: int = 0,
    max_batches: int | None = None,
    progress: bool = True,
) -> list[NoisePoint]:
    """mIoU and relative drop at each σ in ``sigmas`` (σ = 0 is always evaluated first)."""
    device = torch.device(device)
    levels = [0.0] + [float(s) for s in sigmas if float(s) != 0.0]
    points: list[NoisePoint] = []
    clean = float("nan")
    for sigma in levels:
        gen = torch.Generator(device=device).manual_seed(seed)

        def add_noise(x: torch.Tensor, sigma=sigma, gen=gen) -> torch.Tensor:
            if sigma == 0.0:
                return x
            noise = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
            return x + sigma * noise

        r = evaluate(model, loader, device, timesteps=timesteps, max_batches=max_batches,
                     seed=seed, progress=progress, transform=add_noise, desc=f"σ={sigma:g}")
        miou = r.scores.miou
        if sigma == 0.0:
            clean = miou
        points.append(NoisePoint(sigma, miou, relative_drop(clean, miou)))
    return points
