"""The Triton LIF kernels against the PyTorch references, on CPU under Triton's interpreter.

The kernels are the code that runs on CUDA (``spikeseg.kernels.triton_lif``); here Triton's
interpreter executes the same kernel source on CPU tensors, so CI checks their exactness
without a GPU.
"""

import pytest
import torch

pytest.importorskip("triton", reason="the dev extra installs triton (pip install -e '.[dev]')")

from spikeseg import models  # noqa: E402, I001
from spikeseg.kernels import bntt_lif  # noqa: E402
from spikeseg.kernels.triton_lif import bntt_lif_triton, lif_multistep  # noqa: E402
from spikeseg.neurons import LIF, get_surrogate  # noqa: E402
from spikeseg.norm import BNTT  # noqa: E402


def _reference(x, leak, theta, surrogate, scale=None, shift=None, mem=None, hard=False,
               detach=True, temporal=True):
    """Op-by-op LIF steps through autograd (``LIF.step``), with the affine map first."""
    neuron = LIF(leak=leak, threshold=theta, reset="hard" if hard else "soft",
                 surrogate=surrogate, detach_reset=detach)
    out, m = [], mem
    for t in range(x.shape[0]):
        y = x[t]
        if scale is not None:
            shape = (1, -1) + (1,) * (x.dim() - 3)
            y = y * scale[t].view(shape) + shift[t].view(shape)
        if m is not None and not temporal:
            m = m.detach()
        s, m = neuron.step(y, m)
        out.append(s)
    return torch.stack(out), m


SURROGATES = [get_surrogate("pwl"), get_surrogate("pwl", gamma=0.3),
              get_surrogate("fast_sigmoid", slope=25.0), get_surrogate("exponential"),
              get_surrogate("pass_through")]


@pytest.mark.parametrize("hard", [False, True])
@pytest.mark.parametrize("detach", [True, False])
def test_forward_and_gradients_match_lif_steps(hard, detach):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(5, 2, 3, 4, 5, generator=g) * 1.5).requires_grad_()
    surrogate = get_surrogate("pwl", gamma=0.5)
    s, m = lif_multistep(x, 0.9, 1.0, surrogate, hard=hard, detach_reset=detach)
    xr = x.detach().clone().requires_grad_()
    sr, mr = _reference(xr, 0.9, 1.0, surrogate, hard=hard, detach=detach)
    assert torch.equal(s, sr)
    torch.testing.assert_close(m, mr, rtol=0, atol=1e-6)
    w = torch.randn(s.shape, generator=g)
    wm = torch.randn(m.shape, generator=g)
    ((s * w).sum() + (m * wm).sum()).backward()
    ((sr * w).sum() + (mr * wm).sum()).backward()
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("surrogate", SURROGATES, ids=repr)
def test_every_surrogate(surrogate):
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(4, 3, 2, 7, generator=g) + 0.8).requires_grad_()
    s, _ = lif_multistep(x, 0.99, 1.0, surrogate)
    xr = x.detach().clone().requires_grad_()
    sr, _ = _reference(xr, 0.99, 1.0, surrogate)
    assert torch.equal(s, sr)
    w = torch.randn(s.shape, generator=g)
    (s * w).sum().backward()
    (sr * w).sum().backward()
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-5, atol=1e-6)


def test_affine_map_initial_membrane_and_sltt():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 2, 3, 3, 3, generator=g, requires_grad=True)
    scale = (torch.rand(4, 3, generator=g) + 0.5).requires_grad_()
    shift = (torch.randn(4, 3, generator=g) * 0.3).requires_grad_()
    mem = torch.randn(2, 3, 3, 3, generator=g, requires_grad=True)
    leaves = [x, scale, shift, mem]
    for temporal in (True, False):
        ref = [t.detach().clone().requires_grad_() for t in leaves]
        s, m = lif_multistep(x, 0.95, 1.0, get_surrogate("pwl"), scale=scale, shift=shift,
                             mem=mem, temporal_grad=temporal)
        sr, mr = _reference(*ref[:1], 0.95, 1.0, get_surrogate("pwl"), scale=ref[1],
                            shift=ref[2], mem=ref[3], temporal=temporal)
        assert torch.equal(s, sr)
        torch.testing.assert_close(m, mr, rtol=0, atol=1e-6)
        w = torch.randn(s.shape, generator=g)
        (s * w).sum().backward()
        (sr * w).sum().backward()
        for a, b in zip(leaves, ref, strict=True):
            if b.grad is None:  # SLTT: no gradient through the initial membrane
                assert not temporal and a is mem and a.grad is None
                continue
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6)
            a.grad = None


