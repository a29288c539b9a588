"""The conversion job: from an ANN checkpoint to a converted checkpoint (``spikeseg convert``).

Reads the ANN's checkpoint and its training data (from the checkpoint's metadata), runs the
algorithm of :mod:`spikeseg.convert.algorithm` and saves the spiking model as a checkpoint of
kind ``"converted"`` (:mod:`spikeseg.models.converted`), thresholds included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from ..engine.checkpoint import load_checkpoint, save_checkpoint
from ..engine.evaluate import checkpoint_dataset, resolve_device
from ..errors import SpikesegError
from ..models import model_kind
from .algorithm import ConversionConfig, convert, layer_threshold_summary

__all__ = ["save_converted", "convert_checkpoint"]


def save_converted(
    path: str | Path, snn: nn.Module, ann_meta: dict[str, Any], extra: dict[str, Any] | None = None
) -> tuple[Path, Path]:
    """Save a converted model as a spikeseg checkpoint (thresholds included).

    ``ann_meta`` is the metadata of the ANN checkpoint it came from: its model section is
    kept (the converted model is rebuilt from it, see ``load_checkpoint``), with the
    conversion settings in ``"conversion"``.
    """
    meta = {k: ann_meta[k] for k in ("config", "dataset") if k in ann_meta}
    meta["ann"] = {k: ann_meta[k] for k in ("epoch", "metrics", "best_miou") if k in ann_meta}
    meta["conversion"] = dict(snn.conversion)
    meta["converted_from"] = ann_meta.get("model", {}).get("name")
    meta.update(extra or {})
    name = ann_meta["model"]["name"]
    return save_checkpoint(path, snn, name, extra=meta)


def convert_checkpoint(
    ann_checkpoint: str | Path,
    out: str | Path,
    config: ConversionConfig | None = None,
    *,
    data_root: str | None = None,
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
) -> tuple[tuple[Path, Path], nn.Module]:
    """Convert a trained ANN checkpoint and save the spiking model as checkpoint ``out``.

    Calibration images are the first ``config.calibration_images`` of a seeded shuffle of
    the ANN's training split (read from the checkpoint's metadata).

    Returns:
        ``((weights path, metadata path), converted model)``.

    Raises:
        SpikesegError: a missing/unreadable checkpoint, a spiking checkpoint, a model that
            cannot be converted, or a dataset that cannot be read.
    """
    config = config or ConversionConfig()
    ann, meta = load_checkpoint(ann_checkpoint, map_location="cpu")
    if ann.spiking or model_kind(ann)[0] != "trained":
        raise SpikesegError(
            f"{ann_checkpoint} is a spiking model; convert the checkpoint of an ANN "
            "(deeplab or fcn)"
        )
    dev = resolve_device(device)
    train = checkpoint_dataset(meta, ann, "train", int(config.calibration_timesteps), data_root,
                               source=str(ann_checkpoint))
    n = min(int(config.calibration_images), len(train))
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]
    loader = DataLoader(Subset(train, order.tolist()), batch_size=16)
    snn = convert(ann, loader, config, device=dev, seed=seed, progress=progress)
    paths = save_converted(out, snn.cpu(), meta, extra={
        "converted_from_checkpoint": str(ann_checkpoint),
        "thresholds": layer_threshold_summary(snn),
    })
    return paths, snn
