"""Import checkpoints of the paper's original code into spikeseg (``spikeseg import-original``).

The authors' repository (``Intelligent-Computing-Lab-Yale/SNN-Segmentation``, HEAD a191cfa)
saves ``torch.save`` dictionaries (``test.py`` l. 120-128, ``setup.py`` l. 291-293)::

    {"config": {...}, "max_miou": numpy.float64, "epoch": int, "state_dict": {...},
     "thresholds": {type: {str(T): [θ per layer]}}}        # ANN files after conversion

with tensors saved on ``cuda:0``. :func:`import_original` maps such a file onto the spikeseg
model of the same architecture and options and writes a spikeseg checkpoint (safetensors +
JSON, :func:`spikeseg.engine.checkpoint.save_checkpoint`), so that the imported model reads
spikeseg's ordinary RGB images in ``[0, 1]`` and gives the original's outputs.

**Parameter names** (``models/snn_vgg.py`` l. 97-189, ``models/ann_vgg.py`` l. 63-159; ``k``
counts convolutions only, pools are not numbered) → spikeseg:

* ``features.k.weight`` → the k-th block's ``conv`` (DeepLab ``features.{0,1,3,4,6,7,8}``,
  FCN ``stage1.{0,1}``, ``stage2.{0,1}``, ``stage3.{0,1,2}``); ``classifier.0.weight`` →
  ``classifier.0.conv`` (FCN also ``classifier.1``); DeepLab's ``classifier.1.weight`` (1×1,
  no bias, no norm) → ``output``;
* SNN ``bn_features.k.t.{weight,running_mean,running_var,num_batches_tracked}`` (one
  ``BatchNorm2d`` per timestep, no bias) → the block's BNTT, rows stacked into ``[T, C]``;
  ANN ``bn_features.k.{running_mean,running_var,num_batches_tracked}`` (``affine=False``) →
  the block's ``BatchNorm2d``; likewise ``bn_classifier``;
* FCN ``skips_features.{2,4,7}.{weight,bias}`` → ``score1``, ``score2``, ``score3``,
  ``skips_classifier.2.*`` → ``score4`` (``scores_*`` in the first commit, 20893b7);
  ``upsample.{0,1,2}.0.weight`` → ``up1``, ``up2``, ``up3`` (transposed convs).

**Input.** The original reads VOC images as BGR minus the Caffe mean, divided by 255
(``data/voc2012/dataset.py`` l. 23 and 66-95). The imported model takes RGB instead: the
first convolution's input channels are flipped BGR → RGB in the weights (exact), and
``input_mean`` is the Caffe mean in RGB order, so ``W_rgb * (x_rgb − m_rgb) = W * (x_bgr −
m_bgr)``. ANNs subtract it themselves; SNNs get ``encoding="poisson_signed"``, the original's
signed Poisson coding of the mean-subtracted image (``models/spikes.py`` l. 23-32: a spike
``sign(x)`` where ``rand ≤ |x|``). Two-channel event models (DDD17) are taken as they are.

**Neurons.** ``u = leak_mem·u + BN_t(conv(x))``, a spike where ``u/θ − 1 > 0``, soft reset
(``models/snn_vgg.py`` l. 356-370): spikeseg's LIF with ``leak = leak_mem``, ``threshold =
def_threshold``, ``reset="soft"`` and the piecewise-linear surrogate with γ = 0.3
(``models/spikes.py`` l. 88). Full propagation (``full_prop``: one zero-input step per
membrane after the T steps, BNTT skipped there, l. 323 and 357) becomes
``propagation_steps`` with identity BNTT rows for those steps. DeepLab divides its
accumulated output by T as spikeseg does; the spiking FCN returns the *sum* over T (l. 469-470;
its forward also fails at HEAD, reading a threshold its upsampling ``Sequential`` never got):
spikeseg returns the mean (same argmax, logits T times smaller).

**Converted ANNs.** An ANN file with ``thresholds`` becomes a spikeseg model of kind
``"converted"`` (:mod:`spikeseg.models.converted`) with ``fold_thresholds=False``: as in the
original (``models/snn_vgg.py`` l. 291-303, ``setup.py`` l. 252-257) a spike stands for one
unit and layer ``l`` fires at ``scaling_factor · θ_l`` (0.7 by default, a test-time argument
the file does not store). The list holds one entry per spiking layer in forward order
(``utils/thresholds.py`` l. 40-51: a float per layer, a ``[C]`` tensor per channel or
``[C, H, W]`` per neuron at the file's ``img_size``); they are assigned in that order (the
original's ``threshold_update`` pops them in module-registration order, which for FCN hands
the eighth to a skip convolution). The original's FCN search skips its last classifier layer
(l. 49): that layer keeps ``def_threshold`` (1.0). A converted FCN's decoder accumulates
without neurons, as the ANN's has no ReLU (the original's spiking decoder fails, see above).
Two differences are the original's bugs, not reproduced: its conversion loads the ANN into
an SNN whose per-timestep BN names do not match, so the ANN's BN statistics are silently
dropped (``setup.py`` l. 249, ``strict=False``) — spikeseg folds them into the convolutions —
and it runs the converted SNN with the test-time ``leak_mem`` (0.99 by default) where
spikeseg uses IF neurons (leak 1). Leaky-ReLU ANNs convert with negative spikes below
``−θ/α``; the original's ``ibt`` code computes that threshold (l. 303) but never emits them.

**Loading safely.** The files hold a NumPy ``float64`` (``max_miou``, from ``utils/scores.py``),
so plain ``torch.load(weights_only=True)`` refuses them. They are loaded with
``weights_only=True`` and an allow-list of NumPy's numeric scalar types
(:data:`NUMPY_SCALAR_GLOBALS`); anything else is refused with a one-line error that says how to
re-save the file with plain values. spikeseg never unpickles a file in full: that would run
whatever code the file names.
"""

