"""Analyses of trained models: spike rates (eq. 8), operations and energy (eqs. 9-12),
robustness to input noise (section 5.4)."""

from .energy import (
    ENERGY_MODELS,
    EnergyModel,
    EnergyReport,
    OpCounter,
    count_ops,
    estimate_energy,
)
from .robustness import NoisePoint, noise_robustness, relative_drop
from .spikes import LayerSpikeStats, SpikeRecorder
from .sweeps import SweepPoint, timestep_sweep

__all__ = [
    "ENERGY_MODELS",
    "EnergyModel",
    "EnergyReport",
    "LayerSpikeStats",
    "NoisePoint",
    "OpCounter",
    "SweepPoint",
    "SpikeRecorder",
    "count_ops",
    "estimate_energy",
    "noise_robustness",
    "relative_drop",
    "timestep_sweep",
]
