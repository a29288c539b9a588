"""Counter-based random numbers: the same draws for a sample wherever and with whomever it runs.

A sequential generator (``torch.Generator``) gives a sample different random numbers depending
on which samples were drawn before it: its position in the batch, the batch size, the number
of processes, the evaluation path. spikeseg's spike trains and augmentations instead come from
a *counter-based* generator: a number is a hash of ``(key, step, element)``, where the key of a
sample is derived from ``(seed, purpose, epoch, sample index)`` (:func:`sample_keys`). So

* one process with batch ``B`` and two processes with ``B/2`` each code every sample into the
  same spikes (exact data parallelism);
* ``evaluate``, the timestep sweep, the report and ``predict`` see the same Poisson stream for
  a sample, so their numbers agree.

The hash is Chris Wellons' ``lowbias32`` (a 32-bit integer finaliser with low bias), computed
in int64 arithmetic on any device; a uniform number keeps its top 24 bits, so it is exactly
representable in float32: ``u ∈ {0, 2⁻²⁴, …, 1 − 2⁻²⁴}``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["hash32", "sample_keys", "uniform", "normal", "STREAMS"]

_MASK = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9

STREAMS = {"poisson": 1, "augment": 2, "noise": 3, "shuffle": 4}
"""Purposes with their own independent random streams."""


def hash32(x: Tensor) -> Tensor:
    """``lowbias32`` of the low 32 bits of int64 ``x`` (result in ``[0, 2³²)``, int64)."""
    x = x & _MASK
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _MASK
    return x ^ (x >> 16)


def _mix(a: Tensor, b: Tensor | int) -> Tensor:
    return hash32(a ^ ((hash32(torch.as_tensor(b, dtype=torch.int64, device=a.device))
                        + _GOLDEN) & _MASK))


def sample_keys(seed: int, purpose: str, indices: Tensor | Sequence[int], epoch: int = 0,
                device: torch.device | str | None = None) -> Tensor:
    """One int64 key per sample, from ``(seed, purpose, epoch, sample index)``.

    Args:
        seed: the run's seed (any int).
        purpose: one of :data:`STREAMS` (independent streams for spikes, augmentation, ...).
        indices: dataset indices of the samples ``[B]``.
        epoch: the training epoch (0 for evaluation), so each epoch draws afresh.
    """
    idx = torch.as_tensor(indices, dtype=torch.int64, device=device).reshape(-1)
    k = torch.full_like(idx, int(seed) & _MASK)
    k = _mix(k, STREAMS[purpose])
    k = _mix(k, int(epoch) & _MASK)
    k = _mix(k, (int(seed) >> 32) & _MASK)
    return _mix(k, idx)


def _bits(keys: Tensor, step: int, shape: Sequence[int]) -> Tensor:
    """int64 ``[B, *shape]`` of 32 random bits for element ``i`` of sample ``b`` at ``step``."""
    n = 1
    for s in shape:
        n *= int(s)
    base = _mix(keys.to(torch.int64), int(step) & _MASK)  # [B]
    elem = torch.arange(n, dtype=torch.int64, device=keys.device) * _GOLDEN
    return hash32(base[:, None] + elem[None, :]).view(keys.shape[0], *shape)


def uniform(keys: Tensor, step: int, shape: Sequence[int], dtype: torch.dtype = torch.float32
            ) -> Tensor:
    """Uniform numbers in ``[0, 1)`` ``[B, *shape]`` for samples ``keys`` ``[B]`` at ``step``.

    Element ``i`` of sample ``b`` depends only on ``(keys[b], step, i)`` (``i`` the row-major
    index of the logical shape, whatever the memory layout of the tensors it is used with).
    """
    return (_bits(keys, step, shape) >> 8).to(dtype) * (1.0 / (1 << 24))


def normal(keys: Tensor, step: int, shape: Sequence[int], dtype: torch.dtype = torch.float32
           ) -> Tensor:
    """Standard normal numbers ``[B, *shape]`` (Box–Muller on two counter-based uniforms)."""
    u1 = uniform(keys, 2 * int(step), shape, torch.float64)
    u2 = uniform(keys, 2 * int(step) + 1, shape, torch.float64)
    z = torch.sqrt(-2.0 * torch.log1p(-u1)) * torch.cos(2.0 * torch.pi * u2)
    return z.to(dtype)
