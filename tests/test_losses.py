"""train.class_weight and train.lovasz_weight: the weights of each scheme, the weighted loss
against a hand-written one, the Lovász loss against 1 − IoU, and a run that uses them."""

import json

import numpy as np
import pytest
import torch

from spikeseg import models
from spikeseg.config import load_config
from spikeseg.engine.class_weights import class_weights, label_frequencies, weights_for
from spikeseg.engine.train import _forward_loss
from spikeseg.errors import SpikesegError

TINY = {"width": 0.0625}


class _Labels:
    """A dataset of given label maps (inputs unused)."""

    def __init__(self, labels):
        self.labels = [torch.as_tensor(y) for y in labels]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return torch.zeros(1), self.labels[i]


def test_frequencies_count_labelled_pixels_only():
    ys = [np.array([[0, 0, 1, 255]]), np.array([[0, 2, 2, 255]])]
    f = label_frequencies(_Labels(ys), 4)
    np.testing.assert_allclose(f, [3 / 6, 1 / 6, 2 / 6, 0.0])
    with pytest.raises(SpikesegError, match="label 7, outside the classes 0..3"):
        label_frequencies(_Labels([np.array([[0, 7]])]), 4)
    with pytest.raises(SpikesegError, match="no labelled pixel"):
        label_frequencies(_Labels([np.full((2, 2), 255)]), 4)


def test_frequencies_scan_evenly_spread_samples():
    # 10 samples, 4 scanned: indices 0, 3, 6, 9 (each sample labelled with its own index)
    ys = [np.full((1, 1), i) for i in range(10)]
    f = label_frequencies(_Labels(ys), 10, max_samples=4)
    assert np.flatnonzero(f).tolist() == [0, 3, 6, 9]


def test_median_frequency_and_inverse_sqrt_weights():
    f = np.array([0.7, 0.2, 0.1, 0.0])
    # median of the present classes 0.2: raw weights 0.2/0.7, 1, 2; the absent class the max
    raw = np.array([0.2 / 0.7, 1.0, 2.0, 2.0])
    np.testing.assert_allclose(class_weights("median_freq", f), raw / (f @ raw))
    raw = np.array([0.7 ** -0.5, 0.2 ** -0.5, 0.1 ** -0.5, 0.1 ** -0.5])
    w = class_weights("inv_sqrt_freq", f)
    np.testing.assert_allclose(w, raw / (f @ raw))
    assert f @ w == pytest.approx(1.0)  # the average pixel counts once
    # balanced classes: every weight 1, i.e. eq. (5) unchanged
    np.testing.assert_allclose(class_weights("median_freq", np.full(4, 0.25)), np.ones(4))


def test_given_weights_must_match_the_classes():
    w, freqs = weights_for([1.0, 2.0, 3.0], _Labels([np.zeros((1, 1))]), 3)
    assert w.tolist() == [1.0, 2.0, 3.0] and freqs is None
    with pytest.raises(SpikesegError, match="2 weights but the dataset has 3 classes"):
        weights_for([1.0, 2.0], _Labels([np.zeros((1, 1))]), 3)


@pytest.mark.parametrize("bad", ["balanced", [], [1.0, 0.0], [1, -2], "[1, nan]"])
def test_bad_class_weight_settings_are_named(bad):
    value = bad if isinstance(bad, str) else json.dumps(bad)
    with pytest.raises(SpikesegError, match="train.class_weight"):
        load_config(None, [f"train.class_weight={value}"])


@pytest.mark.parametrize("loss", ["mean_logits_ce", "tet"])
def test_weighted_loss_equals_a_hand_written_weighted_cross_entropy(loss):
    torch.manual_seed(0)
    m = models.create("spiking_deeplab", 4, timesteps=3, encoding="direct", **TINY)
    x, y = torch.rand(2, 3, 16, 16), torch.randint(0, 4, (2, 16, 16))
    y[0, :3] = 255
    w = torch.tensor([0.2, 1.0, 2.5, 4.0])
    cfg = load_config(None, [f"train.loss={loss}"]).train
    total = float((y != 255).sum())
    _, got = _forward_loss(m, x, y, None, True, cfg, total, 1, weight=w)

    def weighted_ce(o):  # Σ_i w[y_i]·(−log softmax(o_i)[y_i]) / N over labelled pixels
        logp = torch.log_softmax(o, 1).permute(0, 2, 3, 1)[y != 255]
        t = y[y != 255]
        return (w[t] * -logp.gather(1, t[:, None])[:, 0]).sum() / total

    if loss == "tet":
        want = torch.stack([weighted_ce(o) for o in m(x, return_steps=True)]).mean()
    else:
        want = weighted_ce(m(x))
    assert torch.allclose(got, want, atol=1e-6)
    # all-ones weights are eq. (5)
    _, ones = _forward_loss(m, x, y, None, True, cfg, total, 1, weight=torch.ones(4))
    _, plain = _forward_loss(m, x, y, None, True, cfg, total, 1)
    assert torch.allclose(ones, plain, atol=1e-7)


