"""Share curated slices of a store on the Hugging Face Hub, and pull them back.

    python -m lens_cache.hub push --repo ORG/NAME --layers 5 --heads 5.1,5.3 --kinds patterns
    python -m lens_cache.hub pull --repo ORG/NAME --save-path store/

A push builds every file deterministically (see `lens_cache.hub_layout`), compares each with
what the repo already holds (LFS size + sha256, or the git blob id of small files), and sends
only the difference in batched commits; the dataset card and the `lens_cache.json` manifest go
last, so an interrupted push never looks complete and a rerun finishes it. A pull reads the
manifest, refuses any name that could escape the save path, downloads only the files the
selection needs, checks their sha256 and rebuilds the pattern-lens-compatible layout.

With kind `pooled`, every pooled dataset of the selected models (`<save>/<model>/pooled/
<hook>-<pool>/data-*.parquet`, see `lens_cache.pooled`) goes up as is, whole, to
`pooled/<model>/<hook>-<pool>/`, and a pull puts it back where it was: prompt, layer and head
selections never filter its rows or columns.

The token comes from `hf auth login` or `HF_TOKEN` (or the `token=` argument); it is never
printed or written anywhere by this module.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from lens_cache import store
from lens_cache.cli import run_cli
from lens_cache.errors import (
    HubIntegrityError,
    HubPermissionError,
    HubRepoIdError,
    HubRepoNotFoundError,
    HubSelectionError,
    HubTokenError,
    HubTransferError,
    NotALensCacheDatasetError,
    NothingSelectedError,
    UnsafeRepoPathError,
)
from lens_cache.hub_card import _pooled_entries, _small_files, manifest_bytes
from lens_cache.hub_client import (
    _check_repo_id,
    _download,
    _hub_errors,
    _PushJob,
    _read_manifest,
    _require_token,
)
from lens_cache.hub_layout import (
    DTYPES,
    MANIFEST_NAME,
    MODELS_TABLE,
    PATTERNS,
    PROMPTS_TABLE,
    SELECTABLE_KINDS,
    make_selection,
    parse_size,
)
from lens_cache.hub_pull import _ShardIndex, _write_model, _write_pooled, _write_pooled_only_cfg
from lens_cache.hub_select import _needed_shards, _select_remote, select_local
from lens_cache.hub_shards import BuiltFile, Shard, _pooled_sources, plan_shards
from lens_cache.indexer import write_indexes
from lens_cache.progress import log

__all__ = [
    "push_to_hub",
    "pull",
    "PushReport",
    "PullReport",
    "HubTokenError",
    "HubPermissionError",
    "HubRepoNotFoundError",
    "HubTransferError",
    "HubRepoIdError",
    "HubSelectionError",
    "NothingSelectedError",
    "NotALensCacheDatasetError",
    "UnsafeRepoPathError",
    "HubIntegrityError",
]

DEFAULT_SHARD_MAX_BYTES = 256 * 2**20
DEFAULT_COMMIT_MAX_BYTES = 1024 * 2**20
DEFAULT_COMMIT_MAX_FILES = 100


# --- reports ---------------------------------------------------------------------------------


@dataclass
class PushReport:
    """What a push did (or, with `dry_run`, would do).

    `files` lists every file of the dataset as `(path, size)`; `uploaded` and `skipped` split
    them by whether the repo already held identical bytes.
    """

    repo_id: str
    url: str = ""
    revision: str = "main"
    dry_run: bool = False
    files: list[tuple[str, int]] = field(default_factory=list)
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    commits: int = 0
    bytes_uploaded: int = 0
    seconds: float = 0.0

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.files)


@dataclass
class PullReport:
    """What a pull wrote: models, prompt count, files downloaded and their bytes."""

    repo_id: str
    revision: str
    save_path: Path
    models: list[str] = field(default_factory=list)
    prompts: int = 0
    files: list[str] = field(default_factory=list)
    bytes_downloaded: int = 0
    seconds: float = 0.0


# --- push ------------------------------------------------------------------------------------


def push_to_hub(
    repo_id: str,
    save_path=None,
    *,
    models=None,
    prompts=None,
    search: str | None = None,
    meta=None,
    layers=None,
    heads=None,
    kinds=(PATTERNS,),
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
) -> PushReport:
    """Push a selection of a store to a Hub dataset repo, resuming what a previous run began.

    Args:
        repo_id (`str`): `ORG/NAME` of the dataset repo (created if missing).
        save_path (`str | Path`, *optional*): the store; defaults to `$LENS_CACHE_DIR` or
            `lens_cache_data`.
        models (`list[str]`, *optional*): model names; all models in the store by default.
        prompts (`list[str]`, *optional*): prompt hashes to keep.
        search (`str`, *optional*): keep prompts whose text contains this substring.
        meta (`dict | list[str]`, *optional*): `{key: value}` or `["key=value"]` the prompt's
            meta must match (a non-string value is compared as JSON).
        layers (`str | list[int]`, *optional*): the exporter's `--layers` syntax.
        heads (`str | list`, *optional*): `"5.1,5.3"`: only these heads of their layers.
        kinds (`tuple[str]`, defaults to `("patterns",)`): also `resid_pre`, `resid_mid`,
            `resid_post`, and `pooled`: every pooled dataset of the selected models, as is
            (whole: `prompts`, `search`, `meta`, `layers` and `heads` do not filter it).
        dtype (`str`, defaults to `"float32"`): dtype of the uploaded tensors (`float16` and
            `bfloat16` halve the size; patterns pulled back are float32 again, not exact).
        private (`bool`): create the repo private (and make an existing public one private).
        revision (`str`, *optional*): branch to commit to (created from main if missing).
        message (`str`, *optional*): commit message.
        shard_max_bytes (`int | str`): most tensor bytes per safetensors file (`"500MB"` ok).
        commit_max_bytes (`int | str`), commit_max_files (`int`): most bytes / files per commit.
        dry_run (`bool`): only list what would go up (no network, no token needed).
        token (`str`, *optional*): defaults to the logged-in token or `HF_TOKEN`.
        endpoint (`str`, *optional*): the Hub's URL; defaults to `HF_ENDPOINT` or the Hub.

    Returns:
        `PushReport`.

    Raises:
        HubTokenError, HubPermissionError, HubTransferError, HubSelectionError (also:
        `pooled` asked for and a selected model has no pooled dataset), NothingSelectedError,
        LayerSelectionError, HubRepoIdError, HubIntegrityError.
    """
    start = time.perf_counter()
    _check_repo_id(repo_id)
    if dtype not in DTYPES:
        raise HubSelectionError(f"--dtype {dtype!r}: choose from {', '.join(DTYPES)}")
    save_path = Path(save_path if save_path is not None else _default_save_path())
    sel = make_selection(models, prompts, search, meta, layers, heads, kinds)
    plans = select_local(save_path, sel)
    shards = [s for p in plans for s in plan_shards(p, dtype, parse_size(shard_max_bytes))]
    pooled = _pooled_sources(save_path, plans)
    limits = (parse_size(commit_max_bytes), max(1, int(commit_max_files)))
    report = PushReport(repo_id, revision=revision or "main", dry_run=dry_run)
    with tempfile.TemporaryDirectory(prefix="lens_cache-push-") as tmp:
        small = _small_files(plans, dtype, repo_id)
        if dry_run:
            _plan_report(report, plans, sel, dtype, small, shards, pooled)
        else:
            token = _require_token(token)
            job = _PushJob(repo_id, revision, message, token, endpoint, limits, quiet)
            data = (small, shards, pooled)
            job.run(report, save_path, plans, sel, dtype, data, Path(tmp), private)
    report.seconds = time.perf_counter() - start
    return report


def _default_save_path() -> str:
    from lens_cache.activations import default_save_path

    return default_save_path()


def _plan_report(report, plans, sel, dtype, small: dict, shards: list[Shard], pooled) -> None:
    """Fill a dry run's file list with exact sizes, building nothing big."""
    files = [BuiltFile(p, Path(p), len(b), "0" * 64) for p, b in small.items()]
    files += [BuiltFile(s.path, Path(s.path), s.size, "0" * 64, s.entry()) for s in shards]
    files += [BuiltFile(p, f, f.stat().st_size, "0" * 64, e) for p, f, e in pooled]
    manifest = manifest_bytes(plans, sel, dtype, files)  # placeholder sha256s: same length
    report.files = sorted([(f.path, f.size) for f in files] + [(MANIFEST_NAME, len(manifest))])


