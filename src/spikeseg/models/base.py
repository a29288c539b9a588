"""The segmentation model base class: input checks, encoding, time-stepping and accumulation.

An architecture subclass supplies two pieces:

* ``body(x, ctx) -> tuple of tensors``: everything up to the output layer, for one timestep
  (``"step"`` mode), for all timesteps folded into the batch (``"fold"`` mode) or for an ANN
  (``ctx is None``);
* ``head(features, size) -> logits``: the output layer. It must be *linear* in the features,
  because a spiking network accumulates its last layer over time without leak (the "spike
  accumulator" of section 4.3): ``Σ_t head(f_t) / T = head(Σ_t f_t / T)``, so the head runs once
  on the time-averaged features instead of T times.

Spiking models accept a static image batch ``[B, C, H, W]`` (rate-coded inside, one timestep
at a time) or a pre-encoded spike / event-frame tensor ``[T, B, C, H, W]``, and return logits
``[B, num_classes, H, W]`` at the input resolution: the average over time of the output
layer's membrane input (eq. (5)'s ``h``, divided by T so that logits keep their scale whatever
the number of timesteps).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.utils.checkpoint
from torch import Tensor, nn

from ..encoding import ENCODINGS, build_encoder
from ..kernels import SpikeRegistry, save_spikes_compactly
from ..neurons import LIF
from ..norm import BNTT
from .layers import TimeContext

__all__ = ["SegmentationModel", "STEP_MODES", "Execution", "BPTT_MODES", "LIF_KERNELS",
           "leaky_sum"]

STEP_MODES = ("auto", "step", "fold")
BPTT_MODES = ("full", "sltt")
LIF_KERNELS = ("auto", "torch", "triton")


@dataclass
class Execution:
    """How a spiking model computes a training step (an execution detail: the defaults give
    the exact surrogate-gradient BPTT of the paper, and no option changes the forward pass).

    Attributes:
        fused: run BNTT + LIF blocks through the fused kernels of :mod:`spikeseg.kernels`
            (bit-identical forward, gradients equal up to summation order); ``False`` runs the
            op-by-op reference path.
        checkpoint_steps: ``K > 0``: time-chunk checkpointing. Only the membranes at every
            K-th timestep are kept for backward; each chunk of K steps is recomputed from
            them when backward reaches it. Exact gradients; memory falls from ``O(T)``
            activations to ``O(T/K + K)``, at the cost of one more forward pass. 0 = off.
        bptt: ``"full"`` (BPTT) or ``"sltt"``: spatial learning through time (Meng et al.,
            ICCV 2023): the membranes' gradient through time, ``∂u[t+1]/∂m[t]``, is dropped,
            so each timestep backpropagates only through its own layers.
        sltt_k: with ``"sltt"``: backpropagate through K randomly chosen timesteps only (the
            others run without a graph), their gradients scaled by ``(T+P)/K``; ``None`` =
            every timestep.
        seed: seed of SLTT-K's draw of timesteps (the training loop sets one per step, so a
            resumed run draws the same); ``None`` = torch's global generator.
        kernel: the fused BNTT + LIF blocks' implementation: ``"torch"`` (the PyTorch
            kernels of :mod:`spikeseg.kernels.fused`, bit-identical to the reference path),
            ``"triton"`` (one Triton kernel per block and call, :mod:`spikeseg.kernels.triton_lif`;
            on CPU tensors it runs under Triton's interpreter, for tests only), ``"auto"``
            (Triton on CUDA when it is installed, PyTorch otherwise).
    """

    fused: bool = True
    checkpoint_steps: int = 0
    bptt: str = "full"
    sltt_k: int | None = None
    seed: int | None = None
    kernel: str = "auto"

    def __post_init__(self) -> None:
        if self.kernel not in LIF_KERNELS:
            raise ValueError(f"kernel must be one of {LIF_KERNELS}, not {self.kernel!r}")
        if self.bptt not in BPTT_MODES:
            raise ValueError(f"bptt must be one of {BPTT_MODES}, not {self.bptt!r}")
        if self.checkpoint_steps < 0:
            raise ValueError(f"checkpoint_steps must be >= 0, got {self.checkpoint_steps}")
        if self.sltt_k is not None and self.sltt_k < 1:
            raise ValueError(f"sltt_k must be >= 1 or None, got {self.sltt_k}")


def leaky_sum(steps: Tensor, leak: float) -> Tensor:
    """``Σ_i leak^{n−1−i} steps[i]`` over the first dimension (of size n): what a leaky
    integrator with this leak holds after the n steps (a plain sum at ``leak = 1``)."""
    if leak == 1.0:
        return steps.sum(0)
    n = steps.shape[0]
    w = leak ** torch.arange(n - 1, -1, -1, device=steps.device, dtype=torch.float64)
    return (steps * w.to(steps.dtype).view(-1, *([1] * (steps.dim() - 1)))).sum(0)


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the gradient multiplied by a constant in backward."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad * ctx.scale, None


class SegmentationModel(nn.Module):
    """Base of every spikeseg model (ANN or SNN). See the module docstring.

    Args:
        num_classes: output classes.
        in_channels: input channels (3 for RGB; 2 for positive/negative event counts).
        spiking: build with BNTT + LIF (True) or BatchNorm + ReLU (False).
        timesteps: default number of timesteps T for static input (spiking models).
        encoding: static-image coding: ``"poisson"``, ``"poisson_signed"`` or ``"direct"``.
        input_mean: per-channel values subtracted from static images before they enter the
            network (ANNs and direct coding; for ``poisson_signed`` the mean its coding
            subtracts, default the Caffe mean). The paper's original code feeds its networks
            ``image − Caffe mean``; ``None`` feeds the image as it is. Not allowed with plain
            ``poisson`` coding, whose rates are the intensities in ``[0, 1]``.
        propagation_steps: spiking models: P steps of zero input after the T input steps, so
            that what the last inputs left in the membranes still reaches the output (the
            original code's "full propagation", one step per spiking layer there); 0 = off.
            BNTT then keeps statistics for ``T + P`` steps.
        step_mode: ``"step"`` (time outer), ``"fold"`` (time folded into the batch) or
            ``"auto"``: ``"step"`` on CPU, ``"fold"`` on CUDA, as measured in docs/benchmarks.md.
        readout_leak: spiking models: leak ``λ_o`` in ``(0, 1]`` of the output accumulator.
            1 (the paper) averages the output layer over all steps; below 1 the accumulator
            is a leaky integrator, ``acc_t = λ_o·acc_{t−1} + h_t``, so the last steps weigh
            most: logits ``= Σ_t λ_o^{S−1−t} h_t / Z`` over the ``S = T + P`` steps, with
            ``Z = (T/S)·Σ_t λ_o^{S−1−t}`` (``= T`` at ``λ_o = 1``), a weighted mean that
            keeps the logits' scale.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        spiking: bool,
        timesteps: int = 20,
        encoding: str = "poisson",
        step_mode: str = "auto",
        input_mean: list[float] | None = None,
        propagation_steps: int = 0,
        readout_leak: float = 1.0,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {timesteps}")
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, not {encoding!r}")
        if step_mode not in STEP_MODES:
            raise ValueError(f"step_mode must be one of {STEP_MODES}, not {step_mode!r}")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.spiking = spiking
        self.timesteps = timesteps
        self.encoding = encoding
        self.step_mode = step_mode
        if input_mean is not None:
            if len(input_mean) != in_channels:
                raise ValueError(
                    f"input_mean has {len(input_mean)} values for {in_channels} input channels"
                )
            if spiking and encoding == "poisson":
                raise ValueError(
                    "input_mean does not apply to poisson coding (rates are intensities in "
                    "[0, 1]); use encoding='poisson_signed' or 'direct'"
                )
            input_mean = [float(v) for v in input_mean]
        self.input_mean = input_mean
        if isinstance(propagation_steps, bool) or int(propagation_steps) != propagation_steps \
                or propagation_steps < 0:
            raise ValueError(f"propagation_steps must be an int >= 0, got {propagation_steps!r}")
        self.propagation_steps = int(propagation_steps) if spiking else 0
        if isinstance(readout_leak, bool) or not 0.0 < float(readout_leak) <= 1.0:
            raise ValueError(f"readout_leak must be in (0, 1], got {readout_leak!r}")
        self.readout_leak = float(readout_leak) if spiking else 1.0
        self.encoder = build_encoder(encoding, mean=input_mean)
        self.execution = Execution()
        """How training steps are computed: fused kernels, checkpointing, SLTT (see
        :class:`Execution`); set by the training loop from ``train.*``."""
        self.head_timesteps: int | None = None
        """While the output layer runs on time-averaged inputs: how many timesteps they
        average (None otherwise). Lets operation counters price the accumulator per step."""

    # -- to be supplied by architectures ------------------------------------------------------
    def body(self, x: Tensor, ctx: TimeContext | None) -> tuple[Tensor, ...]:
        raise NotImplementedError

    def head(self, features: tuple[Tensor, ...], size: tuple[int, int]) -> Tensor:
        raise NotImplementedError

    def spike_consumers(self) -> dict[str, list[str]]:
        """The synaptic graph, for ANN→SNN conversion: for each activation block (a
        ``ConvBlock``, by module name, in forward order) the names of the synaptic layers
        (convolutions) that read its output, through pools and resizes only."""
        raise NotImplementedError(f"{type(self).__name__} does not describe its layer graph")

    # -- helpers ------------------------------------------------------------------------------
    def activation_blocks(self) -> list[tuple[str, nn.Module]]:
        """``(name, block)`` of every activation block (a ``ConvBlock``) in forward order, as
        :meth:`spike_consumers` lists them (conversion, activation analyses, export)."""
        modules = dict(self.named_modules())
        return [(name, modules[name]) for name in self.spike_consumers()]

    def neurons(self) -> list[tuple[str, LIF]]:
        """``(name, module)`` of every spiking neuron layer, in forward order."""
        return [(n, m) for n, m in self.named_modules() if isinstance(m, LIF)]

    def needs_sequence(self) -> bool:
        """True when a norm layer trains on whole sequences (time-shared BN, tdBN)."""
        return any(getattr(type(m), "needs_sequence", False) is True for m in self.modules())

    def resolve_step_mode(self, device: torch.device) -> str:
        """The execution mode used on ``device`` (see ``step_mode``).

        ``"auto"`` is ``"fold"`` on CUDA and ``"step"`` elsewhere, except that a model whose
        norms need whole sequences trains in ``"fold"`` mode everywhere.
        """
        sequence = self.training and self.needs_sequence()
        if self.step_mode != "auto":
            if sequence and self.step_mode == "step":
                raise ValueError(
                    "this model's time-shared norms train on whole sequences: use "
                    "step_mode='fold' or 'auto' (or norm='bntt')"
                )
            return self.step_mode
        return "fold" if device.type == "cuda" or sequence else "step"

    def _check_input(self, x: Tensor) -> None:
        if x.dim() not in (4, 5):
            raise ValueError(
                f"expected an image batch [B, C, H, W] or a time series [T, B, C, H, W], "
                f"got shape {tuple(x.shape)}"
            )
        c = x.shape[-3]
        if c != self.in_channels:
            raise ValueError(
                f"model takes {self.in_channels} input channels, got {c} "
                f"(input shape {tuple(x.shape)}); build it with in_channels={c}"
            )
        if x.shape[-1] < 4 or x.shape[-2] < 4:
            raise ValueError(f"input of {tuple(x.shape[-2:])} pixels is too small (min 4x4)")

    # -- forward ------------------------------------------------------------------------------
    def _frames(
        self,
        x: Tensor,
        timesteps: int | None,
        generator: torch.Generator | None,
        keys: Tensor | None,
    ) -> tuple[Iterator[Tensor], int]:
        """The input frames ``[B, C, H, W]`` one by one, and their number T."""
        if x.dim() == 4:
            T = int(timesteps or self.timesteps)
            if T < 1:
                raise ValueError(f"timesteps must be >= 1, got {timesteps}")
            return self.encoder.steps(x, T, generator, keys), T
        return iter(x.unbind(0)), x.shape[0]

    def forward(
        self,
        x: Tensor,
        timesteps: int | None = None,
        generator: torch.Generator | None = None,
        keys: Tensor | None = None,
        return_steps: bool = False,
    ) -> Tensor:
        """Logits ``[B, num_classes, H, W]`` for ``x`` ``[B, C, H, W]`` or ``[T, B, C, H, W]``.

        With ``propagation_steps = P > 0`` the T input steps are followed by P steps of zero
        input (the original code's "full propagation"); the output layer accumulates over all
        ``T + P`` steps and is divided by T.

        Args:
            x: static images (rate-coded for spiking models) or pre-encoded frames.
            timesteps: T for static input (default: the model's ``timesteps``); ignored
                for pre-encoded input, whose first dimension is T.
            generator: random generator for the Poisson encoder (default: global RNG).
            keys: per-sample keys ``[B]`` of the Poisson encoder (:mod:`spikeseg.rng`):
                the spikes of each sample then depend only on its key (used instead of
                ``generator``).
            return_steps: spiking models: return the output layer's logits at every step,
                ``[T + P, B, num_classes, H, W]`` (``o_t = head(f_t)``, for per-timestep
                losses such as TET); :meth:`readout_steps` turns them into the usual output
                (their sum divided by T, weighted by ``readout_leak`` below 1). An ANN returns
                ``[1, B, ...]``.
        """
        self._check_input(x)
        size = (x.shape[-2], x.shape[-1])
        x = self.network_input(x)
        if not self.spiking:
            if x.dim() == 4:
                out = self.head(self.body(x, None), size)
            else:  # an ANN sees each frame and averages its features over time (5.1.1)
                T = x.shape[0]
                feats = self.body(x.flatten(0, 1), None)
                out = self.head(tuple(f.unflatten(0, (T, -1)).mean(0) for f in feats), size)
            return out[None] if return_steps else out

        frames, T = self._frames(x, timesteps, generator, keys)
        P = self.propagation_steps
        if self.training and T > self.timesteps and self.bntt_modules():
            raise ValueError(
                f"model built for {self.timesteps} timesteps cannot train on {T}: BNTT has "
                f"statistics for {self.timesteps} steps only; build it with timesteps={T}"
            )
        if P:
            frames = self._then_zeros(frames, P)
        mode = self.resolve_step_mode(x.device)
        ex = self.execution
        grad = torch.is_grad_enabled()
        sltt = ex.bptt == "sltt" and grad and self.training
        chunk = ex.checkpoint_steps if grad else 0
        if (sltt or chunk) and self.training and self.needs_sequence():
            raise ValueError(
                "time-chunk checkpointing and SLTT need per-timestep norms (bntt or none): "
                "this model's time-shared norms take statistics over the whole sequence"
            )
        spikes = SpikeRegistry()
        with save_spikes_compactly(spikes, enabled=grad and ex.fused):
            if sltt or chunk:
                return self._forward_segments(frames, T, T + P, mode, size, return_steps, sltt,
                                              chunk, spikes)
            if mode == "fold":
                if x.dim() == 5 and not P:
                    seq = x.flatten(0, 1)  # pre-encoded frames: no stacking copy
                else:
                    seq = torch.stack(list(frames)).flatten(0, 1)
                ctx = TimeContext("fold", T + P, fused=ex.fused, kernel=ex.kernel, spikes=spikes)
                feats = self.body(seq, ctx)
                if return_steps:  # the head is linear: one call on the folded steps
                    return self._accumulated_head(feats, size, 1).unflatten(0, (T + P, -1))
                z = self._readout_norm(T, T + P)
                total = tuple(self._leaky_sum(f.unflatten(0, (T + P, -1))) / z for f in feats)
                return self._accumulated_head(total, size, T)

            ctx = TimeContext("step", T + P, fused=ex.fused, kernel=ex.kernel, spikes=spikes)
            acc: list[Tensor] | None = None
            steps: list[Tensor] = []
            for t, frame in enumerate(frames):
                ctx.t = t
                feats = self.body(frame, ctx)
                if return_steps:
                    steps.append(self._accumulated_head(feats, size, 1))
                    continue
                acc = self._accumulate(acc, feats)
            if return_steps:
                return torch.stack(steps)
            assert acc is not None
            z = self._readout_norm(T, T + P)
            return self._accumulated_head(tuple(a / z for a in acc), size, T)

    # -- time chunks: checkpointing and SLTT --------------------------------------------------
    def _sltt_steps(self, S: int) -> set[int] | None:
        """The timesteps SLTT-K backpropagates through (``None``: all of them)."""
        k = self.execution.sltt_k
        if k is None or k >= S:
            return None
        seed = self.execution.seed
        g = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        return set(torch.randperm(S, generator=g)[:k].tolist())

    def _forward_segments(self, frames: Iterator[Tensor], T: int, S: int, mode: str,
                          size: tuple[int, int], return_steps: bool, sltt: bool,
                          chunk: int, spikes: SpikeRegistry) -> Tensor:
        """The spiking forward pass as a sequence of time chunks (see :class:`Execution`).

        Timesteps are grouped into segments ``(t0, n, with_grad)``: with SLTT-K, the
        timesteps without backpropagation run under ``no_grad``; with checkpointing, segments
        with gradients are cut into chunks of ``chunk`` steps whose internals are recomputed
        in backward from the membranes at the chunk's start.
        """
        selected = self._sltt_steps(S) if sltt else None
        segments: list[tuple[int, int, bool]] = []
        t = 0
        while t < S:
            g = selected is None or t in selected
            end = t + 1
            while end < S and (selected is None or end in selected) == g:
                end += 1
            step = chunk if (chunk and g) else end - t
            segments += [(a, min(step, end - a), g) for a in range(t, end, step)]
            t = end
        scale = S / len(selected) if selected is not None else None
        states: dict[int, Tensor] = {}
        acc: list[Tensor] | None = None
        steps: list[Tensor] = []
        it = iter(frames)
        for t0, n, g in segments:
            fr = [next(it) for _ in range(n)]
            if g and chunk:
                out, states = self._checkpointed(fr, t0, S, states, mode, size, return_steps,
                                                 not sltt, spikes)
            elif g:
                out, states = self._segment(fr, t0, S, states, mode, size, return_steps,
                                            not sltt, True, spikes)
            else:
                with torch.no_grad():
                    out, states = self._segment(fr, t0, S, states, mode, size, return_steps,
                                                False, True, spikes)
            if scale is not None and g:
                out = tuple(_ScaleGrad.apply(o, scale) for o in out)
            if return_steps:
                steps.append(out[0])
            else:
                acc = self._accumulate(acc, out, self.readout_leak ** n)
        if return_steps:
            return torch.cat(steps)
        assert acc is not None
        z = self._readout_norm(T, S)
        return self._accumulated_head(tuple(a / z for a in acc), size, T)

    def _segment(self, frames: list[Tensor], t0: int, S: int, states: dict[int, Tensor],
                 mode: str, size: tuple[int, int], return_steps: bool, temporal: bool,
                 update_stats: bool, spikes: SpikeRegistry
                 ) -> tuple[tuple[Tensor, ...], dict[int, Tensor]]:
        """Timesteps ``t0 .. t0+len(frames)-1`` from the membranes ``states``: the sums of the
        features over these steps (or their per-step logits ``[n, B, ...]``) and the
        membranes after them."""
        ex = self.execution
        n = len(frames)
        if mode == "fold":
            ctx = TimeContext("fold", n, t0=t0, carry=True, states=dict(states), fused=ex.fused, kernel=ex.kernel,
                              update_stats=update_stats, temporal_grad=temporal, spikes=spikes)
            feats = self.body(torch.stack(frames).flatten(0, 1), ctx)
            if return_steps:
                return (self._accumulated_head(feats, size, 1).unflatten(0, (n, -1)),), \
                    ctx.states
            return tuple(self._leaky_sum(f.unflatten(0, (n, -1))) for f in feats), ctx.states
        ctx = TimeContext("step", S, states=dict(states), fused=ex.fused, kernel=ex.kernel,
                          update_stats=update_stats, temporal_grad=temporal, spikes=spikes)
        acc: list[Tensor] | None = None
        steps: list[Tensor] = []
        for i, frame in enumerate(frames):
            ctx.t = t0 + i
            feats = self.body(frame, ctx)
            if return_steps:
                steps.append(self._accumulated_head(feats, size, 1))
            else:
                acc = self._accumulate(acc, feats)
        if return_steps:
            return (torch.stack(steps),), ctx.states
        assert acc is not None
        return tuple(acc), ctx.states

    def _checkpointed(self, frames: list[Tensor], t0: int, S: int, states: dict[int, Tensor],
                      mode: str, size: tuple[int, int], return_steps: bool, temporal: bool,
                      spikes: SpikeRegistry) -> tuple[tuple[Tensor, ...], dict[int, Tensor]]:
        """:meth:`_segment` whose internals are not kept: backward recomputes them from the
        frames and the membranes at the segment's start (BNTT's running statistics are
        updated by the first run only)."""
        keys = list(states)
        n = len(frames)
        runs = [0]
        layout: dict[str, Any] = {}

        def run(*tensors: Tensor) -> tuple[Tensor, ...]:
            runs[0] += 1
            out, new = self._segment(list(tensors[:n]), t0, S, dict(zip(keys, tensors[n:], strict=True)),
                                     mode, size, return_steps, temporal, runs[0] == 1,
                                     SpikeRegistry())
            layout.setdefault("keys", list(new))
            layout.setdefault("outputs", len(out))
            return (*out, *(new[k] for k in layout["keys"]))

        res = torch.utils.checkpoint.checkpoint(
            run, *frames, *(states[k] for k in keys), use_reentrant=False,
            preserve_rng_state=False)
        k = layout["outputs"]
        return tuple(res[:k]), dict(zip(layout["keys"], res[k:], strict=True))

    @staticmethod
    def _then_zeros(frames: Iterator[Tensor], n: int) -> Iterator[Tensor]:
        last = None
        for last in frames:
            yield last
        assert last is not None
        zero = torch.zeros_like(last)
        for _ in range(n):
            yield zero

    @torch.no_grad()
    def forward_checkpoints(
        self,
        x: Tensor,
        checkpoints: list[int],
        generator: torch.Generator | None = None,
        keys: Tensor | None = None,
    ) -> dict[int, Tensor]:
        """Logits after each of several timestep counts, in one streaming pass over time.

        Runs the spiking network step by step up to ``max(checkpoints)`` and applies the
        output layer to the running time average at each checkpoint ``T``, so evaluating at
        T = 5, 10, ..., 2000 costs one 2000-step run and never holds ``[T, ...]`` tensors.
        Logits at ``T`` equal ``forward`` run for ``T`` steps on the same spike train (with
        ``propagation_steps``, the zero-input steps run from a copy of the state at each
        checkpoint, and the stream continues from the checkpoint's state).

        Args:
            x: static images ``[B, C, H, W]`` (rate-coded) or frames ``[T, B, C, H, W]``
                (then checkpoints beyond the number of frames are not available).
            checkpoints: timestep counts, each >= 1.
            generator, keys: the Poisson encoder's randomness, as in :meth:`forward`.
        """
        if not self.spiking:
            raise ValueError("forward_checkpoints is for spiking models")
        self._check_input(x)
        marks = sorted({int(c) for c in checkpoints})
        if not marks or marks[0] < 1:
            raise ValueError(f"checkpoints must be >= 1, got {checkpoints}")
        size = (x.shape[-2], x.shape[-1])
        x = self.network_input(x)
        if x.dim() == 5 and marks[-1] > x.shape[0]:
            raise ValueError(f"{x.shape[0]} frames given, checkpoints up to {marks[-1]}")
        frames, _ = self._frames(x, marks[-1], generator, keys)
        P = self.propagation_steps
        ctx = TimeContext("step", marks[-1] + P)
        acc: list[Tensor] | None = None
        out: dict[int, Tensor] = {}
        for t, frame in enumerate(frames):
            ctx.t = t
            feats = self.body(frame, ctx)
            acc = self._accumulate(acc, feats)
            if t + 1 in marks:
                total = acc
                if P:
                    total = self._propagate(ctx, frame, acc, P)
                z = self._readout_norm(t + 1, t + 1 + P)
                out[t + 1] = self._accumulated_head(tuple(a / z for a in total), size, t + 1)
            if t + 1 == marks[-1]:
                break
        return out

    def _propagate(self, ctx: TimeContext, frame: Tensor, acc: list[Tensor], n: int
                   ) -> list[Tensor]:
        """``acc`` plus the features of ``n`` zero-input steps run from a copy of ``ctx``."""
        side = TimeContext("step", ctx.timesteps, ctx.t, dict(ctx.states))
        zero = torch.zeros_like(frame)
        total = list(acc)
        for k in range(1, n + 1):
            side.t = ctx.t + k
            total = self._accumulate(total, self.body(zero, side))
        return total

    # -- the output accumulator ---------------------------------------------------------------
    def _accumulate(self, acc: list[Tensor] | None, feats: tuple[Tensor, ...] | list[Tensor],
                    decay: float | None = None) -> list[Tensor]:
        """The output accumulator after one more step (or segment): ``acc·decay + feats``,
        ``decay`` defaulting to ``readout_leak`` (1: a plain sum, the paper)."""
        if acc is None:
            return list(feats)
        d = self.readout_leak if decay is None else decay
        if d == 1.0:
            return [a + f for a, f in zip(acc, feats, strict=True)]
        return [a * d + f for a, f in zip(acc, feats, strict=True)]

    def _leaky_sum(self, steps: Tensor) -> Tensor:
        """The output accumulator over the first dimension: :func:`leaky_sum` at
        ``readout_leak``."""
        return leaky_sum(steps, self.readout_leak)

    def readout_steps(self, steps: Tensor) -> Tensor:
        """The model's output from its per-step logits ``[T + P, B, ...]`` (those of
        ``forward(..., return_steps=True)``): their sum over steps divided by T, weighted by
        the readout leak when it is below 1, i.e. what ``forward`` returns."""
        S = steps.shape[0]
        T = S - self.propagation_steps
        if T < 1:
            raise ValueError(f"{S} steps given for a model with {self.propagation_steps} "
                             "propagation steps")
        return self._leaky_sum(steps) / self._readout_norm(T, S)

    def _readout_norm(self, T: int, S: int) -> float:
        """The divisor ``Z`` of the accumulated output over ``S`` steps of which ``T`` carry
        input: ``T`` at ``readout_leak = 1`` (the paper), ``(T/S)·Σ_t λ_o^t`` below."""
        if self.readout_leak == 1.0:
            return T
        return T / S * sum(self.readout_leak ** k for k in range(S))

    def network_input(self, x: Tensor) -> Tensor:
        """What the network (or its encoder) reads of an input: static images minus
        ``input_mean`` where the network reads them directly (ANNs and direct coding; signed
        Poisson coding subtracts the mean itself); anything else unchanged."""
        if self.input_mean is None or x.dim() != 4:
            return x
        if self.spiking and self.encoding != "direct":
            return x
        m = torch.tensor(self.input_mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return x - m

    def _accumulated_head(self, mean: tuple[Tensor, ...], size: tuple[int, int], T: int) -> Tensor:
        self.head_timesteps = T
        try:
            return self.head(mean, size)
        finally:
            self.head_timesteps = None

    def extra_repr(self) -> str:
        s = f"num_classes={self.num_classes}, in_channels={self.in_channels}"
        if self.spiking:
            s += f", timesteps={self.timesteps}, encoding={self.encoding!r}"
            if self.readout_leak != 1.0:
                s += f", readout_leak={self.readout_leak}"
        return s

    def bntt_modules(self) -> list[BNTT]:
        """All BNTT layers."""
        return [m for m in self.modules() if isinstance(m, BNTT)]
