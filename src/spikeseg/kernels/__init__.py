"""Fast paths of spikeseg's layers, each beside a reference it is tested against.

* :mod:`~spikeseg.kernels.fused` — BNTT + LIF of a conv block in one autograd node
  (step and fold modes; bit-identical forward, exact gradients, ~9 bytes saved per neuron
  and timestep instead of 12);
* :mod:`~spikeseg.kernels.spike_saving` — saved-tensor hooks that keep binary spikes for
  backward as one byte per value (4× less than float32), whichever layer saves them;
* :mod:`~spikeseg.kernels.conv_taps` — the weight gradient of a dilated convolution whose
  taps mostly read zero padding, as one GEMM per tap over its valid region;
* :mod:`~spikeseg.kernels.triton_lif` — a multi-step LIF with the BNTT affine map as Triton
  kernels (GPU; tested on CPU under ``TRITON_INTERPRET=1``).
"""

from .fused import bntt_lif, bntt_lif_reference, fusable
from .spike_saving import SpikeRegistry, save_spikes_compactly

__all__ = ["bntt_lif", "bntt_lif_reference", "fusable", "SpikeRegistry", "save_spikes_compactly"]