def test_a_run_with_median_frequency_weights_and_lovasz(tmp_path, data_cache):
    from spikeseg.engine import train

    from .conftest import tiny_overrides

    cfg = load_config(None, tiny_overrides(tmp_path / "runs", data_cache)
                      + ["train.epochs=1", "train.class_weight=median_freq",
                         "train.lovasz_weight=0.5"])
    lines = []
    r = train(cfg, progress=False, log=lines.append)
    assert r.best_epoch == 1
    doc = json.loads((r.run_dir / "class_weights.json").read_text())
    f = np.array([c["frequency"] for c in doc["classes"]])
    w = np.array([c["weight"] for c in doc["classes"]])
    assert f.sum() == pytest.approx(1.0) and f @ w == pytest.approx(1.0, rel=1e-6)
    assert w[0] < 1 < w[1:].min()  # background, the frequent class, counts least
    assert any(line.startswith("class weights (median_freq): background") for line in lines)


# --- train.lovasz_weight: the Lovász-softmax loss ---------------------------------------------

def _iou_loss_of_one_hot(pred, y, num_classes):
    """Independent reference: mean over the classes present in y of 1 − IoU_c, from counts."""
    keep = y != 255
    p, t = pred[keep], y[keep]
    out = []
    for c in range(num_classes):
        if not (t == c).any():
            continue
        inter = ((p == c) & (t == c)).sum().item()
        union = ((p == c) | (t == c)).sum().item()
        out.append(1 - inter / union)
    return float(np.mean(out))


def test_lovasz_on_one_hot_predictions_is_one_minus_iou():
    from spikeseg.engine.lovasz import lovasz_softmax

    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (3, 6, 7), generator=g)
    y[0, 0] = 255
    y[2] = 1  # one class only
    pred = torch.where(torch.rand(3, 6, 7, generator=g) < 0.6, y,
                       torch.randint(0, 5, (3, 6, 7), generator=g))
    pred[y == 255] = 0
    logits = torch.nn.functional.one_hot(pred, 5).permute(0, 3, 1, 2).double() * 100.0
    got = lovasz_softmax(logits, y)
    want = sum(_iou_loss_of_one_hot(pred[i], y[i], 5) for i in range(3))
    assert got.item() == pytest.approx(want, abs=1e-9)
    perfect = torch.nn.functional.one_hot(y[2], 5).permute(2, 0, 1)[None].double() * 100.0
    assert lovasz_softmax(perfect, y[2:]).item() == pytest.approx(0.0, abs=1e-12)
    assert lovasz_softmax(logits[:1], torch.full((1, 6, 7), 255)).item() == 0.0


def test_lovasz_grad_by_hand_and_gradcheck():
    from spikeseg.engine.lovasz import lovasz_grad, lovasz_softmax

    # g sorted = [1, 0, 1]: Δ_J after 1, 2, 3 errors = 1/2, 2/3, 1 (|g| = 2)
    d = lovasz_grad(torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64))
    assert torch.allclose(d, torch.tensor([0.5, 2 / 3 - 0.5, 1 / 3], dtype=torch.float64))
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 3, (2, 4, 4))
    assert torch.autograd.gradcheck(lambda v: lovasz_softmax(v, y), (x,))


def test_forward_loss_adds_the_weighted_lovasz_term_per_image():
    from spikeseg.engine.lovasz import lovasz_softmax

    torch.manual_seed(0)
    m = models.create("deeplab", 4, **TINY)
    x, y = torch.rand(2, 3, 16, 16), torch.randint(0, 4, (2, 16, 16))
    total = float((y != 255).sum())
    plain = load_config(None, []).train
    cfg = load_config(None, ["train.lovasz_weight=0.5"]).train
    logits, ce = _forward_loss(m, x, y, None, False, plain, total, 1)
    _, both = _forward_loss(m, x, y, None, False, cfg, total, 1)
    assert torch.allclose(both, ce + 0.5 * lovasz_softmax(logits, y) / 2, atol=1e-6)
    with pytest.raises(SpikesegError, match="train.lovasz_weight"):
        load_config(None, ["train.lovasz_weight=-1"])
