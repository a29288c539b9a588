"""Multi-step LIF with the BNTT affine map as Triton kernels (GPU; CPU under Triton's interpreter).

One kernel launch runs ``n`` timesteps of a whole layer: every program owns a block of neurons
and keeps their membranes in registers across the time loop,

.. math::

    y[t] = a_{t,c}\\, x[t] + b_{t,c}, \\qquad u[t] = \\lambda\\, m[t-1] + y[t], \\qquad
    s[t] = \\Theta(u[t] - \\theta), \\qquad
    m[t] = u[t] - \\theta s[t]\\ \\text{(soft)}\\ \\text{or}\\ u[t](1 - s[t])\\ \\text{(hard)},

reading ``x`` once and writing ``s`` (and, for backward, ``u``) once, instead of the
``3 + 2n`` elementwise launches and intermediate tensors of a per-timestep loop. The affine map
``a, b`` is optional (``None``: ``y = x``); :func:`bntt_lif_triton` uses it for BNTT, with
``a = γ_t / √(σ²_t + ε)`` and ``b = β_t − μ_t a`` from the per-timestep statistics, so batch
norm, leak, threshold and reset are one pass over the activations. The backward kernel walks
time in reverse with the membrane's gradient in registers and returns ``∂L/∂y``; the gradients
of ``x``, ``a`` and ``b`` follow from it (``a ∂L/∂y``, and per-channel sums), and autograd
carries ``a, b`` back to γ, β and the batch statistics, so the batch-norm backward is exact.

Supported: soft and hard reset, ``detach_reset`` on or off, SLTT's ``temporal_grad=False``,
every surrogate of :mod:`spikeseg.neurons` (piecewise-linear, fast sigmoid, exponential,
straight-through), float32 / float16 / bfloat16 inputs (membranes in float32), contiguous
NCHW or channels-last activations.

**Where it runs.** On CUDA tensors the kernels are compiled by Triton. On CPU tensors they run
under Triton's interpreter (what ``TRITON_INTERPRET=1`` does, without touching the
environment), which executes the same kernel code with NumPy: slow, and only for testing the
kernels against the reference implementations (``tests/test_triton_lif.py``). The models use
this path on CUDA (``fold`` mode, :mod:`spikeseg.models.layers`) when Triton is installed
(``pip install spikeseg[gpu]``) and fall back to the PyTorch kernels otherwise.
"""

from __future__ import annotations

import functools
import importlib.util

import torch
from torch import Tensor

from ..neurons import Exponential, FastSigmoid, PassThrough, PiecewiseLinear, Surrogate
from .fused import check_block_call

__all__ = ["triton_available", "supports", "lif_multistep", "bntt_lif_triton"]

_BLOCK = 1024
_SURROGATE_IDS = {PiecewiseLinear: 0, FastSigmoid: 1, Exponential: 2, PassThrough: 3}


@functools.cache
def triton_available() -> bool:
    """True when the ``triton`` package can be imported (looked up once: every fused block
    asks on every call on CUDA)."""
    return importlib.util.find_spec("triton") is not None


def _surrogate_args(surrogate: Surrogate) -> tuple[int, float, float]:
    """``(kernel id, p, q)`` of a surrogate: pwl (γ, –), fast sigmoid (k, –), exponential (γ, β)."""
    kind = _SURROGATE_IDS.get(type(surrogate))
    if kind is None:
        raise ValueError(f"the Triton LIF has no kernel for the surrogate {surrogate!r}")
    if kind == 0:
        return kind, surrogate.gamma, 0.0
    if kind == 1:
        return kind, surrogate.slope, 0.0
    if kind == 2:
        return kind, surrogate.gamma, surrogate.beta
    return kind, 0.0, 0.0


def supports(x: Tensor, surrogate: Surrogate) -> bool:
    """True when :func:`lif_multistep` has a kernel for this input and surrogate."""
    return (type(surrogate) in _SURROGATE_IDS
            and x.dtype in (torch.float32, torch.float16, torch.bfloat16))


@functools.cache
def _kernels(interpret: bool):
    """The two kernels, interpreted (CPU tensors) or compiled (CUDA tensors)."""
    import triton

    from . import triton_kernels as k

    if interpret:
        from triton.runtime.interpreter import InterpretedFunction
        wrap = InterpretedFunction
    else:
        wrap = triton.jit
    return wrap(k.lif_fwd), wrap(k.lif_bwd)


def _like(t: Tensor, ref: Tensor) -> Tensor:
    """``t`` with the shape and strides of ``ref`` (the kernels index both by flat offset)."""
    if t.stride() == ref.stride() and t.shape == ref.shape:
        return t
    return torch.empty_strided(ref.shape, ref.stride(), dtype=t.dtype, device=t.device).copy_(t)


