"""Look after a store (`python -m lens_cache.cache`, whose command line is `lens_cache.cli.cache`).

    info    sizes by model and kind: patterns (npz / stacked npy / compact top-k), residuals
            (and any other hooks), predictions (logits and logit lens), pooled, viewer, other
    list    the prompts of each model
    verify  re-read every file; list missing and corrupt ones; exit 1 if there are any
    prune   remove the least recently used prompt folders until the store fits in --max-gb
    clear   remove one model

`--save-path` defaults to `$LENS_CACHE_DIR`, else `lens_cache_data`, as for the exporter.
Results go to stdout, progress and warnings to stderr. Sizes are file sizes in decimal units
(1 GB = 10^9 bytes), the same units `--max-gb` uses.

`prune` ranks prompt folders by when they were last used: for each folder, the latest access
or modification time of any file in it (`max(atime, mtime)`). Where the file system records
access times, reading a prompt counts as using it; where it does not (`noatime`), the access
time stays at the write time, so this falls back to the newest modification time. Under the
common `relatime`, a file's access time moves at most once a day.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lens_cache import formats, topk
from lens_cache.errors import ModelNotInStoreError
from lens_cache.layout import (
    HEAD_CONTRIBUTIONS,
    HEAD_FIELDS,
    HEAD_METRICS,
    HEAD_METRICS_NAME,
    HEADS_NAME,
    HOOKS_NAME,
    INDEX_HTML,
    LOGIT_LENS_NAME,
    MODEL_CFG_NAME,
    MODELS_INDEX,
    NPZ_NAME,
    PATTERN,
    PATTERN_TOPK,
    PATTERN_TOPK_NAME,
    POOLED_DIR,
    PREDICTION_FIELDS,
    PREDICTION_FILES,
    PREDICTIONS_NAME,
    PROMPT_NAME,
    PROMPTS_INDEX,
    RESID_KINDS,
    RESIDUALS_NAME,
    STACKED_NAME,
    VIEWER_APP_DIR,
    VIEWER_DATA_DIR,
    heads_member,
    hook_name,
    lens_member,
    prompts_folder,
)
from lens_cache.progress import log
from lens_cache.reader import model_names, open_store, pattern_length
from lens_cache.records import reader_record
from lens_cache.store import read_json
from lens_cache.viewer import OLD_ASSETS as OLD_VIEWER_ASSETS
from lens_cache.viewer import refresh_store

KINDS = ("patterns", "residuals", "predictions", "pooled", "viewer", "other")
STORE_ROW = "(store)"  # files that belong to no one model: indexes, the viewer
VIEWER_FILES = (INDEX_HTML, VIEWER_APP_DIR, *OLD_VIEWER_ASSETS, VIEWER_DATA_DIR)
GB = 10**9


# --- sizes -----------------------------------------------------------------------------------


def _files(root: Path):
    """Every regular file under `root` with its `os.stat_result` (symlinks are not followed)."""
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            st = path.lstat()
            if not path.is_symlink():
                yield path, st


def _kind(rel: Path, models: set[str]) -> tuple[str, str]:
    """`(row, kind)` of a file, by its path relative to the store."""
    top = rel.parts[0]
    if top in models and len(rel.parts) > 1:
        if rel.parts[1] == POOLED_DIR:
            return top, "pooled"
        if rel.name in (NPZ_NAME, STACKED_NAME, PATTERN_TOPK_NAME):
            return top, "patterns"
        if rel.name in (PREDICTIONS_NAME, LOGIT_LENS_NAME):
            return top, "predictions"
        stream = rel.name in (RESIDUALS_NAME, HOOKS_NAME)  # any other hook counts as residuals
        return top, "residuals" if stream else "other"
    return STORE_ROW, "viewer" if top in VIEWER_FILES else "other"


def store_sizes(save_path: Path) -> dict:
    """`{row: {"prompts": n, kind: bytes, ..., "total": bytes}}` for each model and `(store)`."""
    store = open_store(save_path)
    models = store.models()
    rows = {m: dict.fromkeys(("prompts", *KINDS, "total"), 0) for m in [*models, STORE_ROW]}
    for model in models:
        rows[model]["prompts"] = len(
            list(prompts_folder(store.path / model).glob(f"*/{PROMPT_NAME}"))
        )
    for path, st in _files(store.path):
        row, kind = _kind(path.relative_to(store.path), set(models))
        rows[row][kind] += st.st_size
        rows[row]["total"] += st.st_size
    return rows


def human(n: int) -> str:
    """Bytes in decimal units: `1.5 MB`."""
    if n < 1000:
        return f"{n} B"
    units = ("KB", "MB", "GB")
    power = min(len(units), int(np.log10(n) // 3))
    return f"{n / 1000**power:.1f} {units[power - 1]}"


# --- verify ----------------------------------------------------------------------------------


@dataclass
class Problem:
    """One missing, corrupt or incomplete file or folder."""

    status: str  # "missing", "corrupt" or "incomplete"
    path: Path
    reason: str


def verify_store(save_path: Path, *, quiet: bool = False) -> tuple[list[Problem], int]:
    """Re-read every file of the store.

    Returns:
        `(problems, n_prompts_checked)`.
    """
    store = open_store(save_path)
    problems: list[Problem] = []
    problems += _check_json(store.path / MODELS_INDEX, lines=True)
    n_prompts = 0
    for model in _model_folders(store.path):
        mdir = store.path / model
        links = _links(mdir, [prompts_folder(mdir).name, MODEL_CFG_NAME, PROMPTS_INDEX])
        if links:
            problems += links
            continue
        cfg_path = mdir / MODEL_CFG_NAME
        if not cfg_path.is_file():
            problems.append(Problem("missing", cfg_path, "the model's config"))
        problems += _check_json(cfg_path) + _check_json(mdir / PROMPTS_INDEX, lines=True)
        n_heads = _n_heads(cfg_path)
        folders = sorted(p for p in prompts_folder(mdir).glob("*") if p.is_dir())
        log(f"[{model}] verifying {len(folders)} prompt folders", quiet=quiet)
        for folder in folders:
            problems += check_prompt_dir(folder, n_heads)
        n_prompts += len(folders)
        for path in sorted((mdir / POOLED_DIR).glob("*/*.parquet")):
            problems += _check_parquet(path)
    return problems, n_prompts


def _model_folders(root: Path) -> list[str]:
    """The store's models, folders holding prompts whose `model_cfg.json` was lost (a
    damaged model, which verify reports), and links that stand where a model would."""
    damaged = [p.name for p in root.iterdir() if prompts_folder(p).is_dir() or p.is_symlink()]
    return sorted(set(model_names(root)) | set(damaged))


def _links(folder: Path, names) -> list[Problem]:
    """A problem for `folder` itself or each of its entries `names` that is a symbolic link:
    reported, never followed (see `lens_cache.damage.refuse_links`)."""
    paths = [folder] if folder.is_symlink() else [folder / n for n in names]
    return [
        Problem("corrupt", p, f"a symbolic link (to {os.readlink(p)}), never followed")
        for p in paths
        if p.is_symlink()
    ]


def _n_heads(cfg_path: Path) -> int | None:
    try:
        heads = read_json(cfg_path).get("n_heads")
    except (OSError, ValueError, AttributeError):
        return None
    return heads if isinstance(heads, int) and heads > 0 else None


def _check_json(path: Path, lines: bool = False) -> list[Problem]:
    """A JSON (or JSON lines) file that is absent is not a problem here; unreadable is."""
    if not path.is_file():
        return []
    try:
        text = path.read_text(encoding="utf-8")
        for line in text.splitlines() if lines else [text]:
            if line.strip():
                json.loads(line)
    except (OSError, ValueError) as e:
        return [Problem("corrupt", path, f"not valid JSON: {e}")]
    return []


def check_prompt_dir(folder: Path, n_heads: int | None = None) -> list[Problem]:
    """Check one prompt folder: prompt.json, the files it promises, and every data file there.
    A folder that is or holds a link is reported and not read."""
    links = _links(folder, sorted(os.listdir(folder)) if not folder.is_symlink() else [])
    if links:
        return links
    try:
        record = read_json(folder / PROMPT_NAME)
    except FileNotFoundError:
        return [Problem("incomplete", folder, "no prompt.json (an interrupted export: rerun it)")]
    except (OSError, ValueError) as e:
        return [Problem("corrupt", folder / PROMPT_NAME, f"not valid JSON: {e}")]
    if not isinstance(record, dict) or record.get("hash") != folder.name:
        return [Problem("corrupt", folder / PROMPT_NAME, "its hash is not the folder's name")]
    settings = record.get("lens_cache") or {}
    hooks = settings["hooks"] if "hooks" in settings else [PATTERN]  # pattern-lens: patterns
    layers = settings.get("layers")
    problems = _promised(folder, hooks + settings.get("predictions", []))
    n = pattern_length(reader_record(record))  # pattern-lens counts tokens without the BOS
    problems += _check_hooks_file(folder, settings.get("extra_hooks") or [], n)
    shape = (1, n_heads, n, n)
    if (folder / NPZ_NAME).is_file():
        keys = [hook_name(PATTERN, i) for i in layers or []]
        problems += _check_npz(folder / NPZ_NAME, keys, shape)
    if (folder / STACKED_NAME).is_file():
        problems += _check_npy(folder / STACKED_NAME, shape)
    if (folder / RESIDUALS_NAME).is_file():
        kinds = [k for k in hooks if k in RESID_KINDS]
        keys = [hook_name(k, i) for k in kinds for i in layers or []]
        problems += _check_safetensors(folder / RESIDUALS_NAME, keys, n)
    if (folder / PREDICTIONS_NAME).is_file():
        problems += _check_safetensors(folder / PREDICTIONS_NAME, list(PREDICTION_FIELDS), n)
    if (folder / LOGIT_LENS_NAME).is_file():
        keys = [lens_member(i, f) for i in layers or [] for f in PREDICTION_FIELDS]
        problems += _check_safetensors(folder / LOGIT_LENS_NAME, keys, n)
    if (folder / HEADS_NAME).is_file():
        keys = [heads_member(i, f) for i in layers or [] for f in HEAD_FIELDS]
        # the top-example candidates (top_<by>) have no position axis
        problems += _check_safetensors(folder / HEADS_NAME, keys, n, pos_axis=-1, only_keys=True)
    if (folder / PATTERN_TOPK_NAME).is_file():
        problems += _check_topk(folder / PATTERN_TOPK_NAME, layers or [], n_heads, n)
    return problems


def _check_topk(path: Path, layers: list[int], n_heads: int | None, n: int) -> list[Problem]:
    """The compact pattern: its header against the prompt (`topk.CompactFile`), then every
    layer read (a few MB even at long lengths) with its keys checked, and none missing."""
    try:
        compact = topk.CompactFile(path, n_heads, n)
        for layer in compact.layers:
            compact.read([layer])
    except (OSError, ValueError) as e:
        return [Problem("corrupt", path, f"{type(e).__name__}: {e}")]
    missing = [i for i in layers if i not in compact.layers]
    return [Problem("missing", path, f"no layers {missing}")] if missing else []


def _check_hooks_file(folder: Path, extra: list[str], n_tokens: int | None) -> list[Problem]:
    """`hooks.safetensors`: there when prompt.json names other hooks, each one at the prompt's
    length (the check the residuals get, through the same function)."""
    path = folder / HOOKS_NAME
    if not path.is_file():
        return [Problem("missing", path, "prompt.json promises its hooks")] if extra else []
    return _check_safetensors(path, extra, n_tokens)


def _promised(folder: Path, hooks: list[str]) -> list[Problem]:
    problems = []
    if PATTERN in hooks and not any((folder / n).is_file() for n in (NPZ_NAME, STACKED_NAME)):
        problems.append(Problem("missing", folder / NPZ_NAME, "prompt.json promises patterns"))
    if any(k in RESID_KINDS for k in hooks) and not (folder / RESIDUALS_NAME).is_file():
        problems.append(Problem("missing", folder / RESIDUALS_NAME, "prompt.json promises them"))
    files = {
        **PREDICTION_FILES,
        HEAD_CONTRIBUTIONS: HEADS_NAME,
        HEAD_METRICS: HEAD_METRICS_NAME,
        PATTERN_TOPK: PATTERN_TOPK_NAME,
    }
    for kind, name in files.items():
        if kind in hooks and not (folder / name).is_file():
            problems.append(Problem("missing", folder / name, "prompt.json promises it"))
    return problems


def _check_npz(path: Path, keys: list[str], shape: tuple) -> list[Problem]:
    """Every member's header against `shape` first, then its bytes streamed through the CRC
    check: memory stays bounded (1 MB) whatever a member claims."""
    try:
        names = formats.check_npz(path, shape)
    except (OSError, ValueError, EOFError, formats.BadZipFile) as e:
        return [Problem("corrupt", path, f"{type(e).__name__}: {e}")]
    missing = [k for k in keys if k not in names]
    return [Problem("missing", path, f"no {', '.join(missing)}")] if missing else []


def _check_npy(path: Path, shape: tuple) -> list[Problem]:
    try:
        array = formats.open_npy(path, lambda found: formats.check_stacked(found, shape))
        for layer in range(array.shape[1]):  # one layer at a time: bounded memory
            np.array(array[:, layer])
    except (OSError, ValueError, EOFError) as e:
        return [Problem("corrupt", path, f"{type(e).__name__}: {e}")]
    return []


def _framework(path: Path) -> str:
    """numpy where it can hold the file's dtypes (so `cache verify` never imports torch),
    torch for bfloat16, which numpy lacks. The header is checked against the file's size
    first (`formats.safetensors_header`), so no tensor can claim more bytes than the file has.
    """
    header, _, _ = formats.safetensors_header(path)
    return "pt" if any(e["dtype"] == "BF16" for e in header.values()) else "numpy"


def _check_safetensors(
    path: Path, keys: list[str], n_tokens: int | None, pos_axis: int = 0, only_keys: bool = False
) -> list[Problem]:
    """Every tensor reads and has `n_tokens` positions on `pos_axis` (with `only_keys`, those
    of `keys` only); `keys` are all there."""
    names = []
    try:
        for name, tensor in formats.iter_tensors(path, framework=_framework(path)):
            names.append(name)
            sized = not only_keys or name in keys
            if sized and n_tokens is not None and tensor.shape[pos_axis] != n_tokens:
                raise ValueError(f"{name}: {tensor.shape[pos_axis]} positions, not {n_tokens}")
    except Exception as e:  # safetensors raises its own SafetensorError (not an OSError)
        return [Problem("corrupt", path, f"{type(e).__name__}: {e}")]
    missing = [k for k in keys if k not in names]
    return [Problem("missing", path, f"no {', '.join(missing)}")] if missing else []


def _check_parquet(path: Path) -> list[Problem]:
    import pyarrow.parquet as pq

    try:
        pq.read_table(path)
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        return [Problem("corrupt", path, f"{type(e).__name__}: {e}")]
    return []


# --- prune and clear -------------------------------------------------------------------------


def last_used(folder: Path) -> float:
    """When a prompt folder was last used: the latest atime or mtime of its files (see the
    module docstring for why both)."""
    times = [max(st.st_atime, st.st_mtime) for _, st in _files(folder)]
    return max(times) if times else folder.stat().st_mtime


def _folder_size(folder: Path) -> int:
    return sum(st.st_size for _, st in _files(folder))


def prune(save_path: Path, max_bytes: int, *, dry_run: bool = False) -> tuple[list[Path], int]:
    """Remove least recently used prompt folders until the store holds at most `max_bytes`.

    Returns:
        `(removed folders, bytes the store holds afterwards)`.
    """
    store = open_store(save_path)
    total = sum(st.st_size for _, st in _files(store.path))
    folders = [p for m in store.models() for p in prompts_folder(store.path / m).glob("*")]
    ranked = sorted((last_used(p), str(p), p) for p in folders if p.is_dir())
    removed = []
    for _, _, folder in ranked:
        if total <= max_bytes:
            break
        total -= _folder_size(folder)
        removed.append(folder)
        if not dry_run:
            shutil.rmtree(folder)
    if removed and not dry_run:
        refresh_store(store.path, quiet=True)  # indexes and viewer must not list what is gone
    return removed, total


def clear_model(save_path: Path, model: str) -> Path:
    """Remove one model's folder, then the indexes and viewer entries that listed it.

    Raises:
        ModelNotInStoreError: the store holds no such model.
    """
    store = open_store(save_path)
    if model not in store.models():
        raise ModelNotInStoreError(
            f"model {model} is not in {store.path}; models there: "
            f"{', '.join(store.models()) or 'none'}"
        )
    shutil.rmtree(store.path / model)
    refresh_store(store.path, quiet=True)  # indexes and viewer must not list it
    return store.path / model


if __name__ == "__main__":  # `python -m lens_cache.cache`: the same as `lens-cache cache`
    # by name (runpy): the library never imports its command line, a layer above it
    import runpy

    runpy.run_module("lens_cache.cli.cache", run_name="__main__")
