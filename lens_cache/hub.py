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
import bisect
import contextlib
import hashlib
import json
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from lens_cache import store
from lens_cache.adapter import hook_name
from lens_cache.cli import run_cli
from lens_cache.errors import (
    HubIntegrityError,
    HubPermissionError,
    HubRepoIdError,
    HubRepoNotFoundError,
    HubSelectionError,
    HubTokenError,
    HubTransferError,
    LensCacheError,
    NotALensCacheDatasetError,
    NothingSelectedError,
    SettingsMismatchError,
    UnsafeRepoPathError,
)
from lens_cache.hub_layout import (
    CARD_NAME,
    DTYPES,
    FORMAT,
    KINDS,
    MANIFEST_NAME,
    MODELS_TABLE,
    PARTIAL_HEADS_NAME,
    PATTERNS,
    POOLED,
    POOLED_FORMAT_VERSION,
    PROMPTS_TABLE,
    SELECTABLE_KINDS,
    BuiltFile,
    ModelPlan,
    Selection,
    Shard,
    ShardReader,
    ShardWriter,
    card_bytes,
    check_hash,
    check_model_name,
    check_repo_path,
    choose_prompts,
    choose_tensors,
    is_layout_path,
    make_selection,
    manifest_bytes,
    models_table,
    parse_size,
    plan_shards,
    pooled_files_complete,
    pooled_path,
    prompts_table,
    read_table,
    split_pooled_name,
    tensor_path,
)
from lens_cache.indexer import MODEL_CFG_NAME, model_names, prompt_records, write_indexes
from lens_cache.progress import log, warn

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
REPO_TYPE = "dataset"


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


# --- Hub errors ------------------------------------------------------------------------------


def _check_repo_id(repo_id: str) -> str:
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
def _hub_errors(repo_id: str, action: str, progress: dict | None = None):
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


def _require_token(token: str | None) -> str:
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise HubTokenError(
            "no Hugging Face token: log in with `hf auth login` or set HF_TOKEN (a write token)"
        )
    return token


# --- selection over a local store ------------------------------------------------------------


def select_local(save_path: Path, sel: Selection) -> list[ModelPlan]:
    """The models, prompts and tensors of the store that the selection picks.

    Raises:
        HubSelectionError: an unknown model, prompt hash or kind.
        NothingSelectedError: nothing matches.
    """
    names = model_names(save_path)
    if not names:
        raise NothingSelectedError(f"{save_path} holds no exported model; export one first")
    candidates = []
    for name in _pick_models(names, sel.models, str(save_path)):
        check_model_name(name, "the store")
        cfg = store.read_json(Path(save_path) / name / MODEL_CFG_NAME)
        records = prompt_records(Path(save_path) / name)
        with_pooled = sel.kinds is None or POOLED in sel.kinds
        pooled = tuple(local_pooled(save_path, name)) if with_pooled else ()
        candidates.append((name, cfg, records, _stored_tensors(cfg), pooled))
    hint = (
        "write one first: python -m lens_cache.pooled "
        f"-s {shlex.quote(str(save_path))} -m {{model}} --pool POOL (pools: mean, "
        "last_token, ...), or leave pooled out of --kinds"
    )
    plans = build_plans(candidates, sel, "the store", pooled_hint=hint)
    for plan in plans:
        total = len(next(c[2] for c in candidates if c[0] == plan.name))
        if plan.pooled and len(plan.records) < total:
            warn(
                f"{plan.name}: its pooled datasets go up whole, with all {total} prompts "
                f"(texts included), not only the {len(plan.records)} selected"
            )
    return plans


def local_pooled(save_path: Path, model: str) -> dict[str, list[Path]]:
    """`{"<hook>-<pool>": [data files]}`: the complete pooled datasets of a stored model.

    Folders named otherwise are left out (with a warning unless hidden: `write_pooled` builds
    in `.<name>.tmp-<pid>`).

    Raises:
        HubIntegrityError: a pooled dataset whose `data-XXXXX-of-NNNNN` files do not add up.
    """
    root = Path(save_path) / model / POOLED
    found: dict[str, list[Path]] = {}
    if not root.is_dir():
        return found
    for directory in sorted(p for p in root.iterdir() if p.is_dir()):
        if split_pooled_name(directory.name) is None:
            if not directory.name.startswith("."):
                warn(f"{directory}: not a <hook>-<pool> pooled dataset folder; not pushed")
            continue
        files = sorted(directory.glob("data-*.parquet"))
        if not files:
            continue
        if not pooled_files_complete([f.name for f in files]):
            raise HubIntegrityError(
                f"{directory}: its data-XXXXX-of-NNNNN.parquet files do not add up to one "
                f"dataset; rewrite it with python -m lens_cache.pooled"
            )
        found[directory.name] = files
    return found


