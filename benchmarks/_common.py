"""Shared helpers of the benchmark scripts: machine description, timing statistics, peak memory,
the allocator setting of the measuring processes, one subprocess per implementation (run to
completion, or kept alive and driven round by round), Markdown tables and JSON output.

Not part of the ``spikeseg`` package; imported by the scripts in this folder (Python puts a
script's own folder on ``sys.path``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import platform
import queue
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

RESULT_MARKER = "@@BENCH-RESULT@@"


# --------------------------------------------------------------------------------------------
# Machine
# --------------------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    m = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return m.group(1).strip() if m else (platform.processor() or "unknown")


def cpu_flags_of_note() -> list[str]:
    """The vector-extension flags that matter for these kernels (AVX2, AVX-512, AMX...)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    m = re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE)
    flags = set(m.group(1).split()) if m else set()
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")
    return [f for f in wanted if f in flags]


BF16_FLAGS_SHOWN = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
"""The flags the machine line names, present or not (native bf16 needs one of the last two)."""


def load_average() -> list[float] | None:
    """``os.getloadavg()`` (1, 5, 15 minutes), or None where there is none."""
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None


def cpu_capability(machine: dict[str, Any]) -> str:
    """``"CPU capability AVX2 (avx2 yes, avx512f no, ...)"`` from :func:`machine_info`."""
    have = set(machine.get("cpu_flags") or [])
    flags = ", ".join(f"{f} {'yes' if f in have else 'no'}" for f in BF16_FLAGS_SHOWN)
    return f"torch CPU capability {machine['torch_cpu_capability']} ({flags})"


def fmt_load(load: list[float] | None) -> str:
    return "n/a" if not load else " / ".join(f"{v:.2f}" for v in load)


