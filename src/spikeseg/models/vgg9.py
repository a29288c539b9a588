"""DeepLab-VGG9 and FCN-VGG9 (Table 1 of the paper, as configured in the paper's code).

Both use a VGG9 backbone of 3×3 convolutions without bias, average pools (kernel 3,
stride 2, padding 1, so 64 → 32 → 16 → 8) and, in the spiking version, BNTT + LIF after every
convolution; the ANN twins use BatchNorm (affine=False, eps 1e-4) + ReLU. Channel counts are
multiplied by ``width`` (1.0 = the paper's network).

**DeepLab** (output stride 4)::

    conv 64, conv 64, avgpool, conv 128, conv 128, avgpool,
    conv 256, atrous conv 256 (d=2), atrous conv 256 (d=2),      # features
    atrous conv 1024 (3×3, d=12)                                  # classifier
    1×1 conv → classes (accumulated over time), bilinear upsample to the input size

**FCN** (output stride 8, three skip "scores")::

    conv 64, conv 64, [score1], avgpool, conv 128, conv 128, [score2], avgpool,
    conv 256 ×3, [score3], avgpool,                               # features
    conv 1024 (3×3), conv 1024 (3×3), [score4]                    # classifier
    decoder: up1 = LIF(resize(tconv(score4)) + score3)   at H/4
             up2 = LIF(resize(tconv(up1))   + score2)    at H/2
             out =      resize(tconv(up2))  + score1     at H, accumulated over time

A score is a 1×1 convolution (with bias) from the spikes before a pool to the classes; a
``tconv`` is a transposed convolution classes → classes (kernel 3, stride 2, no bias) followed
by a bilinear resize to the exact skip resolution, so any input size works.
"""

from __future__ import annotations

from torch import Tensor, nn

from .builder import InjectedModel
from .layers import ConvBlock, NeuronSlot, TimeContext, init_weights, resize

__all__ = ["DeepLabVGG9", "FCNVGG9"]


class DeepLabVGG9(InjectedModel):
    """(Spiking-)DeepLab with a VGG9 backbone; see the module docstring."""

    def __init__(self, num_classes: int, in_channels: int = 3, **kwargs) -> None:
        super().__init__(num_classes, in_channels, **kwargs)
        c64, c128, c256, c1024 = self.ch(64), self.ch(128), self.ch(256), self.ch(1024)
        self.features = nn.ModuleList([
            self.block(in_channels, c64), self.block(c64, c64), self.pool(),
            self.block(c64, c128), self.block(c128, c128), self.pool(),
            self.block(c128, c256), self.block(c256, c256, dilation=2),
            self.block(c256, c256, dilation=2),
        ])
        self.classifier = nn.ModuleList([self.block(c256, c1024, dilation=12)])
        self.output = nn.Conv2d(c1024, num_classes, 1, bias=False)
        init_weights(self)

    def body(self, x: Tensor, ctx: TimeContext | None) -> tuple[Tensor, ...]:
        for layer in (*self.features, *self.classifier):
            x = layer(x, ctx) if isinstance(layer, ConvBlock) else layer(x)
        return (x,)  # [N, c1024, H/4, W/4]

    def head(self, features: tuple[Tensor, ...], size: tuple[int, int]) -> Tensor:
        return resize(self.output(features[0]), size)

    def spike_consumers(self) -> dict[str, list[str]]:
        blocks = [f"features.{i}" for i, m in enumerate(self.features) if isinstance(m, ConvBlock)]
        blocks.append("classifier.0")
        return {
            b: [f"{nxt}.conv"] for b, nxt in zip(blocks, blocks[1:], strict=False)
        } | {blocks[-1]: ["output"]}


