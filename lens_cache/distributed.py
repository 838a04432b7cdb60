"""Scale-out on `torch.distributed`, launched by `torchrun` (and SLURM through it).

Each rank tokenizes every prompt, takes a deterministic, token-balanced share, and writes only
its own prompt directories; the filesystem is all the ranks share. After a barrier, rank 0
writes the indexes. The share is computed over all prompts, finished or not, so every rank
agrees on it without talking; a rerun with another world size skips what is already done.
"""

from __future__ import annotations

import heapq
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Rank:
    """This process's place in the job (rank 0 of 1 when not launched by torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.initialized_here:
            import torch.distributed as dist

            dist.destroy_process_group()


def join(device: str | None) -> Rank:
    """Join the process group torchrun set up (gloo on CPU, nccl on CUDA), if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Rank()
    import torch
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    created = not dist.is_initialized()
    if created:
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(local_rank)
    return Rank(dist.get_rank(), dist.get_world_size(), local_rank, created)


def device_for(rank: Rank, device: str | None) -> str | None:
    """One device per rank: `cuda` becomes `cuda:<local rank>`."""
    if rank.world > 1 and device in (None, "cuda"):
        import torch

        if torch.cuda.is_available():
            return f"cuda:{rank.local_rank}"
    return device


def share(lengths: list[int], rank: Rank) -> list[int]:
    """The indices this rank exports: longest first, each to the rank with the fewest tokens
    so far (ties to the lower rank), so shares balance by token count, deterministically."""
    if rank.world == 1:
        return list(range(len(lengths)))
    loads = [(0, r) for r in range(rank.world)]
    mine = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        load, r = heapq.heappop(loads)
        if r == rank.rank:
            mine.append(i)
        heapq.heappush(loads, (load + lengths[i], r))
    return sorted(mine)
