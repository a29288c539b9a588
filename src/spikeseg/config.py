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
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import SpikesegError

__all__ = ["ModelConfig", "DataConfig", "TrainConfig", "Config", "load_config", "apply_overrides"]


@dataclass
class ModelConfig:
    """Which network to build (``spikeseg models`` lists them) and its options."""

    name: str = "spiking_deeplab"
    """Registered model name: spiking_deeplab, spiking_fcn, deeplab or fcn."""
    timesteps: int = 20
    """T, the number of timesteps of a spiking model (static input is rate-coded over T)."""
    width: float = 1.0
    """Multiplier of every channel count (1.0 = Table 1)."""
    leak: float = 0.99
    """LIF leak factor λ of eq. (2) (1.0 = IF neuron)."""
    threshold: float = 1.0
    """Firing threshold θ of eq. (3)."""
    reset: str = "soft"
    """'soft' (subtract θ, the paper) or 'hard' (to zero)."""
    surrogate: str = "pwl"
    """Surrogate gradient: pwl (eq. (6)), fast_sigmoid, exponential, pass_through."""
    surrogate_options: dict = field(default_factory=dict)
    """Surrogate parameters, e.g. {gamma: 0.3} (the paper's code) for pwl."""
    detach_reset: bool = True
    """Keep the reset out of the gradient, as the paper's code."""
    encoding: str = "poisson"
    """Static-image coding: poisson (rates = intensities in [0, 1]), poisson_signed, direct."""
    step_mode: str = "auto"
    """'step' (time outer), 'fold' (time folded into the batch) or 'auto' (by device)."""
    activation: str = "relu"
    """ANN activation: relu or leaky_relu."""
    norm: str | None = None
    """Normalisation after each convolution. Spiking: bntt (the paper, per-timestep
    statistics and scale), bn (one batch norm shared over time; folds into the convolution at
    export), tdbn (threshold-dependent BN, Zheng et al. 2021) or none. ANN: bn or none.
    Default (null): bntt for spiking models, bn for ANNs."""

    def model_options(self, spiking: bool) -> dict[str, Any]:
        """Keyword options for :func:`spikeseg.models.create`."""
        opts: dict[str, Any] = {"width": self.width, "norm": self.norm}
        if spiking:
            opts.update(
                leak=self.leak, threshold=self.threshold, reset=self.reset,
                surrogate=self.surrogate, surrogate_options=dict(self.surrogate_options),
                detach_reset=self.detach_reset, encoding=self.encoding, step_mode=self.step_mode,
            )
        else:
            opts["activation"] = self.activation
        return opts


@dataclass
class DataConfig:
    """Which dataset to read and how."""

    dataset: str = "builtin"
    """Registered dataset name (builtin, ...)."""
    root: str | None = None
    """Folder of the dataset (for builtin: its cache folder; default ~/.cache/spikeseg)."""
    image_size: Any = 64
    """Input size: an int (square) or [height, width]."""
    options: dict = field(default_factory=dict)
    """Dataset-specific options, e.g. {num_train: 2000, num_val: 400} for builtin."""
    num_workers: int = 0
    """DataLoader worker processes."""


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping (defaults: the paper, section 5.1.2)."""

    epochs: int = 60
    batch_size: int = 16
    optimizer: str = "adam"
    """adam or sgd (momentum 0.9)."""
    lr: float = 3e-3
    weight_decay: float = 5e-4
    """L2 penalty (the paper's code: 5e-4 with Adam)."""
    amsgrad: bool = True
    """Adam's AMSGrad variant (the paper's code)."""
    lr_milestones: list = field(default_factory=lambda: [0.5])
    """Epochs (as fractions of `epochs` when < 1) where the LR is multiplied by lr_gamma."""
    lr_gamma: float = 0.1
    seed: int = 0
    device: str = "auto"
    """auto (cuda if available), cpu, cuda, cuda:N."""
    out_dir: str = "runs"
    """Parent folder of run directories."""
    name: str | None = None
    """Run directory name (default: <model>-<dataset>)."""
    eval_every: int = 1
    """Evaluate on the validation split every N epochs (and always after the last)."""
    eval_timesteps: int | None = None
    """T used for validation (default: model.timesteps)."""
    max_steps_per_epoch: int | None = None
    """Cap on optimisation steps per epoch (quick experiments)."""
    max_val_batches: int | None = None
    """Cap on validation batches (quick experiments)."""
    grad_clip: float | None = None
    """Clip the gradient norm to this value."""
    channels_last: bool | None = None
    """Channels-last memory format (None = on for CPU, where it is faster: docs/benchmarks.md)."""
    threads: int | None = None
    """torch intra-op threads (None = torch's default)."""
    report: bool = False
    """After training, write the analysis report of the best checkpoint to <run>/report."""


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
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise SpikesegError(f"config file {p} is not valid YAML: {str(e).splitlines()[0]}") from None
        cfg = Config.from_dict(data, source=str(p))
    return apply_overrides(cfg, overrides or [])


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
