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

**Data parallelism.** Under ``torchrun`` every norm computes its batch statistics over the
*global* batch (:func:`synchronise_norms`, SyncBatchNorm semantics, per timestep for BNTT):
each process all-reduces its per-channel sums, so N processes with batch B/N normalise exactly
like one process with batch B, in the forward pass and in the gradients.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BNTT", "TimeSharedBN", "NORMS", "batch_norm", "SyncBatchNorm2d", "synchronise_norms"]

NORMS = ("bntt", "bn", "tdbn", "none")
"""Normalisations a spiking model can be built with (``model.norm``)."""


# --------------------------------------------------------------------------- synchronised BN


def _all_reduce(t: Tensor) -> Tensor:
    dist.all_reduce(t)
    return t


class _SyncBatchNormFn(torch.autograd.Function):
    """Batch norm over the batch of every process: statistics from all-reduced channel sums."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps):
        c = x.shape[1]
        dims = [d for d in range(x.dim()) if d != 1]
        count = torch.tensor([x.numel() / c], dtype=torch.float64, device=x.device)
        s1 = torch.cat([x.sum(dims, dtype=torch.float64), count])
        s1 = _all_reduce(s1)
        n = float(s1[-1])
        mean = (s1[:-1] / n).to(x.dtype)
        shape = [1, c] + [1] * (x.dim() - 2)
        xc = x - mean.view(shape)
        var = (_all_reduce((xc * xc).sum(dims, dtype=torch.float64)) / n).to(x.dtype)
        invstd = torch.rsqrt(var + eps)
        xhat = xc * invstd.view(shape)
        y = xhat.clone() if weight is None else xhat * weight.view(shape)  # xhat is saved
        if bias is not None:
            y = y + bias.view(shape)
        if running_mean is not None:
            with torch.no_grad():
                running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
                running_var.mul_(1 - momentum).add_(var * (n / max(n - 1, 1)), alpha=momentum)
        ctx.save_for_backward(xhat, invstd, weight)
        ctx.n = n
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, dy):
        xhat, invstd, weight = ctx.saved_tensors
        c = xhat.shape[1]
        dims = [d for d in range(xhat.dim()) if d != 1]
        shape = [1, c] + [1] * (xhat.dim() - 2)
        dxhat = dy if weight is None else dy * weight.view(shape)
        sums = torch.cat([dxhat.sum(dims, dtype=torch.float64),
                          (dxhat * xhat).sum(dims, dtype=torch.float64)])
        sums = (_all_reduce(sums) / ctx.n).to(dy.dtype)
        mean_dxhat, mean_dxhat_xhat = sums[:c], sums[c:]
        dx = (dxhat - mean_dxhat.view(shape) - xhat * mean_dxhat_xhat.view(shape)) \
            * invstd.view(shape)
        dw = (dy * xhat).sum(dims) if weight is not None and ctx.needs_input_grad[1] else None
        db = dy.sum(dims) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dx, dw, db, None, None, None, None


def batch_norm(x: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
               weight: Tensor | None, bias: Tensor | None, training: bool, momentum: float,
               eps: float, sync: bool = False) -> Tensor:
    """``F.batch_norm``, or its synchronised version over all processes when ``sync`` and
    training in an initialised process group (the statistics of the global batch)."""
    if sync and training and dist.is_available() and dist.is_initialized():
        return _SyncBatchNormFn.apply(x, weight, bias, running_mean, running_var, momentum, eps)
    return F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)


class SyncBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` (same parameters and state) whose training statistics are those of
    the global batch under ``torchrun`` (CPU and GPU alike; torch's own SyncBatchNorm needs a
    GPU)."""

    def forward(self, x: Tensor) -> Tensor:
        if self.momentum is None or not self.track_running_stats:
            return super().forward(x)
        if self.training:
            self.num_batches_tracked += 1
        return batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                          self.training, self.momentum, self.eps, sync=True)


def synchronise_norms(model: nn.Module) -> nn.Module:
    """Make every norm of ``model`` compute global-batch statistics under ``torchrun``.

    BNTT and time-shared norms switch their ``sync`` flag on; plain ``nn.BatchNorm2d`` layers
    (ANN twins) are replaced in place by :class:`SyncBatchNorm2d` with the same state. Returns
    ``model``. Outside a process group the model computes exactly as before.
    """
    for m in list(model.modules()):
        if isinstance(m, (BNTT, TimeSharedBN)):
            m.sync = True
        for child_name, child in list(m.named_children()):
            if type(child) is nn.BatchNorm2d:
                like = next(iter(child.state_dict().values()), None)
                new = SyncBatchNorm2d(child.num_features, child.eps, child.momentum,
                                      child.affine, child.track_running_stats)
                if like is not None:
                    new = new.to(device=like.device, dtype=like.dtype)
                new.load_state_dict(child.state_dict())
                new.train(child.training)
                setattr(m, child_name, new)
    return model


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
        self.sync = False
        """Global-batch statistics under torchrun (set by :func:`synchronise_norms`)."""

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

    def step(self, x: Tensor, t: int, update_stats: bool = True) -> Tensor:
        """Normalise ``x`` ``[N, C, *]`` with the statistics of timestep ``t`` (0-based).

        ``update_stats=False`` (training only) normalises with the batch statistics without
        updating the running averages or the batch counter (a recomputed chunk of time-chunk
        checkpointing).
        """
        if t < 0:
            raise ValueError(f"timestep must be >= 0, got {t}")
        if self.training and t < self.timesteps:
            if not update_stats:  # updates go to throw-away copies (the same autograd graph)
                return batch_norm(x, self.running_mean[t].clone(), self.running_var[t].clone(),
                                  self._row(self.weight, t), self._row(self.bias, t), True,
                                  self.momentum, self.eps, sync=self.sync)
            self.num_batches_tracked[t] += 1
            # Views into the [T, C] buffers: batch_norm updates the rows in place.
            return batch_norm(
                x, self.running_mean[t], self.running_var[t], self._row(self.weight, t),
                self._row(self.bias, t), True, self.momentum, self.eps, sync=self.sync,
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

    def forward(self, x: Tensor, t0: int = 0, update_stats: bool = True) -> Tensor:
        """Normalise a time-first tensor ``[T, N, C, *]`` timestep by timestep (timesteps
        ``t0, t0+1, ...``)."""
        return torch.stack([self.step(xt, t0 + t, update_stats)
                            for t, xt in enumerate(x.unbind(0))])


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
        self.sync = False

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
        return batch_norm(x, self.running_mean, self.running_var, self._weight(x), self.bias,
                          self.training, self.momentum, self.eps, sync=self.sync)

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
