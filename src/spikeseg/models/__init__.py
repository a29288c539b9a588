"""Segmentation models, built by name: ``create(name, num_classes, ...)``, ``list_models()``."""

from . import zoo  # noqa: F401  (registers the models)
from .base import SegmentationModel
from .layers import count_parameters
from .registry import ModelEntry, create, list_models, model_entry, register_model
from .vgg9 import FCNVGG9, DeepLabVGG9

__all__ = [
    "DeepLabVGG9",
    "FCNVGG9",
    "ModelEntry",
    "SegmentationModel",
    "count_parameters",
    "create",
    "list_models",
    "model_entry",
    "register_model",
]
