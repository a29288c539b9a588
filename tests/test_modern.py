"""The modern recipe's options each do what they claim (all off by default)."""

from __future__ import annotations

import pytest
import torch

from spikeseg import models, rng
from spikeseg.config import Config, load_config
from spikeseg.data.augment import augment_batch, check_augment
from spikeseg.engine.train import _forward_loss
from spikeseg.errors import SpikesegError
from spikeseg.neurons import LIF, PLIF

TINY = dict(width=0.125)


def test_direct_coding_feeds_the_analog_image_at_every_step():
    m = models.create("spiking_deeplab", 3, timesteps=3, encoding="direct", **TINY).eval()
    seen = []
    h = m.features[0].conv.register_forward_pre_hook(lambda _m, a: seen.append(a[0].clone()))
    x = torch.rand(2, 3, 16, 16)
    m(x)
    h.remove()
    assert len(seen) == 3 and all(torch.equal(s, x) for s in seen)
    from spikeseg.analysis.energy import count_ops, estimate_energy

    ops = count_ops(m, x)
    energy = estimate_energy(ops, 3)
    assert energy.layers[0].op == "MAC"  # the analog image is multiplied, not accumulated
    assert energy.layers[0].flops_snn == ops[0].flops * 3


def test_plif_learns_its_leak_and_threshold_and_equals_lif_at_init():
    torch.manual_seed(0)
    x = torch.randn(6, 2, 4, 5, 5, requires_grad=True)
    lif = LIF(leak=0.9, threshold=0.8)
    plif = PLIF(4, per="channel", learn_threshold=True, leak=0.9, threshold=0.8)
    a, b = lif(x), plif(x)
    assert torch.equal(a, b)  # the same spikes at initialisation
    (b * torch.arange(6.0).view(6, 1, 1, 1, 1)).sum().backward()
    assert plif.leak_logit.grad is not None and plif.leak_logit.grad.abs().sum() > 0
    assert plif.threshold_param.grad is not None and plif.threshold_param.grad.abs().sum() > 0
    assert plif.leak_logit.shape == (4,)
    m = models.create("spiking_fcn", 3, timesteps=2, neuron="plif", learnable_per="layer", **TINY)
    plifs = [n for n in m.modules() if isinstance(n, PLIF)]
    assert plifs and all(p.leak_logit.shape == (1,) and p.threshold_param is None for p in plifs)
    m(torch.rand(2, 3, 16, 16)).sum().backward()
    assert all(p.leak_logit.grad is not None for p in plifs)
    assert torch.sigmoid(plifs[0].leak_logit).item() == pytest.approx(0.99)


def test_tet_loss_is_the_mean_of_per_step_losses():
    torch.manual_seed(0)
    m = models.create("spiking_deeplab", 4, timesteps=3, encoding="direct", **TINY)
    x, y = torch.rand(2, 3, 16, 16), torch.randint(0, 4, (2, 16, 16))
    y[0, :2] = 255
    cfg = load_config(None, ["train.loss=tet"]).train
    total = float((y != 255).sum())
    logits, loss = _forward_loss(m, x, y, None, True, cfg, total, 1)
    steps = m(x, return_steps=True)
    per_step = [torch.nn.functional.cross_entropy(o, y, ignore_index=255) for o in steps]
    assert torch.allclose(loss, torch.stack(per_step).mean(), atol=1e-6)
    assert torch.allclose(logits, m(x), atol=1e-5)  # the step logits average to the output
    cfg = load_config(None, ["train.loss=tet", "train.tet_lambda=0.25"]).train
    _, reg = _forward_loss(m, x, y, None, True, cfg, total, 1)
    mse = (steps - 1.0).square().mean()
    assert torch.allclose(reg, 0.75 * torch.stack(per_step).mean() + 0.25 * mse, atol=1e-6)
    plain = load_config(None, []).train
    _, ce = _forward_loss(m, x, y, None, True, plain, total, 1)
    assert torch.allclose(ce, torch.nn.functional.cross_entropy(m(x), y, ignore_index=255))


