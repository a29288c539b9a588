"""Encoding of static images: Poisson rate coding (section 4.2 of the paper) and direct coding.

At every timestep each pixel of intensity ``p ∈ [0, 1]`` emits a spike with probability ``p``,
so over ``T`` timesteps the spike count of a pixel is Binomial(T, p) and its rate equals its
intensity. Two variants:

* ``unsigned`` (default): images in ``[0, 1]``; spikes are 0/1.
* ``signed`` (the paper's code): the image is mean-subtracted first (pixels in ``[-1, 1]``);
  a pixel ``x`` spikes ``sign(x)`` with probability ``|x|``, so spikes are -1/0/+1.

``direct`` coding (the analog image fed at every timestep; Rathi & Roy 2020, DIET-SNN) is also
available. Encoders run step by step, so a long window never materialises ``[T, ...]``. Their
random numbers come from per-sample keys (:mod:`spikeseg.rng`: the spikes of a sample depend
only on its key, not on its batch, its position or the number of processes; what training,
evaluation, sweeps and reports use), or from a :class:`torch.Generator` / the global RNG.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from .. import rng

__all__ = ["PoissonEncoder", "DirectEncoder", "build_encoder", "ENCODINGS", "CAFFE_MEAN_RGB"]

CAFFE_MEAN_RGB = (122.67892 / 255.0, 116.66877 / 255.0, 104.00699 / 255.0)
"""The Caffe/VOC mean pixel the paper's code subtracts (its BGR 104.00699, 116.66877,
122.67892), as RGB in ``[0, 1]``."""

ENCODINGS = ("poisson", "poisson_signed", "direct")


class PoissonEncoder:
    """Poisson rate coding of images into spikes ``[T, B, C, H, W]``.

    Args:
        signed: use the paper's code's signed coding of mean-subtracted images.
        mean: per-channel mean subtracted before signed coding (default: the Caffe mean,
            for 3-channel input; 0.5 for other channel counts).

    Example:
        >>> enc = PoissonEncoder()
        >>> s = enc.encode(torch.full((1, 1, 4, 4), 0.25), timesteps=1000,
        ...                generator=torch.Generator().manual_seed(0))
        >>> round(s.mean().item(), 1)
        0.2
    """

    def __init__(self, signed: bool = False, mean: Sequence[float] | None = None) -> None:
        self.signed = signed
        self.mean = tuple(mean) if mean is not None else None

    def __repr__(self) -> str:
        return f"PoissonEncoder(signed={self.signed})"

    def prepare(self, images: Tensor) -> Tensor:
        """The firing probabilities (signed for signed coding) of ``images`` ``[B, C, H, W]``."""
        if images.dim() != 4:
            raise ValueError(f"expected images [B, C, H, W], got shape {tuple(images.shape)}")
        if not self.signed:
            return images.clamp(0.0, 1.0)
        c = images.shape[1]
        mean = self.mean or (CAFFE_MEAN_RGB if c == 3 else (0.5,) * c)
        if len(mean) != c:
            raise ValueError(f"mean has {len(mean)} values for {c} channels")
        m = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, c, 1, 1)
        return (images - m).clamp(-1.0, 1.0)

    def step(
        self,
        prob: Tensor,
        generator: torch.Generator | None = None,
        *,
        keys: Tensor | None = None,
        t: int = 0,
    ) -> Tensor:
        """Spikes of timestep ``t`` from :meth:`prepare`'s output ``[B, C, H, W]`` (same dtype).

        Args:
            prob: firing probabilities.
            generator: sequential random generator (default: the global RNG), when no keys.
            keys: per-sample keys ``[B]`` (:func:`spikeseg.rng.sample_keys`): the draws of
                sample ``b`` at step ``t`` depend only on ``(keys[b], t)``.
            t: the timestep (used with ``keys``).
        """
        if keys is not None:
            if keys.shape[0] != prob.shape[0]:
                raise ValueError(f"{keys.shape[0]} keys for a batch of {prob.shape[0]}")
            r = rng.uniform(keys.to(prob.device), t, prob.shape[1:], prob.dtype)
        else:
            r = torch.rand(prob.shape, generator=generator, device=prob.device, dtype=prob.dtype)
        if not self.signed:
            return (r < prob).to(prob.dtype)
        return (r < prob.abs()).to(prob.dtype) * prob.sign()

    def steps(
        self,
        images: Tensor,
        timesteps: int,
        generator: torch.Generator | None = None,
        keys: Tensor | None = None,
    ) -> Iterator[Tensor]:
        """Yield ``timesteps`` spike frames ``[B, C, H, W]`` one at a time."""
        prob = self.prepare(images)
        for t in range(timesteps):
            yield self.step(prob, generator, keys=keys, t=t)

    def encode(
        self,
        images: Tensor,
        timesteps: int,
        generator: torch.Generator | None = None,
        keys: Tensor | None = None,
    ) -> Tensor:
        """Spikes ``[T, B, C, H, W]`` for images ``[B, C, H, W]``."""
        return torch.stack(list(self.steps(images, timesteps, generator, keys)))


class DirectEncoder(PoissonEncoder):
    """Direct (analog) coding: the image itself at every timestep."""

    def __init__(self) -> None:
        super().__init__(signed=False)

    def __repr__(self) -> str:
        return "DirectEncoder()"

    def prepare(self, images: Tensor) -> Tensor:
        """The analog input itself (not clamped: with an input mean it has negative values)."""
        if images.dim() != 4:
            raise ValueError(f"expected images [B, C, H, W], got shape {tuple(images.shape)}")
        return images

    def step(self, prob: Tensor, generator: torch.Generator | None = None, *,
             keys: Tensor | None = None, t: int = 0) -> Tensor:
        return prob


def build_encoder(name: str, mean: Sequence[float] | None = None) -> PoissonEncoder:
    """``"poisson"``, ``"poisson_signed"`` (subtracting ``mean``, default the Caffe mean) or
    ``"direct"``."""
    if name == "poisson":
        return PoissonEncoder()
    if name == "poisson_signed":
        return PoissonEncoder(signed=True, mean=mean)
    if name == "direct":
        return DirectEncoder()
    raise ValueError(f"unknown encoding {name!r}; choose one of {', '.join(ENCODINGS)}")
