"""What this machine can do, and process settings that make it do it faster.

* **CPU capability** (:func:`cpu_flags`, :func:`native_bf16`): mixed precision pays on a CPU
  only with native bfloat16 arithmetic — AVX512-BF16 (``avx512_bf16``) or AMX
  (``amx_bf16``). Elsewhere (e.g. AVX2-only CPUs) oneDNN emulates bfloat16 convolutions by
  converting to float32, which is slower than float32 and less accurate, so
  :func:`check_precision` refuses ``bf16`` there; ``fp16`` runs on CUDA only.
* **Autocast** (:func:`autocast`): ``bf16``/``fp16`` run the convolutions in the low
  precision; spikeseg keeps membranes, batch-norm statistics, the output accumulator and the
  loss in float32 (the norms and neurons cast their inputs back; the loss casts the logits).
* **Allocator** (:func:`configure_allocator`): a training step allocates and frees the same
  large activation buffers every step. glibc serves blocks above its mmap threshold (at most
  32 MiB) with fresh ``mmap`` calls and returns them with ``munmap``, so every step
  page-faults its activations in again (zero-filled by the kernel, one fault per 4 KiB page);
  below the threshold, blocks come from its heap, which fragments. Two settings, chosen by
  ``train.allocator`` (``SPIKESEG_MALLOC`` overrides it):

  - ``keep`` (the CLI's default): serve all blocks from the heap and never trim it
    (``M_MMAP_MAX = 0``, ``M_TRIM_THRESHOLD`` = 64 GiB through ``mallopt``; the same as
    ``GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736``):
    freed pages are reused, so a step page-faults almost nothing (:func:`minor_faults`
    counts it), but the heap's fragmentation stays resident: at the paper's setting with
    time-chunk checkpointing the process holds about twice its live tensors (measured in
    docs/benchmarks.md).
  - ``lean``: every block of 1 MiB or more is mapped on its own and unmapped when freed
    (``M_MMAP_THRESHOLD`` fixed at 1 MiB, which also stops glibc from raising it): resident
    memory follows the live tensors, at the price of refaulting them every step. ``auto``
    picks it when checkpointing is on (the user asked for memory), ``keep`` otherwise.
  - ``default``: glibc as it is.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import resource
import sys
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import SpikesegError

if TYPE_CHECKING:  # torch is imported where it is used: the CLI calls this before loading it
    import torch

__all__ = [
    "PRECISIONS", "cpu_flags", "native_bf16", "check_precision", "autocast", "autocast_dtype",
    "ALLOCATOR_MODES", "configure_allocator", "resolve_allocator", "minor_faults",
]

ALLOCATOR_MODES = ("auto", "keep", "lean", "default")
"""``train.allocator`` values (see the module docstring)."""

PRECISIONS = ("fp32", "fp64", "bf16", "fp16")
"""``train.precision`` values: full float32 / float64, or mixed bfloat16 / float16."""

_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags (``/proc/cpuinfo``; empty where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def native_bf16() -> bool:
    """True when the CPU computes in bfloat16 natively (AVX512-BF16 or AMX)."""
    return any(f in cpu_flags() for f in _BF16_FLAGS)


def _cpu_description() -> str:
    import torch

    cap = torch.backends.cpu.get_cpu_capability()
    vec = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in cpu_flags()]
    return f"torch CPU capability {cap}" + (f", flags {' '.join(vec)}" if vec else "")


def check_precision(precision: str, device: torch.device) -> None:
    """SpikesegError (one line) if ``precision`` cannot run well on ``device``."""
    if precision not in PRECISIONS:
        raise SpikesegError(f"train.precision must be one of {', '.join(PRECISIONS)}, "
                            f"got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise SpikesegError(
            f"train.precision=fp16 runs on CUDA only (device {device}); on a CPU use fp32, or "
            "bf16 where the CPU has AVX512-BF16 or AMX")
    if precision == "bf16":
        import torch

        if device.type == "cpu" and not native_bf16():
            raise SpikesegError(
                f"train.precision=bf16 needs a CPU with native bfloat16 (AVX512-BF16 or AMX); "
                f"this one has none ({_cpu_description()}): use train.precision=fp32")
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise SpikesegError("train.precision=bf16: this GPU has no bfloat16 support; use "
                                "fp16 or fp32")


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a mixed precision (``None`` for fp32/fp64)."""
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


