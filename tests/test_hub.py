"""`lens_cache.hub` against tests/hubserver.py with the real huggingface_hub client and datasets.

The store is a real export of a tiny model, made in this process. huggingface_hub and datasets
read HF_ENDPOINT and the offline switch at import time (and conftest sets HF_HUB_OFFLINE=1), so
every push and pull runs in a child process whose environment points at this module's server:
either `python -m lens_cache.hub ...` or a short Python snippet that prints a JSON result.
Assertions read the server's state (commits, blobs) and its request log.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load as load_safetensors

from lens_cache import export
from lens_cache.errors import HubIntegrityError, UnsafeRepoPathError
from lens_cache.hub import Selection
from lens_cache.hub._card import prompts_table
from lens_cache.hub._layout import (
    ModelPlan,
    check_repo_path,
    is_layout_path,
    parse_size,
    pooled_files_complete,
)
from lens_cache.hub._select import make_selection, parse_heads
from lens_cache.hub._shards import ShardReader, ShardWriter, group_prompts, plan_shards
from lens_cache.prompts import prompt_hash
from tests.helpers import REPO, read_jsonl, read_npz, read_safetensors
from tests.hubserver import ALICE, TOKENS, HubServer, client_env

MARK = "@@hub-result@@"
HOSTED_VIEWER = {"viewer/index.json", "viewer/prompts-00000.json"}  # beside the manifest
PROMPTS = [
    {"text": "The cat sat on the mat because it was warm.", "meta": {"kind": "prose", "id": 1}},
    {"text": "def add(a, b):\n    return a + b\n", "meta": {"kind": "code", "id": 2}},
    {"text": "one two three one two three one two", "meta": {"kind": "repeat", "id": 3}},
]


class FlakyHub(HubServer):
    """Fails the commit that follows `fail_after` successful ones (then works again)."""

    fail_after: int | None = None

    def _commit(self, repo, rev, query, body, user):
        if self.fail_after is not None:
            if self.fail_after == 0:
                self.fail_after = None
                self.fail_next_commits(1)
            else:
                self.fail_after -= 1
        return super()._commit(repo, rev, query, body, user)


# --- fixtures and helpers --------------------------------------------------------------------

PRELUDE = '''
import contextlib, io, json, os
from pathlib import Path
from lens_cache import hub
from lens_cache.cli import hub as hub_cli, run_cli

def cli(*args):
    """`python -m lens_cache.hub ARGS`, run in this process: {rc, out, err}."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = run_cli(hub_cli.main, [str(a) for a in args])
    return {"rc": rc, "out": out.getvalue(), "err": err.getvalue()}

def catch(fn, *args, **kw):
    try:
        fn(*args, **kw)
    except Exception as e:
        return [type(e).__name__, str(e)]

def cached(repo):
    """Files of `repo` in this child's Hub cache: what was downloaded."""
    root = Path(os.environ["HF_HUB_CACHE"]) / ("datasets--" + repo.replace("/", "--"))
    return sorted(p.relative_to(s).as_posix() for s in root.glob("snapshots/*")
                  for p in s.rglob("*") if p.is_file())