from __future__ import annotations

import math
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..convert.algorithm import layer_threshold_summary
from ..encoding import CAFFE_MEAN_RGB
from ..engine.checkpoint import mismatch_summary, save_checkpoint
from ..errors import SpikesegError
from ..io import file_sha256
from ..models import create, model_entry
from ..models.converted import (
    METHODS,
    ConversionConfig,
    activation_shapes,
    conversion_blocks,
    set_threshold,
    spiking_twin,
)

__all__ = [
    "ORIGINAL_REPOSITORY",
    "CAFFE_MEAN_BGR_255",
    "ORIGINAL_CAFFE_MEAN_RGB",
    "ARCHITECTURES",
    "NUMPY_SCALAR_GLOBALS",
    "read_original",
    "original_model",
    "import_original",
]

ORIGINAL_REPOSITORY = "Intelligent-Computing-Lab-Yale/SNN-Segmentation"
"""The paper's original code."""

CAFFE_MEAN_BGR_255 = tuple(round(v * 255.0, 5) for v in reversed(CAFFE_MEAN_RGB))
"""The mean pixel the original subtracts from VOC images, BGR in 0-255 (its dataset.py)."""

ORIGINAL_CAFFE_MEAN_RGB = CAFFE_MEAN_RGB
"""The same mean as RGB in ``[0, 1]``: the imported models' ``input_mean``."""

ARCHITECTURES = {"dl-vgg9": "deeplab", "fcn-vgg9": "fcn"}
"""The original's ``architecture`` names → spikeseg's ANN names (SNNs: ``spiking_`` + name)."""

_FULL_PROP_EXTRA = {"deeplab": 9, "fcn": 9}
# Membranes of the original (len(mem_features) + len(mem_classifier), snn_vgg.py l. 323): 7 + 2
# in both (DeepLab's output accumulator has one; FCN's upsampling stages are not counted).

_FCN_SKIPS = {"score1": "features.2", "score2": "features.4", "score3": "features.7",
              "score4": "classifier.2"}
_FCN_UPSAMPLE = {"up1": "upsample.0.0", "up2": "upsample.1.0", "up3": "upsample.2.0"}


_NUMERIC_DTYPES = ("Float16DType", "Float32DType", "Float64DType", "Int8DType", "Int16DType",
                   "Int32DType", "Int64DType", "UInt8DType", "UInt16DType", "UInt32DType",
                   "UInt64DType", "BoolDType")


def _numpy_scalar_globals() -> list:
    """The allow-list for ``weights_only`` loading: NumPy's scalar reconstructor (under its
    NumPy 1 and 2 module names), ``numpy.dtype`` and the numeric dtype classes. A scalar is
    rebuilt from a dtype and raw bytes; none of these can name other code."""
    try:
        from numpy._core.multiarray import scalar  # NumPy >= 2
    except ImportError:  # pragma: no cover - NumPy 1
        from numpy.core.multiarray import scalar
    out: list = [scalar, (scalar, "numpy.core.multiarray.scalar"),
                 (scalar, "numpy._core.multiarray.scalar"), np.dtype]
    dtypes = getattr(np, "dtypes", None)
    out += [getattr(dtypes, n) for n in _NUMERIC_DTYPES if hasattr(dtypes, n)]
    return out


