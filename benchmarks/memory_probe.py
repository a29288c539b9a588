"""Live against resident memory of one spikeseg training step (docs/benchmarks.md, "Where the
memory goes").

Resident memory (RSS) is what the OS sees and what ``bench_train_step.py`` reports; live memory
is what the tensors hold: every byte ``malloc`` handed out and not yet freed. The difference is
the C allocator's: freed blocks it keeps for reuse, and the fragmentation of its heap. This
script counts live bytes with a 40-line ``LD_PRELOAD`` shim around malloc/free (compiled here
with ``cc``; Linux with glibc only), primes the network at batch 1, then runs one warm-up
step and one timed step of Spiking-DeepLab in step mode, and prints both peaks over the two
steps above the model and batch (the warm-up step creates Adam's state, 2 × the parameters)::

    python benchmarks/memory_probe.py -T 20 -B 16 --checkpoint-steps 4 --allocator lean
    python benchmarks/memory_probe.py -T 20 -B 16 --checkpoint-steps 0 --allocator keep

``--allocator`` is ``train.allocator`` (keep, lean, default; see ``spikeseg.runtime``).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <stdatomic.h>
#include <string.h>
static void *(*r_malloc)(size_t), *(*r_calloc)(size_t, size_t), *(*r_realloc)(void *, size_t),
    *(*r_memalign)(size_t, size_t);
static int (*r_posix_memalign)(void **, size_t, size_t);
static void (*r_free)(void *);
static _Atomic long cur = 0, peak = 0;
static char boot[65536];
static size_t boot_used = 0;
static void init(void) {
  if (r_malloc) return;
  r_calloc = dlsym(RTLD_NEXT, "calloc"); r_malloc = dlsym(RTLD_NEXT, "malloc");
  r_realloc = dlsym(RTLD_NEXT, "realloc"); r_memalign = dlsym(RTLD_NEXT, "memalign");
  r_posix_memalign = dlsym(RTLD_NEXT, "posix_memalign"); r_free = dlsym(RTLD_NEXT, "free");
}
static void add(void *p) {
  if (!p) return;
  long c = atomic_fetch_add(&cur, (long)malloc_usable_size(p)) + (long)malloc_usable_size(p);
  long pk = atomic_load(&peak);
  while (c > pk && !atomic_compare_exchange_weak(&peak, &pk, c)) {}
}
static void sub(void *p) { if (p) atomic_fetch_sub(&cur, (long)malloc_usable_size(p)); }
static int isboot(void *p) { return (char *)p >= boot && (char *)p < boot + sizeof boot; }
void *malloc(size_t n) { init(); void *p = r_malloc(n); add(p); return p; }
void *calloc(size_t a, size_t b) {
  if (!r_calloc) { void *p = boot + boot_used; boot_used += (a * b + 15) & ~15UL;
                   memset(p, 0, a * b); return p; }
  void *p = r_calloc(a, b); add(p); return p;
}
void *realloc(void *q, size_t n) {
  init();
  if (isboot(q)) { void *p = r_malloc(n); memcpy(p, q, n); add(p); return p; }
  sub(q); void *p = r_realloc(q, n); add(p); return p;
}
void *memalign(size_t a, size_t n) { init(); void *p = r_memalign(a, n); add(p); return p; }
void *aligned_alloc(size_t a, size_t n) { return memalign(a, n); }
int posix_memalign(void **pp, size_t a, size_t n) {
  init(); int r = r_posix_memalign(pp, a, n); if (!r) add(*pp); return r;
}
void free(void *p) { init(); if (!p || isboot(p)) return; sub(p); r_free(p); }
long probe_current(void) { return cur; }
long probe_peak(void) { return peak; }
void probe_reset(void) { atomic_store(&peak, atomic_load(&cur)); }
"""


def measure(args: argparse.Namespace) -> dict:
    import torch
    import torch.nn.functional as F

    from spikeseg.runtime import configure_allocator, minor_faults, resolve_allocator

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import PeakMemory
    from bench_train_step import build_model, make_batch

    mode = resolve_allocator(args.allocator, args.checkpoint_steps)
    configure_allocator(mode)
    torch.set_num_threads(args.threads)
    shim = ctypes.CDLL(None)
    for f in ("probe_current", "probe_peak"):
        getattr(shim, f).restype = ctypes.c_long
    # The network and batch of bench_train_step.py's spikeseg-step / spikeseg-ckpt rows.
    cfg = {"seed": 0, "classes": 21, "timesteps": args.timesteps, "batch": args.batch,
           "size": args.size, "width": args.width, "checkpoint_steps": args.checkpoint_steps}
    impl = "spikeseg-ckpt" if args.checkpoint_steps else "spikeseg-step"
    cpu = torch.device("cpu")
    model = build_model(impl, cfg).to(memory_format=torch.channels_last).train()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x, y = make_batch(cfg, cpu)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    # Prime at batch 1 over two timesteps (oneDNN's kernels, thread pools), as
    # bench_train_step.py does; then both peaks over a warm-up step (Adam's state is created
    # there) and a timed step.
    F.cross_entropy(model(x[:2, :1]), y[:1]).backward()
    opt.zero_grad(set_to_none=True)
    live0 = shim.probe_current()
    shim.probe_reset()
    resident = PeakMemory(cpu)
    resident.start()
    step()
    f0, t0 = minor_faults(), time.perf_counter()
    step()
    seconds, faults = time.perf_counter() - t0, minor_faults() - f0
    return {"timesteps": args.timesteps, "batch": args.batch, "size": args.size,
            "width": args.width, "checkpoint_steps": args.checkpoint_steps, "allocator": mode,
            "step_s": seconds, "faults": faults, "live_peak_bytes": shim.probe_peak() - live0,
            "resident_peak_bytes": resident.peak(), "resident_method": resident.method}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-T", "--timesteps", type=int, default=20)
    p.add_argument("-B", "--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--checkpoint-steps", type=int, default=4)
    p.add_argument("--allocator", default="auto", choices=("auto", "keep", "lean", "default"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)
    if os.environ.get("_SPIKESEG_PROBE") != "1":  # compile the shim, rerun under it
        if not sys.platform.startswith("linux"):
            print("memory_probe.py: Linux with glibc only", file=sys.stderr)
            return 2
        tmp = Path(tempfile.mkdtemp(prefix="spikeseg-probe-"))
        (tmp / "shim.c").write_text(SHIM)
        subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", str(tmp / "shim.so"),
                        str(tmp / "shim.c"), "-ldl"], check=True)
        env = {**os.environ, "LD_PRELOAD": str(tmp / "shim.so"), "_SPIKESEG_PROBE": "1",
               "SPIKESEG_MALLOC": ""}
        return subprocess.run([sys.executable, __file__, *(argv or sys.argv[1:])],
                              env=env).returncode
    r = measure(args)
    if args.json:
        print(json.dumps(r))
    else:
        G = 2**30
        print(f"T {r['timesteps']}, B {r['batch']}, {r['size']}², width {r['width']}, "
              f"checkpointing K = {r['checkpoint_steps']}, allocator {r['allocator']}: "
              f"step {r['step_s']:.2f} s ({r['faults']} minor faults), live peak {r['live_peak_bytes'] / G:.2f} GiB, "
              f"resident peak {r['resident_peak_bytes'] / G:.2f} GiB (above model and batch)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