def _pick_models(names: list[str], wanted, where: str) -> list[str]:
    if wanted is None:
        return names
    unknown = [m for m in wanted if m not in names]
    if unknown:
        raise HubSelectionError(f"--model {', '.join(unknown)}: not in {where} (it has: {names})")
    return [n for n in names if n in wanted]


def _stored_tensors(cfg: dict) -> dict[str, dict[int, tuple[int, ...]]]:
    """`{kind: {layer: heads}}` that a store's model_cfg.json says are there."""
    lc = cfg.get("lens_cache") or {}
    layers = [int(x) for x in lc.get("layers", [])]
    heads = tuple(range(int(cfg["n_heads"])))
    available: dict[str, dict[int, tuple[int, ...]]] = {}
    if "pattern" in lc.get("hooks", []):
        pattern_layers = lc.get("pattern_layers", layers)  # a pulled store may hold fewer
        available[PATTERNS] = {int(layer): heads for layer in pattern_layers}
    for kind in KINDS[1:]:
        if kind in lc.get("hooks", []):
            available[kind] = {int(layer): () for layer in lc.get("resid_layers", layers)}
    return available


def build_plans(candidates, sel: Selection, where: str, pooled_hint: str = "") -> list[ModelPlan]:
    """Apply the selection to `(name, cfg, records, available, pooled)` candidates (`pooled`:
    the names of the model's pooled datasets).

    Raises:
        HubSelectionError: a prompt hash or kind found in no candidate, or `pooled` asked for
            explicitly and a model with selected prompts has none (`pooled_hint`, where
            `{model}` stands for the model, says what to do).
        NothingSelectedError: nothing matches.
    """
    plans, found_hashes, found_kinds = [], set(), set()
    tensor_kinds = None if sel.kinds is None else {k for k in sel.kinds if k != POOLED}
    for name, cfg, records, available, pooled in candidates:
        found_kinds.update(available)
        found_kinds.update([POOLED] if pooled else [])
        found_hashes.update(r["hash"] for r in records)
        chosen = choose_prompts(records, sel)
        tensors = {}
        if tensor_kinds is None or tensor_kinds & set(available):
            tensors = choose_tensors(
                name, int(cfg["n_layers"]), int(cfg["n_heads"]), available, sel, where
            )
        if sel.kinds is not None and POOLED in sel.kinds and chosen and not pooled:
            message = f"--kinds pooled: {name} has no pooled dataset in {where}"
            hint = pooled_hint.replace("{model}", shlex.quote(name))
            raise HubSelectionError(f"{message}; {hint}" if hint else message)
        pooled = tuple(pooled) if sel.kinds is None or POOLED in sel.kinds else ()
        if chosen and (tensors or pooled):
            plans.append(ModelPlan(name, cfg, chosen, tensors, pooled))
    _check_found(sel, found_hashes, found_kinds, where)
    if not plans:
        raise NothingSelectedError(
            f"nothing selected: no prompt of {where} matches {_describe(sel)}"
        )
    return plans


def _check_found(sel: Selection, hashes: set, kinds: set, where: str) -> None:
    missing = sorted(set(sel.prompts or ()) - hashes)
    if missing:
        raise HubSelectionError(f"--prompts: {', '.join(missing)} not in {where}")
    absent = [k for k in sel.kinds or () if k not in kinds]
    if absent:
        raise HubSelectionError(
            f"--kinds {' '.join(absent)}: not in {where} (it holds: {', '.join(sorted(kinds))})"
        )


def _describe(sel: Selection) -> str:
    parts = [f"{k}={v}" for k, v in sel.describe().items() if v is not None]
    return ", ".join(parts) or "the selection"


