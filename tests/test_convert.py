"""ANN→SNN conversion: BN folding, threshold balancing, convergence to the ANN, checkpoints, CLI."""

import csv
import json

import pytest
import torch
from PIL import Image
from torch import nn

from spikeseg.analysis.activations import activation_variation
from spikeseg.cli import main
from spikeseg.convert import (
    BalancedIF,
    ConversionConfig,
    convert,
    fold_batchnorm,
    save_converted,
    spiking_twin,
    thresholds,
)
from spikeseg.engine.checkpoint import load_checkpoint, save_checkpoint
from spikeseg.errors import SpikesegError
from spikeseg.models import create

from .conftest import tiny_overrides


def _trained_like_ann(name: str, seed: int = 0, size=(12, 16), **kw) -> tuple[nn.Module, torch.Tensor]:
    """A small ANN whose BatchNorm statistics come from data (so folding is not trivial)."""
    torch.manual_seed(seed)
    ann = create(name, 3, width=0.125, **kw)
    x = torch.rand(6, 3, *size)
    ann.train()
    with torch.no_grad():
        for _ in range(4):
            ann(x)
    ann.eval().requires_grad_(False)
    return ann, x


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().mean() / b.abs().mean())


@pytest.mark.parametrize("affine", [False, True])
def test_fold_batchnorm_is_exact(affine):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, padding=2, dilation=2, bias=False)
    bn = nn.BatchNorm2d(5, affine=affine, eps=1e-4)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    if affine:
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-1, 1)
    bn.eval()
    x = torch.randn(2, 3, 9, 7)
    torch.testing.assert_close(fold_batchnorm(conv, bn)(x), bn(conv(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["deeplab", "fcn"])
def test_folded_network_keeps_ann_outputs(name):
    """The twin's structure with IF replaced by ReLU again is the ANN, exactly."""
    ann, x = _trained_like_ann(name)
    twin = spiking_twin(ann)
    for _, m in twin.named_modules():
        for child_name, child in list(m.named_children()):
            if isinstance(child, BalancedIF):
                setattr(m, child_name, nn.ReLU())
    twin.spiking = False
    torch.testing.assert_close(twin(x), ann(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["deeplab", "fcn"])
@pytest.mark.parametrize("method", ["layer", "channel"])
def test_converted_output_converges_to_ann(name, method):
    ann, x = _trained_like_ann(name)
    ref = ann(x[:1])
    cfg = ConversionConfig(method=method, calibration_images=8, calibration_timesteps=64,
                           encoding="direct")
    snn = convert(ann, [(x,)], cfg, progress=False)
    with torch.no_grad():
        out = snn.forward_checkpoints(x[:1], [10, 100, 1000])
    errs = {t: _rel_err(o, ref) for t, o in out.items()}
    assert errs[1000] < 0.1, errs
    assert errs[1000] < errs[10] / 5, errs
    assert errs[100] < errs[10], errs


def test_poisson_input_also_converges():
    ann, x = _trained_like_ann("deeplab", seed=1)
    ref = ann(x[:2])
    snn = convert(ann, [(x,)], ConversionConfig(calibration_images=8, calibration_timesteps=64),
                  progress=False)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        out = snn.forward_checkpoints(x[:2], [10, 1000], generator=g)
    assert _rel_err(out[1000], ref) < _rel_err(out[10], ref) / 3


def test_first_layer_threshold_is_max_preactivation():
    """With analog (direct) input the first layer's current is constant over time, so the
    layer-wise threshold is the ANN's largest pre-activation of that layer; channel-wise, the
    largest per channel; a percentile is smaller."""
    ann, x = _trained_like_ann("deeplab")
    block = ann.features[0]
    with torch.no_grad():
        pre = block.norm(block.conv(x))
    for method, expect in (("layer", pre.amax()), ("channel", pre.amax(dim=(0, 2, 3)))):
        snn = convert(ann, [(x,)], ConversionConfig(method=method, calibration_images=8,
                      calibration_timesteps=4, encoding="direct"), progress=False)
        got = snn.features[0].act.theta
        torch.testing.assert_close(got, expect.reshape(got.shape), rtol=1e-4, atol=1e-5)
    p50 = convert(ann, [(x,)], ConversionConfig(percentile=50, calibration_images=8,
                  calibration_timesteps=4, encoding="direct"), progress=False)
    assert float(p50.features[0].act.theta) < float(pre.amax())


def test_ann_source_thresholds_are_activation_maxima():
    ann, x = _trained_like_ann("deeplab")
    snn = convert(ann, [(x,)], ConversionConfig(method="channel", source="ann",
                  calibration_images=8), progress=False)
    with torch.no_grad():
        a1 = ann.features[1](ann.features[0](x))
    got = snn.features[1].act.theta
    want = a1.amax(dim=(0, 2, 3))
    want = torch.where(want > 0, want, torch.ones_like(want))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_thresholds_round_trip_through_checkpoint(tmp_path):
    ann, x = _trained_like_ann("fcn")
    save_checkpoint(tmp_path / "ann", ann, "fcn")
    snn = convert(ann, [(x,)], ConversionConfig(method="channel", calibration_images=8,
                  calibration_timesteps=8, timesteps=40), progress=False)
    from spikeseg.engine.checkpoint import read_metadata

    save_converted(tmp_path / "snn", snn, read_metadata(tmp_path / "ann"))
    loaded, meta = load_checkpoint(tmp_path / "snn.safetensors")
    assert meta["conversion"]["method"] == "channel" and loaded.spiking
    assert loaded.timesteps == 40
    assert thresholds(loaded) == thresholds(snn)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x[:2], generator=g1), snn(x[:2], generator=g2))


def test_converted_spikes_are_binary_and_counted():
    from spikeseg.analysis.spikes import SpikeRecorder

    ann, x = _trained_like_ann("deeplab")
    snn = convert(ann, [(x,)], ConversionConfig(calibration_images=8, calibration_timesteps=8),
                  progress=False)
    seen = []
    h = snn.features[0].act.register_spike_hook(lambda m, s, t: seen.append(s.unique()))
    with SpikeRecorder(snn) as rec, torch.no_grad():
        snn(x[:2], timesteps=20)
    h.remove()
    assert all(set(u.tolist()) <= {0.0, 1.0} for u in seen)
    rates = rec.rates()
    assert len(rates) == 8 and all(0 <= r <= 20 for r in rates.values())


def test_conversion_errors():
    snn = create("spiking_deeplab", 3, width=0.125)
    with pytest.raises(SpikesegError, match="ANN"):
        spiking_twin(snn)
    leaky = create("deeplab", 3, width=0.125, activation="leaky_relu")  # now convertible
    assert spiking_twin(leaky).features[0].act.negative_slope == pytest.approx(0.1)
    with pytest.raises(SpikesegError, match="method"):
        ConversionConfig(method="position")
    with pytest.raises(SpikesegError, match="percentile"):
        ConversionConfig(percentile=0)


def test_activation_variation_matches_direct_computation():
    ann, x = _trained_like_ann("deeplab")
    layers = activation_variation(ann, [(x[:4],), (x[4:],)], progress=False)  # two batches
    assert [la.name for la in layers][:2] == ["features.0", "features.1"]
    with torch.no_grad():
        a0 = ann.features[0](x)
    first = layers[0]
    torch.testing.assert_close(torch.from_numpy(first.channel_max), a0.amax(dim=(0, 2, 3)))
    torch.testing.assert_close(torch.from_numpy(first.position_max), a0.amax(dim=(0, 1)))
    for la in layers:
        for kind in ("channel", "position"):
            v = la.normalised(kind)
            assert v.max() == pytest.approx(1.0) and v.min() >= 0


@pytest.fixture(scope="module")
def tiny_ann(tmp_path_factory):
    root = tmp_path_factory.mktemp("conv")
    cache = tmp_path_factory.getbasetemp() / "builtin-cache-conv"
    sets = []
    for o in tiny_overrides(root / "runs", cache, "deeplab") + ["train.epochs=1",
                                                                 "train.report=false"]:
        sets += ["--set", o]
    assert main(["train", "--no-progress", *sets]) == 0
    return root, root / "runs" / "tiny" / "checkpoints" / "best.safetensors"


def test_cli_convert_sweep_activations(tiny_ann, capsys):
    root, ann_ck = tiny_ann
    out_ck = root / "conv" / "layer"
    assert main(["convert", "--checkpoint", str(ann_ck), "--out", str(out_ck),
                 "--calibration-images", "8", "--calibration-timesteps", "8",
                 "--method", "channel", "--percentile", "99.9", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "channel-wise" in text and "features.0" in text
    meta = json.loads(out_ck.with_suffix(".json").read_text())
    assert meta["conversion"]["percentile"] == 99.9 and meta["converted_from"] == "deeplab"

    sweep = root / "sweep"
    assert main(["sweep", "--checkpoint", str(out_ck) + ".safetensors", "--checkpoint",
                 str(ann_ck), "--timesteps", "2,6,4", "--max-batches", "1", "--out", str(sweep),
                 "--no-progress"]) == 0
    rows = list(csv.DictReader(open(sweep / "sweep.csv")))
    conv_rows = [r for r in rows if r["timesteps"]]
    assert [int(r["timesteps"]) for r in conv_rows] == [2, 4, 6]
    assert all(0 <= float(r["miou"]) <= 1 for r in rows)
    assert len(rows) == 4  # three T for the SNN, one line for the ANN
    with Image.open(sweep / "sweep.png") as im:
        assert im.width > 200 and im.height > 150

    act = root / "act"
    assert main(["activations", "--checkpoint", str(ann_ck), "--out", str(act),
                 "--max-batches", "1", "--no-progress"]) == 0
    summary = list(csv.DictReader(open(act / "activations_summary.csv")))
    assert len(summary) == 8 and all(0 <= float(s["channel_median"]) <= 1 for s in summary)
    with Image.open(act / "activations.png") as im:
        assert im.width > 200 and im.height > 150


def test_cli_convert_errors(tiny_ann, capsys, tmp_path):
    _, ann_ck = tiny_ann
    assert main(["convert", "--checkpoint", str(tmp_path / "nope.safetensors"),
                 "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not found" in err
    assert main(["activations", "--checkpoint", str(tmp_path / "nope"), "--out",
                 str(tmp_path / "y")]) == 2


# --------------------------------------------------------------------------- per-neuron thresholds,
# leaky-ReLU ANNs (negative spikes), input_mean


@pytest.mark.parametrize("name,method,activation", [
    ("deeplab", "neuron", "relu"),
    ("fcn", "neuron", "relu"),
    ("deeplab", "layer", "leaky_relu"),
    ("fcn", "channel", "leaky_relu"),
    ("deeplab", "neuron", "leaky_relu"),
])
def test_neuron_and_leaky_conversion_converge_to_ann(name, method, activation):
    ann, x = _trained_like_ann(name, activation=activation)
    ref = ann(x[:1])
    cfg = ConversionConfig(method=method, calibration_images=8, calibration_timesteps=64,
                           encoding="direct")
    snn = convert(ann, [(x,)], cfg, progress=False)
    with torch.no_grad():
        out = snn.forward_checkpoints(x[:1], [10, 100, 1000])
    errs = {t: _rel_err(o, ref) for t, o in out.items()}
    assert errs[1000] < 0.1, errs
    assert errs[1000] < errs[10] / 5, errs
    assert errs[100] < errs[10], errs


def test_leaky_conversion_needs_its_negative_spikes():
    """The leaky ReLU's negative part is carried by the -1 spikes below -θ/α: without them the
    converted network stops converging to the ANN."""
    ann, x = _trained_like_ann("deeplab", activation="leaky_relu")
    ref = ann(x[:1])
    snn = convert(ann, [(x,)], ConversionConfig(method="channel", calibration_images=8,
                  calibration_timesteps=64, encoding="direct"), progress=False)
    seen = []
    h = snn.features[1].act.register_spike_hook(lambda m, s, t: seen.append(s.unique()))
    with torch.no_grad():
        with_neg = _rel_err(snn(x[:1], timesteps=1000), ref)
    h.remove()
    assert any(-1.0 in u.tolist() for u in seen)
    assert all(set(u.tolist()) <= {-1.0, 0.0, 1.0} for u in seen)
    act = snn.features[0].act
    assert act.negative_slope == pytest.approx(0.1)
    for _, block in snn.activation_blocks():
        block.act.negative_slope = 0.0
    with torch.no_grad():
        without = _rel_err(snn(x[:1], timesteps=1000), ref)
    assert with_neg < 0.1 and without > 4 * with_neg, (with_neg, without)


def test_negative_spike_rate_is_the_leaky_slope():
    """A constant current a < 0 gives -1 spikes at the rate α·|a|/θ (θ_neg = θ/α), a > 0 at a/θ."""
    neuron = BalancedIF(1, negative_slope=0.1)
    neuron.theta.fill_(2.0)
    a = torch.tensor([-8.0, -3.0, 0.5, 1.5]).view(1, 4, 1, 1)
    s = neuron(a.expand(1000, 4, 1, 1).clone())
    rate = s.mean(0).flatten()
    torch.testing.assert_close(rate, torch.tensor([-0.4, -0.15, 0.25, 0.75]), atol=2e-3, rtol=0)


def test_per_neuron_thresholds_are_neuron_maxima_at_one_input_size():
    ann, x = _trained_like_ann("deeplab")
    block = ann.features[0]
    with torch.no_grad():
        pre = block.norm(block.conv(x))
    snn = convert(ann, [(x,)], ConversionConfig(method="neuron", calibration_images=8,
                  calibration_timesteps=4, encoding="direct"), progress=False)
    got = snn.features[0].act.theta
    want = pre.amax(0)
    torch.testing.assert_close(got, torch.where(want > 0, want, torch.ones_like(want)),
                               rtol=1e-4, atol=1e-5)
    assert snn.conversion["input_size"] == [12, 16]
    assert tuple(snn.classifier[0].act.theta.shape[1:]) == (3, 4)
    # Folded per-neuron thresholds: the channel maximum is in the next layer's weights and the
    # spikes carry ρ = θ / max θ; hooks still see binary events.
    seen = []
    h = snn.features[0].act.register_spike_hook(lambda m, s, t: seen.append(s.unique()))
    with torch.no_grad():
        snn(x[:1], timesteps=5)
    h.remove()
    assert all(set(u.tolist()) <= {0.0, 1.0} for u in seen)
    with pytest.raises(SpikesegError, match="input size") as e:
        snn(torch.rand(1, 3, 16, 16), timesteps=2)
    assert "\n" not in str(e.value)
    with pytest.raises(SpikesegError, match="input_size"):
        spiking_twin(ann, ConversionConfig(method="neuron"))
    with pytest.raises(SpikesegError, match="one size"):
        convert(ann, [(x,), (torch.rand(2, 3, 16, 16),)], ConversionConfig(method="neuron"),
                progress=False)


def test_unfolded_thresholds_keep_weights_and_binary_spikes():
    """fold_thresholds=False is the original code's convention: weights as they are, spikes of
    one unit (also per neuron)."""
    ann, x = _trained_like_ann("deeplab")
    folded = spiking_twin(ann, ConversionConfig(method="neuron", input_size=[12, 16]))
    snn = convert(ann, [(x,)], ConversionConfig(method="neuron", calibration_images=8,
                  calibration_timesteps=8, encoding="direct", fold_thresholds=False),
                  progress=False)
    torch.testing.assert_close(snn.features[1].conv.weight, folded.features[1].conv.weight)
    assert float(snn.features[0].act.theta.max()) > 1.0
    outs = []
    h = snn.features[0].register_forward_hook(lambda m, i, o: outs.append(o.unique()))
    with torch.no_grad():
        snn(x[:1], timesteps=4)
    h.remove()
    assert all(set(u.tolist()) <= {0.0, 1.0} for u in outs)


def test_neuron_and_leaky_thresholds_round_trip_through_checkpoint(tmp_path):
    from spikeseg.engine.checkpoint import read_metadata

    ann, x = _trained_like_ann("fcn", activation="leaky_relu")
    save_checkpoint(tmp_path / "ann", ann, "fcn")
    snn = convert(ann, [(x,)], ConversionConfig(method="neuron", calibration_images=8,
                  calibration_timesteps=8, timesteps=30), progress=False)
    save_converted(tmp_path / "snn", snn, read_metadata(tmp_path / "ann"))
    loaded, meta = load_checkpoint(tmp_path / "snn")
    assert meta["conversion"]["method"] == "neuron"
    assert meta["conversion"]["input_size"] == [12, 16]
    assert loaded.timesteps == 30 and loaded.stage1[0].act.negative_slope == pytest.approx(0.1)
    assert thresholds(loaded) == thresholds(snn)
    assert loaded.stage3[2].act.theta.shape == snn.stage3[2].act.theta.shape
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x[:2], generator=g1), snn(x[:2], generator=g2))


def test_spiking_twin_codes_the_ann_input_mean():
    """An ANN trained on image − mean (an imported original model) converts to signed Poisson
    coding of image − mean (and converges to the ANN), or to direct coding of it."""
    mean = [0.45, 0.5, 0.4]
    ann, x = _trained_like_ann("deeplab", seed=1, input_mean=mean)
    ref = ann(x[:2])
    twin = spiking_twin(ann, ConversionConfig())
    assert twin.encoding == "poisson_signed" and list(twin.encoder.mean) == mean
    assert spiking_twin(ann, ConversionConfig(encoding="direct")).encoding == "direct"
    plain, _ = _trained_like_ann("deeplab", seed=1)
    assert spiking_twin(plain, ConversionConfig()).encoding == "poisson"
    snn = convert(ann, [(x,)], ConversionConfig(calibration_images=8, calibration_timesteps=64),
                  progress=False)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        out = snn.forward_checkpoints(x[:2], [10, 1000], generator=g)
    e10, e1000 = _rel_err(out[10], ref), _rel_err(out[1000], ref)
    assert e1000 < e10 / 3 and e1000 < 0.15, (e10, e1000)