def machine_info(threads: int, device: str) -> dict[str, Any]:
    """What the numbers were measured on."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags_of_note(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "torch_threads": threads,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "load_average_at_start": load_average(),
        "memory_total_bytes": meminfo_bytes("MemTotal"),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda_version"] = torch.version.cuda
    for name in ("snntorch", "spikingjelly", "spikeseg"):
        info[f"{name}_version"] = package_version(name)
    return info


def package_version(name: str) -> str | None:
    """Installed version of a distribution, or None."""
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover
        return None
    try:
        return version(name)
    except PackageNotFoundError:
        return None


# --------------------------------------------------------------------------------------------
# Timing and memory
# --------------------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    """Wait for queued kernels (CUDA); no-op on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _status_kb(field: str) -> int | None:
    try:
        m = re.search(rf"^{field}:\s+(\d+)\s*kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(m.group(1)) if m else None


class PeakMemory:
    """Peak memory used above a baseline, in bytes.

    CUDA: ``torch.cuda.max_memory_allocated`` minus the memory allocated at :meth:`start`.
    CPU: the process's peak resident set size minus its resident size at :meth:`start`. On
    Linux the peak is reset at :meth:`start` (``/proc/self/clear_refs``), so it covers only
    what follows; where that is not possible, ``ru_maxrss`` is used, which is right only in a
    fresh process whose peak so far is its current size (hence one subprocess per
    implementation).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.method = ""
        self.baseline = 0

    def start(self) -> None:
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline = torch.cuda.memory_allocated(self.device)
            self.method = "torch.cuda.max_memory_allocated"
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM (peak RSS) to the current RSS
            rss = _status_kb("VmRSS")
            if rss is None or _status_kb("VmHWM") is None:
                raise OSError("no VmRSS/VmHWM")
            self.baseline = rss * 1024
            self.method = "peak RSS (VmHWM, reset at start)"
        except OSError:
            self.baseline = (_status_kb("VmRSS") or 0) * 1024
            self.method = "ru_maxrss"

    def peak(self) -> int:
        """Peak bytes above the baseline since :meth:`start`."""
        if self.device.type == "cuda":
            sync(self.device)
            return torch.cuda.max_memory_allocated(self.device) - self.baseline
        if self.method.startswith("peak RSS"):
            hwm = _status_kb("VmHWM") or 0
        else:
            hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
        return max(0, hwm * 1024 - self.baseline)


def meminfo_bytes(field: str = "MemAvailable") -> int | None:
    """A field of /proc/meminfo in bytes (None where it cannot be read)."""
    try:
        m = re.search(rf"^{field}:\s+(\d+)\s*kB", Path("/proc/meminfo").read_text(), re.M)
    except OSError:
        return None
    return int(m.group(1)) * 1024 if m else None


def rss_bytes() -> tuple[int | None, int | None]:
    """``(current, peak)`` resident set size of this process (VmRSS, VmHWM), in bytes."""
    rss, hwm = _status_kb("VmRSS"), _status_kb("VmHWM")
    return (None if rss is None else rss * 1024), (None if hwm is None else hwm * 1024)


def busy_warning(threads: int, device: str) -> str | None:
    """A warning when other processes keep the cores busy (timings then mean little: OpenMP
    threads waiting on descheduled peers can make small parallel ops 10-100× slower)."""
    if not device.startswith("cpu") or not hasattr(os, "getloadavg"):
        return None
    load = os.getloadavg()[0]
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    if load > cores - threads + 0.75:
        return (f"load average {load:.1f} on {cores} cores with {threads} torch threads: "
                "other processes compete for the cores, so these timings are unreliable")
    return None


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    """``(fn(), seconds)``, synchronising the device around the call."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


# --------------------------------------------------------------------------------------------
# The C allocator of the measuring processes
# --------------------------------------------------------------------------------------------

NEUTRAL_TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736"
"""``--malloc neutral``: glibc serves every block from its heap and never trims it, so freed
activation memory is reused instead of being unmapped and page-faulted in again (what
``spikeseg.runtime.configure_allocator`` does through ``mallopt``), for every implementation."""

MALLOC_MODES = ("default", "neutral")


def malloc_env(mode: str) -> dict[str, str]:
    """Environment overrides of a worker process for ``--malloc MODE``."""
    if mode == "neutral":
        # SPIKESEG_MALLOC=default: spikeseg leaves the allocator to the tunables
        return {"GLIBC_TUNABLES": NEUTRAL_TUNABLES, "SPIKESEG_MALLOC": "default"}
    if mode == "default":
        return {}
    raise ValueError(f"malloc mode must be one of {MALLOC_MODES}, not {mode!r}")


def apply_neutral_malloc() -> bool:
    """In this process: the settings of :data:`NEUTRAL_TUNABLES` through ``mallopt`` (for
    in-process runs, where the environment comes too late). True when applied (glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(-4, 0) == 1                  # M_MMAP_MAX
    return mallopt(-1, 2**31 - 1) == 1 and ok  # M_TRIM_THRESHOLD (an int here: 2 GiB - 1)


# --------------------------------------------------------------------------------------------
# One subprocess per implementation
# --------------------------------------------------------------------------------------------


def emit_result(result: dict[str, Any]) -> None:
    """Worker side: print the result for :func:`run_worker` to parse."""
    sys.stdout.write(RESULT_MARKER + json.dumps(result) + "\n")
    sys.stdout.flush()


def worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PYTHONWARNINGS", "ignore")
    env.update(extra or {})
    return env


def run_worker(script: str, config: dict[str, Any], timeout: float | None = None,
               env: dict[str, str] | None = None) -> dict:
    """Run ``python script --worker CONFIG_JSON`` in a fresh interpreter; its result dict.

    ``env``: variables set in the worker's environment (e.g. :func:`malloc_env`). A failing
    worker gives ``{"error": ...}`` with the tail of its output.
    """
    cmd = [sys.executable, script, "--worker", json.dumps(config)]
    env = worker_env(env)
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER):])
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
    return {"error": f"worker exited with {proc.returncode}: " + " | ".join(tail)}


class ServedWorker:
    """A worker process kept alive and driven by one-line commands on its stdin
    (``python script --worker CONFIG_JSON --serve``), so that several implementations can be
    measured in interleaved rounds. The worker answers each command with one
    :func:`emit_result` line; :func:`serve` is its side of the loop.
    """

    def __init__(self, script: str, config: dict[str, Any],
                 env: dict[str, str] | None = None) -> None:
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, script, "--worker", json.dumps(config), "--serve"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True,
            bufsize=1, env=worker_env(env),
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._tail: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def receive(self, timeout: float | None = None) -> dict[str, Any]:
        """The next result line, or ``{"error": ...}`` (the worker died or timed out)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                self.kill()
                return {"error": f"timed out after {timeout} s"}
            if line is None:
                return {"error": self._failure()}
            if line.startswith(RESULT_MARKER):
                return json.loads(line[len(RESULT_MARKER):])
            self._tail = (self._tail + [line.rstrip()])[-15:]

    def request(self, command: str, timeout: float | None = None) -> dict[str, Any]:
        """Send one command line and wait for its answer."""
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return {"error": self._failure()}
        return self.receive(timeout)

    def _failure(self) -> str:
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            code = None
        self._stderr.seek(0)
        tail = (self._tail + self._stderr.read().strip().splitlines())[-15:]
        return f"worker exited with {code}: " + " | ".join(tail)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        """Let the worker exit (after its final answer) and reap it."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            self.kill()
        self._stderr.close()


def serve(handlers: dict[str, Callable[[list[str]], dict[str, Any]]],
          ready: dict[str, Any]) -> None:
    """Worker side of :class:`ServedWorker`: announce ``ready``, then answer each stdin line
    ``NAME [ARG ...]`` with ``handlers[NAME](args)`` until stdin closes or ``quit``."""
    emit_result(ready)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            break
        try:
            emit_result(handlers[words[0]](words[1:]))
        except Exception as e:  # report to the driver, keep serving
            emit_result({"error": f"{type(e).__name__}: {e}"})


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def fmt_seconds(s: float | None) -> str:
    if s is None or s != s:
        return "–"
    if s >= 1.0:
        return f"{s:.2f} s"
    return f"{s * 1e3:.1f} ms"


def fmt_bytes(b: float | None) -> str:
    if b is None:
        return "–"
    if b >= 1024**3:
        return f"{b / 1024**3:.2f} GiB"
    if b >= 10 * 1024**2:
        return f"{b / 1024**2:.0f} MiB"
    return f"{b / 1024**2:.1f} MiB"


def fmt_ratio(x: float | None) -> str:
    return "–" if x is None or x != x else f"{x:.2f}×"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: str, payload: dict[str, Any]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nraw numbers written to {path}")


def command_line() -> str:
    return " ".join([Path(sys.executable).name, *sys.argv])


# --------------------------------------------------------------------------------------------
# The driver pieces both scripts share
# --------------------------------------------------------------------------------------------


def finish_args(args: Any) -> Any:
    """Defaults that depend on ``--quick``: in-process and 1 thread for a smoke test."""
    if args.isolate is None:
        args.isolate = not args.quick
    if args.threads is None:
        args.threads = 1 if args.quick else torch.get_num_threads()
    return args


def select_impls(
    spec: str, known: Sequence[str], peer_of: Callable[[str], str | None],
    status: dict[str, str | None],
) -> tuple[list[str], list[str]]:
    """The implementations named in ``spec`` whose peer imports, and notes on those skipped."""
    impls = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [i for i in impls if i not in known]
    if unknown:
        sys.exit(f"unknown implementation(s) {', '.join(unknown)}; choose from "
                 f"{', '.join(known)}")
    if not impls:
        sys.exit(f"no implementation given; choose from {', '.join(known)}")
    impls = list(dict.fromkeys(impls))  # a name given twice runs once
    notes = [f"{name} not importable ({why}); its rows are skipped"
             for name, why in status.items() if why is not None]
    impls = [i for i in impls if peer_of(i) is None or status.get(peer_of(i)) is None]
    return impls, notes


def measure_all(
    impls: Sequence[str], make_cfg: Callable[[str], dict[str, Any]],
    measure: Callable[[dict[str, Any]], dict[str, Any]], script: str, isolate: bool,
    timeout: float | None = None,
) -> dict[str, dict[str, Any]]:
    """Measure each implementation, in its own subprocess when ``isolate``; errors are kept."""
    results: dict[str, dict[str, Any]] = {}
    for impl in impls:
        cfg = make_cfg(impl)
        sys.stdout.flush()
        print(f"… {impl}", file=sys.stderr, flush=True)
        if isolate:
            kw = {} if timeout is None else {"timeout": timeout}
            res = run_worker(script, cfg, **kw)
        else:
            try:
                res = measure(cfg)
            except Exception as e:  # report and go on with the others
                res = {"error": f"{type(e).__name__}: {e}"}
        results[impl] = res
    return results


def reference_row(
    results: dict[str, dict[str, Any]], preferred: str,
) -> tuple[str | None, dict[str, Any] | None]:
    """The row ratios are taken against: ``preferred`` when it ran, else the fastest spikeseg
    row (``(None, None)`` when no spikeseg row ran)."""
    ok = {k: v for k, v in results.items() if "error" not in v and "skipped" not in v}
    if preferred in ok:
        return preferred, ok[preferred]
    _, name, base = fastest_spikeseg(ok)
    return name, base


def fastest_spikeseg(
    results: dict[str, dict[str, Any]],
) -> tuple[dict[str, dict[str, Any]], str | None, dict[str, Any] | None]:
    """``(successful results, name and result of the fastest spikeseg row)``: the reference."""
    ok = {k: v for k, v in results.items() if "error" not in v}
    name = min((k for k in ok if k.startswith("spikeseg")),
               key=lambda k: ok[k]["median_total_s"], default=None)
    return ok, name, (ok.get(name) if name else None)