# --- building the files of a push ------------------------------------------------------------


class _LocalPrompt:
    """Reads one stored prompt's patterns (npz or stacked .npy) and residuals."""

    def __init__(self, save_path: Path, plan: ModelPlan, record: dict):
        self.dir = store.prompt_dir(save_path, plan.name, record["hash"])
        lc = plan.cfg.get("lens_cache") or {}
        self.stacked = bool(lc.get("stacked_heads"))
        self.layers = [int(x) for x in lc.get("layers", [])]

    def pattern(self, layer: int) -> np.ndarray:
        """`[n_heads, T, T]` float32."""
        key = hook_name("pattern", layer)
        try:
            if self.stacked:
                stacked = np.load(self.dir / store.STACKED_NAME, mmap_mode="r")
                return np.asarray(stacked[0, self.layers.index(layer)])
            with np.load(self.dir / store.NPZ_NAME) as npz:
                return npz[key][0]
        except (OSError, KeyError, ValueError) as e:
            raise HubIntegrityError(f"{self.dir}: cannot read {key} ({e})") from None

    def residual(self, kind: str, layer: int):
        """`[T, d_model]` in the stored dtype (a torch tensor)."""
        from safetensors import safe_open

        key = hook_name(kind, layer)
        try:
            with safe_open(str(self.dir / store.RESIDUALS_NAME), "pt") as f:
                return f.get_tensor(key)
        except (OSError, KeyError, ValueError, RuntimeError) as e:
            raise HubIntegrityError(f"{self.dir}: cannot read {key} ({e})") from None


def _small_files(plans: list[ModelPlan], dtype: str, repo_id: str) -> dict[str, bytes]:
    """The parquet tables and the card (the manifest comes last, once every sha256 is known)."""
    return {
        PROMPTS_TABLE: prompts_table(plans),
        MODELS_TABLE: models_table(plans),
        CARD_NAME: card_bytes(repo_id, plans, dtype),
    }


def _built(path: str, data: bytes, stage: Path) -> BuiltFile:
    local = stage / path
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_bytes(data)
    return BuiltFile(path, local, len(data), hashlib.sha256(data).hexdigest())


def _pooled_sources(save_path: Path, plans: list[ModelPlan]) -> list[tuple[str, Path, dict]]:
    """`(repo path, local file, manifest fields)` of every pooled file the plans take along."""
    sources = []
    for plan in plans:
        for name in plan.pooled:
            hook, pool = split_pooled_name(name)
            entry = {"model": plan.name, "kind": POOLED, "hook": hook, "pool": pool}
            for f in sorted((Path(save_path) / plan.name / POOLED / name).glob("data-*.parquet")):
                sources.append((pooled_path(plan.name, name, f.name), f, entry))
    return sources


def _stage_copy(path: str, source: Path, stage: Path, entry: dict) -> BuiltFile:
    """Copy a store file into the stage, hashing it: the upload (which deletes staged files
    once they are up) then sends these bytes even if `write_pooled` replaces the original."""
    local = stage / path
    local.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    try:
        with open(source, "rb") as src, open(local, "wb") as dst:
            for chunk in iter(lambda: src.read(2**20), b""):
                h.update(chunk)
                dst.write(chunk)
    except OSError as e:
        raise HubIntegrityError(f"{source}: cannot read it ({e}); the store changed?") from None
    return BuiltFile(path, local, local.stat().st_size, h.hexdigest(), dict(entry))


def _shard_groups(shards: list[Shard]) -> list[list[Shard]]:
    """Shards built together: every head of one (model, layer, run of prompts), so each
    prompt's layer is read (and decompressed) once, not once per head."""
    groups: dict[tuple, list[Shard]] = {}
    for s in shards:
        groups.setdefault((s.model, s.kind, s.layer, s.index), []).append(s)
    return list(groups.values())


def _build_group(save_path: Path, plan: ModelPlan, group: list[Shard], stage: Path):
    """Write one group of shards to `stage`; yields a `BuiltFile` per shard."""
    writers = [ShardWriter(s, stage / s.path) for s in group]
    first = group[0]
    records = {r["hash"]: r for r in plan.records}
    for key in first.hashes:
        source = _LocalPrompt(save_path, plan, records[key])
        if first.kind == PATTERNS:
            layer = source.pattern(first.layer)
            for w in writers:
                w.add(key, layer[w.shard.head])
        else:
            writers[0].add(key, source.residual(first.kind, first.layer))
    for w in writers:
        yield w.close()


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


