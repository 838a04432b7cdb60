"""Tests for tests/hubserver.py, driven by the real huggingface_hub client and datasets.

huggingface_hub and datasets read HF_ENDPOINT, HF_HUB_DISABLE_XET, HF_HUB_OFFLINE and the cache
paths once, at import time, and tests/conftest.py imports them early (through lens_cache and
transformer_lens) with HF_HUB_OFFLINE=1. So the client side of every test runs in a fresh
Python subprocess whose environment points at this test's server: the ``scenario_*`` functions
below run there and return plain JSON; the pytest side starts and stops the server, injects
faults, reads the request log and makes the assertions.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.helpers import REPO
from tests.hubserver import ALICE, BOB, TOKENS, HubServer, client_env

RESULT_MARK = "@@hubserver-result@@"


# ---------------------------------------------------------------------------------- fixtures
@pytest.fixture
def hub():
    with HubServer(tokens=TOKENS).start() as server:
        yield server


@pytest.fixture
def client(hub, tmp_path) -> Callable[..., Any]:
    """``client("name", *args, server=...)`` runs ``scenario_name(workdir, *args)`` in a child."""
    runs = itertools.count()

    def run(scenario: str, *args: Any, server: HubServer | None = None) -> Any:
        work = tmp_path / f"client{next(runs)}"
        work.mkdir()
        env = client_env((server or hub).url, work)
        code = (
            f"import sys; sys.path.insert(0, {str(REPO)!r}); "
            "from tests import test_hubserver; test_hubserver._child_main()"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code, scenario, json.dumps([str(work), *args])],
            env=env,
            cwd=work,
            capture_output=True,
            text=True,
            timeout=180,
        )
        if proc.returncode != 0:
            rc, tail = proc.returncode, proc.stderr[-6000:]
            pytest.fail(f"client scenario {scenario!r} failed (rc={rc}):\n{tail}")
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_MARK)]
        assert lines, f"scenario {scenario!r} printed no result:\n{proc.stdout[-2000:]}"
        return json.loads(lines[-1][len(RESULT_MARK) :])

    return run


def _entries(hub: HubServer, method: str, needle: str) -> list:
    return [e for e in hub.log if e.method == method and needle in e.path]


# ---------------------------------------------------------------------------------- child side
def _child_main() -> None:
    scenario, args = sys.argv[1], json.loads(sys.argv[2])
    assert os.environ.get("HF_HUB_OFFLINE") is None
    result = globals()[f"scenario_{scenario}"](Path(args[0]), *args[1:])
    print(RESULT_MARK + json.dumps(result), flush=True)


def _error(fn: Callable[[], Any]) -> dict | None:
    """The client's HTTP error raised by ``fn`` as {"type", "status"}; None if it succeeded."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        fn()
    except HfHubHTTPError as e:
        return {"type": type(e).__name__, "status": e.response.status_code}
    return None


def _api(token: str | bool = ALICE):
    from huggingface_hub import HfApi

    return HfApi(token=token)


def _local_files(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and ".cache" not in p.relative_to(root).parts
    )


FOLDER = {  # path in repo -> content, written by the children that upload a folder
    "a.txt": b"hello from lens_cache\n",
    "weights.safetensors": b"\x00\x01binary" * 2500,  # 20 KB and binary -> LFS
    "nested/deep/b.txt": b"nested text\n",
    "nested/c.json": b'{"layer": 3}\n',
}


def _write_folder(work: Path) -> Path:
    folder = work / "upload"
    for rel, data in FOLDER.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return folder


def scenario_create(work: Path) -> dict:
    api = _api()
    public = api.create_repo("alice/public-ds", repo_type="dataset")
    private = api.create_repo("alice/private-ds", repo_type="dataset", private=True)
    again = api.create_repo("alice/public-ds", repo_type="dataset", exist_ok=True)
    conflict = _error(lambda: api.create_repo("alice/public-ds", repo_type="dataset"))
    api.create_repo("alice/public-ds")  # a model of the same name, then deleted again
    api.delete_repo("alice/public-ds")
    return {
        "urls": [[u.repo_id, u.repo_type] for u in (public, private, again)],
        "private": [
            api.repo_info(r, repo_type="dataset").private
            for r in ("alice/public-ds", "alice/private-ds")
        ],
        "conflict": conflict,
        "dataset_exists": api.repo_exists("alice/public-ds", repo_type="dataset"),
        "model_exists": api.repo_exists("alice/public-ds"),
    }