def _layout(x: Tensor) -> tuple[Tensor, int, int, bool]:
    """``(x, C, H·W, channels_last)`` for ``x [n, B, C, ...]``: each timestep's slice dense
    in NCHW or channels-last order, consecutive timesteps one slice apart."""
    if x.dim() == 5 and x.stride(0) == x[0].numel() and not x[0].is_contiguous() \
            and x[0].is_contiguous(memory_format=torch.channels_last):
        return x, x.shape[2], x.shape[3] * x.shape[4], True
    x = x.contiguous()
    C = x.shape[2] if x.dim() >= 3 else 1
    HW = 1
    for d in x.shape[3:]:
        HW *= d
    return x, C, HW, False


def _forward(x, a, b, mem, leak, theta, hard, save):
    """Runs the forward kernel: ``(spikes, m_last, u or None, x, C, HW, channels_last)``."""
    x, C, HW, cl = _layout(x)
    N = x[0].numel()
    fwd, _ = _kernels(x.device.type != "cuda")
    spikes = torch.empty_strided(x.shape, x.stride(), dtype=torch.float32, device=x.device)
    us = torch.empty_like(spikes) if save else spikes
    m_out = torch.empty_strided(x[0].shape, x[0].stride(), dtype=torch.float32,
                                device=x.device)
    affine = a is not None
    a32 = a.float().contiguous() if affine else x
    b32 = b.float().contiguous() if affine else x
    m0 = _like(mem.float(), m_out) if mem is not None else x
    grid = (triton_cdiv(N, _BLOCK),)
    fwd[grid](x, a32, b32, m0, spikes, us, m_out, N, C, HW, float(leak), float(theta),
              STEPS=x.shape[0], AFFINE=affine, CHANNELS_LAST=cl, HAS_M0=mem is not None,
              HARD=hard, SAVE_U=save, BLOCK=_BLOCK)
    return spikes, m_out, (us if save else None), x, a32, C, HW, cl


def triton_cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


class _LIFMultiStep(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, a, b, mem, leak, theta, hard, detach, surrogate, temporal):
        spikes, m_out, us, x, a32, C, HW, cl = _forward(x, a, b, mem, leak, theta, hard, True)
        affine = a is not None
        ctx.meta = (leak, theta, hard, detach, surrogate, temporal, mem is not None, affine,
                    C, x.dtype, None if mem is None else mem.dtype)
        if affine:
            ctx.save_for_backward(us, x, a32)
        else:
            ctx.save_for_backward(us)
        return spikes, m_out

    @staticmethod
    def backward(ctx, grad_spikes, grad_mem):
        leak, theta, hard, detach, surrogate, temporal, has_mem, affine, C, x_dtype, mem_dtype \
            = ctx.meta
        us = ctx.saved_tensors[0]
        N = us[0].numel()
        _, bwd = _kernels(us.device.type != "cuda")
        kind, p, q = _surrogate_args(surrogate)
        gs = _like(grad_spikes, us) if grad_spikes is not None else us
        gm = _like(grad_mem, us[0]) if grad_mem is not None else us
        gy = torch.empty_like(us)
        want_gm0 = has_mem and temporal and ctx.needs_input_grad[3]
        gm0 = torch.empty_like(us[0]) if want_gm0 else us
        bwd[(triton_cdiv(N, _BLOCK),)](
            us, gs, gm, gy, gm0, N, float(leak), float(theta), float(p), float(q),
            STEPS=us.shape[0], SURROGATE=kind, HAS_GS=grad_spikes is not None,
            HAS_GM=grad_mem is not None, WANT_GM0=want_gm0, HARD=hard, DETACH=detach,
            TEMPORAL=temporal, BLOCK=_BLOCK)
        grad_x = grad_a = grad_b = None
        if affine:
            _, x, a32 = ctx.saved_tensors
            n = us.shape[0]
            if ctx.needs_input_grad[0]:
                shape = (n, 1, C) + (1,) * (us.dim() - 3)
                grad_x = (gy * a32.view(shape)).to(x_dtype)
            dims = tuple(d for d in range(1, us.dim()) if d != 2)
            if ctx.needs_input_grad[1]:
                grad_a = (gy * x.float()).sum(dims)
            if ctx.needs_input_grad[2]:
                grad_b = gy.sum(dims)
        elif ctx.needs_input_grad[0]:
            grad_x = gy.to(x_dtype)
        grad_m0 = gm0.to(mem_dtype) if want_gm0 else None
        return grad_x, grad_a, grad_b, grad_m0, None, None, None, None, None, None