class _PushJob:
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
        """`data` is `(small files, shards, pooled sources)`; pooled files go up after the
        shards, in the same batched commits, before the card and the manifest."""
        small, shards, pooled = data
        self.report = report
        self.progress["total"] = len(small) + len(shards) + len(pooled) + 1
        with _hub_errors(self.repo_id, "push", self.progress):
            report.url = self._prepare_repo(private)
            self.remote = self._remote_files()
            self._check_ours()
            built = []
            for path in (PROMPTS_TABLE, MODELS_TABLE):
                built.append(self._offer(_built(path, small[path], stage)))
            plan_of = {p.name: p for p in plans}
            for group in _shard_groups(shards):
                for f in _build_group(save_path, plan_of[group[0].model], group, stage):
                    built.append(self._offer(f))
            for path, source, entry in pooled:
                built.append(self._offer(_stage_copy(path, source, stage, entry)))
            self._commit_pending()
            card = _built(CARD_NAME, small[CARD_NAME], stage)
            manifest = _built(
                MANIFEST_NAME, manifest_bytes(plans, sel, dtype, [*built, card]), stage
            )
            self._finish([card, manifest], built)
        report.files = sorted((f.path, f.size) for f in [*built, card, manifest])

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
        head = Path(path).read_text(encoding="utf-8", errors="replace").split("\n---", 1)[0]
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

        keep = {f.path for f in built}
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


def _read_manifest(api, repo_id: str, sha: str) -> dict:
    from huggingface_hub import errors

    try:
        path = api.hf_hub_download(repo_id, MANIFEST_NAME, repo_type=REPO_TYPE, revision=sha)
    except errors.EntryNotFoundError:
        raise NotALensCacheDatasetError(
            f"{repo_id} is not a lens_cache dataset: it has no {MANIFEST_NAME} at its top level"
        ) from None
    try:
        manifest = json.loads(Path(path).read_text(encoding="utf-8"))
        return validate_manifest(manifest, repo_id)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        if isinstance(e, LensCacheError):
            raise
        raise NotALensCacheDatasetError(
            f"{repo_id}: {MANIFEST_NAME} is malformed ({type(e).__name__}: {e})"
        ) from None


def validate_manifest(manifest: dict, repo_id: str) -> dict:
    """Check the manifest's format and every name in it before anything is downloaded.

    Raises:
        NotALensCacheDatasetError: another format, or a newer version.
        UnsafeRepoPathError: a path, model name or hash that could escape the save path.
    """
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise NotALensCacheDatasetError(f"{repo_id}: {MANIFEST_NAME} is not a lens_cache manifest")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > POOLED_FORMAT_VERSION:
        raise NotALensCacheDatasetError(
            f"{repo_id} was made by a newer lens_cache (format {version}); upgrade lens_cache"
        )
    if manifest.get("dtype") not in DTYPES:
        raise NotALensCacheDatasetError(f"{repo_id}: unknown dtype {manifest.get('dtype')!r}")
    if not isinstance(manifest.get("models"), dict) or not isinstance(manifest.get("files"), list):
        raise NotALensCacheDatasetError(f"{repo_id}: {MANIFEST_NAME} lacks models or files")
    for name in manifest["models"]:
        check_model_name(name, f"{repo_id}'s manifest")
    for entry in manifest["files"]:
        _check_entry(entry, manifest["models"], repo_id)
    for (model, name), files in _pooled_entries(manifest).items():
        if not pooled_files_complete([e["path"].rsplit("/", 1)[1] for e in files]):
            raise NotALensCacheDatasetError(
                f"{repo_id}: the manifest's files of pooled dataset {model}/{name} are not a "
                "complete data-XXXXX-of-NNNNN set"
            )
    return manifest


