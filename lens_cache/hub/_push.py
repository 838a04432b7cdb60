"""`push_to_hub`: build a selection of a store as a Hub dataset and send what the repo lacks."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from lens_cache.errors import InvalidOptionError
from lens_cache.hub._card import manifest_bytes, small_files
from lens_cache.hub._client import PushJob, check_repo_id, require_token
from lens_cache.hub._layout import MANIFEST_NAME, PATTERNS, REPO_MAX_FILES, parse_size
from lens_cache.hub._readable import drop_unreadable
from lens_cache.hub._reports import PushReport
from lens_cache.hub._select import Selection, as_selection, select_local
from lens_cache.hub._shards import (
    BuiltFile,
    Shard,
    model_file_sources,
    plan_shards,
    pooled_sources,
)
from lens_cache.hub._viewer_index import viewer_files
from lens_cache.layout import DTYPES, default_save_path

DEFAULT_SHARD_MAX_BYTES = 256 * 2**20
DEFAULT_COMMIT_MAX_BYTES = 1024 * 2**20
DEFAULT_COMMIT_MAX_FILES = 100
DEFAULT_PUSH_KINDS = (PATTERNS,)  # what a push sends when no kind is named


def push_to_hub(
    repo_id: str,
    save_path=None,
    selection: Selection | None = None,
    *,
    dtype: str = "float32",
    private: bool = False,
    revision: str | None = None,
    message: str | None = None,
    shard_max_bytes=DEFAULT_SHARD_MAX_BYTES,
    commit_max_bytes=DEFAULT_COMMIT_MAX_BYTES,
    commit_max_files: int = DEFAULT_COMMIT_MAX_FILES,
    dry_run: bool = False,
    token: str | None = None,
    endpoint: str | None = None,
    quiet: bool = False,
    **selection_fields,
) -> PushReport:
    """Push a selection of a store to a Hub dataset repo, resuming what a previous run began.

    Args:
        repo_id (`str`): `ORG/NAME` of the dataset repo (created if missing).
        save_path (`str | Path`, *optional*): the store; defaults to `$LENS_CACHE_DIR` or
            `lens_cache_data`.
        selection (`Selection`, *optional*): what to push (models, prompts, search, meta,
            layers, heads, kinds); a `Selection` whose `kinds` is `None` pushes every kind
            there is, pooled datasets included (which go whole: the prompt, layer and head
            filters do not apply to them).
        dtype (`str`, defaults to `"float32"`): dtype of the uploaded patterns, residuals and
            other hook points (`float16` and `bfloat16` halve the size; patterns pulled back
            are float32 again, not exact); `predictions`, `logit_lens` and
            `head_contributions` always go in their stored dtypes.
        private (`bool`): create the repo private (and make an existing public one private).
        revision (`str`, *optional*): branch to commit to (created from main if missing).
        message (`str`, *optional*): commit message.
        shard_max_bytes (`int | str`): most tensor bytes per safetensors file (`"500MB"` ok),
            raised where a kind would otherwise break the Hub's file limits.
        commit_max_bytes (`int | str`), commit_max_files (`int`): most bytes / files per commit.
        dry_run (`bool`): only list what would go up (no network, no token needed).
        token (`str`, *optional*): defaults to the logged-in token or `HF_TOKEN`.
        endpoint (`str`, *optional*): the Hub's URL; defaults to `HF_ENDPOINT` or the Hub.
        **selection_fields: instead of `selection`, its fields as keywords (`models=`,
            `heads="5.1,5.3"`, ...); then `kinds` defaults to `("patterns",)`.

    Returns:
        `PushReport`.

    Raises:
        HubTokenError, HubPermissionError, HubTransferError, HubSelectionError (also:
        `pooled` asked for and a selected model has no pooled dataset), NothingSelectedError,
        LayerSelectionError, HubRepoIdError, HubIntegrityError, InvalidOptionError (`dtype`).
    """
    start = time.perf_counter()
    check_repo_id(repo_id)
    if dtype not in DTYPES:
        raise InvalidOptionError(f"--dtype {dtype!r}: choose from {', '.join(DTYPES)}")
    save_path = Path(save_path if save_path is not None else default_save_path())
    if selection is None and selection_fields.get("kinds") is None:
        selection_fields["kinds"] = DEFAULT_PUSH_KINDS
    sel = as_selection(selection, selection_fields)
    # a prompt whose files would not read is left out here, before any shard is planned
    plans = drop_unreadable(save_path, select_local(save_path, sel))
    max_bytes = parse_size(shard_max_bytes)
    share = REPO_MAX_FILES // max(1, len(plans))  # the models share the repo's files
    shards = [s for p in plans for s in plan_shards(p, dtype, max_bytes, save_path, share)]
    as_is = pooled_sources(save_path, plans) + model_file_sources(save_path, plans)
    limits = (parse_size(commit_max_bytes), max(1, int(commit_max_files)))
    report = PushReport(repo_id, revision=revision or "main", dry_run=dry_run)
    with tempfile.TemporaryDirectory(prefix="lens_cache-push-") as tmp:
        small = small_files(plans, dtype, repo_id)
        if not dry_run:  # the hosted viewer's index reads every pushed pattern: not on a dry run
            small.update(viewer_files(save_path, plans, shards, dtype))
        if dry_run:
            plan_report(report, plans, sel, dtype, small, shards, as_is)
        else:
            token = require_token(token)
            job = PushJob(repo_id, revision, message, token, endpoint, limits, quiet)
            data = (small, shards, as_is)
            job.run(report, save_path, plans, sel, dtype, data, Path(tmp), private)
    report.seconds = time.perf_counter() - start
    return report


def plan_report(report, plans, sel, dtype, small: dict, shards: list[Shard], as_is) -> None:
    """Fill a dry run's file list with exact sizes, building nothing big."""
    files = [BuiltFile(p, Path(p), len(b), "0" * 64) for p, b in small.items()]
    files += [BuiltFile(s.path, Path(s.path), s.size, "0" * 64, s.entry()) for s in shards]
    files += [BuiltFile(p, f, f.stat().st_size, "0" * 64, e) for p, f, e in as_is]
    manifest = manifest_bytes(plans, sel, dtype, files)  # placeholder sha256s: same length
    report.files = sorted([(f.path, f.size) for f in files] + [(MANIFEST_NAME, len(manifest))])
