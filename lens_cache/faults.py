"""Deterministic faults for the reliability tests: `LENS_CACHE_FAULT_AT=<stage>:<n>[:<action>]`.

Named points in the code call `fault_point(stage)`; the n-th call (1-based, counted over all
threads of the process) of the named stage does `action`:

    kill     SIGKILL this process (the default): as a crash, an OOM kill or `kill -9`
    int      SIGINT this process: as Ctrl-C
    enospc   raise OSError(ENOSPC) at that point: as a full disk

Stages: `forward` (before a forward pass), `npz` (before each member of an npz is written),
`write` (a store file written to its temp name, not yet renamed), `renamed` (a prompt's data
files in place, its prompt.json not yet written), `index` (an index file about to be written),
`viewer` (a viewer file about to be written), `pooled` (a pooled shard about to be written).
Under torchrun, `LENS_CACHE_FAULT_RANK=<r>` limits the fault to rank r.
Unset, a fault point costs one lookup in `os.environ`.
"""

from __future__ import annotations

import errno
import os
import signal
import threading

_counts: dict[str, int] = {}
_lock = threading.Lock()


def fault_point(stage: str, path=None) -> None:
    """Count a call of `stage`; act if `LENS_CACHE_FAULT_AT` names this call."""
    spec = os.environ.get("LENS_CACHE_FAULT_AT")
    only_rank = os.environ.get("LENS_CACHE_FAULT_RANK")
    if not spec or (only_rank is not None and only_rank != os.environ.get("RANK", "0")):
        return
    target, _, rest = spec.partition(":")
    if target != stage:
        return
    n, _, action = rest.partition(":")
    with _lock:
        _counts[stage] = _counts.get(stage, 0) + 1
        if _counts[stage] != int(n):
            return
    if action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path) if path else None)
    os.kill(os.getpid(), signal.SIGINT if action == "int" else signal.SIGKILL)
