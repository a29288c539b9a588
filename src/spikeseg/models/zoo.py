"""The registered models: Table 1's Spiking-DeepLab and Spiking-FCN with their ANN twins, and
the residual (MS-ResNet) variants of both families."""

from __future__ import annotations

from .registry import register_model
from .resnet import DeepLabRes, FCNRes
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


@register_model("spiking_deeplab_res", arch=DeepLabRes, spiking=True, twin="deeplab_res")
def spiking_deeplab_res(num_classes: int, in_channels: int = 3, **options) -> DeepLabRes:
    """Spiking-DeepLab on membrane-shortcut residual blocks (MS-ResNet), 1.22x VGG9's MACs."""
    return DeepLabRes(num_classes, in_channels, spiking=True, **options)


@register_model("deeplab_res", arch=DeepLabRes, spiking=False, twin="spiking_deeplab_res")
def deeplab_res(num_classes: int, in_channels: int = 3, **options) -> DeepLabRes:
    """DeepLab on pre-activation residual blocks (ANN), the twin of spiking_deeplab_res."""
    return DeepLabRes(num_classes, in_channels, spiking=False, **options)


@register_model("spiking_fcn_res", arch=FCNRes, spiking=True, twin="fcn_res")
def spiking_fcn_res(num_classes: int, in_channels: int = 3, **options) -> FCNRes:
    """Spiking-FCN on membrane-shortcut residual blocks (MS-ResNet), 1.15x VGG9's MACs."""
    return FCNRes(num_classes, in_channels, spiking=True, **options)


@register_model("fcn_res", arch=FCNRes, spiking=False, twin="spiking_fcn_res")
def fcn_res(num_classes: int, in_channels: int = 3, **options) -> FCNRes:
    """FCN on pre-activation residual blocks (ANN), the twin of spiking_fcn_res."""
    return FCNRes(num_classes, in_channels, spiking=False, **options)