def _pooled_entries(manifest: dict) -> dict[tuple[str, str], list[dict]]:
    """`{(model, "<hook>-<pool>"): manifest entries}` of a validated manifest, paths sorted."""
    found: dict[tuple[str, str], list[dict]] = {}
    for entry in sorted(manifest["files"], key=lambda e: e["path"]):
        if entry["path"].startswith(f"{POOLED}/"):
            key = (entry["model"], f"{entry['hook']}-{entry['pool']}")
            found.setdefault(key, []).append(entry)
    return found


def _check_entry(entry: dict, models: dict, repo_id: str) -> None:
    path = check_repo_path(entry["path"])
    if not isinstance(entry["size"], int) or not isinstance(entry["sha256"], str):
        raise NotALensCacheDatasetError(f"{repo_id}: manifest entry {path} lacks size/sha256")
    if path.startswith(f"{POOLED}/"):
        _check_pooled_entry(entry, path, models, repo_id)
        return
    if not path.startswith("tensors/"):
        return
    model = check_model_name(entry["model"], f"{repo_id}'s manifest")
    index = int(path.rsplit("-", 1)[1].split(".")[0])
    head = entry["head"] if entry["kind"] == PATTERNS else None
    expected = tensor_path(model, entry["kind"], int(entry["layer"]), head, index)
    if expected != path or model not in models:
        raise UnsafeRepoPathError(
            f"{repo_id}: manifest entry {path!r} does not match its fields ({expected!r})", path
        )
    check_hash(entry["first"], f"{repo_id}'s manifest")
    check_hash(entry["last"], f"{repo_id}'s manifest")
    if entry["kind"] not in KINDS or entry["first"] > entry["last"]:
        raise NotALensCacheDatasetError(f"{repo_id}: manifest entry {path} is inconsistent")


def _check_pooled_entry(entry: dict, path: str, models: dict, repo_id: str) -> None:
    """A pooled file's path must be exactly what its model, hook and pool fields make."""
    model = check_model_name(entry["model"], f"{repo_id}'s manifest")
    name = f"{entry['hook']}-{entry['pool']}"
    expected = pooled_path(model, name, path.rsplit("/", 1)[1])
    if entry["kind"] != POOLED or split_pooled_name(name) is None or expected != path:
        raise UnsafeRepoPathError(
            f"{repo_id}: manifest entry {path!r} does not match its fields ({expected!r})", path
        )
    if model not in models:
        raise NotALensCacheDatasetError(f"{repo_id}: manifest entry {path} names no listed model")


def _download(api, repo_id: str, sha: str, paths: list[str], listed: dict) -> dict[str, Path]:
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


def _select_remote(manifest: dict, tables: dict[str, Path], sel: Selection) -> list[ModelPlan]:
    if PROMPTS_TABLE not in tables or MODELS_TABLE not in tables:
        raise NotALensCacheDatasetError("the manifest lists no prompts or models table")
    by_model: dict[str, list[dict]] = {}
    for row in read_table(tables[PROMPTS_TABLE]):
        check_hash(row["hash"], PROMPTS_TABLE)
        record = {k: row[k] for k in ("text", "hash", "n_tokens", "tokens", "token_ids")}
        record["meta"] = json.loads(row["meta"] or "{}")
        by_model.setdefault(row["model"], []).append(record)
    configs = {
        row["model_name"]: json.loads(row["config"]) for row in read_table(tables[MODELS_TABLE])
    }
    names = sorted(manifest["models"])
    pooled = _pooled_entries(manifest)
    candidates = []
    for name in _pick_models(names, sel.models, "this dataset"):
        if name not in configs:
            raise HubIntegrityError(f"{MODELS_TABLE} has no row for {name}")
        summary = manifest["models"][name]
        available = {PATTERNS: {int(k): tuple(v) for k, v in summary["patterns"].items()}}
        available.update({k: {int(x): () for x in v} for k, v in summary["residuals"].items()})
        available = {k: v for k, v in available.items() if v}
        names_pooled = tuple(sorted(n for m, n in pooled if m == name))
        candidates.append((name, configs[name], by_model.get(name, []), available, names_pooled))
    hint = "pick models that have one with -m, or leave pooled out of --kinds"
    return build_plans(candidates, sel, "this dataset", pooled_hint=hint)