def scenario_upload(work: Path) -> dict:
    from huggingface_hub import hf_hub_download

    api = _api()
    repo = "alice/upload-ds"
    api.create_repo(repo, repo_type="dataset")
    api.upload_folder(folder_path=_write_folder(work), repo_id=repo, repo_type="dataset")
    info = {p.path: p for p in api.get_paths_info(repo, list(FOLDER), repo_type="dataset")}
    return {
        "files": sorted(api.list_repo_files(repo, repo_type="dataset")),
        "lfs": {p: (i.lfs.size if i.lfs else None) for p, i in info.items()},
        "sizes": {p: i.size for p, i in info.items()},
        "tree_nested": [
            [e.path, type(e).__name__]
            for e in api.list_repo_tree(repo, "nested", repo_type="dataset")
        ],
        "downloads_equal": {
            rel: Path(hf_hub_download(repo, rel, repo_type="dataset")).read_bytes() == FOLDER[rel]
            for rel in ("weights.safetensors", "nested/deep/b.txt")
        },
    }


def scenario_snapshot(work: Path) -> dict:
    from huggingface_hub import snapshot_download

    snap = Path(snapshot_download("alice/upload-ds", repo_type="dataset", allow_patterns="*.txt"))
    return {
        "files": _local_files(snap),
        "b_equal": (snap / "nested/deep/b.txt").read_bytes() == FOLDER["nested/deep/b.txt"],
    }


def scenario_commits(work: Path) -> dict:
    import io

    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, hf_hub_download

    api = _api()
    repo = "alice/commit-model"  # a model repo (the default repo_type)
    api.create_repo(repo)
    first = api.repo_info(repo).sha
    (work / "cfg.json").write_text('{"d_model": 64}')
    c1 = api.create_commit(
        repo,
        commit_message="add four",
        operations=[
            CommitOperationAdd("README.md", b"# probe\n"),
            CommitOperationAdd("cfg.json", work / "cfg.json"),
            CommitOperationAdd("attn/layer0.bin", io.BytesIO(b"\x00" * 12_000)),
            CommitOperationAdd("attn/layer1.bin", io.BytesIO(b"\x01" * 12_000)),
        ],
    ).oid
    after_c1 = api.repo_info(repo).sha
    c2 = api.create_commit(
        repo,
        commit_message="drop",
        operations=[
            CommitOperationDelete("cfg.json"),
            CommitOperationDelete("attn/", is_folder=True),
        ],
    ).oid
    stale = _error(
        lambda: api.create_commit(
            repo,
            commit_message="stale",
            parent_commit=c1,
            operations=[CommitOperationAdd("x.txt", b"x")],
        )
    )
    missing = _error(
        lambda: api.create_commit(
            repo, commit_message="bad", operations=[CommitOperationDelete("nope.txt")]
        )
    )
    old_file = Path(hf_hub_download(repo, "attn/layer1.bin", revision=c1[:10])).read_bytes()
    return {
        "shas": [first, c1, after_c1, c2, api.repo_info(repo).sha],
        "files_head": sorted(api.list_repo_files(repo)),
        "files_c1": sorted(api.list_repo_files(repo, revision=c1)),
        "old_file_ok": old_file == b"\x01" * 12_000,
        "commits": [[c.commit_id, c.title] for c in api.list_repo_commits(repo)],
        "branches": [[b.name, b.target_commit] for b in api.list_repo_refs(repo).branches],
        "stale": stale,
        "missing": missing,
    }


