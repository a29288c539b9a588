"""Building blocks shared by the segmentation architectures, ANN and SNN alike.

A block is written once; whether it is an ANN layer (BatchNorm + ReLU) or a spiking layer
(BNTT + LIF) is decided by what is injected. Spiking blocks run in one of two execution
modes, carried by a :class:`TimeContext` created per forward call:

* ``"step"``: the network is called once per timestep on ``[B, C, H, W]`` tensors (time
  outer, layers inner): T small convolutions stay in cache where one over a ``T·B`` batch may
  not.
* ``"fold"``: the network is called once on ``[n·B, C, H, W]`` (``n`` timesteps folded into
  the batch for convolutions, time-major; neurons and BNTT see each timestep as a contiguous
  slice). Fewer, larger convolutions: the usual choice on GPUs. ``n`` is the whole sequence,
  or a chunk of it whose membranes enter from and return to the context (time-chunk
  checkpointing, SLTT).

Membrane states live in the context, never in the modules, so a model holds no hidden state
between calls.

**Fused path.** A :class:`ConvBlock` whose norm is BNTT and whose neuron is LIF/IF runs
``conv → BNTT → LIF`` through :func:`spikeseg.kernels.bntt_lif` (one autograd node per call,
bit-identical forward; a dilated convolution whose taps mostly read padding gets its weight
gradient over the valid taps only, :mod:`spikeseg.kernels.conv_taps`). The context records which tensors are spikes
(:meth:`TimeContext.mark_spikes`), so that the layers reading them keep them for backward as
one byte per value (:mod:`spikeseg.kernels.spike_saving`). ``fused=False`` selects the op-by-op
reference path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ..kernels import SpikeRegistry, bntt_lif, fusable
from ..kernels.conv_taps import use_valid_taps, valid_tap_conv2d
from ..neurons import IF, LIF, PLIF
from ..norm import BNTT, TimeSharedBN

__all__ = [
    "TimeContext", "ConvBlock", "NeuronSlot", "init_weights", "scale_channels", "fold_batchnorm",
]


@dataclass
class TimeContext:
    """Per-call execution state of a spiking network.

    Attributes:
        mode: ``"step"`` or ``"fold"``.
        timesteps: ``"step"``: number of timesteps ``T`` of the whole call; ``"fold"``: number
            of timesteps folded into the batch of this call.
        t: current timestep (``"step"`` mode).
        states: membrane potentials, keyed by the id of the neuron module.
        t0: ``"fold"`` mode: the first timestep of the folded ones.
        carry: ``"fold"`` mode: membranes enter from and return to ``states`` (a chunk of a
            longer sequence); otherwise every neuron starts from zero.
        fused: use the fused BNTT + LIF kernels and spike-saving convolutions where they
            apply (bit-identical forward; the reference path otherwise).
        update_stats: BNTT running statistics are updated (False while a checkpointed chunk
            is recomputed, so that it is not counted twice).
        temporal_grad: keep the membranes' gradient through time (False: SLTT).
        kernel: implementation of the fused blocks, ``"auto"``, ``"torch"`` or ``"triton"``
            (see :class:`~spikeseg.models.base.Execution`).
        spikes: the tensors of this call known to be binary spikes.
    """

    mode: str
    timesteps: int
    t: int = 0
    states: dict[int, Tensor] = field(default_factory=dict)
    t0: int = 0
    carry: bool = False
    fused: bool = True
    update_stats: bool = True
    temporal_grad: bool = True
    kernel: str = "auto"
    spikes: SpikeRegistry = field(default_factory=SpikeRegistry, repr=False)

    def mark_spikes(self, s: Tensor) -> None:
        """Record that ``s`` holds only zeros and ones (until it is modified in place)."""
        if self.fused:
            self.spikes.mark(s)

    def state(self, neuron: nn.Module) -> Tensor | None:
        """The membrane of ``neuron`` (detached when the temporal gradient is dropped)."""
        m = self.states.get(id(neuron))
        return m.detach() if m is not None and not self.temporal_grad else m


def _stateful_sequence(neuron: LIF, seq: Tensor, ctx: TimeContext) -> Tensor:
    """``seq`` ``[n, B, ...]`` through ``neuron`` step by step from the context's membrane."""
    out = []
    for i, xt in enumerate(seq.unbind(0)):
        s, ctx.states[id(neuron)] = neuron.step(xt, ctx.state(neuron), ctx.t0 + i)
        out.append(s)
    return torch.stack(out)


