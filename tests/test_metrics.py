"""mIoU, per-class IoU and pixel accuracy against a hand-worked and an independent computation."""

import math

import numpy as np
import pytest
import torch

from spikeseg.engine.metrics import ConfusionMatrix


def test_hand_worked_confusion_matrix():
    # 3 classes; 255 is ignored.
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 0]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 0]])
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    #            pred 0  1  2
    expected = [[2, 1, 0],   # gt 0: pixels (0,0)->0, (0,1)->1, (1,3)->0
                [0, 2, 0],   # gt 1
                [1, 0, 1]]   # gt 2: (1,0)->2, (1,1)->0
    assert cm.mat.tolist() == expected
    s = cm.compute()
    # IoU0 = 2/(3+3-2)=0.5, IoU1 = 2/(2+3-2)=2/3, IoU2 = 1/(2+1-1)=0.5
    assert s.iou == pytest.approx([0.5, 2 / 3, 0.5])
    assert s.miou == pytest.approx((0.5 + 2 / 3 + 0.5) / 3)
    assert s.pixel_accuracy == pytest.approx(5 / 7)
    assert s.mean_accuracy == pytest.approx((2 / 3 + 1 + 0.5) / 3)


def test_absent_classes_are_left_out_of_the_mean_and_logits_accepted():
    cm = ConfusionMatrix(4)
    target = torch.tensor([[[0, 1]]])
    logits = torch.zeros(1, 4, 1, 2)
    logits[0, 0, 0, 0] = 1
    logits[0, 1, 0, 1] = 1
    cm.update(logits, target)
    s = cm.compute()
    assert s.miou == 1.0
    assert math.isnan(s.iou[2]) and math.isnan(s.iou[3])


def test_matches_independent_numpy_computation():
    rng = np.random.default_rng(0)
    k = 6
    cm = ConfusionMatrix(k)
    all_t, all_p = [], []
    for _ in range(4):
        t = rng.integers(0, k, size=(3, 17, 13))
        t[rng.random(t.shape) < 0.1] = 255
        p = rng.integers(0, k, size=t.shape)
        cm.update(torch.from_numpy(p), torch.from_numpy(t))
        all_t.append(t.ravel())
        all_p.append(p.ravel())
    t = np.concatenate(all_t)
    p = np.concatenate(all_p)
    keep = t != 255
    t, p = t[keep], p[keep]
    ious = []
    for c in range(k):
        inter = np.sum((t == c) & (p == c))
        union = np.sum((t == c) | (p == c))
        ious.append(inter / union)
    s = cm.compute()
    assert s.iou == pytest.approx(ious)
    assert s.miou == pytest.approx(np.mean(ious))
    assert s.pixel_accuracy == pytest.approx(np.mean(t == p))


def test_label_outside_class_range_is_an_error():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="label 7 outside 0..2"):
        cm.update(torch.zeros(1, 2, dtype=torch.long), torch.tensor([[0, 7]]))
    with pytest.raises(ValueError, match="differ"):
        cm.update(torch.zeros(1, 3, dtype=torch.long), torch.tensor([[0, 1]]))
