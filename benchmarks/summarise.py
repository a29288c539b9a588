"""Summary tables for docs/benchmarks.md from bench_train_step.py's JSON results.

One row per implementation and result file: step time, images/s, peak memory, page faults per
step, inference images/s, and the ratios against SpikingJelly's multi-step and snnTorch's
step layout measured in the same run: speed-ups (peer's time / ours, >1 = spikeseg faster) and
memory as a fraction of the peer's peak (<1 = spikeseg leaner).

    python benchmarks/summarise.py benchmarks/results/train_t8b8_default.json ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train_step import IMPLS, label  # noqa: E402

PEERS = {"SpikingJelly multi-step": "spikingjelly-fold", "snnTorch step": "snntorch-step"}


def _gib(b: float) -> str:
    return f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.0f} MiB"


def _ratio(a: float | None, b: float | None) -> str:
    return "–" if not a or not b else f"{b / a:.2f}×"


def summarise(path: Path) -> str:
    d = json.loads(path.read_text())
    s = d["settings"]
    res = d["results"]
    env = "neutral allocator" if "--malloc neutral" in d["command"] else "default environment"
    head = (f"**T {s['timesteps']}, B {s['batch']}, {s['size']}², width {s['width']}, {env}** "
            f"(`{d['command']}`)\n\n")
    peers = {name: res.get(impl) for name, impl in PEERS.items() if impl in res}
    cols = ["implementation", "step", "images/s", "peak memory", "faults/step",
            "inference images/s"]
    for name in peers:
        cols += [f"speed-up over {name}", f"memory / {name}'s", f"inference speed-up over {name}"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    B = s["batch"]
    for impl, r in res.items():
        if "median_total_s" not in r:
            lines.append(f"| {label(impl, s)} | {r.get('skipped', 'did not run')} |"
                         + " |" * (len(cols) - 2))
            continue
        t, mem = r["median_total_s"], r.get("peak_bytes")
        inf = r.get("median_inference_s")
        row = [label(impl, s), f"{t:.2f} s", f"{B / t:.2f}", _gib(mem) if mem else "–",
               str(r.get("median_faults_per_step", "–")), f"{B / inf:.1f}" if inf else "–"]
        for p in peers.values():
            if p is None or IMPLS[impl].kind != "spikeseg":
                row += ["", "", ""]
                continue
            row += [_ratio(t, p["median_total_s"]), _ratio(p.get("peak_bytes"), mem),
                    _ratio(inf, p.get("median_inference_s"))]
        lines.append("| " + " | ".join(row) + " |")
    return head + "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", type=Path)
    args = p.parse_args(argv)
    for f in args.files:
        print(summarise(f))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