def _labelled_images(b=4, h=24, w=32):
    """Images whose red channel encodes the label (label / 10), so alignment is checkable."""
    y = torch.randint(0, 5, (b, h // 4, w // 4)).repeat_interleave(4, 1).repeat_interleave(4, 2)
    x = torch.rand(b, 3, h, w)
    x[:, 0] = y.float() / 10
    return x, y


def test_static_augmentation_keeps_labels_aligned_with_images():
    x, y = _labelled_images()
    keys = rng.sample_keys(0, "augment", range(4), epoch=1)
    spec = check_augment({"flip": True, "scale": [0.6, 1.6]})
    xa, ya = augment_batch(x, y, keys, spec)
    assert xa.shape == x.shape and ya.shape == y.shape and ya.dtype == y.dtype
    # Inside a region (the label constant over a 3x3 neighbourhood) the bilinear image and the
    # nearest-neighbour label must agree exactly; only region borders may blend.
    pad = torch.nn.functional.pad(ya.float(), (1, 1, 1, 1), value=-1)
    neigh = pad.unfold(1, 3, 1).unfold(2, 3, 1).flatten(-2)          # [B, H, W, 9]
    interior = (neigh == ya.float()[..., None]).all(-1) & (ya != 255)
    assert interior.float().mean() > 0.3
    assert torch.equal(torch.round(xa[:, 0] * 10).long()[interior], ya[interior])
    assert (ya == 255).any()  # some sample zoomed out: the border is ignored
    assert not torch.equal(xa, x)
    # The same keys give the same augmentation; another epoch another one.
    assert torch.equal(augment_batch(x, y, keys, spec)[0], xa)
    other = rng.sample_keys(0, "augment", range(4), epoch=2)
    assert not torch.equal(augment_batch(x, y, other, spec)[0], xa)
    # Flip alone is exact.
    xf, yf = augment_batch(x, y, keys, {"flip": True})
    flipped = (xf != x).flatten(1).any(1)
    assert flipped.any()
    assert torch.equal(xf[flipped], x[flipped].flip(-1)) and torch.equal(yf[flipped],
                                                                         y[flipped].flip(-1))
    xp, yp = augment_batch(x, y, keys, {"photometric": 0.3})
    assert torch.equal(yp, y) and xp.min() >= 0 and xp.max() <= 1


def test_event_augmentation_keeps_labels_aligned_and_polarities():
    b, T, h, w = 4, 5, 16, 20
    y = torch.randint(0, 5, (b, h, w))
    frames = torch.stack([y.float(), 10 + y.float()], dim=1)[:, None].repeat(1, T, 1, 1, 1)
    keys = rng.sample_keys(3, "augment", range(b), epoch=1)
    spec = check_augment({"flip": True, "shift": 3, "time_crop": 0.5})
    xa, ya = augment_batch(frames, y, keys, spec)
    valid = ya != 255
    last = xa[:, -1]  # the labelled frame is never cropped away
    assert torch.equal(last[:, 0][valid], ya[valid].float())        # OFF channel: label
    assert torch.equal(last[:, 1][valid], 10 + ya[valid].float())   # ON channel: 10 + label
    assert (last[:, 0][~valid] == 0).all() and (last[:, 1][~valid] == 0).all()
    emptied = xa.flatten(2).abs().sum(-1) == 0                      # [B, T] whole frames
    assert emptied[:, -1].sum() == 0 and emptied.any()
    assert (emptied.float().diff(dim=1) <= 0).all()                 # only the earliest frames


@pytest.mark.parametrize("spec,message", [
    ({"rotate": 10}, "unknown augmentation 'rotate'"),
    ({"scale": [1.5, 0.5]}, "data.augment.scale must be [lo, hi]"),
    ({"flip": 1}, "data.augment.flip must be bool"),
    ({"shift": -1}, "data.augment.shift must be k >= 0"),
    ({"time_crop": 1.0}, "data.augment.time_crop must be f in [0, 1)"),
])
def test_bad_augmentation_settings_are_named(spec, message):
    with pytest.raises(SpikesegError, match=message.replace("[", r"\[").replace("]", r"\]")
                       .replace("(", r"\(").replace(")", r"\)")):
        check_augment(spec)
    with pytest.raises(SpikesegError, match="'data.augment' must be valid augmentation"):
        Config.from_dict({"data": {"augment": spec}})


def test_a_modern_recipe_trains(tmp_path, data_cache):
    from spikeseg.engine import train

    from .conftest import tiny_overrides

    cfg = load_config(None, tiny_overrides(tmp_path / "runs", data_cache, "spiking_deeplab_res")
                      + ["train.epochs=1", "train.loss=tet", "train.tet_lambda=0.05",
                         "model.norm=tdbn", "model.neuron=plif", "model.encoding=direct",
                         "data.augment={flip: true, scale: [0.75, 1.25], photometric: 0.2}"])
    r = train(cfg, progress=False, log=lambda *_: None)
    assert r.best_epoch == 1 and 0 <= r.best_miou <= 1


@pytest.mark.parametrize("name", ["spiking_deeplab", "spiking_fcn"])
def test_readout_leak_weighs_the_last_steps_in_every_execution_path(name):
    """A leaky output accumulator: logits = Σ_t λ^{S-1-t} o_t / Z with Z = (T/S) Σ_t λ^t, from
    the per-step logits o_t; the same in step and fold mode, with time-chunk checkpointing,
    in the streaming T sweep, and through readout_steps; λ = 1 is the paper's mean."""
    torch.manual_seed(0)
    lam, T, P = 0.6, 4, 2
    # Training mode (batch statistics): an untrained network's spikes reach the output.
    m = models.create(name, 3, timesteps=T, encoding="direct", readout_leak=lam,
                      propagation_steps=P, step_mode="step", **TINY).train()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        steps = m(x, return_steps=True).double()                 # [T + P, B, K, H, W]
        assert (steps[-1] - steps[-2]).abs().max() > 1e-3       # the steps differ
        S = steps.shape[0]
        w = torch.tensor([lam ** (S - 1 - t) for t in range(S)], dtype=torch.float64)
        expected = (steps * w.view(-1, 1, 1, 1, 1)).sum(0) / (T / S * w.sum())
        out = m(x)
        assert torch.allclose(out.double(), expected, atol=1e-5)
        assert torch.allclose(m.readout_steps(steps), expected, atol=1e-6)
        assert torch.allclose(m.forward_checkpoints(x, [T])[T], out, atol=1e-5)
        m.step_mode = "fold"
        assert torch.allclose(m(x), out, atol=1e-5)
        m.step_mode = "step"
    # The paper's accumulator (λ = 1) is the mean; a leak changes the output.
    flat = models.create(name, 3, timesteps=T, encoding="direct", propagation_steps=P,
                         **TINY).train()
    flat.load_state_dict(m.state_dict())
    with torch.no_grad():
        assert torch.allclose(flat(x).double(), steps.sum(0) / T, atol=1e-5)
        assert not torch.allclose(flat(x), out, atol=1e-3)
    # Training paths: checkpointing gives the same output and gradients as plain BPTT.
    grads = []
    for k in (0, 2):
        m.zero_grad()
        m.execution.checkpoint_steps = k
        torch.manual_seed(1)
        y = m(x)
        y.square().sum().backward()
        grads.append((y.detach(), [p.grad.clone() for p in m.parameters() if p.grad is not None]))
    (y0, g0), (y1, g1) = grads
    assert torch.allclose(y0, y1, atol=1e-5)
    assert len(g0) == len(g1) > 0
    for a, b in zip(g0, g1, strict=True):  # equal up to summation order
        assert (a - b).abs().max() <= 1e-5 * a.abs().max() + 1e-12


def test_readout_leak_is_checked_and_reaches_the_model():
    with pytest.raises(ValueError, match="readout_leak"):
        models.create("spiking_deeplab", 3, readout_leak=0.0, **TINY)
    with pytest.raises(SpikesegError, match="readout_leak"):
        load_config(None, ["model.readout_leak=1.5"])
    from spikeseg.engine.train import build_model

    cfg = load_config(None, ["model.readout_leak=0.8", "model.timesteps=2"])
    assert build_model(cfg, 3, 3).readout_leak == 0.8
    ann = load_config(None, ["model.name=deeplab", "model.readout_leak=0.8"])
    assert build_model(ann, 3, 3).readout_leak == 1.0  # an ANN has no accumulator
