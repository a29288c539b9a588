"""ANN→SNN conversion with threshold balancing (section 3 of the paper, figures 3, 4 and 13).

A trained ``deeplab`` or ``fcn`` (BatchNorm + ReLU) becomes its spiking twin:

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
   activations stay below their θ.
3. **Output.** The last layer (and FCN's decoder, which has no ReLU in the ANN) accumulates
   membrane potential without spiking, as in the directly trained models.

Thresholds θ come from calibration data, one layer at a time in forward order:

* ``method="layer"`` — one θ per layer, in the manner of Sengupta et al. 2019 ("Spike-Norm"):
  with the layers before ``l`` already converted and spiking, run the SNN on calibration
  images for ``calibration_timesteps`` steps and take the maximum input current that layer
  ``l`` receives;
* ``method="channel"`` — one θ per output channel, in the manner of Spiking-YOLO (Kim et al.
  2020, channel-wise normalisation): the same procedure, maximum per channel;
* ``percentile=P`` replaces the maximum by the P-th percentile of the per-neuron maxima
  (P = 99.9 is the robust choice of Rueckauer et al. 2017 that most users pick today);
* ``source="ann"`` takes the statistics from the ANN's activations instead (one fast pass,
  the data-based normalisation of Diehl et al. 2015 / Rueckauer et al. 2017).

Thresholds are buffers of the converted model, so they are saved with its checkpoint and the
model can be evaluated at any T without calibrating again (:func:`save_converted`,
``load_checkpoint``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .encoding import ENCODINGS, build_encoder
from .errors import SpikesegError
from .models.layers import ConvBlock, TimeContext
from .neurons import LIF

__all__ = [
    "ConversionConfig",
    "BalancedIF",
    "fold_batchnorm",
    "spiking_twin",
    "calibrate",
    "convert",
    "save_converted",
    "thresholds",
    "layer_threshold_summary",
    "METHODS",
    "SOURCES",
]

METHODS = ("layer", "channel")
SOURCES = ("snn", "ann")


@dataclass
class ConversionConfig:
    """How an ANN is converted (recorded in the converted checkpoint)."""

    method: str = "layer"
    """``"layer"`` (one threshold per layer, Sengupta et al.) or ``"channel"`` (Spiking-YOLO)."""
    percentile: float = 100.0
    """Percentile of the per-neuron maxima used as threshold; 100 = the maximum."""
    source: str = "snn"
    """Statistics of the converted layers' input currents (``"snn"``) or of ANN activations."""
    calibration_images: int = 64
    """Training images used to find the thresholds."""
    calibration_timesteps: int = 64
    """Timesteps per calibration run (``source="snn"``)."""
    timesteps: int = 1000
    """Default inference T of the converted model (any T can be used at evaluation)."""
    encoding: str = "poisson"
    """Coding of static images: ``"poisson"`` (the paper) or ``"direct"`` (analog currents)."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise SpikesegError(f"conversion method must be one of {METHODS}, not {self.method!r}")
        if self.source not in SOURCES:
            raise SpikesegError(f"calibration source must be one of {SOURCES}, not {self.source!r}")
        if not 0.0 < float(self.percentile) <= 100.0:
            raise SpikesegError(f"percentile must be in (0, 100], got {self.percentile}")
        for k in ("calibration_images", "calibration_timesteps", "timesteps"):
            if int(getattr(self, k)) < 1:
                raise SpikesegError(f"{k} must be >= 1, got {getattr(self, k)}")
        if self.encoding not in ENCODINGS:
            raise SpikesegError(f"encoding must be one of {ENCODINGS}, not {self.encoding!r}")


class BalancedIF(LIF):
    """Integrate-and-fire neurons with soft reset and a threshold per layer or per channel.

    ``u[t] = u[t-1] + x[t]``; ``s[t] = 1`` where ``u[t] > θ`` (θ broadcast over ``[C, 1, 1]``
    for a per-channel threshold); ``u[t] -= θ·s[t]``. Spikes are binary; spike hooks see them
    as for :class:`~spikeseg.neurons.LIF`. Inference only (no surrogate gradient).

    Args:
        channels: number of thresholds (1 = one per layer, C = one per channel).
    """

    def __init__(self, channels: int = 1) -> None:
        super().__init__(leak=1.0, threshold=1.0, reset="soft")
        self.register_buffer("theta", torch.ones(channels))
        self.probe: Any = None
        """While calibrating: called with each input current ``x[t]`` before firing."""

    def _theta(self, x: Tensor) -> Tensor:
        th = self.theta.to(x.dtype)
        return th.view(-1, 1, 1) if th.numel() > 1 else th.view(())

    def extra_repr(self) -> str:
        return f"thresholds={self.theta.numel()}, reset='soft'"

    def step(
        self, x: Tensor, mem: Tensor | None = None, t: int | None = None
    ) -> tuple[Tensor, Tensor]:
        if self.probe is not None:
            self.probe(x)
        u = x if mem is None else x + mem
        th = self._theta(x)
        s = (u > th).to(x.dtype)
        m = u - s * th
        if self._spike_hooks:
            if t is None:
                raise ValueError("BalancedIF.step: pass the timestep t= when hooks are registered")
            self._notify(s, t)
        return s, m

    def forward(self, x: Tensor) -> Tensor:
        out = torch.empty_like(x)
        m = None
        for t, xt in enumerate(x.unbind(0)):
            if self.probe is not None:
                self.probe(xt)
            u = xt if m is None else xt + m
            th = self._theta(xt)
            out[t] = (u > th).to(x.dtype)
            m = u - out[t] * th
        if self._spike_hooks:
            self._notify(out, None)
        return out


# --------------------------------------------------------------------------- structure


@torch.no_grad()
def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A convolution with bias computing ``bn(conv(x))`` in eval mode."""
    std = torch.sqrt(bn.running_var + bn.eps)
    gamma = bn.weight if bn.affine else torch.ones_like(std)
    beta = bn.bias if bn.affine else torch.zeros_like(std)
    scale = gamma / std
    fused = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
        padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=True,
        padding_mode=conv.padding_mode,
    ).to(conv.weight.device, conv.weight.dtype)
    fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(std)
    fused.bias.copy_(beta + (bias - bn.running_mean) * scale)
    return fused


