"""Operation counts and energy estimates of ANNs and SNNs, eqs. (9)-(12) of the paper.

Counting and pricing are separate: :func:`count_ops` runs a model once with hooks and
returns, per synaptic layer, its dense count and the spike rate of its input;
:func:`estimate_energy` prices them with an :class:`EnergyModel` (pJ per operation).

**Eq. (9), multiply-accumulates per sample, as the dense layer performs them** (the "FLOPs"
of the paper are MACs: one MAC is priced ``E_MAC``; ``torch.utils.flop_counter`` and fvcore
report 2 FLOPs per MAC, and agree with these counts once halved):

* convolution: ``k_h·k_w · H_out·W_out · C_in·C_out / groups``, eq. (9)'s ``k²·O²·C_in·C_out``.
  Stride, padding and dilation act only through ``H_out·W_out``; taps that read zero padding
  are counted, as the dense computation performs them.
* transposed convolution: ``k_h·k_w · H_in·W_in · C_in·C_out / groups``. Each *input* value is
  multiplied by a ``k_h×k_w×C_out/groups`` kernel and scattered into the output, so in eq. (9)
  ``O`` is the input size of a transposed convolution. (Its output is about ``stride²`` times
  larger: counted on it, FCN's ``up1``-``up3``, ``h×w → (2h+1)×(2w+1)``, would be charged
  ``(2h+1)(2w+1)/(h·w)`` times their MACs, 4.1-4.5 at a 64×64 input.)
* linear: ``C_in·C_out`` per token.

Bias additions are not counted, here as in eq. (9) and ``FlopCounterMode``: a bias adds one
value per output, ``1/(k_h·k_w·C_in/groups)`` of the layer's MACs (1/64 for FCN's ``score1``
at full width), and in an SNN it is a constant current, not an operation driven by spikes.
Norms, pools, resizes and neurons are not counted either (section 5.5 counts MACs only).

**Eq. (10)**: ``FLOPs_SNN(l) = FLOPs_ANN(l) · R_s(l)``, where ``R_s(l)`` is eq. (8) taken on the
*input* of layer ``l``: ``Σ|input|`` over all timesteps per input value (``C_in·H_in·W_in``).
For binary spikes this charges every spike ``FLOPs_ANN(l) / (C_in·H_in·W_in)`` accumulates,
its fan-out when all inputs have the same one:

* exact for a transposed convolution without padding (FCN's ``up2``, ``up3``): each spike is
  scattered through the whole kernel, ``k_h·k_w·C_out/groups`` accumulates, and counting on
  the input size makes eq. (10) exactly ``#spikes · k_h·k_w·C_out/groups``; exact for 1×1
  convolutions and linear layers;
* an upper bound for a padded convolution: a spike within the padding's reach of the border
  has fewer targets than ``k_h·k_w·C_out/groups``; eq. (10), like the dense count, charges the
  taps that read padding, which an event-driven implementation skips. For spikes spread
  uniformly over an ``H×W`` map, the event-driven count is ``(1 − 2/(3H))·(1 − 2/(3W))`` of
  eq. (10)'s for a 3×3 convolution with padding 1 (0.979 at 64×64, 0.918 at 16×16), and 1/4
  for DeepLab's ``d=12`` classifier on a 16×16 map (a 64×64 input).

After an average pool (VGG9's 3×3, stride 2, padding 1, zeros averaged in), layer ``l`` reads
pooled values (multiples of 1/9), not spikes, and its ``R_s`` is their mean over all timesteps:
the number of spikes an integrate-and-fire pool (weights 1/9, threshold 1, no leak, soft
reset) would pass on, to within its residual charge (at most one spike per pooled neuron over
the window). So eq. (10) prices layer ``l`` as accumulates of that spiking pool's spikes, the
binary events a neuromorphic implementation exchanges; the pool's own accumulates are not
counted. This rate is *not* eq. (8) of the pooled neurons: a spike reaches 1, 2 or 4 windows
with weight 1/9 (1/4 on average inside the map, so the rate is kept there), but the border
windows average in padding: for a uniform rate ``r`` over an ``H×W`` map (``H``, ``W`` even)
the pooled mean is ``r·(1 − 2/(3H))·(1 − 2/(3W))``, 2.1% below ``r`` at 64×64, 4.1% at 32×32,
8.2% at 16×16. (The pooled neurons' rate fits no implementation: folding the pool into layer
``l``'s synapses makes a 7×7 stride-2 kernel, through which a spike inside the map reaches
12.25·C_out synapses on average, not the 2.25·C_out that ``FLOPs_ANN(l)`` at that rate
charges.)

Inputs that are neither spikes nor pooled spikes are priced by the same formula on
``Σ|input|``: FCN's ``up1`` reads ``score4``'s currents (two linear layers with no neuron
between; 0.02% of the model's MACs at full width, 21 classes). The output accumulator, which
spikeseg evaluates once on time-averaged input, is counted per timestep: its input is scaled
back to the spikes of all timesteps.

**Eqs. (11)-(12)**: ``E_ANN = Σ FLOPs_ANN · E_MAC``; ``E_SNN = Σ FLOPs_SNN · E_AC``, except the
first layer, whose input is a real-valued image for static data: it is costed as dense MACs
at every timestep (``first_layer="mac"``, the default) or, for spike input such as events,
like any other layer (``first_layer="ac"``).

Energy presets are Horowitz (ISSCC 2014) 45 nm numbers; ``45nm_fp32`` is table 5 of the
paper (E_MAC 4.6 pJ = 3.7 pJ multiply + 0.9 pJ add, E_AC 0.9 pJ).
"""

