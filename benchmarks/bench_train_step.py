"""One training step of Spiking-DeepLab (Table 1: VGG9, BNTT + LIF) in spikeseg, and the same
network written with snnTorch and with SpikingJelly neurons (``_peers.py``).

A step is: forward on pre-encoded Poisson spikes ``[T, B, 3, H, W]``, cross-entropy against
random labels, backward, Adam step. Every implementation gets the same input, the same labels,
the same weights (copied from one seeded spikeseg model), the same parameter count and the same
memory format (channels-last on CPU unless ``--channels-last off``). Each runs in a fresh
subprocess: a priming step, 1 warm-up step, then ``--repeats`` timed rounds (median reported);
peak memory above the model, optimiser and batch (CPU: peak resident set size; CUDA:
``max_memory_allocated``); minor page faults per timed step; achieved GFLOP/s from the
network's multiply-accumulates (spikeseg's ``OpCounter``). With ``--interleave`` the
subprocesses stay alive together and the rounds alternate between them.

Implementations (time layout in brackets):

* ``spikeseg-step`` / ``spikeseg-fold``: ``models.create("spiking_deeplab", step_mode=...)``
  ("step": time outer, layers inner; "fold": T folded into the batch for convolutions);
* ``spikeseg-ckpt``: step mode with time-chunk checkpointing every ``--checkpoint-steps`` K
  steps (exact gradients, one more forward);
* ``spikeseg-sltt`` / ``spikeseg-sltt-k``: step mode with SLTT (Meng et al. 2023: no gradient
  through the membranes over time), and SLTT-K (backward through ``--sltt-k`` random steps);
* ``spikeseg-bf16``: step mode under bf16 autocast (skipped on CPUs without native bfloat16
  unless ``--force-bf16``); ``spikeseg-fast``: bf16 autocast and SLTT-K together;
* ``snntorch-step`` / ``snntorch-fold``: ``snntorch.Leaky`` neurons;
* ``spikingjelly-step`` / ``spikingjelly-fold``: ``LIFNode`` in single-step / multi-step mode
  (multi-step is SpikingJelly's usual layout).

Examples::

    python benchmarks/bench_train_step.py                  # 64×64, T 20, B 16, width 1.0
    python benchmarks/bench_train_step.py --quick          # seconds, to check the script works
    python benchmarks/bench_train_step.py -T 8 -B 8 --inference --conv-ceiling --out t8.json
    python benchmarks/bench_train_step.py --device cuda --out results/train_cuda.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from _common import (
    MALLOC_MODES,
    NEUTRAL_TUNABLES,
    PeakMemory,
    ServedWorker,
    apply_neutral_malloc,
    busy_warning,
    command_line,
    cpu_capability,
    emit_result,
    finish_args,
    fmt_bytes,
    fmt_load,
    fmt_ratio,
    fmt_seconds,
    load_average,
    machine_info,
    malloc_env,
    markdown_table,
    median,
    meminfo_bytes,
    reference_row,
    rss_bytes,
    run_worker,
    select_impls,
    serve,
    sync,
    timed,
    write_json,
)
from _peers import (
    SNNTORCH_RESET_NOTE,
    PeerDeepLab,
    copy_spikeseg_weights,
    make_neuron,
    peer_status,
)
from torch import nn


@dataclass(frozen=True)
class Impl:
    """One row: a framework, a time layout and (spikeseg) an execution variant."""

    label: str
    kind: str  # "spikeseg", "snntorch" or "spikingjelly"
    layout: str  # "step" or "fold"
    variant: str = ""  # spikeseg: "", "ckpt", "sltt", "sltt-k", "bf16" or "bf16-sltt-k"


IMPLS: dict[str, Impl] = {
    "spikeseg-step": Impl("spikeseg, step mode", "spikeseg", "step"),
    "spikeseg-fold": Impl("spikeseg, fold mode", "spikeseg", "fold"),
    "spikeseg-ckpt": Impl("spikeseg, step mode, checkpointing K = {K}", "spikeseg", "step",
                          "ckpt"),
    "spikeseg-sltt": Impl("spikeseg, step mode, SLTT", "spikeseg", "step", "sltt"),
    "spikeseg-sltt-k": Impl("spikeseg, step mode, SLTT-{k}", "spikeseg", "step", "sltt-k"),
    "spikeseg-bf16": Impl("spikeseg, step mode, bf16 autocast", "spikeseg", "step", "bf16"),
    "spikeseg-fast": Impl("spikeseg, step mode, bf16 autocast + SLTT-{k}", "spikeseg", "step",
                          "bf16-sltt-k"),
    "snntorch-step": Impl("snnTorch `Leaky`, step layout", "snntorch", "step"),
    "snntorch-fold": Impl("snnTorch `Leaky`, fold layout", "snntorch", "fold"),
    "spikingjelly-step": Impl("SpikingJelly `LIFNode`, single-step", "spikingjelly", "step"),
    "spikingjelly-fold": Impl("SpikingJelly `LIFNode`, multi-step", "spikingjelly", "fold"),
}
REFERENCE = "spikeseg-step"
"""The row the ratios are taken against (the fastest spikeseg row if it did not run)."""
SAME_EVAL_AS_STEP = ("spikeseg-ckpt", "spikeseg-sltt", "spikeseg-sltt-k")
"""Rows whose no-grad forward is spikeseg-step's code path (checkpointing and SLTT act only
while gradients are recorded), so ``--inference`` does not measure them again."""
BNTT_NOTE = ("BNTT: per-timestep batch norm (one [T, C] scale, no bias, eps 1e-4) in every "
             "implementation; peers use one BatchNorm2d per timestep with the bias removed, "
             "as in the BNTT authors' code")


def peer_of(impl: str) -> str | None:
    kind = IMPLS[impl].kind
    return None if kind == "spikeseg" else kind


def label(impl: str, cfg: dict[str, Any]) -> str:
    return IMPLS[impl].label.format(K=cfg["checkpoint_steps"], k=cfg["sltt_k"])


def precision_of(impl: str) -> str:
    return "bf16" if IMPLS[impl].variant.startswith("bf16") else "fp32"


def step_seed(cfg: dict[str, Any], step: int) -> int:
    """SLTT-K's draw of timesteps for one step (the training loop sets one per step too)."""
    return (cfg["seed"] * 1_000_003 + step) % 2**31


