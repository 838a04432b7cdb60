"""`pull`: download a selection of a dataset and rebuild a local store from it: model_cfg.json,
prompt directories (pattern-lens-compatible npz, residuals, partial heads aside, predictions and
the logit lens), model files (vocab.json) and pooled datasets, then the indexes and the
viewer."""

from __future__ import annotations

import bisect
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lens_cache import store
from lens_cache.errors import HubIntegrityError, SettingsMismatchError, UnsafeRepoPathError
from lens_cache.hub._client import check_repo_id, download, hub_errors, read_manifest
from lens_cache.hub._layout import (
    FORMAT,
    MODEL_FILE,
    MODELS_TABLE,
    PATTERNS,
    PROMPT_KINDS,
    PROMPTS_TABLE,
    ModelPlan,
    pooled_entries,
)
from lens_cache.hub._reports import PullReport
from lens_cache.hub._select import Selection, as_selection, needed_shards, select_remote
from lens_cache.hub._shards import ShardReader
from lens_cache.layout import (
    HOOK_KINDS,
    MODEL_CFG_NAME,
    PARTIAL_HEADS_NAME,
    PATTERN,
    POOLED_DIR,
    PREDICTION_KINDS,
    PROMPT_NAME,
    RESID_KINDS,
    default_save_path,
    hook_name,
)
from lens_cache.progress import log, warn
from lens_cache.records import TOKENIZER_TOKENS, stored_record
from lens_cache.viewer import refresh_store


def pull(
    repo_id: str,
    save_path=None,
    selection: Selection | None = None,
    *,
    revision: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    quiet: bool = False,
    **selection_fields,
) -> PullReport:
    """Download a lens_cache dataset (or a selection of it) into a local store.

    Rebuilds `<save>/<model>/model_cfg.json` and one prompt directory per prompt:
    `activations.npz` (float32 `[1, n_heads, T, T]`) for every layer whose heads were all
    pushed, `residuals.safetensors` in the dataset's dtype, and `partial_heads.safetensors`
    (float32 `[T, T]` under `blocks.{L}.attn.hook_pattern.head_{H}`) for layers of which only
    some heads were pushed: an npz layer is never padded with made-up heads. Predictions and
    the logit lens come back as `predictions.safetensors` and `logit_lens.safetensors` (the
    selected layers), bit for bit, with the model's `vocab.json`. Pooled datasets
    (kind `pooled`, pulled whole) go back to `<save>/<model>/pooled/<hook>-<pool>/`, replacing
    the folder, so `lens_cache.load_pooled` reads them; a model pulled for them alone gets its
    `model_cfg.json` and no prompt directory. Then rewrites the store's indexes
    (`models.jsonl`, `prompts.jsonl`, `index.html`).

    Args:
        repo_id (`str`): `ORG/NAME`.
        save_path (`str | Path`, *optional*): the store to write into; defaults to
            `$LENS_CACHE_DIR` or `lens_cache_data`.
        selection (`Selection`, *optional*): what to pull, over what the dataset holds
            (every kind it has by default).
        revision (`str`, *optional*): branch, tag or commit; the pull pins the commit it
            resolves to, so a push happening meanwhile cannot mix two versions.
        token (`str`, *optional*): for private repos; defaults to the login or `HF_TOKEN`.
        endpoint (`str`, *optional*): the Hub's URL.
        **selection_fields: instead of `selection`, its fields as keywords (`layers="5"`, ...).

    Returns:
        `PullReport`.

    Raises:
        NotALensCacheDatasetError, UnsafeRepoPathError, HubIntegrityError,
        HubRepoNotFoundError, HubTokenError, HubTransferError, HubSelectionError,
        NothingSelectedError, SettingsMismatchError.
    """
    from huggingface_hub import HfApi

    start = time.perf_counter()
    check_repo_id(repo_id)
    sel = as_selection(selection, selection_fields)
    api = HfApi(endpoint=endpoint, token=token)
    with hub_errors(repo_id, "pull"):
        sha = api.dataset_info(repo_id, revision=revision).sha
        manifest = read_manifest(api, repo_id, sha)
        listed = {f["path"]: f for f in manifest["files"]}
        tables = download(api, repo_id, sha, [PROMPTS_TABLE, MODELS_TABLE], listed)
        plans = select_remote(manifest, tables, sel)
        needed = needed_shards(manifest, plans)
        pooled = pooled_entries(manifest)
        pooled = {(p.name, n): pooled[(p.name, n)] for p in plans for n in p.pooled}
        paths = [e["path"] for e in needed] + [e["path"] for v in pooled.values() for e in v]
        model_files = needed_model_files(manifest, plans)
        local = download(api, repo_id, sha, paths + [e["path"] for e in model_files], listed)
    save_path = store.ensure_writable(
        Path(save_path if save_path is not None else default_save_path())
    )
    report = PullReport(repo_id, sha, save_path, files=sorted([*tables, *local]))
    report.bytes_downloaded = sum(listed[p]["size"] for p in report.files)
    index = ShardIndex(needed, local, manifest["dtype"])
    hub_info = {"repo_id": repo_id, "revision": sha}
    for plan in plans:
        if plan.tensors:
            files = {e["name"]: local[e["path"]] for e in model_files if e["model"] == plan.name}
            written = write_model(save_path, plan, index, manifest["dtype"], hub_info, files)
            report.prompts += written
            report.skipped += len(plan.records) - written
        else:
            write_pooled_only_cfg(save_path, plan, hub_info)
        for name in plan.pooled:
            files = {e["path"].rsplit("/", 1)[1]: local[e["path"]] for e in pooled[plan.name, name]}
            write_pooled_dataset(save_path, plan.name, name, files)
        report.models.append(plan.name)
    refresh_store(save_path, quiet=quiet)
    report.seconds = time.perf_counter() - start
    n_pooled = f" and {len(pooled)} pooled datasets" if pooled else ""
    left_out = f" ({report.skipped} left out: see above)" if report.skipped else ""
    log(
        f"[{repo_id}] pulled {report.prompts} prompts{left_out}{n_pooled} into {save_path}",
        quiet=quiet,
    )
    return report


