"""Talking to the Hub through `huggingface_hub`: the token, repo ids, the client's exceptions
turned into named lens_cache errors, a push's repo checks and batched commits, and a pull's
manifest and verified downloads.

The token is never printed or written anywhere by this module.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from lens_cache import formats
from lens_cache.errors import (
    HubIntegrityError,
    HubPermissionError,
    HubRepoIdError,
    HubRepoNotFoundError,
    HubTokenError,
    HubTransferError,
    LensCacheError,
    NotALensCacheDatasetError,
)
from lens_cache.hub._card import manifest_bytes, validate_manifest
from lens_cache.hub._layout import (
    CARD_NAME,
    MANIFEST_NAME,
    MODELS_TABLE,
    PROMPTS_TABLE,
    is_layout_path,
    is_viewer_path,
)
from lens_cache.hub._shards import BuiltFile, build_group, built_file, shard_groups, stage_copy
from lens_cache.progress import log, warn

if TYPE_CHECKING:
    from lens_cache.hub._reports import PushReport

REPO_TYPE = "dataset"


# --- Hub errors ------------------------------------------------------------------------------


def check_repo_id(repo_id: str) -> str:
    from huggingface_hub.utils import validate_repo_id

    try:
        if not isinstance(repo_id, str) or repo_id.count("/") != 1:
            raise ValueError("one '/' expected")
        validate_repo_id(repo_id)
    except ValueError as e:
        raise HubRepoIdError(f"--repo {repo_id!r}: expected ORG/NAME ({e})") from None
    return repo_id


def _network_errors() -> tuple[type, ...]:
    """The client's transport and HTTP errors (httpx-like in 1.x/2.x, requests in 0.x)."""
    from huggingface_hub import errors

    found: list[type] = [errors.HfHubHTTPError]
    found += [c for c in (getattr(errors, "HTTPError", None),) if isinstance(c, type)]
    for module, name in (("requests", "RequestException"), ("httpx", "HTTPError")):
        with contextlib.suppress(ImportError, AttributeError):
            found.append(getattr(__import__(module), name))
    return tuple(found)


@contextlib.contextmanager
def hub_errors(repo_id: str, action: str, progress: dict | None = None):
    """Turn the client's exceptions into one named lens_cache error each."""
    from huggingface_hub import errors

    try:
        yield
    except LensCacheError:
        raise
    except (errors.RepositoryNotFoundError, errors.RevisionNotFoundError) as e:
        what = "revision" if isinstance(e, errors.RevisionNotFoundError) else "dataset repo"
        raise HubRepoNotFoundError(
            f"{repo_id}: no such {what}, or it is private and your token cannot see it "
            "(log in with `hf auth login` or set HF_TOKEN)"
        ) from None
    except errors.OfflineModeIsEnabled:
        raise HubTransferError(
            f"{action} of {repo_id} needs the network, but HF_HUB_OFFLINE is set: unset it"
        ) from None
    except _network_errors() as e:
        raise _http_error(e, repo_id, action, progress or {}) from None


def _http_error(e: Exception, repo_id: str, action: str, progress: dict) -> LensCacheError:
    status = getattr(getattr(e, "response", None), "status_code", None)
    if status == 401:
        return HubTokenError(
            f"the Hub rejected the token (401) during {action} of {repo_id}: log in again with "
            "`hf auth login` or set HF_TOKEN"
        )
    if status == 403:
        owner = repo_id.split("/")[0]
        return HubPermissionError(
            f"{repo_id}: your token may not write there (403); it belongs to {owner!r}. Push to "
            "a repo in your own namespace or an organisation you can write to"
        )
    done = f" after {progress['done']} of {progress['total']} files" if progress else ""
    reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
    return HubTransferError(
        f"{action} of {repo_id} interrupted{done}: {reason}. Rerun the same command to resume"
    )


def require_token(token: str | None) -> str:
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise HubTokenError(
            "no Hugging Face token: log in with `hf auth login` or set HF_TOKEN (a write token)"
        )
    return token


# --- push: repo checks and batched commits --------------------------------------------------


