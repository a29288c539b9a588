"""Binary spikes kept for backward as one byte per value instead of four.

Every layer that reads a spiking layer's output keeps it for its backward pass: a
convolution (its weight gradient is ``Σ ∂L/∂y ⋆ s``), an average pool (autograd keeps its
input although the pool's backward reads only its shape). In a spiking network these float32
zeros and ones are among the largest tensors a BPTT graph holds.

:class:`SpikeRegistry` records the tensors known to hold only zeros and ones (the outputs of
the fused BNTT + LIF blocks and of LIF/PLIF neurons, unchanged since). While
:func:`save_spikes_compactly` is active, autograd's saved-tensor hooks store those tensors as
``bool`` (one byte) and rebuild the float tensor, in its memory format, when backward needs
it. Values, and therefore gradients, are exactly those of the float tensor; a spike tensor
saved by several layers is converted once.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator

import torch
from torch import Tensor

__all__ = ["SpikeRegistry", "save_spikes_compactly"]


class _Packed:
    """A saved spike tensor: its values as ``bool``, and the dtype to rebuild."""

    __slots__ = ("bits", "dtype")

    def __init__(self, bits: Tensor, dtype: torch.dtype) -> None:
        self.bits = bits
        self.dtype = dtype


class SpikeRegistry:
    """The tensors of one forward call known to hold only zeros and ones.

    Entries are weak: a tensor that is freed leaves the registry, so an id reused by a later
    tensor is never mistaken for it; a tensor modified in place after it was recorded is no
    longer considered binary (its version counter moved).
    """

    def __init__(self) -> None:
        self._tensors: weakref.WeakValueDictionary[int, Tensor] = weakref.WeakValueDictionary()

    def mark(self, s: Tensor) -> None:
        """Record that ``s`` holds only zeros and ones."""
        self._tensors[id(s)] = s
        s._spikeseg_version = s._version  # type: ignore[attr-defined]

    def __contains__(self, x: object) -> bool:
        return isinstance(x, Tensor) and self._tensors.get(id(x)) is x \
            and getattr(x, "_spikeseg_version", None) == x._version

    def pack(self, t: Tensor):
        """Saved-tensor hook: spikes as ``bool`` (converted once per tensor), anything else
        as it is."""
        if t not in self:
            return t
        p = getattr(t, "_spikeseg_packed", None)
        if p is None:
            p = _Packed(t.to(torch.bool), t.dtype)
            t._spikeseg_packed = p  # type: ignore[attr-defined]
        return p

    @staticmethod
    def unpack(p) -> Tensor:
        """Saved-tensor hook: rebuild a float spike tensor (same memory format)."""
        if isinstance(p, _Packed):
            return p.bits.to(p.dtype)
        return p


@contextlib.contextmanager
def save_spikes_compactly(registry: SpikeRegistry, enabled: bool = True) -> Iterator[None]:
    """Within the block, autograd saves the tensors of ``registry`` as ``bool``."""
    if not enabled:
        yield
        return
    with torch.autograd.graph.saved_tensors_hooks(registry.pack, registry.unpack):
        yield
