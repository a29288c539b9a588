"""Spiking neurons: leaky integrate-and-fire (LIF) and integrate-and-fire (IF) with surrogate gradients.

The dynamics are eqs. (2)-(3) of Kim, Chough & Panda (2022), in discrete time:

.. math::

    u[t] = \\lambda\\, m[t-1] + x[t], \\qquad
    s[t] = \\Theta(u[t] - \\theta), \\qquad
    m[t] = \\begin{cases} u[t] - \\theta\\, s[t] & \\text{soft reset} \\\\
                          u[t]\\,(1 - s[t]) & \\text{hard reset} \\end{cases}

with ``m[-1] = 0``, leak ``λ`` (0.99 in the paper; 1.0 gives the IF neuron), threshold ``θ``
(1.0) and a spike where ``u[t] > θ`` (strictly). ``x[t]`` is the input current (the output of
the preceding convolution and normalisation), in units of the threshold's.

The spike's derivative is replaced in the backward pass by a *surrogate*
(eq. (6): ``max(0, 1 - |(u - θ)/θ|)``). As in the paper's code and snnTorch, the reset is
detached from the graph by default (``detach_reset=True``): gradients flow through the
membrane, not through the reset term.

Three implementations with identical numbers:

* :func:`lif_step` — a pure single step ``(x, m) -> (s, m)`` built from autograd ops: the
  reference, for tests and export;
* :class:`LIF` module — ``forward([T, ...]) -> [T, ...]`` (and :meth:`LIF.step` for one step),
  backed by fused autograd functions that save only the surrogate term per step (one tensor
  instead of the four or five an op-by-op graph keeps).

:class:`PLIF` learns the leak (``λ = sigmoid(a)``, the parametric LIF of Fang et al. 2021) and,
optionally, the threshold (``θ = max(b, 0.01)``), one per layer or one per channel; the
surrogate then also carries a gradient to θ (``∂s/∂θ = −surrogate``).
"""

from __future__ import annotations

import inspect
import math
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

__all__ = [
    "Surrogate",
    "PiecewiseLinear",
    "FastSigmoid",
    "Exponential",
    "PassThrough",
    "get_surrogate",
    "list_surrogates",
    "surrogate_parameters",
    "spike_fn",
    "lif_step",
    "LIF",
    "PLIF",
    "IF",
    "NEURONS",
]

NEURONS = ("lif", "plif")
"""Neuron models a spiking model can be built with (``model.neuron``)."""


# --------------------------------------------------------------------------------------------
# Surrogate gradients
# --------------------------------------------------------------------------------------------