def test_channels_last_equals_contiguous():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 4, 5, 5, generator=g)  # [n·B, C, H, W] with n = 2, B = 3
    xcl = x.contiguous(memory_format=torch.channels_last)
    scale, shift = torch.rand(2, 4, generator=g) + 0.5, torch.randn(2, 4, generator=g)
    a, ma = lif_multistep(x.unflatten(0, (2, 3)), 0.9, 1.0, get_surrogate("pwl"),
                          scale=scale, shift=shift)
    b, mb = lif_multistep(xcl.unflatten(0, (2, 3)), 0.9, 1.0, get_surrogate("pwl"),
                          scale=scale, shift=shift)
    assert b[0].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(a, b) and torch.equal(ma, mb)


@pytest.mark.parametrize("training", [True, False])
def test_bntt_lif_triton_matches_the_fused_torch_kernel(training):
    """The same block through bntt_lif (PyTorch) and bntt_lif_triton: spikes, running statistics
    and gradients of the convolution output, γ and β."""
    g = torch.Generator().manual_seed(4)
    n, B, C = 3, 4, 5
    norms = []
    for _ in range(2):
        torch.manual_seed(0)
        norm = BNTT(C, n, bias=True)
        with torch.no_grad():
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.2, 0.4)
            norm.running_var.uniform_(0.5, 2.0)
        norm.train(training)
        norms.append(norm)
    neuron = LIF(leak=0.99, threshold=1.0)
    x = (torch.randn(n * B, C, 6, 6, generator=g) * 2 + 0.5).requires_grad_()
    xr = x.detach().clone().requires_grad_()
    s, m = bntt_lif_triton(x, None, norms[0], neuron, 0, n)
    sr, mr = bntt_lif(xr, None, norms[1], neuron, 0, n)
    # The same normalisation rounded differently (x·a + b against (x − μ)·σ⁻¹·γ + β): the
    # membranes agree to float32 rounding, and no membrane of this input lies that close to θ.
    assert torch.equal(s, sr)
    torch.testing.assert_close(m, mr, rtol=1e-5, atol=1e-5)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(norms[0], name), getattr(norms[1], name))
    w = torch.randn(s.shape, generator=g)
    (s * w).sum().backward()
    (sr * w).sum().backward()
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(norms[0].weight.grad, norms[1].weight.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(norms[0].bias.grad, norms[1].bias.grad, rtol=1e-4, atol=1e-5)


def test_model_with_the_triton_kernel_trains_like_the_torch_kernel(monkeypatch):
    """A whole Spiking-FCN training step in fold mode, Triton (interpreted) vs PyTorch kernels."""
    from spikeseg.kernels import triton_lif

    calls = []
    original = triton_lif.bntt_lif_triton
    monkeypatch.setattr(triton_lif, "bntt_lif_triton",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    losses, grads = [], []
    for kernel in ("torch", "triton"):
        torch.manual_seed(0)
        model = models.create("spiking_fcn", 3, width=0.0625, timesteps=3, step_mode="fold")
        model.execution.kernel = kernel
        model.train()
        x = torch.rand(3, 2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
        out = model(x)
        loss = out.square().mean()
        loss.backward()
        losses.append(loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()
                                if p.grad is not None]))
    assert len(calls) == sum(isinstance(m, BNTT) for m in model.modules())  # every block
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-3, atol=1e-5)


def test_errors_are_clear():
    x = torch.randn(2, 2, 3, 4)
    with pytest.raises(ValueError, match="both scale and shift"):
        lif_multistep(x, 0.9, 1.0, get_surrogate("pwl"), scale=torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"\[n, C\]"):
        lif_multistep(x, 0.9, 1.0, get_surrogate("pwl"), scale=torch.ones(3, 3),
                      shift=torch.ones(3, 3))
    with pytest.raises(ValueError, match="no kernel"):
        lif_multistep(x.double(), 0.9, 1.0, get_surrogate("pwl"))


def test_evaluation_beyond_the_trained_timesteps():
    """Inference past BNTT's T reuses the last timestep's statistics, in both kernels."""
    g = torch.Generator().manual_seed(5)
    norm = BNTT(4, 3, bias=True)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.2, 0.4)
        norm.running_mean.normal_(0.0, 0.3)
        norm.running_var.uniform_(0.5, 2.0)
    norm.eval()
    neuron = LIF(leak=0.99, threshold=1.0)
    x = torch.randn(4 * 2, 4, 5, 5, generator=g) * 2
    mem = torch.randn(2, 4, 5, 5, generator=g)
    s, m = bntt_lif_triton(x, mem, norm, neuron, 1, 4)  # timesteps 1..4 of a T=3 BNTT
    sr, mr = bntt_lif(x, mem, norm, neuron, 1, 4)
    assert torch.equal(s, sr)
    torch.testing.assert_close(m, mr, rtol=1e-5, atol=1e-5)
