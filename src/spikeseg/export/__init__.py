"""Export of spikeseg models: NIR for spiking models, ONNX for any model.

* :func:`export_nir` — a hard-reset spiking model with a time-shared norm (``bn``, ``tdbn``)
  or none, as a NIR graph of continuous-time primitives that snnTorch, Norse, Sinabs, Lava or
  neuromorphic chips read (:mod:`spikeseg.export.nir`; needs ``pip install "spikeseg[nir]"``).
* :func:`export_onnx` — any model (ANN, spiking unrolled over a fixed T, converted) as an
  ONNX graph for ONNX Runtime and other engines (:mod:`spikeseg.export.onnx`; needs
  ``pip install "spikeseg[onnx]"``).
* :func:`export_checkpoint` — either, from a checkpoint: what ``spikeseg export`` runs.

Each returns a JSON-serialisable summary: what the file holds, its input and outputs, and
what it leaves out (``left_out``). See ``docs/deploying.md``.

>>> from spikeseg.export import export_checkpoint
>>> summary = export_checkpoint("runs/tiny/checkpoints/best", "nir", "tiny.nir")  # doctest: +SKIP
>>> print("\\n".join(summary["left_out"]))  # doctest: +SKIP

The packages ``nir``, ``onnx``, ``onnxscript`` and ``onnxruntime`` are imported only when an
export runs, so ``import spikeseg.export`` needs none of them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import SpikesegError

__all__ = [
    "FORMATS", "DEFAULT_DT", "export_nir", "export_onnx", "export_checkpoint", "load_model",
    "checkpoint_input_size", "parse_input_size", "model_label",
]

FORMATS = ("nir", "onnx")
"""Formats of :func:`export_checkpoint` (``spikeseg export --format``)."""

DEFAULT_DT = 1e-4
"""Default Euler step ``dt`` of NIR graphs: the step snnTorch's NIR importer assumes (only
``dt/τ`` matters; see :func:`spikeseg.export.nir.lif_parameters`)."""


# --------------------------------------------------------------------------------------------
# Helpers shared by the exporters
# --------------------------------------------------------------------------------------------


def model_label(model: nn.Module) -> str:
    """The registry name of ``model`` as far as it can be told (``spiking_deeplab``, ...)."""
    name = getattr(model, "registry_name", None)
    if name:
        return str(name)
    family = {"DeepLabVGG9": "deeplab", "FCNVGG9": "fcn"}.get(type(model).__name__,
                                                             type(model).__name__)
    return f"spiking_{family}" if getattr(model, "spiking", False) else family


def parse_input_size(input_size: int | Sequence[int]) -> tuple[int, int]:
    """``(H, W)`` from ``H`` or ``(H, W)`` (SpikesegError if not at least 4×4 pixels)."""
    try:
        hw = (int(input_size),) * 2 if isinstance(input_size, int) else tuple(
            int(v) for v in input_size)
    except (TypeError, ValueError):
        hw = ()
    if len(hw) != 2 or min(hw) < 4:
        raise SpikesegError(
            f"input size must be H or (H, W) of at least 4 pixels, got {input_size!r}"
        )
    return hw  # type: ignore[return-value]


def checkpoint_input_size(meta: dict[str, Any]) -> tuple[int, int] | None:
    """The input size a checkpoint was trained at (``config.data.image_size``), if recorded."""
    size = ((meta.get("config") or {}).get("data") or {}).get("image_size")
    return None if size is None else parse_input_size(size)


def load_model(model_or_checkpoint: nn.Module | str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """``(model, checkpoint metadata)`` — a model is returned as is, with empty metadata.

    A checkpoint is loaded with :func:`spikeseg.engine.checkpoint.load_checkpoint`
    (safetensors + JSON; no pickle), in evaluation mode, on the CPU.
    """
    if isinstance(model_or_checkpoint, nn.Module):
        return model_or_checkpoint, {}
    from ..engine.checkpoint import load_checkpoint

    model, meta = load_checkpoint(model_or_checkpoint, map_location="cpu")
    return model, meta


def _resolve(model_or_checkpoint, input_size) -> tuple[nn.Module, tuple[int, int], str]:
    model, meta = load_model(model_or_checkpoint)
    name = (meta.get("model") or {}).get("name") or model_label(model)
    if input_size is not None:
        return model, parse_input_size(input_size), name
    if not meta:
        raise SpikesegError("exporting a model object needs input_size=(H, W) (only checkpoints "
                            "record the size they were trained at)")
    size = checkpoint_input_size(meta)
    if size is None:
        raise SpikesegError(
            f"checkpoint {model_or_checkpoint} records no input size (config.data.image_size): "
            "pass input_size=(H, W)"
        )
    return model, size, name


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def export_nir(
    model_or_checkpoint: nn.Module | str | Path,
    path: str | Path,
    *,
    input_size: int | Sequence[int] | None = None,
    dt: float = DEFAULT_DT,
    pool: str = "avg",
    timesteps: int | None = None,
) -> dict[str, Any]:
    """Write a spiking model (or checkpoint) as a NIR file; returns the summary.

    Args:
        model_or_checkpoint: a model, or a checkpoint path (either file, or without suffix).
        path: the ``.nir`` file (HDF5) to write.
        input_size: ``H`` or ``(H, W)`` of the input frames (default: the checkpoint's
            training size).
        dt: the reader's forward-Euler step; τ = dt/(1 − λ), R = 1/(1 − λ) (see
            :func:`spikeseg.export.nir.lif_parameters`).
        pool: ``"avg"`` (NIR AvgPool2d) or ``"sum"`` (SumPool2d then Scale(1/9)).
        timesteps: the T recorded as the graph's suggested number of steps (default: the
            model's); a NIR graph has no fixed T.

    Returns:
        see :func:`spikeseg.export.nir.to_nir`, plus ``path``.

    Raises:
        SpikesegError: a model NIR cannot express (ANN, BNTT, soft reset), a missing input
            size, or ``nir`` not installed.
    """
    from .nir import write_nir

    model, size, name = _resolve(model_or_checkpoint, input_size)
    return write_nir(model, path, size, dt=dt, pool=pool, name=name, timesteps=timesteps)


def export_onnx(
    model_or_checkpoint: nn.Module | str | Path,
    path: str | Path,
    *,
    input_size: int | Sequence[int] | None = None,
    timesteps: int | None = None,
    batch_size: int | None = None,
    opset: int | None = None,
    dynamo: bool = True,
    verify: bool = True,
) -> dict[str, Any]:
    """Write a model (or checkpoint) as an ONNX file; returns the summary.

    Args:
        model_or_checkpoint: a model, or a checkpoint path.
        path: the ``.onnx`` file to write.
        input_size: ``H`` or ``(H, W)`` (default: the checkpoint's training size).
        timesteps: T a spiking model is unrolled over (default: its ``timesteps``); for an
            ANN, T event frames ``[T, B, C, H, W]`` whose features it averages.
        batch_size: ``None`` (default) for a dynamic batch axis, or a fixed size.
        opset: ONNX opset (default: the exporter's).
        dynamo: the ``torch.export``-based exporter (default) or the legacy one.
        verify: compare onnxruntime with PyTorch on a batch of another size (if installed).

    Returns:
        see :func:`spikeseg.export.onnx.write_onnx`.

    Raises:
        SpikesegError: a missing input size, a failed export or verification, or the
            ``onnx`` extra not installed.
    """
    from .onnx import write_onnx

    model, size, name = _resolve(model_or_checkpoint, input_size)
    return write_onnx(model, path, size, timesteps=timesteps, batch_size=batch_size,
                      opset=opset, dynamo=dynamo, verify=verify, name=name)


_EXPORTERS: dict[str, Callable[..., dict[str, Any]]] = {"nir": export_nir, "onnx": export_onnx}


def export_checkpoint(
    checkpoint: str | Path, format: str, out: str | Path, **options: Any
) -> dict[str, Any]:
    """Export checkpoint ``checkpoint`` as ``format`` (``"nir"`` or ``"onnx"``) to ``out``.

    What ``spikeseg export --checkpoint CK --format nir|onnx --out FILE [--timesteps T]``
    runs. ``options`` are those of :func:`export_nir` or :func:`export_onnx`; options left
    at ``None`` take their defaults.

    Returns:
        the exporter's summary, with ``checkpoint`` added.

    Raises:
        SpikesegError: an unknown format or option, or any error of the exporter.
    """
    if format not in _EXPORTERS:
        raise SpikesegError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    fn = _EXPORTERS[format]
    valid = {n for n, p in inspect.signature(fn).parameters.items()
             if p.kind is inspect.Parameter.KEYWORD_ONLY}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise SpikesegError(
            f"--format {format} takes no option {', '.join(unknown)}; valid: "
            f"{', '.join(sorted(valid))}"
        )
    kwargs = {k: v for k, v in options.items() if v is not None}
    return {**fn(checkpoint, out, **kwargs), "checkpoint": str(checkpoint)}
