"""Scale-out on `torch.distributed`, launched by `torchrun` (and SLURM through it).

Each rank tokenizes every prompt, takes a deterministic, token-balanced share, and writes only
its own prompt directories; the filesystem is all the ranks share. After a barrier, rank 0
writes the indexes. The share is computed over all prompts, finished or not, so every rank
agrees on it without talking; a rerun with another world size skips what is already done.
"""

from __future__ import annotations

import heapq
import os
import time
from dataclasses import dataclass

from lens_cache.errors import RankFailedError

_FAILED_KEY = "lens_cache/failed"  # in torchrun's store: "<rank>: <one-line reason>"
_POLL_SECONDS = 0.05


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
        """Wait for every rank, through torchrun's key-value store rather than a collective:
        a rank that failed leaves its reason there (`report_failure`), and the others stop at
        once naming it, instead of waiting on a peer that is gone (a gloo or nccl traceback)."""
        if self.world <= 1:
            return
        store = _store()
        key = f"lens_cache/barrier/{_next_barrier()}"
        store.add(key, 1)
        while int(store.add(key, 0)) < self.world:
            self._raise_if_peer_failed(store)
            time.sleep(_POLL_SECONDS)

    def report_failure(self, error: BaseException) -> None:
        """Leave this rank's one-line reason for the others (see `barrier`)."""
        if self.world <= 1 or isinstance(error, RankFailedError):
            return
        try:
            _store().set(_FAILED_KEY, f"{self.rank}: {type(error).__name__}: {error}")
        except Exception:  # the store itself is gone: torchrun is tearing the job down anyway
            pass

    def _raise_if_peer_failed(self, store) -> None:
        if store.check([_FAILED_KEY]):
            rank, _, reason = store.get(_FAILED_KEY).decode().partition(": ")
            raise RankFailedError(
                f"rank {rank} failed ({reason}); rank {self.rank} stops too. Fix that and "
                "rerun the same command: finished prompts are kept",
                rank=int(rank),
            )

    def close(self) -> None:
        if self.initialized_here:
            import torch.distributed as dist

            dist.destroy_process_group()


def is_reporting_rank() -> bool:
    """Whether this process reports for the job: rank 0 as torchrun sets `RANK`, or a process
    not launched by torchrun. Read from the environment, without joining the process group."""
    return os.environ.get("RANK", "0") == "0"


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
    rank = Rank(dist.get_rank(), dist.get_world_size(), local_rank, created)
    _stop_on_sigterm(rank)
    return rank


def _stop_on_sigterm(rank: Rank) -> None:
    """torchrun stops the other ranks with SIGTERM when one fails: say which one, in one line,
    rather than dying silently (the reason is in the store, left there by `report_failure`)."""
    import signal

    def stop(signum, frame):
        try:
            rank._raise_if_peer_failed(_store())
        except RankFailedError:
            raise
        except Exception:  # no store to ask: still one line
            pass
        raise RankFailedError(f"rank {rank.rank} stopped by torchrun (SIGTERM)")

    signal.signal(signal.SIGTERM, stop)


_barriers = 0


def _next_barrier() -> int:
    """Barriers are numbered in the order every rank meets them (the same on each rank)."""
    global _barriers
    _barriers += 1
    return _barriers


def _store():
    import torch.distributed as dist

    return dist.distributed_c10d._get_default_store()


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
