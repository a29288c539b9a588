"""Robustness to corrupted input: Gaussian noise, Gaussian blur, salt-and-pepper (figure 11).

For each corruption level the validation inputs are corrupted as the model reads them (on the
device, after the dataset's resizing and normalisation; before rate coding for a spiking model
on static images, whose encoder then clips the intensities to [0, 1]) and the score is the
relative mIoU drop of section 5.4

.. math::

    \\text{drop} = \\frac{\\text{mIoU}_{clean} - \\text{mIoU}_{level}}{\\text{mIoU}_{clean}}
    × 100

in percent, level 0 being the clean input. The corruptions (:data:`CORRUPTIONS`):

* ``"gaussian_noise"`` (:func:`gaussian_noise`), level ``σ`` in input units (intensities in
  ``[0, 1]``): ``x + σ·n``, ``n ~ N(0, 1)`` per value — the paper's.
* ``"gaussian_blur"`` (:func:`gaussian_blur`), level ``σ`` in pixels of the model's input:
  each channel convolved with the separable kernel ``g(k) ∝ exp(−k²/2σ²)``, ``|k| <= r``,
  ``r = ⌊4σ + 1/2⌋`` (SciPy's ``gaussian_filter`` with ``truncate=4``), mirror padding.
* ``"salt_pepper"`` (:func:`salt_and_pepper`), level ``q`` the fraction of pixels corrupted:
  each pixel independently becomes pepper (the low end of the value range, 0 for images) with
  probability ``q/2`` or salt (the high end, 1) with probability ``q/2``, all its channels
  together (black or white pixels on colour images).

What they mean for event input (time series ``[T, B, C, H, W]`` of count frames or voxel
grids; :func:`corruption_robustness` with ``value_range=None``):

* Gaussian noise is added to every frame value, so counts become non-integral and may go
  negative: noise in the representation, not a model of sensor noise (which adds or removes
  events); it is the paper's figure 11(b) measure on DDD17.
* Gaussian blur blurs every frame and channel in space with the same kernel: a defocused lens
  spreads each pixel's events over its neighbours (counts are conserved up to the borders).
* Salt-and-pepper picks pixels of the sensor, the same ones in every frame and channel of a
  sample, and makes them dead (pepper: the frame channel's minimum, no events for counts) or
  hot (salt: the frame channel's maximum, firing like the busiest pixel): the DVS analogue of
  dead and hot pixels.

Random corruptions are seeded per level, so an ANN and an SNN evaluated on the same loader
see the same corrupted inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ..engine.evaluate import evaluate
from ..errors import SpikesegError

__all__ = [
    "CORRUPTIONS",
    "Corruption",
    "CorruptionPoint",
    "NoisePoint",
    "corruption_robustness",
    "gaussian_blur",
    "gaussian_kernel1d",
    "gaussian_noise",
    "noise_robustness",
    "relative_drop",
    "salt_and_pepper",
]


@dataclass
class NoisePoint:
    sigma: float
    miou: float
    drop_percent: float
    """Relative mIoU drop against σ = 0, in percent."""


@dataclass
class CorruptionPoint:
    """mIoU at one level of a corruption."""

    level: float
    """The corruption's parameter (σ in input units or pixels, or a fraction of pixels)."""
    miou: float
    drop_percent: float
    """Relative mIoU drop against level 0, in percent."""


def relative_drop(clean: float, noisy: float) -> float:
    """``(clean - noisy) / clean × 100`` (NaN when the clean mIoU is 0)."""
    return (clean - noisy) / clean * 100.0 if clean > 0 else float("nan")


# --------------------------------------------------------------------------- corruptions


