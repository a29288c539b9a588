"""NIR export: the parameter mapping, equivalence with spikeseg step by step, round trips,
refusals with their messages, and a peer framework's importer (snnTorch) reading the file."""

from __future__ import annotations

import contextlib
import importlib
import io
import sys

import pytest
import torch
import torch.nn.functional as F

from spikeseg import SpikesegError, models
from spikeseg.engine.checkpoint import save_checkpoint
from spikeseg.export import export_checkpoint, export_nir
from spikeseg.export.nir import check_exportable, lif_parameters
from spikeseg.models.layers import TimeContext
from spikeseg.norm import TimeSharedBN

T, SIZE = 4, 16


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny convolutions run fastest on one thread (the CI's cores are shared)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def lively(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial evaluation statistics (BN) or biases (no norm), so every layer fires."""
    g = torch.Generator().manual_seed(seed)

    def u(t, lo, hi):
        t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, TimeSharedBN):
                u(m.running_mean, -0.3, 0.3)
                u(m.running_var, 0.2, 2.0)
                u(m.weight, 0.6, 1.6)
                u(m.bias, -0.1, 0.3)
            elif isinstance(m, torch.nn.Conv2d) and m.bias is not None:
                u(m.bias, 0.0, 0.6)
    return model.eval()


def tiny(name="spiking_deeplab", norm="bn", reset="hard", **kw) -> torch.nn.Module:
    return lively(models.create(name, 3, width=0.125, timesteps=T, norm=norm, reset=reset, **kw))


def frames(batch=2, p=0.4, seed=1, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(T, batch, 3, SIZE, SIZE, generator=g) < p).to(dtype)


@torch.no_grad()
def spikeseg_run(model, x):
    """Every neuron layer's spikes ``[T, B, ...]`` and the outputs the NIR graph exposes,
    from spikeseg run step by step (``body`` under a step TimeContext, spike hooks)."""
    spikes: dict[str, list[torch.Tensor]] = {}
    hooks = [lif.register_spike_hook(lambda m, s, t, n=n: spikes.setdefault(n, []).append(s))
             for n, lif in model.neurons()]
    outs: dict[str, list[torch.Tensor]] = {}
    scores: dict[str, torch.Tensor] = {}
    if isinstance(model, models.FCNVGG9):  # the skip scores read the last spikes of a stage
        for stage, score in (("stage1.1", "score1"), ("stage2.1", "score2"),
                             ("stage3.2", "score3"), ("classifier.1", "score4")):
            hooks.append(dict(model.named_modules())[f"{stage}.act"].register_spike_hook(
                lambda m, s, t, sc=score: scores.__setitem__(sc, getattr(model, sc)(s))))
    ctx = TimeContext("step", x.shape[0])
    try:
        for t, frame in enumerate(x.unbind(0)):
            ctx.t = t
            feats = model.body(frame, ctx)
            if isinstance(model, models.DeepLabVGG9):
                outs.setdefault("out", []).append(model.output(feats[0]))
            for sc, v in scores.items():
                outs.setdefault(f"out.{sc}", []).append(v)
    finally:
        for h in hooks:
            h.remove()
    return ({n: torch.stack(v) for n, v in spikes.items()},
            {n: torch.stack(v) for n, v in outs.items()})


# --------------------------------------------------------------------------------------------
# The parameter mapping (no NIR package needed)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("leak", [0.5, 0.9, 0.99, 0.999])
@pytest.mark.parametrize("dt", [1e-4, 1e-3, 1.0])
def test_lif_parameters_make_forward_euler_equal_eq2(leak, dt):
    p = lif_parameters(leak, 0.7, dt)
    assert p["type"] == "LIF" and p["v_leak"] == 0.0 and p["v_reset"] == 0.0
    assert p["v_threshold"] == 0.7
    # v[t] = v + dt/τ·(v_leak − v + R·I) = (1 − dt/τ)·v + (R·dt/τ)·I must be λ·v + I
    assert 1.0 - dt / p["tau"] == pytest.approx(leak, abs=1e-12)
    assert p["r"] * dt / p["tau"] == pytest.approx(1.0, abs=1e-12)


def test_if_parameters_make_forward_euler_a_plain_sum():
    p = lif_parameters(1.0, 1.0, 1e-3)
    assert p["type"] == "IF" and p["r"] * 1e-3 == pytest.approx(1.0)


def test_lif_parameters_reject_bad_values():
    with pytest.raises(SpikesegError):
        lif_parameters(1.5, 1.0)
    with pytest.raises(SpikesegError):
        lif_parameters(0.9, 1.0, dt=0.0)


