"""Segmentation models, built by name: ``create(name, num_classes, ...)``, ``list_models()``."""

from . import converted, zoo  # noqa: F401  (register the models and the "converted" kind)
from .base import SegmentationModel
from .layers import count_parameters
from .registry import (
    ModelEntry,
    build_from_metadata,
    create,
    list_kinds,
    list_models,
    model_entry,
    model_kind,
    register_kind,
    register_model,
)
from .resnet import DeepLabRes, FCNRes
from .vgg9 import FCNVGG9, DeepLabVGG9

__all__ = [
    "DeepLabRes",
    "DeepLabVGG9",
    "FCNRes",
    "FCNVGG9",
    "ModelEntry",
    "build_from_metadata",
    "SegmentationModel",
    "count_parameters",
    "create",
    "list_kinds",
    "list_models",
    "model_kind",
    "model_entry",
    "register_kind",
    "register_model",
]
