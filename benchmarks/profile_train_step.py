"""Where one training step of Spiking-DeepLab spends its time: torch.profiler, grouped.

The same network, batch and step as ``bench_train_step.py`` (forward with the loss, backward,
Adam), profiled after warm-up steps; the self time of every ATen operator is put into one of a
few groups (convolution forward, convolution backward, batch norm, LIF and other elementwise
work, copies, Adam, the rest) and printed as a Markdown table of shares of the step.

    python benchmarks/profile_train_step.py -T 8 -B 8 --impl spikeseg-step
    python benchmarks/profile_train_step.py -T 20 -B 16 --impl spikeseg-ckpt --out prof.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cpu_capability, fmt_load, load_average, machine_info  # noqa: E402
from bench_train_step import (  # noqa: E402
    IMPLS,
    build_model,
    default_checkpoint_steps,
    make_batch,
)

GROUPS = [
    ("convolution forward", ("mkldnn_convolution", "_convolution", "conv2d", "convolution",
                             "_slow_conv2d_forward", "mm", "addmm", "bmm")),
    ("convolution backward", ("convolution_backward", "mkldnn_convolution_backward",
                              "_slow_conv2d_backward")),
    ("batch norm", ("native_batch_norm", "native_batch_norm_backward", "batch_norm",
                    "_batch_norm_impl_index", "var_mean", "rsqrt")),
    ("copies and layout", ("copy_", "to", "_to_copy", "contiguous", "clone", "cat", "stack",
                           "empty_like", "empty", "empty_strided", "zeros_like", "zero_",
                           "fill_", "resize_", "as_strided")),
    ("Adam", ("_foreach_", "_fused_adam", "adam")),
    ("loss and output", ("nll_loss", "log_softmax", "cross_entropy", "upsample", "softmax",
                         "nll_loss2d", "_log_softmax")),
    ("LIF and elementwise", ("gt", "sub", "add", "mul", "addcmul", "abs", "div", "clamp",
                             "where", "ge", "le", "lt", "neg", "rsub", "sum", "mean", "sign")),
]


def group_of(name: str) -> str:
    """The group of an ATen operator (``aten::add_`` → ``LIF and elementwise``); keys that
    end in ``_`` match every operator they start (``_foreach_``)."""
    op = name.removeprefix("aten::")
    for group, keys in GROUPS:
        for k in keys:
            if op in (k, k + "_") or (k.endswith("_") and op.startswith(k)):
                return group
    return "other"


def step_fn(model, x, y, opt):
    def step():
        opt.zero_grad(set_to_none=True)
        out = model(x)
        loss = F.cross_entropy(out.float(), y)
        loss.backward()
        opt.step()
    return step


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-T", "--timesteps", type=int, default=8)
    p.add_argument("-B", "--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--classes", type=int, default=21)
    p.add_argument("--impl", default="spikeseg-step",
                   choices=[k for k in IMPLS if k != "spikeseg-bf16"])
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = {"timesteps": args.timesteps, "batch": args.batch, "size": args.size,
           "width": args.width, "classes": args.classes, "seed": args.seed,
           "checkpoint_steps": default_checkpoint_steps(args.timesteps), "sltt_k": 2}
    model = build_model(args.impl, cfg).to(memory_format=torch.channels_last).train()
    x, y = make_batch(cfg, torch.device("cpu"))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    step = step_fn(model, x, y, opt)
    for _ in range(args.warmup):
        step()
    load = load_average()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        step()
        wall = time.perf_counter() - t0
    shares: dict[str, float] = {}
    for e in prof.key_averages():
        if not e.key.startswith("aten::"):
            continue
        g = group_of(e.key)
        shares[g] = shares.get(g, 0.0) + e.self_cpu_time_total / 1e6
    ops = sum(shares.values())
    shares["Python and dispatch (step − ATen self time)"] = max(wall - ops, 0.0)
    machine = machine_info(args.threads, "cpu")
    print(f"# Profile of one training step: {args.impl}, {args.size}×{args.size}, "
          f"T {args.timesteps}, B {args.batch}, width {args.width}\n")
    print(f"**Machine:** {machine.get('cpu_model', '?')}, "
          f"{cpu_capability(machine)}, {args.threads} threads; load average {fmt_load(load)}; "
          f"profiled step {wall:.2f} s (the profiler adds some overhead).\n")
    print("| group | time | share of the step |\n|---|---|---|")
    for g, t in sorted(shares.items(), key=lambda kv: -kv[1]):
        print(f"| {g} | {t * 1e3:.0f} ms | {100 * t / wall:.1f}% |")
    if args.out:
        args.out.write_text(json.dumps({
            "command": " ".join(["python", "benchmarks/profile_train_step.py", *sys.argv[1:]]),
            "impl": args.impl, "settings": cfg, "step_s": wall, "load_average": load,
            "machine": machine, "groups_s": shares,
            "top_ops": [{"op": e.key, "self_s": e.self_cpu_time_total / 1e6}
                        for e in sorted(prof.key_averages(),
                                        key=lambda e: -e.self_cpu_time_total)[:25]],
        }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
