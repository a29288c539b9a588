"""train.teacher: the distillation term against an independent KL computation, its place in the
training loss, the teacher checks, and a run that distils an ANN twin into its spiking model."""

import numpy as np
import pytest
import torch

from spikeseg import models
from spikeseg.config import load_config
from spikeseg.engine.distill import distillation_loss, load_teacher
from spikeseg.engine.train import _forward_loss
from spikeseg.errors import SpikesegError

from .conftest import tiny_overrides

TINY = {"width": 0.0625}


def _kl_numpy(s, t, tau):
    """Independent reference: τ² Σ_pixels Σ_c p_t (log p_t − log p_s), in float64 NumPy."""
    s, t = s.double().numpy() / tau, t.double().numpy() / tau

    def log_softmax(a):
        m = a.max(axis=1, keepdims=True)
        return a - m - np.log(np.exp(a - m).sum(axis=1, keepdims=True))

    ls, lt = log_softmax(s), log_softmax(t)
    return tau * tau * float((np.exp(lt) * (lt - ls)).sum())


@pytest.mark.parametrize("tau", [1.0, 2.5])
def test_distillation_loss_is_the_kl_divergence(tau):
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(2, 5, 3, 4, generator=g) * 3, torch.randn(2, 5, 3, 4, generator=g) * 3
    assert distillation_loss(s, t, tau).item() == pytest.approx(_kl_numpy(s, t, tau), rel=1e-5)
    # zero for equal distributions (a shift of every class's logit changes no probability)
    assert distillation_loss(t + 7.0, t, tau).item() == pytest.approx(0.0, abs=1e-4)
    assert distillation_loss(s, t, tau).item() > 0


