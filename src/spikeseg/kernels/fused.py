"""Fused BNTT + LIF: per-timestep batch norm and eqs. (2)-(3) in one autograd node.

A spiking conv block computes, at every timestep ``t`` (BNTT of :mod:`spikeseg.norm`, LIF of
:mod:`spikeseg.neurons`):

.. math::

    y[t] = \\gamma_t\\,\\frac{x[t] - \\mu_t}{\\sqrt{\\sigma_t^2 + \\epsilon}} + \\beta_t, \\qquad
    u[t] = \\lambda\\, m[t-1] + y[t], \\qquad s[t] = \\Theta(u[t] - \\theta), \\qquad
    m[t] = u[t] - \\theta s[t]\\ \\text{(soft)}\\ \\text{or}\\ u[t](1 - s[t])\\ \\text{(hard)}

where ``x[t]`` is the convolution's output (``[B, C, H, W]``), ``μ_t, σ²_t`` the batch
statistics of timestep ``t`` (training) or its running averages (evaluation).

:func:`bntt_lif` runs ``n`` consecutive timesteps ``t0 .. t0+n-1`` of one block on the
convolution outputs folded into the batch (``[n·B, C, H, W]``, time-major: ``n = 1`` in step
mode, ``n = T`` or a chunk of T in fold mode), from the membrane ``m[t0-1]`` (``None`` = 0),
and returns the spikes ``[n·B, C, H, W]`` and the membrane ``m[t0+n-1]``.

**Exactness.** The forward pass calls the same ATen kernels, on the same per-timestep slices,
as :meth:`BNTT.step` followed by :meth:`LIF.step` (``native_batch_norm``, ``add`` with
``alpha = λ``, ``u > θ``, ``u − θ·s``), so spikes, membranes and running statistics are
bit-identical to the reference path. The backward pass uses ATen's batch-norm backward with the
same saved statistics; gradients differ from autograd's by summation order only.

**Memory.** Per timestep and element the node saves the convolution output ``x`` (for the
batch-norm backward; in the autocast dtype when mixed precision is on) and the membrane
potential ``u`` (4 bytes: the surrogate derivative, the reset factor and the spike are
recomputed from it in backward), instead of the batch norm's input, its output and the
surrogate term of an op-by-op graph. The spikes themselves are not saved: the layers that read
them keep a 1-byte copy (:mod:`spikeseg.kernels.spike_saving`). No tensor is
stacked, concatenated or copied slice by slice: every timestep reads and writes a view of the
folded tensors (time-major slices of ``[n·B, ...]`` are contiguous in both memory formats).

**Options.** ``update_stats=False`` uses the batch statistics without touching the running
averages (a chunk recomputed by time-chunk checkpointing must not count twice);
``temporal_grad=False`` drops the membrane's gradient through time (``∂u[t+1]/∂m[t]``), the
spatial-only backpropagation of SLTT (Meng et al., ICCV 2023).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..neurons import IF, LIF, Surrogate
from ..norm import BNTT

__all__ = ["bntt_lif", "bntt_lif_reference", "check_block_call", "fusable", "BNTTLIFSpec"]

_aten = torch.ops.aten


@dataclass(frozen=True)
class BNTTLIFSpec:
    """Static settings of one fused call (hashable, not a tensor)."""

    t0: int
    steps: int
    training: bool
    momentum: float
    eps: float
    leak: float
    threshold: float
    hard: bool
    detach_reset: bool
    surrogate: Surrogate
    update_stats: bool = True
    temporal_grad: bool = True


def fusable(norm: object, act: object) -> bool:
    """True when ``norm → act`` can run through :func:`bntt_lif`: a BNTT followed by a plain
    LIF or IF neuron (PLIF and converted neurons keep their own implementations)."""
    return isinstance(norm, BNTT) and type(act) in (LIF, IF)


def _rows(norm: BNTT, t: int, training: bool):
    """``(weight, bias, running_mean, running_var)`` rows of timestep ``t`` (views)."""
    if training:
        return (None if norm.weight is None else norm.weight[t],
                None if norm.bias is None else norm.bias[t],
                norm.running_mean[t], norm.running_var[t])
    return (norm._row(norm.weight, t), norm._row(norm.bias, t),
            norm._row(norm.running_mean, t), norm._row(norm.running_var, t))


def _fire_(u: Tensor, s_out: Tensor, spec: BNTTLIFSpec, in_place: bool) -> Tensor:
    """Eq. (3): writes ``u > θ`` into ``s_out`` and returns the membrane after reset (``u``
    itself, reset in place, when ``in_place``)."""
    torch.gt(u, spec.threshold, out=s_out)
    if spec.hard:
        keep = 1.0 - s_out
        return u.mul_(keep) if in_place else u * keep
    if in_place:
        return u.sub_(s_out, alpha=spec.threshold)
    return torch.sub(u, s_out, alpha=spec.threshold)


def _forward(x: Tensor, mem: Tensor | None, norm: BNTT, spec: BNTTLIFSpec, save: bool):
    """The forward pass; with ``save``, also the tensors backward needs."""
    n = spec.steps
    B = x.shape[0] // n
    xc = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    spikes = torch.empty_like(xc)
    us = torch.empty_like(xc) if save else None
    C = xc.shape[1]
    means = xc.new_empty(n, C) if spec.training else None
    invstds = xc.new_empty(n, C) if spec.training else None
    m = mem
    for i in range(n):
        t = spec.t0 + i
        xi = xc.narrow(0, i * B, B)
        si = spikes.narrow(0, i * B, B)
        w, b, rm, rv = _rows(norm, t, spec.training)
        if spec.training:
            if not spec.update_stats:
                rm = rv = None
            ui = us.narrow(0, i * B, B) if save else torch.empty_like(xi)
            _aten.native_batch_norm.out(xi, w, b, rm, rv, True, spec.momentum, spec.eps,
                                        out=ui, save_mean=means[i], save_invstd=invstds[i])
        else:
            ui = torch.native_batch_norm(xi, w, b, rm, rv, False, 0.0, spec.eps)[0]
            if save:
                us.narrow(0, i * B, B).copy_(ui)
                ui = us.narrow(0, i * B, B)
        if m is not None:
            ui.add_(m, alpha=spec.leak)
        m = _fire_(ui, si, spec, in_place=not save)
    return spikes, m, us, means, invstds


class _BNTTLIFFn(torch.autograd.Function):
    """``(x [n·B, ...], m[t0-1]) -> (s [n·B, ...], m[t0+n-1])``; see the module docstring."""

    @staticmethod
    def forward(ctx, x, mem, weight, bias, norm, spec):
        spikes, m, us, means, invstds = _forward(x, mem, norm, spec, save=True)
        ctx.spec = spec
        ctx.norm = norm
        ctx.has_mem = mem is not None
        ctx.x_dtype = x.dtype
        ctx.save_for_backward(x, us, means, invstds)
        return spikes, m

    @staticmethod
    def backward(ctx, grad_spikes, grad_mem):
        x, us, means, invstds = ctx.saved_tensors
        spec: BNTTLIFSpec = ctx.spec
        norm: BNTT = ctx.norm
        n = spec.steps
        B = x.shape[0] // n
        need_w = ctx.needs_input_grad[2]
        need_b = ctx.needs_input_grad[3]
        grad_x = torch.empty_like(us) if n > 1 else None
        gw = torch.zeros_like(norm.weight) if need_w else None
        gb = torch.zeros_like(norm.bias) if need_b else None
        theta = spec.threshold
        carry = grad_mem if spec.temporal_grad else None  # ∂L/∂m[t] reaching this step's u
        for i in range(n - 1, -1, -1):
            t = spec.t0 + i
            ui = us.narrow(0, i * B, B)
            gu = spec.surrogate.grad(ui, theta)  # ∂s/∂u, a new tensor
            if grad_spikes is not None:
                gu.mul_(grad_spikes.narrow(0, i * B, B))
            else:
                gu.zero_()
            if carry is not None:
                k = _reset_factor(ui, spec)
                if k is None:
                    gu.add_(carry)
                else:
                    gu.addcmul_(carry, k)
            xi = x.narrow(0, i * B, B)
            if xi.dtype != gu.dtype:
                xi = xi.to(gu.dtype)
            w, _, rm, rv = _rows(norm, t, spec.training)
            sm, si = (means[i], invstds[i]) if spec.training else (None, None)
            gx, gwt, gbt = _aten.native_batch_norm_backward(
                gu, xi, w, rm, rv, sm, si, spec.training, spec.eps, [True, need_w, need_b])
            if n > 1:
                grad_x.narrow(0, i * B, B).copy_(gx)
            else:
                grad_x = gx
            if need_w:
                gw[t] += gwt
            if need_b:
                gb[t] += gbt
            carry = gu.mul_(spec.leak) if (spec.temporal_grad and (i > 0 or ctx.has_mem)) \
                else None
        grad_mem_in = carry if ctx.has_mem and spec.temporal_grad else None
        if grad_x.dtype != ctx.x_dtype:
            grad_x = grad_x.to(ctx.x_dtype)
        return grad_x, grad_mem_in, gw, gb, None, None


def _reset_factor(u: Tensor, spec: BNTTLIFSpec) -> Tensor | None:
    """``∂m/∂u`` of the reset variant (``None`` means 1), recomputed from ``u``."""
    if spec.hard:
        keep = (u <= spec.threshold).to(u.dtype)  # 1 - s
        if spec.detach_reset:
            return keep
        return keep - u * spec.surrogate.grad(u, spec.threshold)
    if spec.detach_reset:
        return None
    return 1.0 - spec.threshold * spec.surrogate.grad(u, spec.threshold)


def check_block_call(x: Tensor, norm: BNTT, t0: int, steps: int) -> None:
    """The checks every BNTT + LIF kernel makes of its call: ``x`` folds ``steps`` timesteps,
    and a training call stays within the timesteps BNTT has statistics for."""
    if x.shape[0] % steps:
        raise ValueError(f"{x.shape[0]} samples do not fold {steps} timesteps")
    if norm.training and t0 + steps > norm.timesteps:
        raise RuntimeError(
            f"BNTT built for {norm.timesteps} timesteps cannot train at timestep "
            f"{t0 + steps - 1}; build the model with more timesteps"
        )


def bntt_lif(
    x: Tensor,
    mem: Tensor | None,
    norm: BNTT,
    neuron: LIF,
    t0: int = 0,
    steps: int = 1,
    *,
    update_stats: bool = True,
    temporal_grad: bool = True,
) -> tuple[Tensor, Tensor]:
    """BNTT (timesteps ``t0 .. t0+steps-1``) then LIF, fused; see the module docstring.

    Args:
        x: convolution outputs ``[steps·B, C, H, W]``, time-major.
        mem: membrane ``m[t0-1]`` ``[B, C, H, W]`` (``None`` = zeros).
        norm: the block's :class:`~spikeseg.norm.BNTT` (its mode decides batch or running
            statistics; in training, its running statistics are updated in place).
        neuron: the block's :class:`~spikeseg.neurons.LIF` (or IF).
        t0: first timestep. steps: number of timesteps folded into ``x``.
        update_stats: update BNTT's running statistics (training only).
        temporal_grad: keep the membrane's gradient through time (False: SLTT).

    Returns:
        ``(spikes [steps·B, C, H, W] in float32 (float64 for fp64 inputs), m[t0+steps-1])``.
    """
    check_block_call(x, norm, t0, steps)
    training = norm.training
    spec = BNTTLIFSpec(
        t0=t0, steps=steps, training=training, momentum=norm.momentum, eps=norm.eps,
        leak=neuron.leak, threshold=neuron.threshold, hard=neuron.reset == "hard",
        detach_reset=neuron.detach_reset, surrogate=neuron.surrogate,
        update_stats=update_stats, temporal_grad=temporal_grad,
    )
    if training and update_stats:
        norm.num_batches_tracked[t0:t0 + steps] += 1
    with torch.autocast(x.device.type, enabled=False):
        grad = torch.is_grad_enabled() and (
            x.requires_grad or (mem is not None and mem.requires_grad)
            or (norm.weight is not None and norm.weight.requires_grad)
            or (norm.bias is not None and norm.bias.requires_grad))
        if grad:
            if mem is not None and not temporal_grad:
                mem = mem.detach()
            return _BNTTLIFFn.apply(x, mem, norm.weight, norm.bias, norm, spec)
        spikes, m, *_ = _forward(x, mem, norm, spec, save=False)
        return spikes, m


def bntt_lif_reference(
    x: Tensor, mem: Tensor | None, norm: BNTT, neuron: LIF, t0: int = 0, steps: int = 1,
) -> tuple[Tensor, Tensor]:
    """The same computation as the op-by-op path of a conv block: :meth:`BNTT.step` then
    :meth:`LIF.step` per timestep (for equivalence tests)."""
    B = x.shape[0] // steps
    out, m = [], mem
    for i in range(steps):
        y = norm.step(x[i * B:(i + 1) * B], t0 + i)
        s, m = neuron.step(y, m)
        out.append(s)
    return torch.cat(out), m
