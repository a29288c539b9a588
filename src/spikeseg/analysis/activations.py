"""How widely a trained ANN's activations vary across channels and positions (figure 4).

The paper's explanation of why conversion struggles on segmentation: with one threshold per
layer, set by the largest activation anywhere in the layer, channels and image positions whose
activations stay far below that maximum fire rarely and need very many timesteps to be
represented. For every activation layer (ReLU output) of an ANN this module records, over a
dataset,

* per channel ``c``: ``max_{images, y, x} a[c, y, x]``;
* per spatial position ``(y, x)``: ``max_{images, c} a[c, y, x]``;

each divided by the layer's overall maximum (so 1.0 is the channel / position that sets a
layer-wise threshold, and small values are the ones conversion serves badly).
"""

from __future__ import annotations

import csv
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ..errors import SpikesegError
from ..progress import progress as progress_bar

__all__ = ["LayerActivations", "activation_variation", "write_activation_report"]


@dataclass
class LayerActivations:
    """Maximum activations of one layer over a dataset."""

    name: str
    channel_max: np.ndarray
    """``[C]``: max over images and positions."""
    position_max: np.ndarray
    """``[H, W]``: max over images and channels."""

    @property
    def layer_max(self) -> float:
        return float(self.channel_max.max()) if self.channel_max.size else 0.0

    def normalised(self, kind: str) -> np.ndarray:
        """``channel_max`` or ``position_max`` (flattened) divided by the layer maximum."""
        v = (self.channel_max if kind == "channel" else self.position_max).ravel()
        m = self.layer_max
        return v / m if m > 0 else np.zeros_like(v)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"layer": self.name, "layer_max": self.layer_max,
                               "channels": int(self.channel_max.size),
                               "positions": int(self.position_max.size)}
        for kind in ("channel", "position"):
            v = self.normalised(kind)
            out[f"{kind}_median"] = float(np.median(v))
            out[f"{kind}_min"] = float(v.min())
            out[f"{kind}_below_0.1"] = float((v < 0.1).mean())
        return out


@torch.no_grad()
def activation_variation(
    ann: nn.Module,
    loader: DataLoader,
    device: torch.device | str = "cpu",
    *,
    max_batches: int | None = None,
    progress: bool = True,
) -> list[LayerActivations]:
    """Per-channel and per-position maximum activations of every ReLU layer of ``ann``.

    Args:
        ann: a spikeseg ANN that describes its layer graph (``deeplab``, ``fcn``).
        loader: batches of ``(images, labels)`` of one image size.

    Returns:
        One :class:`LayerActivations` per activation layer, in forward order.
    """
    from ..models.converted import conversion_blocks

    if getattr(ann, "spiking", False):
        raise SpikesegError("activation variation is measured on an ANN, not a spiking model")
    device = torch.device(device)
    ann = ann.to(device).eval()
    chan: dict[str, Tensor] = {}
    pos: dict[str, Tensor] = {}

    def hook(name: str):
        def fn(_m: nn.Module, _i: tuple, out: Tensor) -> None:
            c = out.amax(dim=(0, 2, 3))
            p = out.amax(dim=(0, 1))
            if name in chan:
                if pos[name].shape != p.shape:
                    raise SpikesegError(
                        "activation variation needs images of one size; got "
                        f"{tuple(pos[name].shape)} and {tuple(p.shape)} at layer {name}"
                    )
                torch.maximum(chan[name], c, out=chan[name])
                torch.maximum(pos[name], p, out=pos[name])
            else:
                chan[name], pos[name] = c.clone(), p.clone()

        return fn

    blocks = conversion_blocks(ann)
    handles = [block.act.register_forward_hook(hook(name)) for name, block in blocks]
    total = len(loader) if max_batches is None else min(len(loader), max_batches)
    try:
        bar = progress_bar(loader, total=total, desc="activations", disable=not progress)
        for i, (x, *_) in enumerate(bar):
            if max_batches is not None and i >= max_batches:
                break
            x = x.to(device)
            ann(x if x.dim() == 4 else x.transpose(0, 1))
    finally:
        for h in handles:
            h.remove()
    return [LayerActivations(name, chan[name].cpu().numpy(), pos[name].cpu().numpy())
            for name, _ in blocks if name in chan]


def write_activation_report(
    ann_checkpoint: str | Path,
    out_dir: str | Path,
    *,
    split: str = "train",
    batch_size: int = 16,
    max_batches: int | None = None,
    device: str = "auto",
    data_root: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Measure :func:`activation_variation` for an ANN checkpoint on its dataset; write files.

    Writes ``activations.csv`` (layer, kind, index, max, normalised max),
    ``activations_summary.csv``, ``activations.json`` and ``activations.png`` into
    ``out_dir``.
    """
    from ..engine.checkpoint import load_checkpoint
    from ..engine.evaluate import checkpoint_dataset, resolve_device

    ann, meta = load_checkpoint(ann_checkpoint, map_location="cpu")
    if ann.spiking:
        raise SpikesegError(f"{ann_checkpoint} is a spiking model; give an ANN checkpoint")
    ds = checkpoint_dataset(meta, ann, split, None, data_root, source=str(ann_checkpoint))
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False)
    layers = activation_variation(ann, loader, resolve_device(device), max_batches=max_batches,
                                  progress=progress)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "activations.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["layer", "kind", "index", "max", "normalised_max"])
        for la in layers:
            for kind, raw in (("channel", la.channel_max), ("position", la.position_max)):
                for idx, (v, n) in enumerate(zip(raw.ravel(), la.normalised(kind), strict=True)):
                    w.writerow([la.name, kind, idx, f"{v:.6g}", f"{n:.6g}"])
    summary = [la.summary() for la in layers]
    with open(out / "activations_summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(summary[0]))
        w.writeheader()
        w.writerows(summary)
    result = {"checkpoint": str(ann_checkpoint), "split": split, "layers": summary}
    (out / "activations.json").write_text(json.dumps(result, indent=2))
    files = [out / "activations.csv", out / "activations_summary.csv", out / "activations.json"]
    try:
        from .plots import plot_activation_variation

        files.append(plot_activation_variation(
            {la.name: (la.normalised("channel"), la.normalised("position")) for la in layers},
            out / "activations.png"))
    except SpikesegError as e:
        warnings.warn(str(e), stacklevel=2)
    result["files"] = [str(p) for p in files]
    return result