def scenario_fs_setup(work: Path, size: int) -> None:
    api = _api()
    api.create_repo("alice/fs-ds", repo_type="dataset")
    data = bytes(range(256)) * (size // 256)
    api.upload_file(
        path_or_fileobj=data,
        path_in_repo="blobs/pattern.bin",
        repo_id="alice/fs-ds",
        repo_type="dataset",
    )


def scenario_fs_read(work: Path, offset: int, length: int) -> dict:
    from huggingface_hub import HfFileSystem

    fs = HfFileSystem(token=ALICE)
    path = "datasets/alice/fs-ds/blobs/pattern.bin"
    with fs.open(path, "rb", block_size=1024) as f:
        f.seek(offset)
        chunk = f.read(length)
    return {
        "chunk": list(chunk),
        "size": fs.info(path)["size"],
        "ls": fs.ls("datasets/alice/fs-ds", detail=False),
    }


def scenario_load_dataset(work: Path, rows: list) -> dict:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    api = _api()
    repo = "alice/prompts-ds"
    folder = work / "ds"
    (folder / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "data" / "prompts-00000-of-00001.parquet")
    (folder / "README.md").write_text(
        '---\nconfigs:\n- config_name: prompts\n  data_files: "data/prompts-*.parquet"\n'
        "  default: true\n---\n\n# Prompts\n"
    )
    api.create_repo(repo, repo_type="dataset")
    api.upload_folder(folder_path=folder, repo_id=repo, repo_type="dataset")
    ds = datasets.load_dataset(repo)
    return {
        "splits": list(ds),
        "rows": ds["train"].to_list(),
        "config": ds["train"].info.config_name,
    }


def scenario_push_to_hub(work: Path) -> dict:
    import datasets

    for name, n in (("prompts", 10), ("other", 3)):
        ds = datasets.Dataset.from_list([{"i": i, "text": f"{name}-{i}"} for i in range(n)])
        ds.push_to_hub("alice/pushed", config_name=name, token=ALICE)
    return {
        "files": sorted(_api().list_repo_files("alice/pushed", repo_type="dataset")),
        "prompts": list(datasets.load_dataset("alice/pushed", "prompts", split="train")["text"]),
        "other": list(datasets.load_dataset("alice/pushed", "other", split="train")["text"]),
    }


def scenario_auth(work: Path) -> dict:
    from huggingface_hub import hf_hub_download

    alice, anon, bob = _api(ALICE), _api(False), _api(BOB)
    repo, secret = "alice/guarded-ds", "alice/secret-ds"
    alice.create_repo(repo, repo_type="dataset")
    upload = dict(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo, repo_type="dataset")
    out = {
        "anon_write": _error(lambda: anon.upload_file(**upload)),
        "bob_write": _error(lambda: bob.upload_file(**upload)),
        "bob_create_in_alice": _error(lambda: bob.create_repo("alice/bobs", repo_type="dataset")),
        "bad_token_read": _error(lambda: _api("not-a-token").repo_info(repo, repo_type="dataset")),
        "files_after": alice.list_repo_files(repo, repo_type="dataset"),
    }
    alice.create_repo(secret, repo_type="dataset", private=True)
    alice.upload_file(
        path_or_fileobj=b"s3cr3t", path_in_repo="s.txt", repo_id=secret, repo_type="dataset"
    )
    out["anon_info"] = _error(lambda: anon.repo_info(secret, repo_type="dataset"))
    out["bob_info"] = _error(lambda: bob.repo_info(secret, repo_type="dataset"))
    out["anon_download"] = _error(
        lambda: hf_hub_download(secret, "s.txt", repo_type="dataset", token=False)
    )
    out["alice_download"] = Path(
        hf_hub_download(secret, "s.txt", repo_type="dataset", token=ALICE)
    ).read_text()
    return out


def scenario_flaky(work: Path) -> dict:
    from huggingface_hub import hf_hub_download

    api, repo = _api(), "alice/flaky-ds"
    api.create_repo(repo, repo_type="dataset")  # the server fails the next commit (set by the test)
    before = api.repo_info(repo, repo_type="dataset").sha
    folder = _write_folder(work)
    first = _error(lambda: api.upload_folder(folder_path=folder, repo_id=repo, repo_type="dataset"))
    between = {
        "sha_same": api.repo_info(repo, repo_type="dataset").sha == before,
        "files": api.list_repo_files(repo, repo_type="dataset"),
    }
    api.upload_folder(folder_path=folder, repo_id=repo, repo_type="dataset")
    got = Path(hf_hub_download(repo, "weights.safetensors", repo_type="dataset")).read_bytes()
    return {
        "first": first,
        "between": between,
        "files": sorted(api.list_repo_files(repo, repo_type="dataset")),
        "weights_ok": got == FOLDER["weights.safetensors"],
    }


def scenario_persist_write(work: Path) -> str:
    api = _api()
    api.create_repo("alice/kept", repo_type="dataset")
    return api.upload_file(
        path_or_fileobj=FOLDER["weights.safetensors"],
        path_in_repo="k.bin",
        repo_id="alice/kept",
        repo_type="dataset",
    ).oid


def scenario_persist_read(work: Path) -> dict:
    from huggingface_hub import hf_hub_download

    path = hf_hub_download("alice/kept", "k.bin", repo_type="dataset")
    return {
        "sha": _api().repo_info("alice/kept", repo_type="dataset").sha,
        "ok": Path(path).read_bytes() == FOLDER["weights.safetensors"],
    }


# ---------------------------------------------------------------------------------- tests
def test_create_repo_private_public_and_conflict(hub, client):
    out = client("create")
    assert out["urls"] == [
        ["alice/public-ds", "dataset"],
        ["alice/private-ds", "dataset"],
        ["alice/public-ds", "dataset"],
    ]
    assert out["private"] == [False, True]
    assert out["conflict"] == {"type": "HfHubHTTPError", "status": 409}
    assert out["dataset_exists"] is True and out["model_exists"] is False
    assert [e.status for e in _entries(hub, "POST", "/api/repos/create")] == [
        200,
        200,
        409,
        409,
        200,
    ]


def test_upload_folder_lfs_download_and_snapshot_patterns(hub, client):
    out = client("upload")
    assert out["files"] == sorted([".gitattributes", *FOLDER])
    assert out["lfs"] == {
        "weights.safetensors": len(FOLDER["weights.safetensors"]),
        "a.txt": None,
        "nested/deep/b.txt": None,
        "nested/c.json": None,
    }
    assert out["sizes"] == {p: len(d) for p, d in FOLDER.items()}
    assert sorted(out["tree_nested"]) == [
        ["nested/c.json", "RepoFile"],
        ["nested/deep", "RepoFolder"],
    ]
    assert out["downloads_equal"] == {"weights.safetensors": True, "nested/deep/b.txt": True}
    # Only the binary file went through LFS: one batch call, one PUT, one verify.
    assert len(_entries(hub, "POST", "/info/lfs/objects/batch")) == 1
    assert len(_entries(hub, "POST", "/__lfs/verify")) == 1
    assert [e.path for e in _entries(hub, "PUT", "/__lfs/")] == [
        f"/__lfs/{hashlib.sha256(FOLDER['weights.safetensors']).hexdigest()}"
    ]

    hub.log.clear()
    snap = client("snapshot")
    assert snap == {"files": ["a.txt", "nested/deep/b.txt"], "b_equal": True}
    fetched = sorted(
        e.path.split("/resolve/", 1)[1].split("/", 1)[1] for e in _entries(hub, "GET", "/resolve/")
    )
    assert fetched == ["a.txt", "nested/deep/b.txt"]


def test_create_commit_add_then_delete(hub, client):
    out = client("commits")
    first, c1, after_c1, c2, head = out["shas"]
    assert len({first, c1, c2}) == 3 and after_c1 == c1 and head == c2
    assert out["files_head"] == [".gitattributes", "README.md"]
    assert out["files_c1"] == [
        ".gitattributes",
        "README.md",
        "attn/layer0.bin",
        "attn/layer1.bin",
        "cfg.json",
    ]
    assert out["old_file_ok"] is True  # old snapshots stay readable by (abbreviated) sha
    assert out["commits"] == [[c2, "drop"], [c1, "add four"], [first, "initial commit"]]
    assert out["branches"] == [["main", c2]]
    assert out["stale"] == {"type": "HfHubHTTPError", "status": 412}
    assert out["missing"] == {"type": "RemoteEntryNotFoundError", "status": 404}
    assert [e.status for e in _entries(hub, "POST", "/commit/")] == [200, 200, 412, 404]


def test_hffilesystem_range_read(hub, client):
    size, offset, length = 51_200, 40_000, 100
    client("fs_setup", size)
    hub.log.clear()
    out = client("fs_read", offset, length)
    data = bytes(range(256)) * (size // 256)
    assert bytes(out["chunk"]) == data[offset : offset + length]
    assert out["size"] == size
    assert sorted(out["ls"]) == [
        "datasets/alice/fs-ds/.gitattributes",
        "datasets/alice/fs-ds/blobs",
    ]
    gets = _entries(hub, "GET", "/datasets/alice/fs-ds/resolve/")
    assert gets and all("range" in e.headers and e.status == 206 for e in gets)
    assert gets[0].headers["range"].startswith(f"bytes={offset}-")


def test_load_dataset_from_card_configs(hub, client):
    rows = [{"prompt": f"The capital of country {i} is", "n_tokens": i + 5} for i in range(7)]
    out = client("load_dataset", rows)
    assert out == {
        "splits": ["train"],
        "rows": rows,
        "config": "prompts",
    }  # the card's configs: block was used
    assert _entries(hub, "GET", "/datasets/alice/prompts-ds/resolve/main/README.md")


def test_datasets_push_to_hub_two_configs(hub, client):
    out = client("push_to_hub")
    assert out["files"] == [
        ".gitattributes",
        "README.md",
        "other/train-00000-of-00001.parquet",
        "prompts/train-00000-of-00001.parquet",
    ]
    assert out["prompts"] == [f"prompts-{i}" for i in range(10)]
    assert out["other"] == [f"other-{i}" for i in range(3)]


def test_auth_errors_and_private_repos(hub, client):
    out = client("auth")
    assert out["anon_write"] == {"type": "HfHubHTTPError", "status": 401}
    assert out["bob_write"] == {"type": "HfHubHTTPError", "status": 403}
    assert out["bob_create_in_alice"] == {"type": "HfHubHTTPError", "status": 403}
    assert out["bad_token_read"]["status"] == 401
    assert out["files_after"] == [".gitattributes"]  # nothing was written
    not_found = {"type": "RepositoryNotFoundError", "status": 404}
    assert out["anon_info"] == out["bob_info"] == out["anon_download"] == not_found
    assert out["alice_download"] == "s3cr3t"


def test_failed_commit_applies_nothing_and_retry_resumes(hub, client):
    hub.fail_next_commits(1)
    out = client("flaky")
    assert out["first"] == {"type": "HfHubHTTPError", "status": 500}
    assert out["between"] == {"sha_same": True, "files": [".gitattributes"]}
    assert out["files"] == sorted([".gitattributes", *FOLDER]) and out["weights_ok"] is True
    assert [e.status for e in _entries(hub, "POST", "/commit/")] == [500, 200]
    assert hub.requests.count(("POST", "/api/datasets/alice/flaky-ds/commit/main")) == 2
    assert len(_entries(hub, "PUT", "/__lfs/")) == 1  # the LFS object survived the failed commit


def test_state_persists_under_root(client, tmp_path):
    root = tmp_path / "hubroot"
    with HubServer(root=root, tokens=TOKENS).start() as first:
        sha = client("persist_write", server=first)
    with HubServer(root=root, tokens=TOKENS) as second:  # __enter__ starts it, on a new port
        assert client("persist_read", server=second) == {"sha": sha, "ok": True}