# --- pull ------------------------------------------------------------------------------------


def pull(
    repo_id: str,
    save_path=None,
    *,
    models=None,
    prompts=None,
    search: str | None = None,
    meta=None,
    layers=None,
    heads=None,
    kinds=None,
    revision: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    quiet: bool = False,
) -> PullReport:
    """Download a lens_cache dataset (or a selection of it) into a local store.

    Rebuilds `<save>/<model>/model_cfg.json` and one prompt directory per prompt:
    `activations.npz` (float32 `[1, n_heads, T, T]`) for every layer whose heads were all
    pushed, `residuals.safetensors` in the dataset's dtype, and `partial_heads.safetensors`
    (float32 `[T, T]` under `blocks.{L}.attn.hook_pattern.head_{H}`) for layers of which only
    some heads were pushed: an npz layer is never padded with made-up heads. Pooled datasets
    (kind `pooled`, pulled whole) go back to `<save>/<model>/pooled/<hook>-<pool>/`, replacing
    the folder, so `lens_cache.load_pooled` reads them; a model pulled for them alone gets its
    `model_cfg.json` and no prompt directory. Then rewrites the store's indexes
    (`models.jsonl`, `prompts.jsonl`, `index.html`).

    Args:
        repo_id (`str`): `ORG/NAME`.
        save_path (`str | Path`, *optional*): the store to write into.
        models, prompts, search, meta, layers, heads, kinds: as in `push_to_hub`, over what
            the dataset holds (every kind it has by default).
        revision (`str`, *optional*): branch, tag or commit; the pull pins the commit it
            resolves to, so a push happening meanwhile cannot mix two versions.
        token (`str`, *optional*): for private repos; defaults to the login or `HF_TOKEN`.
        endpoint (`str`, *optional*): the Hub's URL.

    Returns:
        `PullReport`.

    Raises:
        NotALensCacheDatasetError, UnsafeRepoPathError, HubIntegrityError,
        HubRepoNotFoundError, HubTokenError, HubTransferError, HubSelectionError,
        NothingSelectedError, SettingsMismatchError.
    """
    from huggingface_hub import HfApi

    start = time.perf_counter()
    _check_repo_id(repo_id)
    sel = make_selection(models, prompts, search, meta, layers, heads, kinds)
    api = HfApi(endpoint=endpoint, token=token)
    with _hub_errors(repo_id, "pull"):
        sha = api.dataset_info(repo_id, revision=revision).sha
        manifest = _read_manifest(api, repo_id, sha)
        listed = {f["path"]: f for f in manifest["files"]}
        tables = _download(api, repo_id, sha, [PROMPTS_TABLE, MODELS_TABLE], listed)
        plans = _select_remote(manifest, tables, sel)
        needed = _needed_shards(manifest, plans)
        pooled = _pooled_entries(manifest)
        pooled = {(p.name, n): pooled[(p.name, n)] for p in plans for n in p.pooled}
        paths = [e["path"] for e in needed] + [e["path"] for v in pooled.values() for e in v]
        local = _download(api, repo_id, sha, paths, listed)
    save_path = store.ensure_writable(
        Path(save_path if save_path is not None else _default_save_path())
    )
    report = PullReport(repo_id, sha, save_path, files=sorted([*tables, *local]))
    report.bytes_downloaded = sum(listed[p]["size"] for p in report.files)
    index = _ShardIndex(needed, local, manifest["dtype"])
    hub_info = {"repo_id": repo_id, "revision": sha}
    for plan in plans:
        if plan.tensors:
            _write_model(save_path, plan, index, manifest["dtype"], hub_info)
            report.prompts += len(plan.records)
        else:
            _write_pooled_only_cfg(save_path, plan, hub_info)
        for name in plan.pooled:
            files = {e["path"].rsplit("/", 1)[1]: local[e["path"]] for e in pooled[plan.name, name]}
            _write_pooled(save_path, plan.name, name, files)
        report.models.append(plan.name)
    write_indexes(save_path, quiet=quiet)
    report.seconds = time.perf_counter() - start
    n_pooled = f" and {len(pooled)} pooled datasets" if pooled else ""
    log(f"[{repo_id}] pulled {report.prompts} prompts{n_pooled} into {save_path}", quiet=quiet)
    return report