# --------------------------------------------------------------------------------------------
# Refusals (no NIR package needed: the checks come first)
# --------------------------------------------------------------------------------------------


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_bntt_model_is_refused_with_the_option_to_train_with(tmp_path):
    m = models.create("spiking_deeplab", 3, width=0.125, timesteps=T, reset="hard")  # bntt
    with pytest.raises(SpikesegError) as e:
        export_nir(m, tmp_path / "m.nir", input_size=SIZE)
    msg = _one_line(e)
    assert "BNTT" in msg and "model.norm=bn" in msg and "none" in msg
    assert not (tmp_path / "m.nir").exists()


def test_soft_reset_model_is_refused(tmp_path):
    m = tiny(reset="soft")
    with pytest.raises(SpikesegError) as e:
        export_nir(m, tmp_path / "m.nir", input_size=SIZE)
    msg = _one_line(e)
    assert "soft reset" in msg and "model.reset=hard" in msg


def test_ann_is_refused_and_pointed_to_onnx(tmp_path):
    with pytest.raises(SpikesegError) as e:
        check_exportable(models.create("deeplab", 3, width=0.125))
    assert "--format onnx" in _one_line(e)


def test_converted_model_is_refused():
    from spikeseg.models.converted import spiking_twin

    snn = spiking_twin(models.create("deeplab", 3, width=0.125).eval())
    with pytest.raises(SpikesegError) as e:
        check_exportable(snn)
    assert "reset" in _one_line(e)


def test_model_object_without_input_size_is_refused(tmp_path):
    with pytest.raises(SpikesegError) as e:
        export_nir(tiny(), tmp_path / "m.nir")
    assert "input_size" in _one_line(e)


def test_missing_nir_package_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "nir", None)  # import nir raises ImportError
    with pytest.raises(SpikesegError) as e:
        export_nir(tiny(), tmp_path / "m.nir", input_size=SIZE)
    assert 'pip install "spikeseg[nir]"' in _one_line(e)


def test_export_package_imports_without_optional_packages(monkeypatch):
    for mod in ("nir", "nirtorch", "onnx", "onnxscript", "onnxruntime"):
        monkeypatch.setitem(sys.modules, mod, None)
    saved = {k: v for k, v in sys.modules.items() if k.startswith("spikeseg.export")}
    for k in saved:
        monkeypatch.delitem(sys.modules, k)
    try:
        mod = importlib.import_module("spikeseg.export")
        assert callable(mod.export_checkpoint)
    finally:
        for k in [k for k in sys.modules if k.startswith("spikeseg.export")]:
            del sys.modules[k]
        sys.modules.update(saved)


# --------------------------------------------------------------------------------------------
# Graphs (need nir)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("leak,threshold", [(0.99, 1.0), (0.9, 0.5), (1.0, 1.0)])
def test_conv_lif_nodes_integrated_by_euler_reproduce_spikeseg(tmp_path, leak, threshold):
    """Conv2d + LIF (or IF) read from the file and integrated by forward Euler straight from
    NIR's equation reproduce the spike train of spikeseg's first layer (float64)."""
    nir = pytest.importorskip("nir")
    m = tiny(leak=leak, threshold=threshold).double()
    export_nir(m, tmp_path / "m.nir", input_size=SIZE, dt=1e-3)
    g = nir.read(tmp_path / "m.nir")
    dt = float(g.metadata["dt"])
    conv, neuron = g.nodes["features.0.conv"], g.nodes["features.0.act"]
    assert ("features.0.conv", "features.0.act") in g.edges
    assert isinstance(neuron, nir.IF if leak == 1.0 else nir.LIF)
    x = frames(dtype=torch.float64)
    spikes, _ = spikeseg_run(m, x)
    w, b = torch.from_numpy(conv.weight), torch.from_numpy(conv.bias)
    v = torch.zeros(x.shape[1:2] + tuple(neuron.v_threshold.shape), dtype=torch.float64)
    p = {k: torch.from_numpy(getattr(neuron, k)) for k in ("r", "v_threshold", "v_reset")}
    tau = torch.from_numpy(neuron.tau) if leak != 1.0 else None
    train = []
    for frame in x:
        cur = F.conv2d(frame, w, b, stride=tuple(conv.stride), padding=tuple(conv.padding),
                       dilation=tuple(conv.dilation), groups=int(conv.groups))
        if tau is None:  # IF: dv/dt = R I
            v = v + dt * p["r"] * cur
        else:  # LIF: τ dv/dt = (v_leak − v) + R I
            v = v + dt / tau * ((torch.from_numpy(neuron.v_leak) - v) + p["r"] * cur)
        z = v > p["v_threshold"]
        v = torch.where(z, p["v_reset"], v)
        train.append(z.double())
    train = torch.stack(train)
    ref = spikes["features.0.act"]
    assert 0.02 < ref.mean() < 0.9  # the comparison means something
    assert torch.equal(train, ref)