def _needed_shards(manifest: dict, plans: list[ModelPlan]) -> list[dict]:
    """The manifest entries of shards that hold a selected tensor of a selected prompt."""
    wanted = {p.name: p for p in plans}
    needed = []
    for entry in manifest["files"]:
        plan = wanted.get(entry.get("model"))
        if plan is None or entry["kind"] == POOLED or entry["kind"] not in plan.tensors:
            continue
        heads = plan.tensors[entry["kind"]].get(int(entry["layer"]))
        if heads is None or (entry["kind"] == PATTERNS and entry["head"] not in heads):
            continue
        if any(entry["first"] <= r["hash"] <= entry["last"] for r in plan.records):
            needed.append(entry)
    return needed


class _ShardIndex:
    """Finds the downloaded shard that holds one prompt's tensor, and reads it."""

    def __init__(self, entries: list[dict], local: dict[str, Path], dtype: str):
        self.dtype = dtype
        self.runs: dict[tuple, list[tuple[str, str, str]]] = {}
        for e in entries:
            key = (
                e["model"],
                e["kind"],
                int(e["layer"]),
                e["head"] if e["kind"] == PATTERNS else None,
            )
            self.runs.setdefault(key, []).append((e["first"], e["last"], e["path"]))
        for runs in self.runs.values():
            runs.sort()
        self.local = local
        self.readers: dict[str, ShardReader] = {}

    def get(self, model: str, kind: str, layer: int, head, hash_: str, shape):
        runs = self.runs.get((model, kind, layer, head), [])
        i = bisect.bisect_right(runs, (hash_, "\uffff", "")) - 1
        if i < 0 or not runs[i][0] <= hash_ <= runs[i][1]:
            raise HubIntegrityError(f"no shard of {model} {kind} layer {layer} holds {hash_}")
        path = runs[i][2]
        if path not in self.readers:
            self.readers[path] = ShardReader(self.local[path], self.dtype, path)
        return self.readers[path].get(hash_, shape)


def _write_model(save_path: Path, plan: ModelPlan, index, dtype: str, hub_info: dict) -> None:
    """Write one model's model_cfg.json and prompt directories (each prompt.json last)."""
    layout = _PulledLayout(plan, dtype)
    mdir = store.model_dir(save_path, plan.name)
    _claim_pulled_dir(mdir, plan, layout, hub_info)
    for record in plan.records:
        directory = store.prompt_dir(save_path, plan.name, record["hash"])
        _check_inside(save_path, directory)
        _write_prompt(directory, plan, record, layout, index, hub_info)


@dataclass
class _PulledLayout:
    """How pulled tensors map onto the store: whole layers into the npz, the rest aside."""

    plan: ModelPlan
    dtype: str

    def __post_init__(self):
        pats = self.plan.tensors.get(PATTERNS, {})
        all_heads = tuple(range(self.plan.n_heads))
        self.complete = sorted(layer for layer, h in pats.items() if tuple(sorted(h)) == all_heads)
        self.partial = {layer: h for layer, h in pats.items() if layer not in self.complete}
        self.resid = {k: sorted(v) for k, v in self.plan.tensors.items() if k != PATTERNS}
        resid_layers = sorted({x for v in self.resid.values() for x in v})
        hooks = (["pattern"] if self.complete else []) + list(self.resid)
        self.settings = store.ExportSettings(
            hooks=tuple(hooks),
            layers=tuple(sorted(set(self.complete) | set(resid_layers))),
            resid_dtype=self.dtype if self.resid else "float32",
        )
        self.resid_layers = resid_layers

    def describe(self) -> dict:
        """The `lens_cache` block of model_cfg.json / prompt.json for what was pulled."""
        d = {
            "settings": self.settings.fingerprint(),
            "hooks": list(self.settings.hooks),
            # `layers` lists the npz's layers (what readers of activations.npz expect)
            "layers": self.complete if self.complete else self.resid_layers,
            "resid_dtype": self.settings.resid_dtype,
        }
        if self.complete:
            d["pattern_layers"] = self.complete
        if self.resid:
            d["resid_layers"] = self.resid_layers
        if self.partial:
            d["partial_heads"] = {str(k): list(v) for k, v in self.partial.items()}
        return d


