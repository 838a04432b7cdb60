"""What to push or pull: the `Selection`, how its flags are read, and how it is applied to a
local store (push) or to a dataset's manifest and tables (pull), giving one `ModelPlan` per
model: which prompts, tensors and pooled datasets go."""

from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass, fields
from pathlib import Path

from lens_cache.damage import refuse_links
from lens_cache.errors import (
    HubIntegrityError,
    HubSelectionError,
    LayerSelectionError,
    NotALensCacheDatasetError,
    NothingSelectedError,
    StoreLinkError,
)
from lens_cache.hub._layout import (
    HOOKS,
    KIND_ALIASES,
    MODELS_TABLE,
    PATTERNS,
    POOLED,
    PROMPT_KINDS,
    PROMPTS_TABLE,
    SELECTABLE_KINDS,
    WHOLE_KINDS,
    ModelPlan,
    check_hash,
    check_model_name,
    hook_fields,
    pooled_entries,
    pooled_files_complete,
    read_table,
    split_pooled_name,
)
from lens_cache.hub._readable import local_records
from lens_cache.layout import (
    MODEL_CFG_NAME,
    PATTERN,
    POOLED_DIR,
    RESID_KINDS,
    matches_hook_request,
    resolve_layers,
    site_hook,
)
from lens_cache.progress import warn
from lens_cache.reader import Store
from lens_cache.records import TOKENIZER_TOKENS, reader_record, tokenizer_tokens

