"""Apply a `Selection` to a local store (push) or to a dataset's manifest and tables (pull):
which models, prompts, tensors and pooled datasets go, as `ModelPlan`s."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from lens_cache import store
from lens_cache.errors import (
    HubIntegrityError,
    HubSelectionError,
    NotALensCacheDatasetError,
    NothingSelectedError,
)
from lens_cache.hub_card import _pooled_entries, read_table
from lens_cache.hub_layout import (
    KINDS,
    MODELS_TABLE,
    PATTERNS,
    POOLED,
    PROMPTS_TABLE,
    ModelPlan,
    Selection,
    check_hash,
    check_model_name,
    choose_prompts,
    choose_tensors,
    pooled_files_complete,
    split_pooled_name,
)
from lens_cache.indexer import MODEL_CFG_NAME, model_names, prompt_records
from lens_cache.progress import warn

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


# --- selection over a dataset ----------------------------------------------------------------


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
