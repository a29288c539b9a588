"""Residual backbones: DeepLab and FCN on membrane-shortcut (MS-ResNet) blocks.

Beyond the paper: deep spiking networks train better when the residual stream carries
membrane potentials rather than spikes (MS-ResNet, Hu et al. 2024; also SEW-ResNet, Fang et
al. 2021). A block is pre-activation::

    x ──► LIF ─► conv ─► norm ─► LIF ─► conv ─► norm ──(+)──► x'
    └──────────────────────────────────────────────────┘

so every convolution reads binary spikes (its synaptic operations are accumulates, eq. (10))
and the shortcut adds real values, as membranes do. The ANN twin is the same network with
ReLU (a pre-activation ResNet).

**DeepLab-Res** (output stride 4), channels at width 1::

    stem   conv 64 + norm                                   H
    stage1 MS-block 64                                      H
    pool, transition LIF→conv 128→norm, MS-block 128        H/2
    pool, transition LIF→conv 256→norm,
           MS-block 256 (d=2), MS-block 256 (d=2)            H/4
    classifier LIF → atrous conv 512 (3×3, d=12) → norm → LIF
    1×1 conv → classes (accumulated over time), bilinear upsample

**FCN-Res** (output stride 8): the same stem and stages (three MS-blocks of 256 at H/4), a
fourth stage (pool, transition to 512, MS-block 512) at H/8, and FCN-VGG9's decoder: a
spiking layer reads every stage's stream and its spikes feed that stage's skip score.

Compute at 64×64 input, width 1, 21 classes, per timestep (eq. (9), MACs): DeepLab-Res
1.67 G against DeepLab-VGG9's 1.37 G (1.22×), 4.29 M parameters (4.12 M); FCN-Res 1.76 G
against FCN-VGG9's 1.53 G (1.15×), 9.03 M parameters (13.57 M).
"""

from __future__ import annotations

from torch import Tensor, nn

from .builder import InjectedModel
from .layers import TimeContext, init_weights, resize, run_neuron, run_norm
from .vgg9 import FCNVGG9

__all__ = ["MSBlock", "Transition", "DeepLabRes", "FCNRes"]


class MSBlock(nn.Module):
    """Membrane-shortcut block: ``x + norm2(conv2(act2(norm1(conv1(act1(x))))))``."""

    def __init__(self, act1: nn.Module, conv1: nn.Conv2d, norm1: nn.Module, act2: nn.Module,
                 conv2: nn.Conv2d, norm2: nn.Module) -> None:
        super().__init__()
        self.act1, self.conv1, self.norm1 = act1, conv1, norm1
        self.act2, self.conv2, self.norm2 = act2, conv2, norm2

    def forward(self, x: Tensor, ctx: TimeContext | None = None) -> Tensor:
        h = run_norm(self.norm1, self.conv1(run_neuron(self.act1, x, ctx)), ctx)
        h = run_norm(self.norm2, self.conv2(run_neuron(self.act2, h, ctx)), ctx)
        return x + h


class Transition(nn.Module):
    """``norm(conv(act(x)))``: spikes of the stream into a convolution that changes width."""

    def __init__(self, act: nn.Module, conv: nn.Conv2d, norm: nn.Module) -> None:
        super().__init__()
        self.act, self.conv, self.norm = act, conv, norm

    def forward(self, x: Tensor, ctx: TimeContext | None = None) -> Tensor:
        return run_norm(self.norm, self.conv(run_neuron(self.act, x, ctx)), ctx)


class _Stem(nn.Module):
    """``norm(conv(x))`` of the input image or frames (no activation: the stream is analog)."""

    def __init__(self, conv: nn.Conv2d, norm: nn.Module) -> None:
        super().__init__()
        self.conv, self.norm = conv, norm

    def forward(self, x: Tensor, ctx: TimeContext | None = None) -> Tensor:
        return run_norm(self.norm, self.conv(x), ctx)


