"""Training with surrogate-gradient BPTT (ANNs with plain backprop), the paper's recipe.

Defaults (section 5.1.2): Adam, lr 3e-3, batch 16, 60 epochs, lr ÷10 at 50% of the epochs,
spatial cross-entropy (eq. (5)) over the labelled pixels (255 ignored). A run writes to
``out_dir/name/`` (see :mod:`spikeseg.engine.rundir` for the guarantees)::

    config.yaml                       what runs (resume changes are applied to it and logged)
    metrics.csv                       one row per epoch (loss, lr, validation mIoU, ...)
    resumes.jsonl                     the settings each resume changed, if any
    class_weights.json                the loss's class weights, with train.class_weight
    checkpoints/epoch_NNN.*           a checkpoint per epoch (safetensors + json)
    checkpoints/best.*                the best validation mIoU so far
    checkpoints/last.*                the latest epoch
    checkpoints/train_state.safetensors   what --resume continues from (no pickle)

**Resume.** ``train(cfg, resume=True)`` (CLI ``--resume``) continues from the last saved state:
the end of the last completed epoch, or the step where SIGTERM stopped the run. Optimizer,
model, BN statistics, RNG states and the partial epoch are restored, and the data order and
spike trains are functions of ``(seed, epoch, sample index)``, so a resumed run ends
bit-identical to an uninterrupted one. A resume that changes a setting either applies it
explicitly (:data:`SAFE_ON_RESUME`: epochs, the learning-rate schedule, evaluation settings,
device and threads — recorded in ``resumes.jsonl`` and ``config.yaml``) or is refused with the
list of changed settings.

**Signals.** SIGTERM (e.g. a cluster's pre-emption) lets the current step finish, saves the
state and returns; the run continues with ``--resume``. A SIGKILL at any instant leaves a run
that ``--resume`` continues: from the last saved state, or from the beginning if none was
saved yet.

**Divergence.** A NaN or infinite loss, gradient, weight or BN statistic stops the run with a
message; no checkpoint with a non-finite value is written, the last good one stays.

**Data parallelism** (``torchrun``): norms use global-batch statistics
(:func:`spikeseg.norm.synchronise_norms`), spike trains come from per-sample keys, and the
loss is normalised by the global number of labelled pixels, so N processes with batch B/N
compute the same step as one process with batch B.
"""

from __future__ import annotations

import math
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .. import rng
from ..config import Config, save_config
from ..data import IGNORE_INDEX
from ..data.augment import augment_batch, check_augment
from ..errors import SpikesegError
from ..io import file_sha256
from ..models import count_parameters, create, model_entry
from ..models.base import Execution
from ..neurons import get_surrogate, list_surrogates, surrogate_parameters
from ..norm import synchronise_norms
from ..progress import progress as progress_bar
from ..runtime import autocast, check_precision, configure_allocator
from .checkpoint import checkpoint_paths, load_state, non_finite_entries, save_checkpoint
from .class_weights import weights_for, write_class_weights
from .distill import distillation_loss, load_teacher
from .distributed import (
    ShardSampler,
    all_reduce_any,
    all_reduce_sum,
    barrier,
    init_distributed,
)
from .evaluate import (
    EvalResult,
    Indexed,
    build_split,
    data_timesteps,
    evaluate,
    prepare_model,
    resolve_device,
    to_input,
)
from .lovasz import lovasz_softmax
from .rundir import METRIC_FIELDS, RunLock, append_resume_record, write_metrics
from .state import STATE_NAME, load_train_state, save_train_state

__all__ = ["train", "TrainResult", "segmentation_loss", "SAFE_ON_RESUME", "METRIC_FIELDS",
           "build_model", "lr_at_epoch"]

SAFE_ON_RESUME = frozenset({
    "train.epochs", "train.lr", "train.lr_milestones", "train.lr_gamma", "train.eval_every",
    "train.eval_timesteps", "train.max_val_batches", "train.report", "train.threads",
    "train.device", "train.out_dir", "data.num_workers", "data.root", "train.checkpoint_steps",
    "train.allocator",
})
"""Settings a resume may change: they are applied from the resumed epoch on and recorded."""