NUMPY_SCALAR_GLOBALS = _numpy_scalar_globals()
"""What ``weights_only`` loading allows beyond tensors and plain values: what a NumPy numeric
scalar (the original's ``max_miou`` is a ``float64``) needs to be rebuilt."""

_ALLOWED_NAMES = {"numpy._core.multiarray.scalar", "numpy.core.multiarray.scalar", "numpy.dtype",
                  *(f"numpy.dtypes.{n}" for n in _NUMERIC_DTYPES)}

RESAVE_HINT = (
    "re-save it with plain values where it was written, e.g. torch.save({'config': "
    "dict(s['config']), 'state_dict': {k: v.detach().cpu() for k, v in "
    "s['state_dict'].items()}, 'thresholds': s.get('thresholds'), 'epoch': s.get('epoch'), "
    "'max_miou': float(s.get('max_miou', 0))}, 'plain.pth')"
)
"""How to turn a checkpoint that holds other Python objects into one spikeseg reads."""


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _unpickler_detail(e: BaseException) -> str:
    """The reason in torch's weights-only error (the line after "WeightsUnpickler error:")."""
    lines = [ln.strip() for ln in str(e).splitlines()]
    for i, ln in enumerate(lines):
        if ln.endswith("WeightsUnpickler error:"):
            rest = [x for x in lines[i + 1:] if x]
            if rest:
                return rest[0]
    return _first_line(e)