@pytest.mark.parametrize("name", ["spiking_deeplab", "spiking_fcn"])
@pytest.mark.parametrize("norm", ["bn", "tdbn", "none"])
def test_graph_reproduces_every_spiking_layer_and_output(tmp_path, name, norm):
    pytest.importorskip("nir")
    import nir

    from spikeseg.export.nir import simulate

    m = tiny(name, norm=norm)
    summary = export_nir(m, tmp_path / "m.nir", input_size=SIZE)
    g = nir.read(tmp_path / "m.nir")
    x = frames()
    got = simulate(g, x, record=True)
    spikes, outs = spikeseg_run(m, x)
    exported = summary["neuron_layers"]
    assert len(exported) == (8 if name == "spiking_deeplab" else 9)
    for layer in exported:
        assert 0.0 < spikes[layer].mean() < 1.0, layer
        assert torch.equal(got[layer], spikes[layer]), layer
    assert set(outs) == set(summary["outputs"]) == {k for k, n in g.nodes.items()
                                                     if isinstance(n, nir.Output)}
    for k, ref in outs.items():
        torch.testing.assert_close(got[k], ref, rtol=1e-5, atol=1e-5)


def test_reader_average_and_upsampling_give_spikeseg_logits(tmp_path):
    pytest.importorskip("nir")
    import nir

    from spikeseg.export.nir import simulate
    from spikeseg.models.layers import resize

    m = tiny()
    export_nir(m, tmp_path / "m.nir", input_size=SIZE)
    x = frames()
    out = simulate(nir.read(tmp_path / "m.nir"), x)["out"]
    with torch.no_grad():
        logits = m(x)
    torch.testing.assert_close(resize(out.mean(0), (SIZE, SIZE)), logits, rtol=1e-5, atol=1e-5)


def test_avgpool_and_sumpool_scale_count_padding_as_ours(tmp_path):
    """NIR AvgPool2d and SumPool2d → Scale(1/9) both divide by 9 at the borders too
    (count_include_pad=True), as nn.AvgPool2d(3, 2, 1) does."""
    nir = pytest.importorskip("nir")
    from spikeseg.export.nir import simulate

    m = tiny()
    x = frames()
    results = {}
    for pool in ("avg", "sum"):
        export_nir(m, tmp_path / f"{pool}.nir", input_size=SIZE, pool=pool)
        g = nir.read(tmp_path / f"{pool}.nir")
        kinds = {type(n).__name__ for n in g.nodes.values()}
        assert ("AvgPool2d" in kinds) == (pool == "avg")
        assert ({"SumPool2d", "Scale"} <= kinds) == (pool == "sum")
        results[pool] = simulate(g, x, record=True)
    torch.testing.assert_close(results["sum"]["out"], results["avg"]["out"],
                               rtol=1e-5, atol=1e-6)
    ones = torch.ones(1, 1, 2, 8, 8)  # the pool alone on a constant map
    g = nir.NIRGraph(nodes={"input": nir.Input({"input": torch.tensor([2, 8, 8]).numpy()}),
                            "pool": nir.AvgPool2d(kernel_size=torch.tensor([3, 3]).numpy(),
                                                  stride=torch.tensor([2, 2]).numpy(),
                                                  padding=torch.tensor([1, 1]).numpy()),
                            "output": nir.Output({"output": torch.tensor([2, 4, 4]).numpy()})},
                     edges=[("input", "pool"), ("pool", "output")])
    y = simulate(g, ones)["output"][0, 0, 0]
    ref = torch.nn.AvgPool2d(3, 2, 1)(ones[0])[0, 0]
    assert y[0, 0].item() == pytest.approx(4 / 9) and torch.equal(y, ref)


def test_write_read_round_trip(tmp_path):
    nir = pytest.importorskip("nir")
    m = tiny()
    summary = export_nir(m, tmp_path / "m.nir", input_size=(16, 24), dt=2e-4)
    g = nir.read(tmp_path / "m.nir")
    assert summary["path"] == str(tmp_path / "m.nir")
    assert summary["input_shape"] == [3, 16, 24]
    assert g.metadata["format"] == "spikeseg-nir/1" and float(g.metadata["dt"]) == 2e-4
    assert g.metadata["left_out"] == "\n".join(summary["left_out"])
    assert list(g.nodes["input"].input_type["input"]) == [3, 16, 24]
    assert list(g.nodes["out"].output_type["output"]) == [3, 4, 6]
    assert len(g.nodes) == summary["nodes"] and len(g.edges) == summary["nodes"] - 1
    lif = g.nodes["classifier.0.act"]
    p = lif_parameters(0.99, 1.0, 2e-4)
    assert lif.tau.shape == (m.classifier[0].conv.out_channels, 4, 6)
    assert float(lif.tau.flat[0]) == pytest.approx(p["tau"])
    assert float(lif.r.flat[0]) == pytest.approx(p["r"])
    conv = g.nodes["classifier.0.conv"]
    assert tuple(conv.dilation) == (12, 12) and tuple(conv.padding) == (12, 12)
    # BN folded: the bias is the BN's b, the weight a·W
    a, b = m.classifier[0].norm.affine_parameters()
    torch.testing.assert_close(torch.from_numpy(conv.bias), b.detach())
    torch.testing.assert_close(torch.from_numpy(conv.weight),
                               (m.classifier[0].conv.weight * a.view(-1, 1, 1, 1)).detach())