@dataclass
class TrainResult:
    """What a training run produced."""

    run_dir: Path
    best_miou: float
    best_epoch: int
    last_eval: EvalResult | None
    best_checkpoint: Path
    last_checkpoint: Path
    interrupted: bool = False
    """True when SIGTERM stopped the run (its state is saved: continue with --resume)."""
    epochs_done: int = 0
    changes: dict[str, list] = field(default_factory=dict)
    """Settings this resume changed: ``{key: [saved, new]}``."""


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


def lr_at_epoch(cfg: Config, epoch: int) -> float:
    """The learning rate of (0-based) ``epoch``: ``lr · gamma^(milestones passed)``.

    A milestone ``m`` in (0, 1] is the epoch ``max(1, round(m · epochs))``; an int is an epoch
    number. From that epoch on (0-based index ``>= milestone``) the factor applies, so with 60
    epochs and ``[0.5]`` epochs 31-60 train at lr/10, and a 1-epoch run trains at lr.
    """
    t = cfg.train
    passed = 0
    for m in t.lr_milestones:
        e = max(1, int(round(m * t.epochs))) if isinstance(m, float) else int(m)
        passed += epoch >= e
    return t.lr * t.lr_gamma ** passed


def _optimizer(cfg: Config, params) -> torch.optim.Optimizer:
    t = cfg.train
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay, amsgrad=t.amsgrad)
    return torch.optim.SGD(params, lr=t.lr, momentum=0.9, weight_decay=t.weight_decay)


def _check_surrogate(cfg: Config) -> None:
    m = cfg.model
    try:
        get_surrogate(m.surrogate, **m.surrogate_options)
    except ValueError as e:
        raise SpikesegError(f"model.surrogate: {e}") from None
    except TypeError:
        valid = surrogate_parameters(m.surrogate)
        bad = sorted(set(m.surrogate_options) - set(valid))
        raise SpikesegError(
            f"model.surrogate_options: the {m.surrogate} surrogate has no option "
            f"{', '.join(map(repr, bad)) or repr(list(m.surrogate_options))}; valid options: "
            f"{', '.join(valid) or 'none'} (surrogates: {', '.join(list_surrogates())})"
        ) from None


def build_model(cfg: Config, num_classes: int, in_channels: int) -> torch.nn.Module:
    """The model of ``cfg.model`` for a dataset with these classes and channels."""
    try:
        entry = model_entry(cfg.model.name)
    except ValueError as e:
        raise SpikesegError(f"model: {e}") from None
    if entry.spiking:
        _check_surrogate(cfg)
    try:
        return create(
            cfg.model.name, num_classes, in_channels, timesteps=cfg.model.timesteps,
            **cfg.model.model_options(entry.spiking),
        )
    except (ValueError, TypeError) as e:
        raise SpikesegError(f"model: {e}") from None


