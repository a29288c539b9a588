"""Operation counts and energy estimates of ANNs and SNNs, eqs. (9)-(12) of the paper.

Counting and pricing are separate: :func:`count_ops` runs a model once with hooks and
returns, per synaptic layer, its dense FLOPs and the spike rate of its input;
:func:`estimate_energy` prices them with an :class:`EnergyModel` (pJ per operation).

* Eq. (9), per sample: a convolution costs ``k_h·k_w · H_out·W_out · C_in·C_out / groups``
  (dilation changes nothing; a transposed convolution is counted on its output size, as the
  formula reads); a linear layer ``C_in·C_out``.
* Eq. (10): ``FLOPs_SNN(l) = FLOPs_ANN(l) · R_s(l)`` where ``R_s(l)`` is eq. (8) taken on the
  spikes *entering* layer ``l`` (spikes over all timesteps per input neuron; each input spike
  triggers one accumulate per synapse). Average-pooled spikes keep the rate of the spikes they
  pool, and the output accumulator, which spikeseg evaluates once on time-averaged input, is
  counted per timestep.
* Eqs. (11)-(12): ``E_ANN = Σ FLOPs_ANN · E_MAC``; ``E_SNN = Σ FLOPs_SNN · E_AC``, except the
  first layer, whose input is a real-valued image for static data: it is costed as dense MACs
  at every timestep (``first_layer="mac"``, the default) or, for spike input such as events,
  like any other layer (``first_layer="ac"``).

Energy presets are Horowitz (ISSCC 2014) 45 nm numbers; ``45nm_fp32`` is table 5 of the
paper (E_MAC 4.6 pJ = 3.7 pJ multiply + 0.9 pJ add, E_AC 0.9 pJ).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = [
    "LayerOps",
    "EnergyModel",
    "ENERGY_MODELS",
    "LayerEnergy",
    "EnergyReport",
    "layer_flops",
    "OpCounter",
    "count_ops",
    "estimate_energy",
]


@dataclass(frozen=True)
class EnergyModel:
    """Energy per operation in picojoules."""

    name: str
    e_mac: float
    """One multiply-accumulate (ANN synapse, or real-valued input)."""
    e_ac: float
    """One accumulate (SNN synapse receiving a spike)."""


ENERGY_MODELS: dict[str, EnergyModel] = {
    m.name: m
    for m in (
        EnergyModel("45nm_fp32", e_mac=4.6, e_ac=0.9),   # table 5 of the paper
        EnergyModel("45nm_fp16", e_mac=1.5, e_ac=0.4),   # 1.1 pJ multiply + 0.4 pJ add
        EnergyModel("45nm_int32", e_mac=3.2, e_ac=0.1),  # 3.1 pJ multiply + 0.1 pJ add
        EnergyModel("45nm_int8", e_mac=0.23, e_ac=0.03),  # 0.2 pJ multiply + 0.03 pJ add
    )
}


def layer_flops(module: nn.Module, output: Tensor) -> tuple[str, int]:
    """``(kind, FLOPs per sample)`` of eq. (9) for a conv / transposed conv / linear layer."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        kh, kw = module.kernel_size
        ho, wo = output.shape[-2:]
        flops = kh * kw * ho * wo * module.in_channels * module.out_channels // module.groups
        if isinstance(module, nn.ConvTranspose2d):
            kind = "transposed conv"
        else:
            kind = "dilated conv" if max(module.dilation) > 1 else "conv"
        return kind, int(flops)
    if isinstance(module, nn.Linear):
        tokens = output[0].numel() // module.out_features if output.dim() > 1 else 1
        return "linear", int(module.in_features * module.out_features * tokens)
    raise TypeError(f"no FLOP formula for {type(module).__name__}")


@dataclass
class LayerOps:
    """What :func:`count_ops` measured for one synaptic layer."""

    name: str
    kind: str
    flops: int
    """Eq. (9): dense FLOPs per sample (one ANN inference)."""
    input_rate: float | None
    """Eq. (8) on the layer's input: spikes over all timesteps per input neuron (SNN only)."""


_SYNAPTIC = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


