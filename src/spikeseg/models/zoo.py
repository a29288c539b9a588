"""The four models of Table 1: Spiking-DeepLab, Spiking-FCN and their ANN twins."""

from __future__ import annotations

from .registry import register_model
from .vgg9 import FCNVGG9, DeepLabVGG9


@register_model("spiking_deeplab", arch=DeepLabVGG9, spiking=True, twin="deeplab")
def spiking_deeplab(num_classes: int, in_channels: int = 3, **options) -> DeepLabVGG9:
    """Spiking-DeepLab: VGG9 with dilated convolutions, BNTT + LIF (Table 1)."""
    return DeepLabVGG9(num_classes, in_channels, spiking=True, **options)


@register_model("deeplab", arch=DeepLabVGG9, spiking=False, twin="spiking_deeplab")
def deeplab(num_classes: int, in_channels: int = 3, **options) -> DeepLabVGG9:
    """DeepLab-VGG9 ANN (BatchNorm + ReLU), the twin of Spiking-DeepLab."""
    return DeepLabVGG9(num_classes, in_channels, spiking=False, **options)


@register_model("spiking_fcn", arch=FCNVGG9, spiking=True, twin="fcn")
def spiking_fcn(num_classes: int, in_channels: int = 3, **options) -> FCNVGG9:
    """Spiking-FCN: VGG9 with skip scores and a transposed-conv decoder, BNTT + LIF (Table 1)."""
    return FCNVGG9(num_classes, in_channels, spiking=True, **options)


@register_model("fcn", arch=FCNVGG9, spiking=False, twin="spiking_fcn")
def fcn(num_classes: int, in_channels: int = 3, **options) -> FCNVGG9:
    """FCN-VGG9 ANN (BatchNorm + ReLU), the twin of Spiking-FCN."""
    return FCNVGG9(num_classes, in_channels, spiking=False, **options)