def gaussian_noise(
    x: torch.Tensor, sigma: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``x + σ·n`` with ``n ~ N(0, 1)`` drawn per value from ``generator`` (any shape)."""
    if sigma == 0.0:
        return x
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + sigma * noise


def gaussian_kernel1d(sigma: float, radius: int | None = None) -> torch.Tensor:
    """The normalised 1-D Gaussian ``g(k) = exp(−k²/2σ²) / Σ_j exp(−j²/2σ²)``, |k| <= r.

    Args:
        sigma: standard deviation in pixels (> 0).
        radius: ``r``; default ``⌊4σ + 1/2⌋``, SciPy's ``gaussian_filter`` with ``truncate=4``.

    Returns:
        ``float64 [2r + 1]``, summing to 1.
    """
    r = int(4.0 * sigma + 0.5) if radius is None else int(radius)
    k = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (k / sigma) ** 2)
    return g / g.sum()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur every channel (and frame) of ``x`` in space with a separable Gaussian.

    ``y = g ⊛_W (g ⊛_H x)`` with :func:`gaussian_kernel1d`, mirror padding (``d c b | a b c d``,
    torch's ``"reflect"``, SciPy's ``"mirror"``); the radius is cut to ``min(H, W) − 1`` on
    inputs smaller than the kernel. Only the last two dimensions are mixed.

    Args:
        x: ``[..., H, W]``, e.g. ``[B, C, H, W]`` images or ``[T, B, C, H, W]`` event frames.
        sigma: standard deviation in pixels (>= 0; 0 returns ``x``).

    Returns:
        A tensor of ``x``'s shape and dtype.
    """
    if sigma == 0.0:
        return x
    H, W = x.shape[-2:]
    r = min(int(4.0 * sigma + 0.5), H - 1, W - 1)
    if r < 1:
        return x
    g = gaussian_kernel1d(sigma, r).to(device=x.device, dtype=x.dtype)
    y = x.reshape(-1, 1, H, W)
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="reflect"), g.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), g.view(1, 1, -1, 1))
    return y.reshape(x.shape)


def salt_and_pepper(
    x: torch.Tensor,
    fraction: float,
    generator: torch.Generator | None = None,
    value_range: tuple[float, float] | None = (0.0, 1.0),
) -> torch.Tensor:
    """Set a ``fraction`` of the pixels to the low (pepper) or the high (salt) end of the range.

    A pixel is corrupted as a whole: all channels of an image ``[B, C, H, W]``; all channels
    and all frames of an event sample ``[T, B, C, H, W]`` (a dead or hot sensor pixel). Each
    pixel draws ``u ~ U[0, 1)``: pepper if ``u < q/2``, salt if ``q/2 <= u < q``.

    Args:
        x: ``[B, C, H, W]`` or time-first ``[T, B, C, H, W]``.
        fraction: ``q`` in ``[0, 1]``, the expected fraction of corrupted pixels.
        generator: source of the draws (seeded by the caller for repeatable masks).
        value_range: ``(low, high)``, e.g. ``(0, 1)`` for intensities; None takes each frame
            channel's own minimum and maximum over ``H, W`` (event frames, whose range has no
            fixed top).

    Returns:
        A corrupted copy of ``x``.
    """
    if fraction == 0.0:
        return x
    if x.dim() == 4:
        shape = (x.shape[0], 1, *x.shape[2:])
    elif x.dim() == 5:
        shape = (1, x.shape[1], 1, *x.shape[3:])
    else:
        raise SpikesegError(
            f"salt_and_pepper needs [B, C, H, W] or [T, B, C, H, W] input, got {tuple(x.shape)}"
        )
    u = torch.rand(shape, generator=generator, device=x.device)
    if value_range is None:
        low = x.amin(dim=(-2, -1), keepdim=True)
        high = x.amax(dim=(-2, -1), keepdim=True)
    else:
        low = torch.tensor(float(value_range[0]), device=x.device, dtype=x.dtype)
        high = torch.tensor(float(value_range[1]), device=x.device, dtype=x.dtype)
    out = torch.where(u < fraction / 2, low, x)
    return torch.where((u >= fraction / 2) & (u < fraction), high, out)


@dataclass(frozen=True)
class Corruption:
    """One kind of input corruption and how to name its level."""

    name: str
    title: str
    """What it is, in a sentence, e.g. ``"Gaussian blur"``, ``"salt-and-pepper noise"``."""
    parameter: str
    """The level's meaning and unit, e.g. ``"standard deviation σ in pixels"``."""
    symbol: str
    """Short label of a level in table headers, e.g. ``"σ"`` or ``"q"``."""
    axis: str
    """Axis label of the level in plots, e.g. ``"Gaussian blur σ (pixels)"``."""
    random: bool
    """Whether it draws random numbers (seeded per level)."""


CORRUPTIONS = {
    c.name: c
    for c in (
        Corruption("gaussian_noise", "Gaussian noise", "standard deviation σ in input units",
                   "σ", "Gaussian noise σ", True),
        Corruption("gaussian_blur", "Gaussian blur",
                   "standard deviation σ in pixels of the model's input", "σ",
                   "Gaussian blur σ (pixels)", False),
        Corruption("salt_pepper", "salt-and-pepper noise", "fraction q of the pixels corrupted",
                   "q", "salt-and-pepper fraction q", True),
    )
}
"""The corruptions :func:`corruption_robustness` knows, by name."""


