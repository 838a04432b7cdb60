"""Write prompt directories behind the forward pass.

The main thread runs the model; writer threads compress and write what it produced. zlib and
numpy's file writes release the GIL, so both proceed at once. The bytes waiting to be written
are capped: when the cap is reached, the producer waits, so memory stays bounded however fast
the model is. With `workers=0` everything is written in the caller's thread (the sequential
path); both paths call the same write function, so their output is byte-for-byte the same.
"""

from __future__ import annotations

import queue
import threading


class WriterPool:
    """Run `write(job)` for each submitted job on `workers` threads, with at most
    `max_bytes` of jobs waiting (a single larger job is still accepted, alone)."""

    def __init__(self, write, *, workers: int = 2, max_bytes: int = 1 << 30):
        self._write, self._workers, self._max_bytes = write, workers, max_bytes
        self._pending = 0
        self._cond = threading.Condition()
        self._error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue()
        self._threads = [
            threading.Thread(target=self._loop, name=f"lens-writer-{i}", daemon=True)
            for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    def submit(self, job, nbytes: int) -> None:
        """Queue one job; blocks while the bytes in flight would exceed the cap."""
        self._raise_if_failed()
        if not self._workers:
            self._write(job)
            return
        with self._cond:
            self._cond.wait_for(
                lambda: (
                    self._pending == 0
                    or self._pending + nbytes <= self._max_bytes
                    or self._error is not None
                )
            )
            self._pending += nbytes
        self._raise_if_failed()
        self._queue.put((job, nbytes))

    def close(self) -> None:
        """Wait for every queued job; re-raise the first writer error."""
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join()
        self._raise_if_failed()

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            job, nbytes = item
            try:
                if self._error is None:
                    self._write(job)
            except BaseException as e:  # handed to the main thread, which re-raises it
                with self._cond:
                    self._error = self._error or e
            finally:
                with self._cond:
                    self._pending -= nbytes
                    self._cond.notify_all()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error