class PushJob:
    """One push: repo checks, then batched commits of what the repo lacks, card+manifest last."""

    def __init__(self, repo_id, revision, message, token, endpoint, limits, quiet):
        from huggingface_hub import HfApi

        self.api = HfApi(endpoint=endpoint, token=token)
        self.repo_id, self.revision = repo_id, revision
        self.message = message or f"Upload lens_cache dataset to {repo_id}"
        self.max_bytes, self.max_files = limits
        self.quiet = quiet
        self.pending: list[BuiltFile] = []
        self.remote: dict = {}
        self.progress = {"done": 0, "total": 0}
        self.report: PushReport | None = None

    def run(self, report, save_path, plans, sel, dtype, data, stage, private) -> None:
        """`data` is `(small files, shards, files sent as is)`: pooled files and model
        files (`vocab.json`) go up after the shards, in the same batched commits, before the
        card and the manifest."""
        small, shards, pooled = data
        self.report = report
        self.progress["total"] = len(small) + len(shards) + len(pooled) + 1
        with hub_errors(self.repo_id, "push", self.progress):
            report.url = self._prepare_repo(private)
            self.remote = self._remote_files()
            self._check_ours()
            built = []
            for path in (PROMPTS_TABLE, MODELS_TABLE):
                built.append(self._offer(built_file(path, small[path], stage)))
            plan_of = {p.name: p for p in plans}
            for group in shard_groups(shards):
                for f in build_group(save_path, plan_of[group[0].model], group, stage):
                    built.append(self._offer(f))
            for path, source, entry in pooled:
                built.append(self._offer(stage_copy(path, source, stage, entry)))
            self._commit_pending()
            card = built_file(CARD_NAME, small[CARD_NAME], stage)
            manifest = built_file(
                MANIFEST_NAME, manifest_bytes(plans, sel, dtype, [*built, card]), stage
            )
            # the hosted viewer's files go with the manifest: they describe these shards
            viewer = [built_file(p, b, stage) for p, b in small.items() if is_viewer_path(p)]
            self._finish([*viewer, card, manifest], built)
        report.files = sorted((f.path, f.size) for f in [*built, *viewer, card, manifest])

    def _prepare_repo(self, private: bool) -> str:
        url = self.api.create_repo(
            self.repo_id, repo_type=REPO_TYPE, private=private or None, exist_ok=True
        )
        if private and not self.api.dataset_info(self.repo_id).private:
            warn(f"{self.repo_id} exists and is public; --private makes it private")
            self.api.update_repo_settings(self.repo_id, private=True, repo_type=REPO_TYPE)
        if self.revision and self.revision != "main":
            self.api.create_branch(
                self.repo_id, branch=self.revision, repo_type=REPO_TYPE, exist_ok=True
            )
        return str(url)

    def _remote_files(self) -> dict:
        entries = self.api.list_repo_tree(
            self.repo_id, recursive=True, repo_type=REPO_TYPE, revision=self.revision
        )
        return {e.path: e for e in entries if hasattr(e, "blob_id")}

    def _check_ours(self) -> None:
        """Refuse to write into a repo that holds some other dataset (its files, or a card that
        is not ours); our own half-pushed repo (no manifest yet) is resumed."""
        if MANIFEST_NAME in self.remote:
            return
        foreign = [p for p in self.remote if p != ".gitattributes" and not is_layout_path(p)]
        if foreign == [CARD_NAME] and self._card_is_ours():
            foreign = []
        if foreign:
            raise NotALensCacheDatasetError(
                f"{self.repo_id} already holds files that are not lens_cache's (e.g. "
                f"{foreign[0]!r}) and no {MANIFEST_NAME}; push to a new repo"
            )

    def _card_is_ours(self) -> bool:
        path = self.api.hf_hub_download(
            self.repo_id, CARD_NAME, repo_type=REPO_TYPE, revision=self.revision
        )
        with open(path, "rb") as f:  # the card's front matter is at its top: read no more
            head = f.read(2**16).decode("utf-8", errors="replace").split("\n---", 1)[0]
        return "\n- lens_cache\n" in head

    def _offer(self, f: BuiltFile) -> BuiltFile:
        """Queue `f` unless the repo already holds the same bytes; commit when a batch fills."""
        if _same_remote(self.remote.get(f.path), f):
            self.report.skipped.append(f.path)
            self.progress["done"] += 1
            f.local.unlink(missing_ok=True)
        else:
            self.pending.append(f)
            full = sum(p.size for p in self.pending) >= self.max_bytes
            if full or len(self.pending) >= self.max_files:
                self._commit_pending()
        return f

    def _commit_pending(self, extra_ops=(), final: bool = False) -> None:
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        if not self.pending and not extra_ops:
            return
        ops = [CommitOperationAdd(f.path, str(f.local)) for f in self.pending]
        if MANIFEST_NAME in self.remote and not final:
            # A manifest must never describe a half-replaced dataset: drop it with the first
            # change; the last commit writes the new one.
            ops.append(CommitOperationDelete(MANIFEST_NAME))
            del self.remote[MANIFEST_NAME]
        ops += list(extra_ops)
        n = self.report.commits + 1
        title = self.message if final else f"{self.message} (part {n})"
        self.api.create_commit(
            self.repo_id,
            ops,
            commit_message=title,
            repo_type=REPO_TYPE,
            revision=self.revision,
        )
        self._committed(self.pending)

    def _committed(self, files: list[BuiltFile]) -> None:
        self.report.commits += 1
        for f in files:
            self.report.uploaded.append(f.path)
            self.report.bytes_uploaded += f.size
            self.progress["done"] += 1
            f.local.unlink(missing_ok=True)  # staged bytes are freed as soon as they are up
        log(
            f"[{self.repo_id}] commit {self.report.commits}: {len(files)} files, "
            f"{self.progress['done']}/{self.progress['total']} done",
            quiet=self.quiet,
        )
        self.pending = []

    def _finish(self, final: list[BuiltFile], built: list[BuiltFile]) -> None:
        """Card and manifest last, with the deletion of our files the new dataset lacks."""
        from huggingface_hub import CommitOperationDelete

        keep = {f.path for f in [*built, *final]}
        stale = sorted(p for p in self.remote if is_layout_path(p) and p not in keep)
        self.report.deleted = stale
        changed = [f for f in final if not _same_remote(self.remote.get(f.path), f)]
        self.report.skipped += [f.path for f in final if f not in changed]
        if not changed and not stale:
            return
        self.pending = changed
        self._commit_pending([CommitOperationDelete(p) for p in stale], final=True)


