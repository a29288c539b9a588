"""Evaluation: mIoU, per-class IoU and pixel accuracy of a model on a dataset split."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .. import rng
from ..config import Config, DataConfig
from ..data import IGNORE_INDEX, SegmentationDataset, build_dataset, dataset_accepts
from ..errors import SpikesegError
from ..progress import progress as progress_bar
from .checkpoint import load_checkpoint
from .distributed import all_reduce_sum
from .metrics import ConfusionMatrix, SegmentationScores

__all__ = [
    "Indexed",
    "batch_keys",
    "model_dtype",
    "evaluate",
    "evaluate_checkpoint",
    "EvalResult",
    "resolve_device",
    "prepare_model",
    "build_split",
    "checkpoint_data_config",
    "checkpoint_dataset",
    "checkpoint_seed",
    "data_timesteps",
    "baseline_scores",
]


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; otherwise ``torch.device(device)``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise SpikesegError(f"unknown device {device!r} (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SpikesegError(f"device {device!r} requested but CUDA is not available; use device=cpu")
    return dev


def use_channels_last(device: torch.device, setting: bool | None) -> bool:
    """Channels-last on CPU unless told otherwise (1.18x faster there; docs/benchmarks.md)."""
    return device.type == "cpu" if setting is None else setting


def prepare_model(model: nn.Module, device: torch.device, channels_last: bool | None = None) -> nn.Module:
    """Move ``model`` to ``device`` in the fastest memory format for it."""
    model = model.to(device)
    if use_channels_last(device, channels_last):
        model = model.to(memory_format=torch.channels_last)
    return model


def to_input(x: torch.Tensor, device: torch.device, channels_last: bool,
             dtype: torch.dtype | None = None) -> torch.Tensor:
    """Move a batch to ``device`` in the model's layout (and floating-point ``dtype``).

    Image batches ``[B, C, H, W]`` go channels-last when asked; batches of time series
    ``[B, T, C, H, W]`` (as a DataLoader stacks them) become time-first ``[T, B, C, H, W]``.
    """
    x = x.to(device, dtype=dtype if dtype is not None and x.is_floating_point() else None,
             non_blocking=True)
    if x.dim() == 5:
        return x.transpose(0, 1)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating-point type of a model's parameters (float32 unless cast)."""
    p = next((t for t in model.parameters() if t.is_floating_point()), None)
    return p.dtype if p is not None else torch.float32


