"""The model registry: build any spikeseg model by name.

>>> from spikeseg import models
>>> models.list_models()
['deeplab', 'fcn', 'spiking_deeplab', 'spiking_fcn']
>>> net = models.create("spiking_deeplab", num_classes=21, timesteps=20, width=0.25)
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

__all__ = [
    "register_model", "create", "list_models", "model_entry", "ModelEntry", "register_kind",
    "model_kind", "build_from_metadata", "list_kinds",
]

_NOT_OPTIONS = {"self", "args", "kwargs", "num_classes", "in_channels", "spiking"}
SNN_ONLY_OPTIONS = frozenset(
    {"leak", "threshold", "reset", "surrogate", "surrogate_options", "detach_reset",
     "encoding", "step_mode", "propagation_steps", "neuron", "learn_threshold", "learnable_per",
     "readout_leak"}
)
"""Options that only spiking models take (neuron and input-coding settings)."""
ANN_ONLY_OPTIONS = frozenset({"activation"})


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: builder, architecture class, whether it spikes, its ANN/SNN twin."""

    name: str
    builder: Callable[..., nn.Module]
    arch: type
    spiking: bool
    twin: str | None
    description: str

    def options(self) -> list[str]:
        """Keyword options accepted by :func:`create` for this model (from the class's MRO)."""
        names: set[str] = set()
        for cls in self.arch.__mro__:
            if "__init__" in vars(cls) and issubclass(cls, nn.Module) and cls is not nn.Module:
                names |= set(inspect.signature(cls.__init__).parameters)
        names -= _NOT_OPTIONS
        names -= ANN_ONLY_OPTIONS if self.spiking else SNN_ONLY_OPTIONS
        return sorted(names)

    def defaults(self) -> dict[str, object]:
        """Default value of every option (from the class's MRO signatures)."""
        valid = set(self.options()) - {"timesteps"}  # an argument of create() itself
        out: dict[str, object] = {}
        for cls in reversed(self.arch.__mro__):
            if "__init__" in vars(cls) and issubclass(cls, nn.Module) and cls is not nn.Module:
                for n, p in inspect.signature(cls.__init__).parameters.items():
                    if n in valid and p.default is not inspect.Parameter.empty:
                        out[n] = p.default
        return out


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, *, arch: type, spiking: bool, twin: str | None = None) -> Callable:
    """Decorator registering ``builder(num_classes, in_channels=3, **options)`` as ``name``.

    Duplicate names are an error.
    """

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        doc = (inspect.getdoc(fn) or "").splitlines()
        _REGISTRY[name] = ModelEntry(name, fn, arch, spiking, twin, doc[0] if doc else "")
        return fn

    return wrap


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern``, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def model_entry(name: str) -> ModelEntry:
    """The registry entry of ``name`` (``ValueError`` naming the choices if unknown)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; choose one of: {', '.join(list_models())}"
        ) from None


def create(
    name: str, num_classes: int, in_channels: int = 3, timesteps: int = 20, **options
) -> nn.Module:
    """Build model ``name``.

    Args:
        name: one of :func:`list_models`.
        num_classes: output classes.
        in_channels: input channels (3 for RGB, 2 for event polarities, ...).
        timesteps: T of spiking models (ANNs ignore it).
        **options: architecture options, e.g. ``width``, ``leak``, ``threshold``, ``reset``,
            ``surrogate``, ``encoding``, ``step_mode`` (see :meth:`ModelEntry.options`).

    Raises:
        ValueError: unknown name or option, naming the valid ones.
    """
    entry = model_entry(name)
    valid = entry.options()
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"model {name!r} has no option {', '.join(map(repr, unknown))}; "
            f"valid options: {', '.join(valid)}"
        )
    model = entry.builder(num_classes, in_channels, timesteps=timesteps, **options)
    # Every option with its value, defaults included: what a checkpoint records.
    model.create_options = {**entry.defaults(), **options}
    return model


# --------------------------------------------------------------------------- kinds
# A checkpoint records how its model was made: "trained" (built by ``create`` and trained),
# or a kind registered here whose rebuilder turns the registered model into the structure that
# the weights belong to (e.g. "converted": an ANN's spiking twin, spikeseg.models.converted).
# Loaders call build_from_metadata and need no knowledge of the code that made the model.

TRAINED = "trained"


@dataclass(frozen=True)
class _Kind:
    rebuild: Callable[[nn.Module, dict], nn.Module]
    options_attr: str


_KINDS: dict[str, _Kind] = {}


def register_kind(kind: str, rebuild: Callable[[nn.Module, dict], nn.Module], *,
                  options_attr: str) -> None:
    """Register a model kind for checkpoints.

    Args:
        kind: the name recorded in a checkpoint's ``model.kind``.
        rebuild: ``rebuild(model, options) -> model``: from the model ``create`` builds for
            the checkpoint's name and options, the structure the saved weights belong to.
        options_attr: the attribute of such a model holding its JSON-serialisable ``options``
            (saved as ``model.kind_options``).
    """
    if kind == TRAINED or kind in _KINDS:
        raise ValueError(f"model kind {kind!r} is already registered")
    _KINDS[kind] = _Kind(rebuild, options_attr)


def list_kinds() -> list[str]:
    """Kinds a checkpoint may record: ``"trained"`` and the registered ones."""
    return [TRAINED, *sorted(_KINDS)]


def model_kind(model: nn.Module) -> tuple[str, dict]:
    """``(kind, options)`` of a model, as a checkpoint records them."""
    kind = getattr(model, "checkpoint_kind", TRAINED)
    if kind == TRAINED:
        return TRAINED, {}
    if kind not in _KINDS:
        raise ValueError(f"model kind {kind!r} is not registered")
    return kind, dict(getattr(model, _KINDS[kind].options_attr))


def build_from_metadata(meta: dict, **overrides) -> nn.Module:
    """The model described by a checkpoint's ``model`` metadata section (weights not loaded).

    Args:
        meta: ``{"name", "num_classes", "in_channels", "timesteps", "options"[, "kind",
            "kind_options"]}``.
        **overrides: model options to change (e.g. ``step_mode="fold"``).

    Raises:
        KeyError, ValueError, TypeError: an incomplete section, an unknown model, option or
            kind (the loader turns these into one-line errors).
    """
    model = create(meta["name"], meta["num_classes"], meta["in_channels"],
                   timesteps=meta["timesteps"], **{**meta.get("options", {}), **overrides})
    kind = meta.get("kind", TRAINED)
    if kind == TRAINED:
        return model
    if kind not in _KINDS:
        raise ValueError(f"unknown model kind {kind!r}; known kinds: {', '.join(list_kinds())}")
    return _KINDS[kind].rebuild(model, dict(meta.get("kind_options") or {}))
