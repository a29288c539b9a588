"""Export of spiking spikeseg models to NIR, the Neuromorphic Intermediate Representation.

NIR (``pip install nir``, version 1.0) describes a network as a graph of continuous-time
primitives that other frameworks (snnTorch, Norse, Sinabs, Lava, SpiNNaker2, ...) and
neuromorphic chips read. This module maps the discrete-time neurons of eqs. (2)-(3),

.. math::

    u[t] = \\lambda\\, m[t-1] + x[t], \\qquad s[t] = (u[t] > \\theta), \\qquad
    m[t] = u[t]\\,(1 - s[t]) \\quad \\text{(hard reset)},

onto NIR's leaky integrate-and-fire neuron

.. math::

    \\tau\\, \\dot v = (v_{leak} - v) + R\\, I, \\qquad z = (v > v_{threshold}), \\qquad
    v \\leftarrow v_{reset} \\text{ where } z = 1,

so that a reader integrating it by **forward Euler with step** ``dt`` reproduces eq. (2)
exactly:

.. math::

    v[t] = v[t-1] + \\tfrac{dt}{\\tau}\\big(v_{leak} - v[t-1] + R\\, I[t]\\big)
         = \\lambda\\, v[t-1] + x[t]
    \\iff \\tau = \\frac{dt}{1 - \\lambda},\\; R = \\frac{\\tau}{dt} = \\frac{1}{1 - \\lambda},\\;
    v_{leak} = 0,

with ``v_threshold = θ`` and ``v_reset = 0``. An IF neuron (λ = 1) becomes NIR's ``IF``,
``\\dot v = R I`` with ``R = 1/dt``. ``dt`` is the exporter's choice (default ``1e-4``, the
step snnTorch's NIR importer assumes; only ``dt/τ`` matters, in NIR's unit of time) and is
stored in the graph's metadata. A reader that integrates exactly instead (``exp(-dt/τ)``)
gets a leak of ``exp(λ - 1)`` (0.99005 for λ = 0.99), not λ.

What is exported (the part of a model NIR expresses):

* ``Input`` ``[C, H, W]``: one input frame per timestep. Static images are Poisson- or
  direct-coded outside the graph (``input_mean`` subtraction included), event frames enter
  as they are.
* every ``conv → norm → neuron`` block as ``Conv2d`` (stride, padding, dilation, groups and
  bias kept) → ``LIF``/``IF``, the norm folded into the convolution: a time-shared batch
  norm or tdBN in evaluation is ``y = a·x + b`` per channel
  (:meth:`~spikeseg.norm.TimeSharedBN.affine_parameters`), so ``W' = a·W``,
  ``b' = a·bias + b``; ``norm="none"`` convolutions keep their own bias.
* each average pool ``AvgPool2d(3, stride 2, padding 1, count_include_pad=True)`` as NIR's
  ``AvgPool2d`` (defined by NIR as ``SumPool2d`` then ``Scale`` by 1/9 — padding counts, as
  ours), or with ``pool="sum"`` as an explicit ``SumPool2d`` → ``Scale(1/9)`` pair.
* **DeepLab**: everything up to and including the output 1×1 convolution. The graph's
  ``Output`` (``"out"``, ``[classes, H/4, W/4]``) is that convolution's current at each step;
  the reader's average of it over the T steps, bilinearly upsampled (``align_corners=True``)
  to the input size, is spikeseg's logits.
* **FCN**: the encoder up to its last spiking layer and the four 1×1 skip scores, each an
  ``Output`` (``"out.score1"`` at H … ``"out.score4"`` at H/8, per-step currents). The
  decoder — transposed convolutions, bilinear resizes, the sums with the skip scores and the
  decoder's two LIF layers — has no NIR primitive and is left to the reader.

Refused, with a one-line :class:`~spikeseg.errors.SpikesegError` that says what to train
instead: ANNs (export them to ONNX), BNTT (per-timestep statistics: NIR has no time-varying
parameters; train with ``model.norm=bn`` or ``none``) and **soft reset** (NIR's ``LIF`` and
``IF`` reset *to* ``v_reset``, and the readers implement exactly that — snnTorch's importer
builds ``reset_mechanism="zero"`` neurons, Norse resets to ``v_reset``; a subtractive reset
has no primitive; train with ``model.reset=hard``). Converted models use soft-reset IF
neurons and are refused for the same reason.

What a graph leaves out is written into its metadata (``left_out``, one item per line) and
returned in the summary of :func:`export_nir`. :func:`simulate` is a small reference reader
(forward Euler, NIR semantics) used by the tests and handy to check a file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import __version__
from ..errors import SpikesegError
from ..models.layers import ConvBlock
from ..models.vgg9 import FCNVGG9, DeepLabVGG9
from ..neurons import IF, LIF
from ..norm import BNTT, TimeSharedBN
from . import DEFAULT_DT, model_label, parse_input_size

__all__ = [
    "DEFAULT_DT", "FORMAT", "POOLS", "lif_parameters", "check_exportable", "to_nir",
    "write_nir", "simulate", "require_nir",
]

FORMAT = "spikeseg-nir/1"
"""``metadata["format"]`` of the graphs this module writes."""

POOLS = ("avg", "sum")
"""How average pools are written: NIR ``AvgPool2d``, or ``SumPool2d`` followed by ``Scale``."""

def require_nir():
    """The ``nir`` module, or a one-line SpikesegError naming the extra to install."""
    try:
        import nir
    except ImportError:
        raise SpikesegError(
            'NIR export needs the nir package: pip install "spikeseg[nir]" (or pip install nir)'
        ) from None
    return nir


# --------------------------------------------------------------------------------------------
# Parameter mapping
# --------------------------------------------------------------------------------------------


def lif_parameters(leak: float, threshold: float, dt: float = DEFAULT_DT) -> dict[str, float]:
    """NIR neuron parameters reproducing eqs. (2)-(3) (hard reset) under forward Euler.

    For ``0 < λ < 1`` (NIR ``LIF``)::

        τ = dt / (1 − λ),  R = τ / dt = 1 / (1 − λ),  v_leak = 0,  v_threshold = θ,  v_reset = 0

    so that ``v[t] = v[t−1] + dt/τ·(v_leak − v[t−1] + R·I[t]) = λ·v[t−1] + I[t]``. For λ = 1
    (NIR ``IF``, ``dv/dt = R·I``): ``R = 1/dt``, so ``v[t] = v[t−1] + I[t]``.

    Args:
        leak: λ of eq. (2), in (0, 1].
        threshold: θ of eq. (3) (> 0), in the units of the input current.
        dt: the reader's Euler step, in NIR's unit of time (only ``dt/τ`` matters).

    Returns:
        ``{"type": "LIF", "tau", "r", "v_leak", "v_threshold", "v_reset"}`` or
        ``{"type": "IF", "r", "v_threshold", "v_reset"}`` (Python floats).
    """
    if not 0.0 < leak <= 1.0:
        raise SpikesegError(f"leak must be in (0, 1], got {leak}")
    if not dt > 0.0:
        raise SpikesegError(f"dt must be > 0, got {dt}")
    if leak == 1.0:
        return {"type": "IF", "r": 1.0 / dt, "v_threshold": float(threshold), "v_reset": 0.0}
    tau = dt / (1.0 - leak)
    return {
        "type": "LIF", "tau": tau, "r": tau / dt, "v_leak": 0.0,
        "v_threshold": float(threshold), "v_reset": 0.0,
    }


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


def check_exportable(model: nn.Module) -> None:
    """Raise a one-line SpikesegError if NIR cannot express ``model`` (see the module doc)."""
    if type(model) not in _BUILDERS:
        raise SpikesegError(
            f"NIR export knows spiking_deeplab and spiking_fcn, not {type(model).__name__}"
        )
    if not getattr(model, "spiking", False):
        raise SpikesegError(
            f"{model_label(model)} is an ANN and NIR describes spiking networks: export it "
            "with --format onnx, or export its spiking twin"
        )
    if any(isinstance(m, BNTT) for m in model.modules()):
        raise SpikesegError(
            "this model uses BNTT (batch-norm statistics per timestep), which NIR cannot "
            "express (its parameters do not vary in time): train with model.norm=bn or "
            "model.norm=none to export to NIR"
        )
    for name, block in model.activation_blocks():
        act = block.act
        if type(act) not in (LIF, IF):
            raise SpikesegError(
                f"layer {name} uses {type(act).__name__} neurons (soft reset, as every "
                "converted model), which NIR cannot express (its LIF and IF reset to v_reset): "
                "export a model trained with model.reset=hard"
            )
        if act.reset != "hard":
            raise SpikesegError(
                f"layer {name} uses soft reset (u − θ after a spike), but NIR's LIF and IF "
                "reset to v_reset: train with model.reset=hard to export to NIR"
            )
        if not isinstance(block.norm, (nn.Identity, TimeSharedBN)):
            raise SpikesegError(
                f"layer {name}: cannot fold {type(block.norm).__name__} into its convolution "
                "for NIR; train with model.norm=bn, tdbn or none"
            )


# --------------------------------------------------------------------------------------------
# Graph construction
# --------------------------------------------------------------------------------------------


def _np(t: Tensor) -> np.ndarray:
    """A parameter as a NumPy array of its own precision (float32 for trained models)."""
    t = t.detach().cpu()
    return t.numpy().copy() if t.dtype in (torch.float32, torch.float64) else t.float().numpy()


@torch.no_grad()
def _folded(conv: nn.Conv2d, norm: nn.Module) -> tuple[Tensor, Tensor]:
    """``(W', b')`` of ``norm(conv(x))`` as one convolution (norm in evaluation)."""
    w = conv.weight.detach()
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros(
        conv.out_channels, dtype=w.dtype, device=w.device)
    if isinstance(norm, nn.Identity):
        return w, bias
    a, b = norm.affine_parameters()  # TimeSharedBN: y = a·x + b per channel
    return w * a.view(-1, 1, 1, 1), a * bias + b


class _GraphBuilder:
    """Collects NIR nodes and edges, tracking the shape ``[C, H, W]`` flowing out of each."""

    def __init__(self, nir_mod, in_shape: tuple[int, int, int], dt: float, pool: str) -> None:
        self.nir = nir_mod
        self.dt = dt
        self.pool_mode = pool
        self.nodes: dict[str, Any] = {"input": nir_mod.Input({"input": np.array(in_shape)})}
        self.edges: list[tuple[str, str]] = []
        self.shapes: dict[str, tuple[int, int, int]] = {"input": in_shape}
        self.neurons: list[str] = []

    def _add(self, name: str, node, src: str, shape: tuple[int, int, int]) -> str:
        if name in self.nodes:
            raise AssertionError(f"duplicate NIR node {name}")
        self.nodes[name] = node
        self.edges.append((src, name))
        self.shapes[name] = shape
        return name

    def conv(self, name: str, conv: nn.Conv2d, norm: nn.Module, src: str) -> str:
        if conv.padding_mode != "zeros":
            raise SpikesegError(f"{name}: padding_mode {conv.padding_mode!r} has no NIR form")
        c, h, w = self.shapes[src]
        with torch.no_grad():
            out = conv(torch.zeros(1, c, h, w, dtype=conv.weight.dtype,
                                   device=conv.weight.device)).shape[1:]
        weight, bias = _folded(conv, norm)
        node = self.nir.Conv2d(
            input_shape=(h, w), weight=_np(weight), stride=tuple(conv.stride),
            padding=tuple(conv.padding), dilation=tuple(conv.dilation), groups=conv.groups,
            bias=_np(bias), metadata={"spikeseg_module": name},
        )
        return self._add(name, node, src, tuple(out))

    def neuron(self, name: str, act: LIF, src: str) -> str:
        shape = self.shapes[src]
        p = lif_parameters(act.leak, act.threshold, self.dt)

        def full(v: float) -> np.ndarray:  # float64: the reader's 1 − dt/τ then rounds to λ
            return np.full(shape, v, dtype=np.float64)

        meta = {"spikeseg_module": name, "leak": act.leak, "threshold": act.threshold,
                "reset": act.reset}
        if p["type"] == "IF":
            node = self.nir.IF(r=full(p["r"]), v_threshold=full(p["v_threshold"]),
                               v_reset=full(0.0), metadata=meta)
        else:
            node = self.nir.LIF(tau=full(p["tau"]), r=full(p["r"]), v_leak=full(0.0),
                                v_threshold=full(p["v_threshold"]), v_reset=full(0.0),
                                metadata=meta)
        self.neurons.append(name)
        return self._add(name, node, src, shape)

    def block(self, name: str, block: ConvBlock, src: str) -> str:
        return self.neuron(f"{name}.act", block.act, self.conv(f"{name}.conv", block.conv,
                                                                 block.norm, src))

    def avgpool(self, name: str, pool: nn.AvgPool2d, src: str) -> str:
        k, s, p = (_pair(pool.kernel_size), _pair(pool.stride or pool.kernel_size),
                   _pair(pool.padding))
        if not pool.count_include_pad or pool.ceil_mode or pool.divisor_override:
            raise SpikesegError(f"{name}: only count_include_pad average pools map to NIR")
        c, h, w = self.shapes[src]
        out = (c, (h + 2 * p[0] - k[0]) // s[0] + 1, (w + 2 * p[1] - k[1]) // s[1] + 1)
        arrays = dict(kernel_size=np.array(k), stride=np.array(s), padding=np.array(p))
        if self.pool_mode == "avg":
            return self._add(name, self.nir.AvgPool2d(**arrays, metadata={
                "spikeseg_module": name}), src, out)
        summed = self._add(f"{name}.sum", self.nir.SumPool2d(**arrays), src, out)
        scale = self.nir.Scale(scale=np.full(out, 1.0 / (k[0] * k[1]), dtype=np.float32))
        return self._add(f"{name}.scale", scale, summed, out)

    def output(self, name: str, src: str) -> str:
        shape = self.shapes[src]
        return self._add(name, self.nir.Output({"output": np.array(shape)}), src, shape)


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _accumulator_note(model: nn.Module, what: str) -> str:
    """How the logits come from ``what`` over time (the spike accumulator, section 4.3)."""
    lam = float(getattr(model, "readout_leak", 1.0))
    if lam == 1.0:
        return (f"the spike accumulator: logits are the average over the T steps of {what} "
                "(section 4.3; integrate it with NIR I, R = 1/dt, and divide by T)")
    return (f"the leaky output accumulator (readout_leak = {lam}): logits are "
            f"sum_t {lam}^(S-1-t) x_t over the S steps of {what}, divided by "
            f"(T/S)·sum_t {lam}^t (integrate it with NIR LI, 1 - dt/tau = {lam}, r = tau/dt)")


def _deeplab_graph(model: DeepLabVGG9, g: _GraphBuilder) -> dict[str, Any]:
    x = "input"
    for prefix, layers in (("features", model.features), ("classifier", model.classifier)):
        for i, layer in enumerate(layers):
            name = f"{prefix}.{i}"
            if isinstance(layer, ConvBlock):
                x = g.block(name, layer, x)
            elif isinstance(layer, nn.AvgPool2d):
                x = g.avgpool(name, layer, x)
            else:
                raise SpikesegError(f"{name}: {type(layer).__name__} has no NIR form")
    x = g.conv("output", model.output, nn.Identity(), x)
    g.output("out", x)
    h, w = g.shapes["input"][1:]
    return {
        "outputs": {"out": "current of the output 1x1 convolution at each step, "
                           f"[classes, H/4, W/4] = {list(g.shapes['out'])}"},
        "left_out": [
            _accumulator_note(model, "the output current 'out'"),
            f"the bilinear upsampling (align_corners=True) of that average to the input size "
            f"{h}x{w}",
        ],
    }


def _fcn_graph(model: FCNVGG9, g: _GraphBuilder) -> dict[str, Any]:
    x = "input"
    stages = [("stage1", model.stage1, "score1"), ("stage2", model.stage2, "score2"),
              ("stage3", model.stage3, "score3"), ("classifier", model.classifier, "score4")]
    outputs = {}
    for k, (stage, blocks, score) in enumerate(stages):
        if k:
            x = g.avgpool(f"avgpool.{k}", model.avgpool, x)
        for i, block in enumerate(blocks):
            x = g.block(f"{stage}.{i}", block, x)
        s = g.conv(score, getattr(model, score), nn.Identity(), x)
        g.output(f"out.{score}", s)
        outputs[f"out.{score}"] = (f"current of the skip score {score} (1x1 convolution of "
                                   f"{stage}'s spikes) at each step, {list(g.shapes[s])}")
    return {
        "outputs": outputs,
        "left_out": [
            "the decoder, which has no NIR primitive: transposed convolutions up1, up2, up3 "
            "(classes -> classes, kernel 3, stride 2, no bias) and the bilinear resizes "
            "(align_corners=True) to each skip's resolution",
            "the sums u1 = resize(up1(score4)) + score3 and u2 = resize(up2(u1)) + score2, and "
            "their LIF layers up1_act and up2_act (eqs. (2)-(3), as the encoder's)",
            "the output resize(up3(u2)) + score1, resized to the input size; "
            + _accumulator_note(model, "that output"),
        ],
    }


_BUILDERS: dict[type, Callable[[nn.Module, _GraphBuilder], dict[str, Any]]] = {
    DeepLabVGG9: _deeplab_graph,
    FCNVGG9: _fcn_graph,
}
"""Graph builder per architecture class (a model family not here is refused)."""


def _input_notes(model: nn.Module) -> list[str]:
    enc = getattr(model, "encoding", "poisson")
    mean = getattr(model, "input_mean", None)
    notes = []
    if enc == "direct":
        notes.append("input coding: a static image enters as itself at every step (direct "
                     "coding, clamped to [0, 1]" + (" after subtracting input_mean" if mean
                                                      else "") + "); feed it as T frames")
    else:
        signed = enc == "poisson_signed"
        notes.append(
            "input coding: static images are Poisson rate-coded outside the graph "
            + ("(signed spikes -1/0/+1 of the image minus input_mean) " if signed else "")
            + "into T frames; event frames enter as they are"
        )
    return notes


def to_nir(
    model: nn.Module,
    input_size: int | Sequence[int],
    *,
    dt: float = DEFAULT_DT,
    pool: str = "avg",
    name: str | None = None,
    timesteps: int | None = None,
) -> tuple[Any, dict[str, Any]]:
    """The NIR graph of a spiking model, and a summary of what it holds and leaves out.

    Args:
        model: a hard-reset ``spiking_deeplab`` or ``spiking_fcn`` with ``norm`` ``bn``,
            ``tdbn`` or ``none`` (evaluation-mode statistics are folded).
        input_size: ``H`` or ``(H, W)`` of the input frames, in pixels.
        dt: the reader's Euler step (see :func:`lif_parameters`), stored in the metadata.
        pool: ``"avg"`` (NIR ``AvgPool2d``) or ``"sum"`` (``SumPool2d`` then ``Scale(1/9)``).
        name: the model's registry name, for the metadata (default: from its class).
        timesteps: the number of steps recorded as the graph's suggestion (default: the
            model's ``timesteps``); the graph itself has no fixed T.

    Returns:
        ``(graph, summary)``: a ``nir.NIRGraph`` (type-checked) and a JSON-serialisable dict
        with ``model``, ``dt``, ``input_shape``, ``outputs``, ``neuron_layers``,
        ``parameter_mapping``, ``folded`` and ``left_out``.

    Raises:
        SpikesegError: a model NIR cannot express (see :func:`check_exportable`), a bad
            option, or ``nir`` not installed.
    """
    check_exportable(model)
    nir = require_nir()
    if pool not in POOLS:
        raise SpikesegError(f"pool must be one of {POOLS}, not {pool!r}")
    h, w = parse_input_size(input_size)
    T = int(timesteps or model.timesteps)
    if T < 1:
        raise SpikesegError(f"timesteps must be >= 1, got {timesteps}")
    g = _GraphBuilder(nir, (model.in_channels, h, w), float(dt), pool)
    was_training = model.training
    model.eval()
    try:
        parts = _BUILDERS[type(model)](model, g)
    finally:
        model.train(was_training)
    acts = [m for _, m in model.neurons()]
    mapping = sorted({(a.leak, a.threshold) for a in acts})
    label = name or model_label(model)
    summary = {
        "format": "nir",
        "model": label,
        "dt": float(dt),
        "timesteps": T,
        "input_shape": [model.in_channels, h, w],
        "outputs": parts["outputs"],
        "neuron_layers": g.neurons,
        "parameter_mapping": [
            {"leak": lk, "threshold": th, **lif_parameters(lk, th, float(dt))}
            for lk, th in mapping
        ],
        "folded": (f"{model.norm} batch norm folded into each convolution (W' = a*W, "
                   "b' = a*bias + b)" if model.norm in ("bn", "tdbn")
                   else "no norm: convolutions keep their bias"),
        "left_out": _input_notes(model) + parts["left_out"],
        "nodes": len(g.nodes),
    }
    metadata = {
        "format": FORMAT,
        "spikeseg_version": __version__,
        "model": label,
        "dt": float(dt),
        "discretisation": "forward Euler with step dt: v[t] = (1 - dt/tau) v[t-1] "
                          "+ (dt/tau) (v_leak + R I[t]); reset to v_reset where v > v_threshold",
        "timesteps": T,
        "left_out": "\n".join(summary["left_out"]),
        "outputs": "\n".join(f"{k}: {v}" for k, v in parts["outputs"].items()),
        "summary_json": json.dumps(summary),
    }
    graph = nir.NIRGraph(nodes=g.nodes, edges=g.edges, metadata=metadata)
    return graph, summary


def write_nir(
    model: nn.Module,
    path: str | Path,
    input_size: int | Sequence[int],
    *,
    dt: float = DEFAULT_DT,
    pool: str = "avg",
    name: str | None = None,
    timesteps: int | None = None,
) -> dict[str, Any]:
    """Write ``model`` as a NIR file (HDF5, ``nir.write``) and return the summary.

    See :func:`to_nir` for the arguments; the summary gains ``path``. ``nir.read(path)``
    gives the graph back.
    """
    graph, summary = to_nir(model, input_size, dt=dt, pool=pool, name=name,
                            timesteps=timesteps)
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        require_nir().write(path, graph)
    except OSError as e:
        raise SpikesegError(f"cannot write {path}: {e.strerror or e}") from None
    return {**summary, "path": str(path)}


# --------------------------------------------------------------------------------------------
# Reference reader
# --------------------------------------------------------------------------------------------


def _t(a, dtype=torch.float32) -> Tensor:
    return torch.as_tensor(np.asarray(a), dtype=dtype)


def _topological(nodes: dict, edges: list[tuple[str, str]]) -> list[str]:
    indeg = {n: 0 for n in nodes}
    for _, b in edges:
        indeg[b] += 1
    ready = [n for n in nodes if indeg[n] == 0]
    order = []
    while ready:
        n = ready.pop(0)
        order.append(n)
        for a, b in edges:
            if a == n:
                indeg[b] -= 1
                if indeg[b] == 0:
                    ready.append(b)
    if len(order) != len(nodes):
        raise SpikesegError("simulate() reads feed-forward NIR graphs only (this one has a cycle)")
    return order


def simulate(
    graph: Any, frames: Tensor, *, dt: float | None = None, record: bool = False
) -> dict[str, Tensor]:
    """Run a feed-forward NIR graph by forward Euler: a small reference reader.

    Neurons follow NIR's equations integrated with step ``dt``, written as the update a
    discrete reader applies (``β = 1 − dt/τ`` and ``w = R·dt/τ`` computed in float64)::

        LIF: v = β·v + w·I + (dt/τ)·v_leak;  z = (v > v_threshold);  v = v_reset where z
        IF:  v = v + dt·R·I;                 (same threshold and reset)
        LI:  v = β·v + w·I + (dt/τ)·v_leak   I (integrator): v = v + dt·R·I

    ``Conv2d`` is a zero-padded convolution, ``SumPool2d`` a zero-padded window sum,
    ``AvgPool2d`` that sum divided by the kernel's area (NIR: SumPooling then Scale) and
    ``Scale`` an elementwise product. A node fed by several edges gets their sum.

    Args:
        graph: a ``nir.NIRGraph`` with one ``Input``.
        frames: input ``[T, B, *input_shape]``.
        dt: Euler step (default: the graph's ``metadata["dt"]``, else 1e-4).
        record: also return every node's output (keyed by node name).

    Returns:
        ``{output node name: [T, B, ...]}`` (plus every node with ``record=True``).
    """
    nir = require_nir()
    if dt is None:
        dt = float(graph.metadata.get("dt", DEFAULT_DT)) if isinstance(graph.metadata, dict) \
            else DEFAULT_DT
    inputs = [k for k, n in graph.nodes.items() if isinstance(n, nir.Input)]
    if len(inputs) != 1:
        raise SpikesegError(f"simulate() needs a graph with one Input node, found {len(inputs)}")
    order = _topological(graph.nodes, graph.edges)
    preds = {k: [a for a, b in graph.edges if b == k] for k in graph.nodes}
    steps = _compile(graph.nodes, nir, float(dt), frames.dtype)
    state: dict[str, Tensor | None] = {k: None for k in graph.nodes}
    keep = {k for k, n in graph.nodes.items() if isinstance(n, nir.Output)} | (
        set(graph.nodes) if record else set())
    out: dict[str, list[Tensor]] = {k: [] for k in keep}
    for frame in frames.unbind(0):
        values: dict[str, Tensor] = {}
        for k in order:
            if k == inputs[0]:
                y = frame
            else:
                srcs = [values[p] for p in preds[k]]
                x = srcs[0]
                for s in srcs[1:]:
                    x = x + s
                y, state[k] = steps[k](x, state[k])
            values[k] = y
            if k in keep:
                out[k].append(y)
    return {k: torch.stack(v) for k, v in out.items()}


def _compile(nodes: dict, nir, dt: float, dtype) -> dict[str, Callable]:
    """One ``(x, state) -> (y, state)`` function per non-input node."""
    fns: dict[str, Callable] = {}
    for k, n in nodes.items():
        if isinstance(n, nir.Input):
            continue
        fns[k] = _node_fn(n, nir, dt, dtype, k)
    return fns


def _node_fn(n, nir, dt: float, dtype, name: str) -> Callable:
    if isinstance(n, nir.Output):
        return lambda x, s: (x, None)
    if isinstance(n, nir.Conv2d):
        w, b = _t(n.weight, dtype), _t(n.bias, dtype)
        pad = n.padding if isinstance(n.padding, str) else tuple(int(v) for v in
                                                                  np.atleast_1d(n.padding))
        kw = dict(stride=tuple(int(v) for v in np.atleast_1d(n.stride)), padding=pad,
                  dilation=tuple(int(v) for v in np.atleast_1d(n.dilation)),
                  groups=int(n.groups))
        return lambda x, s: (F.conv2d(x, w, b, **kw), None)
    if isinstance(n, (nir.SumPool2d, nir.AvgPool2d)):
        k = tuple(int(v) for v in np.atleast_1d(n.kernel_size))
        k = k * 2 if len(k) == 1 else k
        st = tuple(int(v) for v in np.atleast_1d(n.stride))
        p = tuple(int(v) for v in np.atleast_1d(n.padding))
        div = 1 if isinstance(n, nir.SumPool2d) else None  # avg: sum / (kh·kw)
        return lambda x, s: (F.avg_pool2d(x, k, st, p, count_include_pad=True,
                                          divisor_override=div), None)
    if isinstance(n, nir.Scale):
        sc = _t(n.scale, dtype)
        return lambda x, s: (x * sc, None)
    if isinstance(n, (nir.LIF, nir.LI)):
        tau = np.asarray(n.tau, dtype=np.float64)
        beta = _t(1.0 - dt / tau, dtype)
        wgt = _t(np.asarray(n.r, dtype=np.float64) * dt / tau, dtype)
        leak = np.asarray(n.v_leak, dtype=np.float64) * dt / tau
        c = _t(leak, dtype) if np.any(leak != 0) else None
        spiking = isinstance(n, nir.LIF)
        th = _t(n.v_threshold, dtype) if spiking else None
        vr = _t(n.v_reset, dtype) if spiking else None

        def lif(x: Tensor, v: Tensor | None):
            v = wgt * x if v is None else beta * v + wgt * x  # v[-1] = 0
            if c is not None:
                v = v + c
            if not spiking:
                return v, v
            z = (v > th).to(x.dtype)
            return z, torch.where(z.bool(), vr, v)

        return lif
    if isinstance(n, (nir.IF, nir.I)):
        gain = _t(np.asarray(n.r, dtype=np.float64) * dt, dtype)
        spiking = isinstance(n, nir.IF)
        th = _t(n.v_threshold, dtype) if spiking else None
        vr = _t(n.v_reset, dtype) if spiking else None

        def integrate(x: Tensor, v: Tensor | None):
            v = gain * x if v is None else v + gain * x
            if not spiking:
                return v, v
            z = (v > th).to(x.dtype)
            return z, torch.where(z.bool(), vr, v)

        return integrate
    raise SpikesegError(f"simulate() does not read NIR {type(n).__name__} (node {name})")
