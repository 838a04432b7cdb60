"""Durable writes shown, not assumed: a real export runs under strace, and the system calls it
made are checked against the rule SQLite follows. Each file renamed into the store was
flushed (fsync or fdatasync) after it was written and before the rename, a folder renamed into
it had every file in it flushed, and the folder holding the new name was flushed after the
rename; a folder made in the store is followed by a flush of its parent. `--no-fsync` and
`LENS_CACHE_NO_FSYNC=1` flush nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.syscalls import Call, missing_strace, parse_log

TRACED = "fsync,fdatasync,rename,renameat,renameat2,openat,mkdir,mkdirat"
TEXTS = ["The cat sat on the mat.", "A second, longer prompt about durable writes.", "Third."]


# --- the rule ------------------------------------------------------------------------------------


def is_temp(path: str, store: str) -> bool:
    """Inside a temp name of ours (`.name.tmp-host-pid-thread`): not yet published."""
    parts = Path(path).relative_to(store).parts
    return any(p.startswith(".") and ".tmp-" in p for p in parts)


def inside(path: str, store: str) -> bool:
    return path != store and path.startswith(store + os.sep)


def renames(calls: list[Call]):
    """`(index, source, target)` of every successful rename, whatever call made it."""
    for i, call in enumerate(calls):
        if call.name.startswith("rename") and call.ok():
            src, dst = call.strings()[:2]
            yield i, src, dst


class Checker:
    """Walks the calls once, remembering which files were written and flushed since."""

    def __init__(self, calls: list[Call], store: str):
        self.calls, self.store = calls, store
        self.written: dict[str, int] = {}  # path -> index of its last open for writing
        self.flushed: dict[str, int] = {}  # path -> index of its last fsync/fdatasync
        self.problems: list[str] = []
        self.published: list[str] = []  # targets of checked renames

    def run(self) -> None:
        for i, call in enumerate(self.calls):
            if not call.ok():
                continue
            if call.name in ("fsync", "fdatasync"):
                self.flushed[call.fd_path()] = i
            elif call.name == "openat" and "O_CREAT" in call.args:
                self.written[call.strings()[0]] = i
            elif call.name.startswith("mkdir"):
                self._made_dir(i, call.strings()[0])
            elif call.name.startswith("rename") and inside(call.strings()[1], self.store):
                self._renamed(i, *call.strings()[:2])

    def _made_dir(self, i: int, path: str) -> None:
        if inside(path, self.store) and not is_temp(path, self.store):
            self._parent_flushed_after(i, path, "made")

    def _renamed(self, i: int, src: str, dst: str) -> None:
        if is_temp(dst, self.store):  # moved aside, or renamed inside an unpublished folder
            self._move(src, dst)  # (pooled shards get their final names there)
            return
        self.published.append(dst)
        # the file, or the folder and every file written under it (all flushed since written)
        for path in {src, *(p for p in self.written if p.startswith(src + os.sep))}:
            if not self.flushed.get(path, -1) > self.written.get(path, -1):
                self.problems.append(f"{path} was renamed into place as {dst} unflushed")
        self._parent_flushed_after(i, dst, "renamed into place")

    def _move(self, src: str, dst: str) -> None:
        for record in (self.written, self.flushed):
            for path in [p for p in record if p == src or p.startswith(src + os.sep)]:
                record[dst + path[len(src) :]] = record.pop(path)

    def _parent_flushed_after(self, i: int, path: str, what: str) -> None:
        parent = os.path.dirname(path)
        later = (c for c in self.calls[i + 1 :] if c.name == "fsync" and c.ok())
        if not any(c.fd_path() == parent for c in later):
            self.problems.append(f"{path} was {what} but {parent} was never flushed after")


# --- running an export under strace --------------------------------------------------------------


def traced_run(tmp_path: Path, name: str, args: list[str], env: dict) -> tuple[list[Call], str]:
    """Run `python ARGS` under strace: its calls, in order, and its stdout."""
    if shutil.which("strace") is None:
        missing_strace("strace is not on PATH")
    log = tmp_path / f"{name}.strace"
    # --seccomp-bpf stops the process only at the traced calls (system time 13 s -> 3.5 s here)
    cmd = ["strace", "-f", "--seccomp-bpf", "-y", "-s", "4096", "-o", str(log)]
    cmd += ["-e", f"trace={TRACED}", sys.executable, *args]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0 and "ptrace" in result.stderr:
        missing_strace(f"strace cannot trace here: {result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == 0, result.stderr[-3000:]
    return parse_log(log.read_text(encoding="latin-1")), result.stdout


def _export(tmp_path: Path, model_dir: Path, env: dict, name: str, *more: str):
    store = tmp_path.resolve() / "store"
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    args = ["-m", "lens_cache.activations", "-m", str(model_dir), "-p", str(prompts)]
    args += ["-s", str(store), "-q", "--pool", "mean", *more]
    calls, _ = traced_run(tmp_path, name, args, env)
    return calls, str(store)


def test_every_write_into_the_store_is_flushed_before_and_after_its_rename(
    gqa_dir, tmp_path, cli_env
):
    calls, store = _export(tmp_path, gqa_dir, cli_env, "export")
    checker = Checker(calls, store)
    checker.run()
    assert checker.problems == []
    names = {Path(p).name for p in checker.published}
    # the rule was applied to every kind of write, not to an empty list
    for expected in ("prompt.json", "activations.npz", "residuals.safetensors", "prompts.jsonl"):
        assert expected in names
    assert {"models.jsonl", "stamp.json", "index.html", "resid_post-mean"} <= names


def test_no_fsync_and_its_environment_variable_flush_nothing(gqa_dir, tmp_path, cli_env):
    calls, store = _export(tmp_path, gqa_dir, cli_env, "export", "--no-fsync")
    env = {**cli_env, "LENS_CACHE_NO_FSYNC": "1"}
    args = ["-m", "lens_cache.pooled", "-s", store, "--pool", "last_token", "-q"]
    pooled, _ = traced_run(tmp_path, "pool", args, env)
    for run in (calls, pooled):
        assert any(inside(dst, store) for _, _, dst in renames(run))  # it did write the store
        assert [c for c in run if c.name in ("fsync", "fdatasync")] == []
