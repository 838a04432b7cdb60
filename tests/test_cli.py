"""`python -m lens_cache.activations` end to end in a subprocess, as a user runs it."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from lens_cache.prompts import prompt_hash
from tests.helpers import REPO, run_cli


def _write_jsonl(path, texts):
    path.write_text(
        "".join(json.dumps({"text": t, "meta": {"i": i}}) + "\n" for i, t in enumerate(texts))
    )
    return path


def test_export_prints_paths_on_stdout_and_progress_on_stderr(gqa_dir, tmp_path, cli_env):
    prompts = _write_jsonl(tmp_path / "p.jsonl", ["one two three", "four five", "six"])
    save = tmp_path / "out"
    result = run_cli(["-m", str(gqa_dir), "-p", str(prompts), "-s", str(save)], cli_env)
    assert result.returncode == 0, result.stderr
    name = gqa_dir.name
    assert result.stdout.splitlines() == [str(save / name), str(save / "index.html")]
    assert "prompts/s" in result.stderr and "tokens/s" in result.stderr
    assert "ETA" in result.stderr
    assert len((save / name / "prompts.jsonl").read_text().splitlines()) == 3
    quiet = run_cli(["-m", str(gqa_dir), "-p", str(prompts), "-s", str(save), "-q"], cli_env)
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_default_save_path_comes_from_env(gqa_dir, tmp_path, cli_env):
    prompts = _write_jsonl(tmp_path / "p.jsonl", ["hello there"])
    result = run_cli(["-m", str(gqa_dir), "-p", str(prompts), "-q", "--no-index-html"], cli_env)
    assert result.returncode == 0, result.stderr
    store = tmp_path / "store"
    assert (store / gqa_dir.name / "prompts" / prompt_hash("hello there") / "prompt.json").exists()
    assert not (store / "index.html").exists()


def test_help_explains_flags_with_defaults(cli_env):
    result = run_cli(["--help"], cli_env)
    assert result.returncode == 0
    for flag in [
        "--model",
        "--prompts",
        "--save-path",
        "--min-chars",
        "--max-chars",
        "--n-samples",
        "--shuffle",
        "--seed",
        "--batch-size",
        "--force",
        "--no-index-html",
        "--raw-prompts",
        "--stacked-heads",
        "--device",
        "--hooks",
        "--layers",
        "--dtype",
        "--token-budget",
        "--max-batch-mb",
        "--quiet",
    ]:
        assert flag in result.stdout
    assert "default: smollm2-135m" in result.stdout
    assert "(default: all)" in result.stdout  # --layers


BAD_INPUTS = [
    (
        "missing prompts file",
        ["-p", "{tmp}/nope.jsonl"],
        "prompts file not found: {tmp}/nope.jsonl",
    ),
    ("malformed json", ["-p", "{bad_json}"], "bad.jsonl:2: not valid JSON"),
    ("no text", ["-p", "{no_text}"], 'notext.jsonl:1: no "text" field'),
    ("empty prompt", ["-p", "{empty}"], "empty.jsonl:2: empty prompt"),
    ("too long", ["-p", "{long}", "--on-long", "fail"], "more than {model}'s context of 512"),
    ("unknown model", ["-m", "no-such-org/no-such-model"], "Hub model is named 'no-such-org/"),
    ("missing model dir", ["-m", "./nowhere/model"], "./nowhere/model: no such model directory"),
    ("unwritable save path", ["-s", "{tmp}/file.txt/sub"], "cannot write to save path"),
    ("layer out of range", ["--layers", "7"], "--layers 7: the model has layers 0-2 (3 layers)"),
    ("bad layer spec", ["--layers", "two"], "--layers: cannot read 'two'"),
    ("zero batch size", ["-b", "0"], "batch-size must be positive, got 0"),
]


@pytest.mark.parametrize("label, args, message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2(label, args, message, gqa_dir, tmp_path, cli_env):
    files = {
        "bad_json": ('{"text": "fine"}\n{"text": "broken\n', "bad.jsonl"),
        "no_text": ('{"prompt": "x"}\n', "notext.jsonl"),
        "empty": ('{"text": "fine"}\n{"text": ""}\n', "empty.jsonl"),
        "long": (json.dumps({"text": "word " * 2000}) + "\n", "long.jsonl"),
    }
    fmt = {"tmp": str(tmp_path), "model": gqa_dir.name}
    for key, (content, fname) in files.items():
        (tmp_path / fname).write_text(content)
        fmt[key] = str(tmp_path / fname)
    (tmp_path / "file.txt").write_text("not a directory")
    good = _write_jsonl(tmp_path / "good.jsonl", ["a fine prompt"])
    base = ["-p", str(good), "-s", str(tmp_path / "out")]
    if "-m" not in args:
        base += ["-m", str(gqa_dir)]
    result = run_cli(base + [a.format(**fmt) for a in args], cli_env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and message.format(**fmt) in lines[-1]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / gqa_dir.name / "prompts").exists()  # nothing written


def test_debug_env_shows_the_traceback(tmp_path, cli_env):
    cli_env["LENS_CACHE_DEBUG"] = "1"
    result = run_cli(["-p", str(tmp_path / "nope.jsonl")], cli_env)
    assert result.returncode != 0 and "Traceback" in result.stderr
    assert "PromptsFileNotFoundError" in result.stderr


def test_too_long_prompt_is_skipped_with_a_warning_by_default(gqa_dir, tmp_path, cli_env):
    prompts = _write_jsonl(tmp_path / "p.jsonl", ["short one", "word " * 2000])
    result = run_cli(
        ["-m", str(gqa_dir), "-p", str(prompts), "-s", str(tmp_path / "o"), "-q"], cli_env
    )
    assert result.returncode == 0
    long_hash, label = prompt_hash("word " * 2000), repr(("word " * 2000)[:40])
    warning = rf"warning: prompt {long_hash} \({re.escape(label)}\) has (\d+) tokens, "
    warning += rf"more than {re.escape(gqa_dir.name)}'s context of 512; skipped"
    (n_tokens,) = [int(m.group(1)) for m in re.finditer(warning, result.stderr)]
    assert n_tokens > 512
    stored = os.listdir(tmp_path / "o" / gqa_dir.name / "prompts")
    assert stored == [prompt_hash("short one")]


def _stats(model_dir, hashes):
    """(inode, mtime_ns) of every file of these prompt folders: a rewrite changes both."""
    files = [p for h in hashes for p in (model_dir / "prompts" / h).iterdir()]
    return {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in files}


def _complete_prompts(model_dir):
    return sorted(p.parent.name for p in (model_dir / "prompts").glob("*/prompt.json"))


def test_kill_9_mid_run_then_rerun_completes(gqa_dir, tmp_path, cli_env):
    texts = [
        f"prompt number {i}: " + "lorem ipsum dolor sit amet " * (1 + i % 9) for i in range(240)
    ]
    prompts = _write_jsonl(tmp_path / "p.jsonl", texts)
    save = tmp_path / "out"
    args = ["-m", str(gqa_dir), "-p", str(prompts), "-s", str(save), "-b", "1", "-q"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "lens_cache.activations", *args],
        env=cli_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
    )
    model_dir = save / gqa_dir.name
    deadline = time.monotonic() + 120
    while len(_complete_prompts(model_dir)) < 5 and time.monotonic() < deadline:
        time.sleep(0.01) if proc.poll() is None else pytest.fail("export ended before the kill")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = _complete_prompts(model_dir)
    assert 5 <= len(done_before) < len(texts), "the kill must land mid-run"
    for h in done_before:  # whatever claims to be complete, is
        with np.load(model_dir / "prompts" / h / "activations.npz") as z:
            assert len(z.files) == 3 and all(z[k].ndim == 4 for k in z.files)
    finished = _stats(model_dir, done_before)

    result = run_cli(args, cli_env)
    assert result.returncode == 0, result.stderr
    assert _stats(model_dir, done_before) == finished  # finished prompts were not rewritten
    assert _complete_prompts(model_dir) == sorted(prompt_hash(t) for t in texts)
    leftovers = [p for p in model_dir.rglob("*") if ".tmp-" in p.name]
    assert leftovers == []
    listed = [json.loads(line)["hash"] for line in (model_dir / "prompts.jsonl").open()]
    assert listed == sorted(prompt_hash(t) for t in texts)
    fresh = tmp_path / "fresh"
    assert run_cli(args[:4] + ["-s", str(fresh), "-q"], cli_env).returncode == 0
    for t in texts:
        a, b = (
            d / gqa_dir.name / "prompts" / prompt_hash(t) / "activations.npz" for d in (save, fresh)
        )
        with np.load(a) as za, np.load(b) as zb:
            for k in za.files:
                np.testing.assert_allclose(za[k], zb[k], atol=1e-5, rtol=0)


def test_dataset_labels_and_pooling_from_the_cli(gqa_dir, tmp_path, cli_env):
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = ["good film", "bad film", "fine acting", "dull plot"]
    table = pa.table({"review": texts, "label": [1, 0, 1, 0], "source": ["a", "b", "a", "b"]})
    pq.write_table(table, tmp_path / "reviews.parquet")
    save = tmp_path / "out"
    args = [
        "-m",
        str(gqa_dir),
        "--dataset",
        str(tmp_path / "reviews.parquet"),
        "-s",
        str(save),
        "--text-column",
        "review",
        "--label-columns",
        "label",
        "source",
        "--pool",
        "last_token",
        "--pool",
        "mean",
        "-q",
        "--no-index-html",
    ]
    result = run_cli(args, cli_env)
    assert result.returncode == 0, result.stderr
    pooled = [line for line in result.stdout.splitlines() if "pooled" in line]
    assert [p.rsplit("/", 1)[1] for p in pooled] == ["resid_post-last_token", "resid_post-mean"]
    record = json.loads(
        (save / gqa_dir.name / "prompts" / prompt_hash("bad film") / "prompt.json").read_text()
    )
    assert (record["label"], record["source"]) == (0, "b")  # pattern-lens's place: top level
    from lens_cache import load_pooled

    X, y = load_pooled(save, gqa_dir.name, pool="mean", layer=2, label="label")
    assert X.shape == (4, 64) and sorted(y) == [0, 0, 1, 1]


def test_pool_without_a_residual_hook_is_refused(gqa_dir, tmp_path, cli_env):
    result = run_cli(
        [
            "-m",
            str(gqa_dir),
            "-p",
            "default",
            "-s",
            str(tmp_path / "o"),
            "--hooks",
            "pattern",
            "--pool",
            "mean",
        ],
        cli_env,
    )
    assert result.returncode == 2
    assert "--pool needs a residual hook" in result.stderr.splitlines()[-1]