@contextlib.contextmanager
def autocast(precision: str, device: torch.device) -> Iterator[None]:
    """Autocast for ``bf16``/``fp16`` (convolutions in low precision), nothing otherwise."""
    import torch

    dtype = autocast_dtype(precision)
    if dtype is None:
        yield
        return
    with torch.autocast(device.type, dtype=dtype):
        yield


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
_TRIM_THRESHOLD = 64 << 30  # 64 GiB: never give the heap back to the OS
_LEAN_MMAP_THRESHOLD = 1 << 20  # 1 MiB: every activation-sized block is mapped on its own
_GLIBC_MMAP_MAX = 65536  # glibc's defaults, restored by "lean"
_GLIBC_TRIM_THRESHOLD = 128 << 10


def resolve_allocator(mode: str, checkpoint_steps: int = 0) -> str:
    """The setting :func:`configure_allocator` applies for ``train.allocator = mode``:
    ``SPIKESEG_MALLOC`` if set, else ``mode``, with ``auto`` = ``lean`` when time-chunk
    checkpointing is on (``checkpoint_steps > 0``) and ``keep`` otherwise."""
    env = os.environ.get("SPIKESEG_MALLOC", "").strip().lower()
    if env:
        if env not in ALLOCATOR_MODES:
            raise SpikesegError(f"SPIKESEG_MALLOC must be one of {', '.join(ALLOCATOR_MODES)}, "
                                f"got {env!r}")
        mode = env
    if mode not in ALLOCATOR_MODES:
        raise SpikesegError(f"train.allocator must be one of {', '.join(ALLOCATOR_MODES)}, "
                            f"got {mode!r}")
    if mode == "auto":
        return "lean" if checkpoint_steps > 0 else "keep"
    return mode


def configure_allocator(mode: str = "keep", checkpoint_steps: int = 0) -> bool:
    """Apply a glibc malloc setting (see the module docstring): ``keep`` reuses freed memory
    instead of refaulting it, ``lean`` returns every large block to the OS when freed,
    ``default`` leaves glibc alone, ``auto`` is ``lean`` with checkpointing and ``keep``
    without (:func:`resolve_allocator`; ``SPIKESEG_MALLOC`` overrides ``mode``). Returns
    True when a setting was applied (Linux with glibc), False otherwise. Safe to call more
    than once and to switch between settings: it applies to the blocks allocated after it."""
    mode = resolve_allocator(mode, checkpoint_steps)
    if mode == "default" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (e.g. musl)
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if mode == "lean":
        ok = mallopt(_M_MMAP_THRESHOLD, _LEAN_MMAP_THRESHOLD) == 1
        ok = mallopt(_M_MMAP_MAX, _GLIBC_MMAP_MAX) == 1 and ok
        ok = mallopt(_M_TRIM_THRESHOLD, _GLIBC_TRIM_THRESHOLD) == 1 and ok
        with contextlib.suppress(AttributeError):
            libc.malloc_trim(0)  # give back what an earlier "keep" kept
        return ok
    ok = mallopt(_M_MMAP_MAX, 0) == 1
    # The threshold is an int in mallopt: the largest value it takes (2 GiB - 1) already
    # keeps every freed block of a training step; GLIBC_TUNABLES can set 64 GiB.
    ok = mallopt(_M_TRIM_THRESHOLD, min(_TRIM_THRESHOLD, 2**31 - 1)) == 1 and ok
    return ok


def minor_faults() -> int:
    """Minor page faults of this process so far (``getrusage``): pages the kernel had to map
    in, e.g. for memory the allocator took fresh from the OS."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