def _blocks(model: nn.Module) -> list[tuple[str, ConvBlock]]:
    """The model's activation blocks in forward order (from its layer graph)."""
    try:
        graph = model.spike_consumers()
    except (AttributeError, NotImplementedError):
        raise SpikesegError(
            f"{type(model).__name__} cannot be converted: it does not describe its layer graph"
        ) from None
    modules = dict(model.named_modules())
    return [(name, modules[name]) for name in graph]


def spiking_twin(ann: nn.Module, config: ConversionConfig | None = None) -> nn.Module:
    """The spiking twin of a trained ANN: BN folded, ReLUs → :class:`BalancedIF` (θ = 1).

    The thresholds still have to be found (:func:`calibrate`) or loaded from a checkpoint.
    ``ann`` is not modified.

    Raises:
        SpikesegError: ``ann`` is spiking already, uses leaky ReLUs, or has no layer graph.
    """
    config = config or ConversionConfig()
    if getattr(ann, "spiking", True):
        raise SpikesegError("conversion takes a trained ANN (deeplab or fcn), not a spiking model")
    snn = copy.deepcopy(ann).eval()
    per_channel = config.method == "channel"
    for name, block in _blocks(snn):
        if not isinstance(block.act, nn.ReLU):
            raise SpikesegError(
                f"layer {name} uses {type(block.act).__name__}; conversion needs ReLU activations"
            )
        if isinstance(block.norm, nn.BatchNorm2d):
            block.conv = fold_batchnorm(block.conv, block.norm)
        elif not isinstance(block.norm, nn.Identity):
            raise SpikesegError(f"layer {name}: cannot fold {type(block.norm).__name__}")
        block.norm = nn.Identity()
        block.act = BalancedIF(block.conv.out_channels if per_channel else 1).to(
            block.conv.weight.device
        )
    snn.spiking = True
    snn.timesteps = int(config.timesteps)
    snn.encoding = config.encoding
    snn.encoder = build_encoder(config.encoding)
    snn.conversion = asdict(config)
    return snn


