"""Training with surrogate-gradient BPTT (ANNs with plain backprop), the paper's recipe.

Defaults (section 5.1.2): Adam, lr 3e-3, batch 16, 60 epochs, lr ÷10 at 50% of the epochs,
spatial cross-entropy (eq. (5)) ignoring label 255. A run writes to ``out_dir/name/``::

    config.yaml               the resolved configuration
    metrics.csv               one row per epoch (loss, lr, validation mIoU, ...)
    checkpoints/epoch_NNN.*   a checkpoint per epoch (safetensors + json)
    checkpoints/best.*        the best validation mIoU so far
    checkpoints/last.*        the latest epoch, and train_state.pt to resume from it

Everything is written atomically after each epoch, so ``train(cfg, resume=True)`` (CLI:
``--resume``) continues an interrupted run from its last completed epoch with the same
optimizer, scheduler and random state.
"""

from __future__ import annotations

import csv
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .. import __version__
from ..config import Config, save_config
from ..data import IGNORE_INDEX
from ..errors import SpikesegError
from ..models import count_parameters, create, model_entry
from ..progress import progress as progress_bar
from .checkpoint import atomic_torch_save, load_state, save_checkpoint
from .distributed import ShardSampler, all_reduce_sum, barrier, init_distributed
from .evaluate import (
    EvalResult,
    build_split,
    data_timesteps,
    evaluate,
    prepare_model,
    resolve_device,
    to_input,
)

__all__ = ["train", "TrainResult", "segmentation_loss"]

METRIC_FIELDS = [
    "epoch", "lr", "train_loss", "train_pixel_accuracy", "val_miou", "val_pixel_accuracy",
    "val_mean_accuracy", "epoch_seconds",
]


