"""An advisory lock over the steps several processes writing one store cannot share.

Prompt folders need no lock: each process writes its own temp files and renames them into
place, and two processes exporting the same prompt write the same bytes. What cannot be shared
is a step that rewrites files from a scan of the whole store (the indexes, the viewer, pooled
datasets, a model's `model_cfg.json` and `--force` clean-up): two at once would interleave,
and the one that scanned first could overwrite the other's newer result. Those steps take
`store_lock`, so a later process waits for the earlier and then rebuilds from everything on
disk, its own prompts and the other's.

The lock is `flock` on `<store>/.lens_cache.lock`, which holds the holder's host, pid and task
while it is held, so a waiting process can say whom it waits for. The kernel releases a lock
when its holder dies (SIGKILL included), so a crash never leaves the store locked. On NFS,
Linux clients turn `flock` into NFS byte-range locks (they need the lock service: NFSv4, or
NFSv3 with lockd); a filesystem without locks (an NFS mount with `nolock`, Lustre without
`-o flock`, some FUSE mounts) answers ENOLCK or EOPNOTSUPP: then we warn and go on unlocked.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import sys
import threading
import time
from pathlib import Path

from lens_cache.layout import LOCK_NAME
from lens_cache.progress import warn

_UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)
_held: dict[Path, int] = {}  # lock path -> depth: a process re-entering its own lock
_guard = threading.Lock()


@contextlib.contextmanager
def store_lock(save_path: Path, task: str):
    """Hold the store's lock for `task` (a few words, shown to waiting processes).

    Re-entrant within a process. Waits as long as another process holds it, saying once on
    stderr which process that is.
    """
    path = (Path(save_path) / LOCK_NAME).resolve()
    # every entry, nested ones too, so a test can check that one operation takes the lock once
    sys.audit("lens_cache.store_lock", str(path), task)
    with _guard:
        nested = _held.get(path, 0) > 0
        _held[path] = _held.get(path, 0) + 1
    try:
        if nested:
            yield
            return
        with _flock(path, task):
            yield
    finally:
        with _guard:
            _held[path] -= 1


def store_lock_unless(held: bool, save_path: Path, task: str):
    """`store_lock`, or nothing where the caller already holds it for its whole operation
    (an export's closing steps run under one lock rather than re-entering it in each)."""
    return contextlib.nullcontext() if held else store_lock(save_path, task)


@contextlib.contextmanager
def _flock(path: Path, task: str):
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if _acquire(fd, path, task, fcntl):
            _say_who(fd, task)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        else:
            yield
    finally:
        os.close(fd)


def _acquire(fd: int, path: Path, task: str, fcntl) -> bool:
    """Take the lock, waiting if needed; False where the filesystem has no locks."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        pass
    except OSError as e:
        if e.errno not in _UNSUPPORTED:
            raise
        warn(f"{path.parent} cannot be locked ({e.strerror}): {task} runs unlocked")
        return False
    holder = os.pread(fd, 500, 0).decode("utf-8", "replace").strip() or "another process"
    warn(f"waiting for {holder} to finish before {task} ({path})")
    start = time.monotonic()
    fcntl.flock(fd, fcntl.LOCK_EX)
    warn(f"lock acquired after {time.monotonic() - start:.1f} s: {task}")
    return True


def _say_who(fd: int, task: str) -> None:
    text = f"pid {os.getpid()} on {socket.gethostname()} ({task})"
    with contextlib.suppress(OSError):  # only a courtesy to waiters: a full disk may refuse it
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode(), 0)
