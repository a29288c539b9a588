"""Export of spikeseg models to ONNX, for ONNX Runtime, TensorRT and other inference engines.

ONNX has no notion of time, so a spiking model is **unrolled over a fixed number of
timesteps** ``T``: the graph holds T copies of every layer, each neuron's membrane flowing
from one to the next (eqs. (2)-(3) as plain tensor ops: ``u = λ·m + x``, ``s = (u > θ)``,
``m = u·(1 − s)`` or ``u − θ·s``), and returns the logits of :meth:`SegmentationModel.forward`:
the output layer applied to the time-averaged features, upsampled to the input size. Every
norm (BNTT rows per timestep included), reset and neuron kind is kept, because the graph
runs exactly the model's own evaluation code.

Graph signatures (``B`` is a dynamic axis unless ``batch_size`` fixes it; ``T``, ``C``,
``H`` and ``W`` are fixed at export):

=============================  =============================  ==========================
model                          input                          output
=============================  =============================  ==========================
ANN (``deeplab``, ``fcn``)     ``image`` ``[B, C, H, W]``     ``logits`` ``[B, K, H, W]``
ANN with ``timesteps=T``       ``frames`` ``[T, B, C, H, W]`` (features averaged over T)
spiking, Poisson / events      ``frames`` ``[T, B, C, H, W]`` pre-encoded spikes or frames
spiking, ``encoding=direct``   ``image`` ``[B, C, H, W]``     (``input_mean`` subtracted,
                                                              clamped to [0, 1], repeated
                                                              T times inside the graph)
=============================  =============================  ==========================

Poisson coding stays outside the graph (ONNX's random ops would not reproduce PyTorch's
generator): encode with :class:`spikeseg.encoding.PoissonEncoder` and feed the frames.

The export uses ``torch.onnx.export(..., dynamo=True)`` (the ``torch.export``-based exporter,
PyTorch's default since 2.9; it needs ``onnxscript``) in evaluation mode under
``torch.no_grad()``, where the neurons run plain tensor ops instead of their training-time
autograd functions. ``dynamo=False`` selects the legacy TorchScript exporter (deprecated in
PyTorch 2.9, kept as a fallback). With ``verify=True`` and ``onnxruntime`` installed the file
is run on a batch of a different size than the example's and compared with PyTorch; the
summary records the largest absolute difference.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import SpikesegError
from . import model_label, parse_input_size

__all__ = ["write_onnx", "OnnxForward", "input_spec", "require_onnx", "DEFAULT_TOLERANCE"]

DEFAULT_TOLERANCE = 1e-5
"""Tolerance of the verification (``|onnx − torch| <= tol + tol·|torch|``)."""

_MAX_INLINE_BYTES = 1_500_000_000  # ONNX protobufs are limited to 2 GB: larger weights go aside


def require_onnx(dynamo: bool = True):
    """The ``onnx`` module (and ``onnxscript`` for the dynamo exporter), or a one-line
    SpikesegError naming the extra to install."""
    try:
        import onnx
        if dynamo:
            import onnxscript  # noqa: F401
    except ImportError as e:
        raise SpikesegError(
            f'ONNX export needs {e.name or "onnx"}: pip install "spikeseg[onnx]" '
            "(or pip install onnx onnxscript onnxruntime)"
        ) from None
    return onnx


class OnnxForward(nn.Module):
    """The model's evaluation forward with a fixed ``T``: what the ONNX graph computes.

    ``forward(image)`` for ANNs and direct-coded spiking models, ``forward(frames)`` for
    pre-encoded input; both return logits ``[B, K, H, W]`` exactly as ``model(...)`` does.

    Args:
        model: a spikeseg model (kept in evaluation mode by the exporter).
        timesteps: T of a direct-coded spiking model (the repetitions inside the graph).
    """

    def __init__(self, model: nn.Module, timesteps: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.timesteps = timesteps

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4 and self.model.spiking:
            return self.model(x, timesteps=self.timesteps)  # direct coding (no random ops)
        return self.model(x)


def input_spec(
    model: nn.Module, input_size: tuple[int, int], timesteps: int | None
) -> tuple[str, list[int | str], int]:
    """``(input name, shape with "B" for the batch, T)`` of the graph of ``model``.

    Raises:
        SpikesegError: an ANN or spiking option that ONNX cannot carry.
    """
    c, (h, w) = model.in_channels, input_size
    if not model.spiking:
        if timesteps is None:
            return "image", ["B", c, h, w], 0
        return "frames", [int(timesteps), "B", c, h, w], int(timesteps)
    T = int(timesteps or model.timesteps)
    if T < 1:
        raise SpikesegError(f"timesteps must be >= 1, got {T}")
    if model.encoding == "direct":
        return "image", ["B", c, h, w], T
    return "frames", [T, "B", c, h, w], T


@contextlib.contextmanager
def _quiet():
    """Silence the exporter's progress lines and warnings (the summary says what happened)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo",
                                              "torch.fx.experimental.symbolic_shapes")]
    levels = [lg.level for lg in loggers]
    out = io.StringIO()
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(out):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels, strict=True):
            lg.setLevel(lv)