def read_original(path: str | Path) -> dict[str, Any]:
    """Load an original-code checkpoint on the CPU, with ``torch.load(weights_only=True)``.

    Args:
        path: the ``.pth`` file.

    Returns:
        The file's dictionary (``config``, ``state_dict``, ...).

    Raises:
        SpikesegError: a missing or unreadable file, or one that holds Python objects beyond
            tensors, plain values and NumPy scalars (never unpickled: that could run code).
    """
    path = Path(path)
    if not path.is_file():
        raise SpikesegError(f"original checkpoint {path} not found")
    try:
        if hasattr(torch.serialization, "safe_globals"):
            with torch.serialization.safe_globals(NUMPY_SCALAR_GLOBALS):
                state = torch.load(path, map_location="cpu", weights_only=True)
        else:  # pragma: no cover - torch < 2.5
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # noqa: BLE001 - not a zip checkpoint: cannot tell what it holds
            names = None
        names = [n for n in names if n not in _ALLOWED_NAMES] if names is not None else None
        if not names:
            raise SpikesegError(
                f"{path} cannot be read safely ({_unpickler_detail(e)}): it is not a "
                f"torch.save checkpoint of tensors and plain values; {RESAVE_HINT}"
            ) from None
        what = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        raise SpikesegError(
            f"{path} holds Python objects beyond tensors and plain values ({what}); spikeseg "
            f"does not unpickle those (that can run arbitrary code): {RESAVE_HINT}"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
        raise SpikesegError(
            f"{path} cannot be read as a PyTorch checkpoint: {_first_line(e)}"
        ) from None
    if not isinstance(state, dict) or not isinstance(state.get("state_dict"), dict):
        raise SpikesegError(
            f"{path} is not a checkpoint of the original code: expected a dict with 'config' "
            "and 'state_dict' (as its train.py saves)"
        )
    if not isinstance(state.get("config"), dict):
        raise SpikesegError(
            f"{path} has no 'config' dict: files of the original code record their settings "
            "there (architecture, dataset, timesteps, ...)"
        )
    return state


# --------------------------------------------------------------------------- configuration


def _cfg(config: dict, key: str, source: str) -> Any:
    if config.get(key) is None:
        raise SpikesegError(f"{source}: its config has no {key!r}; it is not a file of the "
                            "original code, or a damaged one")
    return config[key]


def _dataset(config: dict, source: str) -> dict:
    ds = _cfg(config, "dataset", source)
    if not isinstance(ds, dict) or "num_cls" not in ds or "input_dim" not in ds:
        raise SpikesegError(f"{source}: config['dataset'] must hold 'num_cls' and 'input_dim'")
    return ds


def _img_size(config: dict) -> list[int] | None:
    size = config.get("img_size")
    if isinstance(size, int):
        return [size, size]
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return [int(size[0]), int(size[1])]
    return None


def original_model(
    config: dict, *, model_name: str | None = None, source: str = "checkpoint"
) -> tuple[str, dict[str, Any], list[str]]:
    """The spikeseg model matching an original config: ``(name, create options, notes)``.

    Args:
        config: the file's ``config`` dict.
        model_name: the spikeseg name to import as (default: from ``model_type`` and
            ``architecture``); it must be of the same family and kind.
        source: the file, for error messages.

    Raises:
        SpikesegError: an architecture or option spikeseg does not have, or a model name that
            does not match the file.
    """
    notes: list[str] = []
    kind = _cfg(config, "model_type", source)
    if kind not in ("snn", "ann"):
        raise SpikesegError(f"{source}: model_type must be 'snn' or 'ann', not {kind!r}")
    spiking = kind == "snn"
    arch = config.get("architecture")
    family = ARCHITECTURES.get(arch) if arch is not None else None
    if family is None and model_name is None:
        raise SpikesegError(
            f"{source}: architecture {arch!r} has no spikeseg model (spikeseg has "
            f"{', '.join(ARCHITECTURES)}: DeepLab-VGG9 and FCN-VGG9)"
        )
    expected = None if family is None else ("spiking_" if spiking else "") + family
    name = model_name or expected
    try:
        entry = model_entry(name)
    except ValueError as e:
        raise SpikesegError(f"{source}: {e}") from None
    if entry.spiking != spiking or (expected is not None and name != expected):
        raise SpikesegError(
            f"{source} holds an {kind.upper()} {arch}, not "
            f"{name!r}: import it as {expected!r} (or leave model_name out)"
        )
    family = name.removeprefix("spiking_")
    if family not in ("deeplab", "fcn"):
        raise SpikesegError(f"{source}: spikeseg imports original files as deeplab or fcn only")
    if int(_cfg(config, "kernel_size", source)) != 3:
        raise SpikesegError(
            f"{source}: kernel_size {config['kernel_size']} is not 3; spikeseg's VGG9 models "
            "use 3x3 convolutions and pools"
        )
    ds = _dataset(config, source)
    in_channels = int(ds["input_dim"])
    bn = bool(config.get("bn", True))
    opts: dict[str, Any] = {"width": 1.0, "bn_eps": 1e-4, "bn_momentum": 0.1}
    image = in_channels == 3
    if spiking:
        opts.update(
            timesteps=int(_cfg(config, "timesteps", source)),
            leak=float(_cfg(config, "leak_mem", source)),
            threshold=float(config.get("def_threshold") or 1.0),
            reset="soft", surrogate="pwl", surrogate_options={"gamma": 0.3},
            detach_reset=True, norm="bntt" if bn else "none", encoding="poisson_signed",
            input_mean=list(ORIGINAL_CAFFE_MEAN_RGB) if image else [0.0] * in_channels,
        )
        if config.get("full_prop"):
            if "propagation_steps" not in entry.options():
                raise SpikesegError(
                    f"{source} was trained with full_prop, which this spikeseg version cannot "
                    "run (no propagation_steps option)"
                )
            opts["propagation_steps"] = _FULL_PROP_EXTRA[family]
            notes.append(f"full_prop: {_FULL_PROP_EXTRA[family]} zero-input steps after the T "
                         "input steps (propagation_steps), BNTT skipped there as in the original")
        if config.get("thl"):
            notes.append("trained with target history learning (thl): feed event frames "
                         "[T, B, C, H, W] as the original fed its T frames")
        if family == "fcn":
            notes.append("spiking FCN: the original returns the sum over T of its output "
                         "(and its forward fails at HEAD); spikeseg returns the mean (same argmax)")
    else:
        opts.update(norm="bn" if bn else "none")
        if image:
            opts["input_mean"] = list(ORIGINAL_CAFFE_MEAN_RGB)
        if config.get("leaky"):
            alpha = float(config.get("alpha") or 0.1)
            if not math.isclose(alpha, 0.1, rel_tol=1e-6):
                raise SpikesegError(
                    f"{source}: leaky ReLU slope alpha={alpha}; spikeseg's leaky ReLU has slope "
                    "0.1, so this file cannot be imported exactly"
                )
            opts["activation"] = "leaky_relu"
    if image:
        notes.append("RGB input in [0, 1]: first convolution's input channels flipped BGR->RGB, "
                     "input_mean = the Caffe mean in RGB order")
    return name, opts, notes


# --------------------------------------------------------------------------- weights


def _orig_convs(model: torch.nn.Module) -> list[tuple[str, str, str]]:
    """``(spikeseg block, original conv key, original BN key)`` per activation block."""
    blocks = [name for name, _ in conversion_blocks(model)]
    n_feat = 7  # VGG9: seven feature convolutions in both families (cfg_features)
    out = []
    for i, b in enumerate(blocks):
        if i < n_feat:
            out.append((b, f"features.{i}", f"bn_features.{i}"))
        else:
            out.append((b, f"classifier.{i - n_feat}", f"bn_classifier.{i - n_feat}"))
    return out


def _map_state(
    model: torch.nn.Module, sd: dict[str, Tensor], family: str, spiking: bool, flip: bool,
    source: str,
) -> dict[str, Tensor]:
    """The spikeseg state dict of ``model`` built from the original state dict ``sd``."""
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    if family == "fcn" and not any(k.startswith("skips_") for k in sd):  # first commit's names
        sd = {k.replace("scores_features.", "skips_features.")
              .replace("scores_classifier.", "skips_classifier."): v for k, v in sd.items()}
    own = model.state_dict()
    used: set[str] = set()
    out: dict[str, Tensor] = {}
    missing: list[str] = []

    def take(key: str) -> Tensor | None:
        if key not in sd:
            missing.append(key)
            return None
        used.add(key)
        return sd[key].detach().to("cpu")

    rules: dict[str, Callable[[], Tensor | None]] = {}
    T = getattr(model, "timesteps", 1)
    P = getattr(model, "propagation_steps", 0) if spiking else 0
    for i, (blk, conv, bn) in enumerate(_orig_convs(model)):
        def conv_w(conv=conv, first=i == 0):
            w = take(f"{conv}.weight")
            return w.flip(1) if (w is not None and first and flip) else w
        rules[f"{blk}.conv.weight"] = conv_w
        if f"{blk}.conv.bias" in own:  # norm "none": the original's convs have no bias
            rules[f"{blk}.conv.bias"] = lambda blk=blk: torch.zeros_like(own[f"{blk}.conv.bias"])
        if not spiking:
            for p in ("running_mean", "running_var", "num_batches_tracked"):
                if f"{blk}.norm.{p}" in own:
                    rules[f"{blk}.norm.{p}"] = lambda p=p, bn=bn: take(f"{bn}.{p}")
            continue
        if f"{blk}.norm.weight" not in own:
            continue
        # BNTT: one BatchNorm2d per timestep -> [T, C] rows; full-propagation steps (t >= T)
        # skip the norm in the original: identity rows (mean 0, var + eps = 1, scale 1).
        eps = float(dict(model.named_modules())[f"{blk}.norm"].eps)
        fill = {"weight": 1.0, "running_mean": 0.0, "running_var": 1.0 - eps,
                "num_batches_tracked": 0}

        def bntt(p, bn=bn, fill=fill):
            rows = [take(f"{bn}.{t}.{p}") for t in range(T)]
            if any(r is None for r in rows):
                return None
            rows += [torch.full_like(rows[0], fill[p]) for _ in range(P)]
            return torch.stack(rows)
        for p in fill:
            rules[f"{blk}.norm.{p}"] = lambda p=p, bntt=bntt: bntt(p)
    if family == "deeplab":
        rules["output.weight"] = lambda: take("classifier.1.weight")
    else:
        for ours, theirs in _FCN_SKIPS.items():
            rules[f"{ours}.weight"] = lambda t=theirs: take(f"skips_{t}.weight")
            rules[f"{ours}.bias"] = lambda t=theirs: take(f"skips_{t}.bias")
        for ours, theirs in _FCN_UPSAMPLE.items():
            rules[f"{ours}.weight"] = lambda t=theirs: take(f"{t}.weight")

    unmapped = [k for k in own if k not in rules]
    if unmapped:  # pragma: no cover - a spikeseg model this importer does not know
        raise SpikesegError(f"{source}: no original parameter for {unmapped[0]}")
    wrong: list[str] = []
    for k, rule in rules.items():
        v = rule()
        if v is None:
            continue
        if tuple(v.shape) != tuple(own[k].shape):
            wrong.append(f"{k}: {tuple(v.shape)} in the file vs {tuple(own[k].shape)}")
        out[k] = v.to(own[k].dtype)
    unexpected = sorted(set(sd) - used)
    if missing or unexpected or wrong:
        raise SpikesegError(
            f"{source}: its weights do not fit the {model.num_classes}-class "
            f"{'spiking ' if spiking else ''}{family} its config describes "
            f"({mismatch_summary(missing, unexpected, wrong)}): the file is of another "
            "architecture, or damaged"
        )
    return out


# --------------------------------------------------------------------------- thresholds


def _threshold_list(
    state: dict, which: str, timesteps: int | None, source: str
) -> tuple[str, int, list] | None:
    """``(type, T, list)`` of the thresholds to import, or None for the plain ANN."""
    raw = state.get("thresholds")
    if which == "none" or (which == "auto" and not raw):
        return None
    if not isinstance(raw, dict) or not raw:
        raise SpikesegError(f"{source} holds no thresholds: import it with thresholds='none'")
    if all(str(k).isdigit() for k in raw):  # before converter.py's "convert thresholds"
        types = {"?": raw}
    else:
        types = {str(k): v for k, v in raw.items() if isinstance(v, dict) and v}
    if which == "auto":
        if len(types) != 1:
            raise SpikesegError(
                f"{source} holds thresholds of types {', '.join(sorted(types))}: choose one "
                "(--thresholds TYPE)"
            )
        kind = next(iter(types))
    elif which in types:
        kind = which
    elif "?" in types:
        kind = "?"
    else:
        raise SpikesegError(
            f"{source} holds no {which!r} thresholds (it has {', '.join(sorted(types)) or 'none'})"
        )
    by_t = {str(k): v for k, v in types[kind].items()}
    if timesteps is None:
        if len(by_t) != 1:
            raise SpikesegError(
                f"{source} holds {kind} thresholds for T = {', '.join(sorted(by_t, key=int))}: "
                "choose one (--threshold-timesteps T)"
            )
        key = next(iter(by_t))
    else:
        key = str(int(timesteps))
        if key not in by_t:
            raise SpikesegError(
                f"{source} holds {kind} thresholds for T = {', '.join(sorted(by_t, key=int))}, "
                f"not {key}"
            )
    values = by_t[key]
    if not isinstance(values, (list, tuple)) or not values:
        raise SpikesegError(f"{source}: thresholds[{kind!r}][{key!r}] is not a list of thresholds")
    if kind == "?":  # infer the type from the entries
        first = values[0]
        dim = torch.as_tensor(first).dim()
        kind = {0: "layer", 1: "channel", 3: "neuron"}.get(dim, "?")
        if which not in ("auto", kind):
            raise SpikesegError(f"{source} holds {kind} thresholds, not {which}")
    if kind not in METHODS:
        raise SpikesegError(f"{source}: unknown threshold type {kind!r} (known: {METHODS})")
    return kind, int(key), list(values)


# --------------------------------------------------------------------------- import


def _json_safe(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if isinstance(v, (np.generic,)):
        return v.item()
    if isinstance(v, Tensor):
        return v.tolist() if v.numel() <= 16 else f"tensor{tuple(v.shape)}"
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


def _class_names(ds: dict) -> list[str] | None:
    labels = ds.get("labels")
    if not isinstance(labels, dict):
        return None
    try:
        return [str(labels[k]) for k in sorted(labels, key=int)]
    except (TypeError, ValueError):
        return None


def import_original(
    checkpoint: str | Path,
    out: str | Path,
    *,
    model_name: str | None = None,
    scaling_factor: float = 0.7,
    thresholds: str = "auto",
    threshold_timesteps: int | None = None,
    timesteps: int | None = None,
) -> dict[str, Any]:
    """Import a checkpoint of the paper's original code as a spikeseg checkpoint ``out``.

    Args:
        checkpoint: the original ``.pth`` file.
        out: the spikeseg checkpoint to write (name, or either file's path).
        model_name: the spikeseg model to import as (default: from the file's ``model_type``
            and ``architecture``; must agree with them).
        scaling_factor: converted ANNs: the factor the original multiplies its thresholds by
            at use (its ``--scaling_factor``, 0.7 by default; not stored in the file).
        thresholds: ANN files: ``"auto"`` (the file's thresholds if it has one type, else the
            plain ANN), ``"none"`` (the plain ANN) or a type, ``"layer"``, ``"channel"`` or
            ``"neuron"`` (a converted SNN).
        threshold_timesteps: which ``thresholds[type][str(T)]`` (default: the only one).
        timesteps: default T of a converted model (default: that of its thresholds).

    Returns:
        A summary for printing: ``checkpoint`` / ``metadata`` (written paths), ``model``,
        ``kind`` (``"trained"`` or ``"converted"``), ``model_type``, ``architecture``,
        ``num_classes``, ``in_channels``, ``timesteps``, ``epoch``, ``max_miou``,
        ``parameters`` (tensors imported), ``encoding``, ``input_mean``, ``flipped_bgr``,
        ``thresholds`` (type, T, scaling factor, layers; converted only) and ``notes``.

    Raises:
        SpikesegError: an unreadable or unsafe file, an architecture, option or threshold
            spikeseg cannot reproduce, or weights of other shapes than the config describes.
    """
    path = Path(checkpoint)
    source = str(path)
    if not (scaling_factor > 0 and math.isfinite(scaling_factor)):
        raise SpikesegError(f"scaling_factor must be a positive number, got {scaling_factor}")
    if thresholds not in ("auto", "none", *METHODS):
        raise SpikesegError(
            f"thresholds must be 'auto', 'none' or one of {METHODS}, not {thresholds!r}"
        )
    state = read_original(path)
    config = state["config"]
    name, opts, notes = original_model(config, model_name=model_name, source=source)
    spiking = name.startswith("spiking_")
    family = name.removeprefix("spiking_")
    ds = _dataset(config, source)
    num_classes, in_channels = int(ds["num_cls"]), int(ds["input_dim"])
    T = opts.pop("timesteps", 20)
    try:
        model = create(name, num_classes, in_channels, timesteps=T, **opts)
    except (ValueError, TypeError) as e:
        raise SpikesegError(f"{source}: spikeseg cannot build its model: {e}") from None
    if spiking and thresholds not in ("auto", "none"):
        raise SpikesegError(f"{source} is a trained SNN; thresholds={thresholds!r} is for ANN files")
    flip = in_channels == 3
    tensors = _map_state(model, state["state_dict"], family, spiking, flip, source)
    model.load_state_dict(tensors)
    model.eval()
    conv = None if spiking else _threshold_list(state, thresholds, threshold_timesteps, source)

    max_miou = state.get("max_miou")
    max_miou = float(max_miou) if isinstance(max_miou, (int, float, np.floating)) else None
    epoch = state.get("epoch")
    epoch = int(epoch) if isinstance(epoch, (int, np.integer)) else None
    img_size = _img_size(config)
    dataset_name = str(ds.get("name", ""))
    spikeseg_dataset = {"voc2012": "voc", "ddd17": "ddd17"}.get(dataset_name)
    imported_from = {
        "repository": ORIGINAL_REPOSITORY,
        "file": str(path.resolve()),
        "sha256": file_sha256(path),
        "model_type": config.get("model_type"),
        "architecture": config.get("architecture"),
        "dataset": dataset_name or None,
        "img_size": img_size,
        "epoch": epoch,
        "max_miou": max_miou,

        "input": ("RGB in [0, 1]: first convolution's input channels flipped BGR->RGB; "
                  "input_mean = the Caffe mean (104.00699, 116.66877, 122.67892 BGR) in RGB"
                  if flip else "as the original (no channel flip, no mean)"),
        "config": _json_safe(config),
        "notes": notes,
    }
    extra: dict[str, Any] = {"imported_from": imported_from, "epoch": epoch}
    if max_miou is not None:
        extra["metrics"] = {"miou": max_miou}
    if spikeseg_dataset is not None:
        extra["dataset"] = {"name": spikeseg_dataset, "class_names": _class_names(ds),
                            "in_channels": in_channels, "temporal": spikeseg_dataset == "ddd17"}
        data: dict[str, Any] = {"dataset": spikeseg_dataset}
        if img_size is not None:
            data["image_size"] = img_size
        extra["config"] = {"data": data}

    summary: dict[str, Any] = {
        "model": name, "kind": "trained", "model_type": config.get("model_type"),
        "architecture": config.get("architecture"), "num_classes": num_classes,
        "in_channels": in_channels, "timesteps": T if spiking else None, "epoch": epoch,
        "max_miou": max_miou, "parameters": len(tensors),
        "encoding": opts.get("encoding"), "input_mean": opts.get("input_mean"),
        "flipped_bgr": flip, "thresholds": None, "notes": notes,
    }
    if conv is None:
        weights, meta = save_checkpoint(out, model, name, extra=extra)
        summary.update(checkpoint=str(weights), metadata=str(meta))
        return summary

    kind, t_key, values = conv
    snn, info = _converted(model, family, kind, t_key, values, scaling_factor, timesteps,
                           img_size, config, source)
    notes.extend(info)
    imported_from["thresholds"] = {"type": kind, "timesteps": t_key,
                                   "scaling_factor": float(scaling_factor),
                                   "layers": len(values)}
    extra["conversion"] = dict(snn.conversion)
    extra["converted_from"] = name
    extra["thresholds"] = layer_threshold_summary(snn)
    weights, meta = save_checkpoint(out, snn, name, extra=extra)
    summary.update(
        checkpoint=str(weights), metadata=str(meta), kind="converted",
        timesteps=snn.timesteps, encoding=snn.encoding,
        thresholds={"type": kind, "timesteps": t_key, "scaling_factor": float(scaling_factor),
                    "layers": len(values)},
    )
    return summary


def _converted(
    ann: torch.nn.Module, family: str, kind: str, t_key: int, values: list,
    scaling_factor: float, timesteps: int | None, img_size: list[int] | None, config: dict,
    source: str,
) -> tuple[torch.nn.Module, list[str]]:
    """The converted SNN of ``ann`` with the original thresholds (unfolded, as there)."""
    notes: list[str] = []
    if kind == "neuron" and img_size is None:
        raise SpikesegError(f"{source}: per-neuron thresholds need config['img_size']")
    cfg = ConversionConfig(
        method=kind, timesteps=int(timesteps or t_key), encoding="poisson",
        input_size=img_size if kind == "neuron" else None, fold_thresholds=False,
    )
    blocks = [name for name, _ in conversion_blocks(ann)]
    default = float(config.get("def_threshold") or 1.0)
    if len(values) == len(blocks) - 1 and family == "fcn":
        notes.append(f"{blocks[-1]}: no threshold in the file (the original's search skips "
                     f"FCN's last classifier layer); it keeps def_threshold = {default:g}")
    elif len(values) != len(blocks):
        raise SpikesegError(
            f"{source}: {len(values)} {kind} thresholds for the {len(blocks)} spiking layers of "
            f"{family}: the thresholds belong to another architecture"
        )
    snn = spiking_twin(ann, cfg)
    shapes = activation_shapes(ann, img_size) if kind == "neuron" else {}
    for i, name in enumerate(blocks):
        if i >= len(values):
            set_threshold(snn, name, torch.tensor(default))
            continue
        v = values[i]
        if isinstance(v, (int, float, np.floating)):
            # The original multiplies a Python float (double) and casts at use.
            theta = torch.tensor(float(v) * scaling_factor, dtype=torch.float32)
        else:
            theta = torch.as_tensor(v).detach().to("cpu", torch.float32) * scaling_factor
        c = dict(snn.named_modules())[f"{name}.conv"].out_channels
        want = {"layer": (), "channel": (c,), "neuron": shapes.get(name)}[kind]
        if tuple(theta.shape) != tuple(want) and not (kind == "layer" and theta.numel() == 1):
            raise SpikesegError(
                f"{source}: {kind} threshold {i} has shape {tuple(theta.shape)}, layer {name} "
                f"needs {tuple(want)}: the thresholds belong to another architecture or size"
            )
        if not bool(torch.isfinite(theta).all()):
            raise SpikesegError(f"{source}: {kind} threshold {i} ({name}) is not finite")
        if bool((theta <= 0).any()):
            notes.append(f"{name}: thresholds <= 0 (never fired in the original's search) set to "
                         "1, where the original divides by them")
        set_threshold(snn, name, theta)
    if family == "fcn":
        notes.append("FCN decoder without neurons (the ANN's has no ReLU; the original's spiking "
                     "decoder fails at HEAD)")
    if getattr(ann, "activation", "relu") == "leaky_relu":
        notes.append("leaky ReLU: negative spikes below -θ/0.1 (the original's ibt threshold, "
                     "which its code never fires)")
    if any(isinstance(m, torch.nn.BatchNorm2d) for m in ann.modules()):
        notes.append("the ANN's BatchNorm is folded into the convolutions (the original's "
                     "conversion drops its statistics by a name mismatch)")
    return snn, notes
