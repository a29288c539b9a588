"""Multi-process training with PyTorch DDP, launched by ``torchrun``.

``torchrun --nproc_per_node=N -m spikeseg train --config ...`` (or across nodes with
``--nnodes``/``--rdzv_endpoint``) starts N processes; each one calls :func:`init_distributed`,
which reads the ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` variables that torchrun sets, joins the
process group (NCCL on GPUs, Gloo on CPUs) and picks the process's device. Without those
variables everything runs in one process, unchanged.

In a distributed run ``train.batch_size`` is the batch of *each* process (the global batch is
``batch_size × world_size``); each process sees a disjoint shard of the training set per
epoch, validation is sharded too and its confusion matrices are summed across processes, and
only rank 0 writes files and prints.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from ..errors import SpikesegError

__all__ = ["DistInfo", "init_distributed", "ShardSampler", "all_reduce_sum", "all_reduce_any",
           "barrier"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group if launched by torchrun; returns ``(info, device)``.

    Args:
        device: the device asked for in the config; in a distributed CUDA run each process
            takes ``cuda:LOCAL_RANK`` instead.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), device
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise SpikesegError(
                f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPUs are visible"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world, local), device


class ShardSampler(Sampler[int]):
    """Every ``world_size``-th index starting at ``rank``: a disjoint shard without padding.

    With ``shuffle`` the order is a permutation seeded by ``(seed, epoch)`` (call
    :meth:`set_epoch`), the same in every process, so shards stay disjoint; with
    ``drop_last`` every shard has the same length (needed for DDP training steps).
    """

    def __init__(
        self, n: int, info: DistInfo, *, shuffle: bool, seed: int = 0, drop_last: bool = False
    ) -> None:
        self.n, self.info, self.shuffle, self.seed, self.drop_last = n, info, shuffle, seed, drop_last
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Use the order of ``epoch``, leaving out the first ``skip`` indices of this shard
        (to continue an epoch that was interrupted after ``skip`` samples)."""
        self.epoch = epoch
        self.skip = int(skip)

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1000003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        if self.drop_last:
            order = order[: self.n - self.n % self.info.world_size]
        return order[self.info.rank :: self.info.world_size][self.skip :]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices())

    def __len__(self) -> int:
        return len(self._indices())


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a list of numbers over all processes (identity in a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def barrier() -> None:
    """Wait for every process (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_any(flag: bool, device: torch.device) -> bool:
    """True if ``flag`` is true in any process (``flag`` itself in a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t)
    return bool(t.item() > 0)