def _example(shape: list[int | str], batch: int, model: nn.Module,
             generator: torch.Generator) -> Tensor:
    dims = [batch if d == "B" else int(d) for d in shape]
    x = torch.rand(dims, generator=generator)
    if model.spiking and len(dims) == 5:  # spike frames, as a Poisson coder makes them
        x = (x < 0.3).float()
    return x


def write_onnx(
    model: nn.Module,
    path: str | Path,
    input_size: int | Sequence[int],
    *,
    timesteps: int | None = None,
    batch_size: int | None = None,
    opset: int | None = None,
    dynamo: bool = True,
    verify: bool = True,
    tolerance: float = DEFAULT_TOLERANCE,
    name: str | None = None,
) -> dict[str, Any]:
    """Write ``model`` as an ONNX file and return a summary (see the module docstring).

    Args:
        model: any spikeseg model (ANN, spiking, converted).
        path: the ``.onnx`` file to write.
        input_size: ``H`` or ``(H, W)`` in pixels (fixed in the graph).
        timesteps: T of a spiking model (default: its ``timesteps``); for an ANN, giving T
            makes it read ``[T, B, C, H, W]`` event frames and average its features.
        batch_size: ``None`` for a dynamic batch axis, or a fixed batch size.
        opset: ONNX opset (default: the exporter's).
        dynamo: use the ``torch.export``-based exporter (``False``: the legacy one).
        verify: run the file with onnxruntime (when installed) and compare with PyTorch.
        tolerance: ``|onnx − torch| <= tolerance·max(1, max|torch|)`` for the verification:
            relative to the scale of the output, since float32 logits computed in two summation
            orders differ by a few ulps of the largest activations, not of each logit.
        name: the model's registry name, for the summary.

    Returns:
        ``{"format": "onnx", "path", "model", "input": {name: shape}, "output", "timesteps",
        "opset", "exporter", "dynamic_batch", "kept", "left_out", "verified", "max_abs_diff"}``.

    Raises:
        SpikesegError: onnx/onnxscript missing, a bad option, a failed export or a
            verification outside the tolerance.
    """
    onnx = require_onnx(dynamo)
    h, w = parse_input_size(input_size)
    if batch_size is not None and batch_size < 1:
        raise SpikesegError(f"batch_size must be >= 1, got {batch_size}")
    in_name, shape, T = input_spec(model, (h, w), timesteps)
    dynamic = batch_size is None
    # A dynamic axis must not be traced at size 1 (torch.export specialises it).
    example_batch = 2 if dynamic else int(batch_size)
    gen = torch.Generator().manual_seed(0)
    x = _example(shape, example_batch, model, gen)
    batch_axis = shape.index("B")
    # Both in evaluation mode: the legacy exporter restores the wrapper's mode recursively.
    wrapper = OnnxForward(model, T if model.spiking else None).eval()
    was_training = model.training
    model.eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n_bytes = sum(p.numel() * p.element_size() for p in model.state_dict().values())
    kwargs: dict[str, Any] = dict(input_names=[in_name], output_names=["logits"],
                                  opset_version=opset)
    if dynamo:
        kwargs.update(dynamo=True, external_data=n_bytes > _MAX_INLINE_BYTES, verbose=False)
        if dynamic:
            kwargs["dynamic_shapes"] = ({batch_axis: torch.export.Dim("batch")},)
    else:
        kwargs.update(dynamo=False)
        if dynamic:
            kwargs["dynamic_axes"] = {in_name: {batch_axis: "batch"}, "logits": {0: "batch"}}
    try:
        _export(wrapper, x, path, kwargs, model)
        summary = _summary(onnx, model, path, name, in_name, shape, dynamic, example_batch,
                           (h, w), T, dynamo)
        summary.update(
            _verify(model, wrapper, path, shape, example_batch, dynamic, tolerance) if verify
            else {"verified": False, "max_abs_diff": None, "note": "not run (verify=False)"})
    finally:
        model.train(was_training)
    return summary


