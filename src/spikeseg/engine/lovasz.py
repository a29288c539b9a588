"""The Lovász-softmax loss (Berman, Rannen Triki & Blaschko, CVPR 2018): a convex surrogate of
the Jaccard loss ``1 − IoU`` that the mIoU metric is made of (``train.lovasz_weight``).

For one image and class ``c`` with softmax probabilities ``p_c`` and ground truth
``g_c ∈ {0, 1}`` over its labelled pixels, the pixel errors ``m_i = |g_ci − p_ci|`` sorted in
decreasing order ``m_(1) ≥ m_(2) ≥ …`` are weighted by the increments of the Jaccard loss
along that order:

.. math::

    \\overline{\\Delta_J}(m) = \\sum_k m_{(k)}\\,\\big(\\Delta_J(\\{1..k\\}) − \\Delta_J(\\{1..k−1\\})\\big),
    \\qquad \\Delta_J(S) = 1 − \\frac{|g| − |g ∩ \\bar S|}{|g| + |S \\setminus g|}

(``S`` the pixels counted as errors), the Lovász extension of ``Δ_J``: on one-hot
predictions it *is* ``1 − IoU_c`` of that image. Here it is averaged over the classes present
in each image ("present" classes, the paper's VOC setting) and summed over images, so the
training loop divides by the global number of images: a sum over images, it splits over
processes exactly as the cross-entropy does.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..data import IGNORE_INDEX

__all__ = ["lovasz_softmax", "lovasz_grad"]


def lovasz_grad(gt_sorted: Tensor) -> Tensor:
    """The increments of the Jaccard loss along a sorted ground truth ``{0, 1}`` vector."""
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1.0 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if jaccard.numel() > 1:
        jaccard = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
    return jaccard


def lovasz_softmax(logits: Tensor, target: Tensor) -> Tensor:
    """Sum over the images of ``logits [B, K, H, W]`` of their Lovász-softmax loss (mean over
    the classes present among their labelled pixels; 255 ignored; 0 for an image with none)."""
    half = logits.dtype in (torch.float16, torch.bfloat16)
    probs = torch.softmax(logits.float() if half else logits, 1)
    total = probs.new_zeros(())
    for p, y in zip(probs, target, strict=True):
        keep = y != IGNORE_INDEX
        if not keep.any():
            continue
        p = p.permute(1, 2, 0)[keep]          # [P, K]
        y = y[keep]
        losses = []
        for c in torch.unique(y).tolist():
            fg = (y == c).to(p.dtype)
            errors = (fg - p[:, c]).abs()
            errors_sorted, perm = torch.sort(errors, descending=True)
            losses.append(torch.dot(errors_sorted, lovasz_grad(fg[perm])))
        total = total + torch.stack(losses).mean()
    return total
