"""Per-layer spike rates, eq. (8) of the paper, recorded by hooks without changing the model.

.. math::

    R_s(l) = \\frac{\\#\\text{spikes of layer } l \\text{ over all timesteps}}
                  {\\#\\text{neurons of layer } l}

per input sample, averaged over the samples seen. ``R_s`` counts spikes over the whole window,
so it is at most T (a neuron that fires at every step); the per-timestep rate
``r_t(l) = #spikes at t / #neurons`` is at most 1 and ``Σ_t r_t(l) = R_s(l)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..neurons import LIF

__all__ = ["LayerSpikeStats", "SpikeRecorder"]


@dataclass
class LayerSpikeStats:
    """Spike counts of one neuron layer, accumulated over samples."""

    name: str
    neurons: int = 0
    """Neurons per sample (C·H·W of the layer's output)."""
    samples: int = 0
    spikes: float = 0.0
    """Total spikes over all timesteps and samples (absolute values, for signed spikes)."""
    per_timestep: list[float] = field(default_factory=list)
    """Total spikes at each timestep, over samples."""

    @property
    def rate(self) -> float:
        """Eq. (8): spikes over all timesteps per neuron, averaged over samples."""
        return self.spikes / (self.neurons * self.samples) if self.samples else float("nan")

    @property
    def timestep_rates(self) -> list[float]:
        """Fraction of the layer's neurons firing at each timestep (averaged over samples)."""
        if not self.samples:
            return []
        return [s / (self.neurons * self.samples) for s in self.per_timestep]

    def as_dict(self) -> dict:
        return {"layer": self.name, "neurons": self.neurons, "samples": self.samples,
                "spike_rate": self.rate, "timestep_rates": self.timestep_rates}


class SpikeRecorder:
    """Context manager that counts the spikes of every LIF layer of ``model``.

    Example:
        >>> with SpikeRecorder(model) as rec:            # doctest: +SKIP
        ...     model(images)
        >>> rec.rates()                                  # {"features.0.act": 0.41, ...}

    Works for both execution modes (step by step, or whole sequences) and any batch size.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.layers: dict[str, LayerSpikeStats] = {}
        self._handles: list = []
        self._names: dict[int, str] = {}

    def __enter__(self) -> SpikeRecorder:
        for name, m in self.model.named_modules():
            if isinstance(m, LIF):
                self._names[id(m)] = name
                self.layers[name] = LayerSpikeStats(name)
                self._handles.append(m.register_spike_hook(self._hook))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    @torch.no_grad()
    def _hook(self, module: LIF, spikes: Tensor, t: int | None) -> None:
        st = self.layers[self._names[id(module)]]
        if t is None:  # a whole sequence [T, N, ...]
            counts = spikes.abs().flatten(2).sum((1, 2)).tolist()
            batch, per_sample = spikes.shape[1], spikes[0, 0].numel()
            first = 0
        else:
            counts = [float(spikes.abs().sum())]
            batch, per_sample = spikes.shape[0], spikes[0].numel()
            first = t
        if first == 0:  # a new forward call: new samples
            st.samples += batch
            st.neurons = per_sample
        for i, c in enumerate(counts, start=first):
            while len(st.per_timestep) <= i:
                st.per_timestep.append(0.0)
            st.per_timestep[i] += c
            st.spikes += c

    def rates(self) -> dict[str, float]:
        """Eq. (8) per layer, in forward order."""
        return {n: s.rate for n, s in self.layers.items()}

    def mean_rate(self) -> float:
        """Neuron-weighted average of eq. (8) over all layers."""
        total = sum(s.spikes for s in self.layers.values())
        neurons = sum(s.neurons * s.samples for s in self.layers.values())
        return total / neurons if neurons else float("nan")
