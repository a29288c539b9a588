"""Peer frameworks for the benchmarks: the same LIF neuron and the same Spiking-DeepLab written
with snnTorch and with SpikingJelly neurons.

Both peers are optional: :func:`peer_status` says which can be imported, and nothing here
imports them at module level.

Neuron settings everywhere: leak λ = 0.99, threshold θ = 1.0, soft reset (subtract θ), and the
piecewise-linear surrogate of eq. (6), ``∂s/∂u = max(0, 1 - |u - θ| / θ)``:

* **snnTorch** ``Leaky(beta=λ, threshold=θ, reset_mechanism="subtract", reset_delay=False)``
  with a custom surrogate (:func:`pwl_spike`; snnTorch's ``triangular`` is not eq. (6)).
  Caveats, from snnTorch 1.0's source: its reset is *not* detached from the graph when
  ``reset_delay=False`` (the spike that triggers the immediate reset carries a gradient); and a
  membrane still above θ after its reset (i.e. ``u > 2θ`` on the previous step) has θ
  subtracted once more before the threshold test, so its spikes differ from eqs. (2)-(3)
  unless the input currents stay below θ.
* **SpikingJelly** ``LIFNode(tau=1/(1-λ), decay_input=False, v_reset=None, v_threshold=θ,
  detach_reset=True)``: ``H = V - V/τ + X`` is ``λV + X`` (τ = 100 for λ = 0.99). Surrogate
  ``"builtin"``: ``surrogate.PiecewiseQuadratic(alpha=1/θ)``, whose *derivative* is the
  triangle ``α - α²|u - θ|`` (clamped at 0), i.e. eq. (6) for θ = 1; it runs SpikingJelly's
  fused CPU/CUDA operator. It fires on ``u >= θ`` (eq. (3): ``u > θ``). Surrogate
  ``"custom"``: :func:`pwl_spike` (fires on ``u > θ``), which sends SpikingJelly down its
  plain-PyTorch reference path (one autograd graph per step).

The network (:class:`PeerDeepLab`) repeats spikeseg's Spiking-DeepLab (Table 1; VGG9 with
dilated convolutions, BNTT + LIF) layer for layer, with the same parameters, so that
:func:`copy_spikeseg_weights` can load a spikeseg model's weights into it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "PeerDeepLab",
    "PWLSurrogate",
    "SNNTORCH_RESET_NOTE",
    "copy_spikeseg_weights",
    "make_neuron",
    "peer_status",
    "pwl_spike",
    "sj_tau",
]

SNNTORCH_RESET_NOTE = (
    "snnTorch's Leaky (reset_delay=False) subtracts θ once more from a membrane still above θ "
    "after its reset (u > 2θ on the previous step) before testing the threshold, so its "
    "spikes follow eqs. (2)-(3) only while the input currents stay below θ"
)

# SpikingJelly's import makes torch log "Triton not available" twice on CPU-only installs.
logging.getLogger("torch._library.triton").setLevel(logging.ERROR)


# --------------------------------------------------------------------------------------------
# Availability
# --------------------------------------------------------------------------------------------


def peer_status() -> dict[str, str | None]:
    """``{"snntorch": None or why not, "spikingjelly": None or why not}``."""
    out: dict[str, str | None] = {}
    for name, module in (
        ("snntorch", "snntorch"),
        ("spikingjelly", "spikingjelly.activation_based.neuron"),
    ):
        try:
            __import__(module)
            out[name] = None
        except Exception as e:  # ImportError, or a missing dependency of theirs
            out[name] = f"{type(e).__name__}: {e}"
    return out


# --------------------------------------------------------------------------------------------
# Eq. (6) surrogate as a torch.autograd.Function
# --------------------------------------------------------------------------------------------


class _PWLSpike(torch.autograd.Function):
    """Spike ``(v > 0)`` of the *shifted* membrane ``v = u - θ``; backward ``max(0, 1-|v|/θ)``."""

    @staticmethod
    def forward(ctx, v: Tensor, threshold: float) -> Tensor:
        ctx.save_for_backward(v)
        ctx.threshold = threshold
        return (v > 0).to(v.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (v,) = ctx.saved_tensors
        g = (1.0 - v.abs() / ctx.threshold).clamp_(min=0.0)
        return grad * g, None


def pwl_spike(v: Tensor, threshold: float = 1.0) -> Tensor:
    """Eq. (3)/(6) spike of the shifted membrane ``v = u - θ`` (what snnTorch and SpikingJelly
    pass to their surrogate functions)."""
    return _PWLSpike.apply(v, threshold)


class PWLSurrogate(nn.Module):
    """:func:`pwl_spike` as a module (for SpikingJelly's ``surrogate_function``)."""

    def __init__(self, threshold: float = 1.0) -> None:
        super().__init__()
        self.threshold = float(threshold)

    def forward(self, v: Tensor) -> Tensor:
        return _PWLSpike.apply(v, self.threshold)


# --------------------------------------------------------------------------------------------
# Neurons with one interface: reset(), step(x) -> s, seq(x[T, ...]) -> s[T, ...]
# --------------------------------------------------------------------------------------------


def sj_tau(leak: float) -> float:
    """SpikingJelly's ``tau`` for a leak λ with ``decay_input=False``: ``1 - 1/τ = λ``."""
    if not 0.0 < leak < 1.0:
        raise ValueError(f"SpikingJelly's LIFNode needs 0 < leak < 1, got {leak}")
    return float(f"{1.0 / (1.0 - leak):.12g}")  # 100.0 for 0.99, not 99.99999999999991


class SnnTorchLIF(nn.Module):
    """snnTorch ``Leaky`` with explicit membrane passing (see the module docstring)."""

    def __init__(self, leak: float = 0.99, threshold: float = 1.0) -> None:
        super().__init__()
        import snntorch as snn

        theta = float(threshold)
        self.lif = snn.Leaky(
            beta=leak, threshold=theta, spike_grad=lambda v: pwl_spike(v, theta),
            reset_mechanism="subtract", reset_delay=False,
        )
        self._mem: Tensor | None = None

    def reset(self) -> None:
        # reset_mem() gives an empty tensor; Leaky replaces it by zeros shaped like the input.
        self._mem = self.lif.reset_mem()

    def step(self, x: Tensor) -> Tensor:
        if self._mem is None:
            self.reset()
        s, self._mem = self.lif(x, self._mem)
        return s

    def seq(self, x: Tensor) -> Tensor:
        self.reset()
        return torch.stack([self.step(xt) for xt in x.unbind(0)])


class SpikingJellyLIF(nn.Module):
    """SpikingJelly ``LIFNode``; ``step_mode`` ``"s"`` for :meth:`step`, ``"m"`` for :meth:`seq`."""

    def __init__(
        self, leak: float = 0.99, threshold: float = 1.0, surrogate: str = "builtin",
        step_mode: str = "m",
    ) -> None:
        super().__init__()
        from spikingjelly.activation_based import neuron
        from spikingjelly.activation_based import surrogate as sj_surrogate

        if surrogate == "builtin":
            sg: nn.Module = sj_surrogate.PiecewiseQuadratic(alpha=1.0 / threshold)
        elif surrogate == "custom":
            sg = PWLSurrogate(threshold)
        else:
            raise ValueError(f"surrogate must be 'builtin' or 'custom', not {surrogate!r}")
        self.node = neuron.LIFNode(
            tau=sj_tau(leak), decay_input=False, v_reset=None, v_threshold=float(threshold),
            surrogate_function=sg, detach_reset=True, step_mode=step_mode,
        )

    def reset(self) -> None:
        self.node.reset()

    def step(self, x: Tensor) -> Tensor:
        self.node.step_mode = "s"
        return self.node(x)

    def seq(self, x: Tensor) -> Tensor:
        self.node.step_mode = "m"
        self.node.reset()
        return self.node(x)


def make_neuron(kind: str, leak: float = 0.99, threshold: float = 1.0) -> nn.Module:
    """``"snntorch"``, ``"spikingjelly"`` (built-in surrogate) or ``"spikingjelly-custom"``."""
    if kind == "snntorch":
        return SnnTorchLIF(leak, threshold)
    if kind == "spikingjelly":
        return SpikingJellyLIF(leak, threshold, "builtin")
    if kind == "spikingjelly-custom":
        return SpikingJellyLIF(leak, threshold, "custom")
    raise ValueError(f"unknown peer neuron {kind!r}")


# --------------------------------------------------------------------------------------------
# Spiking-DeepLab (Table 1) with peer neurons
# --------------------------------------------------------------------------------------------


def scale_channels(channels: int, width: float) -> int:
    """As ``spikeseg.models.layers.scale_channels``."""
    return max(1, int(round(channels * width)))


class PeerBNTT(nn.Module):
    """BNTT as in its authors' code: one ``BatchNorm2d`` per timestep, scale only (bias removed).

    Same parameters as spikeseg's ``BNTT`` (a ``[T, C]`` scale), eps 1e-4, momentum 0.1.
    """

    def __init__(self, channels: int, timesteps: int, eps: float = 1e-4, momentum: float = 0.1):
        super().__init__()
        self.bn = nn.ModuleList(
            nn.BatchNorm2d(channels, eps=eps, momentum=momentum, affine=True)
            for _ in range(timesteps)
        )
        for bn in self.bn:
            bn.bias = None

    def step(self, x: Tensor, t: int) -> Tensor:
        return self.bn[t](x)

    def seq(self, x: Tensor) -> Tensor:
        return torch.stack([self.bn[t](xt) for t, xt in enumerate(x.unbind(0))])


class PeerBlock(nn.Module):
    """conv (no bias) → BNTT → LIF."""

    def __init__(self, cin: int, cout: int, timesteps: int, neuron: nn.Module, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=False)
        self.norm = PeerBNTT(cout, timesteps)
        self.neuron = neuron

    def step(self, x: Tensor, t: int) -> Tensor:
        return self.neuron.step(self.norm.step(self.conv(x), t))

    def seq(self, x: Tensor, timesteps: int) -> Tensor:
        """``x``: ``[T·B, C, H, W]`` (time folded into the batch); same layout out."""
        h = self.norm.seq(self.conv(x).unflatten(0, (timesteps, -1)))
        return self.neuron.seq(h).flatten(0, 1)


class PeerDeepLab(nn.Module):
    """Spiking-DeepLab (VGG9, BNTT + LIF) on pre-encoded input ``[T, B, C, H, W]``.

    ``layout="step"``: time outer, layers inner (one ``[B, C, H, W]`` pass per timestep).
    ``layout="fold"``: time folded into the batch for convolutions and pools, neurons and BNTT
    on ``[T, B, ...]``. Returns logits ``[B, K, H, W]``: the 1×1 output convolution of the
    time-averaged last spikes (equal to averaging the convolution over time, as it is linear),
    bilinearly upsampled to the input size (``align_corners=True``).

    Args:
        neuron: factory called once per layer, returning a neuron with ``reset``/``step``/``seq``.
    """

    def __init__(
        self, num_classes: int, neuron: Callable[[], nn.Module], in_channels: int = 3,
        timesteps: int = 20, width: float = 1.0, layout: str = "step",
    ) -> None:
        super().__init__()
        if layout not in ("step", "fold"):
            raise ValueError(f"layout must be 'step' or 'fold', not {layout!r}")
        self.layout = layout
        self.timesteps = timesteps
        c64, c128, c256, c1024 = (scale_channels(c, width) for c in (64, 128, 256, 1024))
        spec = [
            (in_channels, c64, 1), (c64, c64, 1), "pool",
            (c64, c128, 1), (c128, c128, 1), "pool",
            (c128, c256, 1), (c256, c256, 2), (c256, c256, 2),
            (c256, c1024, 12),
        ]
        self.layers = nn.ModuleList(
            nn.AvgPool2d(3, stride=2, padding=1) if s == "pool"
            else PeerBlock(s[0], s[1], timesteps, neuron(), dilation=s[2])
            for s in spec
        )
        self.output = nn.Conv2d(c1024, num_classes, 1, bias=False)

    def blocks(self) -> list[PeerBlock]:
        return [m for m in self.layers if isinstance(m, PeerBlock)]

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 5:
            raise ValueError(f"expected [T, B, C, H, W], got {tuple(x.shape)}")
        T = x.shape[0]
        size = x.shape[-2:]
        for b in self.blocks():
            b.neuron.reset()
        if self.layout == "fold":
            h = x.flatten(0, 1)
            for layer in self.layers:
                h = layer.seq(h, T) if isinstance(layer, PeerBlock) else layer(h)
            feat = h.unflatten(0, (T, -1)).mean(0)
        else:
            acc = None
            for t, h in enumerate(x.unbind(0)):
                for layer in self.layers:
                    h = layer.step(h, t) if isinstance(layer, PeerBlock) else layer(h)
                acc = h if acc is None else acc + h
            feat = acc / T
        return F.interpolate(self.output(feat), size=size, mode="bilinear", align_corners=True)


@torch.no_grad()
def copy_spikeseg_weights(peer: PeerDeepLab, model: nn.Module) -> None:
    """Load a spikeseg ``DeepLabVGG9`` (spiking, same width/T) into ``peer``: convolutions, BNTT
    scales and running statistics, output convolution."""
    src = [m for m in model.modules() if hasattr(m, "conv") and hasattr(m, "norm")]
    dst = peer.blocks()
    if len(src) != len(dst):
        raise ValueError(f"{len(src)} conv blocks in the spikeseg model, {len(dst)} in the peer")
    for s, d in zip(src, dst, strict=True):
        d.conv.weight.copy_(s.conv.weight)
        for t, bn in enumerate(d.norm.bn):
            bn.weight.copy_(s.norm.weight[t])
            bn.running_mean.copy_(s.norm.running_mean[t])
            bn.running_var.copy_(s.norm.running_var[t])
    peer.output.weight.copy_(model.output.weight)
