"""Eq. (9) MACs against ``torch.utils.flop_counter``; eq. (10) rates on hand-built spike maps.

``FlopCounterMode`` counts 2 FLOPs per MAC and no bias additions; spikeseg counts MACs per
sample, so its counts are compared with ``FlopCounterMode``'s halved and divided by the batch.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from spikeseg import models
from spikeseg.analysis import SpikeRecorder, count_ops
from spikeseg.analysis.energy import OpCounter, layer_flops
from spikeseg.neurons import LIF


def _flop_counter(fn) -> FlopCounterMode:
    with FlopCounterMode(display=False, depth=None) as fc:
        fn()
    return fc


def _module_flops(fc: FlopCounterMode, model: nn.Module, name: str) -> int:
    """``FlopCounterMode``'s FLOPs of submodule ``name`` (it keys them "<Class>.<name>")."""
    key = f"{type(model).__name__}.{name}"
    counts = fc.get_flop_counts()
    assert key in counts, f"FlopCounterMode has no entry {key!r}: {sorted(counts)[:5]}..."
    return sum(counts[key].values())


# Every layer kind the models use (FCN's score convs are 1x1 with bias; its up1-up3 are
# 3x3 stride-2 transposed convs; DeepLab's classifier is a d=12 conv on a small map), and
# the options the formulas must follow (groups, stride, padding, output padding, 1-D).
LAYERS = [
    (lambda: nn.Conv2d(3, 8, 3, padding=1, bias=False), (2, 3, 10, 12)),
    (lambda: nn.Conv2d(3, 8, 3, padding=2, dilation=2), (2, 3, 10, 12)),
    (lambda: nn.Conv2d(16, 8, 3, padding=12, dilation=12, bias=False), (2, 16, 6, 10)),
    (lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2), (2, 4, 9, 7)),
    (lambda: nn.Conv2d(8, 5, 1), (2, 8, 6, 10)),
    (lambda: nn.ConvTranspose2d(5, 5, 3, stride=2, bias=False), (2, 5, 3, 5)),
    (lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2),
     (2, 4, 5, 4)),
    (lambda: nn.ConvTranspose2d(4, 6, 4, stride=3, dilation=2), (2, 4, 3, 5)),
    (lambda: nn.Conv1d(3, 4, 5, padding=2), (2, 3, 11)),
    (lambda: nn.ConvTranspose1d(3, 4, 5, stride=2), (2, 3, 11)),
    (lambda: nn.Linear(7, 9), (2, 7)),
    (lambda: nn.Linear(7, 9), (2, 5, 7)),
]


@pytest.mark.parametrize(("make", "shape"), LAYERS,
                         ids=[f"{type(make()).__name__}{i}" for i, (make, _) in enumerate(LAYERS)])
def test_layer_macs_are_half_the_flop_counters_flops(make, shape):
    torch.manual_seed(0)
    layer = make()
    x = torch.rand(shape)
    y = layer(x)
    fc = _flop_counter(lambda: layer(x))
    kind, macs = layer_flops(layer, y, x)
    assert macs * 2 * shape[0] == fc.get_total_flops(), kind
    if getattr(layer, "bias", None) is not None:  # bias additions are not counted
        layer.bias = None
        assert layer_flops(layer, layer(x), x)[1] == macs


def test_transposed_conv_is_counted_on_its_input():
    tconv = nn.ConvTranspose2d(4, 6, 3, stride=2, bias=False)
    x = torch.rand(1, 4, 5, 6)
    y = tconv(x, output_size=[12, 14])  # extra output padding: the output says nothing
    fc = _flop_counter(lambda: tconv(x, output_size=[12, 14]))
    assert layer_flops(tconv, y, x) == ("transposed conv", 3 * 3 * 5 * 6 * 4 * 6)
    assert 2 * 3 * 3 * 5 * 6 * 4 * 6 == fc.get_total_flops()
    with pytest.raises(ValueError, match="counted on its input"):
        layer_flops(tconv, y)