@torch.no_grad()
def _set_threshold(snn: nn.Module, name: str, theta: Tensor) -> None:
    """Set block ``name``'s θ and fold it into the layers that read its spikes."""
    modules = dict(snn.named_modules())
    act: BalancedIF = modules[name].act
    theta = theta.to(act.theta).reshape(act.theta.shape)
    # A layer that never fires in calibration gets θ = 1 (any value works: it stays silent
    # only if its input stays <= 0, and a tiny θ would turn noise into bursts).
    theta = torch.where(theta > 0, theta, torch.ones_like(theta))
    ratio = theta / act.theta  # relative to what is folded already
    act.theta.copy_(theta)
    for consumer in snn.spike_consumers()[name]:
        w = modules[consumer].weight
        if isinstance(modules[consumer], nn.ConvTranspose2d):
            w.mul_(ratio.view(-1, 1, 1, 1) if ratio.numel() > 1 else ratio)
        else:
            w.mul_(ratio.view(1, -1, 1, 1) if ratio.numel() > 1 else ratio)


# --------------------------------------------------------------------------- calibration


class _Stop(Exception):
    """Raised by a probe to skip the rest of the network (layers after the one calibrated)."""


class _Stats:
    """Per-neuron maxima of one layer's input, reduced to a threshold per layer or channel."""

    def __init__(self, per_channel: bool, percentile: float) -> None:
        self.per_channel = per_channel
        self.percentile = float(percentile)
        self.running: Tensor | None = None  # max over everything so far (percentile 100)
        self.samples: list[Tensor] = []  # per-image neuron maxima [N, C, H*W] (percentile < 100)

    def add(self, m: Tensor) -> None:
        """``m``: ``[N, C, H, W]`` per-neuron maxima over time of N images."""
        m = m.detach().float()
        if self.percentile >= 100.0:
            red = m.amax(dim=(0, 2, 3)) if self.per_channel else m.amax()
            self.running = red if self.running is None else torch.maximum(self.running, red)
        else:
            self.samples.append(m.flatten(2).cpu())

    def threshold(self) -> Tensor:
        if self.percentile >= 100.0:
            assert self.running is not None
            return self.running
        vals = torch.cat(self.samples)  # [N, C, HW]
        q = self.percentile
        if self.per_channel:
            per_c = vals.transpose(0, 1).reshape(vals.shape[1], -1).numpy()
            return torch.from_numpy(np.percentile(per_c, q, axis=1).astype(np.float32))
        return torch.tensor(float(np.percentile(vals.numpy().ravel(), q)))


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
        ``{block name: θ}`` (a scalar tensor or one value per channel).
    """
    snn.eval()
    blocks = _blocks(snn)
    per_channel = config.method == "channel"
    found: dict[str, Tensor] = {}
    if config.source == "ann":
        if ann is None:
            raise ValueError("source='ann' needs the ANN")
        stats = {name: _Stats(per_channel, config.percentile) for name, _ in blocks}
        modules = dict(ann.named_modules())
        hooks = [modules[name].act.register_forward_hook(
            lambda _m, _i, out, s=stats[name]: s.add(out)) for name, _ in blocks]
        try:
            ann.eval()
            for x in tqdm(images, desc="calibrating (ANN)", leave=False, disable=not progress):
                ann(x if x.dim() == 4 else x.transpose(0, 1))
        finally:
            for h in hooks:
                h.remove()
        for name, _ in blocks:
            found[name] = stats[name].threshold()
            _set_threshold(snn, name, found[name])
        return found

    T = int(config.calibration_timesteps)
    bar = tqdm(total=len(blocks) * len(images), desc="calibrating", leave=False,
               disable=not progress, dynamic_ncols=True)
    for name, block in blocks:
        act: BalancedIF = block.act
        stats = _Stats(per_channel, config.percentile)
        gen = torch.Generator(device=images[0].device).manual_seed(seed)
        for x in images:
            peak: list[Tensor | None] = [None]

            def probe(cur: Tensor, peak=peak) -> None:
                peak[0] = cur.clone() if peak[0] is None else torch.maximum(peak[0], cur)
                raise _Stop

            act.probe = probe
            try:
                if x.dim() == 4:
                    frames = snn.encoder.steps(x, T, gen)
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
        _set_threshold(snn, name, found[name])
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
        The spiking model (eval mode). ``model.conversion`` records the settings; the
        thresholds are buffers (``<block>.act.theta``, see :func:`thresholds`).
    """
    config = config or ConversionConfig()
    device = torch.device(device)
    ann = ann.to(device).eval()
    snn = spiking_twin(ann, config).to(device)
    images = _images(calibration_data, int(config.calibration_images), device)
    calibrate(snn, images, config, ann, seed=seed, progress=progress)
    return snn