def needed_model_files(manifest: dict, plans: list[ModelPlan]) -> list[dict]:
    """The manifest entries of model files (`vocab.json`) that the plans' per-prompt kinds
    need."""
    wanted = {
        (p.name, name)
        for p in plans
        for k in p.tensors
        if k in PROMPT_KINDS
        for name in PROMPT_KINDS[k].model_files
    }
    return [
        e
        for e in manifest["files"]
        if e.get("kind") == MODEL_FILE and (e["model"], e["name"]) in wanted
    ]


class ShardIndex:
    """Finds the downloaded shard that holds one prompt's tensor, and reads it."""

    def __init__(self, entries: list[dict], local: dict[str, Path], dtype: str):
        self.dtype = dtype
        self.runs: dict[tuple, list[tuple[str, str, str]]] = {}
        for e in entries:
            key = (
                e["model"],
                e["kind"],
                None if e["layer"] is None else int(e["layer"]),
                e["head"] if e["kind"] == PATTERNS else None,
            )
            self.runs.setdefault(key, []).append((e["first"], e["last"], e["path"]))
        for runs in self.runs.values():
            runs.sort()
        self.local = local
        self.readers: dict[str, ShardReader | HubIntegrityError] = {}

    def get(self, model: str, kind: str, layer: int, head, hash_: str, shape):
        return self._reader(model, kind, layer, head, hash_).get(hash_, shape)

    def fields(self, model: str, kind: str, layer, hash_: str, n_tokens: int, names, cfg=None):
        """One prompt's `{field: tensor}` of a per-prompt kind at one layer, as stored
        (`names`: a named kind's fields there, `()` for a kind with fixed fields; `cfg`: the
        model's config, which bounds the fields that do not run over the tokens)."""
        reader = self._reader(model, kind, layer, None, hash_)
        return reader.fields(hash_, PROMPT_KINDS[kind], n_tokens, names, cfg)

    def _reader(self, model: str, kind: str, layer, head, hash_: str) -> ShardReader:
        runs = self.runs.get((model, kind, layer, head), [])
        i = bisect.bisect_right(runs, (hash_, "\uffff", "")) - 1
        if i < 0 or not runs[i][0] <= hash_ <= runs[i][1]:
            raise HubIntegrityError(f"no shard of {model} {kind} layer {layer} holds {hash_}")
        path = runs[i][2]
        if path not in self.readers:
            try:
                self.readers[path] = ShardReader(self.local[path], self.dtype, path)
            except HubIntegrityError as e:
                self.readers[path] = e  # each of its prompts is refused, the header read once
        found = self.readers[path]
        if isinstance(found, HubIntegrityError):
            raise found
        return found