# --- CLI -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lens_cache.hub",
        description="Share a selection of a lens_cache store as a Hugging Face dataset, or pull "
        "one into a store. The token comes from `hf auth login` or HF_TOKEN.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    push = sub.add_parser("push", help="upload a selection (reruns resume)")
    pull_p = sub.add_parser("pull", help="download a dataset (or a selection) into a store")
    for sp in (push, pull_p):
        _common_args(sp)
    push.add_argument(
        "--kinds",
        nargs="+",
        choices=SELECTABLE_KINDS,
        default=[PATTERNS],
        help="what to upload; pooled: every pooled dataset of the selected models, whole",
    )
    push.add_argument("--dtype", choices=list(DTYPES), default="float32", help="uploaded dtype")
    push.add_argument("--private", action="store_true", help="make the repo private")
    push.add_argument("--message", help="commit message")
    push.add_argument("--shard-max-bytes", default=str(DEFAULT_SHARD_MAX_BYTES))
    push.add_argument("--commit-max-bytes", default=str(DEFAULT_COMMIT_MAX_BYTES))
    push.add_argument("--dry-run", action="store_true", help="list what would go up; no upload")
    pull_p.add_argument(
        "--kinds", nargs="+", choices=SELECTABLE_KINDS, help="default: all the dataset has"
    )
    return p