class Surrogate:
    """Surrogate derivative ``∂s/∂u`` of the spike function, as a function of ``u`` and ``θ``.

    Subclasses implement :meth:`grad`. Instances are small, immutable and picklable.
    """

    name = "surrogate"

    def grad(self, u: Tensor, threshold: float) -> Tensor:  # pragma: no cover - abstract
        """``∂s/∂u`` evaluated at membrane potential ``u`` (same shape as ``u``)."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    def config(self) -> dict:
        """The constructor arguments, for checkpoints."""
        return {}


class PiecewiseLinear(Surrogate):
    """Eq. (6): ``γ · max(0, 1 - |(u - θ)/θ|)``.

    Args:
        gamma: damping factor γ. The paper's eq. (6) has none (γ = 1, the default); the
            paper's code uses γ = 0.3.
    """

    name = "pwl"

    def __init__(self, gamma: float = 1.0) -> None:
        self.gamma = float(gamma)

    def grad(self, u: Tensor, threshold: float) -> Tensor:
        # 1 - |u - θ|/θ in place on one temporary (the same numbers as the formula).
        g = (u - threshold).abs_().div_(-threshold).add_(1.0).clamp_(min=0.0)
        return g.mul_(self.gamma) if self.gamma != 1.0 else g

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}"

    def config(self) -> dict:
        return {"gamma": self.gamma}


class FastSigmoid(Surrogate):
    """Fast sigmoid (SuperSpike; Zenke & Ganguli 2018): ``1 / (1 + k·|u - θ|)²``.

    Args:
        slope: steepness ``k`` (25 as in snnTorch; the paper's code uses 100).
    """

    name = "fast_sigmoid"

    def __init__(self, slope: float = 25.0) -> None:
        self.slope = float(slope)

    def grad(self, u: Tensor, threshold: float) -> Tensor:
        return ((u - threshold).abs_().mul_(self.slope).add_(1.0)).pow_(-2)

    def extra_repr(self) -> str:
        return f"slope={self.slope}"

    def config(self) -> dict:
        return {"slope": self.slope}


class Exponential(Surrogate):
    """Exponential (Shrestha & Orchard 2018): ``γ · exp(-β · |u - θ| / θ)``."""

    name = "exponential"

    def __init__(self, gamma: float = 1.0, beta: float = 2.0) -> None:
        self.gamma = float(gamma)
        self.beta = float(beta)

    def grad(self, u: Tensor, threshold: float) -> Tensor:
        return ((u - threshold).abs_().mul_(-self.beta / threshold)).exp_().mul_(self.gamma)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, beta={self.beta}"

    def config(self) -> dict:
        return {"gamma": self.gamma, "beta": self.beta}


class PassThrough(Surrogate):
    """Straight-through estimator: ``∂s/∂u = 1``."""

    name = "pass_through"

    def grad(self, u: Tensor, threshold: float) -> Tensor:
        return torch.ones_like(u)


_SURROGATES: dict[str, Callable[..., Surrogate]] = {
    "pwl": PiecewiseLinear,
    "piecewise_linear": PiecewiseLinear,
    "fast_sigmoid": FastSigmoid,
    "exponential": Exponential,
    "pass_through": PassThrough,
    "straight_through": PassThrough,
}


def list_surrogates() -> list[str]:
    """Names accepted by :func:`get_surrogate`."""
    return sorted(_SURROGATES)


def surrogate_parameters(name: str) -> list[str]:
    """The keyword options of the surrogate ``name`` (e.g. ``["gamma"]`` for ``"pwl"``)."""
    if name not in _SURROGATES:
        raise ValueError(f"unknown surrogate {name!r}; choose one of {', '.join(list_surrogates())}")
    return [p for p in inspect.signature(_SURROGATES[name]).parameters if p != "self"]


def get_surrogate(surrogate: str | Surrogate = "pwl", **kwargs) -> Surrogate:
    """A surrogate by name (``"pwl"``, ``"fast_sigmoid"``, ``"exponential"``, ``"pass_through"``)."""
    if isinstance(surrogate, Surrogate):
        if kwargs:
            raise ValueError("surrogate options given with a surrogate instance")
        return surrogate
    try:
        cls = _SURROGATES[surrogate]
    except KeyError:
        raise ValueError(
            f"unknown surrogate {surrogate!r}; choose one of {', '.join(list_surrogates())}"
        ) from None
    return cls(**kwargs)


class _SpikeFn(torch.autograd.Function):
    """Heaviside ``u > θ`` forward, surrogate backward."""

    @staticmethod
    def forward(ctx, u: Tensor, threshold: float, surrogate: Surrogate) -> Tensor:
        ctx.save_for_backward(u)
        ctx.threshold = threshold
        ctx.surrogate = surrogate
        return (u > threshold).to(u.dtype)

    @staticmethod
    def backward(ctx, grad_s: Tensor):
        (u,) = ctx.saved_tensors
        return grad_s * ctx.surrogate.grad(u, ctx.threshold), None, None


def spike_fn(u: Tensor, threshold: float = 1.0, surrogate: Surrogate | None = None) -> Tensor:
    """Eq. (3) spikes ``(u > θ)`` with the surrogate derivative (default eq. (6)) in backward."""
    return _SpikeFn.apply(u, threshold, surrogate or PiecewiseLinear())


class _SpikeFnTensor(torch.autograd.Function):
    """``u > θ`` with a tensor θ (learnable): the surrogate flows to ``u`` and (negated) to θ."""

    @staticmethod
    def forward(ctx, u: Tensor, theta: Tensor, surrogate: Surrogate) -> Tensor:
        ctx.save_for_backward(u, theta)
        ctx.surrogate = surrogate
        return (u > theta).to(u.dtype)

    @staticmethod
    def backward(ctx, grad_s: Tensor):
        u, theta = ctx.saved_tensors
        g = grad_s * ctx.surrogate.grad(u, theta)
        g_theta = (-g).sum_to_size(theta.shape) if ctx.needs_input_grad[1] else None
        return g, g_theta, None


# --------------------------------------------------------------------------------------------
# Reference single step
# --------------------------------------------------------------------------------------------


def lif_step(
    x: Tensor,
    mem: Tensor | None,
    *,
    leak: float = 0.99,
    threshold: float = 1.0,
    reset: str = "soft",
    surrogate: Surrogate | None = None,
    detach_reset: bool = True,
) -> tuple[Tensor, Tensor]:
    """One step of eqs. (2)-(3), from plain autograd ops (the reference implementation).

    Args:
        x: input current ``x[t]``, any shape.
        mem: membrane after the previous step's reset, ``m[t-1]`` (``None`` = zeros).
        leak: λ. threshold: θ. reset: ``"soft"`` (subtract θ) or ``"hard"`` (to 0).
        surrogate: spike derivative in backward (default eq. (6)).
        detach_reset: keep the reset term out of the gradient (as the paper's code).

    Returns:
        ``(spikes s[t], membrane m[t])``, both shaped like ``x``.
    """
    u = x if mem is None else leak * mem + x
    s = spike_fn(u, threshold, surrogate)
    r = s.detach() if detach_reset else s
    if reset == "soft":
        m = u - threshold * r
    elif reset == "hard":
        m = u * (1.0 - r)
    else:
        raise ValueError(f"reset must be 'soft' or 'hard', not {reset!r}")
    return s, m


# --------------------------------------------------------------------------------------------
# Fused implementations (save only the surrogate term)
# --------------------------------------------------------------------------------------------


def _fire(u: Tensor, threshold: float, hard: bool) -> tuple[Tensor, Tensor]:
    """Spike and reset of eq. (3): ``(s, m)`` from ``u``."""
    s = (u > threshold).to(u.dtype)
    m = u * (1.0 - s) if hard else u - threshold * s
    return s, m


def _mem_grad_factor(
    u: Tensor, s: Tensor, g: Tensor, threshold: float, hard: bool, detach_reset: bool
) -> Tensor | None:
    """``∂m/∂u`` for the reset variant (``None`` means 1)."""
    if hard:
        return (1.0 - s) if detach_reset else (1.0 - s) - u * g
    return None if detach_reset else 1.0 - threshold * g


class _LIFStepFn(torch.autograd.Function):
    """One fused LIF step: ``(x[t], m[t-1]) -> (s[t], m[t])``."""

    @staticmethod
    def forward(ctx, x, mem, leak, threshold, hard, detach_reset, surrogate):
        u = x if mem is None else torch.add(x, mem, alpha=leak)
        s, m = _fire(u, threshold, hard)
        g = surrogate.grad(u, threshold)
        k = _mem_grad_factor(u, s, g, threshold, hard, detach_reset)
        ctx.save_for_backward(g, k) if k is not None else ctx.save_for_backward(g)
        ctx.leak = leak
        ctx.has_mem = mem is not None
        return s, m

    @staticmethod
    def backward(ctx, grad_s, grad_m):
        saved = ctx.saved_tensors
        g = saved[0]
        gu = grad_s * g if grad_s is not None else torch.zeros_like(g)
        if grad_m is not None:
            gu = gu + (grad_m * saved[1] if len(saved) > 1 else grad_m)
        grad_mem = gu * ctx.leak if ctx.has_mem else None
        return gu, grad_mem, None, None, None, None, None


class _LIFSeqFn(torch.autograd.Function):
    """A whole sequence ``x[0..T-1] -> s[0..T-1]`` in one autograd node (membrane from zero)."""

    @staticmethod
    def forward(ctx, x, leak, threshold, hard, detach_reset, surrogate):
        T = x.shape[0]
        spikes = torch.empty_like(x)
        gs = torch.empty_like(x)
        ks = torch.empty_like(x) if (hard or not detach_reset) else None
        m = None
        for t, xt in enumerate(x.unbind(0)):
            u = xt if m is None else torch.add(xt, m, alpha=leak)
            s, m = _fire(u, threshold, hard)
            spikes[t] = s
            g = surrogate.grad(u, threshold)
            gs[t] = g
            if ks is not None:
                ks[t] = _mem_grad_factor(u, s, g, threshold, hard, detach_reset)
        ctx.save_for_backward(gs, ks) if ks is not None else ctx.save_for_backward(gs)
        ctx.leak = leak
        ctx.T = T
        return spikes

    @staticmethod
    def backward(ctx, grad_spikes):
        saved = ctx.saved_tensors
        gs = saved[0]
        ks = saved[1] if len(saved) > 1 else None
        grad_x = torch.empty_like(gs)
        carry = None  # ∂L/∂u[t+1] · λ, i.e. the gradient reaching m[t]
        for t in range(ctx.T - 1, -1, -1):
            gu = grad_spikes[t] * gs[t]
            if carry is not None:
                gu = gu + (carry * ks[t] if ks is not None else carry)
            grad_x[t] = gu
            carry = gu * ctx.leak
        return grad_x, None, None, None, None, None


# --------------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------------


class LIF(nn.Module):
    """Leaky integrate-and-fire neurons, eqs. (2)-(3), over a time-first input.

    ``forward`` takes input currents ``[T, ...]`` and returns spikes ``[T, ...]`` (0/1, same
    dtype). The membrane starts at zero on every call, so nothing needs resetting between
    batches. For streaming, :meth:`step` advances one timestep with an explicit state.

    Args:
        leak: λ in eq. (2), ``0 < λ ≤ 1`` (1.0 = IF neuron).
        threshold: θ in eq. (3), > 0.
        reset: ``"soft"`` (subtract θ after a spike, the paper's choice) or ``"hard"`` (to 0).
        surrogate: name or :class:`Surrogate` for the backward pass (default ``"pwl"``, eq. (6)).
        surrogate_options: keyword arguments of the named surrogate, e.g. ``{"gamma": 0.3}``.
        detach_reset: keep the reset out of the gradient (the paper's code and snnTorch do).
    """

    def __init__(
        self,
        leak: float = 0.99,
        threshold: float = 1.0,
        reset: str = "soft",
        surrogate: str | Surrogate = "pwl",
        surrogate_options: dict | None = None,
        detach_reset: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 < leak <= 1.0:
            raise ValueError(f"leak must be in (0, 1], got {leak}")
        if threshold <= 0.0 or not math.isfinite(threshold):
            raise ValueError(f"threshold must be a positive number, got {threshold}")
        if reset not in ("soft", "hard"):
            raise ValueError(f"reset must be 'soft' or 'hard', not {reset!r}")
        self.leak = float(leak)
        self.threshold = float(threshold)
        self.reset = reset
        self.surrogate = get_surrogate(surrogate, **(surrogate_options or {}))
        self.detach_reset = bool(detach_reset)
        # An OrderedDict (not a dict) because RemovableHandle keeps a weak reference to it.
        self._spike_hooks: OrderedDict[int, Callable[[LIF, Tensor, int | None], None]] = (
            OrderedDict()
        )

    def register_spike_hook(self, hook: Callable[[LIF, Tensor, int | None], None]) -> RemovableHandle:
        """Call ``hook(module, spikes, t)`` with every output of this neuron layer.

        ``spikes`` is ``[N, ...]`` with ``t`` the timestep when the layer runs step by step,
        or ``[T, N, ...]`` with ``t=None`` when it runs a whole sequence. Used by the analyses
        (spike rates, operation counts) to observe a network without changing it.

        Returns:
            a handle whose ``remove()`` unregisters the hook.
        """
        handle = RemovableHandle(self._spike_hooks)
        self._spike_hooks[handle.id] = hook
        return handle

    def _notify(self, spikes: Tensor, t: int | None) -> None:
        for hook in self._spike_hooks.values():
            hook(self, spikes, t)

    def extra_repr(self) -> str:
        return (
            f"leak={self.leak}, threshold={self.threshold}, reset={self.reset!r}, "
            f"surrogate={self.surrogate!r}"
        )

    def step(
        self, x: Tensor, mem: Tensor | None = None, t: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """Advance one timestep: ``(x[t], m[t-1]) -> (s[t], m[t])``; ``mem=None`` means zeros.

        ``t`` (optional) is passed to spike hooks, to tell the timestep.
        """
        hard = self.reset == "hard"
        if torch.is_grad_enabled() and (x.requires_grad or (mem is not None and mem.requires_grad)):
            s, m = _LIFStepFn.apply(
                x, mem, self.leak, self.threshold, hard, self.detach_reset, self.surrogate
            )
        else:
            u = x if mem is None else torch.add(x, mem, alpha=self.leak)
            s, m = _fire(u, self.threshold, hard)
        if self._spike_hooks:
            if t is None:
                raise ValueError("LIF.step: pass the timestep t= when spike hooks are registered")
            self._notify(s, t)
        return s, m

    def forward(self, x: Tensor) -> Tensor:
        """Spikes ``[T, ...]`` for input currents ``[T, ...]`` (membrane starts at zero)."""
        if x.dim() < 1:
            raise ValueError("LIF expects a time-first tensor [T, ...]")
        if torch.is_grad_enabled() and x.requires_grad:
            out = _LIFSeqFn.apply(
                x, self.leak, self.threshold, self.reset == "hard", self.detach_reset,
                self.surrogate,
            )
        else:
            out = torch.empty_like(x)
            m, hard = None, self.reset == "hard"
            for t, xt in enumerate(x.unbind(0)):
                u = xt if m is None else torch.add(xt, m, alpha=self.leak)
                out[t], m = _fire(u, self.threshold, hard)
        if self._spike_hooks:
            self._notify(out, None)
        return out


class PLIF(LIF):
    """LIF with learnable parameters: the leak (PLIF, Fang et al. 2021) and/or the threshold.

    ``λ = sigmoid(a)`` with ``a`` initialised to ``logit(leak)``; ``θ = max(b, 0.01)`` with
    ``b`` initialised to ``threshold``. Each is one value per layer (``per="layer"``) or per
    channel (``per="channel"``; the input's dimension 1, or 0 for a single frame of one
    sample). Eqs. (2)-(3) are otherwise unchanged; gradients reach ``a`` through the leak term
    and ``b`` through the surrogate and the reset.

    Args:
        channels: channels of the layer (used with ``per="channel"``).
        per: ``"layer"`` or ``"channel"``.
        learn_leak: learn λ (PLIF); otherwise λ stays ``leak``.
        learn_threshold: learn θ; otherwise θ stays ``threshold``.
        **kwargs: :class:`LIF`'s arguments (the initial ``leak`` and ``threshold``, ...).
    """

    def __init__(self, channels: int = 1, per: str = "layer", learn_leak: bool = True,
                 learn_threshold: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        if per not in ("layer", "channel"):
            raise ValueError(f"per must be 'layer' or 'channel', not {per!r}")
        n = int(channels) if per == "channel" else 1
        self.per = per
        lam = min(self.leak, 1.0 - 1e-6)  # λ = 1 has no finite logit
        self.leak_logit = (nn.Parameter(torch.full((n,), math.log(lam / (1.0 - lam))))
                           if learn_leak else None)
        self.threshold_param = (nn.Parameter(torch.full((n,), self.threshold))
                                if learn_threshold else None)

    def extra_repr(self) -> str:
        learned = [n for n, p in (("leak", self.leak_logit), ("threshold", self.threshold_param))
                   if p is not None]
        return super().extra_repr() + f", learned={'+'.join(learned) or 'none'} per {self.per}"

    def _shape(self, p: Tensor, x: Tensor) -> Tensor:
        if p.numel() == 1:
            return p.reshape(())
        return p.view(-1, *([1] * (x.dim() - 2)))  # [C, 1, 1] against [N, C, H, W]

    def effective_leak(self, x: Tensor) -> Tensor | float:
        """λ, broadcastable against a step's input ``x``."""
        return self.leak if self.leak_logit is None else self._shape(
            torch.sigmoid(self.leak_logit), x).to(x.dtype)

    def effective_threshold(self, x: Tensor) -> Tensor:
        """θ, broadcastable against a step's input ``x``."""
        if self.threshold_param is None:
            return torch.tensor(self.threshold, dtype=x.dtype, device=x.device)
        return self._shape(self.threshold_param.clamp(min=0.01), x).to(x.dtype)

    def step(self, x: Tensor, mem: Tensor | None = None, t: int | None = None
             ) -> tuple[Tensor, Tensor]:
        lam = self.effective_leak(x)
        theta = self.effective_threshold(x)
        u = x if mem is None else lam * mem + x
        s = _SpikeFnTensor.apply(u, theta, self.surrogate)
        r = s.detach() if self.detach_reset else s
        m = u * (1.0 - r) if self.reset == "hard" else u - theta * r
        if self._spike_hooks:
            if t is None:
                raise ValueError("PLIF.step: pass the timestep t= when spike hooks are registered")
            self._notify(s, t)
        return s, m

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2:
            raise ValueError("PLIF expects a time-first tensor [T, N, ...]")
        hooks, self._spike_hooks = self._spike_hooks, OrderedDict()
        try:
            out, m = [], None
            for xt in x.unbind(0):
                s, m = self.step(xt, m)
                out.append(s)
        finally:
            self._spike_hooks = hooks
        spikes = torch.stack(out)
        if self._spike_hooks:
            self._notify(spikes, None)
        return spikes


class IF(LIF):
    """Integrate-and-fire neurons: :class:`LIF` with leak 1.0 (used by ANN→SNN conversion)."""

    def __init__(self, threshold: float = 1.0, reset: str = "soft", **kwargs) -> None:
        super().__init__(leak=1.0, threshold=threshold, reset=reset, **kwargs)