@pytest.mark.parametrize("name", models.list_models())
def test_dense_counts_of_registered_models_match_the_flop_counter(name):
    """Per layer and in total, like for like: count_ops gives MACs of one inference per
    sample; FlopCounterMode counts the ANN twin's convolutions once, or the spiking model's at
    every timestep, except for the output layers, which run once on time-averaged input."""
    T, B, x = 2, 2, torch.rand(2, 3, 24, 40)
    entry = models.model_entry(name)
    model = models.create(name, 5, width=0.125, **({"timesteps": T} if entry.spiking else {}))
    ops = count_ops(model, x, generator=torch.Generator().manual_seed(0))
    mine = {o.name: o.flops for o in ops}
    ann = models.create(entry.twin, 5, width=0.125) if entry.spiking else model
    ann.eval()
    fc = _flop_counter(lambda: ann(x))
    theirs = {n: _module_flops(fc, ann, n) / (2 * B) for n in mine}
    assert mine == theirs
    assert sum(mine.values()) == fc.get_total_flops() / (2 * B)  # nothing else multiplies
    if not entry.spiking:
        return

    # The spiking model itself: body layers at each of T steps, the head once.
    head: set[str] = set()

    def in_head(name: str):
        def hook(*_) -> None:
            if model.head_timesteps is not None:
                head.add(name)
        return hook

    hooks = [m.register_forward_hook(in_head(n)) for n, m in model.named_modules() if n in mine]
    for mode in ("step", "fold"):
        model.step_mode = mode
        fc = _flop_counter(lambda: model(x))
        runs = {n: _module_flops(fc, model, n) / (2 * B * mine[n]) for n in mine}
        assert runs == {n: 1 if n in head else T for n in mine}, mode
        assert fc.get_total_flops() == sum(2 * B * mine[n] * runs[n] for n in mine)
    for h in hooks:
        h.remove()
    deeplab = isinstance(model, (models.DeepLabVGG9, models.DeepLabRes))
    assert head == ({"output"} if deeplab else {"up3", "score1"})


class _PerStep(nn.Module):
    """A spiking toy: ``layers`` applied to each timestep of a ``[T, B, ...]`` input."""

    spiking = True

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return torch.stack([self.layers(xt) for xt in x])


def _eq10(model: nn.Module, x) -> list[float]:
    """Eq. (10) per layer of ``model`` on ``x``, summed over the batch."""
    with OpCounter(model) as oc:
        model(x)
    return [o.flops * o.input_rate * x.shape[1] for o in oc.layers()]


def test_eq10_of_a_transposed_conv_is_each_spike_through_its_kernel():
    """Every input spike is scattered through the whole 3x3xC_out kernel: eq. (10) on the
    input-size count is the number of accumulates delivered, exactly."""
    torch.manual_seed(0)
    spikes = (torch.rand(3, 2, 4, 5, 6) < 0.3).float()  # T=3, B=2, C_in=4, 5x6
    tconv = nn.ConvTranspose2d(4, 7, 3, stride=2, bias=False)
    # Accumulates delivered, counted by scattering ones: one per (spike, weight) pair.
    delivered = sum(float(F.conv_transpose2d(s, torch.ones(4, 7, 3, 3), stride=2).sum())
                    for s in spikes)
    assert delivered == float(spikes.sum()) * 3 * 3 * 7
    assert _eq10(_PerStep(tconv), spikes) == [pytest.approx(delivered)]
    # Counted on its 11x13 output, eq. (10) would charge 143/30 = 4.8 times too many.
    assert tconv(spikes[0]).shape[-2:] == (11, 13)


