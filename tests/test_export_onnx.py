"""ONNX export: onnxruntime against PyTorch (ANN and spiking, both families), the dynamic
batch axis, the signatures, and the messages when something is missing."""

from __future__ import annotations

import sys

import pytest
import torch

from spikeseg import SpikesegError, models
from spikeseg.encoding import PoissonEncoder
from spikeseg.engine.checkpoint import save_checkpoint
from spikeseg.export import export_checkpoint, export_onnx
from spikeseg.export.onnx import input_spec
from spikeseg.norm import BNTT, TimeSharedBN

SIZE = 16
TOL = 1e-5
"""ONNX logits agree with PyTorch's within TOL of the output's scale (the export's own check)."""


def assert_close_scaled(got: torch.Tensor, ref: torch.Tensor, tol: float = TOL) -> None:
    assert got.shape == ref.shape
    scale = max(1.0, float(ref.abs().max()))
    err = float((got - ref).abs().max())
    assert err <= tol * scale, f"max |onnx - torch| {err:.3g} > {tol:g} x {scale:.3g}"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny convolutions run fastest on one thread (the CI's cores are shared)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def lively(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial running statistics in every norm, then evaluation mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (TimeSharedBN, BNTT, torch.nn.BatchNorm2d)):
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.6 - 0.3)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1.8 + 0.2)
    return model.eval()


def run_ort(path, x: torch.Tensor) -> torch.Tensor:
    ort = pytest.importorskip("onnxruntime")
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(s.run(None, {s.get_inputs()[0].name: x.numpy()})[0])


def spikes(T, B, seed=3):
    g = torch.Generator().manual_seed(seed)
    return PoissonEncoder().encode(torch.rand(B, 3, SIZE, SIZE, generator=g), T, generator=g)


@pytest.fixture(scope="module")
def onnx_ok():
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")


# --------------------------------------------------------------------------------------------
# Signatures and messages (no ONNX package needed)
# --------------------------------------------------------------------------------------------


def test_input_spec_per_kind_of_model():
    ann = models.create("deeplab", 3, width=0.125)
    snn = models.create("spiking_fcn", 2, in_channels=2, width=0.125, timesteps=5)
    direct = models.create("spiking_deeplab", 3, width=0.125, timesteps=3, encoding="direct")
    assert input_spec(ann, (16, 24), None) == ("image", ["B", 3, 16, 24], 0)
    assert input_spec(ann, (16, 24), 4) == ("frames", [4, "B", 3, 16, 24], 4)
    assert input_spec(snn, (16, 16), None) == ("frames", [5, "B", 2, 16, 16], 5)
    assert input_spec(snn, (16, 16), 7) == ("frames", [7, "B", 2, 16, 16], 7)
    assert input_spec(direct, (16, 16), None) == ("image", ["B", 3, 16, 16], 3)


def test_missing_onnx_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(SpikesegError) as e:
        export_onnx(models.create("deeplab", 3, width=0.125), tmp_path / "m.onnx",
                    input_size=SIZE)
    msg = str(e.value)
    assert "\n" not in msg and 'pip install "spikeseg[onnx]"' in msg


def test_missing_input_size_and_bad_batch_are_refused(tmp_path, onnx_ok):
    m = models.create("deeplab", 3, width=0.125)
    with pytest.raises(SpikesegError, match="input_size"):
        export_onnx(m, tmp_path / "m.onnx")
    with pytest.raises(SpikesegError, match="batch_size"):
        export_onnx(m, tmp_path / "m.onnx", input_size=SIZE, batch_size=0)


# --------------------------------------------------------------------------------------------
# onnxruntime against PyTorch
# --------------------------------------------------------------------------------------------