def default_checkpoint_steps(timesteps: int) -> int:
    """K ≈ √T: memory goes as the activations of T/K + K steps (Execution's docstring), least
    at K = √T (4 for T 20, 3 for T 8)."""
    return max(1, round(math.sqrt(timesteps)))


# --------------------------------------------------------------------------------------------
# Models and data
# --------------------------------------------------------------------------------------------


def execution_of(impl: str, cfg: dict[str, Any]):
    """spikeseg's :class:`Execution` for a row (what ``train.*`` sets in the training loop)."""
    from spikeseg.models.base import Execution

    variant = IMPLS[impl].variant
    if variant == "ckpt":
        return Execution(checkpoint_steps=cfg["checkpoint_steps"], bptt="full", sltt_k=None)
    if variant == "sltt":
        return Execution(bptt="sltt", sltt_k=None)
    if variant in ("sltt-k", "bf16-sltt-k"):
        return Execution(bptt="sltt", sltt_k=cfg["sltt_k"])
    return Execution()


def build_model(impl: str, cfg: dict[str, Any]) -> torch.nn.Module:
    """The implementation's network, with the weights of a seeded spikeseg model."""
    from spikeseg import models

    spec = IMPLS[impl]
    torch.manual_seed(cfg["seed"])
    ref = models.create(
        "spiking_deeplab", cfg["classes"], timesteps=cfg["timesteps"], width=cfg["width"],
        step_mode=spec.layout if spec.kind == "spikeseg" else "step",
    )
    if spec.kind == "spikeseg":
        ref.execution = execution_of(impl, cfg)
        return ref
    peer = PeerDeepLab(
        cfg["classes"], lambda: make_neuron(spec.kind), timesteps=cfg["timesteps"],
        width=cfg["width"], layout=spec.layout,
    )
    copy_spikeseg_weights(peer, ref)
    return peer


def make_batch(cfg: dict[str, Any], device: torch.device, batch: int | None = None):
    """Poisson spikes ``[T, B, 3, H, W]`` of random images, and random labels ``[B, H, W]``."""
    g = torch.Generator().manual_seed(cfg["seed"] + 1)
    T, B, S = cfg["timesteps"], batch or cfg["batch"], cfg["size"]
    images = torch.rand(B, 3, S, S, generator=g)
    spikes = (torch.rand(T, B, 3, S, S, generator=g) < images).float()
    labels = torch.randint(0, cfg["classes"], (B, S, S), generator=g)
    return spikes.to(device), labels.to(device)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --------------------------------------------------------------------------------------------
# Operation counts (spikeseg's OpCounter) and the padding taps of each convolution
# --------------------------------------------------------------------------------------------


def _valid_taps(n_in: int, n_out: int, k: int, stride: int, pad: int, dil: int) -> int:
    """Kernel taps, summed over output positions along one axis, that read an input value
    (not zero padding)."""
    return sum(1 for o in range(n_out) for j in range(k) if 0 <= o * stride - pad + j * dil < n_in)


