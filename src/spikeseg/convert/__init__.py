"""ANN→SNN conversion: the algorithm (:mod:`.algorithm`) and the job that runs it (:mod:`.job`)."""

from .algorithm import (
    METHODS,
    SOURCES,
    BalancedIF,
    ConversionConfig,
    calibrate,
    convert,
    fold_batchnorm,
    layer_threshold_summary,
    set_threshold,
    spiking_twin,
    thresholds,
)
from .job import convert_checkpoint, save_converted

__all__ = [
    "METHODS",
    "SOURCES",
    "BalancedIF",
    "ConversionConfig",
    "calibrate",
    "convert",
    "convert_checkpoint",
    "fold_batchnorm",
    "layer_threshold_summary",
    "save_converted",
    "set_threshold",
    "spiking_twin",
    "thresholds",
]
