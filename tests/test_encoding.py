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


# -- per-sample keys (spikeseg.rng) --------------------------------------------------------

from spikeseg import rng  # noqa: E402


def test_keyed_spikes_depend_only_on_the_sample():
    """The spikes of a sample are the same whatever batch it is in and at what position."""
    enc = PoissonEncoder()
    images = torch.rand(6, 3, 8, 8)
    keys = rng.sample_keys(seed=3, purpose="poisson", indices=[10, 11, 12, 13, 14, 15])
    whole = enc.encode(images, 5, keys=keys)
    halves = torch.cat([enc.encode(images[i::2], 5, keys=keys[i::2]) for i in (0, 1)], dim=1)
    order = [0, 2, 4, 1, 3, 5]
    assert torch.equal(whole[:, order], halves)
    # Another seed, epoch or index gives other spikes; the same key gives the same ones.
    other = rng.sample_keys(seed=4, purpose="poisson", indices=[10, 11, 12, 13, 14, 15])
    assert not torch.equal(enc.encode(images, 5, keys=other), whole)
    assert not torch.equal(rng.sample_keys(3, "poisson", [10], epoch=1),
                           rng.sample_keys(3, "poisson", [10], epoch=0))
    assert torch.equal(enc.encode(images, 5, keys=keys), whole)


def test_keyed_uniforms_are_uniform_and_rates_equal_intensities():
    u = rng.uniform(rng.sample_keys(0, "poisson", range(4)), 0, (50_000,))
    assert u.min() >= 0 and u.max() < 1
    hist = torch.histc(u, bins=10, min=0, max=1) / u.numel()
    assert torch.allclose(hist, torch.full((10,), 0.1), atol=0.01)
    # Independent across steps and elements: correlation of consecutive draws is ~0.
    v = rng.uniform(rng.sample_keys(0, "poisson", range(4)), 1, (50_000,))
    assert abs(torch.corrcoef(torch.stack([u.flatten(), v.flatten()]))[0, 1]) < 0.01
    assert abs(torch.corrcoef(torch.stack([u[:, :-1].flatten(), u[:, 1:].flatten()]))[0, 1]) < 0.01
    p = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0]).view(1, 5, 1, 1).expand(1, 5, 40, 40)
    s = PoissonEncoder().encode(p, 200, keys=rng.sample_keys(1, "poisson", [0]))
    assert torch.allclose(s.mean(dim=(0, 1, 3, 4)), p[0, :, 0, 0], atol=0.01)
    z = rng.normal(rng.sample_keys(0, "noise", range(2)), 0, (50_000,))
    assert abs(float(z.mean())) < 0.02 and abs(float(z.std()) - 1) < 0.02