class _ResidualMixin:
    """Builders of the residual pieces (for classes that are also :class:`InjectedModel`)."""

    def _act(self, c: int) -> nn.Module:
        # A ReLU on the shortcut's input must not work in place: the shortcut reads x again.
        act = self.make_act(c)  # type: ignore[attr-defined]
        return nn.ReLU() if isinstance(act, nn.ReLU) else act

    def _conv(self, cin: int, cout: int, dilation: int = 1, kernel: int = 3) -> nn.Conv2d:
        pad = dilation * (kernel - 1) // 2
        return nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation,
                         bias=self.norm == "none")  # type: ignore[attr-defined]

    def stem(self, cin: int, cout: int) -> _Stem:
        return _Stem(self._conv(cin, cout), self.make_norm(cout))  # type: ignore[attr-defined]

    def ms_block(self, c: int, dilation: int = 1) -> MSBlock:
        n = self.make_norm  # type: ignore[attr-defined]
        return MSBlock(self._act(c), self._conv(c, c, dilation), n(c),
                       self._act(c), self._conv(c, c, dilation), n(c))

    def transition(self, cin: int, cout: int, dilation: int = 1) -> Transition:
        return Transition(self._act(cin), self._conv(cin, cout, dilation),
                          self.make_norm(cout))  # type: ignore[attr-defined]


def _run(layers: nn.ModuleList, x: Tensor, ctx: TimeContext | None) -> Tensor:
    for layer in layers:
        x = layer(x, ctx) if not isinstance(layer, nn.AvgPool2d) else layer(x)
    return x


class DeepLabRes(_ResidualMixin, InjectedModel):
    """(Spiking-)DeepLab on membrane-shortcut residual blocks; see the module docstring."""

    def __init__(self, num_classes: int, in_channels: int = 3, **kwargs) -> None:
        super().__init__(num_classes, in_channels, **kwargs)
        c64, c128, c256, c512 = self.ch(64), self.ch(128), self.ch(256), self.ch(512)
        self.features = nn.ModuleList([
            self.stem(in_channels, c64), self.ms_block(c64), self.pool(),
            self.transition(c64, c128), self.ms_block(c128), self.pool(),
            self.transition(c128, c256), self.ms_block(c256, 2), self.ms_block(c256, 2),
        ])
        self.classifier = Transition(self._act(c256), self._conv(c256, c512, 12),
                                     self.make_norm(c512))
        self.classifier_act = self._act(c512)
        self.output = nn.Conv2d(c512, num_classes, 1, bias=False)
        init_weights(self)

    def body(self, x: Tensor, ctx: TimeContext | None) -> tuple[Tensor, ...]:
        x = self.classifier(_run(self.features, x, ctx), ctx)
        return (run_neuron(self.classifier_act, x, ctx),)  # [N, c512, H/4, W/4] spikes

    def head(self, features: tuple[Tensor, ...], size: tuple[int, int]) -> Tensor:
        return resize(self.output(features[0]), size)


class FCNRes(_ResidualMixin, FCNVGG9):
    """(Spiking-)FCN on membrane-shortcut residual blocks with FCN-VGG9's decoder."""

    def build_encoder(self, in_channels: int) -> tuple[int, int, int, int]:
        c64, c128, c256, c512 = self.ch(64), self.ch(128), self.ch(256), self.ch(512)
        self.stage1 = nn.ModuleList([self.stem(in_channels, c64), self.ms_block(c64)])
        self.stage2 = nn.ModuleList([self.transition(c64, c128), self.ms_block(c128)])
        self.stage3 = nn.ModuleList([self.transition(c128, c256), self.ms_block(c256),
                                     self.ms_block(c256)])
        self.classifier = nn.ModuleList([self.transition(c256, c512), self.ms_block(c512)])
        # A spiking layer reads each stage's stream; its spikes feed the stage's skip score.
        self.stage_acts = nn.ModuleList([self._act(c) for c in (c64, c128, c256, c512)])
        self.avgpool = self.pool()
        return c64, c128, c256, c512

    def encode(self, x: Tensor, ctx: TimeContext | None) -> tuple[Tensor, ...]:
        outs = []
        for i, stage in enumerate((self.stage1, self.stage2, self.stage3, self.classifier)):
            x = _run(stage, x, ctx)                                   # the analog stream
            outs.append(run_neuron(self.stage_acts[i], x, ctx))       # its spikes: to a score
            x = self.avgpool(x)
        return tuple(outs)

    def spike_consumers(self) -> dict[str, list[str]]:
        raise NotImplementedError("residual models are trained directly, not converted")
