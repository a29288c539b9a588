"""Training options for speed and memory: checkpointing, SLTT, mixed precision, the allocator.

Each option is checked where it enters (config bounds, one-line refusals) and against the
plain run (exact options give the same weights; approximations are deterministic)."""

import os
import subprocess
import sys

import pytest
import torch

from spikeseg import runtime
from spikeseg.config import load_config
from spikeseg.engine import load_checkpoint, train
from spikeseg.errors import SpikesegError
from spikeseg.models import create

from .conftest import tiny_overrides


@pytest.mark.parametrize("override,message", [
    ("train.checkpoint_steps=-1", "an int >= 0"),
    ("train.bptt=online", "one of full, sltt"),
    ("train.sltt_k=0", "an int >= 1 or null"),
    ("train.precision=int8", "one of fp32, fp64, bf16, fp16"),
    ("train.allocator=tcmalloc", "one of auto, keep, lean, default"),
])
def test_option_bounds(override, message):
    with pytest.raises(SpikesegError, match=message):
        load_config(None, [override])


def _run(tmp_path, data_cache, name, *extra):
    cfg = load_config(None, tiny_overrides(tmp_path / "runs", data_cache) + [
        f"train.name={name}", "train.epochs=1", "model.timesteps=3", *extra])
    r = train(cfg, progress=False, log=lambda *_: None)
    model, _ = load_checkpoint(r.last_checkpoint)
    return r, model


def _max_diff(a, b):
    return max(float((p - q).abs().max()) for p, q in zip(a.state_dict().values(),
                                                         b.state_dict().values(), strict=True)
               if p.is_floating_point())


def test_checkpointed_training_gives_the_plain_weights(tmp_path, data_cache, monkeypatch):
    engine = sys.modules["spikeseg.engine.train"]  # the module (the package exports train())
    applied = []
    real = engine.configure_allocator
    monkeypatch.setattr(engine, "configure_allocator",
                        lambda *a: applied.append(runtime.resolve_allocator(*a)) or real(*a))
    _, plain = _run(tmp_path, data_cache, "plain")
    _, ck = _run(tmp_path, data_cache, "ck", "train.checkpoint_steps=2")
    assert _max_diff(plain, ck) < 1e-5
    if "SPIKESEG_MALLOC" not in os.environ:  # train.allocator=auto: lean with checkpointing
        assert applied == ["keep", "lean"]
    real("keep")


def test_sltt_training_is_deterministic_and_differs_from_bptt(tmp_path, data_cache):
    _, plain = _run(tmp_path, data_cache, "plain")
    r1, a = _run(tmp_path, data_cache, "s1", "train.bptt=sltt", "train.sltt_k=2")
    _, b = _run(tmp_path, data_cache, "s2", "train.bptt=sltt", "train.sltt_k=2")
    assert _max_diff(a, b) == 0.0
    assert _max_diff(a, plain) > 0.0
    assert r1.last_eval is not None


@pytest.mark.parametrize("precision,device,message", [
    ("bf16", "cpu", r"needs a CPU with native bfloat16 \(AVX512-BF16 or AMX\)"),
    ("fp16", "cpu", "runs on CUDA only"),
])
def test_mixed_precision_is_refused_where_it_cannot_run(precision, device, message, monkeypatch):
    monkeypatch.setattr(runtime, "native_bf16", lambda: False)
    with pytest.raises(SpikesegError, match=message) as e:
        runtime.check_precision(precision, torch.device(device))
    assert "\n" not in str(e.value)
    runtime.check_precision("fp32", torch.device("cpu"))


def test_bf16_refused_by_train_on_this_machine(tmp_path, data_cache, monkeypatch):
    monkeypatch.setattr(runtime, "native_bf16", lambda: False)
    cfg = load_config(None, tiny_overrides(tmp_path / "runs", data_cache) + [
        "train.precision=bf16", "train.device=cpu"])
    with pytest.raises(SpikesegError, match="train.precision=bf16 needs a CPU"):
        train(cfg, progress=False, log=lambda *_: None)


def test_bf16_numerics_keep_membranes_statistics_and_accumulator_in_float32():
    """The mixed-precision path itself (forced: this CPU may only emulate bfloat16):
    convolutions in bfloat16, spikes, membranes and statistics in float32; the fused kernels
    compute what the op-by-op path computes under the same autocast; firing rates stay those
    of float32 (individual spikes of a deep random network diverge, as in any low-precision
    SNN run)."""
    torch.manual_seed(0)
    m = create("spiking_fcn", 3, timesteps=3, width=0.25).train()
    ref = create("spiking_fcn", 3, timesteps=3, width=0.25).train()
    ref.load_state_dict(m.state_dict())
    ref.execution.fused = False
    x = (torch.rand(3, 2, 3, 32, 32) < 0.4).float()
    seen = {"conv": set(), "spikes": set()}
    rates: dict[str, list[float]] = {}
    hooks = [mod.register_forward_hook(lambda mod_, a, out: seen["conv"].add(out.dtype))
             for mod in m.modules() if isinstance(mod, torch.nn.Conv2d)]
    for name, lif in m.neurons():
        hooks.append(lif.register_spike_hook(
            lambda mod_, s, t, n=name: (seen["spikes"].add(s.dtype),
                                        rates.setdefault(n, []).append(float(s.detach().mean())))))
    with runtime.autocast("bf16", torch.device("cpu")):
        out = m(x)
        ref_out = ref(x)
    for h in hooks:
        h.remove()
    assert seen["conv"] == {torch.bfloat16} and seen["spikes"] == {torch.float32}
    assert all(b.dtype in (torch.float32, torch.int64) for b in m.buffers())
    assert torch.equal(out, ref_out)
    out.float().square().mean().backward()
    ref_out.float().square().mean().backward()
    for p, q in zip(m.parameters(), ref.parameters(), strict=True):
        assert p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()
        assert torch.allclose(p.grad, q.grad, rtol=1e-3, atol=1e-5 * float(q.grad.abs().max()))
    fp32 = create("spiking_fcn", 3, timesteps=3, width=0.25).train()
    fp32.load_state_dict(ref.state_dict())
    fp32_rates: dict[str, list[float]] = {}
    for name, lif in fp32.neurons():
        lif.register_spike_hook(
            lambda mod_, s, t, n=name: fp32_rates.setdefault(n, []).append(float(s.mean())))
    with torch.no_grad():
        fp32(x)
    for name in rates:
        a, b = sum(rates[name]), sum(fp32_rates[name])
        assert abs(a - b) <= 0.1 * b + 1e-3, name