class FCNVGG9(InjectedModel):
    """(Spiking-)FCN with a VGG9 backbone and three skip scores; see the module docstring."""

    def __init__(self, num_classes: int, in_channels: int = 3, **kwargs) -> None:
        super().__init__(num_classes, in_channels, **kwargs)
        self.build_decoder(*self.build_encoder(in_channels))
        init_weights(self)

    def build_encoder(self, in_channels: int) -> tuple[int, int, int, int]:
        """The VGG9 stages; returns the channels of the four skip points (H, H/2, H/4, H/8)."""
        c64, c128, c256, c1024 = self.ch(64), self.ch(128), self.ch(256), self.ch(1024)
        self.stage1 = nn.ModuleList([self.block(in_channels, c64), self.block(c64, c64)])
        self.stage2 = nn.ModuleList([self.block(c64, c128), self.block(c128, c128)])
        self.stage3 = nn.ModuleList(
            [self.block(c128, c256), self.block(c256, c256), self.block(c256, c256)]
        )
        self.classifier = nn.ModuleList([self.block(c256, c1024), self.block(c1024, c1024)])
        self.avgpool = self.pool()
        return c64, c128, c256, c1024

    def build_decoder(self, c1: int, c2: int, c3: int, c4: int) -> None:
        """Skip scores from the four skip points and the transposed-conv decoder."""
        k = self.num_classes
        self.score1 = nn.Conv2d(c1, k, 1)
        self.score2 = nn.Conv2d(c2, k, 1)
        self.score3 = nn.Conv2d(c3, k, 1)
        self.score4 = nn.Conv2d(c4, k, 1)
        self.up1 = nn.ConvTranspose2d(k, k, 3, stride=2, bias=False)
        self.up2 = nn.ConvTranspose2d(k, k, 3, stride=2, bias=False)
        self.up3 = nn.ConvTranspose2d(k, k, 3, stride=2, bias=False)
        self.up1_act = NeuronSlot(self.make_act(k) if self.spiking else nn.Identity())
        self.up2_act = NeuronSlot(self.make_act(k) if self.spiking else nn.Identity())

    @staticmethod
    def _run(layers: nn.ModuleList, x: Tensor, ctx: TimeContext | None) -> Tensor:
        for layer in layers:
            x = layer(x, ctx)
        return x

    def encode(self, x: Tensor, ctx: TimeContext | None) -> tuple[Tensor, ...]:
        """The outputs ``(s1, s2, s3, s4)`` at H, H/2, H/4, H/8 that the skip scores read."""
        s1 = self._run(self.stage1, x, ctx)                        # H
        s2 = self._run(self.stage2, self.avgpool(s1), ctx)         # H/2
        s3 = self._run(self.stage3, self.avgpool(s2), ctx)         # H/4
        s4 = self._run(self.classifier, self.avgpool(s3), ctx)     # H/8
        return s1, s2, s3, s4

    def body(self, x: Tensor, ctx: TimeContext | None) -> tuple[Tensor, ...]:
        s1, s2, s3, s4 = self.encode(x, ctx)
        u1 = resize(self.up1(self.score4(s4)), s3.shape[-2:]) + self.score3(s3)
        u1 = self.up1_act(u1, ctx)
        u2 = resize(self.up2(u1), s2.shape[-2:]) + self.score2(s2)
        u2 = self.up2_act(u2, ctx)
        return (u2, s1)

    def spike_consumers(self) -> dict[str, list[str]]:
        graph: dict[str, list[str]] = {}
        stages = [("stage1", 2, "score1"), ("stage2", 2, "score2"), ("stage3", 3, "score3"),
                  ("classifier", 2, "score4")]
        for k, (stage, n, score) in enumerate(stages):
            for i in range(n - 1):
                graph[f"{stage}.{i}"] = [f"{stage}.{i + 1}.conv"]
            nxt = [f"{stages[k + 1][0]}.0.conv"] if k + 1 < len(stages) else []
            graph[f"{stage}.{n - 1}"] = [*nxt, score]
        return graph

    def head(self, features: tuple[Tensor, ...], size: tuple[int, int]) -> Tensor:
        u2, s1 = features
        out = resize(self.up3(u2), s1.shape[-2:]) + self.score1(s1)
        return resize(out, size)
