"""Typed run configuration: dataclasses, loaded from YAML and overridden with ``key=value``.

A config file has up to three sections, each mapping onto a dataclass below::

    model: {name: spiking_deeplab, timesteps: 20, width: 1.0, leak: 0.99}
    data:  {dataset: builtin, image_size: 64}
    train: {epochs: 60, batch_size: 16, lr: 0.003}

Defaults are the paper's settings (section 5.1.2). On the command line, dotted overrides
(``--set train.lr=0.001 --set model.width=0.5``) are parsed as YAML scalars. Unknown keys and
values of the wrong type raise :class:`~spikeseg.errors.SpikesegError` naming the key and the
valid choices.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import SpikesegError
from .io import atomic_write_text
from .runtime import ALLOCATOR_MODES, PRECISIONS

__all__ = ["ModelConfig", "DataConfig", "TrainConfig", "Config", "load_config", "apply_overrides"]


# --------------------------------------------------------------------------- value checks
# Each field may carry a check in its metadata: a function returning what is wrong with a
# value (a phrase such as "an int >= 1"), or None when the value is fine. _set runs it, so a
# bad value is refused where it enters (YAML file or --set), with the key and the valid range.


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def at_least(lo: int, optional: bool = False) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if optional and v is None:
            return None
        return None if _is_int(v) and v >= lo else f"an int >= {lo}" + (" or null" if optional else "")
    return check


def positive(optional: bool = False, upper: float | None = None) -> Callable[[Any], str | None]:
    """A finite number > 0 (and <= upper)."""
    def check(v: Any) -> str | None:
        if optional and v is None:
            return None
        ok = _finite(v) and v > 0 and (upper is None or v <= upper)
        rng = f"in (0, {upper:g}]" if upper is not None else "> 0"
        return None if ok else f"a finite number {rng}" + (" or null" if optional else "")
    return check


def non_negative(v: Any) -> str | None:
    return None if _finite(v) and v >= 0 else "a finite number >= 0"


def one_of(*choices: Any, optional: bool = False) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if (optional and v is None) or v in choices:
            return None
        return "one of " + ", ".join(map(str, choices)) + (" or null" if optional else "")
    return check


def _image_size(v: Any) -> str | None:
    ok = (_is_int(v) and v >= 4) or (
        isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_int(s) and s >= 4 for s in v))
    return None if ok else "an int >= 4 (square) or [height, width] of ints >= 4"


def _milestones(v: Any) -> str | None:
    ok = isinstance(v, list) and all(
        (_is_int(m) and m >= 1) or (isinstance(m, float) and math.isfinite(m) and 0 < m <= 1)
        for m in v)
    return None if ok else ("a list of fractions of the epochs in (0, 1] (e.g. 0.5) or whole "
                            "epoch numbers >= 1")


def _class_weight(v: Any) -> str | None:
    ok = v is None or v in ("median_freq", "inv_sqrt_freq") or (
        isinstance(v, list) and v and all(_finite(w) and w > 0 for w in v))
    return None if ok else ("null, median_freq, inv_sqrt_freq or a list of positive weights, "
                            "one per class")


def _device(v: Any) -> str | None:
    ok = isinstance(v, str) and re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v) is not None
    return None if ok else "auto, cpu, cuda, cuda:N or mps"


def _run_name(v: Any) -> str | None:
    if v is None:
        return None
    ok = isinstance(v, str) and v not in ("", ".", "..") and re.fullmatch(r"[\w.+=@-]+", v)
    return None if ok else "null or a folder name (letters, digits, . _ - + = @; no slashes)"


def _non_empty(v: Any) -> str | None:
    return None if isinstance(v, str) and v.strip() else "a non-empty string"


def _non_empty_optional(v: Any) -> str | None:
    return None if v is None else _non_empty(v) and "null or a non-empty string"


def _input_mean(v: Any) -> str | None:
    if v is None:
        return None
    ok = isinstance(v, list) and v and all(_finite(m) for m in v)
    return None if ok else "null or a list of numbers, one per input channel"


def _augment(v: Any) -> str | None:
    # The transforms are the data layer's (imported when a value is checked, not before).
    from .data.augment import check_augment

    try:
        check_augment(v)
    except SpikesegError as e:
        return f"valid augmentation settings ({e})"
    return None


def _opt(default: Any = dataclasses.MISSING, check: Callable[[Any], str | None] | None = None,
         factory: Callable[[], Any] | None = None) -> Any:
    meta = {"check": check} if check else {}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    """Which network to build (``spikeseg models`` lists them) and its options."""

    name: str = _opt("spiking_deeplab", _non_empty)
    """Registered model name: spiking_deeplab, spiking_fcn, deeplab or fcn."""
    timesteps: int = _opt(20, at_least(1))
    """T, the number of timesteps of a spiking model (static input is rate-coded over T)."""
    width: float = _opt(1.0, positive())
    """Multiplier of every channel count (1.0 = Table 1)."""
    leak: float = _opt(0.99, positive(upper=1.0))
    """LIF leak factor λ of eq. (2), in (0, 1] (1.0 = IF neuron)."""
    threshold: float = _opt(1.0, positive())
    """Firing threshold θ of eq. (3), > 0."""
    reset: str = _opt("soft", one_of("soft", "hard"))
    """'soft' (subtract θ, the paper) or 'hard' (to zero)."""
    surrogate: str = _opt("pwl", _non_empty)
    """Surrogate gradient: pwl (eq. (6)), fast_sigmoid, exponential, pass_through."""
    surrogate_options: dict = _opt(factory=dict)
    """Surrogate parameters, e.g. {gamma: 0.3} (the paper's code) for pwl."""
    detach_reset: bool = True
    """Keep the reset out of the gradient, as the paper's code."""
    encoding: str = _opt("poisson", one_of("poisson", "poisson_signed", "direct"))
    """Static-image coding: poisson (rates = intensities in [0, 1]), poisson_signed, direct."""
    step_mode: str = _opt("auto", one_of("auto", "step", "fold"))
    """'step' (time outer), 'fold' (time folded into the batch) or 'auto' (by device)."""
    activation: str = _opt("relu", one_of("relu", "leaky_relu"))
    """ANN activation: relu or leaky_relu."""
    norm: str | None = _opt(None, one_of("bntt", "bn", "tdbn", "none", optional=True))
    """Normalisation after each convolution. Spiking: bntt (the paper, per-timestep
    statistics and scale), bn (one batch norm shared over time; folds into the convolution at
    export), tdbn (threshold-dependent BN, Zheng et al. 2021) or none. ANN: bn or none.
    Default (null): bntt for spiking models, bn for ANNs."""
    input_mean: list | None = _opt(None, _input_mean)
    """Per-channel values subtracted from static images where the network reads them (ANNs,
    direct coding; the mean of poisson_signed coding), e.g. the Caffe mean of the original
    code. Default (null): images as they are."""
    propagation_steps: int = _opt(0, at_least(0))
    """Spiking models: zero-input steps after the T input steps (the original code's "full
    propagation"); 0 = off."""
    neuron: str = _opt("lif", one_of("lif", "plif"))
    """Spiking models: lif (eqs. (2)-(3)) or plif (learnable leak λ = sigmoid(a), Fang et al.
    2021)."""
    learn_threshold: bool = False
    """Spiking models: learn the firing threshold θ too."""
    learnable_per: str = _opt("layer", one_of("layer", "channel"))
    """Learnable leak and threshold: one per layer or one per channel."""
    readout_leak: float = _opt(1.0, positive(upper=1.0))
    """Spiking models: leak of the output accumulator in (0, 1]. 1.0 = the paper's average
    over all timesteps; below 1 a leaky integrator that weighs the last steps most (event
    data, whose label is at the end of the window)."""

    def model_options(self, spiking: bool) -> dict[str, Any]:
        """Keyword options for :func:`spikeseg.models.create`."""
        opts: dict[str, Any] = {"width": self.width, "norm": self.norm,
                                "input_mean": self.input_mean}
        if spiking:
            opts.update(
                leak=self.leak, threshold=self.threshold, reset=self.reset,
                surrogate=self.surrogate, surrogate_options=dict(self.surrogate_options),
                detach_reset=self.detach_reset, encoding=self.encoding, step_mode=self.step_mode,
                propagation_steps=self.propagation_steps, neuron=self.neuron,
                learn_threshold=self.learn_threshold, learnable_per=self.learnable_per,
                readout_leak=self.readout_leak,
            )
        else:
            opts["activation"] = self.activation
        return opts


@dataclass
class DataConfig:
    """Which dataset to read and how."""

    dataset: str = _opt("builtin", _non_empty)
    """Registered dataset name (builtin, ...)."""
    root: str | None = None
    """Folder of the dataset (for builtin: its cache folder; default ~/.cache/spikeseg)."""
    image_size: Any = _opt(64, _image_size)
    """Input size: an int (square) or [height, width], each >= 4."""
    options: dict = _opt(factory=dict)
    """Dataset-specific options, e.g. {num_train: 2000, num_val: 400} for builtin."""
    num_workers: int = _opt(0, at_least(0))
    """DataLoader worker processes (0 = load in the main process)."""
    augment: dict = _opt(check=_augment, factory=dict)
    """Training augmentation, each transform by name (spikeseg.data.augment): images
    {flip: true, scale: [0.75, 1.5], photometric: 0.2}; events {flip: true, shift: 4,
    time_crop: 0.25}. Default: none (the paper)."""


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping (defaults: the paper, section 5.1.2)."""

    epochs: int = _opt(60, at_least(1))
    """Training epochs (>= 1)."""
    batch_size: int = _opt(16, at_least(1))
    """Images per optimisation step (per process under torchrun)."""
    optimizer: str = _opt("adam", one_of("adam", "sgd"))
    """adam or sgd (momentum 0.9)."""
    lr: float = _opt(3e-3, positive())
    """Learning rate (> 0)."""
    weight_decay: float = _opt(5e-4, non_negative)
    """L2 penalty (the paper's code: 5e-4 with Adam)."""
    amsgrad: bool = True
    """Adam's AMSGrad variant (the paper's code)."""
    lr_milestones: list = _opt(check=_milestones, factory=lambda: [0.5])
    """Where the LR is multiplied by lr_gamma: fractions of `epochs` in (0, 1] (0.5 = after
    half the epochs, rounded, at least epoch 1) or whole epoch numbers (ints >= 1)."""
    lr_gamma: float = _opt(0.1, positive())
    """Factor applied to the LR at each milestone."""
    seed: int = _opt(0, at_least(0))
    """Seed of initialisation, shuffling, spike coding and augmentation."""
    device: str = _opt("auto", _device)
    """auto (cuda if available), cpu, cuda, cuda:N."""
    out_dir: str = _opt("runs", _non_empty)
    """Parent folder of run directories."""
    name: str | None = _opt(None, _run_name)
    """Run directory name (default: <model>-<dataset>)."""
    eval_every: int = _opt(1, at_least(1))
    """Evaluate on the validation split every N epochs (and always after the last)."""
    eval_timesteps: int | None = _opt(None, at_least(1, optional=True))
    """T used for validation (default: model.timesteps)."""
    max_steps_per_epoch: int | None = _opt(None, at_least(1, optional=True))
    """Cap on optimisation steps per epoch (quick experiments)."""
    max_val_batches: int | None = _opt(None, at_least(1, optional=True))
    """Cap on validation batches (quick experiments)."""
    grad_clip: float | None = _opt(None, positive(optional=True))
    """Clip the gradient norm to this value."""
    channels_last: bool | None = None
    """Channels-last memory format (None = on for CPU, where it is faster: docs/benchmarks.md)."""
    threads: int | None = _opt(None, at_least(1, optional=True))
    """torch intra-op threads (None = torch's default)."""
    report: bool = False
    """After training, write the analysis report of the best checkpoint to <run>/report."""
    loss: str = _opt("mean_logits_ce", one_of("mean_logits_ce", "tet"))
    """mean_logits_ce: cross-entropy of the time-averaged logits (eq. (5), the paper); tet:
    the mean over timesteps of each step's cross-entropy (TET, Deng et al. 2022)."""
    class_weight: str | list | None = _opt(None, _class_weight)
    """Weighted cross-entropy (both losses): null = eq. (5) unweighted (the paper);
    median_freq (w_c ∝ median(f)/f_c) or inv_sqrt_freq (w_c ∝ 1/√f_c) from the class
    frequencies f of the training labels, normalised so the average pixel counts once
    (Σ f_c·w_c = 1); or a list of one weight per class (spikeseg.engine.class_weights)."""
    lovasz_weight: float = _opt(0.0, non_negative)
    """Add this times the Lovász-softmax loss (Berman et al. 2018, a surrogate of 1 − IoU, per
    image over its present classes) of the output logits to the cross-entropy; 0 = off (the
    paper)."""
    teacher: str | None = _opt(None, _non_empty_optional)
    """Pixel-wise knowledge distillation: a trained checkpoint of the same dataset (e.g. the
    ANN twin's checkpoints/best.safetensors) whose soft per-pixel predictions the model also
    learns (spikeseg.engine.distill); null = off (the paper)."""
    distill_weight: float = _opt(1.0, non_negative)
    """With a teacher: weight of the distillation term τ²·KL(teacher ‖ model), averaged over
    every pixel, added to the cross-entropy."""
    distill_temperature: float = _opt(1.0, positive())
    """With a teacher: the softmax temperature τ of both distributions in the distillation
    term (1 = the distributions as they are)."""
    tet_lambda: float = _opt(0.0, lambda v: None if _finite(v) and 0 <= v < 1
                             else "a number in [0, 1)")
    """TET's regulariser weight λ: loss = (1 − λ)·TET + λ·MSE(step logits, tet_means)."""
    tet_means: float = _opt(1.0, lambda v: None if _finite(v) else "a finite number")
    """The constant φ TET's regulariser pulls the step logits towards."""
    precision: str = _opt("fp32", one_of(*PRECISIONS))
    """Arithmetic of weights and activations: fp32; fp64 for numerical checks (e.g. that N
    processes train exactly like one: in fp32 a membrane within rounding error of the
    threshold can fire in one run and not in the other); bf16 / fp16: mixed precision, the
    convolutions in bfloat16 / float16 under autocast while membranes, batch-norm statistics,
    the output accumulator and the loss stay in float32. bf16 runs on CUDA or on a CPU with
    native bfloat16 (AVX512-BF16 or AMX) and is refused elsewhere; fp16 runs on CUDA only."""
    checkpoint_steps: int = _opt(0, at_least(0))
    """Spiking models: time-chunk checkpointing. K > 0 keeps only the membranes at every K-th
    timestep for backward and recomputes each chunk of K steps when backward reaches it:
    exact gradients in less memory (activations of T/K + K steps instead of T), for about one
    more forward pass. 0 = off."""
    allocator: str = _opt("auto", one_of(*ALLOCATOR_MODES))
    """How glibc malloc treats the large blocks a step frees (Linux; spikeseg.runtime): keep =
    reuse them from the heap (no page faults, but the heap's fragmentation stays resident);
    lean = return every block of 1 MiB or more to the OS (resident memory follows the live
    tensors; they are page-faulted in again every step); default = glibc untouched; auto =
    lean with checkpoint_steps > 0, keep otherwise. The environment variable SPIKESEG_MALLOC
    overrides it. It applies to the whole process."""
    bptt: str = _opt("full", one_of("full", "sltt"))
    """Spiking models: full (backpropagation through time, the paper) or sltt (spatial
    learning through time, Meng et al. 2023: the membranes' gradient through time is dropped,
    each timestep backpropagates through its own layers; an approximation)."""
    sltt_k: int | None = _opt(None, at_least(1, optional=True))
    """With bptt=sltt: backpropagate through K randomly drawn timesteps per step (their
    gradients scaled by T/K), the others run without a graph; null = every timestep."""
    kernel: str = _opt("auto", one_of("auto", "torch", "triton"))
    """Spiking models: implementation of the fused BNTT + LIF blocks. auto: Triton kernels on
    CUDA when the triton package is installed (pip install spikeseg[gpu]), PyTorch otherwise;
    torch: always PyTorch (bit-identical to the reference path); triton: always Triton (on
    CPU it runs under Triton's interpreter: for tests, far too slow to train)."""


@dataclass
class Config:
    """A full run configuration."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> Config:
        cfg = cls()
        if not isinstance(d, dict):
            raise SpikesegError(f"{source}: expected a mapping with model/data/train sections")
        for key, value in d.items():
            _set(cfg, key, value, source)
        return cfg


def _check_type(hint: Any, value: Any) -> bool:
    """Loose runtime check of ``value`` against a dataclass field type hint."""
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_check_type(h, value) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is not None:
        hint = origin
    return isinstance(value, hint)


def _accepts_float(hint: Any) -> bool:
    if hint is float:
        return True
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and float in typing.get_args(hint)


def _set(obj: Any, key: str, value: Any, source: str, prefix: str = "") -> None:
    names = {f.name: f for f in dataclasses.fields(obj)}
    if key not in names:
        where = prefix.rstrip(".") or "top level"
        raise SpikesegError(
            f"{source}: unknown key '{prefix}{key}' (valid keys at {where}: {', '.join(names)})"
        )
    current = getattr(obj, key)
    if dataclasses.is_dataclass(current):
        if value is None:  # an empty section ("model:" with nothing below)
            return
        if not isinstance(value, dict):
            raise SpikesegError(f"{source}: '{prefix}{key}' must be a mapping")
        for k, v in value.items():
            _set(current, k, v, source, f"{prefix}{key}.")
        return
    hint = typing.get_type_hints(type(obj))[key]
    if _accepts_float(hint):
        if isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif isinstance(value, str):
            # PyYAML (YAML 1.1) reads exponents without a dot, such as 1e-4, as strings.
            try:
                value = float(value)
            except ValueError:
                pass
    if not _check_type(hint, value):
        tname = getattr(hint, "__name__", str(hint))
        raise SpikesegError(
            f"{source}: '{prefix}{key}' must be {tname}, got {value!r}"
        )
    check = names[key].metadata.get("check")
    problem = check(value) if check else None
    if problem:
        raise SpikesegError(f"{source}: '{prefix}{key}' must be {problem}, got {value!r}")
    setattr(obj, key, value)


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``section.key=value`` strings (values parsed as YAML) to ``cfg`` in place."""
    for item in overrides:
        if "=" not in item:
            raise SpikesegError(f"override {item!r} must look like section.key=value")
        dotted, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        parts = dotted.strip().split(".")
        # A key below a mapping-valued field (data.options.timesteps=4) changes that one entry
        # and keeps the others; a mapping given whole (data.options={...}) replaces it.
        obj: Any = cfg
        depth = 0
        while depth < len(parts) - 1 and dataclasses.is_dataclass(obj) and any(
                f.name == parts[depth] for f in dataclasses.fields(obj)):
            obj = getattr(obj, parts[depth])
            depth += 1
        if isinstance(obj, dict) and depth < len(parts):
            merged = dict(obj)
            inner = merged
            for key in parts[depth:-1]:
                inner[key] = dict(inner[key]) if isinstance(inner.get(key), dict) else {}
                inner = inner[key]
            inner[parts[-1]] = value
            value, parts = merged, parts[:depth]
        nested: Any = value
        for p in reversed(parts[1:]):
            nested = {p: nested}
        _set(cfg, parts[0], nested, "--set")
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, updated from the YAML file ``path`` (if given), then from ``overrides``."""
    cfg = Config()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise SpikesegError(f"config file {p} not found")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError:
            raise SpikesegError(f"config file {p} is not a text file (expected YAML)") from None
        except OSError as e:
            raise SpikesegError(f"config file {p} cannot be read: {e.strerror or e}") from None
        except yaml.YAMLError as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise SpikesegError(f"config file {p} is not valid YAML: {first}") from None
        cfg = Config.from_dict(data, source=str(p))
    return apply_overrides(cfg, overrides or [])


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