@torch.no_grad()
def network_ops(cfg: dict[str, Any]) -> dict[str, Any]:
    """Multiply-accumulates of the network per image: per timestep for the spiking layers,
    once for the output layer (it runs once, on the time-averaged spikes, in every row)."""
    from spikeseg import models
    from spikeseg.analysis.energy import OpCounter

    torch.manual_seed(cfg["seed"])
    model = models.create("spiking_deeplab", cfg["classes"], timesteps=cfg["timesteps"],
                          width=cfg["width"], step_mode="step").eval()
    shapes: dict[str, tuple] = {}

    def record(name: str):
        def hook(mod: nn.Module, inp: tuple, out: torch.Tensor) -> None:  # returns None:
            shapes.setdefault(name, (tuple(inp[0].shape), tuple(out.shape)))  # output kept
        return hook

    hooks = [m.register_forward_hook(record(name))
             for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    try:
        with OpCounter(model) as oc:
            model(torch.zeros(1, 1, 3, cfg["size"], cfg["size"]))
    finally:
        for h in hooks:
            h.remove()
    modules = dict(model.named_modules())
    head = getattr(model, "output", None)
    layers = []
    for op in oc.layers():
        m = modules[op.name]
        row: dict[str, Any] = {"name": op.name, "kind": op.kind, "macs": op.flops,
                               "head": m is head, "valid_macs": None}
        if isinstance(m, nn.Conv2d) and op.name in shapes and not isinstance(m.padding, str):
            (_, cin, h_in, w_in), (_, cout, h_out, w_out) = shapes[op.name]
            valid = (_valid_taps(h_in, h_out, m.kernel_size[0], m.stride[0], m.padding[0],
                                 m.dilation[0])
                     * _valid_taps(w_in, w_out, m.kernel_size[1], m.stride[1], m.padding[1],
                                   m.dilation[1]))
            row.update(valid_macs=valid * cin * cout // m.groups, in_channels=cin,
                       out_channels=cout, kernel=list(m.kernel_size), stride=list(m.stride),
                       padding=list(m.padding), dilation=list(m.dilation), groups=m.groups,
                       height=h_in, width=w_in)
        layers.append(row)
    body = sum(r["macs"] for r in layers if not r["head"])
    head_macs = sum(r["macs"] for r in layers if r["head"])
    valid = None if any(r["valid_macs"] is None for r in layers) else \
        sum(r["valid_macs"] for r in layers if not r["head"])
    T, B = cfg["timesteps"], cfg["batch"]
    forward = B * (T * body + head_macs)
    return {
        "counter": "spikeseg.analysis.energy.OpCounter (dense MACs, eq. (9))",
        "layers": layers, "macs_per_image_step": body, "valid_macs_per_image_step": valid,
        "head_macs_per_image": head_macs, "forward_macs_per_batch": forward,
        "flops_per_mac": 2,
        "train_flops_per_step": 2 * 3 * forward,  # forward + backward (≈ 2 forwards)
        "inference_flops_per_batch": 2 * forward,
    }


# --------------------------------------------------------------------------------------------
# Timing one implementation (normally in its own process)
# --------------------------------------------------------------------------------------------

_ALLOCATOR_SET_IN_PROCESS = False


def setup_allocator(cfg: dict[str, Any]) -> str:
    """Apply ``--malloc`` in this process where it is up to the process; say what holds."""
    global _ALLOCATOR_SET_IN_PROCESS
    from spikeseg.runtime import configure_allocator, resolve_allocator

    if cfg["malloc"] == "neutral":
        if not cfg["isolated"]:
            return "mallopt(M_MMAP_MAX=0, M_TRIM_THRESHOLD=2 GiB - 1) for the whole process"
        tunables = os.environ.get("GLIBC_TUNABLES", "")
        return f"GLIBC_TUNABLES={tunables}" if tunables else "GLIBC_TUNABLES not set (?)"
    if IMPLS[cfg["impl"]].kind == "spikeseg":
        # What `spikeseg train` applies with train.allocator=auto: keep, or lean when
        # checkpointing is on.
        ck = cfg["checkpoint_steps"] if IMPLS[cfg["impl"]].variant == "ckpt" else 0
        mode = resolve_allocator("auto", ck)
        if configure_allocator("auto", ck):
            _ALLOCATOR_SET_IN_PROCESS = True
            return (f"spikeseg.runtime.configure_allocator() applied as `spikeseg train` does "
                    f"(train.allocator=auto: {mode})")
        return "configure_allocator() not applied (SPIKESEG_MALLOC=default or not glibc)"
    if _ALLOCATOR_SET_IN_PROCESS:
        return "configured by an earlier spikeseg row of this process (in-process run)"
    return "glibc defaults"


class Runner:
    """One implementation, built, primed and warmed up; then timed rounds on request."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        from spikeseg.runtime import minor_faults

        self.cfg = cfg
        self.faults = minor_faults
        self.allocator = setup_allocator(cfg)
        torch.set_num_threads(cfg["threads"])
        self.device = device = torch.device(cfg["device"])
        self.precision = precision_of(cfg["impl"])
        self.sltt_k = IMPLS[cfg["impl"]].variant.endswith("sltt-k")
        self.steps = 0
        model = build_model(cfg["impl"], cfg).to(device)
        if cfg["channels_last"]:
            model = model.to(memory_format=torch.channels_last)
        self.model = model.train()
        self.params = count_parameters(model)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

        # Prime (forward + backward at batch 1, two timesteps, no optimiser step) so that
        # loading kernels and starting thread pools is not counted as memory of the step.
        xs, ys = make_batch(cfg, device, batch=1)
        self._loss(xs[:2], ys).backward()
        self.optimizer.zero_grad(set_to_none=True)
        if cfg["inference"]:
            self._infer(xs[:2])
        del xs, ys

        self.x, self.y = make_batch(cfg, device)
        self.mem = PeakMemory(device)
        self.mem.start()
        self.first_loss: float | None = None
        self.train: dict[str, list[float]] = {k: [] for k in
                                              ("forward_s", "backward_s", "optimizer_s",
                                               "total_s", "faults")}
        self.inference_s: list[float] = []
        self.inference_warm = False
        for _ in range(cfg["warmup"]):
            self._step()

    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        from spikeseg.runtime import autocast

        if self.sltt_k:
            self.model.execution.seed = step_seed(self.cfg, self.steps)
        self.steps += 1
        with autocast(self.precision, self.device):
            return F.cross_entropy(self.model(x).float(), y)

    def _step(self) -> dict[str, float]:
        d, opt = self.device, self.optimizer
        opt.zero_grad(set_to_none=True)
        f0 = self.faults()
        sync(d)
        t0 = time.perf_counter()
        loss = self._loss(self.x, self.y)
        sync(d)
        t1 = time.perf_counter()
        loss.backward()
        sync(d)
        t2 = time.perf_counter()
        opt.step()
        sync(d)
        t3 = time.perf_counter()
        faults = self.faults() - f0
        if self.first_loss is None:
            self.first_loss = loss.item()
        del loss
        return {"forward_s": t1 - t0, "backward_s": t2 - t1, "optimizer_s": t3 - t2,
                "total_s": t3 - t0, "faults": faults}

    def _infer(self, x: torch.Tensor) -> float:
        from spikeseg.runtime import autocast

        self.model.eval()
        try:
            with torch.no_grad(), autocast(self.precision, self.device):
                _, seconds = timed(lambda: self.model(x), self.device)
        finally:
            self.model.train()
        return seconds

    def train_round(self) -> dict[str, float]:
        r = self._step()
        for k, v in r.items():
            self.train[k].append(v)
        return r

    def infer_round(self) -> dict[str, float]:
        if not self.inference_warm:
            for _ in range(self.cfg["warmup"]):
                self._infer(self.x)
            self.inference_warm = True
        s = self._infer(self.x)
        self.inference_s.append(s)
        return {"inference_s": s}

    def status(self) -> dict[str, Any]:
        rss, hwm = rss_bytes()
        return {"ready": True, "rss_bytes": rss, "peak_rss_bytes": hwm}

    def finish(self) -> dict[str, Any]:
        tr = self.train
        out = {
            "impl": self.cfg["impl"], "parameters": self.params, "allocator": self.allocator,
            "precision": self.precision,
            "forward_s": tr["forward_s"], "backward_s": tr["backward_s"],
            "optimizer_s": tr["optimizer_s"], "total_s": tr["total_s"],
            "faults_per_step": tr["faults"],
            "median_forward_s": median(tr["forward_s"]),
            "median_backward_s": median(tr["backward_s"]),
            "median_optimizer_s": median(tr["optimizer_s"]),
            "median_total_s": median(tr["total_s"]),
            "median_faults_per_step": median(tr["faults"]),
            "peak_bytes": self.mem.peak(), "memory_method": self.mem.method,
            "first_loss": self.first_loss,
        }
        if self.inference_s:
            out.update(inference_s=self.inference_s,
                       median_inference_s=median(self.inference_s))
        return out


def measure(cfg: dict[str, Any]) -> dict[str, Any]:
    """All rounds of one implementation, one after another (one subprocess, or in-process)."""
    r = Runner(cfg)
    for _ in range(cfg["repeats"]):
        r.train_round()
    if cfg["inference"]:
        for _ in range(cfg["repeats"]):
            r.infer_round()
    return r.finish()


def serve_runner(cfg: dict[str, Any]) -> None:
    """Worker side of ``--interleave``: build and warm up, then one round per command."""
    r = Runner(cfg)
    serve({"train": lambda a: r.train_round(), "infer": lambda a: r.infer_round(),
           "finish": lambda a: r.finish()}, r.status())


# --------------------------------------------------------------------------------------------
# fp32 convolution ceiling: the network's 3×3 convolutions alone, at batch B
# --------------------------------------------------------------------------------------------


def conv_ceiling(cfg: dict[str, Any]) -> dict[str, Any]:
    """Forward and forward + backward (input and weight gradients) time of each 3×3
    convolution of the network, alone, on random input of the layer's shape."""
    torch.set_num_threads(cfg["threads"])
    device = torch.device(cfg["device"])
    torch.manual_seed(cfg["seed"])
    B, n, warm = cfg["batch"], cfg["repeats"], cfg["warmup"]
    rows = []
    for L in cfg["layers"]:
        conv = nn.Conv2d(L["in_channels"], L["out_channels"], tuple(L["kernel"]),
                         tuple(L["stride"]), tuple(L["padding"]), tuple(L["dilation"]),
                         L["groups"], bias=False).to(device)
        x = torch.randn(B, L["in_channels"], L["height"], L["width"], device=device)
        if cfg["channels_last"]:
            conv = conv.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            fwd = [timed(lambda c=conv, x=x: c(x), device)[1] for _ in range(warm + n)][warm:]
            g = torch.randn_like(conv(x))
        xg = x.clone().requires_grad_()

        def fwd_bwd(c=conv, xg=xg, g=g) -> None:
            c.weight.grad = None
            xg.grad = None
            c(xg).backward(g)

        both = [timed(fwd_bwd, device)[1] for _ in range(warm + n)][warm:]
        rows.append({"name": L["name"], "forward_s": median(fwd), "train_s": median(both),
                     "forward_all_s": fwd, "train_all_s": both})
        del conv, x, xg, g
    return {"task": "conv_ceiling", "batch": B, "layers": rows}


# --------------------------------------------------------------------------------------------
# Equivalence check (small size, in-process): logits of each row against spikeseg step mode
# --------------------------------------------------------------------------------------------


def check_equivalence(impls: list[str], cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Train-mode logits, computed with gradients enabled so that checkpointing and SLTT take
    their training paths (bf16 rows under autocast)."""
    from spikeseg.runtime import autocast

    cpu = torch.device("cpu")
    x, _ = make_batch(cfg, cpu)
    out = {}
    for impl in [REFERENCE, *[i for i in impls if i != REFERENCE]]:
        model = build_model(impl, cfg).train()  # train mode: batch statistics, as in the step
        if IMPLS[impl].variant.endswith("sltt-k"):
            model.execution.seed = step_seed(cfg, 0)
        with torch.enable_grad(), autocast(precision_of(impl), cpu):
            logits = model(x)
        out[impl] = (logits.detach().float(), count_parameters(model))
        del model, logits
    ref, _ = out[REFERENCE]
    rows = []
    for impl in impls:
        logits, n = out[impl]
        rows.append({
            "impl": impl, "parameters": n,
            "max_abs_logit_diff": float((logits - ref).abs().max()),
            "max_abs_logit": float(ref.abs().max()),
            "argmax_agreement": float((logits.argmax(1) == ref.argmax(1)).float().mean()),
        })
    return rows


# --------------------------------------------------------------------------------------------
# Driving the measurements
# --------------------------------------------------------------------------------------------


def bf16_skip_reason(device: torch.device, force: bool) -> str | None:
    """Why the bf16 row is not run here (None: run it)."""
    from spikeseg.errors import SpikesegError
    from spikeseg.runtime import check_precision, native_bf16

    if device.type == "cpu" and not native_bf16():
        if force:
            return None
        return (f"no native bfloat16 on this CPU (capability "
                f"{torch.backends.cpu.get_cpu_capability()}; needs AVX512-BF16 or AMX)")
    try:
        check_precision("bf16", device)
    except SpikesegError as e:
        return str(e)
    return None


def run_sequential(impls: list[str], cfgs: dict[str, dict[str, Any]], args,
                   env: dict[str, str]) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for impl in impls:
        print(f"… {impl}", file=sys.stderr, flush=True)
        if args.isolate:
            results[impl] = run_worker(__file__, cfgs[impl], timeout=args.timeout, env=env)
        else:
            try:
                results[impl] = measure(cfgs[impl])
            except Exception as e:  # report and go on with the others
                results[impl] = {"error": f"{type(e).__name__}: {e}"}
    return results


def run_interleaved(impls: list[str], cfgs: dict[str, dict[str, Any]], args,
                    env: dict[str, str]) -> tuple[dict[str, dict[str, Any]] | None, str | None]:
    """One live worker per implementation; each round runs one step of each, in an order
    rotated every round. ``(None, why)`` when memory runs short before the rounds start."""
    workers: dict[str, ServedWorker] = {}
    results: dict[str, dict[str, Any]] = {}
    biggest = 0
    try:
        for impl in impls:
            avail = meminfo_bytes("MemAvailable")
            need = 2 * biggest + (1 << 30)
            if avail is not None and biggest and avail < need:
                return None, (f"interleaving stopped before {impl}: {fmt_bytes(avail)} "
                              f"available, {fmt_bytes(need)} wanted (2 × the largest worker's "
                              "peak + 1 GiB) with the workers started so far kept alive")
            print(f"… starting {impl}", file=sys.stderr, flush=True)
            w = ServedWorker(__file__, cfgs[impl], env=env)
            ready = w.receive(timeout=args.timeout)
            if "error" in ready:
                results[impl] = ready
                w.close()
                continue
            workers[impl] = w
            biggest = max(biggest, ready.get("peak_rss_bytes") or 0)
        live = list(workers)
        phases = ["train"] + (["infer"] if args.inference else [])
        for phase in phases:
            for r in range(args.repeats):
                order = live[r % len(live):] + live[:r % len(live)] if live else []
                print(f"… {phase} round {r + 1}/{args.repeats}", file=sys.stderr, flush=True)
                for impl in order:
                    if phase == "infer" and not cfgs[impl]["inference"]:
                        continue
                    ans = workers[impl].request(phase, timeout=args.timeout)
                    if "error" in ans:
                        results[impl] = ans
                        live.remove(impl)
        for impl in live:
            results[impl] = workers[impl].request("finish", timeout=args.timeout)
    finally:
        for w in workers.values():
            w.close()
    return {i: results[i] for i in impls if i in results}, None


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def fmt_count(x: float | None) -> str:
    if x is None or x != x:
        return "–"
    if x >= 1e6:
        return f"{x / 1e6:.2f} M"
    if x >= 1e4:
        return f"{x / 1e3:.0f} k"
    return f"{x:.0f}"


def fmt_macs(x: float) -> str:
    return f"{x / 1e9:.3f} GMAC" if x >= 1e9 else f"{x / 1e6:.1f} MMAC"


def fmt_rate(x: float | None, digits: int = 1) -> str:
    return "–" if x is None or x != x else f"{x:.{digits}f}"


def logits_cell(impl: str, checks: dict[str, dict[str, Any]]) -> str:
    if impl == REFERENCE:
        return "—"
    r = checks.get(impl)
    if r is None:
        return "–"
    d = r["max_abs_logit_diff"]
    if d == 0.0:
        return "yes"
    if d <= 1e-4 * max(1.0, r["max_abs_logit"]):
        return f"yes (Δ {d:.0e})"
    if IMPLS[impl].kind == "snntorch":
        return "no¹"
    return f"no (Δ {d:.1e})"


def not_run(r: dict[str, Any]) -> str | None:
    if "skipped" in r:
        return "skipped: " + r["skipped"]
    if "error" in r:
        return "failed: " + r["error"][:160]
    return None


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-T", "--timesteps", type=int, default=20)
    p.add_argument("-B", "--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=64, help="image height = width")
    p.add_argument("--width", type=float, default=1.0, help="channel multiplier")
    p.add_argument("--classes", type=int, default=21)
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--threads", type=int, default=None,
                   help=f"torch threads (default: torch's default, {torch.get_num_threads()} "
                        "here; 1 with --quick)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    p.add_argument("--channels-last", choices=("auto", "on", "off"), default="auto",
                   help="memory format of every model: auto = channels-last on CPU only "
                        "(what spikeseg's engine does)")
    p.add_argument("--impls", default=",".join(IMPLS),
                   help="comma-separated subset of: " + ", ".join(IMPLS))
    p.add_argument("--checkpoint-steps", type=int, default=None, metavar="K",
                   help="spikeseg-ckpt: time-chunk length K (default round(√T): 4 for T 20, "
                        "3 for T 8)")
    p.add_argument("--sltt-k", type=int, default=2, metavar="K",
                   help="spikeseg-sltt-k: timesteps backpropagated per step (default 2)")
    p.add_argument("--force-bf16", action="store_true",
                   help="run spikeseg-bf16 even on a CPU without native bfloat16 (emulated)")
    p.add_argument("--malloc", choices=MALLOC_MODES, default="default",
                   help="default: environment untouched, the spikeseg rows call "
                        "spikeseg.runtime.configure_allocator() as the CLI does; neutral: "
                        f"every row under GLIBC_TUNABLES={NEUTRAL_TUNABLES} "
                        "(and SPIKESEG_MALLOC=default)")
    p.add_argument("--inference", action="store_true",
                   help="also time a no-grad eval-mode forward of the same batch")
    p.add_argument("--conv-ceiling", action="store_true",
                   help="also time the network's 3×3 convolutions alone (oneDNN fp32, batch "
                        "B): the GFLOP/s the convolutions reach by themselves")
    p.add_argument("--interleave", action=argparse.BooleanOptionalAction, default=False,
                   help="keep one worker per implementation alive and alternate the rounds "
                        "between them (all workers' memory at once: fits at T 8 / B 8, not "
                        "at T 20 / B 16 on 24 GB); default: one worker after another")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-check", action="store_true", help="skip the logits check")
    p.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                   help="one subprocess per implementation (default; --quick: in-process)")
    p.add_argument("--timeout", type=float, default=3600.0,
                   help="per implementation (with --interleave: per round), seconds")
    p.add_argument("--quick", action="store_true",
                   help="tiny size (32×32, T3, B2, width 0.125, 2 repeats, in-process, 1 thread)")
    p.add_argument("--out", metavar="FILE.json", help="also write the raw numbers here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.timesteps, args.batch, args.width = 32, 3, 2, 0.125
        args.repeats = min(args.repeats, 2)
    if args.interleave:
        if args.isolate is False:
            p.error("--interleave runs one subprocess per implementation: drop --no-isolate")
        args.isolate = True
    if args.checkpoint_steps is None:
        args.checkpoint_steps = default_checkpoint_steps(args.timesteps)
    for name in ("timesteps", "batch", "size", "repeats", "checkpoint_steps", "sltt_k"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    return finish_args(args)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        cfg = json.loads(args.worker)
        if cfg.get("task") == "conv_ceiling":
            emit_result(conv_ceiling(cfg))
        elif args.serve:
            serve_runner(cfg)
        else:
            emit_result(measure(cfg))
        return 0

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("--device cuda given but CUDA is not available")
    device = torch.device(args.device)
    impls, notes = select_impls(args.impls, list(IMPLS), peer_of, peer_status())
    channels_last = {"on": True, "off": False}.get(args.channels_last,
                                                    args.device.startswith("cpu"))
    load_before = load_average()
    busy = busy_warning(args.threads, args.device)
    if busy:
        notes.append(busy)
    env = malloc_env(args.malloc)
    if args.malloc == "neutral" and not args.isolate:
        apply_neutral_malloc()  # in-process: the environment comes too late

    skipped: dict[str, dict[str, Any]] = {}
    bf16_rows = [i for i in impls if precision_of(i) == "bf16"]
    if bf16_rows:
        why = bf16_skip_reason(device, args.force_bf16)
        if why:
            for i in bf16_rows:
                skipped[i] = {"skipped": why}
            notes.append(f"{', '.join(bf16_rows)} skipped: {why}; spikeseg refuses "
                         "train.precision=bf16 there (oneDNN would emulate it, slower than "
                         "fp32); --force-bf16 runs it anyway")
        elif device.type == "cpu" and args.force_bf16:
            from spikeseg.runtime import native_bf16

            if not native_bf16():
                notes.append(f"{', '.join(bf16_rows)} run with --force-bf16 on a CPU without "
                             "native bfloat16: oneDNN emulates it (slower than fp32)")
    run_impls = [i for i in impls if i not in skipped]

    base_cfg = {"timesteps": args.timesteps, "batch": args.batch, "size": args.size,
                "width": args.width, "classes": args.classes, "seed": args.seed,
                "checkpoint_steps": args.checkpoint_steps, "sltt_k": args.sltt_k}
    machine = machine_info(args.threads, args.device)
    title = (f"# One training step of Spiking-DeepLab, {args.size}×{args.size}, T "
             f"{args.timesteps}, B {args.batch}, width {args.width}, {args.classes} classes")
    print(title, file=sys.stderr)
    print(f"running {len(run_impls)} implementations; load average {fmt_load(load_before)}",
          file=sys.stderr, flush=True)

    torch.set_num_threads(args.threads)
    ops = network_ops(base_cfg)

    check_rows: list[dict[str, Any]] = []
    check_cfg = dict(base_cfg, batch=2, size=32, width=min(args.width, 0.25))
    if not args.no_check and run_impls:
        print("… logits check", file=sys.stderr, flush=True)
        check_rows = check_equivalence(run_impls, check_cfg)
    checks = {r["impl"]: r for r in check_rows}

    cfgs = {impl: dict(base_cfg, impl=impl, device=args.device, threads=args.threads,
                       repeats=args.repeats, warmup=args.warmup, channels_last=channels_last,
                       malloc=args.malloc, isolated=args.isolate,
                       inference=args.inference and impl not in SAME_EVAL_AS_STEP)
            for impl in run_impls}
    interleaved = bool(args.interleave and len(run_impls) > 1)
    results: dict[str, dict[str, Any]] | None = None
    if interleaved:
        results, why = run_interleaved(run_impls, cfgs, args, env)
        if results is None:
            notes.append(f"{why}; measured one worker after another instead")
            interleaved = False
    if results is None:
        results = run_sequential(run_impls, cfgs, args, env)

    ceiling: dict[str, Any] | None = None
    if args.conv_ceiling:
        layers = [r for r in ops["layers"] if r.get("kernel") == [3, 3]]
        ccfg = {"task": "conv_ceiling", "layers": layers, "batch": args.batch,
                "threads": args.threads, "device": args.device, "seed": args.seed,
                "channels_last": channels_last, "repeats": max(3, args.repeats),
                "warmup": max(1, args.warmup)}
        print("… convolution ceiling", file=sys.stderr, flush=True)
        if args.isolate:
            ceiling = run_worker(__file__, ccfg, timeout=args.timeout, env=env)
        else:
            ceiling = conv_ceiling(ccfg)
    load_after = load_average()
    busy = busy_warning(args.threads, args.device)
    if busy:
        notes.append("at the end: " + busy)

    all_results = {i: (skipped.get(i) or results.get(i) or {"error": "not measured"})
                   for i in impls}
    base_name, base = reference_row(all_results, REFERENCE)
    ok = {k: v for k, v in all_results.items() if not_run(v) is None}

    # ---- the report (Markdown, ready to paste) ----------------------------------------------
    cfg0 = dict(base_cfg)
    print(title + "\n")
    gpu = f" ({machine['gpu']})" if "gpu" in machine else ""
    mem_total = machine.get("memory_total_bytes")
    print(f"**Machine:** {machine['cpu_model']}, {machine['cpus_usable']} usable cores"
          f"{', ' + fmt_bytes(mem_total) + ' RAM' if mem_total else ''}, "
          f"{cpu_capability(machine)}, torch {machine['torch_version']}, {args.threads} torch "
          f"thread{'s' if args.threads != 1 else ''}, device {args.device}{gpu}; load average (1/5/15 min) "
          f"{fmt_load(load_before)} before, {fmt_load(load_after)} after.\n")
    if interleaved:
        layout = ("rounds interleaved: one worker process per implementation, all alive "
                  "together; each round runs one step of each, in an order rotated every round")
    elif args.isolate:
        layout = ("each implementation in its own subprocess, one after another (not "
                  "interleaved)")
    else:
        layout = "all implementations in this process, one after another (numbers approximate)"
    if args.malloc == "neutral":
        alloc = (f"`--malloc neutral`: every row with glibc told to keep freed memory "
                 f"(`GLIBC_TUNABLES={NEUTRAL_TUNABLES}`, `SPIKESEG_MALLOC=default`)"
                 if args.isolate else
                 "`--malloc neutral` (in-process): `mallopt(M_MMAP_MAX=0, M_TRIM_THRESHOLD)` "
                 "for every row")
    else:
        alloc = ("`--malloc default`: the environment as it was; the spikeseg rows call "
                 "`spikeseg.runtime.configure_allocator()` as `spikeseg train` does with "
                 "`train.allocator=auto` (keep: glibc keeps freed memory, no mmap, no trimming; "
                 "the checkpointing row: lean, every block of 1 MiB or more mapped and unmapped "
                 "on its own), the peer rows run with glibc's defaults")
        if not args.isolate:
            alloc += " (in-process: once a spikeseg row has run, later rows share its setting)"
    print(f"**Settings:** {'channels-last' if channels_last else 'contiguous (NCHW)'} for "
          f"every model; median of {args.repeats} timed round{'s' if args.repeats != 1 else ''} "
          f"after {args.warmup} warm-up step{'s' if args.warmup != 1 else ''}; {layout}; allocator: {alloc}. {BNTT_NOTE}; LIF leak 0.99, θ 1.0, soft "
          "reset, PWL surrogate; Adam (lr 1e-3); the same pre-encoded Poisson input, labels "
          "and weights everywhere.\n")
    valid = ops["valid_macs_per_image_step"]
    print(f"**Work:** {fmt_macs(ops['macs_per_image_step'])} per image and timestep "
          f"(dense, spikeseg's `OpCounter`"
          + (f"; {fmt_macs(valid)} without the taps that read zero padding" if valid else "")
          + f") + {fmt_macs(ops['head_macs_per_image'])} for the output layer per image "
          f"→ {ops['train_flops_per_step'] / 1e9:.4g} GFLOP per training step "
          f"(2 FLOP/MAC × 3 for forward + backward × T {args.timesteps} × B {args.batch}).")
    for n in notes:
        print(f"\nnote: {n}")

    if check_rows:
        print(f"\n## Logits check (train-mode forward with gradients on, 32×32, T "
              f"{args.timesteps}, B 2, width {check_cfg['width']}), against {REFERENCE}\n")
        print(markdown_table(
            ["implementation", "parameters", "max |Δ logit|", "max |logit|", "argmax agrees"],
            [[r["impl"], f"{r['parameters']:,}", f"{r['max_abs_logit_diff']:.2e}",
              f"{r['max_abs_logit']:.2f}", f"{100 * r['argmax_agreement']:.2f}%"]
             for r in check_rows]))

    ref = base_name or REFERENCE
    rows = []
    for impl, r in all_results.items():
        why = not_run(r)
        if why:
            rows.append([label(impl, cfg0), why] + [""] * 9)
            continue
        t = r["median_total_s"]
        rows.append([
            label(impl, cfg0), fmt_seconds(r["median_forward_s"]),
            fmt_seconds(r["median_backward_s"]), f"**{fmt_seconds(t)}**",
            fmt_rate(args.batch / t), fmt_bytes(r["peak_bytes"]),
            fmt_count(r["median_faults_per_step"]),
            fmt_rate(ops["train_flops_per_step"] / t / 1e9),
            fmt_ratio(t / base["median_total_s"]) if base else "–",
            fmt_ratio(r["peak_bytes"] / base["peak_bytes"]) if base and base["peak_bytes"]
            else "–",
            logits_cell(impl, checks),
        ])
    print(f"\n## Training step, {args.size}×{args.size}, T {args.timesteps}, B {args.batch}, "
          f"width {args.width}\n")
    print(markdown_table(
        ["implementation", "forward", "backward", "step", "images/s", "peak memory",
         "faults/step", "GFLOP/s", f"time vs {ref}", f"memory vs {ref}", "logits = spikeseg"],
        rows))
    if ok:
        method = next(iter(ok.values()))["memory_method"]
        adam = [r["median_optimizer_s"] for r in ok.values()]
        print(f"\nMedians of {args.repeats}. Step = forward (with the loss) + backward + Adam "
              f"(Adam {fmt_seconds(min(adam))}–{fmt_seconds(max(adam))}). Images/s = B / step. "
              f"Peak memory: {method}, above model, optimiser and batch"
              f"{'' if args.isolate else ' (in-process: approximate)'}. Faults/step: minor "
              "page faults of the process during a timed step (`getrusage`). GFLOP/s: the "
              "nominal work of full BPTT (2 FLOP/MAC × 3 × the forward's dense MACs) / step, "
              "the same work for every row: checkpointing recomputes the forward once more, "
              "SLTT-K backpropagates through K of the T steps, and oneDNN skips much of the "
              "zero padding of the dilated layers. Ratios against "
              f"{ref}{'' if ref == REFERENCE else ' (' + REFERENCE + ' did not run)'}. "
              "Logits: the check above (yes = bit-identical).")
        if any(logits_cell(i, checks) == "no¹" for i in ok):
            print(f"\n¹ {SNNTORCH_RESET_NOTE} (batch-normalised currents often exceed θ); its "
                  "reset is not detached from the graph either.")

    if args.inference:
        base_inf = (base or {}).get("median_inference_s")
        inf_rows = []
        for impl, r in all_results.items():
            why = not_run(r)
            if why:
                inf_rows.append([label(impl, cfg0), why, "", "", ""])
                continue
            if impl in SAME_EVAL_AS_STEP:
                inf_rows.append([label(impl, cfg0), f"= {REFERENCE} (same no-grad forward)",
                                 "", "", ""])
                continue
            s = r.get("median_inference_s")
            inf_rows.append([
                label(impl, cfg0), f"**{fmt_seconds(s)}**",
                fmt_rate(args.batch / s) if s else "–",
                fmt_rate(ops["inference_flops_per_batch"] / s / 1e9) if s else "–",
                fmt_ratio(s / base_inf) if s and base_inf else "–",
            ])
        print(f"\n## Inference (eval mode, no grad), {args.size}×{args.size}, T "
              f"{args.timesteps}, B {args.batch}, width {args.width}\n")
        print(markdown_table(["implementation", "forward", "images/s", "GFLOP/s",
                              f"time vs {ref}"], inf_rows))
        print(f"\nMedians of {args.repeats} forward{'s' if args.repeats != 1 else ''} of the training batch after "
              f"{args.warmup} warm-up, in the same process as the training rounds (after "
              "them); GFLOP/s = 2 FLOP/MAC × the forward's dense MACs / time.")

    if ceiling is not None:
        if "error" in ceiling:
            print(f"\n## fp32 convolution ceiling\n\nfailed: {ceiling['error'][:300]}")
        else:
            meta = {r["name"]: r for r in ops["layers"]}
            crow = []
            fl_f = fl_t = sec_f = sec_t = 0.0
            for c in ceiling["layers"]:
                m = meta[c["name"]]
                flops = 2 * m["macs"] * args.batch
                fl_f, fl_t = fl_f + flops, fl_t + 3 * flops
                sec_f, sec_t = sec_f + c["forward_s"], sec_t + c["train_s"]
                dil = m["dilation"][0]
                crow.append([
                    f"`{c['name']}`",
                    f"{m['in_channels']}→{m['out_channels']}, {m['height']}×{m['width']}"
                    + (f", dilation {dil}" if dil > 1 else ""),
                    f"{m['macs'] / 1e6:.0f} M",
                    f"{100 * m['valid_macs'] / m['macs']:.0f}%" if m["valid_macs"] else "–",
                    fmt_rate(flops / c["forward_s"] / 1e9),
                    fmt_rate(3 * flops / c["train_s"] / 1e9),
                ])
            crow.append(["**all**", "", f"{ops['macs_per_image_step'] / 1e6:.0f} M", "",
                         f"**{fmt_rate(fl_f / sec_f / 1e9)}**",
                         f"**{fmt_rate(fl_t / sec_t / 1e9)}**"])
            print(f"\n## fp32 convolution ceiling: the network's 3×3 convolutions alone, batch "
                  f"{args.batch}, {'channels-last' if channels_last else 'NCHW'}\n")
            print(markdown_table(["layer", "channels, map", "MACs/image", "non-padding taps",
                                  "forward GFLOP/s", "forward + backward GFLOP/s"], crow))
            print(f"\nEach convolution alone (`nn.Conv2d`, oneDNN on CPU) on random input, "
                  f"median of {max(3, args.repeats)}; forward + backward computes the input and "
                  "weight gradients, counted as 3 × the forward's dense FLOPs. The `all` row "
                  "(total FLOPs / total time) is what the convolutions of one timestep reach "
                  "by themselves at batch B: the ceiling for the step-layout rows' GFLOP/s "
                  "(fold rows convolve T·B images at once).")

    if args.out:
        write_json(args.out, {
            "benchmark": "train_step",
            "command": command_line(),
            "machine": dict(machine, load_average_at_end=load_after),
            "settings": dict(base_cfg, repeats=args.repeats, warmup=args.warmup,
                             channels_last=channels_last, isolated=args.isolate,
                             interleaved=interleaved, malloc=args.malloc,
                             malloc_env=env, inference=args.inference,
                             model="spiking_deeplab (Table 1)", optimizer="Adam lr 1e-3",
                             loss="cross_entropy", bntt=BNTT_NOTE),
            "notes": notes,
            "operations": ops,
            "logits_check": check_rows,
            "reference": base_name,
            "results": all_results,
            "conv_ceiling": ceiling,
        })
    return 0 if len(ok) + len(skipped) == len(all_results) else 1


if __name__ == "__main__":
    sys.exit(main())
