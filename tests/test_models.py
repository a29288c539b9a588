"""Registry-driven model tests: shapes, time-first input, execution modes, errors."""

import pytest
import torch

from spikeseg import models
from spikeseg.models.layers import scale_channels

TINY = dict(width=0.125)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


TABLE1 = ["deeplab", "fcn", "spiking_deeplab", "spiking_fcn"]


def test_registry_lists_the_four_table1_models_and_the_residual_variants():
    assert models.list_models() == sorted(TABLE1 + ["deeplab_res", "fcn_res",
                                                    "spiking_deeplab_res", "spiking_fcn_res"])
    assert models.list_models("spiking_*") == ["spiking_deeplab", "spiking_deeplab_res",
                                               "spiking_fcn", "spiking_fcn_res"]
    assert models.model_entry("spiking_fcn").twin == "fcn"
    for name in models.list_models():  # every model has its twin, and they agree
        twin = models.model_entry(name).twin
        assert models.model_entry(twin).twin == name
        assert models.model_entry(twin).spiking != models.model_entry(name).spiking


@pytest.mark.parametrize("name", models.list_models())
@pytest.mark.parametrize("size", [(32, 32), (24, 40), (37, 29)])
def test_output_shape_at_input_resolution(name, size):
    m = models.create(name, num_classes=5, timesteps=2, **TINY)
    x = torch.rand(2, 3, *size)
    y = m(x)
    assert y.shape == (2, 5, *size)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", models.list_models("spiking_*"))
def test_spiking_models_accept_event_frames(name):
    m = models.create(name, num_classes=4, in_channels=2, timesteps=5, **TINY)
    frames = (torch.rand(5, 2, 2, 32, 48) < 0.3).float()  # T=5 given by the input
    assert m(frames).shape == (2, 4, 32, 48)
    assert m.eval()(frames[:3]).shape == (2, 4, 32, 48)
    with pytest.raises(ValueError, match="built for 5 timesteps cannot train on 6"):
        m.train()(torch.cat([frames, frames[:1]]))


