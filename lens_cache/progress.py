"""Progress on stderr: prompts/s, tokens/s, ETA. Results go to stdout, elsewhere."""

from __future__ import annotations

import sys
import time


def log(message: str, *, quiet: bool = False) -> None:
    """A status line on stderr (suppressed by `quiet`)."""
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """A warning on stderr; never suppressed, since it says something was left out."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


class Progress:
    """Counts prompts and tokens done out of a total and reports the rate at most every
    `interval` seconds (redrawing one line on a terminal, printing lines otherwise)."""

    def __init__(
        self,
        label: str,
        total_prompts: int,
        total_tokens: int,
        *,
        quiet=False,
        stream=None,
        interval: float | None = None,
    ):
        self.label, self.quiet = label, quiet
        self.total_prompts, self.total_tokens = total_prompts, total_tokens
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval = interval if interval is not None else (0.2 if self.tty else 5.0)
        self.prompts = self.tokens = 0
        self.start = self._last = time.perf_counter()

    def update(self, prompts: int, tokens: int) -> None:
        self.prompts += prompts
        self.tokens += tokens
        now = time.perf_counter()
        if now - self._last >= self.interval:
            self._last = now
            self._draw(final=False)

    def close(self) -> None:
        self._draw(final=True)

    def line(self) -> str:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        tok_rate = self.tokens / elapsed
        left = self.total_tokens - self.tokens
        eta = f"{left / tok_rate:.0f}s" if tok_rate > 0 else "?"
        return (
            f"[{self.label}] {self.prompts}/{self.total_prompts} prompts, "
            f"{self.prompts / elapsed:.1f} prompts/s, {tok_rate:.0f} tokens/s, "
            f"ETA {eta}, elapsed {elapsed:.1f}s"
        )

    def _draw(self, final: bool) -> None:
        if self.quiet:
            return
        end = "\n" if final or not self.tty else ""
        prefix = "\r\x1b[K" if self.tty else ""
        print(prefix + self.line(), end=end, file=self.stream, flush=True)
