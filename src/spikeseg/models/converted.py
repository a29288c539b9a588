"""Converted models: the structure of an ANN's spiking twin, rebuilt from a checkpoint.

Conversion (:mod:`spikeseg.convert`) turns a trained ANN into an SNN in two parts: a change of
*structure* — BatchNorm folded into the convolutions, every ReLU (or leaky ReLU) replaced by
integrate-and-fire neurons with a threshold per layer, per channel or per neuron
(:class:`BalancedIF`) — and the *calibration* of those thresholds on data. This module holds
the structure, so that loading a converted checkpoint needs no knowledge of the calibration
algorithm: a converted model records its kind ``"converted"`` and its
:class:`ConversionConfig` in the checkpoint's model metadata, and the kind registry
(:func:`spikeseg.models.registry.register_kind`) rebuilds it with :func:`spiking_twin` before
the weights and thresholds are loaded.

**What a spike stands for.** With ``fold_thresholds=True`` (spikeseg's conversion) a spike of
neuron ``(l, c, h, w)`` stands for ``θ_{l,c,h,w}`` units of the ANN's activation:

* layer- and channel-wise thresholds are folded into the weights of every layer that reads
  the spikes (``W[:, c] *= θ_{l,c}``; exact, since convolutions, average pools and bilinear
  resizes are linear), and spikes stay binary;
* a per-neuron threshold cannot be folded into a convolution, whose weight is shared by all
  positions. Its per-channel maximum ``θ̂_{l,c} = max_{h,w} θ_{l,c,h,w}`` is folded like a
  channel-wise threshold, and the neuron emits a *weighted* spike ``s·ρ`` with
  ``ρ_{l,c,h,w} = θ_{l,c,h,w} / θ̂_{l,c} ∈ (0, 1]`` (a graded spike). Spike hooks and spike
  counts see the events ``s``; the layer that reads them sees ``s·ρ``, so
  ``Σ_t W·θ̂·ρ·s / T = W·θ·(rate) → W·a``, and the network still converges to the ANN.

With ``fold_thresholds=False`` (the paper's original code, Sengupta et al. 2019's threshold
balancing; imported original files use it) a spike stands for one unit, weights are left as
they are and every spike is binary: each threshold is then the largest input current of its
layer in units of the spikes it receives.

**Per-neuron thresholds depend on the input size**: a layer's threshold tensor is
``[C, H_l, W_l]``, the shape of its activations for the input size the thresholds were
calibrated at (``ConversionConfig.input_size``, recorded in the checkpoint). The model runs at
that input size only; another size is a one-line error.

**Leaky-ReLU ANNs** (``activation="leaky_relu"``, slope α) convert to neurons that also fire
negative spikes — the signed neurons with imbalanced thresholds of Spiking-YOLO (Kim et al.
2020), which the original code's ``ibt`` option follows: a spike ``-1`` where
``u[t] < -θ/α``, after which ``u[t] += θ/α``. A negative current ``a`` then gives negative
spikes at the rate ``α·|a|/θ``, each standing for ``θ`` (the same weights read both signs),
so the time average is ``α·a``: the leaky ReLU.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..encoding import ENCODINGS, build_encoder
from ..errors import SpikesegError
from ..neurons import LIF
from .layers import ConvBlock, fold_batchnorm
from .registry import register_kind

__all__ = ["ConversionConfig", "BalancedIF", "spiking_twin", "conversion_blocks", "KIND",
           "METHODS", "SOURCES", "set_threshold", "activation_shapes"]

KIND = "converted"
"""The checkpoint kind of a converted model."""

METHODS = ("layer", "channel", "neuron")
SOURCES = ("snn", "ann")


@dataclass
class ConversionConfig:
    """How an ANN is converted (recorded in the converted checkpoint)."""

    method: str = "layer"
    """``"layer"`` (one threshold per layer, Sengupta et al.), ``"channel"`` (Spiking-YOLO) or
    ``"neuron"`` (one per neuron ``[C, H, W]``, the original code's third type; the model then
    runs at ``input_size`` only)."""
    percentile: float = 100.0
    """Percentile of the per-neuron maxima used as threshold; 100 = the maximum."""
    source: str = "snn"
    """Statistics of the converted layers' input currents (``"snn"``) or of ANN activations."""
    calibration_images: int = 64
    """Training images used to find the thresholds."""
    calibration_timesteps: int = 64
    """Timesteps per calibration run (``source="snn"``)."""
    timesteps: int = 1000
    """Default inference T of the converted model (any T can be used at evaluation)."""
    encoding: str = "poisson"
    """Coding of static images: ``"poisson"`` (the paper) or ``"direct"`` (analog currents).
    An ANN with an ``input_mean`` (an imported original model) gets signed Poisson coding of
    the mean-subtracted image, as it was trained on."""
    input_size: list[int] | None = None
    """``[H, W]`` of the input the per-neuron thresholds belong to (``method="neuron"``; taken
    from the calibration images when not given)."""
    fold_thresholds: bool = True
    """True: a spike stands for θ units, θ folded into the consumers' weights (exact in the
    limit). False: a spike stands for one unit and weights are left as they are, as in the
    paper's original code (imported original files); see the module docstring."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise SpikesegError(f"conversion method must be one of {METHODS}, not {self.method!r}")
        if self.source not in SOURCES:
            raise SpikesegError(f"calibration source must be one of {SOURCES}, not {self.source!r}")
        if not 0.0 < float(self.percentile) <= 100.0:
            raise SpikesegError(f"percentile must be in (0, 100], got {self.percentile}")
        for k in ("calibration_images", "calibration_timesteps", "timesteps"):
            if int(getattr(self, k)) < 1:
                raise SpikesegError(f"{k} must be >= 1, got {getattr(self, k)}")
        if self.encoding not in ENCODINGS:
            raise SpikesegError(f"encoding must be one of {ENCODINGS}, not {self.encoding!r}")
        if self.input_size is not None:
            size = list(self.input_size)
            if len(size) != 2 or any(int(v) != v or int(v) < 1 for v in size):
                raise SpikesegError(
                    f"input_size must be [H, W] with positive integers, got {self.input_size!r}"
                )
            self.input_size = [int(v) for v in size]
        self.fold_thresholds = bool(self.fold_thresholds)


class BalancedIF(LIF):
    """Integrate-and-fire neurons with soft reset and thresholds per layer, channel or neuron.

    ``u[t] = u[t-1] + x[t]``; ``s[t] = 1`` where ``u[t] > θ`` (θ broadcast from ``[1]``,
    ``[C, 1, 1]`` or ``[C, H, W]``) and, with a negative slope α > 0, ``s[t] = -1`` where
    ``u[t] < -θ/α``; then ``u[t] -= θ·[s = 1]`` and ``u[t] += (θ/α)·[s = -1]``. The output is
    ``s`` — or ``s·ρ`` with ``ρ = θ / max_{h,w} θ`` for folded per-neuron thresholds (see the
    module docstring). Spike hooks see ``s`` as for :class:`~spikeseg.neurons.LIF`. Inference
    only (no surrogate gradient).

    Args:
        channels: number of thresholds (1 = one per layer, C = one per channel).
        shape: the threshold tensor's shape instead (``(C, H, W)``: one per neuron).
        negative_slope: α of the leaky ReLU the neurons replace (0 = ReLU: no negative spikes).
        folded: whether thresholds are folded into the consumers' weights.
        input_size: ``(H, W)`` of the model input per-neuron thresholds belong to (for errors).
    """

    def __init__(
        self,
        channels: int = 1,
        *,
        shape: Sequence[int] | None = None,
        negative_slope: float = 0.0,
        folded: bool = True,
        input_size: Sequence[int] | None = None,
    ) -> None:
        super().__init__(leak=1.0, threshold=1.0, reset="soft")
        shape = tuple(int(s) for s in shape) if shape is not None else (int(channels),)
        if len(shape) not in (1, 3):
            raise ValueError(f"threshold shape must be (n,) or (C, H, W), got {shape}")
        if not 0.0 <= negative_slope < 1.0:
            raise ValueError(f"negative_slope must be in [0, 1), got {negative_slope}")
        self.register_buffer("theta", torch.ones(shape))
        self.negative_slope = float(negative_slope)
        self.folded = bool(folded)
        self.input_size = tuple(input_size) if input_size is not None else None
        self.probe: Any = None
        """While calibrating: called with each input current ``x[t]`` before firing."""

    @property
    def per_neuron(self) -> bool:
        return self.theta.dim() == 3

    def folded_scale(self) -> Tensor:
        """The part of θ folded into consumers: θ itself, or its per-channel maximum."""
        return self.theta.amax(dim=(1, 2)) if self.per_neuron else self.theta

    def _theta(self, x: Tensor) -> Tensor:
        th = self.theta.to(x.dtype)
        if self.per_neuron:
            if tuple(x.shape[-3:]) != tuple(th.shape):
                at = f" (model input {self.input_size[0]}x{self.input_size[1]})" \
                    if self.input_size else ""
                raise SpikesegError(
                    f"per-neuron thresholds are for activations {tuple(th.shape)}{at}, got "
                    f"{tuple(x.shape[-3:])}: evaluate at the calibration input size or convert "
                    "with method='layer' or 'channel'"
                )
            return th
        return th.view(-1, 1, 1) if th.numel() > 1 else th.view(())

    def _spike_weight(self, x: Tensor) -> Tensor | None:
        if not (self.per_neuron and self.folded):
            return None
        th = self.theta.to(x.dtype)
        return th / th.amax(dim=(1, 2), keepdim=True)

    def extra_repr(self) -> str:
        kind = "x".join(map(str, self.theta.shape)) if self.per_neuron else self.theta.numel()
        s = f"thresholds={kind}, reset='soft'"
        if self.negative_slope:
            s += f", negative_slope={self.negative_slope}"
        return s if self.folded else s + ", folded=False"

    def _fire(self, x: Tensor, mem: Tensor | None) -> tuple[Tensor, Tensor]:
        """``(s, m)``: spikes (-1/0/+1) and the membrane after reset, for input ``x``."""
        if self.probe is not None:
            self.probe(x)
        u = x if mem is None else x + mem
        th = self._theta(x)
        s = (u > th).to(x.dtype)
        if self.negative_slope > 0.0:
            th_neg = th / self.negative_slope
            neg = (u < -th_neg).to(x.dtype)
            return s - neg, u - s * th + neg * th_neg
        return s, u - s * th

    def step(
        self, x: Tensor, mem: Tensor | None = None, t: int | None = None
    ) -> tuple[Tensor, Tensor]:
        s, m = self._fire(x, mem)
        if self._spike_hooks:
            if t is None:
                raise ValueError("BalancedIF.step: pass the timestep t= when hooks are registered")
            self._notify(s, t)
        w = self._spike_weight(x)
        return (s if w is None else s * w), m

    def forward(self, x: Tensor) -> Tensor:
        spikes = torch.empty_like(x)
        m = None
        for t, xt in enumerate(x.unbind(0)):
            spikes[t], m = self._fire(xt, m)
        if self._spike_hooks:
            self._notify(spikes, None)
        w = self._spike_weight(x)
        return spikes if w is None else spikes * w


def conversion_blocks(model: nn.Module) -> list[tuple[str, ConvBlock]]:
    """The activation blocks of ``model`` in forward order, or a SpikesegError if it has none."""
    try:
        return model.activation_blocks()
    except (AttributeError, NotImplementedError):
        raise SpikesegError(
            f"{type(model).__name__} cannot be converted: it does not describe its layer graph"
        ) from None


@torch.no_grad()
def activation_shapes(model: nn.Module, input_size: Sequence[int]) -> dict[str, tuple[int, ...]]:
    """``{block name: (C, H, W)}`` of every activation block's output for one input of
    ``input_size`` ``(H, W)`` (one forward pass of ``model`` on zeros)."""
    shapes: dict[str, tuple[int, ...]] = {}
    handles = [
        block.act.register_forward_hook(
            lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape[-3:])))
        for name, block in conversion_blocks(model)
    ]
    was_training = model.training
    try:
        p = next(model.parameters())
        model.eval()
        model(torch.zeros(1, model.in_channels, *input_size, device=p.device, dtype=p.dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return shapes


def spiking_twin(ann: nn.Module, config: ConversionConfig | None = None) -> nn.Module:
    """The spiking twin of a trained ANN: BN folded, (leaky) ReLUs → :class:`BalancedIF` (θ = 1).

    The thresholds still have to be found (:func:`spikeseg.convert.calibrate`) or loaded from
    a checkpoint. ``ann`` is not modified. Static images are coded as ``config.encoding``
    says, except that an ANN with an ``input_mean`` (it was trained on ``image − mean``) gets
    signed Poisson coding of ``image − mean`` for ``"poisson"``; with ``"direct"`` coding the
    model subtracts the mean itself.

    Raises:
        SpikesegError: ``ann`` is spiking already, uses another activation, has no layer
            graph, or per-neuron thresholds are asked for without an input size.
    """
    config = config or ConversionConfig()
    if getattr(ann, "spiking", True):
        raise SpikesegError("conversion takes a trained ANN (deeplab or fcn), not a spiking model")
    shapes: dict[str, tuple[int, ...]] = {}
    if config.method == "neuron":
        if config.input_size is None:
            raise SpikesegError(
                "per-neuron thresholds need the input size: set ConversionConfig.input_size to "
                "[H, W] (convert() takes it from the calibration images)"
            )
        shapes = activation_shapes(ann, config.input_size)
    snn = copy.deepcopy(ann).eval()
    for name, block in conversion_blocks(snn):
        if isinstance(block.act, nn.ReLU):
            slope = 0.0
        elif isinstance(block.act, nn.LeakyReLU):
            slope = float(block.act.negative_slope)
        else:
            raise SpikesegError(
                f"layer {name} uses {type(block.act).__name__}; conversion needs ReLU or leaky "
                "ReLU activations"
            )
        if isinstance(block.norm, nn.BatchNorm2d):
            block.conv = fold_batchnorm(block.conv, block.norm)
        elif not isinstance(block.norm, nn.Identity):
            raise SpikesegError(f"layer {name}: cannot fold {type(block.norm).__name__}")
        block.norm = nn.Identity()
        channels = block.conv.out_channels if config.method == "channel" else 1
        block.act = BalancedIF(
            channels, shape=shapes.get(name), negative_slope=slope,
            folded=config.fold_thresholds, input_size=config.input_size,
        ).to(block.conv.weight.device)
    snn.spiking = True
    snn.timesteps = int(config.timesteps)
    mean = getattr(ann, "input_mean", None)
    if config.encoding == "direct":
        snn.encoding = "direct"
        snn.encoder = build_encoder("direct")
    elif mean is not None or config.encoding == "poisson_signed":
        # Signed coding of image − mean (mean 0 for an ANN that read plain images).
        snn.encoding = "poisson_signed"
        snn.encoder = build_encoder(
            "poisson_signed", mean=mean if mean is not None else [0.0] * ann.in_channels
        )
    else:
        snn.encoding = "poisson"
        snn.encoder = build_encoder("poisson")
    snn.conversion = asdict(config)
    snn.checkpoint_kind = KIND
    return snn


@torch.no_grad()
def set_threshold(snn: nn.Module, name: str, theta: Tensor) -> None:
    """Set block ``name``'s θ of a converted model (and fold it into its consumers, if folded).

    Thresholds ``<= 0`` (a layer, channel or neuron that never fired in calibration) become 1:
    any value works for a neuron whose input stays ``<= 0``, and a tiny θ would turn noise
    into bursts. With folded thresholds, every layer that reads the block's spikes gets its
    input weights multiplied by the change of the folded part (θ, or its per-channel maximum
    for per-neuron thresholds), so setting θ twice is the same as setting it once.

    Args:
        snn: a model from :func:`spiking_twin`.
        name: an activation block (see :func:`conversion_blocks`).
        theta: a scalar, ``[C]`` or ``[C, H, W]`` tensor (the block's threshold shape).
    """
    modules = dict(snn.named_modules())
    act: BalancedIF = modules[name].act
    theta = torch.as_tensor(theta).to(act.theta).reshape(act.theta.shape)
    theta = torch.where(theta > 0, theta, torch.ones_like(theta))
    before = act.folded_scale().clone()
    act.theta.copy_(theta)
    if not act.folded:
        return
    ratio = act.folded_scale() / before
    for consumer in snn.spike_consumers()[name]:
        w = modules[consumer].weight
        if isinstance(modules[consumer], nn.ConvTranspose2d):
            w.mul_(ratio.view(-1, 1, 1, 1) if ratio.numel() > 1 else ratio)
        else:
            w.mul_(ratio.view(1, -1, 1, 1) if ratio.numel() > 1 else ratio)


def _rebuild(model: nn.Module, options: dict[str, Any]) -> nn.Module:
    """Kind rebuilder: the converted structure of the ANN ``model`` (thresholds at 1)."""
    try:
        config = ConversionConfig(**options)
    except TypeError as e:
        raise SpikesegError(f"bad conversion settings: {e}") from None
    return spiking_twin(model, config)


register_kind(KIND, _rebuild, options_attr="conversion")
