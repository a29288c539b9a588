"""Poisson rate coding: rates equal intensities, seeded, signed variant."""

import pytest
import torch

from spikeseg.encoding import CAFFE_MEAN_RGB, DirectEncoder, PoissonEncoder, build_encoder


def test_rate_equals_intensity():
    T = 2000
    p = torch.tensor([0.0, 0.1, 0.25, 0.5, 0.9, 1.0]).view(1, 1, 1, 6)
    s = PoissonEncoder().encode(p, T, generator=torch.Generator().manual_seed(0))
    assert s.shape == (T, 1, 1, 1, 6)
    assert set(s.unique().tolist()) <= {0.0, 1.0}
    rate = s.mean(0).view(-1)
    # Binomial standard error at T=2000 is at most 0.0112; allow 4 sigma.
    assert torch.allclose(rate, p.view(-1), atol=0.045)
    assert rate[0] == 0 and rate[-1] == 1


def test_seeded_and_reproducible():
    x = torch.rand(2, 3, 8, 8)
    enc = PoissonEncoder()
    a = enc.encode(x, 5, torch.Generator().manual_seed(3))
    b = enc.encode(x, 5, torch.Generator().manual_seed(3))
    c = enc.encode(x, 5, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # Step-by-step generation gives the same frames as encode().
    frames = list(enc.steps(x, 5, torch.Generator().manual_seed(3)))
    assert torch.equal(torch.stack(frames), a)


def test_signed_coding_of_mean_subtracted_images():
    mean = torch.tensor(CAFFE_MEAN_RGB).view(1, 3, 1, 1)
    x = (mean + torch.tensor([0.3, -0.4, 0.0]).view(1, 3, 1, 1)).expand(1, 3, 4, 4).contiguous()
    s = PoissonEncoder(signed=True).encode(x, 3000, torch.Generator().manual_seed(0))
    assert set(s.unique().tolist()) <= {-1.0, 0.0, 1.0}
    r = s.mean((0, 1, 3, 4))
    assert torch.allclose(r, torch.tensor([0.3, -0.4, 0.0]), atol=0.03)
    assert (s[:, :, 0] >= 0).all() and (s[:, :, 1] <= 0).all() and (s[:, :, 2] == 0).all()


def test_direct_encoding_and_builder():
    x = torch.rand(1, 3, 4, 4)
    assert torch.equal(DirectEncoder().encode(x, 3), x.expand(3, 1, 3, 4, 4))
    assert isinstance(build_encoder("poisson_signed"), PoissonEncoder)
    with pytest.raises(ValueError, match="unknown encoding"):
        build_encoder("latency")
    with pytest.raises(ValueError, match="B, C, H, W"):
        PoissonEncoder().encode(torch.rand(3, 4, 4), 2)
