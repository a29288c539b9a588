"""One LIF layer, forward + backward, in spikeseg, snnTorch and SpikingJelly.

Input currents ``[T, B, C, H, W]`` (default 20, 16, 64, 64, 64), leak 0.99, threshold 1.0, soft
reset, piecewise-linear surrogate ``max(0, 1 - |u - θ|/θ)`` (eq. (6)), a dense upstream
gradient. Each implementation runs in a fresh subprocess (peak memory = peak resident set
size above the size before the first forward), 1 warm-up + N timed repeats, median reported.

Before timing, the spikes and input gradients of every implementation are compared on a small
input (see ``--check-size``), and every timed run's spikes are hashed: equal hashes mean
bit-identical spikes at the benchmark size.

Examples::

    python benchmarks/bench_lif.py                      # the default size
    python benchmarks/bench_lif.py --quick              # seconds, to check the script works
    python benchmarks/bench_lif.py --repeats 9 --out results/lif.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from typing import Any

import torch
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
    timed,
    write_json,
)
from _peers import SNNTORCH_RESET_NOTE, SnnTorchLIF, SpikingJellyLIF, peer_status

LEAK = 0.99
THRESHOLD = 1.0

IMPLS: dict[str, str] = {
    "spikeseg-seq": "spikeseg `LIF.forward` (fused sequence)",
    "spikeseg-step": "spikeseg `LIF.step` loop",
    "snntorch": "snnTorch `Leaky`, unbind loop, custom PWL surrogate",
    "spikingjelly": "SpikingJelly `LIFNode` multi-step, `PiecewiseQuadratic(α=1)`",
    "spikingjelly-custom": "SpikingJelly `LIFNode` multi-step, custom PWL surrogate",
}
PEER_OF = {"snntorch": "snntorch", "spikingjelly": "spikingjelly",
           "spikingjelly-custom": "spikingjelly"}


# --------------------------------------------------------------------------------------------
# Implementations: a function x[T, ...] -> spikes[T, ...]
# --------------------------------------------------------------------------------------------


def build(impl: str, detach_reset: bool = True):
    """The implementation's ``x -> spikes`` function (state reset on every call)."""
    from spikeseg.neurons import LIF

    if impl == "spikeseg-seq":
        return LIF(LEAK, THRESHOLD, "soft", "pwl", detach_reset=detach_reset)
    if impl == "spikeseg-step":
        lif = LIF(LEAK, THRESHOLD, "soft", "pwl", detach_reset=detach_reset)

        def step_loop(x: torch.Tensor) -> torch.Tensor:
            out, mem = [], None
            for xt in x.unbind(0):
                s, mem = lif.step(xt, mem)
                out.append(s)
            return torch.stack(out)

        return step_loop
    if impl == "snntorch":
        return SnnTorchLIF(LEAK, THRESHOLD).seq
    if impl == "spikingjelly":
        return SpikingJellyLIF(LEAK, THRESHOLD, "builtin", step_mode="m").seq
    if impl == "spikingjelly-custom":
        return SpikingJellyLIF(LEAK, THRESHOLD, "custom", step_mode="m").seq
    raise ValueError(f"unknown implementation {impl!r}")


def make_input(shape, kind: str, seed: int, device: torch.device) -> torch.Tensor:
    """Input currents: ``uniform`` in [-θ, θ) (all three frameworks define the same dynamics
    there; see _peers.py) or standard ``normal`` (like a BN output)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "uniform":
        x = (torch.rand(shape, generator=g) * 2.0 - 1.0) * THRESHOLD
    elif kind == "normal":
        x = torch.randn(shape, generator=g)
    else:
        raise ValueError(f"input must be 'uniform' or 'normal', not {kind!r}")
    return x.to(device)


def spike_hash(s: torch.Tensor) -> str:
    return hashlib.sha1(s.detach().to(torch.uint8).contiguous().cpu().numpy().tobytes()).hexdigest()


# --------------------------------------------------------------------------------------------
# Equivalence check (small input, in-process)
# --------------------------------------------------------------------------------------------


def spikes_and_grad(fn, x: torch.Tensor, gout: torch.Tensor):
    x = x.detach().clone().requires_grad_()
    s = fn(x)
    s.backward(gout)
    return s.detach(), x.grad


def check_equivalence(impls: list[str], shape, seed: int) -> list[dict[str, Any]]:
    """Spikes and input gradients of each implementation against spikeseg's sequence LIF (with
    the same reset detaching as the peer: snnTorch's reset is not detached)."""
    device = torch.device("cpu")
    gout = torch.randn(shape, generator=torch.Generator().manual_seed(seed + 1))
    rows = []
    for impl in impls:
        ref_detach = impl != "snntorch"
        row: dict[str, Any] = {"impl": impl, "reference_detach_reset": ref_detach}
        for kind in ("uniform", "normal"):
            x = make_input(shape, kind, seed, device)
            s_ref, g_ref = spikes_and_grad(build("spikeseg-seq", ref_detach), x, gout)
            s, g = spikes_and_grad(build(impl), x, gout)
            row[f"{kind}_spike_mismatches"] = int((s != s_ref).sum())
            row[f"{kind}_grad_max_abs_diff"] = float((g - g_ref).abs().max())
            row[f"{kind}_grad_close"] = bool(torch.allclose(g, g_ref, rtol=1e-4, atol=1e-5))
        row["numel"] = int(torch.Size(shape).numel())
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
# Timing (one implementation; normally in its own process)
# --------------------------------------------------------------------------------------------