'''


def run_child(server, work: Path, args=None, code=None, token=ALICE, expect_rc=0, fault=None):
    """Run `python -m lens_cache.hub ARGS`, or `code` after PRELUDE (returns its `out`), in a
    child whose environment points at `server` and whose HF home is empty (no stored token);
    `fault` sets LENS_CACHE_FAULT_AT (see lens_cache.faults)."""
    work.mkdir(parents=True, exist_ok=True)
    env = client_env(server.url, work)
    env["PYTHONPATH"] = str(REPO)
    if fault:
        env["LENS_CACHE_FAULT_AT"] = fault
    if token:
        env["HF_TOKEN"] = token
    if code is not None:
        body = PRELUDE + textwrap.dedent(code)
        argv = ["-c", f"{body}\nprint({MARK!r} + json.dumps(out))"]
    else:
        argv = ["-m", "lens_cache.hub", *map(str, args)]
    proc = subprocess.run(
        [sys.executable, *argv], env=env, cwd=work, capture_output=True, text=True, timeout=180
    )
    if expect_rc is not None and proc.returncode != expect_rc:
        pytest.fail(f"rc={proc.returncode}, expected {expect_rc}:\n{proc.stderr[-5000:]}")
    if code is None:
        return proc
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)][-1]
    return json.loads(line[len(MARK) :])


@pytest.fixture(scope="module")
def store(gqa_model, tmp_path_factory) -> dict:
    """A real export: 3 prompts x 3 layers x 4 heads, patterns and resid_post (float32)."""
    path = tmp_path_factory.mktemp("store")
    export(gqa_model, prompts=PROMPTS, save_path=path, hooks=["pattern", "resid_post"], quiet=True)
    hashes = sorted(prompt_hash(p["text"]) for p in PROMPTS)
    return {"path": path, "model": gqa_model.name, "hashes": hashes}


def _head(hub: HubServer, repo: str, branch: str = "main") -> dict:
    """`{path: entry}` at the head of `branch`."""
    r = hub.repos[f"dataset:{repo}"]
    return r["commits"][r["branches"][branch]]["files"]


def _blob(hub: HubServer, repo: str, path: str, branch: str = "main") -> bytes:
    return hub.blobs.get(_head(hub, repo, branch)[path]["sha256"])


def _table_hashes(hub: HubServer, repo: str, branch: str = "main") -> list[str]:
    """The prompt hashes of the pushed prompts table, read with pyarrow."""
    import pyarrow.parquet as pq

    table = _blob(hub, repo, "data/prompts-00000-of-00001.parquet", branch)
    return pq.read_table(io.BytesIO(table)).column("hash").to_pylist()


def _shard_keys(hub: HubServer, repo: str, branch: str = "main") -> dict[str, list[str]]:
    """`{shard path: the prompt hashes it holds}` at the head of `branch`."""
    shards = [p for p in _head(hub, repo, branch) if p.startswith("tensors/")]
    return {p: sorted(load_safetensors(_blob(hub, repo, p, branch))) for p in shards}


def _commit_chain(hub: HubServer, repo: str) -> list[dict]:
    """Commits of main, oldest first."""
    r = hub.repos[f"dataset:{repo}"]
    chain, sha = [], r["branches"]["main"]
    while sha:
        chain.append(r["commits"][sha])
        sha = r["commits"][sha]["parent"]
    return chain[::-1]


def _added(parent: dict, commit: dict) -> set[str]:
    return {p for p, e in commit["files"].items() if parent["files"].get(p) != e}


def _pattern(store: dict, hash_: str, layer: int, head: int) -> np.ndarray:
    npz = read_npz(store["path"] / store["model"] / "prompts" / hash_ / "activations.npz")
    return npz[f"blocks.{layer}.attn.hook_pattern"][0, head]


@pytest.fixture(scope="module")
def pushed(hub, store, tmp_path_factory) -> str:
    """`alice/full`: the whole store, patterns and resid_post, pushed once with the CLI."""
    args = ["push", "--repo", "alice/full", "-s", store["path"], "--kinds", "patterns"]
    proc = run_child(hub, tmp_path_factory.mktemp("push"), args + ["resid_post", "--message", "v1"])
    assert proc.stdout.strip() == f"{hub.url}/datasets/alice/full"
    return "alice/full"


@pytest.fixture(scope="module")
def used(hub, store, pushed, tmp_path_factory) -> dict:
    """One child uses `alice/full`: a selective pull, a full pull, a rerun of the push and
    `datasets.load_dataset`."""
    work = tmp_path_factory.mktemp("use")
    n_commits = len(_commit_chain(hub, pushed))
    sub = ["--layers", "0", "--prompts", store["hashes"][1], "--kinds", "patterns"]
    out = run_child(
        hub,
        work,
        code=f"""
        import datasets
        out = {{"subset": cli("pull", "--repo", {pushed!r}, "-s", "sub", *{sub!r})}}
        out["subset_files"] = cached({pushed!r})
        out["full"] = cli("pull", "--repo", {pushed!r}, "-s", "full")
        out["repush"] = cli("push", "--repo", {pushed!r}, "-s", {str(store["path"])!r},
                            "--kinds", "patterns", "resid_post")
        ds = datasets.load_dataset({pushed!r})
        models = datasets.load_dataset({pushed!r}, "models", split="train")
        out.update(splits=list(ds), rows=ds["train"].to_list(), models=models.to_list())
        """,
    )
    out.update(work=work, commits_before=n_commits, commits_after=len(_commit_chain(hub, pushed)))
    return out


# --- round trip ------------------------------------------------------------------------------


def test_push_layout_and_manifest(hub, store, pushed):
    files = _head(hub, pushed)
    m = store["model"]
    shards = {
        f"tensors/{m}/patterns/layer_0{i}/head_0{h}-00000.safetensors"
        for i in range(3)
        for h in range(4)
    }
    shards |= {f"tensors/{m}/resid_post/layer_0{i}-00000.safetensors" for i in range(3)}
    tables = {"data/prompts-00000-of-00001.parquet", "data/models-00000-of-00001.parquet"}
    top = {".gitattributes", "README.md", "lens_cache.json"}
    viewer = HOSTED_VIEWER
    assert set(files) == top | tables | shards | viewer
    assert not [p for p in files if p.endswith(".jsonl")]

    manifest = json.loads(_blob(hub, pushed, "lens_cache.json"))
    assert manifest["format"] == "lens_cache" and manifest["format_version"] == 1
    assert manifest["models"][m]["n_prompts"] == 3
    assert manifest["models"][m]["patterns"] == {str(i): [0, 1, 2, 3] for i in range(3)}
    listed = {e["path"]: e for e in manifest["files"]}
    assert set(listed) == set(files) - {".gitattributes", "lens_cache.json", *viewer}
    for path, entry in listed.items():  # size and sha256 are what the server stored
        assert (entry["size"], entry["sha256"]) == (files[path]["size"], files[path]["sha256"])
    card = _blob(hub, pushed, "README.md").decode()
    assert card.startswith("---\nconfigs:\n- config_name: prompts\n")
    assert "license: other" in card and "- attention-patterns" in card
    chain = _commit_chain(hub, pushed)  # card, manifest and what describes shards came last
    assert _added(chain[-2], chain[-1]) == {"README.md", "lens_cache.json", *viewer}
    assert chain[-1]["title"] == "v1"

    path = f"tensors/{m}/patterns/layer_01/head_02-00000.safetensors"
    shard = load_safetensors(_blob(hub, pushed, path))
    assert sorted(shard) == store["hashes"]
    for h in store["hashes"]:  # unpadded [T, T], float32, bit for bit
        assert torch.equal(shard[h], torch.from_numpy(_pattern(store, h, 1, 2)))


def test_pull_round_trip_is_bit_exact(store, used):
    assert used["full"]["rc"] == 0, used["full"]["err"]
    out = used["work"] / "full"
    assert used["full"]["out"].strip() == str(Path("full") / "index.html")
    m = store["model"]
    for h in store["hashes"]:
        src, dst = store["path"] / m / "prompts" / h, out / m / "prompts" / h
        a, b = read_npz(src / "activations.npz"), read_npz(dst / "activations.npz")
        assert a.keys() == b.keys()
        assert all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)
        ra = read_safetensors(src / "residuals.safetensors")
        rb = read_safetensors(dst / "residuals.safetensors")
        assert ra.keys() == rb.keys()
        assert all(ra[k].dtype == rb[k].dtype and torch.equal(ra[k], rb[k]) for k in ra)
        pa, pb = (json.loads((d / "prompt.json").read_text()) for d in (src, dst))
        ours_a, ours_b = pa.pop("lens_cache"), pb.pop("lens_cache")
        assert pa == pb  # pattern-lens's fields and the metadata beside them
        for key in ("n_tokens", "tokens", "token_ids", "settings"):  # ours; the same settings
            assert ours_a[key] == ours_b[key]
    assert (out / "index.html").is_file() and (out / m / "prompts.jsonl").is_file()
    models = read_jsonl(out / "models.jsonl")
    assert [x["model_name"] for x in models] == [m]
    assert models[0]["lens_cache"]["source"].startswith("local:")  # no local path published

    from pattern_lens.load_activations import load_activations

    _, cache = load_activations(m, {"text": PROMPTS[0]["text"]}, out, "numpy")
    assert cache["blocks.2.attn.hook_pattern"].shape[:2] == (1, 4)


def test_pull_interrupted_by_kills_and_a_full_disk_then_rerun(hub, store, pushed, used):
    """`hub pull` killed at three of its file writes, and out of space at one: each rerun
    resumes; the last gives the same files, bit for bit, as the uninterrupted pull."""
    work = used["work"]
    args = ["pull", "--repo", pushed, "-s", "again", "-q"]
    full = run_child(hub, work, args, fault="write:3:enospc", expect_rc=3)
    assert full.stderr.startswith("error: cannot write ") and full.stderr.count("\n") == 1
    assert "No space left on device" in full.stderr, full.stderr
    for fault in ("write:2", "write:5", "viewer:3"):
        assert run_child(hub, work, args, fault=fault, expect_rc=None).returncode == -9, fault
    run_child(hub, work, args)
    again, reference = work / "again", work / "full"

    def tree(root):
        files = (p for p in sorted(root.rglob("*")) if p.is_file())
        skip = (".lens_cache.lock", "stamp.json", "manifest.npz")  # these record mtimes
        return {str(p.relative_to(root)): p.read_bytes() for p in files if p.name not in skip}

    assert tree(again) == tree(reference)


def test_rerun_push_sends_nothing(used):
    assert used["repush"]["rc"] == 0, used["repush"]["err"]
    assert "0 files uploaded" in used["repush"]["err"]
    assert "21 already there" in used["repush"]["err"]  # 19 files and the 2 of the viewer
    assert used["commits_after"] == used["commits_before"]


def test_pull_downloads_only_the_selection(store, used):
    assert used["subset"]["rc"] == 0, used["subset"]["err"]
    m, h = store["model"], store["hashes"][1]
    heads = [f"tensors/{m}/patterns/layer_00/head_0{i}-00000.safetensors" for i in range(4)]
    tables = ["data/models-00000-of-00001.parquet", "data/prompts-00000-of-00001.parquet"]
    assert used["subset_files"] == sorted(["lens_cache.json", *tables, *heads])
    prompts = used["work"] / "sub" / m / "prompts"
    assert [p.name for p in prompts.iterdir()] == [h]
    assert sorted(p.name for p in (prompts / h).iterdir()) == ["activations.npz", "prompt.json"]
    assert list(read_npz(prompts / h / "activations.npz")) == ["blocks.0.attn.hook_pattern"]


def test_load_dataset_reads_the_prompts_config(store, used):
    assert used["splits"] == ["train"]
    rows = used["rows"]
    assert [r["hash"] for r in rows] == store["hashes"]
    by_hash = {prompt_hash(p["text"]): p for p in PROMPTS}
    for r in rows:
        assert r["text"] == by_hash[r["hash"]]["text"] and r["model"] == store["model"]
        assert json.loads(r["meta"]) == by_hash[r["hash"]]["meta"]
        assert len(r["tokens"]) == r["n_tokens"] == len(r["token_ids"])
    assert used["models"][0]["model_name"] == store["model"]
    assert json.loads(used["models"][0]["config"])["n_heads"] == 4


# --- selection -------------------------------------------------------------------------------


def test_selection_pushes_only_selected_heads_and_prompts(hub, store, tmp_path):
    two, m = store["hashes"][:2], store["model"]
    out = run_child(
        hub,
        tmp_path,
        code=f"""
        r = hub.push_to_hub("alice/heads", {str(store["path"])!r}, prompts={two!r}, layers="1",
                            heads="1.0,1.2", shard_max_bytes=1, quiet=True)
        out = {{"uploaded": sorted(r.uploaded), "commits": r.commits}}
        out["pull"] = cli("pull", "--repo", "alice/heads", "-s", "pulled")
        """,
    )
    assert out["commits"] == 2 and len(out["uploaded"]) == 10  # 8 and the 2 of the viewer
    files = _head(hub, "alice/heads")
    shard = "tensors/{}/patterns/layer_01/head_0{}-0000{}.safetensors".format
    assert {p for p in files if p.startswith("tensors/")} == {
        shard(m, h, i)
        for h in (0, 2)
        for i in (0, 1)  # one prompt per shard (max 1 byte)
    }
    for h in (0, 2):
        for i, key in enumerate(two):
            tensors = load_safetensors(_blob(hub, "alice/heads", shard(m, h, i)))
            assert list(tensors) == [key]
            assert torch.equal(tensors[key], torch.from_numpy(_pattern(store, key, 1, h)))
    import pyarrow.parquet as pq

    table = _blob(hub, "alice/heads", "data/prompts-00000-of-00001.parquet")
    assert pq.read_table(io.BytesIO(table)).column("hash").to_pylist() == two

    # Pulled back: no npz (layer 1 is partial, never padded with made-up heads); the two heads
    # sit in partial_heads.safetensors and prompt.json says which they are.
    assert out["pull"]["rc"] == 0, out["pull"]["err"]
    dest = tmp_path / "pulled" / m
    for key in two:
        d = dest / "prompts" / key
        assert sorted(p.name for p in d.iterdir()) == ["partial_heads.safetensors", "prompt.json"]
        side = read_safetensors(d / "partial_heads.safetensors")
        for h in (0, 2):
            got = side[f"blocks.1.attn.hook_pattern.head_{h}"].numpy()
            assert np.array_equal(got, _pattern(store, key, 1, h))
        record = json.loads((d / "prompt.json").read_text())
        assert record["lens_cache"]["partial_heads"] == {"1": [0, 2]}
    assert len((dest / "prompts.jsonl").read_text().splitlines()) == 2


# --- pooled datasets ------------------------------------------------------------------------


def test_pooled_datasets_round_trip(hub, store, pushed, tmp_path):
    from lens_cache.pooled import load_pooled, write_pooled

    src, m = tmp_path / "store", store["model"]
    shutil.copytree(store["path"], src)  # the shared store stays without pooled data
    write_pooled(src, m, pool="mean")
    push = f"hub.push_to_hub('alice/pooled', {str(src)!r}, kinds=['patterns', 'pooled'])"
    out = run_child(
        hub,
        tmp_path / "work",
        code=f"""
        out = {{"uploaded": sorted({push}.uploaded), "again": {push}.uploaded}}
        out["pulled"] = cli("pull", "--repo", "alice/pooled", "-s", "pulled", "-q")
        out["only"] = cli("pull", "--repo", "alice/pooled", "-s", "only", "--kinds", "pooled")
        out["absent"] = catch(
            hub.push_to_hub, "alice/nopool", {str(store["path"])!r}, kinds=["patterns", "pooled"]
        )
        out["absent_pull"] = catch(hub.pull, {pushed!r}, "p", kinds=["pooled"])
        """,
    )
    path = f"pooled/{m}/resid_post-mean/data-00000-of-00001.parquet"
    local = src / m / "pooled" / "resid_post-mean" / "data-00000-of-00001.parquet"
    files = _head(hub, "alice/pooled")
    assert path in files and path in out["uploaded"] and out["again"] == []  # rerun: no upload
    assert _blob(hub, "alice/pooled", path) == local.read_bytes()  # as is
    manifest = json.loads(_blob(hub, "alice/pooled", "lens_cache.json"))
    assert manifest["format_version"] == 2  # older lens_cache: "upgrade", not "unsafe path"
    assert manifest["models"][m]["pooled"] == ["resid_post-mean"]
    entry = next(e for e in manifest["files"] if e["path"] == path)
    assert (entry["size"], entry["sha256"]) == (files[path]["size"], files[path]["sha256"])
    assert (entry["kind"], entry["hook"], entry["pool"]) == ("pooled", "resid_post", "mean")
    card = _blob(hub, "alice/pooled", "README.md").decode()
    assert "## Pooled residuals" in card and f"pooled/{m}/resid_post-mean/data-*" in card
    chain = _commit_chain(hub, "alice/pooled")  # pooled in the data commits, card+manifest last
    assert path in _added(chain[-3], chain[-2])
    assert _added(chain[-2], chain[-1]) == {"README.md", "lens_cache.json", *HOSTED_VIEWER}

    X, columns = load_pooled(src, m, pool="mean", layer=1)
    for where in ("pulled", "only"):  # with the patterns, and alone (no prompt directory)
        assert out[where]["rc"] == 0, out[where]["err"]
        pulled = tmp_path / "work" / where
        X2, columns2 = load_pooled(pulled, m, pool="mean", layer=1)
        assert X2.dtype == np.float32 and np.array_equal(X, X2) and columns2 == columns
    assert not (tmp_path / "work" / "only" / m / "prompts").exists()
    assert (tmp_path / "work" / "pulled" / m / "prompts" / store["hashes"][0]).is_dir()

    name, message = out["absent"]
    assert name == "HubSelectionError" and "python -m lens_cache.pooled -s " in message
    assert "dataset:alice/nopool" not in hub.repos  # refused before any request
    assert out["absent_pull"][0] == "HubSelectionError"


def test_search_and_meta_push_exactly_the_prompts_they_select(hub, store, tmp_path):
    s = str(store["path"])
    out = run_child(
        hub,
        tmp_path,
        code=f"""
        out = {{"search": cli("push", "--repo", "alice/search", "-s", {s!r}, "--search", "cat"),
                "meta": cli("push", "--repo", "alice/meta", "-s", {s!r}, "--meta", "kind=code")}}
        """,
    )
    for repo, wanted in (
        ("search", lambda p: "cat" in p["text"]),
        ("meta", lambda p: p["meta"]["kind"] == "code"),
    ):
        assert out[repo]["rc"] == 0, out[repo]["err"]
        selected = sorted(prompt_hash(p["text"]) for p in PROMPTS if wanted(p))
        assert len(selected) == 1 and _table_hashes(hub, f"alice/{repo}") == selected
        shards = _shard_keys(hub, f"alice/{repo}")
        assert len(shards) == 12 and all(keys == selected for keys in shards.values())


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_push_and_pull_in_a_smaller_dtype(hub, store, tmp_path, dtype):
    """The shards hold the store's tensors rounded to `dtype`; the pull brings back exactly
    those values: patterns widened to float32 npz, residuals in `dtype`."""
    repo, m = f"alice/{dtype}", store["model"]
    args = ["--repo", repo, "--kinds", "patterns", "resid_post"]
    out = run_child(
        hub,
        tmp_path,
        code=f"""
        out = {{"push": cli("push", "-s", {str(store["path"])!r}, "--dtype", {dtype!r}, *{args!r}),
                "pull": cli("pull", "-s", "pulled", *{args!r})}}
        """,
    )
    assert out["push"]["rc"] == 0 and out["pull"]["rc"] == 0, out
    wanted = getattr(torch, dtype)
    shard = load_safetensors(
        _blob(hub, repo, f"tensors/{m}/patterns/layer_02/head_01-00000.safetensors")
    )
    for h in store["hashes"]:
        src = store["path"] / m / "prompts" / h
        pattern = torch.from_numpy(_pattern(store, h, 2, 1))
        assert shard[h].dtype == wanted and torch.equal(shard[h], pattern.to(wanted))
        pulled = read_npz(tmp_path / "pulled" / m / "prompts" / h / "activations.npz")
        expected = read_npz(src / "activations.npz")
        for key, value in expected.items():
            rounded = torch.from_numpy(value).to(wanted).float().numpy()
            assert pulled[key].dtype == np.float32 and np.array_equal(pulled[key], rounded), key
        resid = read_safetensors(tmp_path / "pulled" / m / "prompts" / h / "residuals.safetensors")
        for key, value in read_safetensors(src / "residuals.safetensors").items():
            assert resid[key].dtype == wanted and torch.equal(resid[key], value.to(wanted)), key


def test_push_to_a_revision_and_pull_it(hub, store, tmp_path):
    """A push to a branch leaves main as it was; a pull of the branch gets the branch's
    selection, a pull without --revision gets main's."""
    s, m = str(store["path"]), store["model"]
    out = run_child(
        hub,
        tmp_path,
        code=f"""
        out = {{"main": cli("push", "--repo", "alice/rev", "-s", {s!r})}}
        out["dev"] = cli("push", "--repo", "alice/rev", "-s", {s!r}, "--revision", "dev",
                         "--meta", "kind=repeat", "--layers", "2")
        out["pull_dev"] = cli("pull", "--repo", "alice/rev", "--revision", "dev", "-s", "dev")
        out["pull_main"] = cli("pull", "--repo", "alice/rev", "-s", "main")
        """,
    )
    for step in ("main", "dev", "pull_dev", "pull_main"):
        assert out[step]["rc"] == 0, out[step]["err"]
    repeat = [prompt_hash(p["text"]) for p in PROMPTS if p["meta"]["kind"] == "repeat"]
    assert _table_hashes(hub, "alice/rev", "dev") == repeat
    dev_shards = _shard_keys(hub, "alice/rev", "dev")
    assert {p.split("/")[3] for p in dev_shards} == {"layer_02"}
    assert all(keys == repeat for keys in dev_shards.values())
    assert _table_hashes(hub, "alice/rev") == store["hashes"]  # main untouched
    assert len(_shard_keys(hub, "alice/rev")) == 12

    dev = tmp_path / "dev" / m / "prompts"
    assert [p.name for p in dev.iterdir()] == repeat
    assert list(read_npz(dev / repeat[0] / "activations.npz")) == ["blocks.2.attn.hook_pattern"]
    main = tmp_path / "main" / m / "prompts"
    assert sorted(p.name for p in main.iterdir()) == store["hashes"]
    assert len(read_npz(main / repeat[0] / "activations.npz")) == 3


# --- resume ----------------------------------------------------------------------------------


def test_interrupted_push_resumes_without_resending(store, tmp_path):
    with FlakyHub(tokens=TOKENS).start() as hub:
        hub.fail_after = 1  # the second commit fails
        args = ["push", "--repo", "alice/flaky", "-s", store["path"], "--kinds", "patterns"]
        args += ["resid_post", "--commit-max-bytes", "10000"]
        first = run_child(hub, tmp_path / "first", args, expect_rc=4)  # network: rerun
        err = first.stderr.strip().splitlines()[-1]
        assert err.startswith("error: push of alice/flaky interrupted after ")
        assert err.endswith("Rerun the same command to resume")
        after_first = set(_head(hub, "alice/flaky"))
        assert "lens_cache.json" not in after_first and "README.md" not in after_first
        assert len(after_first) > 1  # the first commit went through
        puts_first = len([e for e in hub.log if e.method == "PUT"])

        n = len(_commit_chain(hub, "alice/flaky"))
        run_child(hub, tmp_path / "again", args)
        chain = _commit_chain(hub, "alice/flaky")
        resent = set().union(*(_added(chain[i - 1], chain[i]) for i in range(n, len(chain))))
        assert not resent & after_first  # nothing already there was committed again
        files = _head(hub, "alice/flaky")
        manifest = json.loads(hub.blobs.get(files["lens_cache.json"]["sha256"]))
        listed = {e["path"] for e in manifest["files"]}
        assert listed == set(files) - {".gitattributes", "lens_cache.json", *HOSTED_VIEWER}
        lfs = {e["sha256"] for e in files.values() if e["lfs"]}
        puts = [e for e in hub.log if e.method == "PUT"]
        assert len(puts) == len(lfs) and puts_first < len(puts)  # each object went up once


# --- errors ----------------------------------------------------------------------------------


def test_named_errors_and_dry_run(hub, store, tmp_path):
    s = str(store["path"])
    out = run_child(
        hub,
        tmp_path,
        token=None,
        code=f"""
        from huggingface_hub import HfApi
        alice = dict(token={ALICE!r})
        api = HfApi(token={ALICE!r})
        api.create_repo("alice/other", repo_type="dataset")
        api.upload_file(path_or_fileobj=b"# hi", path_in_repo="README.md",
                        repo_id="alice/other", repo_type="dataset")

        def push(repo="alice/x", **kw):
            return catch(hub.push_to_hub, repo, {s!r}, **kw)

        out = {{
            "dry": cli("push", "--repo", "alice/dry", "-s", {s!r}, "--dry-run", "--search", "cat"),
            "cli_no_token": cli("push", "--repo", "alice/x", "-s", {s!r}),
            "no_token": push(),
            "bad_token": push(token="nope"),
            "not_owner": push("bob/x", **alice),
            "nothing": push(search="zzz"),
            "bad_head": push(heads="1.9"),
            "bad_layer": push(layers="7"),
            "bad_kind": push(kinds=["resid_pre"]),
            "bad_repo": push("no-slash"),
            "private": hub.push_to_hub("alice/secret", {s!r}, private=True, **alice).commits,
            "private_anon": catch(hub.pull, "alice/secret", "p1"),
            "private_alice": hub.pull("alice/secret", "p2", **alice).prompts,
            "not_lens_cache": catch(hub.pull, "alice/other", "p3"),
            "push_into_other": push("alice/other", **alice),
            "missing": catch(hub.pull, "alice/none", "p4"),
            "heads_no_patterns": push(heads="1.0", kinds=["resid_post"]),
        }}
        fewer = hub.push_to_hub("alice/secret", {s!r}, layers="0", **alice)
        out["fewer"] = [len(fewer.deleted), fewer.commits]
        """,
    )
    dry = out["dry"]
    assert dry["rc"] == 0 and not [e for e in hub.log if "alice/dry" in e.path]  # no request
    lines = dry["out"].strip().splitlines()
    assert lines[-1].startswith("16 files, ") and lines[-1].endswith("(dry run: nothing sent)")
    sizes = {ln.split()[1]: int(ln.split()[0].replace(",", "")) for ln in lines[:-1]}
    assert "lens_cache.json" in sizes and "README.md" in sizes
    assert sum(sizes.values()) == int(lines[-1].split()[2].replace(",", ""))

    cli = out["cli_no_token"]
    assert cli["rc"] == 2 and cli["out"] == ""
    assert cli["err"].startswith("error: no Hugging Face token") and cli["err"].count("\n") == 1
    assert out["no_token"][0] == "HubTokenError" and "HF_TOKEN" in out["no_token"][1]
    assert out["bad_token"][0] == "HubTokenError" and "401" in out["bad_token"][1]
    assert out["not_owner"][0] == "HubPermissionError" and "403" in out["not_owner"][1]
    assert out["nothing"][0] == "NothingSelectedError" and "search=zzz" in out["nothing"][1]
    assert out["bad_head"][0] == out["bad_layer"][0] == "LayerSelectionError"
    assert out["bad_kind"][0] == "HubSelectionError" and "resid_pre" in out["bad_kind"][1]
    assert out["bad_repo"][0] == "HubRepoIdError"
    assert out["private"] == 2 and out["private_alice"] == 3
    assert out["private_anon"][0] == "HubRepoNotFoundError" and "private" in out["private_anon"][1]
    assert out["not_lens_cache"][0] == "NotALensCacheDatasetError"
    assert out["push_into_other"][0] == "NotALensCacheDatasetError"
    assert out["missing"][0] == "HubRepoNotFoundError"
    assert out["heads_no_patterns"][0] == "HubSelectionError"
    assert hub.repos["dataset:alice/secret"]["private"] is True
    # pushing a smaller selection again removes our files it no longer lists, in one commit
    assert out["fewer"] == [8, 1]
    shards = sorted(p for p in _head(hub, "alice/secret") if p.startswith("tensors/"))
    assert len(shards) == 4 and all("/layer_00/" in p for p in shards)
    assert not (tmp_path / "p1").exists() and not (tmp_path / "p3").exists()


def test_malicious_repos_are_refused_before_writing(hub, pushed, tmp_path):
    out = run_child(
        hub,
        tmp_path / "work",
        code=f"""
        import hashlib
        import pyarrow as pa, pyarrow.parquet as pq
        from huggingface_hub import HfApi, CommitOperationAdd, hf_hub_download
        api = HfApi()

        def get(path):
            return hf_hub_download({pushed!r}, path, repo_type="dataset")

        manifest = json.load(open(get("lens_cache.json")))
        table = pq.read_table(get("data/prompts-00000-of-00001.parquet"))
        models = Path(get("data/models-00000-of-00001.parquet")).read_bytes()

        def craft(name, edit, files=None):
            m = json.loads(json.dumps(manifest))
            edit(m)
            ops = [CommitOperationAdd("lens_cache.json", json.dumps(m).encode())]
            ops += [CommitOperationAdd(path, data) for path, data in (files or {{}}).items()]
            api.create_repo("alice/" + name, repo_type="dataset")
            api.create_commit("alice/" + name, ops, commit_message="x", repo_type="dataset")
            return catch(hub.pull, "alice/" + name, {str(tmp_path / "dest")!r})

        def add_file(path):
            return lambda m: m["files"].append({{"path": path, "size": 1, "sha256": "0" * 64}})

        def rename_model(m):
            m["models"]["../x"] = m["models"].popitem()[1]

        def pooled_elsewhere(m):  # a pooled file whose fields say another folder
            model = next(iter(m["models"]))
            path = f"pooled/{{model}}/resid_post-mean/data-00000-of-00001.parquet"
            fields = dict(model=model, kind="pooled", hook="../../x", pool="mean")
            m["files"].append({{"path": path, "size": 1, "sha256": "0" * 64, **fields}})

        rows = table.to_pylist()
        rows[0]["hash"] = "../../../../../pwned"
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), buf)
        data = buf.getvalue()

        def point_at_table(m):
            for e in m["files"]:
                if e["path"] == "data/prompts-00000-of-00001.parquet":
                    e.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())

        tables = {{"data/prompts-00000-of-00001.parquet": data,
                   "data/models-00000-of-00001.parquet": models}}
        out = {{
            "dotdot": craft("evil1", add_file("../evil")),
            "nested": craft("evil2", add_file("tensors/../../x.safetensors")),
            "absolute": craft("evil3", add_file("/etc/evil")),
            "model": craft("evil4", rename_model),
            "pooled": craft("evil6", pooled_elsewhere),
            "hash": craft("evil5", point_at_table, tables),
        }}
        """,
    )
    for case, (name, message) in out.items():
        assert name == "UnsafeRepoPathError", (case, message)
    assert "'../evil'" in out["dotdot"][1] and "escape" in out["dotdot"][1]
    assert "pwned" in out["hash"][1]
    assert not (tmp_path / "dest").exists()  # refused before anything was written
    assert not list(tmp_path.rglob("*pwned*")) and not (tmp_path / "evil").exists()


def test_pull_refuses_a_shard_whose_bytes_differ_from_the_manifest(hub, store, pushed, tmp_path):
    """A copy of `alice/full` with one byte of one shard's tensor data changed (still a valid
    safetensors file, still listed with the old sha256): the pull names the file, exits 2 and
    writes nothing."""
    m = store["model"]
    shard = f"tensors/{m}/patterns/layer_01/head_02-00000.safetensors"
    out = run_child(
        hub,
        tmp_path / "work",
        code=f"""
        from huggingface_hub import CommitOperationAdd, HfApi, snapshot_download
        api = HfApi()
        src = Path(snapshot_download({pushed!r}, repo_type="dataset"))
        ops = []
        for f in sorted(p for p in src.rglob("*") if p.is_file()):
            data = f.read_bytes()
            if f.relative_to(src).as_posix() == {shard!r}:
                data = data[:-5] + bytes([data[-5] ^ 1]) + data[-4:]
            ops.append(CommitOperationAdd(f.relative_to(src).as_posix(), data))
        api.create_repo("alice/tampered", repo_type="dataset")
        api.create_commit("alice/tampered", ops, commit_message="x", repo_type="dataset")
        out = {{"cli": cli("pull", "--repo", "alice/tampered", "-s", "dest"),
                "api": catch(hub.pull, "alice/tampered", "dest2", layers="1", kinds=["patterns"])}}
        """,
    )
    tampered, original = _blob(hub, "alice/tampered", shard), _blob(hub, pushed, shard)
    assert len(tampered) == len(original) and tampered != original
    assert load_safetensors(tampered).keys() == load_safetensors(original).keys()
    message = f"alice/tampered: {shard} does not match its manifest sha256"
    assert out["cli"]["rc"] == 2 and out["cli"]["err"] == f"error: {message}\n"
    assert out["api"] == ["HubIntegrityError", message]
    assert not (tmp_path / "work" / "dest").exists() and not (tmp_path / "work" / "dest2").exists()


# --- layout units (no network) ---------------------------------------------------------------


def test_parsers():
    assert parse_heads("5.1,5.3,-1.0", n_layers=6, n_heads=4) == {5: (0, 1, 3)}
    assert parse_heads([(0, 2), "0.1"], 2, 4) == {0: (1, 2)}
    with pytest.raises(ValueError, match="LAYER.HEAD"):
        parse_heads("5", 6, 4)
    with pytest.raises(ValueError, match="heads 0-3"):
        parse_heads("1.4", 6, 4)
    assert parse_size("500MB") == 500 * 10**6 and parse_size("2GiB") == 2 * 2**30
    assert parse_size(1024) == 1024
    with pytest.raises(ValueError):
        parse_size("-3")
    assert group_prompts([5, 5, 5, 20, 1], 10) == [
        range(0, 2),
        range(2, 3),
        range(3, 4),
        range(4, 5),
    ]


@pytest.mark.parametrize(
    "path",
    [
        "../evil",
        "/abs",
        "tensors/../x.safetensors",
        "a\\b",
        "data//x",
        "C:/x",
        "notes.txt",
        "pooled/m/../resid_post-mean/data-00000-of-00001.parquet",
        "pooled/m/resid_post-evil/data-00000-of-00001.parquet",
        "pooled/m/resid_post-mean/other.parquet",
        "pooled/m/data-00000-of-00001.parquet",
    ],
)
def test_check_repo_path_refuses(path):
    with pytest.raises(UnsafeRepoPathError):
        check_repo_path(path)


def test_pooled_repo_paths():
    path = "pooled/m/resid_post-mean_real/data-00001-of-00002.parquet"
    assert check_repo_path(path) == path and is_layout_path(path)
    assert pooled_files_complete([f"data-0000{i}-of-00002.parquet" for i in (0, 1)])
    assert not pooled_files_complete(["data-00001-of-00002.parquet"])
    assert make_selection(kinds=["pooled", "patterns"]).kinds == ("patterns", "pooled")
    with pytest.raises(ValueError, match="--layers"):  # pooled goes whole: nothing to select
        make_selection(layers="0", kinds=["pooled"])


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_streamed_shards_are_standard_safetensors_and_deterministic(dtype, tmp_path):
    torch.manual_seed(0)
    records = [
        {"hash": prompt_hash(str(i)), "n_tokens": t, "text": str(i)}
        for i, t in enumerate([3, 5, 2])
    ]
    records.sort(key=lambda r: r["hash"])
    plan = ModelPlan(
        "m", {"n_layers": 1, "n_heads": 2, "d_model": 4}, records, {"patterns": {0: (1,)}}
    )
    (shard,) = plan_shards(plan, dtype, 10**6)
    arrays = {r["hash"]: torch.rand(r["n_tokens"], r["n_tokens"]) for r in records}
    built = []
    for name in ("a", "b"):
        w = ShardWriter(shard, tmp_path / name / shard.path)
        for key in shard.hashes:
            w.add(key, arrays[key].numpy())
        built.append(w.close())
    assert built[0].sha256 == built[1].sha256 and built[0].size == shard.size
    loaded = read_safetensors(built[0].local)
    reader = ShardReader(built[0].local, dtype, shard.path)
    for key, value in arrays.items():
        expected = value.to(getattr(torch, dtype))
        assert torch.equal(loaded[key], expected)
        assert torch.equal(reader.get(key, tuple(value.shape)), expected)
    with pytest.raises(HubIntegrityError):
        reader.get(records[0]["hash"], (9, 9))
    assert Selection().describe()["kinds"] is None


def test_prompts_table_holds_each_record_once_sorted_by_model_then_hash():
    import pyarrow.parquet as pq

    cfg = {"n_layers": 1, "n_heads": 2, "d_model": 4}
    records = [
        {"hash": prompt_hash(t), "n_tokens": 2, "text": t, "tokens": ["<s>", t], "meta": {"k": 1}}
        for t in ("x", "y")
    ]
    records.sort(key=lambda r: r["hash"])  # as a ModelPlan holds them
    plans = [ModelPlan(name, cfg, records, {}) for name in ("m2", "m1")]
    table = pq.read_table(io.BytesIO(prompts_table(plans))).to_pylist()
    assert [(r["model"], r["hash"]) for r in table] == [
        (m, r["hash"]) for m in ("m1", "m2") for r in records
    ]
    row = next(r for r in table if r["hash"] == prompt_hash("x"))
    assert row["text"] == "x" and row["tokens"] == ["<s>", "x"] and row["n_tokens"] == 2
    assert json.loads(row["meta"]) == {"k": 1} and row["token_ids"] == []
    assert prompts_table(plans[::-1]) == prompts_table(plans)  # bytes independent of order