def _claim_pulled_dir(mdir: Path, plan: ModelPlan, layout: _PulledLayout, hub_info: dict):
    cfg_path = mdir / MODEL_CFG_NAME
    fingerprint = layout.settings.fingerprint()
    if cfg_path.is_file():
        old = (store.read_json(cfg_path).get("lens_cache") or {}).get("settings")
        if old not in (None, fingerprint):
            raise SettingsMismatchError(
                f"{mdir} already holds {plan.name} with other settings than this pull "
                f"({layout.describe()['hooks']}, layers {layout.describe()['layers']}); pull "
                "into another --save-path or remove that directory"
            )
    mdir.mkdir(parents=True, exist_ok=True)
    cfg = dict(plan.cfg)
    lc = {**(cfg.get("lens_cache") or {}), **layout.settings.describe(), **layout.describe()}
    cfg["lens_cache"] = {**lc, "hub": hub_info}
    cfg["model_name"] = plan.name
    store.write_json(cfg_path, cfg)


def _write_prompt(directory, plan, record, layout: _PulledLayout, index, hub_info) -> None:
    t = int(record["n_tokens"])

    def get(kind, layer, head, shape):
        return index.get(plan.name, kind, layer, head, record["hash"], shape)

    patterns = {}
    for layer in layout.complete:
        heads = [get(PATTERNS, layer, h, (t, t)).float().numpy() for h in range(plan.n_heads)]
        patterns[hook_name("pattern", layer)] = np.stack(heads)[None]
    residuals = {
        hook_name(kind, layer): get(kind, layer, None, (t, plan.d_model))
        for kind, layers in layout.resid.items()
        for layer in layers
    }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / store.PROMPT_NAME).unlink(missing_ok=True)  # incomplete until rewritten
    side = directory / PARTIAL_HEADS_NAME
    if layout.partial:
        partial = {
            f"{hook_name('pattern', layer)}.head_{h}": get(PATTERNS, layer, h, (t, t)).float()
            for layer, heads in layout.partial.items()
            for h in heads
        }
        store.write_safetensors(side, partial, {"model": plan.name, "format": f"{FORMAT}/1"})
    else:
        side.unlink(missing_ok=True)
    full = {**record, "lens_cache": {**layout.describe(), "model": plan.name, "hub": hub_info}}
    capture = SimpleNamespace(patterns=patterns, residuals=residuals)
    store.write_prompt_dir(directory, full, capture, layout.settings, plan.name)


def _write_pooled_only_cfg(save_path: Path, plan: ModelPlan, hub_info: dict) -> None:
    """A model pulled for its pooled datasets alone gets a model_cfg.json (which
    `load_pooled` reads) and no prompt directory; a model already in the store is left as is.

    The pusher's export settings are left out of it, so a later pull of tensors can claim the
    directory."""
    mdir = store.model_dir(save_path, plan.name)
    _check_inside(save_path, mdir)
    if (mdir / MODEL_CFG_NAME).is_file():
        return
    mdir.mkdir(parents=True, exist_ok=True)
    cfg = dict(plan.cfg)
    lc = cfg.get("lens_cache") or {}
    lc = {k: v for k, v in lc.items() if k in ("source", "processing", "transformer_lens_major")}
    cfg["lens_cache"] = {**lc, "hooks": [], "layers": [], "hub": hub_info}
    cfg["model_name"] = plan.name
    store.write_json(mdir / MODEL_CFG_NAME, cfg)


def _write_pooled(save_path: Path, model: str, name: str, files: dict[str, Path]) -> None:
    """Put a downloaded pooled dataset at `<save>/<model>/pooled/<name>/`, replacing the folder
    as a whole (never mixing its shards with those of an older one)."""
    from lens_cache.pooled import _atomic_dir

    target = store.model_dir(save_path, model) / POOLED / name
    _check_inside(save_path, target)

    def copy(tmp: Path) -> None:
        for filename, source in sorted(files.items()):
            shutil.copyfile(source, tmp / filename)

    _atomic_dir(target, copy)


def _check_inside(root: Path, path: Path) -> None:
    """Last line of defence after the name checks: never write outside the save path."""
    if not Path(path).resolve().is_relative_to(Path(root).resolve()):
        raise UnsafeRepoPathError(f"{path} is outside {root}; refusing to write it", str(path))


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
