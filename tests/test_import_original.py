"""Importing checkpoints of the paper's original code: parity with its forward pass, safety.

The original files are synthesised here as its train.py writes them (a dict with ``config``,
a NumPy ``max_miou``, ``epoch`` and ``state_dict`` under its parameter names and shapes), and
a small reference implementation of its forward passes — written from ``models/ann_vgg.py``
and ``models/snn_vgg.py`` of Intelligent-Computing-Lab-Yale/SNN-Segmentation — runs the same
tensors on the same inputs (BGR, Caffe mean subtracted; pre-encoded spike frames for SNNs).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spikeseg.engine.checkpoint import load_checkpoint
from spikeseg.errors import SpikesegError
from spikeseg.export.original import (
    CAFFE_MEAN_BGR_255,
    ORIGINAL_CAFFE_MEAN_RGB,
    RESAVE_HINT,
    import_original,
    read_original,
)
from spikeseg.models.converted import BalancedIF

# --------------------------------------------------------------------------- the original's layers

CFG_FEATURES = {
    "dl-vgg9": [64, 64, "avg2", 128, 128, "avg2", 256, "atrous256", "atrous256"],
    "fcn-vgg9": [64, 64, "skip", "avg2", 128, 128, "skip", "avg2", 256, 256, 256, "skip", "avg2"],
}
CFG_CLASSIFIER = {"dl-vgg9": ["atrous1024", "output"], "fcn-vgg9": ["1024-3-1", "1024-3-1", "skip"]}
NUM_CLS, SIZE = 3, 16


def _layers(arch: str, part: str, in_channels: int):
    """Per convolution of ``part``: (cin, cout, kernel, padding, dilation, kind), and the conv
    counts after which a skip score / a pool comes (the original's ModuleDict keys)."""
    cfg = (CFG_FEATURES if part == "features" else CFG_CLASSIFIER)[arch]
    convs, skips, pools, c, k = [], [], [], in_channels, 0
    for x in cfg:
        if x == "avg2":
            pools.append(k)
        elif x == "skip":
            skips.append(k)
        elif x == "output":
            convs.append((c, NUM_CLS, 1, 0, 1, "output"))
        elif isinstance(x, str) and x.startswith("atrous"):
            d = 2 if part == "features" else 12
            convs.append((c, int(x[6:]), 3, d, d, "conv"))
            c, k = int(x[6:]), k + 1
        elif isinstance(x, str):
            cout, kern, pad = (int(v) for v in x.split("-"))
            convs.append((c, cout, kern, pad, 1, "conv"))
            c, k = cout, k + 1
        else:
            convs.append((c, x, 3, 1, 1, "conv"))
            c, k = x, k + 1
    return convs, skips, pools, c


def make_original(arch: str, model_type: str, *, bn: bool = True, T: int = 3, seed: int = 0,
                  leaky: bool = False, old_names: bool = False, full_prop: bool = False,
                  leak_mem: float = 0.5) -> dict:
    """A checkpoint dict as the original's train.py saves it (tensors random, shapes real)."""
    g = torch.Generator().manual_seed(seed)
    gain = 16.0 if model_type == "snn" else 4.0  # spikes are sparse: larger weights keep them
    sd: dict[str, torch.Tensor] = {}
    fcn = arch.startswith("fcn")
    skip_name = "scores" if old_names else "skips"
    c_last = 3
    for part in ("features", "classifier"):
        convs, skips, _, c_last = _layers(arch, part, c_last)
        for k, (cin, cout, kern, _, _, kind) in enumerate(convs):
            if part == "features" and k == 0:
                # Dyadic weights: the first layer's sums are exact in any channel order.
                w = torch.randint(-12, 13, (cout, cin, kern, kern), generator=g) / 32.0
            else:
                w = torch.randn(cout, cin, kern, kern, generator=g) * math.sqrt(gain / (cin * 9))
            sd[f"{part}.{k}.weight"] = w
            if kind == "output" or not bn:
                continue
            if model_type == "snn":
                for t in range(T):
                    p = f"bn_{part}.{k}.{t}"
                    sd[f"{p}.weight"] = torch.rand(cout, generator=g) + 0.5
                    sd[f"{p}.running_mean"] = torch.rand(cout, generator=g) * 0.2 - 0.1
                    sd[f"{p}.running_var"] = torch.rand(cout, generator=g) + 0.5
                    sd[f"{p}.num_batches_tracked"] = torch.tensor(100 + t)
            else:
                p = f"bn_{part}.{k}"
                sd[f"{p}.running_mean"] = torch.rand(cout, generator=g) * 0.2 - 0.1
                sd[f"{p}.running_var"] = torch.rand(cout, generator=g) + 0.5
                sd[f"{p}.num_batches_tracked"] = torch.tensor(100)
        if fcn:
            chans = {2: 64, 4: 128, 7: 256} if part == "features" else {2: 1024}
            for k in skips:
                sd[f"{skip_name}_{part}.{k}.weight"] = torch.randn(NUM_CLS, chans[k], 1, 1,
                                                                   generator=g) * 0.1
                sd[f"{skip_name}_{part}.{k}.bias"] = torch.randn(NUM_CLS, generator=g) * 0.1
    if fcn:
        for i in range(3):
            sd[f"upsample.{i}.0.weight"] = torch.randn(NUM_CLS, NUM_CLS, 3, 3, generator=g) * 0.5
    config = {
        "model_type": model_type, "architecture": arch, "kernel_size": 3, "bn": bn,
        "dataset": {"name": "voc2012", "num_cls": NUM_CLS, "input_dim": 3,
                    "labels": {0: "background", 1: "cat", 2: "dog"}, "path": "./data/voc2012",
                    "img_size": [256, 256]},
        "img_size": [SIZE, SIZE], "pretrained": False, "full_prop": full_prop, "thl": False,
        "timesteps": T if model_type == "snn" else None,
        "leak_mem": leak_mem if model_type == "snn" else None,
        "def_threshold": 1.0 if model_type == "snn" else None,
        "leaky": leaky if model_type == "ann" else None,
        "alpha": 0.1 if leaky else None, "ibt": None, "identifier": "test",
    }
    return {"config": config, "max_miou": np.float64(0.6125), "epoch": 40, "state_dict": sd}


# --------------------------------------------------------------------------- reference forwards


def _bn(x, sd, prefix):
    return F.batch_norm(x, sd[f"{prefix}.running_mean"], sd[f"{prefix}.running_var"],
                        sd.get(f"{prefix}.weight"), None, False, 0.1, 1e-4)


def _skip(sd, part, k, x):
    return F.conv2d(x, sd[f"skips_{part}.{k}.weight"], sd[f"skips_{part}.{k}.bias"])


def reference_ann(state: dict, x_bgr: torch.Tensor) -> torch.Tensor:
    """ANN_VGG.forward: x is the BGR image minus the Caffe mean, divided by 255."""
    sd, cfg = state["state_dict"], state["config"]
    arch, H, W = cfg["architecture"], x_bgr.shape[-2], x_bgr.shape[-1]
    fcn, out, skips = arch.startswith("fcn"), x_bgr, []
    act = (lambda v: F.leaky_relu(v, 0.1)) if cfg["leaky"] else F.relu
    for part in ("features", "classifier"):
        convs, skip_at, pools, _ = _layers(arch, part, 3)
        body = convs if fcn else [c for c in convs if c[-1] != "output"]
        for k, (_, _, _, pad, dil, _) in enumerate(body):
            out = F.conv2d(out, sd[f"{part}.{k}.weight"], padding=pad, dilation=dil)
            out = act(_bn(out, sd, f"bn_{part}.{k}") if cfg["bn"] else out)
            if fcn and k + 1 in skip_at:
                skips.insert(0, _skip(sd, part, k + 1, out))
            if k + 1 in pools:
                out = F.avg_pool2d(out, 3, 2, 1)
    if fcn:
        out = skips[0]
        for i, div in enumerate((4, 2, 1)):
            up = F.conv_transpose2d(out, sd[f"upsample.{i}.0.weight"], stride=2)
            out = F.interpolate(up, (H // div, W // div), mode="bilinear", align_corners=True)
            out = out + skips[i + 1]
        return out
    out = F.conv2d(out, sd["classifier.1.weight"])
    return F.interpolate(out, (H, W), mode="bilinear", align_corners=True)


def reference_snn(state: dict, frames_bgr: torch.Tensor, thresholds: list | None = None,
                  leak: float | None = None, bn: bool | None = None,
                  analog_decoder: bool = False) -> torch.Tensor:
    """SNN_VGG.forward on pre-encoded frames [T, B, C, H, W] (its ``thl`` input path).

    ``thresholds``: per spiking layer (forward order) the firing threshold (float, [C] or
    [C, H, W]); default def_threshold. The spiking FCN returns the sum over T, DeepLab the mean;
    ``analog_decoder``: FCN's upsampling stages without neurons (a converted FCN's decoder)
    and the mean over T.
    """
    sd, cfg = state["state_dict"], state["config"]
    arch = cfg["architecture"]
    fcn = arch.startswith("fcn")
    T_in = frames_bgr.shape[0]
    T_bn = cfg["timesteps"] or T_in
    leak = cfg["leak_mem"] if leak is None else leak
    bn = cfg["bn"] if bn is None else bn
    theta_def = cfg["def_threshold"] or 1.0
    H, W = frames_bgr.shape[-2:]
    extra = 9 if cfg.get("full_prop") else 0
    specs = [(part, k, c) for part in ("features", "classifier")
             for k, c in enumerate(_layers(arch, part, 3)[0]) if c[-1] != "output"]
    meta = {part: _layers(arch, part, 3) for part in ("features", "classifier")}
    mems: dict = {}
    acc = 0.0
    for t in range(T_in + extra):
        out = frames_bgr[t] if t < T_in else torch.zeros_like(frames_bgr[0])
        skips = []
        for i, (part, k, (_, _, _, pad, dil, _)) in enumerate(specs):
            cur = F.conv2d(out, sd[f"{part}.{k}.weight"], padding=pad, dilation=dil)
            if bn and t < T_bn and t < T_in:
                cur = _bn(cur, sd, f"bn_{part}.{k}.{t}")
            mem = leak * mems.get(i, torch.zeros_like(cur)) + cur
            th = theta_def if thresholds is None or i >= len(thresholds) else thresholds[i]
            if isinstance(th, torch.Tensor) and th.dim() == 1:
                th = th[:, None, None]
            spike = ((mem / th - 1.0) > 0).float()
            mems[i] = mem - spike * th
            out = spike
            _, skip_at, pools, _ = meta[part]
            if fcn and k + 1 in skip_at:
                skips.insert(0, _skip(sd, part, k + 1, out))
            if k + 1 in pools:
                out = F.avg_pool2d(out, 3, 2, 1)
        if fcn:
            out = skips[0]
            for j, div in enumerate((4, 2, 1)):
                up = F.conv_transpose2d(out, sd[f"upsample.{j}.0.weight"], stride=2)
                up = F.interpolate(up, (H // div, W // div), mode="bilinear", align_corners=True)
                cur = up + skips[j + 1]
                if j == 2:
                    acc = acc + cur
                elif analog_decoder:
                    out = cur
                else:
                    mem = leak * mems.get(("up", j), torch.zeros_like(cur)) + cur
                    spike = ((mem / theta_def - 1.0) > 0).float()
                    mems[("up", j)] = mem - spike * theta_def
                    out = spike
        else:
            acc = acc + F.conv2d(out, sd["classifier.1.weight"])
    if fcn:
        return acc / T_in if analog_decoder else acc
    return F.interpolate(acc / T_in, (H, W), mode="bilinear", align_corners=True)


def _bgr_input(x_rgb: torch.Tensor) -> torch.Tensor:
    """The original's input for RGB images in [0, 1]: BGR, minus the Caffe mean, / 255."""
    mean = torch.tensor(CAFFE_MEAN_BGR_255).view(1, 3, 1, 1) / 255.0
    return x_rgb.flip(1) - mean


def _frames(T: int, B: int = 2, seed: int = 1) -> torch.Tensor:
    """Signed spike frames [T, B, 3, H, W] (RGB order), as the signed Poisson coder emits."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(-1, 2, (T, B, 3, SIZE, SIZE), generator=g)).float()


def _save(tmp_path, state, name="orig.pth"):
    path = tmp_path / name
    torch.save(state, path)
    return path


# --------------------------------------------------------------------------- ANNs


@pytest.mark.parametrize("arch,bn,leaky", [
    ("dl-vgg9", True, False), ("dl-vgg9", False, True), ("fcn-vgg9", True, False),
])
def test_imported_ann_gives_the_originals_outputs(tmp_path, arch, bn, leaky):
    state = make_original(arch, "ann", bn=bn, leaky=leaky)
    summary = import_original(_save(tmp_path, state), tmp_path / "ck")
    assert summary["kind"] == "trained" and summary["flipped_bgr"]
    assert summary["model"] == ("deeplab" if arch.startswith("dl") else "fcn")
    assert summary["max_miou"] == pytest.approx(0.6125) and summary["epoch"] == 40
    model, meta = load_checkpoint(tmp_path / "ck")
    assert model.input_mean == pytest.approx(list(ORIGINAL_CAFFE_MEAN_RGB))
    assert meta["imported_from"]["architecture"] == arch
    assert meta["imported_from"]["max_miou"] == pytest.approx(0.6125)
    assert meta["dataset"]["class_names"] == ["background", "cat", "dog"]
    assert model.activation == ("leaky_relu" if leaky else "relu")
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        got = model(x)
        want = reference_ann(state, _bgr_input(x))
    assert got.shape == (2, NUM_CLS, SIZE, SIZE)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_first_commit_fcn_names_are_accepted(tmp_path):
    state = make_original("fcn-vgg9", "ann", old_names=True)
    assert any(k.startswith("scores_features.") for k in state["state_dict"])
    import_original(_save(tmp_path, state), tmp_path / "ck")
    model, _ = load_checkpoint(tmp_path / "ck")
    ref_state = {**state, "state_dict": {k.replace("scores_", "skips_"): v
                                         for k, v in state["state_dict"].items()}}
    x = torch.rand(1, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference_ann(ref_state, _bgr_input(x)),
                                   rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- SNNs


@pytest.mark.parametrize("arch,full_prop", [
    ("dl-vgg9", False), ("fcn-vgg9", False), ("dl-vgg9", True),
])
def test_imported_snn_gives_the_originals_outputs(tmp_path, arch, full_prop):
    T = 4
    state = make_original(arch, "snn", T=T, full_prop=full_prop)
    summary = import_original(_save(tmp_path, state), tmp_path / "ck")
    assert summary["model"].startswith("spiking_") and summary["timesteps"] == T
    assert summary["encoding"] == "poisson_signed"
    model, meta = load_checkpoint(tmp_path / "ck")
    assert model.encoding == "poisson_signed" and model.timesteps == T
    assert model.bntt_modules()[0].running_mean.shape == (T + (9 if full_prop else 0), 64)
    frames = _frames(T)
    with torch.no_grad():
        got = model(frames)
        want = reference_snn(state, frames.flip(2))
    assert float(want.abs().max()) > 0  # the last layers spiked
    if arch.startswith("fcn"):
        got = got * T  # the original's spiking FCN sums over T
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    # Static RGB images are coded as the original codes its BGR, mean-subtracted input.
    prob = model.encoder.prepare(torch.full((1, 3, 2, 2), 0.5))
    want_prob = (0.5 - torch.tensor(CAFFE_MEAN_BGR_255).flip(0) / 255.0).view(1, 3, 1, 1)
    torch.testing.assert_close(prob, want_prob.expand(1, 3, 2, 2))


def test_snn_without_bntt_imports_as_norm_none(tmp_path):
    state = make_original("dl-vgg9", "snn", bn=False, T=3)
    import_original(_save(tmp_path, state), tmp_path / "ck")
    model, meta = load_checkpoint(tmp_path / "ck")
    assert meta["model"]["options"]["norm"] == "none"
    frames = _frames(3)
    with torch.no_grad():
        torch.testing.assert_close(model(frames), reference_snn(state, frames.flip(2)),
                                   rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- converted ANNs


def _thresholds(kind: str, arch: str, g: torch.Generator, n: int | None = None) -> list:
    """One threshold per spiking layer (forward order) at SIZE x SIZE input."""
    res = {"dl-vgg9": [1, 1, 2, 2, 4, 4, 4, 4], "fcn-vgg9": [1, 1, 2, 2, 4, 4, 4, 8, 8]}[arch]
    chans = {"dl-vgg9": [64, 64, 128, 128, 256, 256, 256, 1024],
             "fcn-vgg9": [64, 64, 128, 128, 256, 256, 256, 1024, 1024]}[arch]
    out = []
    for c, div in list(zip(chans, res, strict=True))[:n]:
        if kind == "layer":
            out.append(float(torch.rand((), generator=g)) + 0.6)
        elif kind == "channel":
            out.append(torch.rand(c, generator=g) + 0.6)
        else:
            out.append(torch.rand(c, SIZE // div, SIZE // div, generator=g) + 0.6)
    return out


@pytest.mark.parametrize("kind", ["layer", "channel", "neuron"])
def test_converted_ann_gives_the_originals_spikes(tmp_path, kind):
    """ANN file + thresholds[type][str(T)] → the original's converted SNN (leak 1), spike for
    spike, with the thresholds times the scaling factor."""
    state = make_original("dl-vgg9", "ann", bn=False)
    thr = _thresholds(kind, "dl-vgg9", torch.Generator().manual_seed(2))
    state["thresholds"] = {kind: {"50": thr}}
    summary = import_original(_save(tmp_path, state), tmp_path / "ck", scaling_factor=0.7)
    assert summary["kind"] == "converted" and summary["timesteps"] == 50
    assert summary["thresholds"] == {"type": kind, "timesteps": 50, "scaling_factor": 0.7,
                                     "layers": 8}
    model, meta = load_checkpoint(tmp_path / "ck")
    assert meta["conversion"]["method"] == kind and not meta["conversion"]["fold_thresholds"]
    assert meta["imported_from"]["thresholds"]["scaling_factor"] == 0.7
    if kind == "neuron":
        assert meta["conversion"]["input_size"] == [SIZE, SIZE]
    assert model.encoding == "poisson_signed"
    frames = _frames(12)
    scaled = [v * 0.7 for v in thr]
    with torch.no_grad():
        got = model(frames)
        want = reference_snn(state, frames.flip(2), thresholds=scaled, leak=1.0)
    assert float(want.abs().max()) > 0
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_converted_fcn_and_bn_ann(tmp_path):
    """FCN's search gives no threshold for its last classifier layer (def_threshold stays);
    an ANN's BatchNorm is folded (the original's conversion drops it by a name mismatch), so
    compare with the same tensors loaded into spikeseg's converted model by hand."""
    from spikeseg.models.converted import ConversionConfig, set_threshold, spiking_twin

    state = make_original("fcn-vgg9", "ann", bn=False)
    thr = _thresholds("layer", "fcn-vgg9", torch.Generator().manual_seed(3), n=8)
    state["thresholds"] = {"layer": {"20": thr}}
    summary = import_original(_save(tmp_path, state), tmp_path / "ck", scaling_factor=0.5)
    assert any("classifier.1" in n for n in summary["notes"])
    model, _ = load_checkpoint(tmp_path / "ck")
    assert float(model.classifier[1].act.theta) == 1.0
    frames = _frames(6)
    with torch.no_grad():
        want = reference_snn(state, frames.flip(2), thresholds=[v * 0.5 for v in thr],
                             leak=1.0, analog_decoder=True)
        torch.testing.assert_close(model(frames), want, rtol=1e-4, atol=1e-4)

    state = make_original("dl-vgg9", "ann", bn=True)
    thr = _thresholds("channel", "dl-vgg9", torch.Generator().manual_seed(4))
    state["thresholds"] = {"channel": {"30": thr}}
    import_original(_save(tmp_path, state, "bn.pth"), tmp_path / "bn", thresholds="channel")
    import_original(_save(tmp_path, state, "bn.pth"), tmp_path / "bn-ann", thresholds="none")
    model, _ = load_checkpoint(tmp_path / "bn")
    ann, _ = load_checkpoint(tmp_path / "bn-ann")
    x = torch.rand(1, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(ann(x), reference_ann(state, _bgr_input(x)),
                                   rtol=1e-4, atol=1e-4)
    by_hand = spiking_twin(ann, ConversionConfig(method="channel", timesteps=30,
                                                 fold_thresholds=False))
    for (name, _), v in zip(by_hand.activation_blocks(), thr, strict=True):
        set_threshold(by_hand, name, v * 0.7)
    for k, v in by_hand.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v, msg=k)
    frames = _frames(5)
    with torch.no_grad():
        torch.testing.assert_close(model(frames), by_hand(frames))


def test_threshold_choice_errors(tmp_path):
    state = make_original("dl-vgg9", "ann")
    g = torch.Generator().manual_seed(0)
    state["thresholds"] = {"layer": {"20": _thresholds("layer", "dl-vgg9", g),
                                     "40": _thresholds("layer", "dl-vgg9", g)}}
    path = _save(tmp_path, state)
    with pytest.raises(SpikesegError, match="choose one"):
        import_original(path, tmp_path / "x")
    s = import_original(path, tmp_path / "x", threshold_timesteps=40, timesteps=200)
    assert s["thresholds"]["timesteps"] == 40 and s["timesteps"] == 200
    with pytest.raises(SpikesegError, match="no 'channel' thresholds"):
        import_original(path, tmp_path / "x", thresholds="channel")
    # Before converter.py's "convert thresholds" the type level was missing: inferred.
    state["thresholds"] = {"20": _thresholds("channel", "dl-vgg9", g)}
    s = import_original(_save(tmp_path, state, "old.pth"), tmp_path / "x")
    assert s["thresholds"]["type"] == "channel" and s["timesteps"] == 20
    state["thresholds"] = {"layer": {"20": _thresholds("layer", "dl-vgg9", g, n=5)}}
    with pytest.raises(SpikesegError, match="5 layer thresholds") as e:
        import_original(_save(tmp_path, state, "short.pth"), tmp_path / "x")
    assert "\n" not in str(e.value)


# --------------------------------------------------------------------------- safety and errors


class _Payload:
    """Unpickling this object runs code: it writes a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def test_code_in_the_pickle_is_never_run(tmp_path, capsys):
    marker = tmp_path / "marker"
    state = make_original("dl-vgg9", "ann")
    state["payload"] = _Payload(marker)
    path = _save(tmp_path, state)
    # The payload is real: a full unpickle runs it (checked on a copy, in this test only).
    torch.load(_save(tmp_path, state, "copy.pth"), weights_only=False)
    assert marker.read_text() == "ran"
    marker.unlink()
    with pytest.raises(SpikesegError, match="does not unpickle") as e:
        import_original(path, tmp_path / "ck")
    msg = str(e.value)
    assert "\n" not in msg and "arbitrary code" in msg and "builtins.exec" in msg
    assert "re-save it with plain values" in msg
    assert not marker.exists()
    assert not (tmp_path / "ck.json").exists()
    # There is no opt-in that unpickles in full, from the library or the CLI.
    with pytest.raises(TypeError):
        import_original(path, tmp_path / "ck", trust=True)
    from spikeseg.cli import main

    code = main(["import-original", "--checkpoint", str(path), "--out", str(tmp_path / "ck"),
                 "--trust"])
    assert code == 2 and not marker.exists()
    assert "unrecognized arguments: --trust" in capsys.readouterr().err


def test_the_resave_hint_gives_a_file_that_imports(tmp_path, monkeypatch):
    """The fix the error message names turns a file with extra objects into one that loads."""
    state = make_original("dl-vgg9", "ann")
    state["config"] = _DictLike(state["config"])  # e.g. a wandb Config object
    path = _save(tmp_path, state)
    with pytest.raises(SpikesegError, match="_DictLike"):
        read_original(path)
    monkeypatch.chdir(tmp_path)
    s = torch.load(path, weights_only=False)  # the user, in the environment that wrote it
    hint = RESAVE_HINT.split("e.g. ", 1)[1]
    eval(hint, {"torch": torch, "s": s, "dict": dict, "float": float})  # noqa: S307
    import_original(tmp_path / "plain.pth", tmp_path / "ck")
    model, _ = load_checkpoint(tmp_path / "ck")
    assert model is not None


class _DictLike(dict):
    """A dict subclass (as wandb's config objects are): safe loading refuses its class."""


def test_numpy_scalar_is_allowed_without_trust(tmp_path):
    state = read_original(_save(tmp_path, make_original("dl-vgg9", "ann")))
    assert isinstance(state["max_miou"], np.float64) and state["epoch"] == 40


@pytest.mark.parametrize("change,match", [
    (lambda s: s["config"].update(architecture="dl-vgg16"), "no spikeseg model"),
    (lambda s: s["config"]["dataset"].update(num_cls=5), "do not fit"),
    (lambda s: s["state_dict"].__setitem__("features.3.weight", torch.zeros(128, 64, 3, 3)),
     "of another shape"),
    (lambda s: s["state_dict"].pop("bn_features.2.running_var"), "missing"),
    (lambda s: s["state_dict"].__setitem__("features.9.weight", torch.zeros(1)), "unexpected"),
    (lambda s: s["config"].update(architecture="fcn-vgg9"), "do not fit"),
    (lambda s: s["config"].update(kernel_size=5), "kernel_size"),
    (lambda s: s["config"].update(leaky=True, alpha=0.2), "slope"),
    (lambda s: s.pop("config"), "config"),
])
def test_files_of_another_architecture_or_shape_are_one_line_errors(tmp_path, change, match):
    state = make_original("dl-vgg9", "ann")
    change(state)
    with pytest.raises(SpikesegError, match=match) as e:
        import_original(_save(tmp_path, state), tmp_path / "ck")
    assert "\n" not in str(e.value)


def test_unreadable_and_mismatched_inputs(tmp_path):
    with pytest.raises(SpikesegError, match="not found"):
        import_original(tmp_path / "nope.pth", tmp_path / "ck")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SpikesegError, match="cannot be read") as e:
        import_original(bad, tmp_path / "ck")
    assert "\n" not in str(e.value)
    torch.save({"weight": torch.ones(1)}, tmp_path / "plain.pth")
    with pytest.raises(SpikesegError, match="state_dict"):
        import_original(tmp_path / "plain.pth", tmp_path / "ck")
    path = _save(tmp_path, make_original("dl-vgg9", "snn", T=2))
    with pytest.raises(SpikesegError, match="import it as 'spiking_deeplab'"):
        import_original(path, tmp_path / "ck", model_name="deeplab")
    with pytest.raises(SpikesegError, match="for ANN files"):
        import_original(path, tmp_path / "ck", thresholds="layer")
    with pytest.raises(SpikesegError, match="scaling_factor"):
        import_original(path, tmp_path / "ck", scaling_factor=0)


def test_converted_model_has_balanced_if_without_folding(tmp_path):
    state = make_original("dl-vgg9", "ann", bn=False)
    state["thresholds"] = {"neuron": {"10": _thresholds("neuron", "dl-vgg9",
                                                        torch.Generator().manual_seed(0))}}
    import_original(_save(tmp_path, state), tmp_path / "ck")
    model, _ = load_checkpoint(tmp_path / "ck")
    acts = [b.act for _, b in model.activation_blocks()]
    assert all(isinstance(a, BalancedIF) and not a.folded and a.per_neuron for a in acts)
    assert tuple(acts[-1].theta.shape) == (1024, SIZE // 4, SIZE // 4)
    with pytest.raises(SpikesegError, match="calibration input size"):
        model(torch.rand(1, 3, 2 * SIZE, 2 * SIZE), timesteps=1)