def _same_remote(entry, f: BuiltFile) -> bool:
    """Whether the repo's entry holds exactly `f`'s bytes (LFS sha256, else git blob id)."""
    if entry is None:
        return False
    lfs = getattr(entry, "lfs", None)
    if lfs:
        return lfs["sha256"] == f.sha256 and int(lfs["size"]) == f.size
    if entry.size != f.size:
        return False
    data = f.local.read_bytes()
    return entry.blob_id == hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


# --- pull: manifest and downloads ------------------------------------------------------------


def read_manifest(api, repo_id: str, sha: str) -> dict:
    from huggingface_hub import errors

    try:
        path = api.hf_hub_download(repo_id, MANIFEST_NAME, repo_type=REPO_TYPE, revision=sha)
    except errors.EntryNotFoundError:
        raise NotALensCacheDatasetError(
            f"{repo_id} is not a lens_cache dataset: it has no {MANIFEST_NAME} at its top level"
        ) from None
    try:
        manifest = formats.read_json(Path(path))  # bounded: a manifest is untrusted too
        return validate_manifest(manifest, repo_id)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        if isinstance(e, LensCacheError):
            raise
        raise NotALensCacheDatasetError(
            f"{repo_id}: {MANIFEST_NAME} is malformed ({type(e).__name__}: {e})"
        ) from None


def download(api, repo_id: str, sha: str, paths: list[str], listed: dict) -> dict[str, Path]:
    """Fetch exactly `paths` (those the manifest lists) into the Hub cache, in parallel, and
    check each one's size and sha256 against the manifest."""
    from concurrent.futures import ThreadPoolExecutor

    from huggingface_hub import errors

    paths = sorted(p for p in paths if p in listed)

    def fetch(path: str) -> Path:
        try:
            local = Path(api.hf_hub_download(repo_id, path, repo_type=REPO_TYPE, revision=sha))
        except errors.EntryNotFoundError:
            raise HubIntegrityError(
                f"{repo_id}: {path} is in the manifest but not in the repo"
            ) from None
        entry = listed[path]
        if local.stat().st_size != entry["size"] or _sha256(local) != entry["sha256"]:
            raise HubIntegrityError(f"{repo_id}: {path} does not match its manifest sha256")
        return local

    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(zip(paths, pool.map(fetch, paths), strict=True))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(2**20), b""):
            h.update(chunk)
    return h.hexdigest()