# --- selection -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """What to push or pull, the same for both. `None` means everything there is.

    Strings and lists are accepted and normalised (`models="gpt2"` becomes `("gpt2",)`,
    `meta=["kind=code"]` or `{"kind": "code"}` becomes `(("kind", "code"),)`).

    Args:
        models (`tuple[str]`, *optional*): model names.
        prompts (`tuple[str]`, *optional*): prompt hashes.
        search (`str`, *optional*): a substring the prompt text must contain.
        meta (`tuple[tuple[str, str]]`): `(key, value)` pairs the prompt's meta must match.
        layers (`str | list[int]`, *optional*): the exporter's `--layers` syntax.
        heads (`str | list`, *optional*): `"5.1,5.3"` or `[(5, 1), (5, 3)]`.
        kinds (`tuple[str]`, *optional*): any of `patterns`, `resid_pre`, `resid_mid`,
            `resid_post`, `predictions` (or `logits`: what the model predicted, whole),
            `logit_lens` (by layer), `head_contributions` (by layer), `hooks` (every other
            hook point stored, by layer; those outside the blocks go whatever `layers` says),
            `pooled` (every pooled dataset of the selected models, whole); `pattern` is
            `patterns`.
        hooks (`tuple[str]`, *optional*): only these hook points of the kind `hooks`, as the
            exporter's `--hooks` names them: a hook name (`blocks.3.attn.hook_z`), a glob or
            brace list (`blocks.*.hook_mlp_out`, `blocks.{3,5}.attn.hook_z`), or a block site
            (`attn.hook_z`: every selected layer's).

    Raises:
        HubSelectionError: an unknown kind, a `meta` item without `=`, or `layers` / `heads`
            / `hooks` with no kind they could select.

    Example:
        >>> Selection(models="gpt2", heads="5.1,5.3", kinds=["patterns"])
    """

    models: tuple[str, ...] | None = None
    prompts: tuple[str, ...] | None = None
    search: str | None = None
    meta: tuple[tuple[str, str], ...] = ()
    layers: object = None
    heads: object = None
    kinds: tuple[str, ...] | None = None
    hooks: tuple[str, ...] | None = None

    def __post_init__(self):
        kinds = _as_tuple(self.kinds)
        kinds = None if kinds is None else tuple(KIND_ALIASES.get(k, k) for k in kinds)
        _check_kinds(kinds, self.layers, self.heads, self.hooks)
        normal = {
            "hooks": _as_tuple(self.hooks),
            "models": _as_tuple(self.models),
            "prompts": _as_tuple(self.prompts),
            "search": self.search or None,
            "meta": parse_meta(self.meta),
            "kinds": None if kinds is None else tuple(k for k in SELECTABLE_KINDS if k in kinds),
        }
        for name, value in normal.items():
            object.__setattr__(self, name, value)

    def describe(self) -> dict:
        """JSON-ready, for the manifest."""
        return {
            "models": list(self.models) if self.models else None,
            "prompts": sorted(self.prompts) if self.prompts else None,
            "search": self.search,
            "meta": dict(self.meta) or None,
            "layers": self.layers if self.layers is None else str(self.layers),
            "heads": None if self.heads is None else str(self.heads),
            "kinds": list(self.kinds) if self.kinds else None,
            # only when given: a manifest made without it keeps its bytes
            **({"hooks": list(self.hooks)} if self.hooks is not None else {}),
        }


def _as_tuple(value) -> tuple | None:
    return None if value is None else ((value,) if isinstance(value, str) else tuple(value))


def _check_kinds(kinds, layers, heads, hooks) -> None:
    unknown = [k for k in kinds or () if k not in SELECTABLE_KINDS]
    if unknown or kinds == ():
        raise HubSelectionError(
            f"--kinds: unknown {unknown}; choose from {', '.join(SELECTABLE_KINDS)}"
        )
    if heads is not None and kinds is not None and PATTERNS not in kinds:
        raise HubSelectionError("--heads selects attention heads: add patterns to --kinds")
    if hooks is not None and kinds is not None and HOOKS not in kinds:
        raise HubSelectionError("--hooks selects hook points: add hooks to --kinds")
    if layers is not None and kinds is not None and set(kinds) <= set(WHOLE_KINDS):
        raise HubSelectionError(
            f"--layers selects tensors by layer, and {' and '.join(kinds)} go whole (every "
            "layer they hold): drop --layers or add patterns, a resid kind or logit_lens to --kinds"
        )


def make_selection(
    models=None,
    prompts=None,
    search=None,
    meta=None,
    layers=None,
    heads=None,
    kinds=None,
    hooks=None,
) -> Selection:
    """A `Selection` from the keywords `push_to_hub` and `pull` also take."""
    return Selection(models, prompts, search, meta, layers, heads, kinds, hooks)


def as_selection(selection: Selection | None, keywords: dict) -> Selection:
    """`selection`, or one built from `keywords` (the fields of `Selection`); not both.

    Raises:
        TypeError: a keyword that is not a field of `Selection`.
        HubSelectionError: both a `Selection` and selection keywords were given.
    """
    unknown = sorted(set(keywords) - {f.name for f in fields(Selection)})
    if unknown:
        raise TypeError(f"unexpected keyword arguments {unknown}")
    if selection is None:
        return Selection(**keywords)
    given = sorted(k for k, v in keywords.items() if v is not None)
    if given:
        raise HubSelectionError(
            f"pass the selection as a Selection or as keywords, not both (got {', '.join(given)})"
        )
    return selection


def parse_meta(meta) -> tuple[tuple[str, str], ...]:
    """`["kind=code", ...]` or `{"kind": "code"}` -> sorted `(key, value)` pairs; a value
    that is not a string becomes its JSON (`{"done": True}` -> `("done", "true")`)."""
    if not meta:
        return ()
    if isinstance(meta, dict):
        return tuple(sorted((str(k), _meta_text(v)) for k, v in meta.items()))
    pairs = []
    for item in [meta] if isinstance(meta, str) else meta:
        if isinstance(item, (tuple, list)) and len(item) == 2:  # already a pair
            pairs.append((str(item[0]), _meta_text(item[1])))
            continue
        key, sep, value = str(item).partition("=")
        if not sep or not key:
            raise HubSelectionError(f"--meta {item!r}: expected KEY=VALUE, e.g. kind=code")
        pairs.append((key, value))
    return tuple(sorted(pairs))


def _meta_text(value) -> str:
    """A wanted value as `meta_matches` compares it: a string as it is, any other value as its
    JSON (`True` is `true`, as a stored `true` reads; `str()` would give `True`)."""
    return value if isinstance(value, str) else json.dumps(value)


def parse_heads(spec, n_layers: int, n_heads: int) -> dict[int, tuple[int, ...]]:
    """`"5.1,5.3"` (or `[(5, 1), "5.3"]`) -> `{5: (1, 3)}`; negative layers count from the end.

    Raises:
        LayerSelectionError: an unreadable item, or a layer or head the model does not have.
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    chosen: dict[int, set[int]] = {}
    for item in items:
        layer, head = _head_item(item)
        if not -n_layers <= layer < n_layers or not 0 <= head < n_heads:
            raise LayerSelectionError(
                f"--heads {layer}.{head}: the model has layers 0-{n_layers - 1} and heads "
                f"0-{n_heads - 1}"
            )
        chosen.setdefault(layer % n_layers, set()).add(head)
    if not chosen:
        raise LayerSelectionError(f"--heads {spec!r} selects no head")
    return {layer: tuple(sorted(h)) for layer, h in sorted(chosen.items())}


def _head_item(item) -> tuple[int, int]:
    unreadable = LayerSelectionError(
        f"--heads: cannot read {item!r}; write LAYER.HEAD, e.g. 5.1,5.3"
    )
    if isinstance(item, (tuple, list)) and len(item) == 2:
        pair = item
    else:
        m = re.fullmatch(r"\s*(-?\d+)\.(\d+)\s*", str(item))
        if not m:
            raise unreadable
        pair = m[1], m[2]
    # int() raises ValueError for a word, or for a number of over 4,300 digits
    try:
        return int(pair[0]), int(pair[1])
    except (TypeError, ValueError) as e:
        raise unreadable from e


def meta_matches(meta: dict, wanted: tuple[tuple[str, str], ...]) -> bool:
    """Every `(key, value)` matches: a string equal to it, or another value whose JSON is."""
    for key, value in wanted:
        if key not in meta:
            return False
        got = meta[key]
        if (got if isinstance(got, str) else json.dumps(got)) != value:
            return False
    return True


def choose_prompts(records: list[dict], sel: Selection) -> list[dict]:
    """The records that pass the prompt filters, sorted by hash."""
    keep = []
    for r in records:
        if sel.prompts is not None and r["hash"] not in sel.prompts:
            continue
        if sel.search is not None and sel.search not in r["text"]:
            continue
        if not meta_matches(r.get("meta") or {}, sel.meta):
            continue
        keep.append(r)
    return sorted(keep, key=lambda r: r["hash"])


def choose_tensors(
    name: str,
    n_layers: int,
    n_heads: int,
    available: dict[str, dict[int, tuple[int, ...]]],
    sel: Selection,
    where: str,
) -> dict[str, dict[int, tuple[int, ...]]]:
    """Which tensors of one model: `{kind: {layer: heads}}` (heads `()` for residuals).

    `available` has the same shape and says what the store (push) or the dataset (pull) holds.
    Layers default to every available one, or to the layers `--heads` names; `--heads`
    restricts only the layers it mentions.

    Raises:
        LayerSelectionError: a layer or head that is not available.
    """
    kinds = [k for k in (sel.kinds or available) if k in available]
    have_layers = sorted({layer for k in kinds for layer in available[k] if layer is not None})
    heads = parse_heads(sel.heads, n_layers, n_heads) if sel.heads is not None else {}
    if sel.layers is not None:
        layers = list(resolve_layers(sel.layers, n_layers))
    else:
        layers = sorted(heads) if heads else have_layers
    missing = sorted(set(layers) - set(have_layers))
    if missing:
        raise LayerSelectionError(
            f"{name}: layers {missing} are not in {where} for {'/'.join(kinds) or 'any kind'}"
            f" (it has layers {have_layers})"
        )
    outside = sorted(set(heads) - set(layers))
    if outside:
        raise LayerSelectionError(f"--heads names layers {outside}, which --layers leaves out")
    chosen = {}
    for kind in kinds:
        chosen[kind] = _kind_tensors(name, kind, layers, available[kind], heads, where)
    return {k: v for k, v in chosen.items() if v}


def _kind_tensors(name, kind, layers, have: dict, heads: dict, where: str) -> dict:
    """`{layer: heads or fields}` of one kind; what has no layer (a kind without layers, hook
    points outside the blocks) goes whatever the layers."""
    out = {None: have[None]} if None in have else {}
    for layer in layers:
        if layer not in have:
            continue
        if kind != PATTERNS:
            out[layer] = have[layer]  # `()`, or a named kind's fields at that layer
            continue
        wanted = heads.get(layer, have[layer])
        absent = sorted(set(wanted) - set(have[layer]))
        if absent:
            raise LayerSelectionError(
                f"{name}: heads {[f'{layer}.{h}' for h in absent]} are not in {where}"
            )
        out[layer] = tuple(wanted)
    return out


# --- selection over a local store ------------------------------------------------------------


def select_local(save_path: Path, sel: Selection) -> list[ModelPlan]:
    """The models, prompts and tensors of the store that the selection picks.

    Raises:
        HubSelectionError: an unknown model, prompt hash or kind.
        NothingSelectedError: nothing matches.
    """
    local = Store(save_path)
    names = local.models() if Path(save_path).is_dir() else []
    if not names:
        raise NothingSelectedError(f"{save_path} holds no exported model; export one first")
    candidates = []
    for name in _pick_models(names, sel.models, str(save_path)):
        check_model_name(name, "the store")
        cfg = check_sizes(local.model_cfg(name), local.path / name / MODEL_CFG_NAME)
        # every complete folder, index or not, less the records a push could not describe;
        # pattern-lens's tokens go along (a pull writes them)
        records = [_push_record(r) for r in local_records(local.path, name)]
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
    in `.<name>.tmp-<pid>`), as is a dataset that is or holds a link (with a warning: its
    files would come from outside the store).

    Raises:
        HubIntegrityError: a pooled dataset whose `data-XXXXX-of-NNNNN` files do not add up.
    """
    root = Path(save_path) / model / POOLED_DIR
    found: dict[str, list[Path]] = {}
    if not _no_links([root], save_path) or not root.is_dir():
        return found
    for directory in sorted(p for p in root.iterdir() if p.is_dir()):
        if split_pooled_name(directory.name) is None:
            if not directory.name.startswith("."):
                warn(f"{directory}: not a <hook>-<pool> pooled dataset folder; not pushed")
            continue
        if not _no_links([directory], save_path):  # before it is listed
            continue
        files = sorted(directory.glob("data-*.parquet"))
        if not files or not _no_links(files, save_path):
            continue
        if not pooled_files_complete([f.name for f in files]):
            raise HubIntegrityError(
                f"{directory}: its data-XXXXX-of-NNNNN.parquet files do not add up to one "
                f"dataset; rewrite it with python -m lens_cache.pooled"
            )
        found[directory.name] = files
    return found


def _no_links(paths: list[Path], save_path: Path) -> bool:
    """Whether none of `paths` is (or lies under) a link; else a line naming the first."""
    try:
        for path in paths:
            if os.path.lexists(path):
                refuse_links(path, Path(save_path))
    except StoreLinkError as e:
        warn(f"hub push: skipped a pooled dataset: {e}")
        return False
    return True


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
    if PATTERN in lc.get("hooks", []):
        pattern_layers = lc.get("pattern_layers", layers)  # a pulled store may hold fewer
        available[PATTERNS] = {int(layer): heads for layer in pattern_layers}
    for kind in RESID_KINDS:
        if kind in lc.get("hooks", []):
            available[kind] = {int(layer): () for layer in lc.get("resid_layers", layers)}
    for kind in PROMPT_KINDS.values():
        if kind.named and lc.get("extra_hooks"):
            available[kind.name] = hook_fields(lc["extra_hooks"])
        elif kind.export_kind in lc.get("predictions", []) + lc.get("hooks", []):
            kind_layers = lc.get(f"{kind.name}_layers", layers)  # a pulled store may hold fewer
            available[kind.name] = _prompt_kind_layers(kind.name, kind_layers)
    return available


def _prompt_kind_layers(kind: str, listed) -> dict:
    """`{layer: ()}` of a per-prompt kind from its layers: `{None: ()}` for one without layers;
    `{layer: fields}` of a named kind from its member names."""
    if PROMPT_KINDS[kind].named:
        return hook_fields(listed)
    if not PROMPT_KINDS[kind].layered:
        return {None: ()}
    return {int(layer): () for layer in listed}


def build_plans(candidates, sel: Selection, where: str, pooled_hint: str = "") -> list[ModelPlan]:
    """Apply the selection to `(name, cfg, records, available, pooled)` candidates (`pooled`:
    the names of the model's pooled datasets).

    Raises:
        HubSelectionError: a prompt hash or kind found in no candidate, or `pooled` asked for
            explicitly and a model with selected prompts has none (`pooled_hint`, where
            `{model}` stands for the model, says what to do).
        NothingSelectedError: nothing matches.
    """
    plans, found_hashes, found_kinds, found_hooks, held_hooks = [], set(), set(), set(), set()
    tensor_kinds = None if sel.kinds is None else {k for k in sel.kinds if k != POOLED}
    for name, cfg, records, available, pooled in candidates:
        found_kinds.update(available)
        held_hooks.update(site_hook(s, x) for x, ss in available.get(HOOKS, {}).items() for s in ss)
        available = _pick_hooks(available, sel.hooks, found_hooks)
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
    _check_hooks_found(sel, found_hooks, held_hooks, where)
    if not plans:
        raise NothingSelectedError(
            f"nothing selected: no prompt of {where} matches {_describe(sel)}"
        )
    return plans


def _pick_hooks(available: dict, requests, found: set) -> dict:
    """`available` with the kind `hooks` cut to the hook points `requests` name (all of them
    when `None`); the requests that named one are added to `found`."""
    if requests is None or HOOKS not in available:
        return available
    picked: dict = {}
    for layer, sites in available[HOOKS].items():
        for site in sites:
            hits = [r for r in requests if matches_hook_request(site_hook(site, layer), r)]
            found.update(hits)
            if hits:
                picked.setdefault(layer, []).append(site)
    rest = {k: v for k, v in available.items() if k != HOOKS}
    return {**rest, HOOKS: {k: tuple(v) for k, v in picked.items()}} if picked else rest


def _check_hooks_found(sel: Selection, found: set, held: set, where: str) -> None:
    """Every `--hooks` request named a hook point (when there are any: else `--kinds hooks`
    is what is missing, and `_check_found` says so)."""
    unmatched = [r for r in sel.hooks or () if r not in found]
    if unmatched and held:
        some = ", ".join(sorted(held)[:6]) + (", ..." if len(held) > 6 else "")
        raise HubSelectionError(
            f"--hooks {' '.join(unmatched)}: no such hook point in {where} (it holds: {some})"
        )


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


# --- selection over a dataset ----------------------------------------------------------------


def _push_record(stored: dict) -> dict:
    record = reader_record(stored)
    record[TOKENIZER_TOKENS] = tokenizer_tokens(stored)
    return record


def select_remote(manifest: dict, tables: dict[str, Path], sel: Selection) -> list[ModelPlan]:
    if PROMPTS_TABLE not in tables or MODELS_TABLE not in tables:
        raise NotALensCacheDatasetError("the manifest lists no prompts or models table")
    by_model = _remote_records(tables[PROMPTS_TABLE])
    configs = {}
    for row in _table_rows(tables[MODELS_TABLE], MODELS_TABLE):
        try:
            config = json.loads(row.get("config"))
        except (TypeError, ValueError):
            config = None
        configs[row.get("model_name")] = check_sizes(config, MODELS_TABLE)
    names = sorted(manifest["models"])
    pooled = pooled_entries(manifest)
    candidates = []
    for name in _pick_models(names, sel.models, "this dataset"):
        if name not in configs:
            raise HubIntegrityError(f"{MODELS_TABLE} has no row for {name}")
        summary = manifest["models"][name]
        available = {PATTERNS: {int(k): tuple(v) for k, v in summary["patterns"].items()}}
        available.update({k: {int(x): () for x in v} for k, v in summary["residuals"].items()})
        for kind, layers in (summary.get("prompt_kinds") or {}).items():
            if kind not in PROMPT_KINDS:
                raise NotALensCacheDatasetError(f"the manifest lists an unknown kind {kind!r}")
            available[kind] = _prompt_kind_layers(kind, layers or [])
        available = {k: v for k, v in available.items() if v}
        names_pooled = tuple(sorted(n for m, n in pooled if m == name))
        candidates.append((name, configs[name], by_model.get(name, []), available, names_pooled))
    hint = "pick models that have one with -m, or leave pooled out of --kinds"
    return build_plans(candidates, sel, "this dataset", pooled_hint=hint)


def _table_rows(path: Path, name: str) -> list[dict]:
    try:
        return read_table(path)
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise NotALensCacheDatasetError(f"{name} is not a parquet table we read ({e})") from None


def _remote_records(path: Path) -> dict[str, list[dict]]:
    """`{model: records}` of the prompts table; a row that does not describe a prompt (no
    text or token count, meta that is not a JSON map) is left out with one line."""
    by_model: dict[str, list[dict]] = {}
    for row in _table_rows(path, PROMPTS_TABLE):
        check_hash(row.get("hash"), PROMPTS_TABLE)
        record = {k: row.get(k) for k in ("text", "hash", "n_tokens", "tokens", "token_ids")}
        try:
            record["meta"] = json.loads(row.get("meta") or "{}")
        except (TypeError, ValueError):
            record["meta"] = None
        n = record["n_tokens"]
        counted = isinstance(n, int) and not isinstance(n, bool) and n > 0
        if not (counted and isinstance(record["text"], str) and isinstance(record["meta"], dict)):
            warn(
                f"hub pull: skipped prompt {row['hash']}: its row of {PROMPTS_TABLE} lacks a "
                "text, a token count or meta that is a JSON map"
            )
            continue
        if row.get("mean_loss") is not None:  # tables pushed before it was a column lack it
            record["mean_loss"] = row["mean_loss"]
        record[TOKENIZER_TOKENS] = row.get(TOKENIZER_TOKENS)  # the same: None in older tables
        by_model.setdefault(row.get("model"), []).append(record)
    return by_model


# Far above any model's, far below what `range(n_heads)` or a `[T, d_model]` plan can afford.
MAX_LAYERS_OR_HEADS = 2**16
MAX_D_MODEL = 2**20


def check_sizes(cfg, where) -> dict:
    """`cfg` (a model's config), once its `n_layers`, `n_heads` and `d_model` are counts in
    bounds: they size ranges and tensors of a push or pull.

    Raises:
        HubIntegrityError: a config that is not a map, or a size that is not such a count.
    """
    limits = {"n_layers": MAX_LAYERS_OR_HEADS, "n_heads": MAX_LAYERS_OR_HEADS}
    limits["d_model"] = MAX_D_MODEL
    for key, limit in limits.items():
        value = cfg.get(key) if isinstance(cfg, dict) else None
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= limit:
            name = cfg.get("model_name") if isinstance(cfg, dict) else None
            raise HubIntegrityError(
                f"{where}: the config of {name or 'a model'} gives {key} {value!r}, not a "
                f"count from 1 to {limit}"
            )
    return cfg


def needed_shards(manifest: dict, plans: list[ModelPlan]) -> list[dict]:
    """The manifest entries of shards that hold a selected tensor of a selected prompt."""
    wanted = {p.name: p for p in plans}
    needed = []
    for entry in manifest["files"]:
        plan = wanted.get(entry.get("model"))
        if plan is None or entry["kind"] == POOLED or entry["kind"] not in plan.tensors:
            continue
        layer = None if entry["layer"] is None else int(entry["layer"])
        heads = plan.tensors[entry["kind"]].get(layer)
        if heads is None or (entry["kind"] == PATTERNS and entry["head"] not in heads):
            continue
        if any(entry["first"] <= r["hash"] <= entry["last"] for r in plan.records):
            needed.append(entry)
    return needed
