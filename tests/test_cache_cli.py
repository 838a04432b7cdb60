"""`python -m lens_cache.cache` in a subprocess, on real exports."""

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from lens_cache import cli, export
from lens_cache.cli import cache
from lens_cache.pooled import write_pooled
from lens_cache.prompts import prompt_hash
from tests.helpers import run_cli, write_pattern_lens_store

TEXTS = ["First prompt here.", "Second prompt, a bit longer than the first.", "Third."]


@pytest.fixture(scope="module")
def exported(gqa_model, gpt2_model, tmp_path_factory) -> Path:
    """A store with two models, gpt2 with stacked heads, and a pooled dataset of gqa."""
    path = tmp_path_factory.mktemp("cache-store")
    export(gqa_model, prompts=TEXTS, save_path=path, quiet=True)
    export(gpt2_model, prompts=TEXTS, save_path=path, stacked_heads=True, quiet=True)
    write_pooled(path, gqa_model.name)
    return path


@pytest.fixture
def store(exported, cli_env) -> Path:
    """A fresh copy at $LENS_CACHE_DIR, so commands run without --save-path."""
    path = Path(cli_env["LENS_CACHE_DIR"])
    shutil.copytree(exported, path)
    return path


def _cache(args, env):
    return run_cli(args, env, module="lens_cache.cache")


def _in_process(args, capsys) -> tuple[int, str, str]:
    """The same command without a subprocess (faster), through the same error boundary."""
    code = cli.run_cli(cache.main, args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_info_and_list(store, cli_env, gqa_model, gpt2_model, capsys):
    r = _cache(["info", "--json"], cli_env)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["models"]
    gqa = rows[gqa_model.name]
    assert gqa["prompts"] == len(TEXTS)
    npz = sum(p.stat().st_size for p in (store / gqa_model.name).rglob("activations.npz"))
    assert gqa["patterns"] == npz > 0
    assert gqa["residuals"] > 0 and gqa["pooled"] > 0 and rows[gpt2_model.name]["pooled"] == 0
    total = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
    assert sum(row["total"] for row in rows.values()) == total
    table = _cache(["info"], cli_env).stdout.splitlines()
    assert table[0].split()[:3] == ["model", "prompts", "patterns"] and table[-1].startswith(
        "total"
    )

    listed = _cache(["list", "-m", gqa_model.name], cli_env).stdout.splitlines()
    assert sorted(line.split("\t")[1] for line in listed) == sorted(map(prompt_hash, TEXTS))
    assert all(line.startswith(gqa_model.name + "\t") for line in listed)
    records = [json.loads(x) for x in _cache(["list", "--json"], cli_env).stdout.splitlines()]
    assert len(records) == 2 * len(TEXTS)
    assert {r["model"] for r in records} == {gqa_model.name, gpt2_model.name}


def test_verify_finds_truncated_and_missing_files(store, cli_env, gqa_model, gpt2_model):
    ok = _cache(["verify"], cli_env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "all files readable" in ok.stderr and ok.stdout == ""

    npz = store / gqa_model.name / "prompts" / prompt_hash(TEXTS[1]) / "activations.npz"
    with open(npz, "r+b") as f:
        f.truncate(npz.stat().st_size // 2)
    resid = store / gpt2_model.name / "prompts" / prompt_hash(TEXTS[0]) / "residuals.safetensors"
    resid.unlink()
    npy = next((store / gpt2_model.name).rglob("*.npy"))
    with open(npy, "r+b") as f:
        f.truncate(200)
    half = store / gqa_model.name / "prompts" / "interrupted"
    half.mkdir()

    bad = _cache(["verify", "-s", str(store)], cli_env)
    assert bad.returncode == 1
    lines = {tuple(line.split("\t")[:2]) for line in bad.stdout.splitlines()}
    assert lines == {
        ("corrupt", str(npz)),
        ("missing", str(resid)),
        ("corrupt", str(npy)),
        ("incomplete", str(half)),
    }
    assert "4 problems" in bad.stderr


def test_verify_reads_every_npz_member(store, gqa_model, capsys):
    """A flipped byte inside one member's compressed data fails its CRC (or inflation)."""
    npz = store / gqa_model.name / "prompts" / prompt_hash(TEXTS[0]) / "activations.npz"
    data = bytearray(npz.read_bytes())
    data[len(data) // 2] ^= 0xFF
    npz.write_bytes(bytes(data))
    code, out, _ = _in_process(["verify", "-q", "-s", str(store)], capsys)
    assert code == 1 and out.startswith(f"corrupt\t{npz}\t")


def _age(folder: Path, atime: float, mtime: float) -> None:
    for p in folder.iterdir():
        os.utime(p, (atime, mtime))


def test_prune_keeps_the_most_recently_used(store, cli_env, gqa_model, capsys):
    model = store / gqa_model.name
    folders = {t: model / "prompts" / prompt_hash(t) for t in TEXTS}
    now = time.time()
    for folder in store.glob("**/prompts/*"):
        _age(folder, now - 9000, now - 9000)
    _age(folders[TEXTS[0]], now - 10, now - 9000)  # read recently (atime)
    _age(folders[TEXTS[1]], now - 9000, now - 100)  # no atime kept: its mtime counts
    keep = sum(p.stat().st_size for t in TEXTS[:2] for p in folders[t].iterdir())
    other = sum(
        p.stat().st_size for p in store.rglob("*") if p.is_file() and "prompts" not in p.parts
    )
    limit = (keep + other + 1000) / 1e9  # room for the two used prompts and nothing more

    code, dry, _ = _in_process(["prune", "-s", str(store), "--max-gb", str(limit), "-n"], capsys)
    assert code == 0 and folders[TEXTS[2]].exists()
    r = _cache(["prune", "--max-gb", str(limit)], cli_env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == dry
    assert folders[TEXTS[0]].exists() and folders[TEXTS[1]].exists()
    assert not folders[TEXTS[2]].exists() and str(folders[TEXTS[2]]) in r.stdout
    assert len(r.stdout.splitlines()) == len(TEXTS) + 1  # the other model's prompts too
    listed = [json.loads(x)["hash"] for x in (model / "prompts.jsonl").read_text().splitlines()]
    assert listed == sorted(prompt_hash(t) for t in TEXTS[:2])


def test_clear_removes_one_model(store, cli_env, gqa_model, gpt2_model, capsys):
    r = _cache(["clear", "--model", gpt2_model.name], cli_env)
    assert r.returncode == 0, r.stderr
    assert not (store / gpt2_model.name).exists() and (store / gqa_model.name).is_dir()
    models = [
        json.loads(x)["model_name"] for x in (store / "models.jsonl").read_text().splitlines()
    ]
    assert gpt2_model.name not in models and gqa_model.name in models
    again = _cache(["clear", "--model", gpt2_model.name], cli_env)
    assert again.returncode == 2 and again.stderr.startswith(
        f"error: model {gpt2_model.name} is not"
    )
    assert "Traceback" not in again.stderr


def test_verify_accepts_a_pattern_lens_directory(tmp_path, capsys):
    path, _, _ = write_pattern_lens_store(tmp_path)  # tokens without BOS, no residuals: fine
    code, out, err = _in_process(["verify", "-s", str(path)], capsys)
    assert (code, out) == (0, ""), err
