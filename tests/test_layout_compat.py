"""A store written by the code from before the package was restructured (commit BASE, taken
from git) keeps working with today's code: its names are the ones `lens_cache.layout` spells,
an export resumes it without recomputing (its files stay the same bytes), the reader reads it,
the viewer rebuilds every prompt of it, and `verify` finds nothing wrong."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from lens_cache import export, open_store
from lens_cache.cache import verify_store
from lens_cache.prompts import prompt_hash
from lens_cache.viewer import write_viewer

REPO = Path(__file__).resolve().parents[1]
BASE = "98f6173"  # main before the restructure: its store layout is the reference
TEXTS = ["The cat sat on the mat.", "def f(x):\n    return x + 1\n", "A B C D A B C D"]
HOOKS = ["pattern", "resid_post"]


def old_package(dest: Path) -> Path:
    """`lens_cache/` and `web/` as they were at BASE, extracted under `dest`."""
    if not (REPO / ".git").exists():
        pytest.skip("needs the repository's git history (run from a clone)")
    tar = subprocess.run(
        ["git", "-C", str(REPO), "archive", BASE, "lens_cache", "web"],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(dest, filter="data")
    return dest


def export_with_old_code(old: Path, model_dir: Path, save: Path) -> None:
    code = f"""
import sys
sys.path.insert(0, {str(old)!r})
import lens_cache
assert lens_cache.__file__.startswith({str(old)!r}), lens_cache.__file__
lens_cache.export([{str(model_dir)!r}], {TEXTS!r}, {str(save)!r}, hooks={HOOKS!r}, quiet=True)
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=old, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def relative_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def old_store(tmp_path_factory, gpt2_dir) -> Path:
    work = tmp_path_factory.mktemp("old")
    save = work / "store"
    export_with_old_code(old_package(work / "src"), gpt2_dir, save)
    return save


def test_old_store_uses_the_names_of_layout(old_store, gpt2_dir):
    # Spelled out here on purpose: these are the names stores on disk have, whatever
    # lens_cache.layout says today.
    model = gpt2_dir.name
    files = relative_files(old_store)
    for h in map(prompt_hash, TEXTS):
        for name in ("prompt.json", "activations.npz", "residuals.safetensors"):
            assert f"{model}/prompts/{h}/{name}" in files
    for name in ("models.jsonl", "index.html", f"{model}/model_cfg.json", f"{model}/prompts.jsonl"):
        assert name in files
    assert any(f.startswith("viewer/") for f in files)
    assert any(f.startswith("viewer_data/") for f in files)
    folder = old_store / model / "prompts" / prompt_hash(TEXTS[0])
    with np.load(folder / "activations.npz") as npz:
        assert sorted(npz.files) == ["blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"]
    resid = load_file(folder / "residuals.safetensors")
    assert sorted(resid) == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]


def test_old_store_resumes_reads_and_rebuilds(old_store, gpt2_model, tmp_path):
    save = tmp_path / "store"
    subprocess.run(["cp", "-a", str(old_store), str(save)], check=True)
    model = gpt2_model.name
    before = {p: (save / p).read_bytes() for p in relative_files(save)}

    report = export(gpt2_model, TEXTS, save, hooks=HOOKS, quiet=True)[0]
    assert (report.cached, report.exported) == (len(TEXTS), 0)  # resumed: nothing recomputed

    store = open_store(save)
    assert store.models() == [model]
    assert [r["hash"] for r in store.prompts(model)] == sorted(map(prompt_hash, TEXTS))
    for text in TEXTS:
        folder = save / model / "prompts" / prompt_hash(text)
        with np.load(folder / "activations.npz") as npz:
            expected = np.stack([npz[f"blocks.{i}.attn.hook_pattern"][0] for i in (0, 1)])
        np.testing.assert_array_equal(store.patterns(model, text), expected)
        resid = load_file(folder / "residuals.safetensors")["blocks.1.hook_resid_post"]
        np.testing.assert_array_equal(store.residuals(model, text, layers=[1])[0].numpy(), resid)

    viewer = write_viewer(save, log=lambda _: None, force=True)  # every prompt rebuilt
    assert (viewer["prompts"], viewer["built"]) == (len(TEXTS), len(TEXTS))
    after = {p: (save / p).read_bytes() for p in relative_files(save)}
    # The viewer's own files follow the viewer's format, which has grown since BASE; the store's
    # data must be exactly as the old code wrote them. The records are upgraded in place
    # (pattern-lens's fields at the top level): prompt.json files and the index, nothing else.
    viewer_files = ("index.html", "viewer/", "viewer_data/")
    changed = sorted(
        p for p in before if after.get(p) != before[p] and not p.startswith(viewer_files)
    )
    records = [f"{model}/prompts/{h}/prompt.json" for h in map(prompt_hash, TEXTS)]
    assert changed == sorted([f"{model}/prompts.jsonl", *records]), changed
    for name in records:
        check_upgraded(json.loads(before[name]), json.loads(after[name]), gpt2_model)
    # the reader gives what it gave before the upgrade: the old record, as the old code wrote it
    assert store.prompts(model) == [json.loads(before[n]) for n in sorted(records)]
    assert viewer_data(save) == viewer_data(rebuilt_without_upgrade(old_store, tmp_path))
    for h in map(prompt_hash, TEXTS):
        assert (save / "viewer_data" / model / h / "prompt.js").is_file()
    assert verify_store(save, quiet=True)[0] == []
    assert json.loads((save / "models.jsonl").read_text())["model_name"] == model


