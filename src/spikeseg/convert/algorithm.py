"""ANN→SNN conversion with threshold balancing: the algorithm (section 3 of the paper, figures 3, 4 and 13).

A trained ``deeplab`` or ``fcn`` (BatchNorm + ReLU, or leaky ReLU) becomes its spiking twin:

1. **BatchNorm folding.** Each ``conv → BN`` pair becomes one convolution with a bias:
   ``W' = W·γ/σ``, ``b' = β − γ·μ/σ`` with ``σ = sqrt(var + eps)`` (``γ = 1, β = 0`` for the
   paper's ``affine=False`` BN). The ANN's outputs do not change (:func:`fold_batchnorm`).
2. **IF neurons with balanced thresholds.** Every ReLU becomes an integrate-and-fire neuron
   with soft reset (eqs. (2)-(3) with λ = 1): ``u[t] = u[t-1] + x[t]``, a spike where
   ``u[t] > θ``, then ``u[t] -= θ``. Its firing rate approximates ``clip(a, 0, θ)/θ`` where
   ``a`` is the ANN's activation, so a spike of layer ``l`` stands for ``θ_l`` units of
   activation: θ_l is folded into the weights of every layer that reads layer ``l``
   (``W[:, c] *= θ_{l,c}``, exact because convolutions, average pools and bilinear resizes are
   linear), and spikes stay binary (so spike rates and energy counts are those of a real SNN).
   The time average of the network then converges to the ANN's output as T grows, as long as
   activations stay below their θ. Per-neuron thresholds fold their per-channel maximum and
   emit weighted spikes for the rest; a leaky ReLU of slope α becomes a neuron that also fires
   ``-1`` below ``-θ/α`` (see :mod:`spikeseg.models.converted`).
3. **Output.** The last layer (and FCN's decoder, which has no ReLU in the ANN) accumulates
   membrane potential without spiking, as in the directly trained models.

Thresholds θ come from calibration data, one layer at a time in forward order:

* ``method="layer"`` — one θ per layer, in the manner of Sengupta et al. 2019 ("Spike-Norm"):
  with the layers before ``l`` already converted and spiking, run the SNN on calibration
  images for ``calibration_timesteps`` steps and take the maximum input current that layer
  ``l`` receives;
* ``method="channel"`` — one θ per output channel, in the manner of Spiking-YOLO (Kim et al.
  2020, channel-wise normalisation): the same procedure, maximum per channel;
* ``method="neuron"`` — one θ per neuron ``[C, H, W]`` (the original code's third type): the
  maximum per neuron over the calibration images. Activations of segmentation networks vary
  along the spatial axes as much as along channels (figure 4), which this follows; the price
  is a threshold tensor the size of the layer, valid for one input size only
  (``ConversionConfig.input_size``, taken from the calibration images);
* ``percentile=P`` replaces the maximum by the P-th percentile of the per-neuron maxima
  (P = 99.9 is the robust choice of Rueckauer et al. 2017 that most users pick today; per
  neuron, the percentile over the calibration images);
* ``source="ann"`` takes the statistics from the ANN's activations instead (one fast pass,
  the data-based normalisation of Diehl et al. 2015 / Rueckauer et al. 2017).

For a leaky-ReLU layer of slope α the statistic is the magnitude of what the neuron must
transmit, ``|leaky_relu(x)| = max(x, −α·x)``, so that neither the positive (``x ≤ θ``) nor
the negative (``α·|x| ≤ θ``) spikes saturate; for ReLU layers it is the current ``x`` itself.

Thresholds are buffers of the converted model, so they are saved with its checkpoint and the
model can be evaluated at any T without calibrating again (:func:`save_converted`,
``load_checkpoint``).

This module is the algorithm only: it works on models and tensors and knows nothing of
checkpoints, datasets or the command line (those are :mod:`spikeseg.convert.job`). The
converted structure itself (:class:`BalancedIF`, :func:`spiking_twin`, :func:`set_threshold`)
lives in :mod:`spikeseg.models.converted`, so that a converted checkpoint loads without this
module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import SpikesegError
from ..models.converted import (
    METHODS,
    SOURCES,
    BalancedIF,
    ConversionConfig,
    conversion_blocks,
    set_threshold,
    spiking_twin,
)
from ..models.layers import TimeContext, fold_batchnorm
from ..progress import progress as progress_bar

__all__ = [
    "ConversionConfig",
    "BalancedIF",
    "fold_batchnorm",
    "spiking_twin",
    "set_threshold",
    "calibrate",
    "convert",
    "thresholds",
    "layer_threshold_summary",
    "METHODS",
    "SOURCES",
]


# --------------------------------------------------------------------------- calibration


class _Stop(Exception):
    """Raised by a probe to skip the rest of the network (layers after the one calibrated)."""


class _Stats:
    """Per-neuron maxima of one layer's input, reduced to a threshold per layer, channel or
    neuron."""

    def __init__(self, method: str, percentile: float) -> None:
        self.method = method
        self.percentile = float(percentile)
        self.running: Tensor | None = None  # max over everything so far (percentile 100)
        self.samples: list[Tensor] = []  # per-image neuron maxima [N, C, H, W] (percentile < 100)

    def add(self, m: Tensor) -> None:
        """``m``: ``[N, C, H, W]`` per-neuron maxima over time of N images."""
        m = m.detach().float()
        if self.percentile >= 100.0:
            dims = {"layer": (0, 1, 2, 3), "channel": (0, 2, 3), "neuron": (0,)}[self.method]
            red = m.amax(dim=dims)
            self.running = red if self.running is None else torch.maximum(self.running, red)
        else:
            self.samples.append(m.cpu())

    def threshold(self) -> Tensor:
        if self.percentile >= 100.0:
            assert self.running is not None
            return self.running
        vals = torch.cat(self.samples)  # [N, C, H, W]
        q = self.percentile
        if self.method == "neuron":
            return torch.from_numpy(np.percentile(vals.numpy(), q, axis=0).astype(np.float32))
        if self.method == "channel":
            per_c = vals.transpose(0, 1).reshape(vals.shape[1], -1).numpy()
            return torch.from_numpy(np.percentile(per_c, q, axis=1).astype(np.float32))
        return torch.tensor(float(np.percentile(vals.numpy().ravel(), q)))


def _magnitude(x: Tensor, slope: float) -> Tensor:
    """What a neuron must transmit for input current ``x``: ``x`` for ReLU layers,
    ``|leaky_relu(x)| = max(x, −α·x)`` for leaky ones (see the module docstring)."""
    return x if slope == 0.0 else torch.maximum(x, -slope * x)


def _images(batches: Iterable, limit: int, device: torch.device) -> list[Tensor]:
    out, n = [], 0
    for x, *_ in batches:
        if n >= limit:
            break
        x = x[: limit - n].to(device)
        out.append(x)
        n += x.shape[0]
    if not out:
        raise SpikesegError("no calibration images: the calibration data is empty")
    return out


def _input_size(images: list[Tensor], config: ConversionConfig) -> list[int]:
    """The one input size of the calibration images, checked against ``config.input_size``."""
    sizes = {tuple(x.shape[-2:]) for x in images}
    if len(sizes) != 1:
        raise SpikesegError(
            f"per-neuron thresholds need calibration images of one size, got {sorted(sizes)}: "
            "resize them or use method='layer' or 'channel'"
        )
    size = list(sizes.pop())
    if config.input_size is not None and list(config.input_size) != size:
        raise SpikesegError(
            f"calibration images are {size[0]}x{size[1]} but input_size is "
            f"{config.input_size[0]}x{config.input_size[1]}: per-neuron thresholds need both equal"
        )
    return size


@torch.no_grad()
def calibrate(
    snn: nn.Module,
    images: list[Tensor],
    config: ConversionConfig,
    ann: nn.Module | None = None,
    *,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Tensor]:
    """Find and set the thresholds of ``snn`` (from :func:`spiking_twin`) layer by layer.

    Args:
        snn: the twin, thresholds at 1 and not folded yet.
        images: calibration batches ``[B, C, H, W]`` (static) or ``[B, T, C, H, W]`` (frames).
        config: method, percentile, source, calibration timesteps.
        ann: the original ANN, needed for ``source="ann"``.
        seed: seed of the Poisson encoder.

    Returns:
        ``{block name: θ}`` (a scalar tensor, one value per channel or ``[C, H, W]``).
    """
    snn.eval()
    blocks = conversion_blocks(snn)
    found: dict[str, Tensor] = {}
    if config.source == "ann":
        if ann is None:
            raise ValueError("source='ann' needs the ANN")
        stats = {name: _Stats(config.method, config.percentile) for name, _ in blocks}
        modules = dict(ann.named_modules())
        # |activation|: the leaky ReLU's negative outputs need thresholds too (identity for ReLU).
        hooks = [modules[name].act.register_forward_hook(
            lambda _m, _i, out, s=stats[name]: s.add(out.abs())) for name, _ in blocks]
        try:
            ann.eval()
            for x in progress_bar(images, desc="calibrating (ANN)", disable=not progress):
                ann(x if x.dim() == 4 else x.transpose(0, 1))
        finally:
            for h in hooks:
                h.remove()
        for name, _ in blocks:
            found[name] = stats[name].threshold()
            set_threshold(snn, name, found[name])
        return found

    T = int(config.calibration_timesteps)
    bar = progress_bar(total=len(blocks) * len(images), desc="calibrating", disable=not progress)
    for name, block in blocks:
        act: BalancedIF = block.act
        stats = _Stats(config.method, config.percentile)
        gen = torch.Generator(device=images[0].device).manual_seed(seed)
        for x in images:
            peak: list[Tensor | None] = [None]

            def probe(cur: Tensor, peak=peak, slope=act.negative_slope) -> None:
                cur = _magnitude(cur, slope)
                peak[0] = cur.clone() if peak[0] is None else torch.maximum(peak[0], cur)
                raise _Stop

            act.probe = probe
            try:
                if x.dim() == 4:
                    frames = snn.encoder.steps(snn.network_input(x), T, gen)
                else:
                    frames = iter(x.transpose(0, 1).unbind(0))
                ctx = TimeContext("step", T)
                for t, frame in enumerate(frames):
                    ctx.t = t
                    try:
                        snn.body(frame, ctx)
                    except _Stop:
                        pass
            finally:
                act.probe = None
            assert peak[0] is not None
            stats.add(peak[0])
            bar.update()
        found[name] = stats.threshold()
        set_threshold(snn, name, found[name])
    bar.close()
    return found


def convert(
    ann: nn.Module,
    calibration_data: Iterable,
    config: ConversionConfig | None = None,
    *,
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: bool = True,
) -> nn.Module:
    """Convert a trained ANN into a spiking model with balanced thresholds.

    Args:
        ann: a trained ``deeplab`` / ``fcn`` (or any spikeseg ANN describing its layer graph).
        calibration_data: an iterable of ``(images, ...)`` batches, e.g. a training DataLoader;
            the first ``config.calibration_images`` images are used.
        config: see :class:`ConversionConfig`.
        device: where to calibrate.

    Returns:
        The spiking model (eval mode). ``model.conversion`` records the settings (per-neuron
        thresholds: also the input size of the calibration images, the only size the model
        then runs at); the thresholds are buffers (``<block>.act.theta``, see
        :func:`thresholds`).
    """
    config = config or ConversionConfig()
    device = torch.device(device)
    ann = ann.to(device).eval()
    images = _images(calibration_data, int(config.calibration_images), device)
    if config.method == "neuron":
        config = dataclasses.replace(config, input_size=_input_size(images, config))
    snn = spiking_twin(ann, config).to(device)
    calibrate(snn, images, config, ann, seed=seed, progress=progress)
    return snn


def thresholds(snn: nn.Module) -> dict[str, list]:
    """``{block name: thresholds}`` of a converted model (one value, one per channel, or
    nested lists ``[C][H][W]`` per neuron)."""
    return {name: block.act.theta.tolist() for name, block in conversion_blocks(snn)}


def layer_threshold_summary(snn: nn.Module) -> list[dict[str, Any]]:
    """Per block: name, number and shape of thresholds, min / median / max θ (for tables)."""
    rows = []
    for name, block in conversion_blocks(snn):
        th = block.act.theta.float()
        rows.append({"layer": name, "thresholds": th.numel(), "shape": list(th.shape),
                     "min": float(th.min()), "median": float(th.median()),
                     "max": float(th.max())})
    return rows