def run_neuron(neuron: nn.Module, x: Tensor, ctx: TimeContext | None) -> Tensor:
    """Apply an activation (ReLU, or LIF under ``ctx``) to ``x``; see :class:`TimeContext`."""
    if ctx is None or not isinstance(neuron, LIF):
        return neuron(x)
    if x.dtype in (torch.float16, torch.bfloat16):  # autocast: membranes stay in float32
        x = x.float()
    if ctx.mode == "step":
        s, ctx.states[id(neuron)] = neuron.step(x, ctx.state(neuron), ctx.t)
    elif ctx.carry or not ctx.temporal_grad:
        seq = x.unflatten(0, (ctx.timesteps, -1))
        s = _stateful_sequence(neuron, seq, ctx).flatten(0, 1)
    else:
        s = neuron(x.unflatten(0, (ctx.timesteps, -1))).flatten(0, 1)
    if type(neuron) in (LIF, IF, PLIF):  # 0/1 spikes (converted neurons may weight theirs)
        ctx.mark_spikes(s)
    return s


def run_norm(norm: nn.Module, x: Tensor, ctx: TimeContext | None) -> Tensor:
    """Apply a normalisation to ``x``: BatchNorm (ANN), or a time-aware norm under ``ctx``.

    BNTT normalises with the statistics of the context's timestep; a :class:`TimeSharedBN`
    sees the folded sequence (``"fold"`` mode) or one step in evaluation (``"step"`` mode).
    Under autocast, the input is brought back to the parameters' precision first (batch
    statistics and membranes stay in float32).
    """
    if ctx is None or not isinstance(norm, (BNTT, TimeSharedBN)):
        return norm(x)
    if x.dtype in (torch.float16, torch.bfloat16) and norm.running_mean.dtype != x.dtype:
        x = x.to(norm.running_mean.dtype)
    if ctx.mode == "step":
        if isinstance(norm, BNTT):
            return norm.step(x, ctx.t, update_stats=ctx.update_stats)
        return norm.step(x, ctx.t)
    if isinstance(norm, TimeSharedBN):
        return norm(x)
    return norm(x.unflatten(0, (ctx.timesteps, -1)), t0=ctx.t0,
                update_stats=ctx.update_stats).flatten(0, 1)


def _synchronised(norm: BNTT) -> bool:
    return norm.sync and norm.training and dist.is_available() and dist.is_initialized()


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

    Under a :class:`TimeContext` with ``fused`` set, a BNTT + LIF block runs through the fused
    kernels (see the module docstring); the numbers are those of the reference path.

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
        if ctx is not None and ctx.fused and fusable(self.norm, self.act) \
                and not _synchronised(self.norm):
            return self._fused(x, ctx)
        return run_neuron(self.act, run_norm(self.norm, self.conv(x), ctx), ctx)

    def _fused(self, x: Tensor, ctx: TimeContext) -> Tensor:
        h = valid_tap_conv2d(self.conv, x) if use_valid_taps(self.conv, x) else self.conv(x)
        act: LIF = self.act  # type: ignore[assignment]
        step = ctx.mode == "step"
        t0, n = (ctx.t, 1) if step else (ctx.t0, ctx.timesteps)
        mem = ctx.state(act) if (step or ctx.carry) else None
        kernel = _bntt_lif_kernel(ctx.kernel, h, act)
        s, m = kernel(h, mem, self.norm, act, t0, n, update_stats=ctx.update_stats,
                      temporal_grad=ctx.temporal_grad)
        if step or ctx.carry or not ctx.temporal_grad:
            ctx.states[id(act)] = m
        if act._spike_hooks:
            if step:
                act._notify(s, t0)
            elif ctx.carry or t0:
                for i, si in enumerate(s.unflatten(0, (n, -1)).unbind(0)):
                    act._notify(si, t0 + i)
            else:
                act._notify(s.unflatten(0, (n, -1)), None)
        ctx.mark_spikes(s)
        return s


def _bntt_lif_kernel(choice: str, h: Tensor, act: LIF):
    """:func:`~spikeseg.kernels.bntt_lif` or its Triton twin, as ``choice`` and the device say."""
    if choice == "torch" or (choice == "auto" and not h.is_cuda):
        return bntt_lif
    from ..kernels import triton_lif  # imports triton only when asked for

    usable = triton_lif.triton_available() and triton_lif.supports(h, act.surrogate)
    if choice == "triton" and not usable:
        raise RuntimeError(
            "execution kernel 'triton' needs the triton package (pip install spikeseg[gpu]) "
            f"and a float32/float16/bfloat16 input with a built-in surrogate; got {h.dtype} "
            f"and {act.surrogate!r}")
    return triton_lif.bntt_lif_triton if usable else bntt_lif


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