@pytest.mark.parametrize("name", models.list_models("spiking_*"))
def test_step_and_fold_modes_are_identical(name):
    m = models.create(name, num_classes=3, timesteps=3, **TINY)
    x = torch.rand(2, 3, 32, 32)
    m.train()  # batch statistics: BNTT per timestep must agree too
    m.step_mode = "step"
    a = m(x, generator=torch.Generator().manual_seed(0))
    m.step_mode = "fold"
    b = m(x, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(a, b, atol=1e-5)
    # Gradients agree as well.
    ga = torch.autograd.grad(a.square().sum(), list(m.parameters()), allow_unused=True)
    gb = torch.autograd.grad(b.square().sum(), list(m.parameters()), allow_unused=True)
    for u, v in zip(ga, gb, strict=True):
        if u is not None:
            assert torch.allclose(u, v, atol=1e-4, rtol=1e-3)


def test_output_layer_accumulates_over_time():
    """Static input: logits are the time average of the output layer's input, so a network
    fed the same frame at every step gives the same logits for any T (direct coding)."""
    m = models.create("spiking_deeplab", num_classes=3, timesteps=4, encoding="direct", **TINY).eval()
    x = torch.rand(1, 3, 32, 32)
    frames = x.expand(4, 1, 3, 32, 32)
    assert torch.allclose(m(x), m(frames), atol=1e-6)


def test_timesteps_argument_and_seeded_encoding():
    m = models.create("spiking_fcn", num_classes=3, timesteps=4, **TINY).eval()
    x = torch.rand(1, 3, 32, 32)
    a = m(x, generator=torch.Generator().manual_seed(1))
    b = m(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert m(x, timesteps=9).shape == a.shape  # eval beyond the trained window


@pytest.mark.parametrize("name", TABLE1)
def test_architecture_matches_table1(name):
    m = models.create(name, num_classes=21)
    convs = [mod for mod in m.modules() if isinstance(mod, torch.nn.Conv2d)]
    if "deeplab" in name:
        outs = [c.out_channels for c in convs]
        assert outs == [64, 64, 128, 128, 256, 256, 256, 1024, 21]
        assert [c.dilation[0] for c in convs] == [1, 1, 1, 1, 1, 2, 2, 12, 1]
    else:
        backbone = [c.out_channels for c in convs if c.kernel_size == (3, 3)]
        assert backbone == [64, 64, 128, 128, 256, 256, 256, 1024, 1024]
        assert len([c for c in convs if c.kernel_size == (1, 1)]) == 4  # skip scores
        tconvs = [mod for mod in m.modules() if isinstance(mod, torch.nn.ConvTranspose2d)]
        assert [(t.kernel_size, t.stride) for t in tconvs] == [((3, 3), (2, 2))] * 3
    pools = [mod for mod in m.modules() if isinstance(mod, torch.nn.AvgPool2d)]
    assert all(p.kernel_size == 3 and p.stride == 2 and p.padding == 1 for p in pools)
    assert all(c.bias is None for c in convs if c.kernel_size == (3, 3))
    spiking = models.model_entry(name).spiking
    assert bool(m.neurons()) == spiking
    if spiking:
        lif = m.neurons()[0][1]
        assert (lif.leak, lif.threshold, lif.reset) == (0.99, 1.0, "soft")
        assert all(b.timesteps == 20 for b in m.bntt_modules())


def test_width_scales_channels():
    m = models.create("deeplab", num_classes=2, width=0.5)
    assert m.features[0].conv.out_channels == 32
    assert scale_channels(64, 0.01) == 1


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown model 'unet'.*spiking_deeplab"):
        models.create("unet", 3)
    with pytest.raises(ValueError, match="no option 'leak'"):
        models.create("deeplab", 3, leak=0.9)  # ANNs have no neurons
    with pytest.raises(ValueError, match="no option 'depth'"):
        models.create("spiking_fcn", 3, depth=3)
    m = models.create("spiking_deeplab", 3, timesteps=2, **TINY)
    with pytest.raises(ValueError, match="3 input channels, got 2"):
        m(torch.rand(1, 2, 32, 32))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        m(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="already registered"):
        models.register_model("deeplab", arch=models.DeepLabVGG9, spiking=False)(lambda: None)


def test_no_hidden_state_between_calls():
    m = models.create("spiking_deeplab", 3, timesteps=3, encoding="direct", **TINY).eval()
    x = torch.rand(2, 3, 32, 32)
    first = m(x)
    m(torch.rand(2, 3, 32, 32) * 5)  # a very different batch in between
    assert torch.equal(m(x), first)


def test_input_mean_is_subtracted_where_the_network_reads_the_image():
    m = models.create("deeplab", 3, input_mean=[0.5, 0.4, 0.3], **TINY).eval()
    plain = models.create("deeplab", 3, **TINY).eval()
    plain.load_state_dict(m.state_dict())
    x = torch.rand(1, 3, 32, 32)
    mean = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)
    assert torch.allclose(m(x), plain(x - mean))
    s = models.create("spiking_deeplab", 3, timesteps=2, encoding="poisson_signed",
                      input_mean=[0.5, 0.4, 0.3], **TINY)
    assert s.encoder.mean == (0.5, 0.4, 0.3)
    with pytest.raises(ValueError, match="does not apply to poisson coding"):
        models.create("spiking_deeplab", 3, input_mean=[0.5, 0.4, 0.3], **TINY)
    with pytest.raises(ValueError, match="2 values for 3 input channels"):
        models.create("deeplab", 3, input_mean=[0.5, 0.4], **TINY)


@pytest.mark.parametrize("norm", ["bntt", "none"])
def test_full_propagation_changes_outputs_only_after_step_T(norm):
    """propagation_steps = P: after the T input steps, P zero-input steps whose output-layer
    input adds to the accumulator (divided by T)."""
    T, P = 3, 2
    a = models.create("spiking_deeplab", 3, timesteps=T, norm=norm, **TINY).eval()
    b = models.create("spiking_deeplab", 3, timesteps=T, norm=norm, propagation_steps=P, **TINY)
    state = a.state_dict()
    if norm == "bntt":  # b has statistics for T + P steps: the first T are a's
        for k, v in b.state_dict().items():
            state.setdefault(k, v)
            if v.shape != state[k].shape:
                state[k] = torch.cat([state[k], v[T:]])
    b.load_state_dict(state)
    b.eval()
    frames = (torch.rand(T, 2, 3, 32, 32) < 0.4).float()
    feats_a, feats_b = [], []
    for m, out in ((a, feats_a), (b, feats_b)):
        ctx = models.layers.TimeContext("step", T + P)
        seq = [*frames.unbind(0), *([torch.zeros_like(frames[0])] * (P if m is b else 0))]
        for t, f in enumerate(seq):
            ctx.t = t
            out.append(m.body(f, ctx)[0])
    for t in range(T):  # the first T steps are the same
        assert torch.equal(feats_a[t], feats_b[t])
    extra = sum(feats_b[T:])
    assert extra.abs().sum() > 0  # membrane left over from the input still fires
    expected = b.head((sum(feats_b) / T,), (32, 32))
    assert torch.allclose(b(frames), expected, atol=1e-5)
    assert not torch.allclose(a(frames), b(frames))
    # The streaming sweep agrees with forward at T (zero steps run from the state at T).
    x = torch.rand(2, 3, 32, 32)
    keys = torch.arange(2)
    sweep = b.forward_checkpoints(x, [1, T], keys=keys)
    assert torch.allclose(sweep[T], b(x, keys=keys), atol=1e-5)
    b.step_mode = "fold"
    assert torch.allclose(b(x, keys=keys), sweep[T], atol=1e-5)


# The paper recipe's forward output for a fixed seed, recorded before the options of the
# modern recipe were added: (train-mode sum, |sum|, eval-mode sum, |sum|) after 20 train passes.
PINNED = {
    "spiking_deeplab": (5313.314893851071, 7614.063445536725, 1225.1441381293766, 1983.042929299109),
    "spiking_fcn": (-557.5736006572843, 4316.472969220951, -277.79754139622673, 4027.992735462729),
    "deeplab": (10098.372961543886, 14668.911153013898, 6689.8430122088175, 8674.657621592516),
    "fcn": (-655.8755430411547, 10738.938355440274, 803.2826091228053, 10312.583927529864),
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_paper_recipe_forward_output_is_pinned(name):
    """New options are off by default: the paper's models compute exactly what they did."""
    from spikeseg import rng

    torch.manual_seed(0)
    m = models.create(name, 5, timesteps=4, width=0.125)
    x = torch.rand(2, 3, 24, 32, generator=torch.Generator().manual_seed(1)) * 2.0
    keys = rng.sample_keys(0, "poisson", [0, 1])
    m.train()
    with torch.no_grad():
        for _ in range(20):
            y = m(x, keys=keys) if m.spiking else m(x)
        m.eval()
        z = m(x, keys=keys) if m.spiking else m(x)
    got = (float(y.double().sum()), float(y.double().abs().sum()),
           float(z.double().sum()), float(z.double().abs().sum()))
    assert got == pytest.approx(PINNED[name], rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("name", ["spiking_deeplab_res", "spiking_fcn_res"])
def test_residual_models_read_spikes_in_every_convolution_but_the_first(name):
    """MS-ResNet blocks: the shortcut adds analog values, every conv after the stem reads
    binary spikes (so eq. (10) prices them as accumulates)."""
    from spikeseg.analysis.energy import count_ops

    m = models.create(name, 4, timesteps=3, width=0.125, encoding="direct").eval()
    seen: dict[str, torch.Tensor] = {}
    hooks = [mod.register_forward_pre_hook(lambda mod_, a, n=n: seen.setdefault(n, a[0]))
             for n, mod in m.named_modules() if isinstance(mod, torch.nn.Conv2d)]
    m(torch.rand(2, 3, 32, 32))
    for h in hooks:
        h.remove()
    first = next(iter(seen))
    for n, x in seen.items():
        if n == first or n.startswith(("score", "output", "up")):
            continue
        assert set(torch.unique(x).tolist()) <= {0.0, 1.0}, n
    ops = count_ops(m, torch.rand(1, 3, 32, 32))
    assert ops[0].name == first and all(o.input_rate is not None for o in ops)
    twin = models.create(models.model_entry(name).twin, 4, width=0.125)
    assert [o.flops for o in count_ops(twin, torch.rand(1, 3, 32, 32))] == [o.flops for o in ops]