def _export(wrapper: nn.Module, x: Tensor, path: Path, kwargs: dict, model: nn.Module) -> None:
    try:
        with torch.no_grad(), _quiet():
            torch.onnx.export(wrapper, (x,), str(path), **kwargs)
    except SpikesegError:
        raise
    except Exception as e:  # the exporters raise many types; keep the first line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SpikesegError(
            f"ONNX export of {model_label(model)} failed ({type(e).__name__}: {first}); "
            "try dynamo=False (the legacy exporter)"
        ) from None


def _summary(onnx, model, path, name, in_name, shape, dynamic, example_batch, size, T,
             dynamo) -> dict[str, Any]:
    proto = onnx.load(str(path), load_external_data=False)
    opset_used = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
                     default=None)
    b = "B" if dynamic else example_batch
    return {
        "format": "onnx",
        "path": str(path),
        "model": name or model_label(model),
        "input": {in_name: [b if d == "B" else d for d in shape]},
        "output": {"logits": [b, model.num_classes, *size]},
        "timesteps": T or None,
        "opset": opset_used,
        "exporter": "torch.export (dynamo)" if dynamo else "torchscript (legacy)",
        "dynamic_batch": dynamic,
        "kept": _kept(model, T),
        "left_out": _left_out(model, in_name, T, dynamic),
    }


def _kept(model: nn.Module, T: int) -> list[str]:
    if not model.spiking:
        return ["the whole network (norms in evaluation mode) and the bilinear upsampling"]
    return [
        f"the whole spiking network unrolled over T = {T} steps (norms in evaluation mode, "
        "every neuron's leak, threshold and reset), the time average of the output layer "
        "and the bilinear upsampling",
    ]


def _left_out(model: nn.Module, in_name: str, T: int, dynamic: bool) -> list[str]:
    fixed = "H, W and T are" if T else "H and W are"
    out = [f"{fixed} fixed at export; " + ("only the batch axis is dynamic" if dynamic
                                             else "so is the batch size")]
    if model.spiking and in_name == "frames":
        out.insert(0, f"input coding ({model.encoding}): static images are rate-coded outside "
                      "the graph; feed pre-encoded spikes or event frames [T, B, C, H, W]")
    if model.spiking and model.encoding == "poisson_signed" and in_name == "frames":
        out.insert(0, "input_mean is subtracted by the signed Poisson coder, outside the graph")
    return out


def _verify(model, wrapper, path, shape, example_batch, dynamic, tolerance) -> dict[str, Any]:
    """onnxruntime against PyTorch on a fresh batch (another size than the example's when
    the batch axis is dynamic).

    ANN logits must agree within the tolerance. A spiking network is chaotic in float32: a
    membrane within rounding of θ may spike in one runtime and not in the other (their
    convolutions sum in different orders), and the flip spreads through later layers and
    timesteps. So for spiking models a difference beyond the tolerance is reported
    (``verified`` False, with the fraction of logits within tolerance and the per-pixel
    label agreement), not raised.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        return {"verified": False, "max_abs_diff": None,
                "note": "onnxruntime is not installed: the file was not run"}
    batch = example_batch + 1 if dynamic else example_batch
    x = _example(shape, batch, model, torch.Generator().manual_seed(1))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    with torch.no_grad():
        ref = wrapper(x)
    if got.shape != ref.shape or not bool(torch.isfinite(got).all()):
        raise SpikesegError(
            f"the ONNX file {path} returns {tuple(got.shape)} (finite: "
            f"{bool(torch.isfinite(got).all())}) where PyTorch returns {tuple(ref.shape)}; "
            "export with dynamo=False, or report this with the model's options"
        )
    err = (got - ref).abs()
    ok = err <= tolerance * max(1.0, float(ref.abs().max()))
    out: dict[str, Any] = {
        "verified": bool(ok.all()), "max_abs_diff": float(err.max()), "verified_batch": batch,
        "within_tolerance": float(ok.float().mean()),
        "label_agreement": float((got.argmax(1) == ref.argmax(1)).float().mean()),
    }
    if not out["verified"]:
        if not model.spiking:
            raise SpikesegError(
                f"the ONNX file {path} differs from PyTorch by up to {out['max_abs_diff']:.3g} "
                f"(tolerance {tolerance:g}); export with dynamo=False, or report this"
            )
        out["note"] = (
            "spikes flipped where a membrane lies within float32 rounding of the threshold "
            "(onnxruntime and PyTorch round convolutions differently) and spread over later "
            "layers and steps; compare accuracy, not bits"
        )
    return out
