"""Self-describing checkpoints: safetensors weights + JSON metadata, written atomically.

A checkpoint ``NAME`` is two files side by side:

* ``NAME.safetensors``: the model's ``state_dict`` (weights, BNTT rows, running statistics);
* ``NAME.json``: what is needed to rebuild the model without its config: the model name,
  ``num_classes``, ``in_channels``, ``timesteps`` and options; the dataset and its class
  names; the epoch and metrics; the full training config; the spikeseg version.

Either file's path, or the path without suffix, names the checkpoint. Both files are written
atomically (:mod:`spikeseg.io`: temp file, fsync, rename, fsync of the folder), weights first,
so a crash never leaves a half-written file; a model with a NaN or infinite value is never
saved.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .. import __version__
from ..errors import SpikesegError
from ..io import atomic_write, atomic_write_text
from ..models import build_from_metadata, model_entry, model_kind

__all__ = [
    "FORMAT",
    "save_checkpoint",
    "load_checkpoint",
    "checkpoint_paths",
    "read_metadata",
    "load_state",
    "non_finite_entries",
    "mismatch_summary",
]

FORMAT = "spikeseg-checkpoint/1"


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """``(weights, metadata)`` paths of the checkpoint named by ``path``."""
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    # Append rather than replace: a name such as "layer-p99.9" keeps its dot.
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def model_metadata(model: nn.Module, name: str) -> dict[str, Any]:
    """The ``model`` section of a checkpoint's metadata: what rebuilds the model by name."""
    opts: dict[str, Any] = dict(getattr(model, "create_options", None) or {})
    if not opts:  # built without the registry: read the options off the modules
        entry = model_entry(name)
        opts["width"] = getattr(model, "width", 1.0)
        if entry.spiking:
            lif = next((m for _, m in model.neurons()), None)
            if lif is not None:
                opts.update(
                    leak=lif.leak, threshold=lif.threshold, reset=lif.reset,
                    surrogate=lif.surrogate.name, surrogate_options=lif.surrogate.config(),
                    detach_reset=lif.detach_reset,
                )
            opts.update(encoding=model.encoding, step_mode=model.step_mode)
        elif hasattr(model, "activation"):
            opts["activation"] = model.activation
        if hasattr(model, "norm") and isinstance(model.norm, str):
            opts["norm"] = model.norm
    kind, kind_options = model_kind(model)
    out = {
        "name": name,
        "num_classes": model.num_classes,
        "in_channels": model.in_channels,
        "timesteps": model.timesteps,
        "options": opts,
    }
    if kind_options or kind != "trained":
        out.update(kind=kind, kind_options=kind_options)
    return out


def save_checkpoint(
    path: str | Path, model: nn.Module, model_name: str, extra: dict[str, Any] | None = None
) -> tuple[Path, Path]:
    """Save ``model`` as checkpoint ``path`` with metadata; returns the two file paths.

    Args:
        path: checkpoint name (with or without suffix).
        model: a spikeseg model.
        model_name: its registry name.
        extra: more metadata (epoch, metrics, config, dataset, ...), JSON-serialisable.
    """
    weights, meta_path = checkpoint_paths(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    bad = non_finite_entries(tensors)
    if bad:
        raise SpikesegError(
            f"not saving checkpoint {weights.name}: {len(bad)} tensors hold NaN or infinite "
            f"values (e.g. {bad[0]})"
        )
    meta = {
        "format": FORMAT,
        "spikeseg_version": __version__,
        "model": model_metadata(model, model_name),
        **(extra or {}),
    }
    atomic_write(weights, lambda tmp: save_file(tensors, tmp,
                                                metadata={"format": FORMAT, "model": model_name}))
    atomic_write_text(meta_path, json.dumps(meta, indent=2, default=str))
    return weights, meta_path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON metadata of checkpoint ``path`` (SpikesegError if missing or unreadable)."""
    given = Path(path)
    what = ("a checkpoint is a pair NAME.safetensors (weights) + NAME.json (metadata) written "
            "by spikeseg train or convert; give either file or NAME")
    if given.is_dir():
        best = next((c for c in (given / "checkpoints" / "best.safetensors",
                                 given / "best.safetensors") if c.is_file()), None)
        hint = f" (did you mean {best}?)" if best else ""
        raise SpikesegError(f"checkpoint {given} is a folder{hint}; {what}")
    if given.is_file() and given.suffix not in (".safetensors", ".json"):
        raise SpikesegError(f"{given} is not a spikeseg checkpoint; {what}")
    weights, meta_path = checkpoint_paths(path)
    if not weights.is_file() and not meta_path.is_file():
        raise SpikesegError(
            f"checkpoint {path} not found (expected {weights.name} and {meta_path.name})"
        )
    if not meta_path.is_file():
        raise SpikesegError(f"checkpoint metadata {meta_path} is missing; it must sit beside {weights.name}")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SpikesegError(f"checkpoint metadata {meta_path} is unreadable: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "model" not in meta:
        raise SpikesegError(f"{meta_path} is not a spikeseg checkpoint (format {FORMAT})")
    return meta


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", **overrides: Any
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of checkpoint ``path`` and load its weights.

    Args:
        path: checkpoint name, or either of its files.
        map_location: device for the weights.
        **overrides: model options to change (e.g. ``step_mode="fold"``).

    Returns:
        ``(model, metadata)``; the model is in eval mode.

    Raises:
        SpikesegError: missing or unreadable files, or weights that do not fit the model.
    """
    meta = read_metadata(path)
    weights, _ = checkpoint_paths(path)
    m = dict(meta["model"])
    if "conversion" in meta and "kind" not in m:  # written before kinds were recorded
        m.update(kind="converted", kind_options=meta["conversion"])
    try:
        model = build_from_metadata(m, **overrides)
    except (KeyError, ValueError, TypeError) as e:
        raise SpikesegError(f"checkpoint {weights}: cannot rebuild its model: {e}") from None
    except SpikesegError as e:
        raise SpikesegError(f"checkpoint {weights}: {e}") from None
    if not weights.is_file():
        raise SpikesegError(f"checkpoint weights {weights} are missing")
    try:
        state = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as e:
        raise SpikesegError(f"checkpoint weights {weights} are unreadable: {e}") from None
    load_state(model, state, source=str(weights))
    model.eval()
    return model, meta


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model``, with a one-line error if they do not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
             for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        raise SpikesegError(
            f"{source} does not fit this model ({mismatch_summary(missing, unexpected, wrong)}): "
            "it was saved from another model or with other options"
        )
    model.load_state_dict(state)


def non_finite_entries(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors in ``tensors`` that hold a NaN or an infinity."""
    return [k for k, v in tensors.items()
            if v.is_floating_point() and v.numel() and not bool(torch.isfinite(v).all())]


def mismatch_summary(missing: list[str], unexpected: list[str], wrong: list[str]) -> str:
    """``"2 missing (e.g. a); 1 of another shape (e.g. b: (3,) vs (4,))"``: how a set of
    weights fails to fit a model (``wrong`` entries already say their shapes)."""
    parts = []
    for items, what in ((missing, "missing"), (unexpected, "unexpected"),
                        (wrong, "of another shape")):
        if items:
            parts.append(f"{len(items)} {what} (e.g. {items[0]})")
    return "; ".join(parts)
