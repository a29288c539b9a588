"""Analyses of trained models: spike rates (eq. 8), operations and energy (eqs. 9-12),
robustness to input noise (section 5.4)."""

from .energy import ENERGY_MODELS, EnergyModel, EnergyReport, count_ops, estimate_energy
from .robustness import NoisePoint, noise_robustness, relative_drop
from .spikes import LayerSpikeStats, SpikeRecorder

__all__ = [
    "ENERGY_MODELS",
    "EnergyModel",
    "EnergyReport",
    "LayerSpikeStats",
    "NoisePoint",
    "SpikeRecorder",
    "count_ops",
    "estimate_energy",
    "noise_robustness",
    "relative_drop",
]
