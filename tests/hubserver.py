"""A tiny, offline, Hugging Face Hub-compatible HTTP server for tests.

Stdlib only (``http.server`` + ``threading``). It speaks the subset of the Hub API that the
real ``huggingface_hub`` client (tested with 2.4.0; written to also suit 0.36/1.x) and
``datasets.load_dataset`` use, so tests can push and pull repos with the real client:

* ``GET  /api/whoami-v2``, ``POST /api/validate-yaml``
* ``POST /api/repos/create`` (409 if it exists), ``DELETE /api/repos/delete``
* ``GET  /api/{models|datasets|spaces}/{ns}/{name}[/revision/{rev}]`` (repo info + siblings)
* ``PUT  /api/{type}s/{ns}/{name}/settings`` (private / visibility)
* ``GET  /api/{type}s/{ns}/{name}/tree/{rev}[/{path}]?recursive=&expand=``
* ``POST /api/{type}s/{ns}/{name}/paths-info/{rev}`` (form or JSON body)
* ``GET  /api/{type}s/{ns}/{name}/commits/{rev}`` and ``.../refs``
* ``POST /api/{type}s/{ns}/{name}/preupload/{rev}``: ``uploadMode`` is ``lfs`` for large files,
  binary samples (NUL byte) and the usual LFS suffixes, else ``regular``
* ``POST /api/{type}s/{ns}/{name}/commit/{rev}``: NDJSON ``header`` / ``file`` (base64) /
  ``lfsFile`` (oid) / ``deletedFile`` / ``deletedFolder``; ``parentCommit`` is honoured
* ``POST /[datasets/|spaces/]{ns}/{name}.git/info/lfs/objects/batch``: "basic" transfer whose
  ``upload`` action is ``PUT /__lfs/{oid}`` and ``verify`` action is ``POST /__lfs/verify``
* ``HEAD|GET /[datasets/|spaces/]{ns}/{name}/resolve/{rev}/{path}``: ``X-Repo-Commit``,
  ``ETag``, ``X-Linked-Etag``, ``X-Linked-Size``, single ``Range`` -> 206 (416 if unsatisfiable)
* CORS as on the Hub: every answer carries ``Access-Control-Allow-Origin: *`` and exposes
  ``Content-Range``, ``Content-Length``, ``Accept-Ranges``, ``ETag`` and ``X-Repo-Commit``;
  ``OPTIONS`` (a browser's preflight) answers 204 with the methods and headers allowed
* static Spaces: a Space created with ``space_sdk="static"`` is served as a site from its own
  host, ``http://{ns}-{name}.static.localhost:{port}/{path}`` (the Hub's
  ``{ns}-{name}.static.hf.space``; ``/`` is ``index.html``); ``GET /spaces/{ns}/{name}`` is the
  Hub's page around it (an iframe). ``static_url(repo_id)`` gives a Space's address.

Not supported: pull requests (``create_pr``), tags, Xet storage (set ``HF_HUB_DISABLE_XET=1``),
multipart LFS, pagination (everything comes back in one page), listing/searching repos.

Model: each repo has immutable commits (a flat ``{path: entry}`` snapshot each) and branches
(``main`` at least); a revision is a branch name or a full/abbreviated commit sha. File contents
are content-addressed by sha256, in memory or under ``root/blobs`` (with the repo metadata in
``root/state.json``, so a server restarted on the same root sees the same repos).

Auth: ``Authorization: Bearer <token>`` mapped through ``tokens`` to a user name. An unknown token
is 401 everywhere; writes need a token (401) whose user owns the repo namespace (403). Private
repos are hidden (404 ``RepoNotFound``) from everybody but their owner, like on the Hub.

Test hooks: ``fail_next_commits(n, status)`` and ``requests`` / ``log`` (every request seen).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".ckpt",
    ".h5",
    ".npy",
    ".npz",
    ".pkl",
    ".parquet",
    ".arrow",
    ".zip",
    ".gz",
    ".tar",
    ".zst",
    ".msgpack",
    ".onnx",
)
GITATTRIBUTES = "".join(
    f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in LFS_SUFFIXES
).encode()
TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
NOT_FOUND = "EntryNotFound"
# The test accounts: token -> user name. ALICE may write to alice/*, BOB only read.
ALICE, BOB = "test-token", "bob-token"
TOKENS = {ALICE: "alice", BOB: "bob"}


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, **extra: Any):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class LogEntry:
    method: str
    path: str  # percent-decoded, without the query string
    query: str
    status: int
    headers: dict[str, str]


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    return Response(status, json.dumps(obj).encode(), hdrs)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def _git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    spec = "version https://git-lfs.github.com/spec/v1"
    return f"{spec}\noid sha256:{sha256}\nsize {size}\n".encode()


def _is_private(req: dict) -> bool:  # 1.x/2.x send "visibility", 0.x sends "private"
    return req.get("visibility", "private" if req.get("private") else "public") != "public"


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


class _Blobs:
    """Content-addressed storage (sha256 -> bytes), on disk when a root is given."""

    def __init__(self, root: Path | None):
        self.dir = root / "blobs" if root else None
        self.mem: dict[str, bytes] = {}
        if self.dir:
            self.dir.mkdir(parents=True, exist_ok=True)

    def put(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        if self.dir is None:
            self.mem[sha] = data
        elif not (self.dir / sha).exists():
            tmp = self.dir / f"{sha}.{threading.get_ident()}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, self.dir / sha)
        return sha

    def has(self, sha: str) -> bool:
        return sha in self.mem if self.dir is None else (self.dir / sha).is_file()

    def get(self, sha: str) -> bytes:
        return self.mem[sha] if self.dir is None else (self.dir / sha).read_bytes()


class HubServer:
    """In-process Hub. ``with HubServer().start() as hub: ... hub.url ...``"""

    def __init__(
        self,
        root: Path | None = None,
        tokens: dict[str, str] | None = None,
        *,
        lfs_threshold: int = 10 * 1024 * 1024,
    ):
        self.root = Path(root) if root is not None else None
        self.tokens = dict(tokens) if tokens is not None else {"test-token": "alice"}
        self.lfs_threshold = lfs_threshold
        self.blobs = _Blobs(self.root)
        self.repos: dict[str, dict] = {}  # "dataset:ns/name" -> repo dict (JSON-serialisable)
        self.log: list[LogEntry] = []
        self._lock = threading.RLock()
        self._fail_commits: list[int] = []
        self._pending_lfs: set[str] = set()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        if self.root and (self.root / "state.json").is_file():
            self.repos = json.loads((self.root / "state.json").read_text())

    # ------------------------------------------------------------------ lifecycle / hooks
    def start(self) -> "HubServer":
        handler = type("_BoundHandler", (_Handler,), {"hub": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="hubserver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=10)
            self._httpd = self._thread = None

    def __enter__(self) -> "HubServer":
        return self if self._httpd else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def requests(self) -> list[tuple[str, str]]:
        return [(e.method, e.path) for e in self.log]

    def fail_next_commits(self, n: int = 1, status: int = 500) -> None:
        """Make the next ``n`` commit POSTs fail with ``status`` without applying anything."""
        with self._lock:
            self._fail_commits.extend([status] * n)

    # ------------------------------------------------------------------ state helpers
    def _save(self) -> None:
        if self.root:
            tmp = self.root / "state.json.tmp"
            tmp.write_text(json.dumps(self.repos))
            os.replace(tmp, self.root / "state.json")

    def _user(self, headers) -> str | None:
        auth = headers.get("Authorization") or ""
        if not auth:
            return None
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else auth.strip()
        if token not in self.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.tokens[token]

    def _repo(self, rtype: str, repo_id: str, user: str | None, write: bool = False) -> dict:
        repo = self.repos.get(f"{rtype}:{repo_id}")
        if repo is None or (repo["private"] and user != repo["owner"]):
            raise HubError(404, "Repository not found", "RepoNotFound")
        if write and user is None:
            raise HubError(401, "You must be authenticated to write to this repo")
        if write and user != repo["owner"]:
            raise HubError(403, f"You don't have the rights to write to {repo_id}")
        return repo

    def _resolve(self, repo: dict, rev: str) -> dict:
        rev = rev[len("refs/heads/") :] if rev.startswith("refs/heads/") else rev
        if rev in repo["branches"]:
            return repo["commits"][repo["branches"][rev]]
        if re.fullmatch(r"[0-9a-f]{7,40}", rev):
            hits = [c for sha, c in repo["commits"].items() if sha.startswith(rev)]
            if len(hits) == 1:
                return hits[0]
        raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")

    def _new_commit(
        self,
        repo: dict,
        branch: str,
        parent: str | None,
        files: dict,
        title: str,
        message: str,
        author: str,
    ) -> dict:
        date = _now()
        salt = os.urandom(8).hex()
        seed = json.dumps([parent, sorted(files.items()), title, message, date, salt])
        commit = {
            "id": hashlib.sha1(seed.encode()).hexdigest(),
            "parent": parent,
            "title": title,
            "message": message,
            "author": author,
            "date": date,
            "files": files,
        }
        repo["commits"][commit["id"]] = commit
        repo["branches"][branch] = commit["id"]
        repo["lastModified"] = date
        self._save()
        return commit

    def _entry_json(self, repo: dict, commit: dict, path: str, expand: bool) -> dict:
        files = commit["files"]
        if path in files:
            f = files[path]
            out = {"type": "file", "oid": f["oid"], "size": f["size"], "path": path}
            if f["lfs"]:
                out["lfs"] = {
                    "oid": f["sha256"],
                    "size": f["size"],
                    "pointerSize": len(_lfs_pointer(f["sha256"], f["size"])),
                }
        else:
            inside = sorted(p for p in files if p.startswith(path + "/"))
            tree_oid = hashlib.sha1("".join(f"{p} {files[p]['oid']}\n" for p in inside).encode())
            out = {"type": "directory", "oid": tree_oid.hexdigest(), "size": 0, "path": path}
        if expand:
            last = self._last_commit(repo, commit, path)
            out["lastCommit"] = {"id": last["id"], "title": last["title"], "date": last["date"]}
        return out

    def _last_commit(self, repo: dict, commit: dict, path: str) -> dict:
        """Most recent ancestor of ``commit`` that changed ``path`` (a file or a folder)."""

        def view(c: dict) -> list:
            return [
                (p, e["oid"])
                for p, e in sorted(c["files"].items())
                if p == path or p.startswith(path + "/")
            ]

        current = commit
        while current["parent"] and view(repo["commits"][current["parent"]]) == view(current):
            current = repo["commits"][current["parent"]]
        return current

    @staticmethod
    def _dirs(files: dict) -> set[str]:
        return {"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)}

    # ------------------------------------------------------------------ dispatch
    def handle(self, method: str, raw_path: str, query: dict, headers, body: bytes) -> Response:
        try:
            if method == "PUT" and (m := re.fullmatch(r"/__lfs/([0-9a-f]{64})", raw_path)):
                return self._lfs_put(m[1], body)  # pre-signed-like URL: no auth header is sent
            user = self._user(headers)
            with self._lock:
                return self._route(method, raw_path, query, headers, body, user)
        except HubError as e:
            hdrs = {"X-Error-Message": e.message}
            if e.code:
                hdrs["X-Error-Code"] = e.code
            return _json({"error": e.message, **e.extra}, e.status, hdrs)

    def _route(self, method, raw_path, query, headers, body, user) -> Response:
        space = self._static_space(headers.get("Host") or "")
        if space is not None:
            return self._static_file(space, raw_path, method)
        if m := re.fullmatch(r"/spaces/([^/]+)/([^/]+)/?", raw_path):
            return self._space_page(self._repo("space", f"{m[1]}/{m[2]}", user))
        if raw_path == "/api/whoami-v2" and method == "GET":
            if user is None:
                raise HubError(401, "Invalid credentials in Authorization header")
            token = {"displayName": "test", "role": "write", "createdAt": _now()}
            return _json(
                {
                    "type": "user",
                    "id": user,
                    "name": user,
                    "fullname": user,
                    "email": None,
                    "emailVerified": True,
                    "isPro": False,
                    "orgs": [],
                    "auth": {"type": "access_token", "accessToken": token},
                }
            )
        if raw_path == "/api/validate-yaml" and method == "POST":
            return _json({"errors": [], "warnings": []})
        if raw_path in ("/api/repos/create", "/api/repos/delete"):
            return self._create_or_delete(method, json.loads(body or b"{}"), user)
        if raw_path == "/__lfs/verify" and method == "POST":
            req = json.loads(body)
            if not self.blobs.has(req["oid"]) or len(self.blobs.get(req["oid"])) != req["size"]:
                raise HubError(404, "LFS object not found")
            return _json({"success": True})
        if m := re.fullmatch(r"/api/(models|datasets|spaces)/([^/]+)/([^/]+)(?:/(.*))?", raw_path):
            rtype, repo_id = TYPES[m[1]], f"{unquote(m[2])}/{unquote(m[3])}"
            parts = [unquote(p) for p in (m[4] or "").split("/")] if m[4] else []
            return self._repo_api(method, rtype, repo_id, parts, query, headers, body, user)
        pat = r"/(?:(datasets|spaces)/)?([^/]+)/([^/]+?)"
        m = re.fullmatch(pat + r"\.git/info/lfs/objects/batch", raw_path)
        if method == "POST" and m:
            rtype = TYPES[m[1]] if m[1] else "model"
            self._repo(rtype, f"{unquote(m[2])}/{unquote(m[3])}", user, write=True)
            return self._lfs_batch(json.loads(body))
        m = re.fullmatch(pat + r"/resolve/([^/]+)/(.+)", raw_path)
        if method in ("GET", "HEAD") and m:
            rtype = TYPES[m[1]] if m[1] else "model"
            repo = self._repo(rtype, f"{unquote(m[2])}/{unquote(m[3])}", user)
            return self._resolve_file(repo, unquote(m[4]), unquote(m[5]), headers)
        raise HubError(404, f"Not found: {method} {raw_path}")

    # ------------------------------------------------------------------ repos
    def _create_or_delete(self, method: str, req: dict, user: str | None) -> Response:
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        rtype = req.get("type") or "model"
        ns = req.get("organization") or user
        repo_id = f"{ns}/{req['name']}"
        if ns != user:
            raise HubError(403, f"You don't have the rights to create or delete repos in {ns}")
        key = f"{rtype}:{repo_id}"
        url = f"{self.url}/{PREFIX[rtype]}{repo_id}"
        if method == "DELETE":
            if self.repos.pop(key, None) is None:
                raise HubError(404, "Repository not found", "RepoNotFound")
            self._save()
            return _json({})
        if method != "POST":
            raise HubError(405, "Method not allowed")
        if key in self.repos:
            # The client reads "url" from the 409 body when exist_ok=True.
            raise HubError(409, f"You already created this {rtype} repo: {repo_id}", url=url)
        private = _is_private(req)
        repo = {
            "type": rtype,
            "id": repo_id,
            "owner": ns,
            "private": private,
            "createdAt": _now(),
            "commits": {},
            "branches": {},
            "sdk": req.get("sdk"),
        }
        self.repos[key] = repo
        attrs = {
            "sha256": self.blobs.put(GITATTRIBUTES),
            "size": len(GITATTRIBUTES),
            "lfs": False,
            "oid": _git_blob_oid(GITATTRIBUTES),
        }
        self._new_commit(repo, "main", None, {".gitattributes": attrs}, "initial commit", "", user)
        return _json({"url": url, "name": repo_id, "id": hashlib.sha1(key.encode()).hexdigest()})

    def _repo_api(self, method, rtype, repo_id, parts, query, headers, body, user) -> Response:
        action, args = (parts[0], parts[1:]) if parts else ("", [])
        write = action in ("commit", "preupload", "settings", "branch")
        repo = self._repo(rtype, repo_id, user, write=write)
        rev = args[0] if args else "main"
        if method == "GET" and action in ("", "revision"):
            return self._info(repo, self._resolve(repo, rev), _flag(query.get("blobs")))
        if method == "GET" and action == "tree" and args:
            return self._tree(
                repo,
                self._resolve(repo, rev),
                "/".join(args[1:]).strip("/"),
                _flag(query.get("recursive")),
                _flag(query.get("expand")),
            )
        if method == "POST" and action == "paths-info" and args:
            if headers.get("Content-Type", "").startswith("application/json"):
                req = json.loads(body)
                paths, expand = req.get("paths", []), bool(req.get("expand"))
            else:
                form = parse_qs(body.decode(), keep_blank_values=True)
                paths, expand = form.get("paths", []), _flag((form.get("expand") or [""])[0])
            commit = self._resolve(repo, rev)
            known = set(commit["files"]) | self._dirs(commit["files"])
            paths = [p.strip("/") for p in (paths if isinstance(paths, list) else [paths])]
            return _json([self._entry_json(repo, commit, p, expand) for p in paths if p in known])
        if method == "GET" and action == "commits" and args:
            out, commit = [], self._resolve(repo, rev)
            while commit:
                out.append(
                    {
                        "id": commit["id"],
                        "title": commit["title"],
                        "message": commit["message"],
                        "date": commit["date"],
                        "authors": [{"user": commit["author"], "avatar": None}],
                    }
                )
                commit = repo["commits"].get(commit["parent"]) if commit["parent"] else None
            return _json(out)
        if method == "GET" and action == "refs":
            branches = [
                {"name": b, "ref": f"refs/heads/{b}", "targetCommit": sha}
                for b, sha in sorted(repo["branches"].items())
            ]
            return _json({"branches": branches, "converts": [], "tags": [], "pullRequests": []})
        if method == "POST" and action == "preupload" and args:
            return self._preupload(repo, self._resolve(repo, rev), json.loads(body))
        if method == "POST" and action == "commit" and args:
            return self._commit(repo, rev, query, body, user)
        if method == "PUT" and action == "settings":
            req = json.loads(body or b"{}")
            if "private" in req or "visibility" in req:
                repo["private"] = _is_private(req)
            self._save()
            return _json({"private": repo["private"]})
        if method in ("POST", "DELETE") and action == "branch" and args:
            branch = "/".join(args)
            if method == "DELETE":
                if branch not in repo["branches"] or branch == "main":
                    status = 403 if branch == "main" else 404
                    raise HubError(status, f"Cannot delete branch {branch}")
                del repo["branches"][branch]
            else:
                if branch in repo["branches"]:
                    raise HubError(409, f"Branch {branch} already exists")
                start = json.loads(body or b"{}").get("startingPoint") or "main"
                repo["branches"][branch] = self._resolve(repo, start)["id"]
            self._save()
            return _json({})
        raise HubError(404, f"Not found: {method} /{'/'.join(parts)}")

    def _info(self, repo: dict, commit: dict, blobs: bool) -> Response:
        siblings = []
        for path in sorted(commit["files"]):
            sib: dict[str, Any] = {"rfilename": path}
            if blobs:
                f = commit["files"][path]
                sib.update(size=f["size"], blobId=f["oid"])
                if f["lfs"]:
                    sib["lfs"] = {
                        "size": f["size"],
                        "sha256": f["sha256"],
                        "pointerSize": len(_lfs_pointer(f["sha256"], f["size"])),
                    }
            siblings.append(sib)
        ns = repo["id"].split("/")[0]
        info = {
            "_id": hashlib.sha1(repo["id"].encode()).hexdigest()[:24],
            "id": repo["id"],
            "author": ns,
            "sha": commit["id"],
            "lastModified": commit["date"],
            "createdAt": repo["createdAt"],
            "private": repo["private"],
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(f["size"] for f in commit["files"].values()),
        }
        if repo["type"] == "model":
            info["modelId"] = repo["id"]
        return _json(info)

    def _tree(self, repo: dict, commit: dict, path: str, recursive: bool, expand: bool) -> Response:
        files, dirs = commit["files"], self._dirs(commit["files"])
        if path and path not in dirs:
            raise HubError(404, f"Path {path} not found in tree", "EntryNotFound")
        prefix = f"{path}/" if path else ""
        entries = sorted(
            p
            for p in set(files) | dirs
            if p.startswith(prefix) and (recursive or "/" not in p[len(prefix) :])
        )
        return _json([self._entry_json(repo, commit, p, expand) for p in entries])

    # ------------------------------------------------------------------ uploads
    def _preupload(self, repo: dict, commit: dict, req: dict) -> Response:
        out = []
        for f in req.get("files", []):
            sample = base64.b64decode(f.get("sample") or "")
            lfs = (
                f.get("size", 0) >= self.lfs_threshold
                or b"\0" in sample
                or f["path"].lower().endswith(LFS_SUFFIXES)
            )
            existing = commit["files"].get(f["path"])
            oid = (existing["sha256"] if existing["lfs"] else existing["oid"]) if existing else None
            out.append(
                {
                    "path": f["path"],
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False,
                    "oid": oid,
                }
            )
        return _json({"files": out, "commitOid": commit["id"]})

    def _lfs_batch(self, req: dict) -> Response:
        if req.get("operation") != "upload":
            raise HubError(400, "Only the upload operation is supported")
        objects = []
        for obj in req.get("objects", []):
            oid, size = obj["oid"], obj["size"]
            item: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if not self.blobs.has(oid):
                self._pending_lfs.add(oid)
                item["actions"] = {
                    "upload": {"href": f"{self.url}/__lfs/{oid}", "header": {}},
                    "verify": {"href": f"{self.url}/__lfs/verify", "header": {}},
                }
            objects.append(item)
        body = {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}
        hdrs = {"Content-Type": "application/vnd.git-lfs+json"}
        return Response(200, json.dumps(body).encode(), hdrs)

    def _lfs_put(self, oid: str, body: bytes) -> Response:
        with self._lock:
            if oid not in self._pending_lfs:
                raise HubError(403, "No upload was requested for this object")
        if hashlib.sha256(body).hexdigest() != oid:
            raise HubError(400, "Uploaded content does not match its sha256 oid")
        self.blobs.put(body)
        with self._lock:
            self._pending_lfs.discard(oid)
        return Response(200, b"", {"ETag": f'"{hashlib.md5(body).hexdigest()}"'})

    def _commit(self, repo: dict, rev: str, query: dict, body: bytes, user: str) -> Response:
        if self._fail_commits:
            status = self._fail_commits.pop(0)
            raise HubError(status, f"Injected failure ({status}) for testing")
        if _flag(query.get("create_pr")):
            raise HubError(400, "create_pr is not supported by this test server")
        if rev not in repo["branches"]:
            raise HubError(404, f"Invalid rev id: {rev} (commit to a branch)", "RevisionNotFound")
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header = next((x["value"] for x in lines if x["key"] == "header"), {})
        head = repo["commits"][repo["branches"][rev]]
        parent = header.get("parentCommit")
        if parent and not head["id"].startswith(parent):
            raise HubError(412, f"A commit has happened since {parent}; {rev} is at {head['id']}")
        files = dict(head["files"])
        for item in lines:
            key, val = item["key"], item["value"]
            path = val.get("path", "").strip("/") if isinstance(val, dict) else ""
            if key == "file":
                content = val["content"]
                b64 = val.get("encoding") == "base64"
                data = base64.b64decode(content) if b64 else content.encode()
                files[path] = {
                    "sha256": self.blobs.put(data),
                    "size": len(data),
                    "lfs": False,
                    "oid": _git_blob_oid(data),
                }
            elif key == "lfsFile":
                if not self.blobs.has(val["oid"]):
                    raise HubError(422, f"LFS object {val['oid']} for {path} was never uploaded")
                size = len(self.blobs.get(val["oid"]))
                files[path] = {
                    "sha256": val["oid"],
                    "size": size,
                    "lfs": True,
                    "oid": _git_blob_oid(_lfs_pointer(val["oid"], size)),
                }
            elif key == "deletedFile":
                if files.pop(path, None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", NOT_FOUND)
            elif key == "deletedFolder":
                gone = [p for p in files if p.startswith(path + "/")]
                if not gone:
                    raise HubError(404, f"A folder with this name doesn't exist: {path}", NOT_FOUND)
                for p in gone:
                    del files[p]
            elif key != "header":
                raise HubError(400, f"Unsupported commit operation: {key}")
        commit = self._new_commit(
            repo,
            rev,
            head["id"],
            files,
            header.get("summary") or "update",
            header.get("description") or "",
            user,
        )
        url = f"{self.url}/{PREFIX[repo['type']]}{repo['id']}/commit/{commit['id']}"
        return _json(
            {"success": True, "commitOid": commit["id"], "commitUrl": url, "pullRequestUrl": None}
        )

    # ------------------------------------------------------------------ static Spaces
    def static_url(self, repo_id: str) -> str:
        """A static Space's own address (the Hub's ``https://{ns}-{name}.static.hf.space/``)."""
        port = self._httpd.server_address[1]
        return f"http://{_static_host(repo_id)}.static.localhost:{port}/"

    def _static_space(self, host: str) -> dict | None:
        """The static Space a request's Host names, if it names one (else None: the API)."""
        m = re.fullmatch(r"([a-z0-9-]+)\.static\.localhost(?::\d+)?", host.lower())
        if not m:
            return None
        for repo in self.repos.values():
            if repo["type"] == "space" and _static_host(repo["id"]) == m[1]:
                if repo.get("sdk") != "static" or repo["private"]:
                    break  # the Hub serves no static host for these
                return repo
        raise HubError(404, f"No static Space at {host}", "RepoNotFound")

    def _static_file(self, repo: dict, raw_path: str, method: str) -> Response:
        if method not in ("GET", "HEAD"):
            raise HubError(405, "A static Space is read-only")
        path = unquote(raw_path).strip("/") or "index.html"
        f = self._resolve(repo, "main")["files"].get(path)
        if f is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        ctype = STATIC_TYPES.get(path.rsplit(".", 1)[-1], "application/octet-stream")
        return Response(200, self.blobs.get(f["sha256"]), {"Content-Type": ctype})

    def _space_page(self, repo: dict) -> Response:
        src = self.static_url(repo["id"])
        page = f'<!doctype html><title>{repo["id"]}</title><iframe src="{src}"></iframe>'
        return Response(200, page.encode(), {"Content-Type": "text/html; charset=utf-8"})

    # ------------------------------------------------------------------ downloads
    def _resolve_file(self, repo: dict, rev: str, path: str, headers) -> Response:
        commit = self._resolve(repo, rev)
        f = commit["files"].get(path)
        if f is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        data = self.blobs.get(f["sha256"])
        etag = f["sha256"] if f["lfs"] else f["oid"]
        hdrs = {
            "X-Repo-Commit": commit["id"],
            "ETag": f'"{etag}"',
            "X-Linked-Etag": f'"{etag}"',
            "X-Linked-Size": str(len(data)),
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        rng = (headers.get("Range") or "").strip()
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng)
        if not m or m[1] == m[2] == "":
            return Response(200, data, hdrs)  # no (or multi/unparseable) range: whole file
        size = len(data)
        if m[1] == "":
            start, end = max(0, size - int(m[2])), size - 1
        else:
            start, end = int(m[1]), min(int(m[2]) if m[2] else size - 1, size - 1)
        if start >= size or start > end:
            return Response(416, b"", {**hdrs, "Content-Range": f"bytes */{size}"})
        hdrs["Content-Range"] = f"bytes {start}-{end}/{size}"
        return Response(206, data[start : end + 1], hdrs)