def lif_multistep(
    x: Tensor,
    leak: float,
    threshold: float,
    surrogate: Surrogate,
    *,
    scale: Tensor | None = None,
    shift: Tensor | None = None,
    mem: Tensor | None = None,
    hard: bool = False,
    detach_reset: bool = True,
    temporal_grad: bool = True,
) -> tuple[Tensor, Tensor]:
    """``n`` LIF steps of a layer in one kernel: spikes ``[n, B, ...]`` and the last membrane.

    Args:
        x: input currents ``[n, B, C, ...]`` (time-first).
        leak, threshold, surrogate: the neuron's λ, θ and surrogate derivative.
        scale, shift: optional per-timestep, per-channel affine map ``[n, C]`` applied to
            ``x`` first (``y = scale·x + shift``); differentiable.
        mem: membrane ``m[-1]`` ``[B, C, ...]`` (``None`` = zeros).
        hard, detach_reset: the reset variant (as :class:`~spikeseg.neurons.LIF`).
        temporal_grad: ``False`` drops the gradient through the membrane (SLTT).

    Returns:
        ``(spikes float32 [n, B, ...], m[n-1] float32 [B, ...])``.
    """
    if (scale is None) != (shift is None):
        raise ValueError("give both scale and shift, or neither")
    if not supports(x, surrogate):
        raise ValueError(f"the Triton LIF has no kernel for {x.dtype} inputs with {surrogate!r}")
    if scale is not None and (x.dim() < 3 or scale.shape != (x.shape[0], x.shape[2])):
        raise ValueError(f"scale and shift must be [n, C] for x [n, B, C, ...], got "
                         f"{list(scale.shape)} for {list(x.shape)}")
    if not temporal_grad and mem is not None:
        mem = mem.detach()
    grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, scale, shift, mem))
    if not grad:
        spikes, m, *_ = _forward(x, scale, shift, mem, leak, threshold, hard, False)
        return spikes, m
    return _LIFMultiStep.apply(x, scale, shift, mem, leak, threshold, hard, detach_reset,
                               surrogate, temporal_grad)


def bntt_lif_triton(
    x: Tensor,
    mem: Tensor | None,
    norm,
    neuron,
    t0: int = 0,
    steps: int = 1,
    *,
    update_stats: bool = True,
    temporal_grad: bool = True,
) -> tuple[Tensor, Tensor]:
    """:func:`spikeseg.kernels.bntt_lif` (same arguments and results) with the normalisation,
    leak, threshold and reset of all ``steps`` timesteps in one Triton kernel.

    The per-timestep batch statistics are computed with PyTorch (``var_mean`` over batch and
    space, the running averages updated as :class:`torch.nn.BatchNorm2d` does: unbiased
    variance, momentum), folded into the affine map ``a, b`` of :func:`lif_multistep`.
    """
    n = steps
    check_block_call(x, norm, t0, n)
    xs = x.unflatten(0, (n, x.shape[0] // n))  # a view, NCHW or channels-last alike
    C = x.shape[1]
    dims = (1,) + tuple(range(3, xs.dim()))
    sl = slice(t0, t0 + n)

    def rows(p):  # evaluation beyond the trained T reuses the last timestep's row
        if p is None:
            return None
        return p[sl] if norm.training else torch.stack(
            [norm._row(p, t) for t in range(t0, t0 + n)])

    w, b = rows(norm.weight), rows(norm.bias)
    if norm.training:
        with torch.autocast(x.device.type, enabled=False):
            var, mean = torch.var_mean(xs.float(), dim=dims, unbiased=False)
        if update_stats:
            count = xs.numel() // (n * C)
            with torch.no_grad():
                unbiased = var.detach() * (count / max(count - 1, 1))
                mom = norm.momentum
                norm.running_mean[sl].mul_(1 - mom).add_(mean.detach(), alpha=mom)
                norm.running_var[sl].mul_(1 - mom).add_(unbiased, alpha=mom)
                norm.num_batches_tracked[sl] += 1
    else:
        mean, var = rows(norm.running_mean), rows(norm.running_var)
    invstd = torch.rsqrt(var + norm.eps)
    a = invstd if w is None else w * invstd
    shift = -mean * a if b is None else b - mean * a
    spikes, m = lif_multistep(xs, neuron.leak, neuron.threshold, neuron.surrogate, scale=a,
                              shift=shift, mem=mem, hard=neuron.reset == "hard",
                              detach_reset=neuron.detach_reset, temporal_grad=temporal_grad)
    return spikes.flatten(0, 1), m
