"""Training, evaluation, metrics and checkpoints."""

from .checkpoint import load_checkpoint, save_checkpoint
from .evaluate import EvalResult, evaluate, evaluate_checkpoint
from .metrics import ConfusionMatrix, SegmentationScores
from .train import TrainResult, train

__all__ = [
    "ConfusionMatrix",
    "EvalResult",
    "SegmentationScores",
    "TrainResult",
    "evaluate",
    "evaluate_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
    "train",
]