from __future__ import annotations

import math
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


_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_SYNAPTIC = (*_CONVS, *_TRANSPOSED, nn.Linear)


def layer_flops(module: nn.Module, output: Tensor, inp: Tensor | None = None) -> tuple[str, int]:
    """``(kind, MACs per sample)`` of eq. (9) for a convolution, transposed convolution or linear.

    Convolution ``k_h·k_w·H_out·W_out·C_in·C_out/groups``; transposed convolution
    ``k_h·k_w·H_in·W_in·C_in·C_out/groups`` (on its input: each input value meets the whole
    kernel); linear ``C_in·C_out`` per token. Bias additions are not included (see the module
    docstring); the counts are half of ``torch.utils.flop_counter``'s, which has 2 FLOPs/MAC.

    Args:
        module: the layer.
        output: its output, batched (``[N, C_out, *spatial]``, or ``[N, ..., C_out]``).
        inp: its input; needed for a transposed convolution, which is counted on it.

    Returns:
        The kind (``"conv"``, ``"dilated conv"``, ``"transposed conv"`` or ``"linear"``) and
        the count for one sample.
    """
    if isinstance(module, (*_CONVS, *_TRANSPOSED)):
        nd = len(module.kernel_size)
        if isinstance(module, _TRANSPOSED):
            if inp is None:
                raise ValueError(
                    f"a transposed convolution is counted on its input: pass inp to "
                    f"layer_flops({type(module).__name__}, output, inp)"
                )
            kind, positions = "transposed conv", math.prod(inp.shape[-nd:])
        else:
            kind = "dilated conv" if max(module.dilation) > 1 else "conv"
            positions = math.prod(output.shape[-nd:])
        per_position = (math.prod(module.kernel_size) * module.in_channels
                        * module.out_channels // module.groups)
        return kind, int(positions * per_position)
    if isinstance(module, nn.Linear):
        tokens = output[0].numel() // module.out_features if output.dim() > 1 else 1
        return "linear", int(module.in_features * module.out_features * tokens)
    raise TypeError(f"no MAC formula for {type(module).__name__}")


@dataclass
class LayerOps:
    """What :func:`count_ops` measured for one synaptic layer."""

    name: str
    kind: str
    flops: int
    """Eq. (9): dense MACs per sample (one ANN inference), bias additions excluded."""
    input_rate: float | None
    """Eq. (8) on the layer's input (SNN only): ``Σ|input|`` over all timesteps per input value;
    after an average pool, the mean pooled value (the rate of an integrate-and-fire pool's
    spikes, see the module docstring)."""


class OpCounter:
    """Context manager counting, per synaptic layer, eq. (9) MACs and eq. (8) input rates.

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
                kind, flops = layer_flops(module, output, inp)
                self._found[name] = LayerOps(name, kind, flops, None)
                self._neurons_in[name] = inp[0].numel()
                self._active[name] = 0.0
            # Σ|input|: spikes, or after an average pool the pooled values (an IF pool's
            # spikes). The accumulator runs once on the time average: its input stands for
            # head_timesteps steps of spikes. With a leaky readout (readout_leak < 1) that
            # average is weighted toward the last steps, so the output layer's count is that of
            # the weighted mean rate (exact when its input fires at the same rate every step).
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
