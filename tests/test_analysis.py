"""Analyses: eq. (8) spike rates, eq. (9) FLOPs, eqs. (10)-(12) energy, noise robustness."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from spikeseg import models
from spikeseg.analysis import (
    ENERGY_MODELS,
    SpikeRecorder,
    count_ops,
    estimate_energy,
    noise_robustness,
    relative_drop,
)
from spikeseg.analysis.energy import LayerOps, layer_flops
from spikeseg.neurons import LIF


class TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = LIF(leak=1.0, threshold=1.0)
        self.b = LIF(leak=1.0, threshold=1.0)


def test_eq8_on_a_hand_built_spike_train():
    net = TwoLayers()
    # T=4, 2 samples, 3 neurons. Current 2.0 fires at every step, 0.6 every second step
    # (0.6, 1.2 -> spike, 0.8, 1.4 -> spike), 0 never.
    x = torch.tensor([2.0, 0.6, 0.0]).expand(4, 2, 3).contiguous()
    with SpikeRecorder(net) as rec:
        s = net.a(x)                       # a whole sequence
        m = None
        for t, xt in enumerate(x.unbind(0)):  # the same, step by step
            _, m = net.b.step(xt, m, t)
    assert s.sum() == 2 * (4 + 2)
    for layer in ("a", "b"):
        st = rec.layers[layer]
        assert st.neurons == 3 and st.samples == 2
        # eq. (8): (4 + 2 + 0) spikes per sample over 3 neurons
        assert st.rate == pytest.approx(6 / 3)
        assert st.timestep_rates == pytest.approx([1 / 3, 2 / 3, 1 / 3, 2 / 3])
        assert sum(st.timestep_rates) == pytest.approx(st.rate)
    assert rec.mean_rate() == pytest.approx(2.0)
    # Hooks are removed on exit.
    assert not net.a._spike_hooks and not net.b._spike_hooks
    with pytest.raises(ValueError, match="pass the timestep"):
        with SpikeRecorder(net):
            net.b.step(x[0], None)


def test_recorder_counts_samples_across_batches_and_modes():
    m = models.create("spiking_deeplab", 3, timesteps=3, width=0.125).eval()
    x = torch.rand(4, 3, 32, 32)
    rates = {}
    for mode in ("step", "fold"):
        m.step_mode = mode
        with SpikeRecorder(m) as rec:
            m(x[:2], generator=torch.Generator().manual_seed(0))
            m(x[2:], generator=torch.Generator().manual_seed(1))
        assert all(s.samples == 4 for s in rec.layers.values())
        assert all(len(s.per_timestep) == 3 for s in rec.layers.values())
        rates[mode] = rec.rates()
    assert rates["step"] == pytest.approx(rates["fold"])


def test_flops_of_known_layers_follow_eq9():
    x = torch.rand(1, 3, 10, 12)
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert layer_flops(conv, conv(x)) == ("conv", 3 * 3 * 10 * 12 * 3 * 8)
    dil = nn.Conv2d(3, 8, 3, padding=2, dilation=2)  # dilation does not change FLOPs
    assert layer_flops(dil, dil(x)) == ("dilated conv", 3 * 3 * 10 * 12 * 3 * 8)
    tconv = nn.ConvTranspose2d(4, 5, 3, stride=2)  # counted on its input, 5x6 (output 11x13)
    z = torch.rand(1, 4, 5, 6)
    y = tconv(z)
    assert y.shape[-2:] == (11, 13)
    assert layer_flops(tconv, y, z) == ("transposed conv", 3 * 3 * 5 * 6 * 4 * 5)
    lin = nn.Linear(7, 9)
    assert layer_flops(lin, lin(torch.rand(2, 7))) == ("linear", 63)


def test_energy_ratio_on_a_network_with_known_spike_rates():
    """Neurons that never fire and a binary direct-coded input of known density: every rate
    is known, so eqs. (11)-(12) have a closed form."""
    T = 3
    m = models.create("spiking_deeplab", 2, timesteps=T, width=0.125, threshold=1e9,
                      encoding="direct")
    x = torch.zeros(1, 3, 16, 16)
    x[:, :, ::2, :] = 1.0  # half of the input pixels spike at every step
    ops = count_ops(m, x)
    assert [o.kind for o in ops] == ["conv"] * 5 + ["dilated conv"] * 3 + ["conv"]
    assert ops[0].input_rate == pytest.approx(0.5 * T)
    assert all(o.input_rate == 0 for o in ops[1:])
    dense = sum(o.flops for o in ops)
    e = ENERGY_MODELS["45nm_fp32"]
    mac = estimate_energy(ops, T)  # first layer: real-valued input, dense MACs every step
    assert mac.energy_ann == pytest.approx(dense * 4.6)
    assert mac.energy_snn == pytest.approx(ops[0].flops * T * 4.6)
    assert mac.ratio == pytest.approx(dense / (ops[0].flops * T))
    ac = estimate_energy(ops, T, first_layer="ac")
    assert ac.energy_snn == pytest.approx(ops[0].flops * 0.5 * T * e.e_ac)
    assert ac.layers[0].op == "AC" and mac.layers[0].op == "MAC"


def test_energy_pricing_by_hand():
    ops = [LayerOps("l1", "conv", 100, 2.0), LayerOps("l2", "conv", 1000, 0.5)]
    r = estimate_energy(ops, timesteps=4, energy_model="45nm_fp32")
    assert r.energy_ann == pytest.approx(1100 * 4.6)
    assert r.energy_snn == pytest.approx(100 * 4 * 4.6 + 1000 * 0.5 * 0.9)
    assert r.as_dict()["flops_snn"] == pytest.approx(400 + 500)
    with pytest.raises(ValueError, match="unknown energy model"):
        estimate_energy(ops, 4, energy_model="3nm")
    with pytest.raises(ValueError, match="not twins"):
        estimate_energy(ops, 4, ann_ops=[LayerOps("l1", "conv", 5, None)])


def test_snn_and_ann_twins_count_the_same_flops():
    x = torch.rand(1, 3, 32, 24)
    for snn, ann in (("spiking_deeplab", "deeplab"), ("spiking_fcn", "fcn")):
        s = count_ops(models.create(snn, 4, timesteps=2, width=0.125), x)
        a = count_ops(models.create(ann, 4, width=0.125), x)
        assert [o.flops for o in s] == [o.flops for o in a]
        assert all(o.input_rate is None for o in a)
        assert estimate_energy(s, 2, ann_ops=a).energy_ann > 0


def test_robustness_drop_is_zero_at_sigma_0_and_follows_the_definition():
    assert relative_drop(0.5, 0.4) == pytest.approx(20.0)
    torch.manual_seed(0)
    m = models.create("spiking_deeplab", 3, timesteps=2, width=0.125)
    x = torch.rand(8, 3, 24, 24)
    y = (x.mean(1) * 3).long().clamp(max=2)
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    pts = noise_robustness(m, loader, [0.0, 0.5, 2.0], progress=False)
    assert [p.sigma for p in pts] == [0.0, 0.5, 2.0]
    assert pts[0].drop_percent == 0.0
    for p in pts[1:]:
        assert p.drop_percent == pytest.approx(relative_drop(pts[0].miou, p.miou))
    again = noise_robustness(m, loader, [2.0], progress=False)
    assert again[1].miou == pts[2].miou  # seeded
