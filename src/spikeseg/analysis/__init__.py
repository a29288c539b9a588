"""Analyses of trained models: spike rates (eq. 8), operations and energy (eqs. 9-12),
robustness to input noise, blur and salt-and-pepper (section 5.4), timestep sweeps."""

from .energy import (
    ENERGY_MODELS,
    EnergyModel,
    EnergyReport,
    OpCounter,
    count_ops,
    estimate_energy,
)
from .robustness import (
    CORRUPTIONS,
    CorruptionPoint,
    NoisePoint,
    corruption_robustness,
    gaussian_blur,
    noise_robustness,
    relative_drop,
    salt_and_pepper,
)
from .spikes import LayerSpikeStats, SpikeRecorder
from .sweeps import SweepPoint, timestep_sweep

__all__ = [
    "CORRUPTIONS",
    "CorruptionPoint",
    "ENERGY_MODELS",
    "EnergyModel",
    "EnergyReport",
    "LayerSpikeStats",
    "NoisePoint",
    "OpCounter",
    "SweepPoint",
    "SpikeRecorder",
    "corruption_robustness",
    "count_ops",
    "estimate_energy",
    "gaussian_blur",
    "noise_robustness",
    "relative_drop",
    "salt_and_pepper",
    "timestep_sweep",
]