def write_model(
    save_path: Path, plan: ModelPlan, index, dtype: str, hub_info: dict, files: dict
) -> int:
    """Write one model's model_cfg.json, its model files (`files`: `{name: downloaded file}`,
    e.g. `vocab.json`, copied as is) and prompt directories (each prompt.json last); a prompt
    whose shard fails its checks is left out with one line. Returns the prompts written."""
    layout = _PulledLayout(plan, dtype)
    mdir = store.model_dir(save_path, plan.name)
    _claim_pulled_dir(mdir, plan, layout, hub_info)
    for name, source in sorted(files.items()):
        store.write_bytes(mdir / name, Path(source).read_bytes())
    written = 0
    for record in plan.records:
        directory = store.prompt_dir(save_path, plan.name, record["hash"])
        _check_inside(save_path, directory)
        try:
            _write_prompt(directory, plan, record, layout, index, hub_info)
        except HubIntegrityError as e:
            # a damaged or hostile shard costs its own prompts, named, not the whole pull
            warn(f"hub pull: skipped prompt {record['hash']}: {e}")
            continue
        written += 1
    return written


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
        tensors = self.plan.tensors
        self.resid = {k: sorted(v) for k, v in tensors.items() if k in RESID_KINDS}
        resid_layers = sorted({x for v in self.resid.values() for x in v})
        # per-prompt kinds: {kind: sorted layers, None (no layer) first}
        self.per_prompt = {
            k: sorted(v, key=lambda x: -1 if x is None else x)
            for k, v in tensors.items()
            if k in PROMPT_KINDS
        }
        lens_layers = {x for v in self.per_prompt.values() for x in v if x is not None}
        named = [k for k in self.per_prompt if PROMPT_KINDS[k].named]
        extra_hooks = tuple(n for k in named for n in self.plan.named_members(k))
        # a per-prompt kind is a prediction kind (logits, logit_lens) or a hook kind
        # (head_contributions) of the exporter
        exported = [PROMPT_KINDS[k].export_kind for k in self.per_prompt]
        hooks = ([PATTERN] if self.complete else []) + list(self.resid)
        hooks += [k for k in exported if k in HOOK_KINDS]
        self.settings = store.ExportSettings(
            hooks=tuple(hooks),
            layers=tuple(sorted(set(self.complete) | set(resid_layers) | lens_layers)),
            resid_dtype=self.dtype if self.resid or extra_hooks else "float32",
            model_dtype=(self.plan.cfg.get("lens_cache") or {}).get("model_dtype", "float32"),
            predictions=tuple(k for k in exported if k in PREDICTION_KINDS),
            top_k=self.plan.top_k,
            topk_keys=self.plan.topk_keys,
            extra_hooks=extra_hooks,
        )
        self.resid_layers = resid_layers

    def describe(self) -> dict:
        """The `lens_cache` block of model_cfg.json / prompt.json for what was pulled."""
        d = {
            "settings": self.settings.fingerprint(),
            "hooks": list(self.settings.hooks),
            # `layers` lists the npz's layers (what readers of activations.npz expect)
            "layers": self.complete or self.resid_layers or list(self.settings.layers),
            "resid_dtype": self.settings.resid_dtype,
            "predictions": list(self.settings.predictions),  # never the pusher's, if not pulled
        }
        if self.settings.predictions:
            d["top_k"] = self.settings.top_k
        if self.settings.extra_hooks:  # what hooks.safetensors holds, as an export records it
            d["extra_hooks"] = list(self.settings.extra_hooks)
        for kind, layers in self.per_prompt.items():
            if PROMPT_KINDS[kind].layered and not PROMPT_KINDS[kind].named:  # named: extra_hooks
                d[f"{kind}_layers"] = layers
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
    store.make_dirs(mdir)
    cfg = dict(plan.cfg)
    lc = {**(cfg.get("lens_cache") or {}), **layout.settings.describe(), **layout.describe()}
    cfg["lens_cache"] = {**lc, "hub": hub_info}
    cfg["model_name"] = plan.name
    store.write_json(cfg_path, cfg)


