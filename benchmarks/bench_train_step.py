"""One training step of Spiking-DeepLab (Table 1: VGG9, BNTT + LIF) in spikeseg, and the same
network written with snnTorch and with SpikingJelly neurons (``_peers.py``).

A step is: forward on pre-encoded Poisson spikes ``[T, B, 3, H, W]``, cross-entropy against
random labels, backward, Adam step. Every implementation gets the same input, the same labels,
the same weights (copied from one seeded spikeseg model), the same parameter count and the same
memory format (channels-last on CPU unless ``--channels-last off``). Each runs in a fresh
subprocess: 1 warm-up step + N timed steps, median reported, peak memory above the model,
optimiser and batch (CPU: peak resident set size; CUDA: ``max_memory_allocated``).

Implementations (time layout in brackets):

* ``spikeseg-step`` / ``spikeseg-fold``: ``models.create("spiking_deeplab", step_mode=...)``
  ("step": time outer, layers inner; "fold": T folded into the batch for convolutions);
* ``snntorch-step`` / ``snntorch-fold``: ``snntorch.Leaky`` neurons;
* ``spikingjelly-step`` / ``spikingjelly-fold``: ``LIFNode`` in single-step / multi-step mode
  (multi-step is SpikingJelly's usual layout).

Examples::

    python benchmarks/bench_train_step.py                  # 64×64, T 20, B 16, width 1.0
    python benchmarks/bench_train_step.py --quick          # seconds, to check the script works
    python benchmarks/bench_train_step.py --device cuda --out results/train_cuda.json
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch
import torch.nn.functional as F
from _common import (
    PeakMemory,
    busy_warning,
    command_line,
    emit_result,
    fastest_spikeseg,
    finish_args,
    fmt_bytes,
    fmt_ratio,
    fmt_seconds,
    machine_info,
    markdown_table,
    measure_all,
    median,
    select_impls,
    sync,
    write_json,
)
from _peers import (
    SNNTORCH_RESET_NOTE,
    PeerDeepLab,
    copy_spikeseg_weights,
    make_neuron,
    peer_status,
)

IMPLS: dict[str, str] = {
    "spikeseg-step": "spikeseg, step mode",
    "spikeseg-fold": "spikeseg, fold mode",
    "snntorch-step": "snnTorch `Leaky`, step layout",
    "snntorch-fold": "snnTorch `Leaky`, fold layout",
    "spikingjelly-step": "SpikingJelly `LIFNode`, single-step",
    "spikingjelly-fold": "SpikingJelly `LIFNode`, multi-step",
}
BNTT_NOTE = ("BNTT: per-timestep batch norm (one [T, C] scale, no bias, eps 1e-4) in every "
             "implementation; peers use one BatchNorm2d per timestep with the bias removed, "
             "as in the BNTT authors' code")


def peer_of(impl: str) -> str | None:
    name = impl.rsplit("-", 1)[0]
    return None if name == "spikeseg" else name


# --------------------------------------------------------------------------------------------
# Models and data
# --------------------------------------------------------------------------------------------


def build_model(impl: str, cfg: dict[str, Any]) -> torch.nn.Module:
    """The implementation's network, with the weights of a seeded spikeseg model."""
    from spikeseg import models

    kind, layout = impl.rsplit("-", 1)
    torch.manual_seed(cfg["seed"])
    ref = models.create(
        "spiking_deeplab", cfg["classes"], timesteps=cfg["timesteps"], width=cfg["width"],
        step_mode=layout if kind == "spikeseg" else "step",
    )
    if kind == "spikeseg":
        return ref
    peer = PeerDeepLab(
        cfg["classes"], lambda: make_neuron(kind), timesteps=cfg["timesteps"],
        width=cfg["width"], layout=layout,
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
# Timing (one implementation; normally in its own process)
# --------------------------------------------------------------------------------------------


def measure(cfg: dict[str, Any]) -> dict[str, Any]:
    import time

    torch.set_num_threads(cfg["threads"])
    device = torch.device(cfg["device"])
    model = build_model(cfg["impl"], cfg).to(device)
    if cfg["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    params = count_parameters(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    # Prime (forward + backward at batch 1, two timesteps, no optimiser step) so that loading
    # kernels and starting thread pools is not counted as memory of the step.
    xs, ys = make_batch(cfg, device, batch=1)
    F.cross_entropy(model(xs[:2]), ys).backward()
    optimizer.zero_grad(set_to_none=True)
    del xs, ys

    x, y = make_batch(cfg, device)
    mem = PeakMemory(device)
    mem.start()
    fwd, bwd, opt, total = [], [], [], []
    first_loss = None
    for i in range(cfg["warmup"] + cfg["repeats"]):
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        sync(device)
        t1 = time.perf_counter()
        loss.backward()
        sync(device)
        t2 = time.perf_counter()
        optimizer.step()
        sync(device)
        t3 = time.perf_counter()
        if i == 0:
            first_loss = loss.item()
        del loss
        if i >= cfg["warmup"]:
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
            opt.append(t3 - t2)
            total.append(t3 - t0)
    return {
        "impl": cfg["impl"], "parameters": params,
        "forward_s": fwd, "backward_s": bwd, "optimizer_s": opt, "total_s": total,
        "median_forward_s": median(fwd), "median_backward_s": median(bwd),
        "median_optimizer_s": median(opt), "median_total_s": median(total),
        "peak_bytes": mem.peak(), "memory_method": mem.method,
        "first_loss": first_loss,
    }


# --------------------------------------------------------------------------------------------
# Equivalence check (small size, in-process): logits of each peer against spikeseg step mode
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def check_equivalence(impls: list[str], cfg: dict[str, Any]) -> list[dict[str, Any]]:
    x, _ = make_batch(cfg, torch.device("cpu"))
    out = {}
    for impl in ["spikeseg-step", *[i for i in impls if i != "spikeseg-step"]]:
        model = build_model(impl, cfg).train()  # train mode: batch statistics, as in the step
        out[impl] = (model(x), count_parameters(model))
    ref, _ = out["spikeseg-step"]
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
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-T", "--timesteps", type=int, default=20)
    p.add_argument("-B", "--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=64, help="image height = width")
    p.add_argument("--width", type=float, default=1.0, help="channel multiplier")
    p.add_argument("--classes", type=int, default=21)
    p.add_argument("--repeats", type=int, default=5, help="timed steps (median reported)")
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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-check", action="store_true", help="skip the logits check")
    p.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                   help="one subprocess per implementation (default; --quick: in-process)")
    p.add_argument("--timeout", type=float, default=3600.0, help="per implementation, seconds")
    p.add_argument("--quick", action="store_true",
                   help="tiny size (32×32, T3, B2, width 0.125, 2 repeats, in-process, 1 thread)")
    p.add_argument("--out", metavar="FILE.json", help="also write the raw numbers here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.timesteps, args.batch, args.width = 32, 3, 2, 0.125
        args.repeats = min(args.repeats, 2)
    return finish_args(args)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        emit_result(measure(json.loads(args.worker)))
        return 0

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("--device cuda given but CUDA is not available")
    impls, notes = select_impls(args.impls, list(IMPLS), peer_of, peer_status())
    channels_last = {"on": True, "off": False}.get(args.channels_last,
                                                    args.device.startswith("cpu"))
    busy = busy_warning(args.threads, args.device)
    if busy:
        notes.append(busy)

    base_cfg = {"timesteps": args.timesteps, "batch": args.batch, "size": args.size,
                "width": args.width, "classes": args.classes, "seed": args.seed}
    machine = machine_info(args.threads, args.device)
    print(f"# One training step of Spiking-DeepLab, {args.size}×{args.size}, T {args.timesteps}, "
          f"B {args.batch}, width {args.width}, {args.classes} classes")
    print(f"{machine['cpu_model']}, {machine['cpus_usable']} usable cores, torch "
          f"{machine['torch_version']}, {args.threads} threads, device {args.device}"
          f"{' (' + machine['gpu'] + ')' if 'gpu' in machine else ''}; "
          f"{'channels-last' if channels_last else 'contiguous (NCHW)'} for every model; "
          f"median of {args.repeats} after {args.warmup} warm-up; "
          f"{'one subprocess per implementation' if args.isolate else 'in-process'}")
    print(f"{BNTT_NOTE}; LIF leak 0.99, θ 1.0, soft reset, PWL surrogate; Adam (lr 1e-3); "
          "same pre-encoded Poisson input, labels and weights everywhere.")
    for n in notes:
        print(f"note: {n}")

    check_rows: list[dict[str, Any]] = []
    if not args.no_check:
        torch.set_num_threads(args.threads)
        check_cfg = dict(base_cfg, batch=2, size=32, width=min(args.width, 0.25))
        check_rows = check_equivalence(impls, check_cfg)
        print(f"\n## Logits check (train-mode forward, 32×32, T {args.timesteps}, B 2, width "
              f"{check_cfg['width']}), against spikeseg step mode\n")
        print(markdown_table(
            ["implementation", "parameters", "max |Δ logit|", "max |logit|", "argmax agrees"],
            [[r["impl"], f"{r['parameters']:,}", f"{r['max_abs_logit_diff']:.2e}",
              f"{r['max_abs_logit']:.2f}", f"{100 * r['argmax_agreement']:.2f}%"]
             for r in check_rows]))
        if any(r["impl"].startswith("snntorch") and r["max_abs_logit_diff"] > 1e-4
               for r in check_rows):
            print(f"\nsnnTorch rows differ because {SNNTORCH_RESET_NOTE} (batch-normalised "
                  "currents often exceed θ), so its logits and loss differ from spikeseg's.")

    results = measure_all(
        impls,
        lambda impl: dict(base_cfg, impl=impl, device=args.device, threads=args.threads,
                          repeats=args.repeats, warmup=args.warmup, channels_last=channels_last),
        measure, __file__, args.isolate, timeout=args.timeout,
    )

    ok, base_name, base = fastest_spikeseg(results)
    rows = []
    for impl, r in results.items():
        if "error" in r:
            rows.append([IMPLS[impl], "failed: " + r["error"][:120]] + [""] * 9)
            continue
        rows.append([
            IMPLS[impl], f"{r['parameters']:,}", fmt_seconds(r["median_forward_s"]),
            fmt_seconds(r["median_backward_s"]), fmt_seconds(r["median_optimizer_s"]),
            f"**{fmt_seconds(r['median_total_s'])}**", fmt_bytes(r["peak_bytes"]),
            fmt_ratio(r["median_total_s"] / base["median_total_s"]) if base else "–",
            fmt_ratio(r["peak_bytes"] / base["peak_bytes"]) if base and base["peak_bytes"]
            else "–",
            f"{r['first_loss']:.4f}",
        ])
    print(f"\n## Training step, {args.size}×{args.size}, T {args.timesteps}, B {args.batch}, "
          f"width {args.width}\n")
    print(markdown_table(
        ["implementation", "parameters", "forward", "backward", "Adam", "step", "peak memory",
         f"time vs {base_name}", f"memory vs {base_name}", "loss (1st step)"], rows))
    if ok:
        method = next(iter(ok.values()))["memory_method"]
        print(f"\nmedians of {args.repeats}; peak memory: {method}, above model, optimiser and "
              f"batch{'' if args.isolate else ' (in-process: approximate)'}; ratios against "
              "the fastest spikeseg mode; the first-step loss is the same for equivalent "
              "networks (same weights and input).")

    if args.out:
        write_json(args.out, {
            "benchmark": "train_step",
            "command": command_line(),
            "machine": machine,
            "settings": dict(base_cfg, repeats=args.repeats, warmup=args.warmup,
                             channels_last=channels_last, isolated=args.isolate,
                             model="spiking_deeplab (Table 1)", optimizer="Adam lr 1e-3",
                             loss="cross_entropy", bntt=BNTT_NOTE),
            "notes": notes,
            "logits_check": check_rows,
            "reference": base_name,
            "results": results,
        })
    return 0 if len(ok) == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