class OpCounter:
    """Context manager counting, per synaptic layer, eq. (9) FLOPs and eq. (8) input rates.

    Accumulates over every forward call made inside the ``with`` block (any batch sizes,
    either execution mode), so it can ride along an evaluation over a whole dataset.

    Example:
        >>> with OpCounter(model) as oc:                 # doctest: +SKIP
        ...     evaluate(model, loader)
        >>> oc.layers()                                  # [LayerOps(...), ...]
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.samples = 0
        self._found: dict[str, LayerOps] = {}
        self._active: dict[str, float] = {}
        self._neurons_in: dict[str, int] = {}
        self._handles: list = []

    def __enter__(self) -> OpCounter:
        self._handles.append(self.model.register_forward_pre_hook(self._count_samples))
        for name, m in self.model.named_modules():
            if isinstance(m, _SYNAPTIC):
                self._handles.append(m.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _count_samples(self, module: nn.Module, args: tuple) -> None:
        x = args[0]
        self.samples += x.shape[1] if x.dim() == 5 else x.shape[0]

    def _hook(self, name: str):
        def fn(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            inp = inputs[0]
            if name not in self._found:
                kind, flops = layer_flops(module, output)
                self._found[name] = LayerOps(name, kind, flops, None)
                self._neurons_in[name] = inp[0].numel()
                self._active[name] = 0.0
            # The accumulator runs once on the time average: its input stands for
            # head_timesteps steps of spikes.
            scale = getattr(self.model, "head_timesteps", None) or 1
            self._active[name] += float(inp.detach().abs().sum()) * scale

        return fn

    def layers(self) -> list[LayerOps]:
        """The counts so far, in the order the layers first ran (rates per sample)."""
        spiking = getattr(self.model, "spiking", False)
        out = []
        for name, ops in self._found.items():
            rate = None
            if spiking and self.samples:
                rate = self._active[name] / (self._neurons_in[name] * self.samples)
            out.append(LayerOps(ops.name, ops.kind, ops.flops, rate))
        return out


@torch.no_grad()
def count_ops(
    model: nn.Module,
    x: Tensor,
    timesteps: int | None = None,
    generator: torch.Generator | None = None,
) -> list[LayerOps]:
    """Run ``model`` once on ``x`` and count its operations per sample, layer by layer.

    Args:
        model: a spikeseg model (ANN or SNN); it is put in eval mode.
        x: an input batch, as the model takes it.
        timesteps: T for a spiking model on static input (default: the model's).

    Returns:
        One :class:`LayerOps` per convolution / transposed convolution / linear layer, in the
        order they first run.
    """
    model.eval()
    with OpCounter(model) as oc:
        if getattr(model, "spiking", False):
            model(x, timesteps=timesteps, generator=generator)
        else:
            model(x)
    return oc.layers()


@dataclass
class LayerEnergy:
    """One layer of an :class:`EnergyReport` (energies in pJ per sample)."""

    name: str
    kind: str
    flops_ann: int
    flops_snn: float
    input_rate: float
    op: str
    """How the SNN layer is priced: "AC" or "MAC" (real-valued first-layer input)."""
    energy_ann: float
    energy_snn: float


@dataclass
class EnergyReport:
    """Eqs. (9)-(12) for a pair of twins (or an SNN against its own dense count)."""

    layers: list[LayerEnergy]
    energy_model: EnergyModel
    timesteps: int
    first_layer: str

    @property
    def energy_ann(self) -> float:
        """Eq. (11), pJ per sample."""
        return sum(layer.energy_ann for layer in self.layers)

    @property
    def energy_snn(self) -> float:
        """Eq. (12), pJ per sample."""
        return sum(layer.energy_snn for layer in self.layers)

    @property
    def ratio(self) -> float:
        """``E_ANN / E_SNN`` (table 6)."""
        return self.energy_ann / self.energy_snn if self.energy_snn else float("inf")

    def as_dict(self) -> dict:
        return {
            "energy_model": vars(self.energy_model),
            "timesteps": self.timesteps,
            "first_layer": self.first_layer,
            "energy_ann_pj": self.energy_ann,
            "energy_snn_pj": self.energy_snn,
            "ratio_ann_over_snn": self.ratio,
            "flops_ann": sum(layer.flops_ann for layer in self.layers),
            "flops_snn": sum(layer.flops_snn for layer in self.layers),
            "layers": [vars(layer) for layer in self.layers],
        }


def estimate_energy(
    snn_ops: list[LayerOps],
    timesteps: int,
    energy_model: EnergyModel | str = "45nm_fp32",
    first_layer: str = "mac",
    ann_ops: list[LayerOps] | None = None,
) -> EnergyReport:
    """Price the counts of :func:`count_ops` with eqs. (10)-(12).

    Args:
        snn_ops: counts of the spiking model (with input rates).
        timesteps: T of the SNN run the rates come from.
        energy_model: an :class:`EnergyModel` or a preset name (``ENERGY_MODELS``).
        first_layer: ``"mac"`` (real-valued input, dense MACs at every timestep) or ``"ac"``.
        ann_ops: counts of the ANN twin (default: the SNN's own dense FLOPs, which are the
            same for twins).
    """
    if isinstance(energy_model, str):
        try:
            energy_model = ENERGY_MODELS[energy_model]
        except KeyError:
            raise ValueError(
                f"unknown energy model {energy_model!r}; choose one of {', '.join(ENERGY_MODELS)}"
            ) from None
    if first_layer not in ("mac", "ac"):
        raise ValueError(f"first_layer must be 'mac' or 'ac', not {first_layer!r}")
    if ann_ops is not None and [o.flops for o in ann_ops] != [o.flops for o in snn_ops]:
        raise ValueError("the ANN and SNN layer counts differ: they are not twins")
    layers = []
    for i, ops in enumerate(snn_ops):
        if ops.input_rate is None:
            raise ValueError(f"layer {ops.name} has no spike rate: count an SNN, not an ANN")
        e_ann = ops.flops * energy_model.e_mac
        if i == 0 and first_layer == "mac":
            flops_snn, op = float(ops.flops * timesteps), "MAC"
            e_snn = flops_snn * energy_model.e_mac
        else:
            flops_snn, op = ops.flops * ops.input_rate, "AC"
            e_snn = flops_snn * energy_model.e_ac
        layers.append(LayerEnergy(ops.name, ops.kind, ops.flops, flops_snn, ops.input_rate, op,
                                  e_ann, e_snn))
    return EnergyReport(layers, energy_model, timesteps, first_layer)