def test_summary_lists_what_is_left_out(tmp_path):
    pytest.importorskip("nir")
    deeplab = export_nir(tiny(), tmp_path / "d.nir", input_size=SIZE)
    text = " ".join(deeplab["left_out"])
    assert "average" in text and "bilinear" in text and "Poisson" in text
    assert list(deeplab["outputs"]) == ["out"]
    fcn = export_nir(tiny("spiking_fcn"), tmp_path / "f.nir", input_size=SIZE)
    text = " ".join(fcn["left_out"])
    for item in ("transposed", "up1_act", "up2_act", "score1", "resize"):
        assert item in text
    assert list(fcn["outputs"]) == ["out.score1", "out.score2", "out.score3", "out.score4"]
    assert fcn["parameter_mapping"][0]["type"] == "LIF"


def test_export_checkpoint_takes_the_training_input_size(tmp_path):
    nir = pytest.importorskip("nir")
    m = tiny()
    save_checkpoint(tmp_path / "ck", m, "spiking_deeplab",
                    extra={"config": {"data": {"image_size": [16, 20]}}})
    s = export_checkpoint(tmp_path / "ck", "nir", tmp_path / "out" / "m.nir", timesteps=None)
    assert s["checkpoint"] == str(tmp_path / "ck") and s["model"] == "spiking_deeplab"
    assert s["input_shape"] == [3, 16, 20] and s["timesteps"] == T
    assert isinstance(nir.read(tmp_path / "out" / "m.nir"), nir.NIRGraph)
    save_checkpoint(tmp_path / "bare", m, "spiking_deeplab")
    with pytest.raises(SpikesegError) as e:
        export_checkpoint(tmp_path / "bare", "nir", tmp_path / "b.nir")
    assert "input_size" in _one_line(e)
    with pytest.raises(SpikesegError) as e:
        export_checkpoint(tmp_path / "ck", "nir", tmp_path / "c.nir", batch_size=2)
    assert "batch_size" in _one_line(e)
    with pytest.raises(SpikesegError):
        export_checkpoint(tmp_path / "ck", "tflite", tmp_path / "c.tflite")


# --------------------------------------------------------------------------------------------
# A real reader: snnTorch's NIR importer
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["bn", "none"])
def test_snntorch_reads_the_file_and_reproduces_spikeseg(tmp_path, norm):
    """snnTorch (``snntorch.import_nir.import_from_nir``) builds Conv2d, AvgPool2d and
    ``Leaky(reset_mechanism="zero", reset_delay=False)`` modules from the file; fed the same
    spike trains, every spiking layer and the output current match spikeseg."""
    pytest.importorskip("nirtorch")
    snntorch = pytest.importorskip("snntorch")
    import nir
    from snntorch.import_nir import import_from_nir

    m = tiny(norm=norm)
    summary = export_nir(m, tmp_path / "m.nir", input_size=SIZE)
    with contextlib.redirect_stdout(io.StringIO()):  # the importer prints progress
        net = import_from_nir(nir.read(tmp_path / "m.nir"))
    seen: dict[str, list[torch.Tensor]] = {}
    for name, mod in net.named_modules():
        if isinstance(mod, snntorch.Leaky):
            mod.register_forward_hook(
                lambda mod, i, o, n=name: seen.setdefault(n, []).append(o.clone()))
    x = frames()
    outs = []
    with torch.no_grad():
        for frame in x:
            out, _ = net(frame)
            outs.append(out)
    spikes, ref = spikeseg_run(m, x)
    assert len(seen) == len(summary["neuron_layers"]) == 8
    for layer in summary["neuron_layers"]:
        assert 0.0 < spikes[layer].mean() < 1.0, layer
        assert torch.equal(torch.stack(seen[layer.replace(".", "_")]), spikes[layer]), layer
    torch.testing.assert_close(torch.stack(outs), ref["out"], rtol=1e-5, atol=1e-5)
    import snntorch.utils

    snntorch.utils.reset(net)  # membranes back to zero: a new sequence starts afresh
    with torch.no_grad():
        again = torch.stack([net(frame)[0] for frame in x])
    torch.testing.assert_close(again, ref["out"], rtol=1e-5, atol=1e-5)