def thresholds(snn: nn.Module) -> dict[str, list[float]]:
    """``{block name: thresholds}`` of a converted model (one value, or one per channel)."""
    return {name: block.act.theta.tolist() for name, block in _blocks(snn)}


def save_converted(
    path: str | Path, snn: nn.Module, ann_meta: dict[str, Any], extra: dict[str, Any] | None = None
) -> tuple[Path, Path]:
    """Save a converted model as a spikeseg checkpoint (thresholds included).

    ``ann_meta`` is the metadata of the ANN checkpoint it came from: its model section is
    kept (the converted model is rebuilt from it, see ``load_checkpoint``), with the
    conversion settings in ``"conversion"``.
    """
    from .engine.checkpoint import save_checkpoint

    meta = {k: ann_meta[k] for k in ("config", "dataset") if k in ann_meta}
    meta["ann"] = {k: ann_meta[k] for k in ("epoch", "metrics", "best_miou") if k in ann_meta}
    meta["conversion"] = dict(snn.conversion)
    meta["converted_from"] = ann_meta.get("model", {}).get("name")
    meta.update(extra or {})
    name = ann_meta["model"]["name"]
    return save_checkpoint(path, snn, name, extra=meta)


def layer_threshold_summary(snn: nn.Module) -> list[dict[str, Any]]:
    """Per block: name, number of thresholds, min / median / max θ (for tables)."""
    rows = []
    for name, block in _blocks(snn):
        th = block.act.theta.float()
        rows.append({"layer": name, "thresholds": th.numel(), "min": float(th.min()),
                     "median": float(th.median()), "max": float(th.max())})
    return rows



def convert_checkpoint(
    ann_checkpoint: str | Path,
    out: str | Path,
    config: ConversionConfig | None = None,
    *,
    data_root: str | None = None,
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
) -> tuple[tuple[Path, Path], nn.Module]:
    """Convert a trained ANN checkpoint and save the spiking model as checkpoint ``out``.

    Calibration images are the first ``config.calibration_images`` of a seeded shuffle of
    the ANN's training split (read from the checkpoint's metadata).

    Returns:
        ``((weights path, metadata path), converted model)``.

    Raises:
        SpikesegError: a missing/unreadable checkpoint, a spiking checkpoint, a model that
            cannot be converted, or a dataset that cannot be read.
    """
    from torch.utils.data import DataLoader, Subset

    from .engine.checkpoint import load_checkpoint
    from .engine.evaluate import checkpoint_dataset, resolve_device

    config = config or ConversionConfig()
    ann, meta = load_checkpoint(ann_checkpoint, map_location="cpu")
    if ann.spiking or "conversion" in meta:
        raise SpikesegError(
            f"{ann_checkpoint} is a spiking model; convert the checkpoint of an ANN "
            "(deeplab or fcn)"
        )
    dev = resolve_device(device)
    train = checkpoint_dataset(meta, ann, "train", int(config.calibration_timesteps), data_root,
                               source=str(ann_checkpoint))
    n = min(int(config.calibration_images), len(train))
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]
    loader = DataLoader(Subset(train, order.tolist()), batch_size=16)
    snn = convert(ann, loader, config, device=dev, seed=seed, progress=progress)
    paths = save_converted(out, snn.cpu(), meta, extra={
        "converted_from_checkpoint": str(ann_checkpoint),
        "thresholds": layer_threshold_summary(snn),
    })
    return paths, snn