def test_distillation_gradient_reaches_the_student_only():
    s = torch.randn(1, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    t = torch.randn(1, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: distillation_loss(v, t, 2.0).double(), (s,))
    distillation_loss(s, t).backward()
    assert t.grad is None and s.grad is not None
    # at τ = 1 the gradient per pixel is softmax(s) − softmax(t)
    want = torch.softmax(s, 1) - torch.softmax(t, 1)
    assert torch.allclose(s.grad, want.detach(), atol=1e-6)
    with pytest.raises(ValueError, match="differ in shape"):
        distillation_loss(s, t[:, :2])


def test_forward_loss_adds_the_weighted_distillation_term_per_pixel():
    torch.manual_seed(0)
    student = models.create("spiking_deeplab", 4, timesteps=2, **TINY)
    teacher = models.create("deeplab", 4, **TINY).eval()
    x, y = torch.rand(2, 3, 16, 16), torch.randint(0, 4, (2, 16, 16))
    y[0, 0, :5] = 255  # ignored pixels still get the teacher's opinion
    keys = torch.tensor([3, 4])
    total = float((y != 255).sum())
    plain = load_config(None, []).train
    cfg = load_config(None, ["train.teacher=t", "train.distill_weight=0.5",
                             "train.distill_temperature=2"]).train
    logits, ce = _forward_loss(student, x, y, keys, True, plain, total, 1)
    _, both = _forward_loss(student, x, y, keys, True, cfg, total, 1, teacher=teacher)
    with torch.no_grad():
        t_logits = teacher(x)
    want = ce + 0.5 * _kl_numpy(logits.detach(), t_logits, 2.0) / y.numel()
    assert both.item() == pytest.approx(want.item(), rel=1e-5)
    # weight 0: the teacher is not consulted and the loss is the plain one
    off = load_config(None, ["train.teacher=t", "train.distill_weight=0"]).train
    _, same = _forward_loss(student, x, y, keys, True, off, total, 1, teacher=teacher)
    assert same.item() == ce.item()
    # a spiking teacher sees the student's Poisson keys: itself as teacher gives KL 0
    student.eval()
    _, self_taught = _forward_loss(student, x, y, keys, True, cfg, total, 1, teacher=student)
    _, ce_eval = _forward_loss(student, x, y, keys, True, plain, total, 1)
    assert self_taught.item() == pytest.approx(ce_eval.item(), abs=1e-6)


def test_config_checks_the_distillation_options():
    for bad in ("train.distill_weight=-1", "train.distill_temperature=0", "train.teacher=3"):
        with pytest.raises(SpikesegError, match=bad.split("=")[0]):
            load_config(None, [bad])


def _ann_checkpoint(tmp_path, data_cache):
    from spikeseg.engine import train

    cfg = load_config(None, tiny_overrides(tmp_path / "runs", data_cache, model="deeplab")
                      + ["train.epochs=1", "train.name=teacher"])
    return train(cfg, progress=False, log=lambda *_: None).best_checkpoint


def test_load_teacher_refuses_a_checkpoint_of_other_data(tmp_path, data_cache):
    ck = _ann_checkpoint(tmp_path, data_cache)
    names = [f"c{i}" for i in range(11)]
    model, meta = load_teacher(ck, {"name": "builtin", "class_names": meta_names(ck),
                                    "temporal": False}, 11, 3)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    with pytest.raises(SpikesegError, match="predicts 11 classes, this run's dataset has 6"):
        load_teacher(ck, {"name": "ddd17", "class_names": names[:6]}, 6, 3)
    with pytest.raises(SpikesegError, match="takes 3 input channels, this run's dataset has 2"):
        load_teacher(ck, {"name": "x", "class_names": names}, 11, 2)
    with pytest.raises(SpikesegError, match="was trained on classes"):
        load_teacher(ck, {"name": "x", "class_names": names}, 11, 3)
    with pytest.raises(SpikesegError, match="trained on images"):
        load_teacher(ck, {"name": "ev", "class_names": meta_names(ck), "temporal": True}, 11, 3)
    with pytest.raises(SpikesegError, match="^train.teacher: checkpoint .* not found"):
        load_teacher(tmp_path / "nope.safetensors", {"class_names": names}, 11, 3)


def meta_names(ck):
    from spikeseg.engine.checkpoint import read_metadata

    return read_metadata(ck)["dataset"]["class_names"]


def test_a_spiking_run_distils_its_ann_twin(tmp_path, data_cache):
    from spikeseg.engine import train

    ck = _ann_checkpoint(tmp_path, data_cache)
    base = tiny_overrides(tmp_path / "runs", data_cache) + ["train.epochs=1"]
    lines: list[str] = []
    r = train(load_config(None, base + [f"train.teacher={ck}", "train.name=kd"]),
              progress=False, log=lines.append)
    assert r.best_epoch == 1
    assert any(line.startswith(f"distilling from {ck} (deeplab, validation mIoU ")
               for line in lines)
    import hashlib

    from spikeseg.engine.checkpoint import read_metadata

    rec = read_metadata(r.best_checkpoint)["teacher"]
    assert rec["sha256"] == hashlib.sha256(ck.read_bytes()).hexdigest()
    assert rec["model"] == "deeplab" and rec["path"] == str(ck)
    plain = train(load_config(None, base + ["train.name=plain"]), progress=False,
                  log=lambda *_: None)
    from spikeseg.engine.checkpoint import load_checkpoint

    a, _ = load_checkpoint(r.best_checkpoint)
    b, _ = load_checkpoint(plain.best_checkpoint)
    # the same seed and data: only the distillation term made the weights differ
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(),
                                                     strict=True))
    # a teacher for another dataset is one line before any training
    with pytest.raises(SpikesegError, match="train.teacher .* takes 3 input channels, this run.s dataset has 2"):
        train(load_config(None, base + [f"train.teacher={ck}", "train.name=bad",
                                        "data.dataset=builtin_events", "model.timesteps=2",
                                        "data.options={num_train: 16, num_val: 8}"]),
              progress=False, log=lambda *_: None)