def _check_levels(corruption: str, levels: Sequence[float]) -> list[float]:
    out = []
    for v in levels:
        try:
            f = float(v)
        except (TypeError, ValueError):
            f = float("nan")
        if isinstance(v, bool) or not math.isfinite(f) or f < 0 or (
            corruption == "salt_pepper" and f > 1
        ):
            bound = "in [0, 1]" if corruption == "salt_pepper" else ">= 0"
            raise SpikesegError(
                f"{corruption} levels must be finite numbers {bound}, got {v!r}"
            )
        out.append(f)
    return out


def _transform(
    corruption: str, level: float, gen: torch.Generator, value_range: tuple[float, float] | None
) -> Callable[[torch.Tensor], torch.Tensor]:
    if corruption == "gaussian_noise":
        return lambda x: gaussian_noise(x, level, gen)
    if corruption == "gaussian_blur":
        return lambda x: gaussian_blur(x, level)
    return lambda x: salt_and_pepper(x, level, gen, value_range)


def corruption_robustness(
    model: nn.Module,
    loader: DataLoader,
    corruption: str,
    levels: Sequence[float],
    device: torch.device | str = "cpu",
    *,
    value_range: tuple[float, float] | None = (0.0, 1.0),
    clean_miou: float | None = None,
    timesteps: int | None = None,
    seed: int = 0,
    max_batches: int | None = None,
    progress: bool = True,
) -> list[CorruptionPoint]:
    """mIoU and relative drop of ``model`` at each level of ``corruption``.

    Args:
        model: a spikeseg model (ANN or SNN).
        loader: the validation batches (not shuffled, so that two models see the same ones).
        corruption: a name of :data:`CORRUPTIONS`.
        levels: the levels; 0 (clean) is always evaluated first, repeats are dropped.
        value_range: salt-and-pepper's ``(low, high)``: ``(0, 1)`` for images, None for event
            frames (see :func:`salt_and_pepper`).
        clean_miou: the model's mIoU on the clean inputs of ``loader`` with the same
            ``seed``, when already measured (e.g. by the report): level 0 is then not
            evaluated again.
        timesteps: T of a spiking model on static input (default: the model's).
        seed: seeds the corruption (per level) and the Poisson encoder.

    Returns:
        One :class:`CorruptionPoint` per level, level 0 first.

    Raises:
        SpikesegError: an unknown corruption or a level out of range.
    """
    if corruption not in CORRUPTIONS:
        raise SpikesegError(
            f"unknown corruption {corruption!r}; choose one of {', '.join(CORRUPTIONS)}"
        )
    device = torch.device(device)
    wanted = _check_levels(corruption, levels)
    order = [0.0] + [v for i, v in enumerate(wanted) if v != 0.0 and v not in wanted[:i]]
    points: list[CorruptionPoint] = []
    clean = float("nan")
    symbol = CORRUPTIONS[corruption].symbol
    for level in order:
        if level == 0.0 and clean_miou is not None:
            clean = float(clean_miou)
            points.append(CorruptionPoint(0.0, clean, relative_drop(clean, clean)))
            continue
        gen = torch.Generator(device=device).manual_seed(seed)
        r = evaluate(model, loader, device, timesteps=timesteps, max_batches=max_batches,
                     seed=seed, progress=progress,
                     transform=None if level == 0.0 else _transform(corruption, level, gen,
                                                                    value_range),
                     desc=f"{corruption} {symbol}={level:g}")
        miou = r.scores.miou
        if level == 0.0:
            clean = miou
        points.append(CorruptionPoint(level, miou, relative_drop(clean, miou)))
    return points


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
    """mIoU and relative drop at each σ in ``sigmas`` (σ = 0 is always evaluated first).

    :func:`corruption_robustness` with ``"gaussian_noise"``, as :class:`NoisePoint` records.
    """
    pts = corruption_robustness(model, loader, "gaussian_noise", sigmas, device,
                                timesteps=timesteps, seed=seed, max_batches=max_batches,
                                progress=progress)
    return [NoisePoint(p.level, p.miou, p.drop_percent) for p in pts]