def _write_prompt(directory, plan, record, layout: _PulledLayout, index, hub_info) -> None:
    """Read every tensor of one prompt from its shards, then write its folder: a shard that
    fails its checks stops this before anything of the prompt is written."""
    capture, partial = _read_prompt(plan, record, layout, index)
    store.make_dirs(directory)
    (directory / PROMPT_NAME).unlink(missing_ok=True)  # incomplete until rewritten
    side = directory / PARTIAL_HEADS_NAME
    if partial:
        store.write_safetensors(side, partial, {"model": plan.name, "format": f"{FORMAT}/1"})
    else:
        side.unlink(missing_ok=True)
    full = {**record, "lens_cache": {**layout.describe(), "model": plan.name, "hub": hub_info}}
    tokens = full.pop(TOKENIZER_TOKENS, None)
    if tokens is not None:  # a table pushed before the column: the old layout (cache upgrade)
        full = stored_record(full, tokens)
    store.write_prompt_dir(directory, full, capture, layout.settings, plan.name)


def _read_prompt(plan, record, layout: _PulledLayout, index):
    """`(Capture, partial heads)` of one prompt, read from its shards.

    Raises:
        HubIntegrityError: a shard that lies in its header, or holds no such tensor.
    """
    t = int(record["n_tokens"])

    def get(kind, layer, head, shape):
        return index.get(plan.name, kind, layer, head, record["hash"], shape)

    patterns = {}
    for layer in layout.complete:
        heads = [get(PATTERNS, layer, h, (t, t)).float().numpy() for h in range(plan.n_heads)]
        patterns[hook_name(PATTERN, layer)] = np.stack(heads)[None]
    residuals = {
        hook_name(kind, layer): get(kind, layer, None, (t, plan.d_model))
        for kind, layers in layout.resid.items()
        for layer in layers
    }
    partial = {
        f"{hook_name(PATTERN, layer)}.head_{h}": get(PATTERNS, layer, h, (t, t)).float()
        for layer, heads in layout.partial.items()
        for h in heads
    }
    ids = list(record.get("token_ids") or [])
    from lens_cache.capture import Capture  # imports torch: only once something is pulled

    capture = Capture(prompt=record, ids=ids, patterns=patterns, residuals=residuals)
    for kind, layers in layout.per_prompt.items():
        spec, tensors = PROMPT_KINDS[kind], getattr(capture, PROMPT_KINDS[kind].capture_field)
        for layer in layers:
            names = plan.tensors[kind][layer]
            got = index.fields(plan.name, kind, layer, record["hash"], t, names, plan.cfg)
            tensors.update({spec.member(layer, name): value for name, value in got.items()})
    return capture, partial


def write_pooled_only_cfg(save_path: Path, plan: ModelPlan, hub_info: dict) -> None:
    """A model pulled for its pooled datasets alone gets a model_cfg.json (which
    `load_pooled` reads) and no prompt directory; a model already in the store is left as is.

    The pusher's export settings are left out of it, so a later pull of tensors can claim the
    directory."""
    mdir = store.model_dir(save_path, plan.name)
    _check_inside(save_path, mdir)
    if (mdir / MODEL_CFG_NAME).is_file():
        return
    store.make_dirs(mdir)
    cfg = dict(plan.cfg)
    lc = cfg.get("lens_cache") or {}
    lc = {k: v for k, v in lc.items() if k in ("source", "processing", "transformer_lens_major")}
    cfg["lens_cache"] = {**lc, "hooks": [], "layers": [], "hub": hub_info}
    cfg["model_name"] = plan.name
    store.write_json(mdir / MODEL_CFG_NAME, cfg)


def write_pooled_dataset(save_path: Path, model: str, name: str, files: dict[str, Path]) -> None:
    """Put a downloaded pooled dataset at `<save>/<model>/pooled/<name>/`, replacing the folder
    as a whole (never mixing its shards with those of an older one)."""
    target = store.model_dir(save_path, model) / POOLED_DIR / name
    _check_inside(save_path, target)

    def copy(tmp: Path) -> None:
        for filename, source in sorted(files.items()):
            shutil.copyfile(source, tmp / filename)

    store.atomic_dir(target, copy)


def _check_inside(root: Path, path: Path) -> None:
    """Last line of defence after the name checks: never write outside the save path."""
    if not Path(path).resolve().is_relative_to(Path(root).resolve()):
        raise UnsafeRepoPathError(f"{path} is outside {root}; refusing to write it", str(path))
