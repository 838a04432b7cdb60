"""Run exports one after another, each in a forked child of this process: the kill tests' driver.

Usage: `python kill_chain.py JOBS.json REPORT.json`, JOBS `[{"args": [...], "fault": "write:3"
or null, "save": "<store the job writes>"}]`. The heavy imports (torch, transformers,
TransformerLens) happen once here, before any fork, so a child costs only its model load and
its export. Each child is a real process: `LENS_CACHE_FAULT_AT` makes it SIGKILL itself (or
raise ENOSPC, or SIGINT itself) at a named point, as a crash would.

After each child the report records how it ended, its stderr, what `cache verify` finds other
than incomplete prompt folders (an interrupted export leaves those; nothing else may be
wrong), and which files of prompts finished before the child were touched by it (inode or
mtime_ns changed): a rerun must not recompute a finished prompt.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch

import lens_cache.exporter  # noqa: F401  (imported before the forks: children start warm)
from lens_cache.activations import main
from lens_cache.cache import verify_store
from lens_cache.cli import run_cli


def finished_files(save: Path) -> dict[str, tuple[int, int]]:
    """`{path: (inode, mtime_ns)}` of every file of every finished prompt folder."""
    found = {}
    for record in save.glob("*/prompts/*/prompt.json"):
        for path in record.parent.iterdir():
            st = path.stat()
            found[str(path)] = (st.st_ino, st.st_mtime_ns)
    return found


def run_child(job: dict, err_path: Path) -> str:
    pid = os.fork()
    if pid == 0:  # the child: one export, as `python -m lens_cache.activations` runs it
        # Ctrl-C interrupts, as in a terminal, even when this chain runs in the background
        # (where a non-interactive shell starts commands with SIGINT ignored).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 2)
        os.environ.pop("LENS_CACHE_FAULT_AT", None)
        if job.get("fault"):
            os.environ["LENS_CACHE_FAULT_AT"] = job["fault"]
        code = 1
        try:
            code = run_cli(main, job["args"])
        finally:
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit {os.WEXITSTATUS(status)}"


def run_job(job: dict, err_path: Path) -> dict:
    save = Path(job["save"])
    before = finished_files(save)
    ended = run_child(job, err_path)
    after = finished_files(save)
    touched = sorted(p for p, stat in before.items() if after.get(p) != stat)
    problems = verify_store(save, quiet=True)[0] if (save / "models.jsonl").exists() else []
    return {
        "fault": job.get("fault"),
        "ended": ended,
        "stderr": err_path.read_text(),
        "problems": [f"{p.status} {p.path}" for p in problems if p.status != "incomplete"],
        "touched": touched,
        "finished": len({str(Path(p).parent) for p in after}),
    }


def run(jobs_path: str, report_path: str) -> None:
    torch.set_num_threads(1)  # the same arithmetic in every child: bit-identical patterns
    jobs = json.loads(Path(jobs_path).read_text())
    err_path = Path(report_path).with_suffix(".stderr")
    report = [run_job(job, err_path) for job in jobs]
    Path(report_path).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    run(*sys.argv[1:3])
