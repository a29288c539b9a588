"""The resume state of a training run: one safetensors file, no pickle.

``checkpoints/train_state.safetensors`` holds everything ``--resume`` needs, in one file that
is replaced atomically:

* tensors: the model's ``state_dict`` (``model/<key>``), the optimizer's per-parameter
  tensors (``optimizer/<index>/<name>``), the torch RNG state (``rng/torch``) and NumPy's
  Mersenne-Twister key (``rng/numpy``);
* the safetensors header's metadata, a JSON document (``"state"``): format, spikeseg version,
  the config that runs, epoch and step reached, best score, the epoch's partial sums, the
  metrics rows, the optimizer's param groups and non-tensor state, the rest of the RNG states.

Nothing in it is executable: the file is parsed as safetensors + JSON, and anything else is
refused with one line. Earlier versions wrote a pickled ``train_state.pt``; it is never read.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .. import __version__
from ..errors import SpikesegError
from ..io import atomic_write

__all__ = ["STATE_FORMAT", "STATE_NAME", "save_train_state", "load_train_state",
           "rng_state", "set_rng_state"]

STATE_FORMAT = "spikeseg-train-state/1"
STATE_NAME = "train_state.safetensors"


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The torch, NumPy and Python RNG states as ``(tensors, JSON values)``."""
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    tensors = {"rng/torch": torch.get_rng_state(),
               "rng/numpy": torch.from_numpy(np.asarray(key, dtype=np.uint32).view(np.int32))}
    values = {"numpy": [kind, int(pos), int(has_gauss), float(gauss)],
              "python": [version, list(internal), gauss_next]}
    return tensors, values


def set_rng_state(tensors: dict[str, torch.Tensor], values: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(tensors["rng/torch"])
    kind, pos, has_gauss, gauss = values["numpy"]
    key = tensors["rng/numpy"].numpy().view(np.uint32)
    np.random.set_state((kind, key, pos, has_gauss, gauss))
    version, internal, gauss_next = values["python"]
    random.setstate((version, tuple(internal), gauss_next))


def save_train_state(path: str | Path, model_state: dict[str, torch.Tensor],
                     optimizer: torch.optim.Optimizer, payload: dict[str, Any]) -> Path:
    """Write the resume state (atomically).

    Args:
        path: the ``.safetensors`` file.
        model_state: the model's ``state_dict``.
        optimizer: its optimizer (state and param groups are saved).
        payload: JSON-serialisable facts of the run (epoch, step, config, metrics, ...).
    """
    tensors: dict[str, torch.Tensor] = {
        f"model/{k}": v.detach().cpu().contiguous() for k, v in model_state.items()}
    opt = optimizer.state_dict()
    opt_values: dict[str, dict[str, Any]] = {}
    for idx, st in opt["state"].items():
        for name, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{idx}/{name}"] = value.detach().cpu().contiguous()
            else:
                opt_values.setdefault(str(idx), {})[name] = value
    rng_tensors, rng_values = rng_state()
    tensors.update(rng_tensors)
    doc = {**payload, "format": STATE_FORMAT, "spikeseg_version": __version__,
           "optimizer": {"param_groups": opt["param_groups"], "values": opt_values,
                         "indices": sorted(int(i) for i in opt["state"])},
           "rng": rng_values}
    meta = {"format": STATE_FORMAT, "state": json.dumps(doc)}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_train_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any],
                                                 dict[str, Any]]:
    """Read a resume state written by :func:`save_train_state`.

    Returns:
        ``(model_state, optimizer_state_dict, payload)``; the RNG states are restored.

    Raises:
        SpikesegError: the file is not a spikeseg resume state, or is damaged.
    """
    path = Path(path)

    def damaged(why: str) -> SpikesegError:
        return SpikesegError(
            f"resume state {path} is not a spikeseg training state or is damaged ({why}); "
            "resume from an earlier copy or start a new run"
        )

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise damaged(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
    if meta.get("format") != STATE_FORMAT or "state" not in meta:
        raise damaged(f"format {meta.get('format')!r}, expected {STATE_FORMAT!r}")
    try:
        doc = json.loads(meta["state"])
        opt_doc = doc["optimizer"]
        state: dict[int, dict[str, Any]] = {}
        for idx in opt_doc["indices"]:
            entry = dict(opt_doc["values"].get(str(idx), {}))
            prefix = f"optimizer/{idx}/"
            entry.update({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
            state[int(idx)] = entry
        optimizer_state = {"state": state, "param_groups": opt_doc["param_groups"]}
        model_state = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
        set_rng_state(tensors, doc["rng"])
        for key in ("epoch", "step", "config", "rows"):
            doc[key]  # noqa: B018 (presence check)
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
        raise damaged(f"{type(e).__name__}: {e}") from None
    return model_state, optimizer_state, doc
