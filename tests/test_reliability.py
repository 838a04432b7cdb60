"""A store that survives its users: concurrent writers, a full disk, kill -9 and Ctrl-C anywhere.

Everything runs real processes. Faults land at named points through `LENS_CACHE_FAULT_AT`
(see lens_cache.faults), so each test knows where its process died.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from lens_cache.cache import verify_store
from lens_cache.locking import store_lock
from lens_cache.prompts import prompt_hash
from tests.helpers import REPO, run_cli

TEXTS = [f"prompt {i}: " + "lorem ipsum dolor " * (1 + i % 4) for i in range(8)]


def _prompts(path: Path, texts) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def _export_args(model_dir, prompts, save, *more):
    return ["-m", str(model_dir), "-p", str(prompts), "-s", str(save), "-q", *more]


def _tree(save: Path) -> dict[str, bytes]:
    """Every file of a store by its bytes, but the lock and the viewer's stamps and manifest
    (which record source mtimes)."""
    files = (p for p in sorted(save.rglob("*")) if p.is_file())
    return {
        str(p.relative_to(save)): p.read_bytes()
        for p in files
        if p.name not in (".lens_cache.lock", "stamp.json", "manifest.npz")
    }


def _temp_files(save: Path) -> list[Path]:
    return [p for p in save.rglob("*") if ".tmp" in p.name]


def _listed(save: Path, model: str) -> list[str]:
    return [json.loads(line)["hash"] for line in (save / model / "prompts.jsonl").open()]


# --- concurrent writers ------------------------------------------------------------------------


def test_two_exports_of_one_model_into_one_store_both_finish(gqa_dir, tmp_path, cli_env):
    """Same prompts in the same order, one prompt per batch: the two processes write the same
    prompt folders at the same moments, which is where one used to delete the other's temp
    file (FileNotFoundError on its rename) before this was fixed."""
    save = tmp_path / "out"
    first = _prompts(tmp_path / "a.jsonl", TEXTS[:6])
    second = _prompts(tmp_path / "b.jsonl", TEXTS[2:])
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lens_cache.activations",
                *_export_args(gqa_dir, p, save, "-b", "1"),
            ],
            env=cli_env,
            cwd=REPO,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        for p in (first, second)
    ]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    union = sorted(prompt_hash(t) for t in TEXTS)
    assert _listed(save, gqa_dir.name) == union  # each exactly once
    index = (save / "viewer_data" / "lens_index.js").read_text()
    assert all(h in index for h in union)
    assert verify_store(save, quiet=True)[0] == []
    assert _temp_files(save) == []


def test_a_live_processs_temp_file_is_left_alone_a_dead_ones_removed(gqa_dir, tmp_path, cli_env):
    from lens_cache.store import tmp_name

    save = tmp_path / "out"
    prompts = _prompts(tmp_path / "p.jsonl", TEXTS[:1])
    folder = save / gqa_dir.name / "prompts" / prompt_hash(TEXTS[0])
    folder.mkdir(parents=True)
    live = tmp_name(folder / "activations.npz")  # this test process: alive
    dead = Path(str(live).replace(f"-{os.getpid()}-", "-999999999-"))
    live.write_bytes(b"being written"), dead.write_bytes(b"left by a crash")
    result = run_cli(_export_args(gqa_dir, prompts, save, "--no-index-html"), cli_env)
    assert result.returncode == 0, result.stderr
    assert live.read_bytes() == b"being written" and not dead.exists()


def test_a_waiting_process_names_who_holds_the_store_lock(gqa_dir, tmp_path, cli_env):
    save = tmp_path / "out"
    prompts = _prompts(tmp_path / "p.jsonl", TEXTS[:1])
    save.mkdir()
    release = threading.Event()
    held = threading.Event()

    def hold():
        with store_lock(save, "a test holding the lock"):
            held.set()
            release.wait(600)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    proc = subprocess.Popen(
        [sys.executable, "-m", "lens_cache.activations", *_export_args(gqa_dir, prompts, save)],
        env=cli_env,
        cwd=REPO,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    first_line = proc.stderr.readline()
    release.set()
    holder.join()
    rest = proc.communicate(timeout=600)[1]
    assert proc.returncode == 0, rest
    assert f"waiting for pid {os.getpid()} on " in first_line
    assert "(a test holding the lock)" in first_line


# --- faults at named points: kill -9, Ctrl-C, a full disk ---------------------------------------

# Each job reruns the export the previous one interrupted, and is interrupted itself: 22 kills
# spread over forward passes, npz members, file writes (before their rename), the moment
# between a prompt's data files and its prompt.json, index writes, the viewer and pooling; and
# Ctrl-C and a full disk at some of the same points. With one prompt per batch and no writer
# threads each moment is deterministic. (8 prompts; the comments count those left to do.)
FAULTS = [
    "forward:1", "npz:2", "write:2", "renamed:1",  # 8 left
    "forward:2", "npz:5", "write:5", "renamed:2", "write:7",  # 3 left
    "forward:2:int", "renamed:1:int", "write:3:enospc", "npz:1", "write:3",  # 2 left
    "forward:2", "renamed:1", "write:4", "write:5",  # the last prompt done, then models.jsonl
    # Each prompt's viewer data were made as it was exported; until a build ends, its page
    # (index.html, the scripts and the stylesheet) is still to be written, so each of these lands.
    "index:1", "index:2", "viewer:2:enospc", "viewer:1", "viewer:4", "viewer:5",
    "pooled:1:enospc", "pooled:1", "pooled:1",
    None,
]  # fmt: skip
STOPS = {  # a fault that is not a SIGKILL: how the process must end, and what it must say
    "forward:2:int": ("exit 130", "interrupted; rerun the same command to resume"),
    "renamed:1:int": ("exit 130", "interrupted; rerun the same command to resume"),
    "write:3:enospc": ("exit 3", "No space left on device; free space on that disk"),
    "viewer:2:enospc": ("exit 3", "No space left on device; free space on that disk"),
    "pooled:1:enospc": ("exit 3", "No space left on device; free space on that disk"),
}


def _run_chain(tmp_path, jobs, env) -> list[dict]:
    jobs_path, report = tmp_path / "jobs.json", tmp_path / "report.json"
    jobs_path.write_text(json.dumps(jobs))
    subprocess.run(
        [sys.executable, str(REPO / "tests" / "kill_chain.py"), str(jobs_path), str(report)],
        env=env,
        cwd=REPO,
        check=True,
        timeout=900,
    )
    return json.loads(report.read_text())


def test_interrupted_anywhere_a_rerun_gives_the_uninterrupted_store(gqa_dir, tmp_path, cli_env):
    prompts = _prompts(tmp_path / "p.jsonl", TEXTS)
    more = ["-b", "1", "--writers", "0", "--pool", "mean"]
    reference, save = tmp_path / "reference", tmp_path / "out"
    jobs = [{"args": _export_args(gqa_dir, prompts, reference, *more), "save": str(reference)}]
    for fault in FAULTS:
        jobs.append(
            {"args": _export_args(gqa_dir, prompts, save, *more), "save": str(save), "fault": fault}
        )
    report = _run_chain(tmp_path, jobs, cli_env)
    assert report[0]["ended"] == "exit 0", report[0]["stderr"]
    for job in report[1:]:
        fault = job["fault"]
        expected, says = STOPS.get(fault, ("signal 9", "") if fault else ("exit 0", ""))
        assert job["ended"] == expected, (fault, job["stderr"])
        assert says in job["stderr"], (fault, job["stderr"])
        if says:  # one line, no traceback
            assert job["stderr"].count("\n") == 1 and "Traceback" not in job["stderr"], job
        assert job["problems"] == [], fault  # only incomplete prompt folders, never corrupt
        assert job["touched"] == [], fault  # a finished prompt is never written again
    assert [j["finished"] for j in report[-1:]] == [len(TEXTS)]
    assert verify_store(save, quiet=True)[0] == []
    assert _temp_files(save) == []
    assert _tree(save) == _tree(reference)  # patterns, residuals, indexes, pooled: bit for bit
    index = (save / "viewer_data" / "lens_index.js").read_text()
    assert all(prompt_hash(t) in index for t in TEXTS)


# --- a real full disk --------------------------------------------------------------------------


def _can_mount_tmpfs(tmp_path) -> str | None:
    """None where this process may mount a tmpfs in its own mount namespace, else why not."""
    if shutil.which("unshare") is None:
        return "no unshare(1) here"
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {tmp_path}"],
        capture_output=True,
        text=True,
    )
    return None if probe.returncode == 0 else f"cannot mount a tmpfs: {probe.stderr.strip()}"


def test_a_real_full_disk_then_more_space(gqa_dir, tmp_path, cli_env):
    """A 200 kB tmpfs fills mid-export; after a remount with room the same command finishes."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    reason = _can_mount_tmpfs(mnt)
    if reason:
        pytest.skip(reason)
    prompts = _prompts(tmp_path / "p.jsonl", TEXTS)
    cmd = " ".join(
        [
            sys.executable,
            "-m",
            "lens_cache.activations",
            *_export_args(gqa_dir, prompts, mnt / "store", "--no-index-html"),
        ]
    )
    script = f"""
        mount -t tmpfs -o size=200k tmpfs {mnt}
        {cmd} >/dev/null 2> {tmp_path}/err1; echo "first $?"
        echo "done $(ls {mnt}/store/*/prompts/*/prompt.json | wc -l)"
        echo "temps $(find {mnt} -name '*.tmp*' | wc -l)"
        mount -o remount,size=20m {mnt}
        {cmd} >/dev/null 2> {tmp_path}/err2; echo "second $?"
        echo "done $(ls {mnt}/store/*/prompts/*/prompt.json | wc -l)"
        {sys.executable} -m lens_cache.cache verify -s {mnt}/store -q; echo "verify $?"
    """
    out = subprocess.run(
        ["unshare", "-m", "sh", "-c", script],
        env=cli_env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    ).stdout.split("\n")
    err1 = (tmp_path / "err1").read_text()
    assert out[0] == "first 3", (out, err1)
    assert err1.startswith("error: cannot write ") and "No space left on device" in err1
    assert err1.count("\n") == 1, err1
    assert 0 < int(out[1].split()[1]) < len(TEXTS), out  # some finished, kept
    assert out[2] == "temps 0", out
    assert out[3:6] == ["second 0", f"done {len(TEXTS)}", "verify 0"], (
        out,
        (tmp_path / "err2").read_text(),
    )