def rebuilt_without_upgrade(old_store: Path, tmp_path: Path) -> Path:
    """A copy of the old store whose viewer today's code rebuilt, its records left as they were."""
    save = tmp_path / "not-upgraded"
    subprocess.run(["cp", "-a", str(old_store), str(save)], check=True)
    write_viewer(save, log=lambda _: None, force=True)
    return save


def viewer_data(save: Path) -> dict[str, bytes]:
    """The viewer's data scripts (what the page shows), without what records file times."""
    root = save / "viewer_data"
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*.js")}


def check_upgraded(old: dict, new: dict, model) -> None:
    """The upgraded record holds pattern-lens's fields as pattern-lens computes them (the
    tokenizer's own strings, no BOS) and every field the old one had, under `lens_cache`."""
    tokens = model.model.tokenizer.tokenize(old["text"])
    assert new == {
        "text": old["text"],
        **old["meta"],
        "hash": old["hash"],
        "n_tokens": len(tokens),
        "tokens": tokens,
        "lens_cache": {
            **{k: old[k] for k in ("n_tokens", "tokens", "token_ids") if k in old},
            **old["lens_cache"],
        },
    }
    assert old["n_tokens"] == len(tokens) + 1 and old["tokens"][1:] != tokens  # decoded, BOS


def test_cache_upgrade_is_resumable(old_store, gpt2_model, tmp_path, cli_env):
    """`lens-cache cache upgrade` killed after one prompt.json leaves a store that reads as
    before; run again, it finishes, and every record is upgraded (tokenizer from model_cfg)."""
    from tests.helpers import run_cli

    save = tmp_path / "store"
    subprocess.run(["cp", "-a", str(old_store), str(save)], check=True)
    model = gpt2_model.name
    before = {
        h: json.loads(record_path(save, model, h).read_text()) for h in map(prompt_hash, TEXTS)
    }
    args, module = ["upgrade", "-s", str(save)], "lens_cache.cache"
    killed = run_cli(args, {**cli_env, "LENS_CACHE_FAULT_AT": "write:2"}, module)
    assert killed.returncode == -9, killed.stderr[-2000:]
    now = {h: json.loads(record_path(save, model, h).read_text()) for h in before}
    assert sum(now[h] != before[h] for h in before) == 1  # one rewritten, one killed mid-write
    assert open_store(save).prompts(model) == [before[h] for h in sorted(before)]
    done = run_cli(args, cli_env, module)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "2 prompt.json files upgraded" in done.stderr
    for h, old in before.items():
        check_upgraded(old, json.loads(record_path(save, model, h).read_text()), gpt2_model)
    assert open_store(save).prompts(model) == [before[h] for h in sorted(before)]
    assert not [p for p in save.rglob(".*tmp-*")]  # the killed write's temp file is gone


def record_path(save: Path, model: str, h: str) -> Path:
    return save / model / "prompts" / h / "prompt.json"


def test_view_upgrades_an_old_store_or_says_how(old_store, gpt2_model, tmp_path, capsys):
    from lens_cache.cli.view import main as view

    model = gpt2_model.name
    for name, tokenizer_found in (("found", True), ("lost", False)):
        save = tmp_path / name
        subprocess.run(["cp", "-a", str(old_store), str(save)], check=True)
        before = {h: record_path(save, model, h).read_text() for h in map(prompt_hash, TEXTS)}
        if not tokenizer_found:  # the folder it was exported from has gone
            cfg_path = save / model / "model_cfg.json"
            cfg = json.loads(cfg_path.read_text())
            cfg["lens_cache"]["source"] = str(tmp_path / "moved-away")
            if "tokenizer_name" in cfg:  # TransformerLens 3's config names the tokenizer too
                cfg["tokenizer_name"] = str(tmp_path / "moved-away")
            cfg_path.write_text(json.dumps(cfg))
        assert view(["-s", str(save), "-q"]) == 0
        for h, old in before.items():
            now = record_path(save, model, h).read_text()
            if tokenizer_found:
                check_upgraded(json.loads(old), json.loads(now), gpt2_model)
            else:
                assert now == old
        err = capsys.readouterr().err
        assert ("cache upgrade -s" in err) is not tokenizer_found, err
        assert verify_store(save, quiet=True)[0] == []
