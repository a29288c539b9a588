"""The construction every spikeseg architecture shares: injected neurons, norms and blocks.

An architecture subclasses :class:`InjectedModel` and builds its layers with
:meth:`~InjectedModel.block` (conv → norm → activation), :meth:`~InjectedModel.make_act` and
:meth:`~InjectedModel.make_norm`; whether those are ANN layers (BatchNorm + ReLU) or spiking
ones (BNTT / time-shared BN / tdBN + LIF / PLIF) is decided by the options, so the ANN and
SNN of one architecture are one class (STYLE principle 2).
"""

from __future__ import annotations

from torch import nn

from ..neurons import LIF, NEURONS, PLIF
from ..norm import BNTT, NORMS, TimeSharedBN
from .base import SegmentationModel
from .layers import ConvBlock, scale_channels

__all__ = ["InjectedModel"]


class InjectedModel(SegmentationModel):
    """Shared construction of neurons, norms and conv blocks (see the module docstring).

    Besides :class:`SegmentationModel`'s arguments: ``width`` scales every channel count;
    ``leak``, ``threshold``, ``reset``, ``surrogate``, ``surrogate_options``,
    ``detach_reset`` configure the neurons (eqs. (2)-(3), (6)); ``neuron`` is ``"lif"`` or
    ``"plif"`` (learnable leak), ``learn_threshold`` learns θ too, ``learnable_per`` makes
    those parameters one per ``"layer"`` or per ``"channel"``; ``norm`` is ``bntt``, ``bn``,
    ``tdbn`` or ``none`` (ANNs: ``bn`` or ``none``); ``activation`` is the ANN's ReLU or
    leaky ReLU (slope 0.1).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        *,
        spiking: bool,
        timesteps: int = 20,
        width: float = 1.0,
        leak: float = 0.99,
        threshold: float = 1.0,
        reset: str = "soft",
        surrogate: str = "pwl",
        surrogate_options: dict | None = None,
        detach_reset: bool = True,
        bn_eps: float = 1e-4,
        bn_momentum: float = 0.1,
        activation: str = "relu",
        norm: str | None = None,
        neuron: str = "lif",
        learn_threshold: bool = False,
        learnable_per: str = "layer",
        encoding: str = "poisson",
        step_mode: str = "auto",
        input_mean: list[float] | None = None,
        propagation_steps: int = 0,
        readout_leak: float = 1.0,
    ) -> None:
        super().__init__(num_classes, in_channels, spiking, timesteps, encoding, step_mode,
                         input_mean, propagation_steps, readout_leak)
        norm = norm or ("bntt" if spiking else "bn")
        valid = NORMS if spiking else ("bn", "none")
        if norm not in valid:
            kind = "a spiking" if spiking else "an ANN"
            raise ValueError(f"norm of {kind} model must be one of {valid}, not {norm!r}")
        self.norm = norm
        if width <= 0:
            raise ValueError(f"width must be > 0, got {width}")
        if activation not in ("relu", "leaky_relu"):
            raise ValueError(f"activation must be 'relu' or 'leaky_relu', not {activation!r}")
        self.width = width
        self._neuron_kw = dict(
            leak=leak, threshold=threshold, reset=reset, surrogate=surrogate,
            surrogate_options=surrogate_options, detach_reset=detach_reset,
        )
        self._bn_kw = dict(eps=bn_eps, momentum=bn_momentum)
        self.activation = activation
        if neuron not in NEURONS:
            raise ValueError(f"neuron must be one of {NEURONS}, not {neuron!r}")
        if learnable_per not in ("layer", "channel"):
            raise ValueError(f"learnable_per must be 'layer' or 'channel', not {learnable_per!r}")
        self.neuron = neuron
        self._learn = dict(learn_leak=neuron == "plif", learn_threshold=bool(learn_threshold),
                           per=learnable_per)

    def ch(self, c: int) -> int:
        return scale_channels(c, self.width)

    def make_act(self, channels: int = 1) -> nn.Module:
        """The activation of a layer of ``channels`` channels: LIF / PLIF, or (leaky) ReLU."""
        if self.spiking:
            if self._learn["learn_leak"] or self._learn["learn_threshold"]:
                return PLIF(channels, **self._learn, **self._neuron_kw)
            return LIF(**self._neuron_kw)
        return nn.ReLU(inplace=True) if self.activation == "relu" else nn.LeakyReLU(0.1, True)

    def make_norm(self, c: int) -> nn.Module:
        if self.norm == "none":
            return nn.Identity()
        if not self.spiking:
            return nn.BatchNorm2d(c, affine=False, **self._bn_kw)
        if self.norm == "bntt":
            return BNTT(c, self.timesteps + self.propagation_steps, **self._bn_kw)
        scale = self._neuron_kw["threshold"] if self.norm == "tdbn" else 1.0
        return TimeSharedBN(c, scale=scale, **self._bn_kw)

    def block(self, cin: int, cout: int, kernel: int = 3, dilation: int = 1) -> ConvBlock:
        pad = dilation * (kernel - 1) // 2
        # Without a norm the convolution carries the bias a norm would otherwise provide.
        conv = nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation,
                         bias=self.norm == "none")
        return ConvBlock(conv, self.make_norm(cout), self.make_act(cout))

    @staticmethod
    def pool() -> nn.AvgPool2d:
        """The paper's average pool: kernel 3, stride 2, padding 1 (64 → 32 → 16 → 8)."""
        return nn.AvgPool2d(kernel_size=3, stride=2, padding=1)