# --- damaged files -----------------------------------------------------------------------------


def test_damaged_files_are_named_skipped_listed_and_repaired(gqa_dir, tmp_path, cli_env):
    from lens_cache.errors import DamagedFileError
    from lens_cache.reader import open_store

    save, model = tmp_path / "out", gqa_dir.name
    texts = TEXTS[:3]
    assert (
        run_cli(
            _export_args(gqa_dir, _prompts(tmp_path / "p.jsonl", texts), save), cli_env
        ).returncode
        == 0
    )
    a, b, c = (save / model / "prompts" / prompt_hash(t) for t in texts)
    npz, resid, record = a / "activations.npz", b / "residuals.safetensors", c / "prompt.json"
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])  # truncated
    resid.write_bytes(b"\xff" * 8 + resid.read_bytes()[8:])  # garbled header length
    record.write_text('{"text": "cut sho')
    index = save / model / "prompts.jsonl"
    intact = index.read_bytes()
    index.write_bytes(intact + b'{"hash": \n')

    store = open_store(save)
    for path, read in [
        (npz, lambda: store.patterns(model, a.name)),
        (resid, lambda: store.residuals(model, b.name)),
        (record, lambda: store.prompt(model, c.name)),
    ]:
        with pytest.raises(DamagedFileError) as caught:
            read()
        assert str(path) in str(caught.value) and "cache verify" in str(caught.value)
        assert caught.value.path == path
    # the index is made from the prompt folders: a damaged one gives way to them
    assert sorted(r["hash"] for r in store.prompts(model)) == sorted([a.name, b.name])
    index.write_bytes(intact)

    verify = run_cli(["verify", "-s", str(save), "-q"], cli_env, module="lens_cache.cache")
    assert verify.returncode == 1
    listed = {line.split("\t")[1] for line in verify.stdout.splitlines()}
    assert {str(npz), str(resid), str(record)} <= listed

    rerun = run_cli(_export_args(gqa_dir, tmp_path / "p.jsonl", save)[:-1], cli_env)
    assert rerun.returncode == 0, rerun.stderr
    for path in (npz, resid):
        warning = next(line for line in rerun.stderr.splitlines() if str(path) in line)
        assert "skipped" in warning and "cache verify" in warning
    viewer_index = (save / "viewer_data" / "lens_index.js").read_text()
    assert c.name in viewer_index  # its prompt.json was damaged: redone by the plain rerun
    assert a.name not in viewer_index and b.name not in viewer_index

    damaged = _prompts(tmp_path / "damaged.jsonl", texts[:2])
    repair = run_cli(_export_args(gqa_dir, damaged, save, "--force"), cli_env)
    assert repair.returncode == 0, repair.stderr
    verify = run_cli(["verify", "-s", str(save), "-q"], cli_env, module="lens_cache.cache")
    assert verify.returncode == 0, verify.stdout
    assert all(h.name in (save / "viewer_data" / "lens_index.js").read_text() for h in (a, b, c))
