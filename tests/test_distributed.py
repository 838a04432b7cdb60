"""Two CPU processes under torchrun (gloo on 127.0.0.1) against a single-process export."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

from lens_cache.distributed import Rank, share
from lens_cache.prompts import prompt_hash
from tests.helpers import REPO, brute_force_top, run_cli

TEXTS = [f"item {i}: " + "the quick brown fox jumps " * (1 + (i * 7) % 11) for i in range(24)]
MANY = [f"entry {i}: " + "a slow red fox walks " * (1 + (i * 5) % 13) for i in range(240)]


def test_share_is_deterministic_balanced_and_complete():
    lengths = [(i * 37) % 101 + 1 for i in range(50)]
    shares = [share(lengths, Rank(r, 3)) for r in range(3)]
    assert sorted(i for s in shares for i in s) == list(range(50))
    loads = [sum(lengths[i] for i in s) for s in shares]
    assert max(loads) - min(loads) <= max(lengths)
    assert shares == [share(lengths, Rank(r, 3)) for r in range(3)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(nproc: int, args: list[str], env: dict) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        # port 0: torchrun binds a free port itself (a port picked here could be taken by the
        # time it binds: the race this replaced)
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=127.0.0.1:0",
        "-m",
        "lens_cache.activations",
        *args,
    ]


def _run_torchrun(nproc: int, args: list[str], env: dict):
    return subprocess.run(
        _torchrun(nproc, args, env), env=env, capture_output=True, text=True, timeout=300, cwd=REPO
    )


@pytest.fixture
def dist_env(cli_env):
    cli_env.update(GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")  # loopback only
    return cli_env


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _args(gqa_dir, prompts, save, hooks=("pattern", "resid_post", "logits")):
    return [
        "-m",
        str(gqa_dir),
        "-p",
        str(prompts),
        "-s",
        str(save),
        "-b",
        "1",
        "-q",
        "--hooks",
        *hooks,
    ]


def _prompts_file(tmp_path, texts=TEXTS):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def _assert_same_export(a, b, model, texts=TEXTS):
    assert _files(a) == _files(b)
    for t in texts:
        da, db = (root / model / "prompts" / prompt_hash(t) for root in (a, b))
        with np.load(da / "activations.npz") as za, np.load(db / "activations.npz") as zb:
            assert za.files == zb.files
            for k in za.files:
                np.testing.assert_array_equal(za[k], zb[k])
        ra, rb = load_file(da / "residuals.safetensors"), load_file(db / "residuals.safetensors")
        assert ra.keys() == rb.keys()
        for k in ra:
            np.testing.assert_array_equal(ra[k], rb[k])
        pa, pb = (load_file(d / "predictions.safetensors") for d in (da, db))
        assert pa.keys() == pb.keys() and "mean_loss" in json.loads(
            (da / "prompt.json").read_text()
        ).get("lens_cache", {})
        for k in pa:
            np.testing.assert_array_equal(pa[k], pb[k])
    for name in ("models.jsonl", f"{model}/prompts.jsonl"):
        assert (a / name).read_text() == (b / name).read_text()


def test_two_processes_equal_one(gqa_dir, tmp_path, dist_env):
    prompts = _prompts_file(tmp_path)
    single, double = tmp_path / "single", tmp_path / "double"
    assert run_cli(_args(gqa_dir, prompts, single), dist_env).returncode == 0
    result = _run_torchrun(2, _args(gqa_dir, prompts, double), dist_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines() == [str(double / gqa_dir.name), str(double / "index.html")]
    _assert_same_export(single, double, gqa_dir.name)


def test_two_processes_keep_each_prompts_top_examples(gqa_dir, tmp_path, dist_env):
    """Each rank writes its own prompts' head contributions and top-example candidates: the
    files equal a single process's, byte for byte, and the merged top examples equal a
    brute-force scan of the store the ranks wrote."""
    import lens_cache
    from lens_cache.layout import HEADS_NAME

    prompts = _prompts_file(tmp_path, TEXTS[:8])
    single, double = tmp_path / "single", tmp_path / "double"
    hooks = ("pattern", "head_contributions")
    assert run_cli(_args(gqa_dir, prompts, single, hooks), dist_env).returncode == 0
    result = _run_torchrun(2, _args(gqa_dir, prompts, double, hooks), dist_env)
    assert result.returncode == 0, result.stderr[-3000:]
    model = gqa_dir.name
    for t in TEXTS[:8]:
        a, b = (root / model / "prompts" / prompt_hash(t) / HEADS_NAME for root in (single, double))
        assert a.read_bytes() == b.read_bytes()
    store = lens_cache.open(double)
    for layer in range(3):
        for head in range(4):
            for by in ("attention", "value_weighted", "dla"):
                got = store.top_examples(model, layer, head, by=by)
                want = brute_force_top(store, model, layer, head, by, 32)
                assert [(g["hash"], g["query"], g["key"], -g["value"]) for g in got] == [
                    (h, q, k, v) for v, h, q, k in want
                ]


def test_rank_killed_then_rerun_with_another_world_size(gqa_dir, tmp_path, dist_env):
    prompts = _prompts_file(tmp_path, MANY)  # enough work for the kill to land mid-run
    save = tmp_path / "out"
    proc = subprocess.Popen(
        _torchrun(2, _args(gqa_dir, prompts, save), dist_env),
        env=dist_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
    )
    done = save / gqa_dir.name / "prompts"
    deadline = time.monotonic() + 180
    workers: list[str] = []
    while len(workers) < 2:  # find the ranks first, so the kill follows the check at once
        assert proc.poll() is None and time.monotonic() < deadline, "torchrun did not start"
        found = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
        workers = found.stdout.split()
    while len(list(done.glob("*/prompt.json"))) < 4:
        assert proc.poll() is None and time.monotonic() < deadline, "run ended before the kill"
        time.sleep(0.005)
    os.kill(int(workers[-1]), signal.SIGKILL)  # one rank dies
    proc.wait(timeout=120)  # torchrun tears the job down
    assert len(list(done.glob("*/prompt.json"))) < len(MANY), "the kill must land mid-run"
    rerun = run_cli(_args(gqa_dir, prompts, save), dist_env)  # world size 1 finishes it
    assert rerun.returncode == 0, rerun.stderr
    fresh = tmp_path / "fresh"
    assert run_cli(_args(gqa_dir, prompts, fresh), dist_env).returncode == 0
    _assert_same_export(save, fresh, gqa_dir.name, MANY)


def test_two_nodes_with_static_rendezvous_equal_one(gqa_dir, tmp_path, dist_env):
    """Two torchrun launches, one per "node", meeting on 127.0.0.1 as a 2-node job would."""
    prompts = _prompts_file(tmp_path)
    single, nodes = tmp_path / "single", tmp_path / "nodes"
    assert run_cli(_args(gqa_dir, prompts, single), dist_env).returncode == 0
    port = _free_port()
    launches = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                f"--node_rank={rank}",
                "--nproc_per_node=1",
                "--master_addr=127.0.0.1",
                f"--master_port={port}",
                "-m",
                "lens_cache.activations",
                *_args(gqa_dir, prompts, nodes),
            ],
            env=dist_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for rank in (0, 1)
    ]
    outputs = [p.communicate(timeout=300) for p in launches]
    assert [p.returncode for p in launches] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    _assert_same_export(single, nodes, gqa_dir.name)


def test_a_failing_rank_is_named_by_the_others_then_rerun_finishes(gqa_dir, tmp_path, dist_env):
    """Rank 1 meets a full disk at its third file: it says so in one line prefixed with its
    rank; rank 0 stops naming rank 1 (no gloo traceback); a plain rerun finishes the job."""
    prompts = _prompts_file(tmp_path)
    save = tmp_path / "out"
    env = dict(dist_env, LENS_CACHE_FAULT_AT="write:3:enospc", LENS_CACHE_FAULT_RANK="1")
    failed = _run_torchrun(2, _args(gqa_dir, prompts, save), env)
    assert failed.returncode != 0
    lines = failed.stderr.splitlines()
    assert any(line.startswith("rank 1: error: cannot write ") for line in lines), lines[-30:]
    assert any(line.startswith("rank 0: error: rank 1 failed (") for line in lines), lines[-30:]
    assert "gloo" not in failed.stderr and "Connection closed" not in failed.stderr
    rerun = _run_torchrun(2, _args(gqa_dir, prompts, save), dist_env)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    listed = [json.loads(line)["hash"] for line in (save / gqa_dir.name / "prompts.jsonl").open()]
    assert listed == sorted(prompt_hash(t) for t in TEXTS)