def _common_args(sp: argparse.ArgumentParser) -> None:
    a = sp.add_argument
    a("--repo", required=True, help="the dataset repo, ORG/NAME")
    a("-s", "--save-path", default=None, help="the store (default: $LENS_CACHE_DIR)")
    a("-m", "--model", action="append", dest="models", help="a model; repeat for several")
    a("--prompts", nargs="+", metavar="HASH", help="prompt hashes")
    a("--search", help="keep prompts whose text contains this")
    a("--meta", action="append", metavar="KEY=VALUE", help="keep prompts with this meta")
    a("--layers", help="all, first, middle, last, 3, -1, 0,2,4, 2-5 (default: all stored)")
    a("--heads", help="only these heads, LAYER.HEAD, e.g. 5.1,5.3")
    a("--revision", help="branch (push) or branch/tag/commit (pull)")
    a("--endpoint", help="the Hub's URL (default: $HF_ENDPOINT or huggingface.co)")
    a("-q", "--quiet", action="store_true", help="no progress on stderr")


def _selection_kwargs(args) -> dict:
    return dict(
        models=args.models,
        prompts=args.prompts,
        search=args.search,
        meta=args.meta,
        layers=args.layers,
        heads=args.heads,
        kinds=args.kinds,
        revision=args.revision,
        endpoint=args.endpoint,
        quiet=args.quiet,
    )


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "pull":
        report = pull(args.repo, args.save_path, **_selection_kwargs(args))
        print(report.save_path / "index.html")
        return 0
    report = push_to_hub(
        args.repo,
        args.save_path,
        dtype=args.dtype,
        private=args.private,
        message=args.message,
        shard_max_bytes=args.shard_max_bytes,
        commit_max_bytes=args.commit_max_bytes,
        dry_run=args.dry_run,
        **_selection_kwargs(args),
    )
    _print_push(report, args.quiet)
    return 0


def _print_push(report: PushReport, quiet: bool) -> None:
    if report.dry_run:
        for path, size in report.files:
            print(f"{size:>14,}  {path}")
        print(f"{len(report.files)} files, {report.total_bytes:,} bytes (dry run: nothing sent)")
        return
    log(
        f"[{report.repo_id}] {len(report.uploaded)} files uploaded "
        f"({report.bytes_uploaded:,} bytes) in {report.commits} commits, "
        f"{len(report.skipped)} already there, {len(report.deleted)} stale removed",
        quiet=quiet,
    )
    print(report.url)


if __name__ == "__main__":
    sys.exit(run_cli(main))
