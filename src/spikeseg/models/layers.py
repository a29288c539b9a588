"""Building blocks shared by the segmentation architectures, ANN and SNN alike.

A block is written once; whether it is an ANN layer (BatchNorm + ReLU) or a spiking layer
(BNTT + LIF) is decided by what is injected. Spiking blocks run in one of two execution
modes, carried by a :class:`TimeContext` created per forward call:

* ``"step"``: the network is called once per timestep on ``[B, C, H, W]`` tensors (time
  outer, layers inner). Fastest on CPU (see ``docs/benchmarks.md``): T small convolutions
  stay in cache where one over a ``T·B`` batch does not.
* ``"fold"``: the network is called once on ``[T·B, C, H, W]`` (time folded into the batch for
  convolutions; neurons and BNTT unfold it to ``[T, B, ...]``). Fewer, larger kernels: the
  usual choice on GPUs.

Membrane states live in the context, never in the modules, so a model holds no hidden state
between calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..neurons import LIF
from ..norm import BNTT, TimeSharedBN

__all__ = [
    "TimeContext", "ConvBlock", "NeuronSlot", "init_weights", "scale_channels", "fold_batchnorm",
]


@dataclass
class TimeContext:
    """Per-call execution state of a spiking network.

    Attributes:
        mode: ``"step"`` or ``"fold"``.
        timesteps: number of timesteps ``T`` of this call.
        t: current timestep (``"step"`` mode).
        states: membrane potentials, keyed by the id of the neuron module.
    """

    mode: str
    timesteps: int
    t: int = 0
    states: dict[int, Tensor] = field(default_factory=dict)


def run_neuron(neuron: nn.Module, x: Tensor, ctx: TimeContext | None) -> Tensor:
    """Apply an activation (ReLU, or LIF under ``ctx``) to ``x``; see :class:`TimeContext`."""
    if ctx is None or not isinstance(neuron, LIF):
        return neuron(x)
    if ctx.mode == "step":
        s, ctx.states[id(neuron)] = neuron.step(x, ctx.states.get(id(neuron)), ctx.t)
        return s
    return neuron(x.unflatten(0, (ctx.timesteps, -1))).flatten(0, 1)


def run_norm(norm: nn.Module, x: Tensor, ctx: TimeContext | None) -> Tensor:
    """Apply a normalisation to ``x``: BatchNorm (ANN), or a time-aware norm under ``ctx``.

    BNTT normalises with the statistics of the context's timestep; a :class:`TimeSharedBN`
    sees the folded sequence (``"fold"`` mode) or one step in evaluation (``"step"`` mode).
    """
    if ctx is None or not isinstance(norm, (BNTT, TimeSharedBN)):
        return norm(x)
    if ctx.mode == "step":
        return norm.step(x, ctx.t)
    if isinstance(norm, TimeSharedBN):
        return norm(x)
    return norm(x.unflatten(0, (ctx.timesteps, -1))).flatten(0, 1)


class NeuronSlot(nn.Module):
    """An activation whose input arrives from several sources (e.g. FCN's upsampling neurons).

    Wraps the injected activation so that :func:`run_neuron` applies it under a context.
    """

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.act = act

    def forward(self, x: Tensor, ctx: TimeContext | None = None) -> Tensor:
        return run_neuron(self.act, x, ctx)


class ConvBlock(nn.Module):
    """``conv → norm → activation``: Conv-BN-ReLU for ANNs, Conv-BNTT-LIF for SNNs (eq. (4)).

    Args:
        conv: the (possibly dilated) convolution, without bias.
        norm: ``BatchNorm2d`` or :class:`~spikeseg.norm.BNTT`.
        act: ``ReLU`` (or any activation) or :class:`~spikeseg.neurons.LIF`.
    """

    def __init__(self, conv: nn.Module, norm: nn.Module, act: nn.Module) -> None:
        super().__init__()
        self.conv = conv
        self.norm = norm
        self.act = act

    def forward(self, x: Tensor, ctx: TimeContext | None = None) -> Tensor:
        return run_neuron(self.act, run_norm(self.norm, self.conv(x), ctx), ctx)


def scale_channels(channels: int, width: float) -> int:
    """Channel count scaled by ``width`` (at least 1)."""
    return max(1, int(round(channels * width)))


def init_weights(module: nn.Module, gain: float = 2.0) -> None:
    """Xavier-uniform convolution weights with gain 2 and zero biases, as the paper's code."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize with ``align_corners=True`` (as the paper's code); a no-op at equal size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def is_spiking_module(m: nn.Module) -> bool:
    """True for the neuron modules of a spiking network."""
    return isinstance(m, LIF)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


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
