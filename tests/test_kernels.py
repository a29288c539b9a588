"""Fast paths against their references: the fused BNTT + LIF kernel, compact spike saving,
time-chunk checkpointing and SLTT (same spikes, gradients within 1e-5)."""

import copy

import pytest
import torch

from spikeseg import models
from spikeseg.kernels import bntt_lif, bntt_lif_reference
from spikeseg.kernels import spike_saving as saving
from spikeseg.models.base import Execution
from spikeseg.neurons import LIF
from spikeseg.norm import BNTT


def _pair(C=4, T=5, bias=False, **lif):
    norm = BNTT(C, T, bias=bias)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        if bias:
            norm.bias.uniform_(-0.3, 0.3)
        norm.running_mean.normal_()
        norm.running_var.uniform_(0.5, 2.0)
    return norm, LIF(**lif)


def _close(a, b, tol=1e-5):
    if a is None or b is None:
        assert a is None and b is None
        return
    scale = max(1.0, float(b.abs().max()))
    assert float((a - b).abs().max()) <= tol * scale


@pytest.mark.parametrize("steps,t0", [(1, 0), (1, 3), (3, 0), (4, 1)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("reset,detach", [("soft", True), ("hard", True), ("soft", False),
                                          ("hard", False)])
@pytest.mark.parametrize("with_mem", [False, True])
def test_fused_bntt_lif_equals_reference(steps, t0, training, reset, detach, with_mem):
    """Same spikes, membranes and running statistics bit for bit; gradients within 1e-5."""
    B, C = 3, 4
    norm, lif = _pair(C, T=6, bias=True, leak=0.9, threshold=0.8, reset=reset,
                      detach_reset=detach)
    norm.train(training)
    ref_norm = copy.deepcopy(norm)
    g = torch.Generator().manual_seed(steps * 10 + t0)
    x = (torch.randn(steps * B, C, 5, 6, generator=g) * 1.5).contiguous(
        memory_format=torch.channels_last)
    mem = torch.randn(B, C, 5, 6, generator=g) if with_mem else None
    gs = torch.randn(steps * B, C, 5, 6, generator=g)
    gm = torch.randn(B, C, 5, 6, generator=g)

    def run(fn, nrm):
        xi = x.clone().requires_grad_()
        mi = mem.clone().requires_grad_() if mem is not None else None
        s, m = fn(xi, mi, nrm, lif, t0, steps)
        ((s * gs).sum() + (m * gm).sum()).backward()
        return s, m, xi.grad, None if mi is None else mi.grad, nrm.weight.grad, nrm.bias.grad

    a = run(bntt_lif, norm)
    b = run(bntt_lif_reference, ref_norm)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    for u, v in zip(a[2:], b[2:], strict=True):
        _close(u, v)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(getattr(norm, name), getattr(ref_norm, name)), name


@pytest.mark.parametrize("surrogate", ["pwl", "fast_sigmoid", "exponential", "pass_through"])
def test_fused_bntt_lif_surrogates_and_no_grad_path(surrogate):
    norm, lif = _pair(surrogate=surrogate)
    ref = copy.deepcopy(norm)
    x = torch.randn(2 * 3, 4, 4, 4)
    with torch.no_grad():
        s, m = bntt_lif(x, None, norm, lif, 0, 2)
        r, q = bntt_lif_reference(x, None, ref, lif, 0, 2)
    assert torch.equal(s, r) and torch.equal(m, q)
    assert torch.equal(norm.running_var, ref.running_var)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    bntt_lif(xa, None, norm, lif, 0, 2)[0].square().sum().backward()
    bntt_lif_reference(xb, None, ref, lif, 0, 2)[0].square().sum().backward()
    _close(xa.grad, xb.grad)
    _close(norm.weight.grad, ref.weight.grad)


def test_fused_bntt_lif_without_statistics_update_and_beyond_T():
    norm, lif = _pair(T=3)
    before = norm.running_mean.clone()
    s, _ = bntt_lif(torch.randn(4, 4, 3, 3), None, norm, lif, 1, 1, update_stats=False)
    assert torch.equal(norm.running_mean, before) and int(norm.num_batches_tracked.sum()) == 0
    with pytest.raises(RuntimeError, match="cannot train at timestep 3"):
        bntt_lif(torch.randn(4, 4, 3, 3), None, norm, lif, 3, 1)
    norm.eval()  # evaluation beyond T uses the last timestep's statistics, as BNTT.step
    with torch.no_grad():
        a, _ = bntt_lif(torch.ones(2, 4, 3, 3), None, norm, lif, 7, 1)
        b, _ = bntt_lif_reference(torch.ones(2, 4, 3, 3), None, norm, lif, 7, 1)
    assert torch.equal(a, b)


@pytest.mark.parametrize("size,dilation", [(16, 12), (8, 12), (9, 6), (16, 2)])
def test_valid_tap_weight_gradient_equals_onednn(size, dilation):
    from spikeseg.kernels.conv_taps import use_valid_taps, valid_fraction, valid_tap_conv2d

    conv = torch.nn.Conv2d(6, 10, 3, padding=dilation, dilation=dilation, bias=False)
    conv = conv.to(memory_format=torch.channels_last)
    x = (torch.rand(3, 6, size, size) < 0.3).float().contiguous(
        memory_format=torch.channels_last).requires_grad_()
    g = torch.randn(3, 10, size, size)
    assert use_valid_taps(conv, x) == (valid_fraction(conv, size, size) <= 0.5)
    y = valid_tap_conv2d(conv, x)
    gx, gw = torch.autograd.grad(y, (x, conv.weight), g)
    ref = torch.nn.functional.conv2d(x, conv.weight, padding=dilation, dilation=dilation)
    rx, rw = torch.autograd.grad(ref, (x, conv.weight), g)
    assert torch.equal(y, ref)
    _close(gx, rx)
    _close(gw, rw)


# --------------------------------------------------------------------------- whole models

SPIKING = ["spiking_deeplab", "spiking_fcn", "spiking_deeplab_res", "spiking_fcn_res"]


def _grads(m, x, **kw):
    out = m(x, **kw)
    loss = out.square().mean() + out.mean()
    params = [p for p in m.parameters() if p.requires_grad]
    return out, torch.autograd.grad(loss, params, allow_unused=True)


def _compare(a, b, tol=1e-5):
    (oa, ga), (ob, gb) = a, b
    assert torch.equal(oa, ob)
    for u, v in zip(ga, gb, strict=True):
        _close(u, v, tol)


@pytest.mark.parametrize("name", SPIKING)
@pytest.mark.parametrize("mode", ["step", "fold"])
def test_fused_model_equals_reference_path(name, mode):
    """The fused kernels and compact spike saving change nothing: logits identical,
    gradients within 1e-5, running statistics identical."""
    m = models.create(name, 3, timesteps=3, width=0.125, step_mode=mode).train()
    r = copy.deepcopy(m)
    r.execution.fused = False
    x = (torch.rand(3, 2, 3, 32, 32) < 0.4).float()
    _compare(_grads(m, x), _grads(r, x))
    for (n, u), v in zip(m.named_buffers(), r.buffers(), strict=True):
        assert torch.equal(u, v), n


def test_fused_path_saves_spikes_as_bytes_and_less_than_the_reference():
    """Saved-tensor accounting (activations, not weights): spikes are kept as bool, the rest
    as float; in total the fused path keeps at most 80% of what the op-by-op path keeps."""
    m = models.create("spiking_deeplab", 3, timesteps=3, width=0.25).train()
    x = (torch.rand(3, 2, 3, 32, 32) < 0.4).float()
    saved: dict[str, int] = {"bool": 0, "float": 0}
    seen: set[int] = {p.untyped_storage().data_ptr() for p in m.parameters()}  # not weights
    orig = saving.SpikeRegistry.pack

    def count(t):
        key = t.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            saved["bool" if t.dtype == torch.bool else "float"] += t.untyped_storage().nbytes()

    def pack(self, t):
        p = orig(self, t)
        count(p.bits if isinstance(p, saving._Packed) else t)
        return p

    saving.SpikeRegistry.pack = pack
    try:
        m(x)
    finally:
        saving.SpikeRegistry.pack = orig
    fused = saved["bool"] + saved["float"]
    assert saved["bool"] > 0
    r = copy.deepcopy(m)
    weights = {p.untyped_storage().data_ptr() for p in r.parameters()}
    ref_bytes: set[tuple[int, int]] = set()

    def ref_pack(t):
        if t.untyped_storage().data_ptr() not in weights:
            ref_bytes.add((t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()))
        return t

    r.execution.fused = False
    with torch.autograd.graph.saved_tensors_hooks(ref_pack, lambda t: t):
        r(x)
    ref = sum(n for _, n in ref_bytes)
    assert fused <= 0.8 * ref, (fused, ref)


@pytest.mark.parametrize("mode", ["step", "fold"])
def test_no_stack_or_cat_in_the_fused_path(mode):
    """Time-first pre-encoded input runs without stacking, concatenating or slice copies of
    activations in the forward pass, and without stacking or concatenating in backward."""
    m = models.create("spiking_deeplab", 3, timesteps=3, width=0.125, step_mode=mode).train()
    x = (torch.rand(3, 2, 3, 32, 32) < 0.4).float()
    from torch.profiler import profile

    with profile(record_shapes=True) as fwd:
        out = m(x)
    with profile() as bwd:
        out.sum().backward()
    names_f = [e.name for e in fwd.events()]
    names_b = [e.name for e in bwd.events()]
    for op in ("aten::stack", "aten::cat"):
        assert op not in names_f and op not in names_b, op

    def ancestors(e):
        while e.cpu_parent is not None:
            e = e.cpu_parent
            yield e.name

    # The only copies of activations in forward are dtype conversions (spikes packed as bool
    # for backward, the comparison's result) and the head's upsampling.
    for e in fwd.events():
        if e.name == "aten::copy_" and e.input_shapes and \
                torch.Size(e.input_shapes[0]).numel() > 64:
            up = list(ancestors(e))
            assert "aten::_to_copy" in up or "aten::upsample_bilinear2d" in up, up


# --------------------------------------------------------------------------- checkpointing


@pytest.mark.parametrize("name,mode,k", [
    ("spiking_deeplab", "step", 1), ("spiking_deeplab", "fold", 2), ("spiking_fcn", "step", 2),
    ("spiking_deeplab_res", "step", 3), ("spiking_fcn_res", "fold", 2),
])
def test_time_chunk_checkpointing_gives_the_plain_gradients(name, mode, k):
    """Checkpointing in chunks of K steps: logits identical, gradients within 1e-5, BNTT's
    running statistics and counters updated once (as in the plain run)."""
    m = models.create(name, 3, timesteps=4, width=0.125, step_mode=mode).train()
    c = copy.deepcopy(m)
    c.execution.checkpoint_steps = k
    x = torch.rand(2, 3, 32, 32)
    keys = torch.tensor([3, 9])
    _compare(_grads(m, x, keys=keys), _grads(c, x, keys=keys))
    for (n, u), v in zip(m.named_buffers(), c.buffers(), strict=True):
        assert torch.equal(u, v), n


def test_checkpointing_with_propagation_steps_and_per_step_logits():
    m = models.create("spiking_deeplab", 3, timesteps=3, width=0.125, propagation_steps=2,
                      step_mode="fold").train()
    m.execution.fused = False
    c = copy.deepcopy(m)
    c.execution.checkpoint_steps = 2
    x = torch.rand(2, 3, 32, 32)
    keys = torch.tensor([1, 2])
    _compare(_grads(m, x, keys=keys, return_steps=True),
             _grads(c, x, keys=keys, return_steps=True))


def test_checkpointing_is_refused_for_time_shared_norms():
    m = models.create("spiking_deeplab", 3, timesteps=3, width=0.125, norm="bn").train()
    m.execution.checkpoint_steps = 2
    with pytest.raises(ValueError, match="per-timestep norms"):
        m(torch.rand(1, 3, 32, 32))
    with torch.no_grad():  # nothing to checkpoint without gradients
        m(torch.rand(1, 3, 32, 32))


# --------------------------------------------------------------------------- SLTT


def _sltt_reference(m, x, keys, selected=None):
    """SLTT by hand: the network stepped with every membrane detached between timesteps,
    timesteps outside ``selected`` without gradients, their contributions scaled by S/K."""
    from spikeseg.models.layers import TimeContext

    size = x.shape[-2:]
    T = m.timesteps
    frames = list(m.encoder.steps(x, T, None, keys))
    ctx = TimeContext("step", T, fused=False, temporal_grad=False)
    acc = None
    for t, f in enumerate(frames):
        ctx.t = t
        on = selected is None or t in selected
        with torch.set_grad_enabled(on):
            feats = m.body(f, ctx)
        if on and selected is not None:
            k = T / len(selected)  # same value, gradient scaled by k
            feats = tuple(ft.detach() + (ft - ft.detach()) * k for ft in feats)
        acc = list(feats) if acc is None else [a + b for a, b in zip(acc, feats, strict=True)]
    return m._accumulated_head(tuple(a / T for a in acc), size, T)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("mode", ["step", "fold"])
def test_sltt_drops_the_temporal_gradient(fused, mode):
    m = models.create("spiking_deeplab", 3, timesteps=4, width=0.125, step_mode=mode).train()
    r = copy.deepcopy(m)
    m.execution = Execution(fused=fused, bptt="sltt")
    x = torch.rand(2, 3, 32, 32)
    keys = torch.tensor([5, 6])
    out, ga = _grads(m, x, keys=keys)
    ref = _sltt_reference(r, x, keys)
    assert torch.equal(out, ref)
    loss = ref.square().mean() + ref.mean()
    gb = torch.autograd.grad(loss, [p for p in r.parameters() if p.requires_grad],
                             allow_unused=True)
    for u, v in zip(ga, gb, strict=True):
        _close(u, v)
    full = copy.deepcopy(r)
    _, gf = _grads(full, x, keys=keys)  # BPTT differs (the temporal term is not zero)
    assert any(u is not None and not torch.allclose(u, v) for u, v in zip(ga, gf, strict=True))


def test_sltt_k_backpropagates_through_k_seeded_timesteps():
    m = models.create("spiking_deeplab", 3, timesteps=5, width=0.125).train()
    r = copy.deepcopy(m)
    m.execution = Execution(bptt="sltt", sltt_k=2, seed=11)
    chosen = m._sltt_steps(5)
    assert len(chosen) == 2 and chosen == m._sltt_steps(5)  # the seed fixes the draw
    x = torch.rand(2, 3, 32, 32)
    keys = torch.tensor([5, 6])
    out, ga = _grads(m, x, keys=keys)
    ref = _sltt_reference(r, x, keys, chosen)
    assert torch.equal(out, ref)
    gb = torch.autograd.grad(ref.square().mean() + ref.mean(),
                             [p for p in r.parameters() if p.requires_grad], allow_unused=True)
    for u, v in zip(ga, gb, strict=True):
        _close(u, v)
    c = copy.deepcopy(m)  # with checkpointing too: the same gradients
    c.execution.checkpoint_steps = 1
    _compare((out, ga), _grads(c, x, keys=keys))


def test_execution_options_are_checked():
    for bad in (dict(bptt="online"), dict(checkpoint_steps=-1), dict(sltt_k=0)):
        with pytest.raises(ValueError):
            Execution(**bad)


def test_forward_is_unchanged_by_every_execution_option():
    """Execution options change how gradients are computed, never the logits."""
    base = models.create("spiking_deeplab", 3, timesteps=4, width=0.125).train()
    x = torch.rand(2, 3, 32, 32)
    keys = torch.tensor([1, 2])
    ref = copy.deepcopy(base)(x, keys=keys)
    for fused, k, bptt in [(True, 3, "full"), (True, 0, "sltt"), (False, 3, "sltt"),
                           (False, 0, "full")]:
        m = copy.deepcopy(base)
        m.execution = Execution(fused=fused, checkpoint_steps=k, bptt=bptt, sltt_k=2, seed=0)
        assert torch.equal(m(x, keys=keys), ref), (fused, k, bptt)
