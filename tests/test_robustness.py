"""Input corruptions (Gaussian noise, blur, salt-and-pepper) and the robustness curves of
figure 11: each corruption against its definition, the curves against separate evaluations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from spikeseg import models
from spikeseg.analysis.robustness import (
    CORRUPTIONS,
    corruption_robustness,
    gaussian_blur,
    gaussian_kernel1d,
    gaussian_noise,
    noise_robustness,
    relative_drop,
    salt_and_pepper,
)
from spikeseg.engine.evaluate import evaluate
from spikeseg.errors import SpikesegError

# --------------------------------------------------------------------------- blur


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.3])
def test_gaussian_kernel_is_the_normalised_gaussian(sigma):
    g = gaussian_kernel1d(sigma)
    r = int(4 * sigma + 0.5)
    assert g.shape == (2 * r + 1,) and g.sum().item() == pytest.approx(1.0)
    k = np.arange(-r, r + 1)
    want = np.exp(-(k**2) / (2 * sigma**2))
    np.testing.assert_allclose(g.numpy(), want / want.sum(), rtol=1e-12)


def test_blur_of_a_point_is_the_outer_product_of_the_kernel():
    x = torch.zeros(1, 1, 21, 21, dtype=torch.float64)
    x[0, 0, 10, 10] = 1.0
    y = gaussian_blur(x, 1.5)
    g = gaussian_kernel1d(1.5)  # r = 6: the point's blur fits inside, no padding reached
    want = torch.zeros(21, 21, dtype=torch.float64)
    want[4:17, 4:17] = torch.outer(g, g)
    torch.testing.assert_close(y[0, 0], want)
    assert gaussian_blur(x, 0.0) is x
    const = torch.full((2, 3, 9, 7), 0.25)  # mirror padding keeps constants constant
    torch.testing.assert_close(gaussian_blur(const, 3.0), const)


@pytest.mark.parametrize("sigma", [0.7, 2.0])
def test_blur_matches_scipy_gaussian_filter_in_mirror_mode(sigma):
    ndimage = pytest.importorskip("scipy.ndimage")
    x = torch.rand(2, 3, 17, 23, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = gaussian_blur(x, sigma)
    for b in range(2):
        for c in range(3):
            want = ndimage.gaussian_filter(x[b, c].numpy(), sigma, mode="mirror", truncate=4.0)
            np.testing.assert_allclose(y[b, c].numpy(), want, atol=1e-12)


def test_blur_treats_every_frame_and_channel_alike():
    x = torch.rand(3, 2, 2, 12, 12, generator=torch.Generator().manual_seed(2))  # [T,B,C,H,W]
    y = gaussian_blur(x, 1.0)
    assert y.shape == x.shape and y.dtype == x.dtype
    for t in range(3):
        torch.testing.assert_close(y[t], gaussian_blur(x[t], 1.0))
    tiny = torch.rand(1, 1, 3, 3)  # a kernel wider than the image is cut to fit
    assert gaussian_blur(tiny, 5.0).shape == tiny.shape
    cl = x[0].contiguous(memory_format=torch.channels_last)  # as evaluate() feeds ANNs on CPU
    torch.testing.assert_close(gaussian_blur(cl, 1.0), y[0])


# --------------------------------------------------------------------------- salt and pepper


def test_salt_and_pepper_sets_whole_pixels_to_the_range_ends():
    x = torch.full((4, 3, 64, 64), 0.5)
    g = torch.Generator().manual_seed(0)
    y = salt_and_pepper(x, 0.2, g)
    assert set(torch.unique(y).tolist()) == {0.0, 0.5, 1.0}
    # a pixel is corrupted in all its channels at once, to one value
    assert torch.equal(y.amin(1), y.amax(1))
    frac = (y[:, 0] != 0.5).float().mean().item()
    assert frac == pytest.approx(0.2, abs=0.02)
    assert (y[:, 0] == 0).float().mean().item() == pytest.approx(0.1, abs=0.015)
    # seeded: the same generator state, the same pixels
    again = salt_and_pepper(x, 0.2, torch.Generator().manual_seed(0))
    assert torch.equal(y, again)
    assert salt_and_pepper(x, 0.0, g) is x
    assert not (salt_and_pepper(x, 1.0, g) == 0.5).any()


def test_salt_and_pepper_on_event_frames_makes_dead_and_hot_pixels():
    g = torch.Generator().manual_seed(3)
    x = torch.poisson(torch.full((5, 2, 2, 16, 16), 2.0), generator=g)  # [T, B, C, H, W]
    y = salt_and_pepper(x, 0.3, torch.Generator().manual_seed(4), value_range=None)
    changed = (y != x).any(0).any(1)  # [B, H, W]
    assert changed.any()
    lo = x.amin(dim=(-2, -1), keepdim=True).expand_as(x)
    hi = x.amax(dim=(-2, -1), keepdim=True).expand_as(x)
    # the same sensor pixels in every frame and channel; dead = frame minimum, hot = maximum
    u = torch.rand((1, 2, 1, 16, 16), generator=torch.Generator().manual_seed(4))
    dead, hot = (u < 0.15).expand_as(x), ((u >= 0.15) & (u < 0.3)).expand_as(x)
    assert torch.equal(y[dead], lo[dead]) and torch.equal(y[hot], hi[hot])
    assert torch.equal(y[~(dead | hot)], x[~(dead | hot)])
    with pytest.raises(SpikesegError, match=r"\[B, C, H, W\]"):
        salt_and_pepper(torch.zeros(4, 4), 0.1)


def test_gaussian_noise_is_seeded_and_additive():
    x = torch.zeros(2, 3, 8, 8)
    y = gaussian_noise(x, 0.5, torch.Generator().manual_seed(0))
    torch.testing.assert_close(y, 0.5 * torch.randn(x.shape, generator=torch.Generator()
                                                     .manual_seed(0)))
    assert gaussian_noise(x, 0.0) is x


# --------------------------------------------------------------------------- curves


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    m = models.create("deeplab", 3, width=0.125).eval()
    x = torch.rand(8, 3, 24, 24, generator=torch.Generator().manual_seed(5))
    y = (x.mean(1) * 3).long().clamp(max=2)
    return m, DataLoader(TensorDataset(x, y), batch_size=4)


@pytest.mark.parametrize("corruption, levels", [("gaussian_blur", [2.0, 0.0, 1.0]),
                                                ("salt_pepper", [0.05, 0.3])])
def test_curves_follow_the_definition(tiny, corruption, levels):
    m, loader = tiny
    pts = corruption_robustness(m, loader, corruption, levels, progress=False)
    assert [p.level for p in pts] == [0.0] + [v for v in levels if v != 0.0]
    assert pts[0].drop_percent == 0.0
    clean = evaluate(m, loader, progress=False).scores.miou
    assert pts[0].miou == pytest.approx(clean)
    for p in pts[1:]:
        assert p.drop_percent == pytest.approx(relative_drop(clean, p.miou))
    # each point is the evaluation of the corrupted inputs
    last = pts[-1].level
    g = torch.Generator().manual_seed(0)

    def corrupt(x):
        return gaussian_blur(x, last) if corruption == "gaussian_blur" else \
            salt_and_pepper(x, last, g)

    ref = evaluate(m, loader, progress=False, transform=corrupt).scores.miou
    assert pts[-1].miou == pytest.approx(ref)


def test_noise_curve_keeps_its_records_and_seeding(tiny):
    m, loader = tiny
    pts = noise_robustness(m, loader, [0.0, 0.3], progress=False)
    assert [p.sigma for p in pts] == [0.0, 0.3]
    gen = corruption_robustness(m, loader, "gaussian_noise", [0.3], progress=False)
    assert [(p.level, p.miou) for p in gen] == [(p.sigma, p.miou) for p in pts]
    g = torch.Generator().manual_seed(0)
    ref = evaluate(m, loader, progress=False, transform=lambda x: gaussian_noise(x, 0.3, g))
    assert pts[1].miou == pytest.approx(ref.scores.miou)


def test_bad_corruptions_and_levels_are_one_line_errors(tiny):
    m, loader = tiny
    assert set(CORRUPTIONS) == {"gaussian_noise", "gaussian_blur", "salt_pepper"}
    with pytest.raises(SpikesegError, match="unknown corruption 'fog'; choose one of"):
        corruption_robustness(m, loader, "fog", [0.1], progress=False)
    with pytest.raises(SpikesegError, match=r"salt_pepper levels must be finite numbers in"):
        corruption_robustness(m, loader, "salt_pepper", [1.5], progress=False)
    with pytest.raises(SpikesegError, match="gaussian_blur levels must be finite numbers >= 0"):
        corruption_robustness(m, loader, "gaussian_blur", [-1.0], progress=False)