@pytest.mark.slow  # the torch.export-based exporter takes ~10 s on 2 shared cores
def test_ann_deeplab_matches_pytorch_at_other_batch_sizes(tmp_path, onnx_ok):
    m = lively(models.create("deeplab", 4, width=0.125))
    s = export_onnx(m, tmp_path / "ann.onnx", input_size=(SIZE, 24))
    assert s["input"] == {"image": ["B", 3, SIZE, 24]} and s["dynamic_batch"]
    assert s["output"] == {"logits": ["B", 4, SIZE, 24]}
    assert s["verified"] and s["max_abs_diff"] <= 1e-4 and s["exporter"].startswith("torch.export")
    assert not (tmp_path / "ann.onnx.data").exists()  # weights inside the one file
    for batch in (1, 3):
        x = torch.rand(batch, 3, SIZE, 24, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            ref = m(x)
        assert_close_scaled(run_ort(tmp_path / "ann.onnx", x), ref)


@pytest.mark.slow  # the torch.export-based exporter takes ~10 s on 2 shared cores
def test_spiking_deeplab_unrolled_matches_pytorch(tmp_path, onnx_ok):
    T = 3
    m = lively(models.create("spiking_deeplab", 4, width=0.125, timesteps=T, norm="bn",
                             reset="hard"))
    s = export_onnx(m, tmp_path / "snn.onnx", input_size=SIZE)
    assert s["input"] == {"frames": [T, "B", 3, SIZE, SIZE]} and s["timesteps"] == T
    assert any("Poisson" in x or "rate-coded" in x for x in s["left_out"])
    for batch in (1, 4):
        x = spikes(T, batch)
        with torch.no_grad():
            ref = m(x)
        assert_close_scaled(run_ort(tmp_path / "snn.onnx", x), ref)


@pytest.mark.slow  # the torch.export-based exporter takes ~10 s on 2 shared cores
def test_spiking_fcn_bntt_direct_coding_repeats_the_image_inside(tmp_path, onnx_ok):
    """The paper's default SNN (BNTT, soft reset) with direct coding and an input mean:
    the graph takes the image, subtracts the mean, clamps and repeats it T times."""
    T = 2
    m = lively(models.create("spiking_fcn", 3, width=0.125, timesteps=T, encoding="direct",
                             input_mean=[0.4, 0.5, 0.6]))
    s = export_onnx(m, tmp_path / "fcn.onnx", input_size=SIZE)
    assert s["input"] == {"image": ["B", 3, SIZE, SIZE]} and s["timesteps"] == T
    x = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = m(x)
    assert_close_scaled(run_ort(tmp_path / "fcn.onnx", x), ref)


def test_ann_fcn_on_event_frames_with_legacy_exporter_and_fixed_batch(tmp_path, onnx_ok):
    m = lively(models.create("fcn", 3, width=0.125, in_channels=2))
    s = export_onnx(m, tmp_path / "fcn.onnx", input_size=SIZE, timesteps=2, batch_size=2,
                    dynamo=False)
    assert s["input"] == {"frames": [2, 2, 2, SIZE, SIZE]} and not s["dynamic_batch"]
    assert s["exporter"].startswith("torchscript") and s["verified"]
    x = torch.rand(2, 2, 2, SIZE, SIZE, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        ref = m(x)
    assert_close_scaled(run_ort(tmp_path / "fcn.onnx", x), ref)


def test_export_checkpoint_onnx_with_timesteps(tmp_path, onnx_ok):
    m = lively(models.create("spiking_deeplab", 3, width=0.125, timesteps=4, norm="none",
                             reset="hard"))
    save_checkpoint(tmp_path / "ck", m, "spiking_deeplab",
                    extra={"config": {"data": {"image_size": SIZE}}})
    s = export_checkpoint(tmp_path / "ck", "onnx", tmp_path / "m.onnx", timesteps=2,
                          dynamo=False)
    assert s["model"] == "spiking_deeplab" and s["timesteps"] == 2
    assert s["input"] == {"frames": [2, "B", 3, SIZE, SIZE]} and s["verified"]
    x = spikes(2, 3)
    with torch.no_grad():
        ref = m(x)
    assert_close_scaled(run_ort(tmp_path / "m.onnx", x), ref)