@dataclass
class TrainResult:
    """What a training run produced."""

    run_dir: Path
    best_miou: float
    best_epoch: int
    last_eval: EvalResult | None
    best_checkpoint: Path
    last_checkpoint: Path


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. (5): pixel-wise cross-entropy averaged over labelled pixels (255 ignored)."""
    return F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)


def check_labels(y: torch.Tensor, num_classes: int, where: str) -> None:
    """SpikesegError if ``y`` holds a value that is neither a class id nor 255 (ignore)."""
    bad = (y != IGNORE_INDEX) & ((y < 0) | (y >= num_classes))
    if bad.any():
        v = int(y[bad][0])
        raise SpikesegError(
            f"{where}: label {v} is outside the classes 0..{num_classes - 1} (255 = ignore); "
            "check the dataset's labels or its number of classes"
        )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _milestones(cfg: Config) -> list[int]:
    """LR milestones in epochs (fractions < 1 are of the total epochs)."""
    out = []
    for m in cfg.train.lr_milestones:
        e = int(round(m * cfg.train.epochs)) if 0 < m < 1 else int(m)
        if e < 0:
            raise SpikesegError(f"train.lr_milestones: {m} is negative")
        out.append(e)
    return sorted(out)


def _optimizer(cfg: Config, params) -> torch.optim.Optimizer:
    t = cfg.train
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay, amsgrad=t.amsgrad)
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=0.9, weight_decay=t.weight_decay)
    raise SpikesegError(f"train.optimizer must be 'adam' or 'sgd', not {t.optimizer!r}")


def build_model(cfg: Config, num_classes: int, in_channels: int) -> torch.nn.Module:
    """The model of ``cfg.model`` for a dataset with these classes and channels."""
    try:
        entry = model_entry(cfg.model.name)
        return create(
            cfg.model.name, num_classes, in_channels, timesteps=cfg.model.timesteps,
            **cfg.model.model_options(entry.spiking),
        )
    except ValueError as e:
        raise SpikesegError(f"model: {e}") from None


def _append_csv(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRIC_FIELDS)
        if new:
            w.writeheader()
        w.writerow({k: row.get(k, "") for k in METRIC_FIELDS})


def _fmt(v: float) -> str:
    return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def train(cfg: Config, *, resume: bool = False, progress: bool = True, log=print) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data`` with ``cfg.train``; see the module docstring.

    Args:
        cfg: the run configuration.
        resume: continue the run in ``out_dir/name`` from its last completed epoch.
        progress: show progress bars.
        log: where to send the per-epoch lines (``print`` by default).
    """
    t = cfg.train
    if t.threads:
        torch.set_num_threads(t.threads)
    info_d, device = init_distributed(resolve_device(t.device))
    if not info_d.is_main:
        log, progress = (lambda *_a, **_k: None), False
    seed_everything(t.seed)

    frames = data_timesteps(cfg.model.name, cfg.model.timesteps)
    train_set = build_split(cfg.data, "train", frames)
    val_set = build_split(cfg.data, "val", frames)
    info = train_set.info
    model = build_model(cfg, info.num_classes, info.in_channels)
    spiking = model_entry(cfg.model.name).spiking
    name = t.name or f"{cfg.model.name}-{cfg.data.dataset}"
    run_dir = Path(t.out_dir) / name
    ck_dir = run_dir / "checkpoints"
    state_path = ck_dir / "train_state.pt"
    if resume and not state_path.is_file():
        raise SpikesegError(f"nothing to resume in {run_dir}: {state_path.name} not found")
    if not resume and run_dir.exists() and info_d.is_main:
        # Never overwrite a run: take the next free name (name-2, name-3, ...).
        n = 2
        while (Path(t.out_dir) / f"{name}-{n}").exists():
            n += 1
        name = f"{name}-{n}"
    if info_d.enabled:  # every process uses rank 0's choice of name
        box = [name]
        torch.distributed.broadcast_object_list(box, src=0)
        name = box[0]
    run_dir = Path(t.out_dir) / name
    ck_dir, state_path = run_dir / "checkpoints", run_dir / "checkpoints" / "train_state.pt"
    cfg.train.name = name
    if info_d.is_main:
        ck_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    if not resume:
        log(f"run directory {run_dir} (if interrupted, continue with --set train.name={name} --resume)")

    cl = t.channels_last
    model = prepare_model(model, device, cl)
    net = model  # the plain module (not the DDP wrapper): attributes, evaluation, checkpoints
    optimizer = _optimizer(cfg, model.parameters())
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, _milestones(cfg), gamma=t.lr_gamma)
    start_epoch, best_miou, best_epoch = 0, -1.0, -1
    if resume:
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        load_state(net, state["model"], source=str(state_path))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best_miou, best_epoch = state["epoch"] + 1, state["best_miou"], state["best_epoch"]
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        log(f"resuming {run_dir} after epoch {state['epoch'] + 1}")

    # The shuffle is seeded by (seed, epoch), so a resumed run sees the same order; under
    # torchrun each process takes its own shard.
    train_sampler = ShardSampler(len(train_set), info_d, shuffle=True, seed=t.seed, drop_last=True)
    if len(train_sampler) < t.batch_size:
        raise SpikesegError(
            f"training split has {len(train_sampler)} samples per process, fewer than "
            f"train.batch_size={t.batch_size}"
        )
    train_loader = DataLoader(
        train_set, batch_size=t.batch_size, sampler=train_sampler, drop_last=True,
        num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda",
    )
    val_loader = DataLoader(val_set, batch_size=t.batch_size, num_workers=cfg.data.num_workers,
                            sampler=ShardSampler(len(val_set), info_d, shuffle=False))
    if info_d.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None
        )
    log(
        f"{cfg.model.name}: {count_parameters(model) / 1e6:.2f} M parameters, "
        f"{info.num_classes} classes, {len(train_set)} train / {len(val_set)} val images, "
        f"device {device}" + (f" x {info_d.world_size} processes" if info_d.enabled else "")
        + (f", T={cfg.model.timesteps}" if spiking else "")
    )
    cl_on = device.type == "cpu" if cl is None else cl
    steps = len(train_loader) if t.max_steps_per_epoch is None else min(
        len(train_loader), t.max_steps_per_epoch)
    last_eval: EvalResult | None = None
    meta_base = {
        "config": cfg.to_dict(),
        "dataset": {"name": info.name, "class_names": info.class_names,
                    "in_channels": info.in_channels, "temporal": info.temporal},
    }
    for epoch in range(start_epoch, t.epochs):
        train_sampler.set_epoch(epoch)
        model.train()
        t0 = time.perf_counter()
        loss_sum, correct, labelled = 0.0, 0, 0
        bar = progress_bar(total=steps, desc=f"epoch {epoch + 1}/{t.epochs}", disable=not progress)
        for i, (x, y) in enumerate(train_loader):
            if i >= steps:
                break
            check_labels(y, info.num_classes, f"training batch {i + 1} of epoch {epoch + 1}")
            x = to_input(x, device, cl_on)
            y = y.to(device, non_blocking=True)
            logits = model(x)
            loss = segmentation_loss(logits, y)
            if not torch.isfinite(loss):
                raise SpikesegError(
                    f"loss became {loss.item()} at epoch {epoch + 1}, step {i + 1}; "
                    "lower train.lr or set train.grad_clip"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if t.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            optimizer.step()
            with torch.no_grad():
                mask = y != IGNORE_INDEX
                correct += int((logits.argmax(1)[mask] == y[mask]).sum())
                labelled += int(mask.sum())
            loss_sum += loss.item()
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / (i + 1):.4f}")
        bar.close()
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        loss_sum, n_steps, correct, labelled = all_reduce_sum(
            [loss_sum, float(steps), float(correct), float(labelled)], device)
        row: dict[str, Any] = {
            "epoch": epoch + 1, "lr": lr, "train_loss": loss_sum / max(n_steps, 1),
            "train_pixel_accuracy": correct / max(labelled, 1),
        }
        is_last = epoch + 1 == t.epochs
        if (epoch + 1) % t.eval_every == 0 or is_last:
            last_eval = evaluate(
                net, val_loader, device, timesteps=t.eval_timesteps,
                max_batches=t.max_val_batches, progress=progress, seed=t.seed,
                channels_last=cl, desc="validate",
            )
            s = last_eval.scores
            row.update(val_miou=s.miou, val_pixel_accuracy=s.pixel_accuracy,
                       val_mean_accuracy=s.mean_accuracy)
        row["epoch_seconds"] = time.perf_counter() - t0
        miou = row.get("val_miou")
        improved = miou is not None and not math.isnan(miou) and miou > best_miou
        if improved:
            best_miou, best_epoch = miou, epoch + 1
        if info_d.is_main:
            _save_epoch(run_dir, cfg, net, optimizer, scheduler, row, meta_base, last_eval,
                        epoch, improved, best_miou, best_epoch)
        barrier()

        log(
            f"epoch {epoch + 1:3d}/{t.epochs}  loss {_fmt(row['train_loss'])}  "
            f"train pixel acc {_fmt(row['train_pixel_accuracy'])}  "
            + (f"val mIoU {_fmt(miou)}  val pixel acc {_fmt(row['val_pixel_accuracy'])}  "
               if miou is not None else "")
            + f"lr {lr:.2g}  {row['epoch_seconds']:.0f}s" + ("  *best" if improved else "")
        )
    if best_epoch < 0 and info_d.is_main:
        # No evaluation happened (e.g. resumed after the last epoch): keep "best" meaningful.
        save_checkpoint(ck_dir / "best", net, cfg.model.name, meta_base)
    barrier()
    return TrainResult(
        run_dir=run_dir, best_miou=best_miou, best_epoch=best_epoch, last_eval=last_eval,
        best_checkpoint=ck_dir / "best.safetensors", last_checkpoint=ck_dir / "last.safetensors",
    )


def _save_epoch(run_dir, cfg, net, optimizer, scheduler, row, meta_base, last_eval, epoch,
                improved, best_miou, best_epoch) -> None:
    """Write an epoch's metrics row, checkpoints and resumable training state (rank 0)."""
    ck_dir = run_dir / "checkpoints"
    _append_csv(run_dir / "metrics.csv", row)
    meta = {**meta_base, "epoch": epoch + 1, "metrics": dict(row)}
    if last_eval is not None and "val_miou" in row:
        meta["eval"] = last_eval.as_dict()
    save_checkpoint(ck_dir / f"epoch_{epoch + 1:03d}", net, cfg.model.name, meta)
    save_checkpoint(ck_dir / "last", net, cfg.model.name, meta)
    if improved:
        save_checkpoint(ck_dir / "best", net, cfg.model.name, meta)
    atomic_torch_save(
        {
            "epoch": epoch, "best_miou": best_miou, "best_epoch": best_epoch,
            "model": net.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "spikeseg_version": __version__,
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                    "python": random.getstate()},
        },
        ck_dir / "train_state.pt",
    )