STATIC_TYPES = {
    "html": "text/html; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "json": "application/json",
}
# What a browser reading the Hub from another origin is let see (the Hub's own list, in part).
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": (
        "Content-Range, Content-Length, Accept-Ranges, ETag, X-Repo-Commit, X-Linked-Size, "
        "X-Error-Code, X-Error-Message"
    ),
}
PREFLIGHT_HEADERS = {
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "Range, Authorization, Content-Type",
    "Access-Control-Max-Age": "86400",
}


def _static_host(repo_id: str) -> str:
    """The Hub's host label of a Space: ``ns-name``, lower case, dots and underscores as -."""
    return re.sub(r"[._]", "-", repo_id.replace("/", "-").lower())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: HubServer  # set on the per-server subclass

    def log_message(self, format, *args):  # keep test output quiet
        pass

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        body = self._read_body()
        try:
            if self.command == "OPTIONS":  # a browser's CORS preflight: no route, no auth
                resp = Response(204, b"", dict(PREFLIGHT_HEADERS))
            else:
                resp = self.hub.handle(self.command, parts.path, query, self.headers, body)
        except Exception as e:  # a server bug: report it as a 500 rather than hang the client
            resp = _json({"error": f"hubserver internal error: {e!r}"}, 500)
        logged = {k: v for k, v in self.headers.items() if k.lower() in ("range", "content-type")}
        # Log before answering, so a test that inspects the log right after a call sees it.
        entry = LogEntry(self.command, unquote(parts.path), parts.query, resp.status, logged)
        self.hub.log.append(entry)
        self.send_response(resp.status)
        for k, v in {**CORS_HEADERS, **resp.headers}.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(resp.body)))
        self.end_headers()
        if self.command != "HEAD":  # HEAD: the GET's headers (Content-Length too), never a body
            self.wfile.write(resp.body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_OPTIONS = _dispatch


# What a client process talking to this server must not inherit: offline switches, a real
# endpoint or token, our debug flag.
CLIENT_ENV_DROP = (
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_ENDPOINT",
    "HF_HUB_ETAG_TIMEOUT",
    "HF_TOKEN_PATH",
    "LENS_CACHE_DEBUG",
)


def client_env(url: str, work: Path) -> dict[str, str]:
    """The environment of a client process that talks to the server at `url`, with its Hub and
    datasets caches under `work` (empty: no stored token). huggingface_hub reads these at
    import time, which is why clients run in their own processes."""
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_ENV_DROP}
    env.update(
        HF_ENDPOINT=url,
        HF_HUB_DISABLE_XET="1",
        HF_HOME=str(work / "hf_home"),
        HF_HUB_CACHE=str(work / "hf_cache"),
        HF_DATASETS_CACHE=str(work / "ds_cache"),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_DATASETS_DISABLE_PROGRESS_BARS="1",
    )
    return env
