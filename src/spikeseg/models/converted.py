"""Converted models: the structure of an ANN's spiking twin, rebuilt from a checkpoint.

Conversion (:mod:`spikeseg.convert`) turns a trained ANN into an SNN in two parts: a change of
*structure* — BatchNorm folded into the convolutions, every ReLU replaced by integrate-and-fire
neurons with a threshold per layer or per channel (:class:`BalancedIF`) — and the *calibration*
of those thresholds on data. This module holds the structure, so that loading a converted
checkpoint needs no knowledge of the calibration algorithm: a converted model records its kind
``"converted"`` and its :class:`ConversionConfig` in the checkpoint's model metadata, and the
kind registry (:func:`spikeseg.models.registry.register_kind`) rebuilds it with
:func:`spiking_twin` before the weights and thresholds are loaded.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..encoding import ENCODINGS, build_encoder
from ..errors import SpikesegError
from ..neurons import LIF
from .layers import ConvBlock, fold_batchnorm
from .registry import register_kind

__all__ = ["ConversionConfig", "BalancedIF", "spiking_twin", "conversion_blocks", "KIND",
           "METHODS", "SOURCES"]

KIND = "converted"
"""The checkpoint kind of a converted model."""

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


def conversion_blocks(model: nn.Module) -> list[tuple[str, ConvBlock]]:
    """The activation blocks of ``model`` in forward order, or a SpikesegError if it has none."""
    try:
        return model.activation_blocks()
    except (AttributeError, NotImplementedError):
        raise SpikesegError(
            f"{type(model).__name__} cannot be converted: it does not describe its layer graph"
        ) from None


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
    for name, block in conversion_blocks(snn):
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
    snn.checkpoint_kind = KIND
    return snn


def _rebuild(model: nn.Module, options: dict[str, Any]) -> nn.Module:
    """Kind rebuilder: the converted structure of the ANN ``model`` (thresholds at 1)."""
    try:
        config = ConversionConfig(**options)
    except TypeError as e:
        raise SpikesegError(f"bad conversion settings: {e}") from None
    return spiking_twin(model, config)


register_kind(KIND, _rebuild, options_attr="conversion")