def test_eq10_of_a_padded_conv_is_an_upper_bound():
    """A spike near the border has fewer targets than k²·C_out: eq. (10), like the dense
    count, also charges the taps that read padding."""
    ones = torch.ones(1, 1, 1, 4, 6)  # T=1, B=1, one channel spiking everywhere
    conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)
    delivered = float(F.conv2d(ones[0], torch.ones(2, 1, 3, 3), padding=1).sum())
    (eq10,) = _eq10(_PerStep(conv), ones)
    assert eq10 == pytest.approx(4 * 6 * 9 * 2)
    assert delivered / eq10 == pytest.approx((1 - 2 / 12) * (1 - 2 / 18))
    atrous = torch.ones(1, 1, 16, 16)  # DeepLab's classifier on a 64x64 input's 16x16 map
    delivered = float(F.conv2d(atrous, torch.ones(1, 1, 3, 3), padding=12, dilation=12).sum())
    assert delivered / (16 * 16 * 9) == pytest.approx(1 / 4)
    inner = torch.zeros(1, 1, 1, 4, 6)
    inner[..., 1:3, 1:5] = 1.0  # away from the border: exact
    delivered = float(F.conv2d(inner[0], torch.ones(2, 1, 3, 3), padding=1).sum())
    assert _eq10(_PerStep(conv), inner) == [pytest.approx(delivered)]


def test_after_an_average_pool_the_rate_is_the_mean_pooled_value():
    """Layer l after VGG9's pool reads pooled values; eq. (10) takes their mean, the spikes
    an integrate-and-fire pool would emit, which is below eq. (8) of the pooled neurons
    because the border windows average in zero padding."""
    T, H, W = 9, 4, 6
    pool = nn.AvgPool2d(3, stride=2, padding=1)
    lif = LIF(leak=1.0, threshold=1.0)
    conv = nn.Conv2d(2, 3, 1, bias=False)
    net = _PerStep(pool, conv)
    net.lif = lif
    # Neurons that fire at every step (input 2 > threshold 1): eq. (8) rate T.
    with SpikeRecorder(net) as rec:
        spikes = lif(torch.full((T, 1, 2, H, W), 2.0))
    assert rec.layers["lif"].rate == T
    with OpCounter(net) as oc:
        net(spikes)
    (ops,) = oc.layers()
    assert ops.input_rate == pytest.approx(T * (1 - 2 / (3 * H)) * (1 - 2 / (3 * W)))
    assert ops.input_rate < rec.layers["lif"].rate

    # Random spikes: eq. (10) equals, to within one spike per pooled neuron, the accumulates
    # of the 1x1 conv fed by an IF pool (weights 1/9, threshold 1, no leak, soft reset).
    torch.manual_seed(0)
    spikes = (torch.rand(8, 3, 2, H, W) < 0.4).float()
    pooled = torch.stack([pool(s) for s in spikes])
    if_spikes = LIF(leak=1.0, threshold=1.0, reset="soft")(pooled)
    cells = pooled[0].numel()
    assert pooled.sum() - cells <= if_spikes.sum() <= pooled.sum() + 1e-4
    (eq10,) = _eq10(net, spikes)
    assert eq10 == pytest.approx(3 * float(pooled.sum()))  # C_out = 3 per pooled spike
    assert abs(eq10 - 3 * float(if_spikes.sum())) <= 3 * cells


def test_a_spiking_models_pooled_layers_read_the_mean_pooled_value():
    torch.manual_seed(0)
    B = 2
    model = models.create("spiking_deeplab", 3, timesteps=2, width=0.125).eval()
    x = torch.rand(B, 3, 24, 40)
    pool = model.features[2]
    seen = {"in": 0.0, "out": 0.0}

    def record(module, inputs, output):
        seen["in"] += float(inputs[0].sum()) / inputs[0][0].numel()
        seen["out"] += float(output.sum()) / output[0].numel()

    handle = pool.register_forward_hook(record)
    ops = {o.name: o for o in count_ops(model, x, generator=torch.Generator().manual_seed(0))}
    handle.remove()
    assert ops["features.3.conv"].input_rate == pytest.approx(seen["out"] / B)
    assert seen["out"] < seen["in"]  # the pooled neurons' rate is higher