def measure(cfg: dict[str, Any]) -> dict[str, Any]:
    torch.set_num_threads(cfg["threads"])
    device = torch.device(cfg["device"])
    shape = tuple(cfg["shape"])
    fn = build(cfg["impl"])
    # Prime on a small slice first, so that loading kernels and starting thread pools is not
    # counted as memory of the implementation.
    small = (min(shape[0], 2), 1, *shape[2:])
    xs = make_input(small, cfg["input"], cfg["seed"], device).requires_grad_()
    fn(xs).backward(torch.ones(small, device=device))
    del xs
    x = make_input(shape, cfg["input"], cfg["seed"], device).requires_grad_()
    gout = torch.randn(shape, generator=torch.Generator().manual_seed(cfg["seed"] + 1)).to(device)
    mem = PeakMemory(device)
    mem.start()
    fwd, bwd, total = [], [], []
    info: dict[str, Any] = {}
    for i in range(cfg["warmup"] + cfg["repeats"]):
        x.grad = None
        out, tf = timed(lambda: fn(x), device)
        _, tb = timed(lambda out=out: out.backward(gout), device)
        if i == 0:
            info = {
                "spike_rate": float(out.detach().float().mean()),
                "spike_sha1": spike_hash(out),
                "grad_sum": float(x.grad.double().sum()),
            }
        del out
        if i >= cfg["warmup"]:
            fwd.append(tf)
            bwd.append(tb)
            total.append(tf + tb)
    return {
        "impl": cfg["impl"],
        "forward_s": fwd, "backward_s": bwd, "total_s": total,
        "median_forward_s": median(fwd), "median_backward_s": median(bwd),
        "median_total_s": median(total),
        "peak_bytes": mem.peak(), "memory_method": mem.method, **info,
    }


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-T", "--timesteps", type=int, default=20)
    p.add_argument("-B", "--batch", type=int, default=16)
    p.add_argument("-C", "--channels", type=int, default=64)
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5, help="timed repeats (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    p.add_argument("--threads", type=int, default=None,
                   help=f"torch threads (default: torch's default, {torch.get_num_threads()} "
                        "here; 1 with --quick)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    p.add_argument("--impls", default=",".join(IMPLS),
                   help="comma-separated subset of: " + ", ".join(IMPLS))
    p.add_argument("--input", choices=("uniform", "normal"), default="uniform",
                   help="input currents for timing: U(-θ, θ) (default) or N(0, 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--check-size", type=int, nargs=5, default=(20, 2, 4, 8, 8),
                   metavar=("T", "B", "C", "H", "W"), help="shape of the equivalence check")
    p.add_argument("--no-check", action="store_true", help="skip the equivalence check")
    p.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                   help="one subprocess per implementation (default; --quick: in-process)")
    p.add_argument("--quick", action="store_true",
                   help="tiny size (T4 B2 C8 16×16, 3 repeats, in-process, 1 thread): a smoke test")
    p.add_argument("--out", metavar="FILE.json", help="also write the raw numbers here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.timesteps, args.batch, args.channels, args.height, args.width = 4, 2, 8, 16, 16
        args.repeats = min(args.repeats, 3)
        args.check_size = (8, 2, 4, 8, 8)
    return finish_args(args)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        emit_result(measure(json.loads(args.worker)))
        return 0

    impls, notes = select_impls(args.impls, list(IMPLS), lambda i: PEER_OF.get(i), peer_status())

    shape = (args.timesteps, args.batch, args.channels, args.height, args.width)
    machine = machine_info(args.threads, args.device)
    print(f"# One LIF layer, forward + backward, input {list(shape)}")
    print(f"{machine['cpu_model']}, {machine['cpus_usable']} usable cores, torch "
          f"{machine['torch_version']}, {args.threads} threads, device {args.device}; "
          f"leak {LEAK}, θ {THRESHOLD}, soft reset, PWL surrogate (eq. 6); "
          f"{args.input} input; median of {args.repeats} after {args.warmup} warm-up; "
          f"{'one subprocess per implementation' if args.isolate else 'in-process'}")
    busy = busy_warning(args.threads, args.device)
    if busy:
        notes.append(busy)
    for n in notes:
        print(f"note: {n}")

    check_rows: list[dict[str, Any]] = []
    if not args.no_check:
        torch.set_num_threads(args.threads)
        check_rows = check_equivalence(impls, tuple(args.check_size), args.seed)
        print(f"\n## Equivalence check, input {list(args.check_size)} "
              "(against spikeseg `LIF.forward`)\n")
        rows = []
        for r in check_rows:
            rows.append([
                r["impl"],
                "yes" if r["uniform_spike_mismatches"] == 0
                else f"NO ({r['uniform_spike_mismatches']} differ)",
                f"{'yes' if r['uniform_grad_close'] else 'NO'} "
                f"(max Δ {r['uniform_grad_max_abs_diff']:.1e})",
                f"{r['normal_spike_mismatches']} / {r['numel']}",
                "yes" if r["reference_detach_reset"] else "no (as snnTorch)",
            ])
        print(markdown_table(
            ["implementation", "spikes identical, U(-θ,θ) input", "input grad matches",
             "spikes differing, N(0,1) input", "reference detaches reset"], rows))
        if any(r["impl"] == "snntorch" and r["normal_spike_mismatches"] for r in check_rows):
            print(f"\n{SNNTORCH_RESET_NOTE}; its reset is not detached from the graph either, "
                  "so its gradients are compared with spikeseg's `detach_reset=False`.")

    results = measure_all(
        impls,
        lambda impl: {"impl": impl, "shape": list(shape), "device": args.device,
                      "threads": args.threads, "repeats": args.repeats,
                      "warmup": args.warmup, "input": args.input, "seed": args.seed},
        measure, __file__, args.isolate,
    )

    ok, base_name, base = fastest_spikeseg(results)
    ref_hash = ok.get("spikeseg-seq", base or {}).get("spike_sha1")
    rows = []
    for impl, r in results.items():
        if "error" in r:
            rows.append([IMPLS[impl], "failed: " + r["error"][:120]] + [""] * 8)
            continue
        same = "–" if ref_hash is None else ("yes" if r["spike_sha1"] == ref_hash else "NO")
        rows.append([
            IMPLS[impl], fmt_seconds(r["median_forward_s"]), fmt_seconds(r["median_backward_s"]),
            f"**{fmt_seconds(r['median_total_s'])}**", fmt_bytes(r["peak_bytes"]),
            fmt_ratio(r["median_total_s"] / base["median_total_s"]) if base else "–",
            fmt_ratio(r["peak_bytes"] / base["peak_bytes"]) if base and base["peak_bytes"]
            else "–",
            f"{r['spike_rate']:.3f}", same,
        ])
    print(f"\n## Timing, input {list(shape)}\n")
    print(markdown_table(
        ["implementation", "forward", "backward", "total", "peak memory",
         f"time vs {base_name}", f"memory vs {base_name}", "spike rate",
         "spikes = spikeseg"], rows))
    if ok:
        method = next(iter(ok.values()))["memory_method"]
        print(f"\nmedians of {args.repeats}; peak memory: {method}, above the input, upstream "
              f"gradient and module{'' if args.isolate else ' (in-process: approximate)'}; "
              "ratios against the fastest spikeseg variant.")

    if args.out:
        write_json(args.out, {
            "benchmark": "lif",
            "command": command_line(),
            "machine": machine,
            "settings": {"shape": list(shape), "leak": LEAK, "threshold": THRESHOLD,
                         "reset": "soft", "surrogate": "pwl (eq. 6)", "input": args.input,
                         "repeats": args.repeats, "warmup": args.warmup,
                         "isolated": args.isolate, "seed": args.seed},
            "notes": notes,
            "equivalence_check": {"shape": list(args.check_size), "rows": check_rows},
            "reference": base_name,
            "results": results,
        })
    return 0 if len(ok) == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