def _fmt(v: float | None) -> str:
    return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k in ("model", "data", "train") and not prefix:
            out.update(_flatten(v, f"{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_changes(saved: dict, new: dict) -> dict[str, list]:
    """``{dotted key: [saved value, new value]}`` for every setting that differs."""
    a, b = _flatten(saved), _flatten(new)
    return {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


class _StopSignal:
    """SIGTERM sets a flag instead of killing: the loop saves after the current step."""

    def __init__(self) -> None:
        self.requested = False
        self._old: Any = None

    def __enter__(self) -> _StopSignal:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


def _first_non_finite(model: torch.nn.Module, grads: bool) -> str | None:
    """Name of the first parameter (gradient) or buffer holding a NaN or an infinity."""
    tensors = {}
    for name, p in model.named_parameters():
        t = p.grad if grads else p
        if t is not None:
            tensors[name + (".grad" if grads else "")] = t.detach()
    if not grads:
        tensors.update({n: b.detach() for n, b in model.named_buffers()})
    floats = [(n, t) for n, t in tensors.items() if t.is_floating_point() and t.numel()]
    if not floats:
        return None
    ok = torch.stack([torch.isfinite(t).all() for _, t in floats])
    if bool(ok.all()):
        return None
    return floats[int((~ok).nonzero()[0])][0]


def _run_directory(cfg: Config, resume: bool, is_main: bool, enabled: bool) -> tuple[Path, str]:
    t = cfg.train
    name = t.name or f"{cfg.model.name}-{cfg.data.dataset}"
    out = Path(t.out_dir)
    if out.exists() and not out.is_dir():
        raise SpikesegError(f"train.out_dir {out} is a file, not a folder; choose another out_dir")
    run_dir = out / name
    if resume:
        if not run_dir.is_dir():
            known = sorted(p.name for p in out.iterdir() if p.is_dir()) if out.is_dir() else []
            raise SpikesegError(
                f"nothing to resume in {run_dir}: no such run"
                + (f" (runs in {out}: {', '.join(known[:8])})" if known else "")
            )
        if not (run_dir / "config.yaml").is_file() and not (
                run_dir / "checkpoints" / STATE_NAME).is_file():
            raise SpikesegError(f"nothing to resume in {run_dir}: it is not a spikeseg run "
                                f"(no config.yaml, no checkpoints/{STATE_NAME})")
    elif run_dir.exists() and is_main:
        # Never overwrite a run: take the next free name (name-2, name-3, ...).
        n = 2
        while (out / f"{name}-{n}").exists():
            n += 1
        name = f"{name}-{n}"
    if enabled:  # every process uses rank 0's choice of name
        box = [name]
        torch.distributed.broadcast_object_list(box, src=0)
        name = box[0]
    return out / name, name


def train(cfg: Config, *, resume: bool = False, progress: bool = True, log=print) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data`` with ``cfg.train``; see the module docstring.

    Args:
        cfg: the run configuration.
        resume: continue the run in ``out_dir/name`` from its last saved state.
        progress: show progress (a bar on a terminal, plain lines otherwise).
        log: where to send the per-epoch lines (``print`` by default).
    """
    t = cfg.train
    if t.threads:
        torch.set_num_threads(t.threads)
    configure_allocator(t.allocator, t.checkpoint_steps)
    info_d, device = init_distributed(resolve_device(t.device))
    if not info_d.is_main:
        log, progress = (lambda *_a, **_k: None), False
    seed_everything(t.seed)

    run_dir, name = _run_directory(cfg, resume, info_d.is_main, info_d.enabled)
    frames = data_timesteps(cfg.model.name, cfg.model.timesteps)
    train_set = build_split(cfg.data, "train", frames)
    val_set = build_split(cfg.data, "val", frames)
    info = train_set.info
    model = build_model(cfg, info.num_classes, info.in_channels)
    spiking = model_entry(cfg.model.name).spiking

    ck_dir, state_path = run_dir / "checkpoints", run_dir / "checkpoints" / STATE_NAME
    cfg.train.name = name
    lock = RunLock(run_dir)
    try:
        if info_d.is_main:
            try:
                ck_dir.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise SpikesegError(f"cannot create the run directory {run_dir}: "
                                    f"{e.strerror or e}") from None
            lock.acquire()
        barrier()
        return _train_locked(cfg, resume, progress, log, info_d, device, train_set, val_set,
                             model, spiking, run_dir, ck_dir, state_path)
    finally:
        lock.release()


def _train_locked(cfg, resume, progress, log, info_d, device, train_set, val_set, model, spiking,
                  run_dir, ck_dir, state_path) -> TrainResult:
    t = cfg.train
    info = train_set.info
    if not resume:
        log(f"run directory {run_dir} (if interrupted, continue with "
            f"--set train.name={run_dir.name} --resume)")
    cl = t.channels_last
    check_precision(t.precision, device)
    model = prepare_model(model, device, cl)
    dtype = torch.float64 if t.precision == "fp64" else torch.float32  # mixed: fp32 weights
    model = model.to(dtype)
    if spiking:
        model.execution = _execution(cfg)
    net = model  # the plain module (not the DDP wrapper): attributes, evaluation, checkpoints
    optimizer = _optimizer(cfg, model.parameters())
    start_epoch, start_step, best_miou, best_epoch = 0, 0, -1.0, -1
    rows: list[dict[str, Any]] = []
    partial = {"loss_sum": 0.0, "correct": 0, "labelled": 0, "seconds": 0.0}
    changes: dict[str, list] = {}
    if resume and state_path.is_file():
        model_state, opt_state, doc = load_train_state(state_path)
        changes = config_changes(doc["config"], cfg.to_dict())
        refused = {k: v for k, v in changes.items() if k not in SAFE_ON_RESUME}
        if refused:
            shown = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(refused.items())[:6])
            raise SpikesegError(
                f"cannot resume {run_dir} with changed settings ({shown}): a resume continues "
                f"the saved run; only {', '.join(sorted(SAFE_ON_RESUME))} may change. Start a "
                "new run instead (without --resume)"
            )
        load_state(net, model_state, source=str(state_path))
        try:
            optimizer.load_state_dict(opt_state)
        except (ValueError, KeyError, RuntimeError) as e:
            raise SpikesegError(f"resume state {state_path}: the optimizer state does not fit "
                                f"({e})") from None
        start_epoch, start_step = int(doc["epoch"]), int(doc["step"])
        best_miou, best_epoch = float(doc["best_miou"]), int(doc["best_epoch"])
        rows = [r for r in doc["rows"] if int(r["epoch"]) <= start_epoch]
        partial = dict(doc.get("partial") or partial) if start_step else partial
        where = f"epoch {start_epoch + 1}, step {start_step}" if start_step else \
            f"after epoch {start_epoch}"
        log(f"resuming {run_dir} {where}")
        if changes and info_d.is_main:
            append_resume_record(run_dir, {"time": time.strftime("%Y-%m-%d %H:%M:%S"),
                                           "epoch": start_epoch, "step": start_step,
                                           "changes": changes})
            log("changed on resume: " + "; ".join(f"{k} {a!r} -> {b!r}"
                                                  for k, (a, b) in changes.items()))
    elif resume:
        log(f"resuming {run_dir}: no epoch was saved yet, starting from the beginning")
    if info_d.is_main:
        save_config(cfg, run_dir / "config.yaml")
        write_metrics(run_dir / "metrics.csv", rows)

    # The shuffle is seeded by (seed, epoch), so a resumed run sees the same order; under
    # torchrun each process takes its own shard.
    train_idx = Indexed(train_set)
    train_sampler = ShardSampler(len(train_set), info_d, shuffle=True, seed=t.seed, drop_last=True)
    if len(train_sampler) < t.batch_size:
        raise SpikesegError(
            f"training split has {len(train_sampler)} samples per process, fewer than "
            f"train.batch_size={t.batch_size}"
        )
    steps = len(train_sampler) // t.batch_size
    if t.max_steps_per_epoch is not None:
        steps = min(steps, t.max_steps_per_epoch)
    train_loader = DataLoader(
        train_idx, batch_size=t.batch_size, sampler=train_sampler, drop_last=True,
        num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda",
    )
    val_loader = DataLoader(Indexed(val_set), batch_size=t.batch_size,
                            num_workers=cfg.data.num_workers,
                            sampler=ShardSampler(len(val_set), info_d, shuffle=False))
    if info_d.enabled:
        synchronise_norms(net)
        model = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device] if device.type == "cuda" else None
        )
    world = info_d.world_size
    log(
        f"{cfg.model.name}: {count_parameters(net) / 1e6:.2f} M parameters, "
        f"{info.num_classes} classes, {len(train_set)} train / {len(val_set)} val images, "
        f"device {device}" + (f" x {world} processes" if info_d.enabled else "")
        + (f", T={cfg.model.timesteps}" if spiking else "")
    )
    cl_on = device.type == "cpu" if cl is None else cl
    augment = check_augment(cfg.data.augment)
    weight = None
    if t.class_weight is not None:
        w, freqs = weights_for(t.class_weight, train_set, info.num_classes)
        weight = w.to(device=device, dtype=dtype)
        shown = ", ".join(f"{n} {v:.3g}" for n, v in zip(info.class_names, w.tolist(), strict=True))
        log(f"class weights ({t.class_weight if isinstance(t.class_weight, str) else 'given'}):"
            f" {shown}")
        if info_d.is_main:
            write_class_weights(run_dir / "class_weights.json", t.class_weight,
                                info.class_names, w, freqs)
    teacher = None
    last_eval: EvalResult | None = None
    meta_base = {
        "config": cfg.to_dict(),
        "dataset": {"name": info.name, "class_names": info.class_names,
                    "in_channels": info.in_channels, "temporal": info.temporal,
                    "on_off_channels": info.on_off_channels},
    }
    if t.teacher is not None:
        teacher, tmeta = load_teacher(t.teacher, meta_base["dataset"], info.num_classes,
                                      info.in_channels)
        teacher = prepare_model(teacher, device, cl).to(dtype)
        tm = (tmeta.get("metrics") or {}).get("val_miou")
        # what was distilled, for provenance: the teacher's file can change after this run
        meta_base["teacher"] = {"path": str(t.teacher), "model": tmeta["model"]["name"],
                                "sha256": file_sha256(checkpoint_paths(t.teacher)[0]),
                                "val_miou": tm}
        log(f"distilling from {t.teacher} ({tmeta['model']['name']}"
            + (f", validation mIoU {tm:.4f}" if isinstance(tm, float) else "")
            + f"), weight {t.distill_weight:g}, temperature {t.distill_temperature:g}")

    def state_payload(epoch: int, step: int, part: dict) -> dict[str, Any]:
        return {"epoch": epoch, "step": step, "partial": part, "best_miou": best_miou,
                "best_epoch": best_epoch, "rows": rows, "config": cfg.to_dict()}

    def save_state(epoch: int, step: int, part: dict) -> None:
        if info_d.is_main:
            bad = non_finite_entries(net.state_dict())
            if bad:
                raise SpikesegError(f"not saving the resume state: {bad[0]} is not finite")
            save_train_state(state_path, net.state_dict(), optimizer,
                             state_payload(epoch, step, part))

    interrupted = False
    with _StopSignal() as stop:
        for epoch in range(start_epoch, t.epochs):
            lr = lr_at_epoch(cfg, epoch)
            for g in optimizer.param_groups:
                g["lr"] = lr
            skip = start_step if epoch == start_epoch else 0
            part = dict(partial) if skip else {"loss_sum": 0.0, "correct": 0, "labelled": 0,
                                                "seconds": 0.0}
            train_sampler.set_epoch(epoch, skip=skip * t.batch_size)
            model.train()
            t0 = time.perf_counter()
            bar = progress_bar(total=steps, desc=f"epoch {epoch + 1}/{t.epochs}",
                               disable=not progress)
            bar.update(skip)
            step = skip
            for x, y, idx in train_loader:
                if step >= steps:
                    break
                where = f"epoch {epoch + 1}, step {step + 1}"
                check_labels(y, info.num_classes, f"training batch {step + 1} of epoch {epoch + 1}")
                if augment:
                    x, y = augment_batch(x, y, rng.sample_keys(t.seed, "augment", idx,
                                                               epoch=epoch + 1), augment)
                x = to_input(x, device, cl_on, dtype)
                y = y.to(device, non_blocking=True)
                keys = rng.sample_keys(t.seed, "poisson", idx, epoch=epoch + 1, device=device)
                labelled_here = (y != IGNORE_INDEX).sum()
                total = all_reduce_sum([float(labelled_here)], device)[0]
                if spiking and t.bptt == "sltt" and t.sltt_k:
                    net.execution.seed = _step_seed(t.seed, epoch, step)
                with autocast(t.precision, device):
                    logits, loss = _forward_loss(model, x, y, keys, spiking, t, total, world,
                                                 net, weight, teacher)
                if not torch.isfinite(loss):
                    raise SpikesegError(
                        f"training diverged at {where}: the loss became {loss.item()}; "
                        + _last_good(ck_dir, rows) + f"; lower train.lr (now {t.lr:g}) or set "
                        "train.grad_clip"
                    )
                optimizer.zero_grad(set_to_none=True)
                (loss * world).backward()  # DDP averages over processes: undo it
                if t.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
                bad = _first_non_finite(net, grads=True)
                if bad is None:
                    optimizer.step()
                    bad = _first_non_finite(net, grads=False)
                if bad is not None:
                    raise SpikesegError(
                        f"training diverged at {where}: {bad} became NaN or infinite; "
                        + _last_good(ck_dir, rows) + f"; lower train.lr (now {t.lr:g}) or set "
                        "train.grad_clip"
                    )
                with torch.no_grad():
                    mask = y != IGNORE_INDEX
                    part["correct"] += int((logits.argmax(1)[mask] == y[mask]).sum())
                    part["labelled"] += int(mask.sum())
                part["loss_sum"] += float(loss.detach())
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{part['loss_sum'] / step:.4f}")
                if all_reduce_any(stop.requested, device) and step < steps:
                    part["seconds"] += time.perf_counter() - t0
                    save_state(epoch, step, part)
                    interrupted = True
                    break
            bar.close()
            if interrupted:
                log(f"stopped by SIGTERM at epoch {epoch + 1}, step {step}; state saved, "
                    f"continue with --set train.name={run_dir.name} --resume")
                break
            part["seconds"] += time.perf_counter() - t0
            t_train_end = time.perf_counter()
            loss_sum_g, correct, labelled = all_reduce_sum(
                [part["loss_sum"], float(part["correct"]), float(part["labelled"])], device)
            row: dict[str, Any] = {
                "epoch": epoch + 1, "lr": lr, "train_loss": loss_sum_g / max(steps, 1) / world,
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
            row["epoch_seconds"] = part["seconds"] + (time.perf_counter() - t_train_end)
            miou = row.get("val_miou")
            improved = miou is not None and not math.isnan(miou) and miou > best_miou
            if improved:
                best_miou, best_epoch = miou, epoch + 1
            rows = [r for r in rows if int(r["epoch"]) != epoch + 1] + [row]
            if info_d.is_main:
                meta = {**meta_base, "epoch": epoch + 1, "metrics": dict(row)}
                if last_eval is not None and "val_miou" in row:
                    meta["eval"] = last_eval.as_dict()
                save_checkpoint(ck_dir / f"epoch_{epoch + 1:03d}", net, cfg.model.name, meta)
                save_checkpoint(ck_dir / "last", net, cfg.model.name, meta)
                if improved:
                    save_checkpoint(ck_dir / "best", net, cfg.model.name, meta)
                save_state(epoch + 1, 0, {})
                write_metrics(run_dir / "metrics.csv", rows)
            barrier()
            log(
                f"epoch {epoch + 1:3d}/{t.epochs}  loss {_fmt(row['train_loss'])}  "
                f"train pixel acc {_fmt(row['train_pixel_accuracy'])}  "
                + (f"val mIoU {_fmt(miou)}  val pixel acc {_fmt(row['val_pixel_accuracy'])}  "
                   if miou is not None else "")
                + f"lr {lr:.2g}  {row['epoch_seconds']:.0f}s" + ("  *best" if improved else "")
            )
    if not interrupted and best_epoch < 0 and info_d.is_main:
        # No evaluation happened (e.g. resumed after the last epoch): keep "best" meaningful.
        if not (ck_dir / "best.safetensors").is_file():
            save_checkpoint(ck_dir / "best", net, cfg.model.name, meta_base)
    barrier()
    return TrainResult(
        run_dir=run_dir, best_miou=best_miou, best_epoch=best_epoch, last_eval=last_eval,
        best_checkpoint=ck_dir / "best.safetensors", last_checkpoint=ck_dir / "last.safetensors",
        interrupted=interrupted, epochs_done=len(rows), changes=changes,
    )


def _forward_loss(model, x, y, keys, spiking: bool, t, total: float, world: int, net=None,
                  weight=None, teacher=None):
    """``(logits, loss)`` of a training step; the loss is normalised by the global number of
    labelled pixels ``total`` (so every process's share adds up to the whole batch's loss).
    ``net``: the plain module behind ``model`` when that is a DDP wrapper (default ``model``).

    ``mean_logits_ce`` is eq. (5) on the time-averaged logits; ``tet`` (Deng et al. 2022) is
    the mean over steps of each step's cross-entropy, plus ``λ·MSE(o_t, φ)`` if
    ``tet_lambda = λ > 0``. ``weight``: per-class weights of the cross-entropy
    (``train.class_weight``), the sum still divided by the pixel count. With
    ``lovasz_weight = w > 0``, ``w`` times the Lovász-softmax loss of the output logits is
    added, summed over this process's images and divided by the global image count. With a
    ``teacher`` (``train.teacher``), ``distill_weight`` times the distillation term
    (:func:`~spikeseg.engine.distill.distillation_loss`) summed over this process's pixels
    and divided by the global pixel count is added.
    """
    logits, loss = _ce_loss(model, x, y, keys, spiking, t, total, world, net, weight)
    if t.lovasz_weight > 0:
        loss = loss + t.lovasz_weight * lovasz_softmax(logits, y) / (y.shape[0] * world)
    if teacher is not None and t.distill_weight > 0:
        with torch.no_grad():
            kw = {"keys": keys} if getattr(teacher, "spiking", False) and x.dim() == 4 else {}
            target = _full(teacher(x, **kw))
        kd = distillation_loss(logits, target, t.distill_temperature)
        loss = loss + t.distill_weight * kd / (y.numel() * world)
    return logits, loss


def _ce_loss(model, x, y, keys, spiking: bool, t, total: float, world: int, net, weight):
    """The cross-entropy part of :func:`_forward_loss`."""
    kw = {"keys": keys} if spiking and x.dim() == 4 else {}
    if t.loss == "tet" and spiking:
        steps = _full(model(x, return_steps=True, **kw))            # [S, B, K, H, W]
        ce = sum(F.cross_entropy(o, y, weight=weight, ignore_index=IGNORE_INDEX,
                                 reduction="sum")
                 for o in steps.unbind(0)) / steps.shape[0]
        loss = ce / max(total, 1.0)
        if t.tet_lambda > 0:
            mse = (steps - t.tet_means).square().sum() / (steps.numel() * world)
            loss = (1.0 - t.tet_lambda) * loss + t.tet_lambda * mse
        return (net or model).readout_steps(steps), loss
    logits = _full(model(x, **kw))  # the loss in float32 under mixed precision
    ce = F.cross_entropy(logits, y, weight=weight, ignore_index=IGNORE_INDEX, reduction="sum")
    return logits, ce / max(total, 1.0)


def _full(x: torch.Tensor) -> torch.Tensor:
    """Logits of a mixed-precision forward in float32 (fp32/fp64 logits as they are)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _execution(cfg: Config) -> Execution:
    """How a spiking model computes its training steps, from ``train.*``."""
    t = cfg.train
    return Execution(checkpoint_steps=t.checkpoint_steps, bptt=t.bptt, sltt_k=t.sltt_k,
                     kernel=t.kernel)


def _step_seed(seed: int, epoch: int, step: int) -> int:
    """SLTT-K's draw of timesteps for one step: a function of (seed, epoch, step), the same in
    every process and after a resume."""
    mixed = ((seed * 1_000_003 + epoch) * 1_000_003 + step) % 2**32
    return int(rng.hash32(torch.tensor(mixed, dtype=torch.int64)))


def _last_good(ck_dir: Path, rows: list[dict]) -> str:
    if rows:
        return (f"nothing was saved from this epoch; the last good checkpoint is "
                f"{ck_dir / 'last.safetensors'} (epoch {max(int(r['epoch']) for r in rows)})")
    return "no checkpoint was saved"

