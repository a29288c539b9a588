"""Pixel-wise knowledge distillation from a trained teacher (``train.teacher``).

A spiking student learns from the soft per-pixel class distributions of a trained teacher, most
often its own ANN twin (Hinton, Vinyals & Dean 2015; pixel-wise distillation for segmentation
as in Liu et al., CVPR 2019; ANN-to-SNN distillation as in Xu et al., CVPR 2023). With student
logits ``s`` and teacher logits ``t`` at a pixel, and temperature ``τ``:

.. math::

    L_{KD} = τ^2 \\, \\mathrm{KL}\\big(\\mathrm{softmax}(t/τ)\\,\\|\\,\\mathrm{softmax}(s/τ)\\big)
           = τ^2 \\sum_c p^t_c \\,(\\log p^t_c − \\log p^s_c)

(the ``τ²`` keeps the gradient's scale independent of ``τ``). The training loop adds
``train.distill_weight`` times its mean over every pixel of the batch (labelled or not: the
teacher has an opinion on ignored pixels too) to the cross-entropy; :func:`distillation_loss`
returns the sum over pixels, so that under torchrun each process divides by the global pixel
count and N processes compute one process's step.

The teacher is any spikeseg checkpoint of the same dataset (same classes and input channels):
an ANN twin sees the same images, or the same T event frames, as the student; a spiking
teacher gets the same Poisson keys. It runs without gradients, in eval mode, every step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import SpikesegError
from .checkpoint import load_checkpoint

__all__ = ["distillation_loss", "load_teacher"]


def distillation_loss(student: Tensor, teacher: Tensor, temperature: float = 1.0) -> Tensor:
    """``τ² · Σ_pixels KL(softmax(teacher/τ) ‖ softmax(student/τ))`` over the class axis 1.

    Args:
        student: logits ``[B, K, H, W]`` (the gradient flows into these).
        teacher: logits of the same shape (treated as constants).
        temperature: ``τ > 0``; 1 compares the distributions as they are.

    Returns:
        A scalar: the sum over the ``B·H·W`` pixels (divide by the pixel count for the mean).
    """
    if student.shape != teacher.shape:
        raise ValueError(f"student logits {tuple(student.shape)} and teacher logits "
                         f"{tuple(teacher.shape)} differ in shape")
    dtype = torch.promote_types(torch.promote_types(student.dtype, teacher.dtype),
                                torch.float32)  # half-precision logits in float32
    log_ps = F.log_softmax(student.to(dtype) / temperature, dim=1)
    log_pt = F.log_softmax(teacher.detach().to(dtype) / temperature, dim=1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum()
    return kl * (temperature * temperature)


def load_teacher(path: str | Path, dataset: dict[str, Any], num_classes: int,
                 in_channels: int) -> tuple[nn.Module, dict[str, Any]]:
    """The frozen teacher of checkpoint ``path``, checked against the student's dataset.

    Args:
        path: a spikeseg checkpoint (``NAME.safetensors`` + ``NAME.json``).
        dataset: the student's dataset description (``name``, ``class_names``, ...).
        num_classes: the student's classes.
        in_channels: the student's input channels.

    Returns:
        ``(model, metadata)``: the model in eval mode with ``requires_grad`` off.

    Raises:
        SpikesegError: a missing or unreadable checkpoint, or one for other classes or inputs.
    """
    try:
        model, meta = load_checkpoint(path)
    except SpikesegError as e:
        raise SpikesegError(f"train.teacher: {e}") from None
    theirs = meta.get("dataset") or {}
    k = int(meta["model"].get("num_classes", -1))
    c = int(meta["model"].get("in_channels", -1))
    fix = ("give a checkpoint trained on the same dataset (e.g. the ANN twin: spikeseg train "
           "--set model.name=deeplab ...)")
    if k != num_classes:
        raise SpikesegError(f"train.teacher {path} predicts {k} classes, this run's dataset has "
                            f"{num_classes}; {fix}")
    if c != in_channels:
        raise SpikesegError(f"train.teacher {path} takes {c} input channels, this run's dataset "
                            f"has {in_channels}; {fix}")
    names = theirs.get("class_names")
    if names is not None and list(names) != list(dataset["class_names"]):
        raise SpikesegError(f"train.teacher {path} was trained on classes {list(names)[:4]}..., "
                            f"this run's are {list(dataset['class_names'])[:4]}...; {fix}")
    if "temporal" in theirs and bool(theirs["temporal"]) != bool(dataset.get("temporal")):
        kind = "event frames" if theirs["temporal"] else "images"
        raise SpikesegError(f"train.teacher {path} was trained on {kind}, this run's dataset "
                            f"{dataset.get('name')!r} is not; {fix}")
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval(), meta
