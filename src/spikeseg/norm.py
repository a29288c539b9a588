"""Normalisation for spiking networks: BNTT (the paper's), a time-shared batch norm and tdBN.

**BNTT** — batch normalisation through time (Kim & Panda 2020), as used by the paper's SNNs.

BNTT keeps one set of batch-norm statistics and one learnable scale per timestep:

.. math::

    \\mathrm{BNTT}_t(x) = \\gamma_t \\, \\frac{x - \\mu_t}{\\sqrt{\\sigma_t^2 + \\epsilon}}

where ``μ_t`` and ``σ²_t`` are the batch statistics of timestep ``t`` in training and the running
averages of timestep ``t`` in evaluation. As in the paper's code there is no bias term
(``bias=False``), ``eps = 1e-4`` and ``momentum = 0.1``.

Parameters are stored as ``[T, C]`` tensors (``weight``, ``running_mean``, ``running_var``), so
a checkpoint holds one row per timestep. When a model runs for more timesteps than it was
built for (e.g. evaluation at a longer window), timesteps ``t ≥ T`` use the statistics of the
last trained timestep (``beyond="last"``) or their average over time (``beyond="mean"``).

**Time-shared BN** (:class:`TimeSharedBN`, ``model.norm: bn``) — one batch norm for all
timesteps, whose training statistics are taken over the whole sequence (``T·B·H·W`` values per
channel), as in the multi-step layers of SpikingJelly. In evaluation it is a fixed affine map
per channel, which folds exactly into the preceding convolution (NIR export, conversion).

**tdBN** (:class:`TimeSharedBN` with ``scale=α·θ``, ``model.norm: tdbn``) — threshold-dependent
batch norm (Zheng et al. 2021): the same statistics, and the normalised input scaled by
``α·V_th`` before the learnable affine map,

.. math::

    \\mathrm{tdBN}(x) = \\lambda \\, \\frac{\\alpha V_{th} (x - \\mu)}{\\sqrt{\\sigma^2 + \\epsilon}} + \\beta,

so that pre-activations start at the scale of the firing threshold (α = 1 in plain blocks).

Both time-shared norms need the whole sequence of a layer in training, so a model using them
trains with time folded into the batch (``step_mode="fold"``); evaluation runs in any mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BNTT", "TimeSharedBN", "NORMS"]

NORMS = ("bntt", "bn", "tdbn", "none")
"""Normalisations a spiking model can be built with (``model.norm``)."""


class BNTT(nn.Module):
    """Per-timestep batch norm for ``[N, C, *]`` inputs at one timestep, or ``[T, N, C, *]``.

    Args:
        num_features: channels ``C``.
        timesteps: number of timesteps ``T`` with their own statistics.
        eps: added to the variance (1e-4 as in the paper's code).
        momentum: running-average momentum (0.1).
        affine: learn a scale ``γ_t`` per timestep and channel.
        bias: also learn a shift ``β_t`` (the paper's BNTT has none).
        beyond: statistics for ``t ≥ T``: ``"last"`` or ``"mean"``.
    """

    def __init__(
        self,
        num_features: int,
        timesteps: int,
        eps: float = 1e-4,
        momentum: float = 0.1,
        affine: bool = True,
        bias: bool = False,
        beyond: str = "last",
    ) -> None:
        super().__init__()
        if timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {timesteps}")
        if beyond not in ("last", "mean"):
            raise ValueError(f"beyond must be 'last' or 'mean', not {beyond!r}")
        self.num_features = num_features
        self.timesteps = timesteps
        self.eps = eps
        self.momentum = momentum
        self.beyond = beyond
        self.weight = nn.Parameter(torch.ones(timesteps, num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(timesteps, num_features)) if bias else None
        self.register_buffer("running_mean", torch.zeros(timesteps, num_features))
        self.register_buffer("running_var", torch.ones(timesteps, num_features))
        self.register_buffer("num_batches_tracked", torch.zeros(timesteps, dtype=torch.long))

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, timesteps={self.timesteps}, eps={self.eps}, "
            f"momentum={self.momentum}, affine={self.weight is not None}, "
            f"bias={self.bias is not None}"
        )

    def _row(self, p: Tensor | None, t: int) -> Tensor | None:
        if p is None:
            return None
        if t < self.timesteps:
            return p[t]
        return p[-1] if self.beyond == "last" else p.mean(0)

    def step(self, x: Tensor, t: int) -> Tensor:
        """Normalise ``x`` ``[N, C, *]`` with the statistics of timestep ``t`` (0-based)."""
        if t < 0:
            raise ValueError(f"timestep must be >= 0, got {t}")
        if self.training and t < self.timesteps:
            self.num_batches_tracked[t] += 1
            # Views into the [T, C] buffers: batch_norm updates the rows in place.
            return F.batch_norm(
                x, self.running_mean[t], self.running_var[t], self._row(self.weight, t),
                self._row(self.bias, t), True, self.momentum, self.eps,
            )
        if self.training:
            raise RuntimeError(
                f"BNTT built for {self.timesteps} timesteps cannot train at timestep {t}; "
                "build the model with more timesteps"
            )
        return F.batch_norm(
            x, self._row(self.running_mean, t), self._row(self.running_var, t),
            self._row(self.weight, t), self._row(self.bias, t), False, 0.0, self.eps,
        )

    def forward(self, x: Tensor) -> Tensor:
        """Normalise a time-first tensor ``[T, N, C, *]`` timestep by timestep."""
        return torch.stack([self.step(xt, t) for t, xt in enumerate(x.unbind(0))])


class TimeSharedBN(nn.Module):
    """Batch norm shared over time (``bn``), or tdBN with ``scale = α·V_th`` (``tdbn``).

    Input: ``[N, C, *]``. In training ``N`` must hold the whole sequence (``T·B`` samples with
    time folded into the batch), so the statistics are those of all timesteps together. In
    evaluation the running statistics are used: ``y = γ·scale·(x − μ)/sqrt(σ² + ε) + β``.

    Args:
        num_features: channels ``C``.
        eps: added to the variance (1e-4 as the paper's norms).
        momentum: running-average momentum.
        affine: learn ``γ`` (init 1) and ``β`` (init 0).
        scale: the constant ``α·V_th`` of tdBN (1.0 for a plain batch norm).
    """

    needs_sequence = True
    """Training statistics span the whole sequence: the model must fold time into the batch."""

    def __init__(self, num_features: int, eps: float = 1e-4, momentum: float = 0.1,
                 affine: bool = True, scale: float = 1.0) -> None:
        super().__init__()
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.scale = float(scale)
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.weight is not None}, scale={self.scale}")

    def _weight(self, x: Tensor) -> Tensor | None:
        if self.scale == 1.0:
            return self.weight
        w = self.weight if self.weight is not None else torch.ones(
            self.num_features, dtype=x.dtype, device=x.device)
        return w * self.scale

    def forward(self, x: Tensor) -> Tensor:
        """Normalise ``[N, C, *]`` (in training: the whole sequence folded into ``N``)."""
        if self.training:
            self.num_batches_tracked += 1
        return F.batch_norm(x, self.running_mean, self.running_var, self._weight(x), self.bias,
                            self.training, self.momentum, self.eps)

    def step(self, x: Tensor, t: int) -> Tensor:
        """One timestep ``[B, C, *]`` in evaluation (training needs the whole sequence)."""
        if self.training:
            raise RuntimeError(
                "a time-shared batch norm trains on whole sequences: run the model with "
                "step_mode='fold' (or 'auto')"
            )
        return self(x)

    def affine_parameters(self) -> tuple[Tensor, Tensor]:
        """``(a, b)`` with ``y = a·x + b`` per channel in evaluation (for folding and export)."""
        a = torch.rsqrt(self.running_var + self.eps) * self.scale
        if self.weight is not None:
            a = a * self.weight
        b = -self.running_mean * a
        if self.bias is not None:
            b = b + self.bias
        return a, b
