"""Segmentation metrics from an accumulated confusion matrix (update / compute / all-reduce).

For a ``K``-class confusion matrix ``M`` (rows = ground truth, columns = prediction):

* IoU of class ``k``: ``M[k,k] / (Σ_j M[k,j] + Σ_i M[i,k] - M[k,k])`` (TP / (TP + FP + FN));
* mIoU: the mean IoU over classes that occur in the ground truth or the predictions
  (classes with ``TP + FP + FN = 0`` are undefined and left out, as in torchvision's reference);
* pixel accuracy: ``trace(M) / ΣM``; mean class accuracy: mean over classes of recall.

Pixels labelled ``ignore_index`` (255) are not counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ConfusionMatrix", "SegmentationScores"]


@dataclass
class SegmentationScores:
    """The numbers computed from a confusion matrix (fractions in [0, 1]; NaN = undefined)."""

    miou: float
    iou: list[float]
    pixel_accuracy: float
    mean_accuracy: float

    def as_dict(self, class_names: list[str] | None = None) -> dict:
        names = class_names or [str(i) for i in range(len(self.iou))]
        return {
            "miou": self.miou,
            "pixel_accuracy": self.pixel_accuracy,
            "mean_accuracy": self.mean_accuracy,
            "iou": {n: (None if math.isnan(v) else v) for n, v in zip(names, self.iou, strict=True)},
        }


class ConfusionMatrix:
    """Accumulates a ``[K, K]`` confusion matrix over batches of label maps.

    Args:
        num_classes: K.
        ignore_index: label value left out (255).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def reset(self) -> None:
        self.mat.zero_()

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch: ``pred`` class ids (or logits ``[B, K, H, W]``) and ``target`` ``[B, H, W]``.

        Raises:
            ValueError: shapes differ, or a target value is neither a class nor ignore_index.
        """
        if pred.dim() == target.dim() + 1:
            pred = pred.argmax(1)
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
        k = self.num_classes
        t = target.reshape(-1).to(torch.int64)
        p = pred.reshape(-1).to(torch.int64)
        keep = t != self.ignore_index
        t, p = t[keep], p[keep]
        if t.numel() and (t.min() < 0 or t.max() >= k):
            bad = t[(t < 0) | (t >= k)][0].item()
            raise ValueError(f"label {bad} outside 0..{k - 1} (and not ignore_index {self.ignore_index})")
        idx = t * k + p
        self.mat += torch.bincount(idx.cpu(), minlength=k * k).view(k, k)

    def all_reduce(self) -> None:
        """Sum the matrix over all processes of the default ``torch.distributed`` group."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            backend = dist.get_backend()
            m = self.mat.cuda() if backend == "nccl" else self.mat.clone()
            dist.all_reduce(m)
            self.mat = m.cpu()

    def compute(self) -> SegmentationScores:
        m = self.mat.double()
        tp = m.diag()
        gt = m.sum(1)
        pr = m.sum(0)
        union = gt + pr - tp
        iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
        acc = torch.where(gt > 0, tp / gt.clamp(min=1), torch.full_like(tp, float("nan")))
        total = m.sum()
        valid = ~torch.isnan(iou)
        return SegmentationScores(
            miou=float(iou[valid].mean()) if valid.any() else float("nan"),
            iou=[float(v) for v in iou],
            pixel_accuracy=float(tp.sum() / total) if total > 0 else float("nan"),
            mean_accuracy=float(acc[~torch.isnan(acc)].mean()) if (~torch.isnan(acc)).any() else float("nan"),
        )