class Indexed(Dataset):
    """A dataset whose items are ``(input, label, index)``: the index keys the sample's random
    streams (Poisson spikes, augmentation; :mod:`spikeseg.rng`)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.info = getattr(dataset, "info", None)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int):
        x, y = self.dataset[i]
        return x, y, i


def batch_keys(batch: tuple | list, seed: int, start: int, device: torch.device,
               epoch: int = 0) -> torch.Tensor:
    """Per-sample Poisson keys of a batch ``(x, y[, index])``: from the indices an
    :class:`Indexed` dataset gives, else from the running position ``start, start + 1, ...``
    (right for loaders that read a dataset in order)."""
    if len(batch) >= 3:
        idx = torch.as_tensor(batch[2]).reshape(-1)
    else:
        idx = torch.arange(start, start + batch[1].shape[0])
    return rng.sample_keys(seed, "poisson", idx, epoch=epoch, device=device)


def build_split(
    data: DataConfig, split: str, timesteps: int | None = None
) -> SegmentationDataset:
    """The ``split`` of the dataset described by ``data``.

    Args:
        data: dataset name, root, size and options.
        split: ``"train"`` or ``"val"``.
        timesteps: for datasets of time series (event frames) whose builder takes a
            ``timesteps`` option: the number of frames per sample, i.e. the spiking model's T.
            Passed only when ``data.options`` does not set ``timesteps`` itself; ``None``
            leaves the dataset's default (single frames for ANNs).
    """
    size = data.image_size
    size = tuple(size) if isinstance(size, (list, tuple)) else (int(size), int(size))
    options = dict(data.options)
    if (
        timesteps is not None
        and "timesteps" not in options
        and dataset_accepts(data.dataset, "timesteps")
    ):
        options["timesteps"] = int(timesteps)
    return build_dataset(data.dataset, split, root=data.root, image_size=size, **options)


def data_timesteps(model_name: str, timesteps: int) -> int | None:
    """Frames per sample that a model reads from an event dataset: its ``timesteps``.

    A spiking model integrates the T frames ending at the labelled one; an ANN sees the same
    T frames one by one and averages its features over them (section 5.1.1 of the paper: "for
    ANNs, we give each frame to networks, and average all embedding features in temporal
    axis"). Datasets of static images ignore it.
    """
    del model_name  # the same for ANNs and SNNs (kept for callers' clarity)
    return int(timesteps)


@dataclass
class EvalResult:
    """Scores of one evaluation, with what produced them."""

    scores: SegmentationScores
    class_names: list[str]
    timesteps: int | None
    num_images: int

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.scores.as_dict(self.class_names),
            "timesteps": self.timesteps,
            "num_images": self.num_images,
        }


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device | str = "cpu",
    *,
    timesteps: int | None = None,
    max_batches: int | None = None,
    seed: int = 0,
    progress: bool = True,
    channels_last: bool | None = None,
    desc: str = "eval",
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> EvalResult:
    """Confusion-matrix scores of ``model`` over ``loader``.

    Args:
        model: a spikeseg model (kept on its device; put into eval mode).
        loader: yields ``(input, label)`` batches.
        timesteps: T for spiking models on static input (default: the model's).
        max_batches: stop after this many batches.
        seed: seed of the Poisson encoder: sample ``i`` is coded by the stream keyed by
            ``(seed, i)`` (:mod:`spikeseg.rng`), the same in every evaluation path and for any
            batch size or number of processes.
        transform: applied to each input batch on the device (e.g. added noise); called as
            ``transform(x)``, or ``transform(x, keys=keys)`` (the batch's per-sample keys,
            :mod:`spikeseg.rng`) if it has a ``keys`` parameter.
    """
    device = torch.device(device)
    cl = use_channels_last(device, channels_last)
    model.eval()
    ds = loader.dataset
    num_classes = model.num_classes
    cm = ConfusionMatrix(num_classes, IGNORE_INDEX)
    n = 0
    total = len(loader) if max_batches is None else min(len(loader), max_batches)
    bar = progress_bar(loader, total=total, desc=desc, disable=not progress)
    takes_keys = transform is not None and _takes_keys(transform)
    for i, batch in enumerate(bar):
        if max_batches is not None and i >= max_batches:
            break
        x, y = batch[0], batch[1]
        keys = batch_keys(batch, seed, n, device)
        x = to_input(x, device, cl, model_dtype(model))
        if transform is not None:
            x = transform(x, keys=keys) if takes_keys else transform(x)
        if getattr(model, "spiking", False):
            logits = model(x, timesteps=timesteps, keys=keys)
        else:
            logits = model(x)
        try:
            cm.update(logits.argmax(1).cpu(), y)
        except ValueError as e:
            raise SpikesegError(f"validation data: {e}") from None
        n += y.shape[0]
    bar.close()
    cm.all_reduce()
    n = int(all_reduce_sum([float(n)], device)[0])
    names = getattr(getattr(ds, "info", None), "class_names", None) or [
        str(i) for i in range(num_classes)
    ]
    t = (timesteps or model.timesteps) if getattr(model, "spiking", False) else None
    return EvalResult(cm.compute(), list(names), t, n)


def _takes_keys(fn: Callable) -> bool:
    import inspect

    try:
        return "keys" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def evaluate_checkpoint(
    checkpoint: str | Path,
    *,
    timesteps: int | None = None,
    split: str = "val",
    batch_size: int = 16,
    device: str = "auto",
    data_root: str | None = None,
    max_batches: int | None = None,
    progress: bool = True,
    seed: int | None = None,
) -> tuple[EvalResult, dict[str, Any]]:
    """Evaluate checkpoint ``checkpoint`` on the dataset it was trained on.

    Args:
        seed: seed of the Poisson streams (default: the run's training seed, so the score
            equals the validation mIoU the run recorded).

    Returns:
        ``(result, metadata)``.
    """
    dev = resolve_device(device)
    model, meta = load_checkpoint(checkpoint, map_location="cpu")
    if seed is None:
        seed = checkpoint_seed(meta)
    # Event datasets give a model as many frames as the timesteps it runs for.
    frames = timesteps or model.timesteps
    ds = checkpoint_dataset(meta, model, split, frames, data_root, source=str(checkpoint))
    loader = DataLoader(Indexed(ds), batch_size=batch_size, shuffle=False,
                        num_workers=checkpoint_data_config(meta).num_workers)
    model = prepare_model(model, dev)
    result = evaluate(
        model, loader, dev, timesteps=timesteps, max_batches=max_batches, progress=progress,
        seed=seed,
    )
    return result, meta


def checkpoint_seed(meta: dict) -> int:
    """The training seed a checkpoint's run used (0 if it records none)."""
    seed = meta.get("config", {}).get("train", {}).get("seed", 0)
    return int(seed) if isinstance(seed, int) and not isinstance(seed, bool) else 0


def checkpoint_dataset(
    meta: dict,
    model: nn.Module,
    split: str,
    timesteps: int | None = None,
    data_root: str | None = None,
    source: str = "checkpoint",
) -> SegmentationDataset:
    """The ``split`` of the dataset a checkpoint was trained on (from its metadata).

    Args:
        meta: the checkpoint's metadata (``load_checkpoint``).
        model: its model, to check that the classes agree.
        split: ``"train"`` or ``"val"``.
        timesteps: frames per sample for event datasets (see :func:`build_split`).
        data_root: the dataset folder, if it moved since training.
        source: the checkpoint's name, for error messages.
    """
    data = checkpoint_data_config(meta, source)
    if data_root is not None:
        data.root = data_root
    ds = build_split(data, split, timesteps)
    if ds.num_classes != model.num_classes:
        raise SpikesegError(
            f"dataset {data.dataset} has {ds.num_classes} classes but the model of {source} "
            f"predicts {model.num_classes}"
        )
    saved = meta.get("dataset", {})
    now = ds.info.on_off_channels
    was = saved.get("on_off_channels", "unrecorded")
    if was == "unrecorded" and now == (1, 0) and data.dataset in ("builtin_events", "dsec"):
        was = (0, 1)  # count frames were ON-first before spikeseg took Tonic's order
    if was != "unrecorded" and now is not None and tuple(was or ()) != tuple(now):
        raise SpikesegError(
            f"{source} was trained on event count frames with ON, OFF in channels "
            f"{tuple(was)}, but {data.dataset} now gives them in channels {tuple(now)} "
            "(spikeseg follows Tonic's order, OFF first); retrain the model"
        )
    return ds


def checkpoint_data_config(meta: dict, source: str = "checkpoint") -> DataConfig:
    """The dataset settings a checkpoint records (validated like a config file's)."""
    cfg = meta.get("config", {}).get("data")
    if cfg is None:
        raise SpikesegError(f"{source} records no dataset; use it from Python")
    return Config.from_dict({"data": cfg}, source=f"{source} (its data settings)").data


def baseline_scores(dataset: SegmentationDataset, batch_size: int = 64) -> SegmentationScores:
    """Scores of predicting class 0 (background) everywhere on ``dataset``."""
    cm = ConfusionMatrix(dataset.num_classes, IGNORE_INDEX)
    for _, y in DataLoader(dataset, batch_size=batch_size):
        cm.update(torch.zeros_like(y), y)
    return cm.compute()