def test_loss_falls_under_bf16_autocast():
    torch.manual_seed(0)
    m = create("spiking_deeplab", 3, timesteps=3, width=0.125, encoding="direct")
    x = torch.rand(4, 3, 24, 24)
    y = (x.mean(1) > 0.5).long()
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    losses = []
    for _ in range(25):
        with runtime.autocast("bf16", torch.device("cpu")):
            loss = torch.nn.functional.cross_entropy(m(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5


_FAULTS = """
import torch, sys
from spikeseg import runtime
if sys.argv[1] == "on":
    assert runtime.configure_allocator()
torch.set_num_threads(1)
counts = []
for i in range(10):   # a 'step': activations above glibc's 32 MiB mmap ceiling, then freed
    before = runtime.minor_faults()
    xs = [torch.ones(n << 20 >> 2) for n in (48, 40, 64, 8)]
    del xs
    counts.append(runtime.minor_faults() - before)
print(sorted(counts[2:])[4])   # the median step after warm-up
"""


def test_allocator_setting_stops_refaulting_freed_memory():
    """Buffers of 40-64 MiB allocated and freed every 'step': without the setting glibc maps
    them afresh each time (~40k minor faults a step); with it, freed heap memory is reused
    (fragmentation, or a loaded machine, still costs a fresh block now and then: the median
    step is compared)."""
    def faults(mode):
        env = {k: v for k, v in os.environ.items()
               if k not in ("GLIBC_TUNABLES", "SPIKESEG_MALLOC")}
        out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True,
                             text=True, check=True, env=env)
        return int(out.stdout.strip())

    if not sys.platform.startswith("linux"):
        pytest.skip("glibc malloc settings are Linux-only")
    off, on = faults("off"), faults("on")
    assert off > 40960 * 0.9  # a step faults 160 MiB of 4 KiB pages in
    assert on < off / 3


_RESIDENT = """
import torch, sys
from spikeseg import runtime
assert runtime.configure_allocator(sys.argv[1])
torch.set_num_threads(1)

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) << 10

_ = torch.ones(1 << 18) * 2  # torch's own lazy set-up is not the allocator's doing
del _
before = rss()
# Blocks of 2-24 MiB with interleaved lifetimes, the pattern that fragments a heap.
keep = []
for i in range(24):
    a = torch.ones((2 + i % 12) << 18)
    b = torch.ones((24 - i % 12) << 18)
    keep.append(a)
    del b
del keep, a  # (a: the last block, still named)
print((rss() - before) >> 20)
"""


@pytest.mark.parametrize("mode", ["lean", "keep"])
def test_lean_allocator_gives_freed_blocks_back(mode):
    """lean: resident memory follows the live tensors (all freed: back near the start);
    keep: the freed blocks stay resident for reuse (what the fault test above relies on)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc malloc settings are Linux-only")
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "SPIKESEG_MALLOC")}
    out = subprocess.run([sys.executable, "-c", _RESIDENT, mode], capture_output=True,
                         text=True, check=True, env=env)
    held = int(out.stdout.strip())  # MiB still resident after every block was freed
    if mode == "lean":
        assert held < 8
    else:
        assert held > 100  # about 200 MiB of freed blocks kept


def test_allocator_modes_resolve():
    env = dict(os.environ)
    try:
        os.environ.pop("SPIKESEG_MALLOC", None)
        assert runtime.resolve_allocator("auto", 0) == "keep"
        assert runtime.resolve_allocator("auto", 4) == "lean"
        assert runtime.resolve_allocator("keep", 4) == "keep"
        os.environ["SPIKESEG_MALLOC"] = "lean"
        assert runtime.resolve_allocator("keep", 0) == "lean"
        os.environ["SPIKESEG_MALLOC"] = "fast"
        with pytest.raises(SpikesegError, match="SPIKESEG_MALLOC must be one of"):
            runtime.resolve_allocator("auto")
        from spikeseg.cli import main

        assert main(["--help"]) == 2  # refused before anything runs, in one line
    finally:
        os.environ.clear()
        os.environ.update(env)
    with pytest.raises(SpikesegError, match="train.allocator"):
        runtime.resolve_allocator("fast")
