"""`make bench`'s whole-process rows: what a user waits for, imports and model load included.

- `pattern-lens`: the real pattern-lens 0.6.0's process (the reference row's own run, timed
  from outside by `lens_cache.bench.run_child`), and those of a pattern-lens source tree's rows
  (`pattern-lens <version> batch <n>`) when `make bench` is given one;
- `lens_cache`: `python -m lens_cache.activations --hooks pattern --no-index-html`, lossless;
- `lens_cache+viewer`: the same building the viewer, as `make demo` does;
- start-up: `--help` (the best of three), and launch to the first batch: the moment the
  exporter says how many prompts it will export, which comes after imports, the model load
  and tokenizing, right before the first forward pass.
The same prompts file and weights as the in-process table.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

FIRST_BATCH_LINE = " to export, "  # the exporter's line before its first forward pass
LENS_CACHE = "from lens_cache.cli.main import console_script; raise SystemExit(console_script())"


def process_rows(args, model: str, spec: str, prompts: Path, pattern_lens: dict | None, peers=()):
    """The whole-process rows of one model (seconds, and the ratio to pattern-lens's process);
    `peers`: the rows of another pattern-lens (`bench.PEERS`), named by version and batch."""
    rows = []
    if pattern_lens:
        rows.append(_row(model, "pattern-lens", pattern_lens["process_s"]))
    for peer in peers:
        what = f"pattern-lens {peer['version']} batch {peer['batch_size']}"
        rows.append({**_row(model, what, peer["process_s"]), "peer": True})
    with tempfile.TemporaryDirectory(prefix="lens-process-") as tmp:
        base = [sys.executable, "-m", "lens_cache.activations", "-m", spec, "-p", str(prompts)]
        base += ["-r", "--hooks", "pattern", "-b", str(args.batch_size), "--device", args.device]
        for label, extra in (("lens_cache", ["--no-index-html"]), ("lens_cache+viewer", [])):
            seconds, first = timed_run([*base, *extra, "-s", str(Path(tmp) / label)])
            rows.append(_row(model, label, seconds))
        rows.append(_row(model, "launch to first batch", first))
    export_help = best_of(3, [sys.executable, "-m", "lens_cache.activations"])
    rows.append(_row(model, "--help", export_help))
    rows.append(_row(model, "lens-cache --help", best_of(3, [sys.executable, "-c", LENS_CACHE])))
    if pattern_lens:
        pl_help = [args.pattern_lens_python, "-m", "pattern_lens.activations"]
        rows.append(_row(model, "pattern-lens --help", best_of(3, pl_help)))
    return add_process_ratios(rows)


def _row(model: str, what: str, seconds: float | None) -> dict:
    return {"model": model, "what": what, "seconds": seconds}


def timed_run(cmd: list[str]) -> tuple[float, float | None]:
    """Run `cmd` to its end: (seconds, seconds until its stderr said the first batch starts)."""
    start = time.perf_counter()
    first: list[float] = []
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    tail: list[str] = []

    def watch() -> None:
        for line in proc.stderr:
            if FIRST_BATCH_LINE in line and not first:
                first.append(time.perf_counter() - start)
            tail[:] = (tail + [line])[-20:]

    reader = threading.Thread(target=watch, daemon=True)
    reader.start()
    code = proc.wait()
    seconds = time.perf_counter() - start
    reader.join()
    if code != 0:
        sys.stderr.write("".join(tail))
        raise SystemExit(f"bench: {' '.join(cmd[:4])} ... failed")
    return seconds, first[0] if first else None


def best_of(n: int, cmd: list[str]) -> float:
    """The fastest of `n` runs of `cmd --help` (start-up varies with what else runs)."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        subprocess.run([*cmd, "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return min(times)


def add_process_ratios(rows: list[dict]) -> list[dict]:
    """`vs_pattern_lens`: pattern-lens's time over this row's, for the exports (against its
    process) and the `--help` rows (against its `--help`); none for launch to first batch."""
    by = {r["what"]: r["seconds"] for r in rows}
    for r in rows:
        if r["what"].endswith("--help"):
            ref = by.get("pattern-lens --help")
        else:
            ref = by.get("pattern-lens") if r["what"] in EXPORT_ROWS or r.get("peer") else None
        r["vs_pattern_lens"] = ref / r["seconds"] if ref and r["seconds"] else None
    return rows


EXPORT_ROWS = ("pattern-lens", "lens_cache", "lens_cache+viewer")


def process_table(rows: list[dict]) -> str:
    head = f"{'model':<18}{'whole process':<28}{'s':>8}{'vs pattern-lens':>17}"
    lines = [head, "-" * len(head)]
    for r in rows:
        seconds = f"{r['seconds']:.2f}" if r["seconds"] is not None else "-"
        ratio = f"{r['vs_pattern_lens']:.2f}x" if r["vs_pattern_lens"] else "-"
        lines.append(f"{Path(r['model']).name:<18}{r['what']:<28}{seconds:>8}{ratio:>17}")
    lines.append("whole process: launch to exit, imports and model load included")
    return "\n".join(lines)
