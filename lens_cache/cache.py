"""`python -m lens_cache.cache`: look after a store.

    info    sizes by model and kind: patterns (npz / stacked npy), residuals, predictions (logits
            and logit lens), pooled, viewer, other
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

import argparse
import json
import os
import shutil
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lens_cache.activations import default_save_path
from lens_cache.cli import run_cli
from lens_cache.errors import ModelNotInStoreError
from lens_cache.indexer import MODEL_CFG_NAME, write_indexes
from lens_cache.predictions import FIELDS as PREDICTION_FIELDS
from lens_cache.predictions import lens_member
from lens_cache.progress import log, warn
from lens_cache.reader import RESID_KINDS, open_store
from lens_cache.store import (
    LOGIT_LENS_NAME,
    NPZ_NAME,
    PREDICTIONS_NAME,
    PROMPT_NAME,
    RESIDUALS_NAME,
    STACKED_NAME,
    read_json,
)
from lens_cache.viewer import APP_DIR as VIEWER_APP_DIR
from lens_cache.viewer import DATA_DIR as VIEWER_DATA_DIR
from lens_cache.viewer import OLD_ASSETS as OLD_VIEWER_ASSETS

KINDS = ("patterns", "residuals", "predictions", "pooled", "viewer", "other")
STORE_ROW = "(store)"  # files that belong to no one model: indexes, the viewer
VIEWER_FILES = ("index.html", VIEWER_APP_DIR, *OLD_VIEWER_ASSETS, VIEWER_DATA_DIR)
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
        if rel.parts[1] == "pooled":
            return top, "pooled"
        if rel.name in (NPZ_NAME, STACKED_NAME):
            return top, "patterns"
        if rel.name in (PREDICTIONS_NAME, LOGIT_LENS_NAME):
            return top, "predictions"
        return top, "residuals" if rel.name == RESIDUALS_NAME else "other"
    return STORE_ROW, "viewer" if top in VIEWER_FILES else "other"


def store_sizes(save_path: Path) -> dict:
    """`{row: {"prompts": n, kind: bytes, ..., "total": bytes}}` for each model and `(store)`."""
    store = open_store(save_path)
    models = store.models()
    rows = {m: dict.fromkeys(("prompts", *KINDS, "total"), 0) for m in [*models, STORE_ROW]}
    for model in models:
        rows[model]["prompts"] = len(list((store.path / model).glob(f"prompts/*/{PROMPT_NAME}")))
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


def _print_table(rows: dict) -> None:
    columns = ("prompts", *KINDS, "total")
    width = max(len(r) for r in [*rows, "model", "total"])
    print(f"{'model':<{width}}  " + "  ".join(f"{c:>10}" for c in columns))
    totals = {c: sum(r[c] for r in rows.values()) for c in columns}
    for name, row in [*rows.items(), ("total", totals)]:
        prompts = "" if name == STORE_ROW else str(row["prompts"])
        cells = [prompts] + [human(row[c]) for c in columns[1:]]
        print(f"{name:<{width}}  " + "  ".join(f"{c:>10}" for c in cells))


def cmd_info(args) -> int:
    rows = store_sizes(Path(args.save_path))
    if args.json:
        print(json.dumps({"save_path": str(args.save_path), "models": rows}, indent=2))
    else:
        _print_table(rows)
    return 0


# --- list ------------------------------------------------------------------------------------


def cmd_list(args) -> int:
    store = open_store(args.save_path)
    for model in args.models or store.models():
        for record in store.prompts(model):
            if args.json:
                print(json.dumps({"model": model, **record}, ensure_ascii=False))
                continue
            preview = record.get("text", "")[:60].replace("\n", "\\n").replace("\t", "\\t")
            print(f"{model}\t{record['hash']}\t{record.get('n_tokens', '')}\t{preview}")
    return 0


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
    problems += _check_json(store.path / "models.jsonl", lines=True)
    n_prompts = 0
    for model in store.models():
        mdir = store.path / model
        cfg_path = mdir / MODEL_CFG_NAME
        if not cfg_path.is_file():
            problems.append(Problem("missing", cfg_path, "the model's config"))
        problems += _check_json(cfg_path) + _check_json(mdir / "prompts.jsonl", lines=True)
        folders = sorted(p for p in (mdir / "prompts").glob("*") if p.is_dir())
        log(f"[{model}] verifying {len(folders)} prompt folders", quiet=quiet)
        for folder in folders:
            problems += check_prompt_dir(folder)
        n_prompts += len(folders)
        for path in sorted((mdir / "pooled").glob("*/*.parquet")):
            problems += _check_parquet(path)
    return problems, n_prompts


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


def check_prompt_dir(folder: Path) -> list[Problem]:
    """Check one prompt folder: prompt.json, the files it promises, and every data file there."""
    try:
        record = read_json(folder / PROMPT_NAME)
    except FileNotFoundError:
        return [Problem("incomplete", folder, "no prompt.json (an interrupted export: rerun it)")]
    except (OSError, ValueError) as e:
        return [Problem("corrupt", folder / PROMPT_NAME, f"not valid JSON: {e}")]
    if not isinstance(record, dict) or record.get("hash") != folder.name:
        return [Problem("corrupt", folder / PROMPT_NAME, "its hash is not the folder's name")]
    settings = record.get("lens_cache") or {}
    hooks = settings["hooks"] if "hooks" in settings else ["pattern"]  # pattern-lens: patterns
    layers = settings.get("layers")
    problems = _promised(folder, hooks + settings.get("predictions", []))
    n = record.get("n_tokens") if settings else None  # pattern-lens counts tokens without BOS
    if (folder / NPZ_NAME).is_file():
        keys = [f"blocks.{i}.attn.hook_pattern" for i in layers or []]
        problems += _check_npz(folder / NPZ_NAME, keys, n)
    if (folder / STACKED_NAME).is_file():
        problems += _check_npy(folder / STACKED_NAME, n)
    if (folder / RESIDUALS_NAME).is_file():
        kinds = [k for k in hooks if k in RESID_KINDS]
        keys = [f"blocks.{i}.hook_{k}" for k in kinds for i in layers or []]
        problems += _check_safetensors(folder / RESIDUALS_NAME, keys, n)
    if (folder / PREDICTIONS_NAME).is_file():
        problems += _check_safetensors(folder / PREDICTIONS_NAME, list(PREDICTION_FIELDS), n)
    if (folder / LOGIT_LENS_NAME).is_file():
        keys = [lens_member(i, f) for i in layers or [] for f in PREDICTION_FIELDS]
        problems += _check_safetensors(folder / LOGIT_LENS_NAME, keys, n)
    return problems


def _promised(folder: Path, hooks: list[str]) -> list[Problem]:
    problems = []
    if "pattern" in hooks and not any((folder / n).is_file() for n in (NPZ_NAME, STACKED_NAME)):
        problems.append(Problem("missing", folder / NPZ_NAME, "prompt.json promises patterns"))
    if any(k in RESID_KINDS for k in hooks) and not (folder / RESIDUALS_NAME).is_file():
        problems.append(Problem("missing", folder / RESIDUALS_NAME, "prompt.json promises them"))
    for kind, name in (("logits", PREDICTIONS_NAME), ("logit_lens", LOGIT_LENS_NAME)):
        if kind in hooks and not (folder / name).is_file():
            problems.append(Problem("missing", folder / name, "prompt.json promises it"))
    return problems


def _check_npz(path: Path, keys: list[str], n_tokens: int | None) -> list[Problem]:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            for name in names:
                with zf.open(name) as f:
                    array = np.lib.format.read_array(f, allow_pickle=False)
                    # Reading to the end makes zipfile compare the member's CRC-32.
                    if f.read(1):
                        raise ValueError(f"{name}: bytes after the array")
                _check_pattern_shape(array, n_tokens, name)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        return [Problem("corrupt", path, f"{type(e).__name__}: {e}")]
    missing = [k for k in keys if f"{k}.npy" not in names]
    return [Problem("missing", path, f"no {', '.join(missing)}")] if missing else []


def _check_pattern_shape(array: np.ndarray, n_tokens: int | None, name: str) -> None:
    t = array.shape[-1] if array.ndim else None
    if array.ndim < 4 or array.shape[-2] != t or (n_tokens is not None and t != n_tokens):
        raise ValueError(f"{name}: shape {array.shape} is not [..., heads, T, T] with T={n_tokens}")


def _check_npy(path: Path, n_tokens: int | None) -> list[Problem]:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        _check_pattern_shape(array, n_tokens, path.name)
        for layer in range(array.shape[1]):  # one layer at a time: bounded memory
            np.array(array[:, layer])
    except (OSError, ValueError, EOFError) as e:
        return [Problem("corrupt", path, f"{type(e).__name__}: {e}")]
    return []


def _check_safetensors(path: Path, keys: list[str], n_tokens: int | None) -> list[Problem]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            names = list(f.keys())
            for name in names:
                tensor = f.get_tensor(name)
                if n_tokens is not None and tensor.shape[0] != n_tokens:
                    raise ValueError(f"{name}: {tensor.shape[0]} positions, not {n_tokens}")
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


def cmd_verify(args) -> int:
    save = Path(args.save_path)
    problems, n_prompts = verify_store(save, quiet=args.quiet)
    for p in problems:
        print(f"{p.status}\t{p.path}\t{p.reason}")
    status = f"{len(problems)} problems" if problems else "all files readable"
    log(f"verified {n_prompts} prompt folders in {save}: {status}", quiet=args.quiet)
    return 1 if problems else 0


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
    folders = [p for m in store.models() for p in (store.path / m / "prompts").glob("*")]
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
        write_indexes(store.path, quiet=True)  # indexes and viewer must not list what is gone
    return removed, total


def cmd_prune(args) -> int:
    removed, total = prune(Path(args.save_path), int(args.max_gb * GB), dry_run=args.dry_run)
    for folder in removed:
        print(folder)
    verb = "would remove" if args.dry_run else "removed"
    log(f"{verb} {len(removed)} prompt folders; the store holds {human(total)}", quiet=args.quiet)
    if total > args.max_gb * GB:
        warn(f"still above {args.max_gb} GB: what is left is not prompt data (pooled, viewer)")
    return 0


def cmd_clear(args) -> int:
    store = open_store(args.save_path)
    if args.model not in store.models():
        raise ModelNotInStoreError(
            f"model {args.model} is not in {store.path}; models there: "
            f"{', '.join(store.models()) or 'none'}"
        )
    shutil.rmtree(store.path / args.model)
    write_indexes(store.path, quiet=True)  # indexes and viewer must not list it
    print(store.path / args.model)
    return 0


# --- CLI -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lens_cache.cache",
        description="Look after a lens_cache store: sizes, listing, integrity, eviction.",
    )
    p.add_argument("-s", "--save-path", default=default_save_path(), help=_SAVE_HELP)
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: given after the command it overrides the one before, else leaves it alone.
    common.add_argument("-s", "--save-path", default=argparse.SUPPRESS, help=_SAVE_HELP)
    common.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = sub.add_parser("info", parents=[common], help="sizes by model and kind")
    info.add_argument("--json", action="store_true", help="print JSON (bytes) instead of a table")
    ls = sub.add_parser("list", parents=[common], help="the prompts of each model")
    ls.add_argument("-m", "--model", action="append", dest="models", help="only this model")
    ls.add_argument("--json", action="store_true", help="one JSON record per line")
    sub.add_parser("verify", parents=[common], help="re-read every file; exit 1 on problems")
    prune_p = sub.add_parser("prune", parents=[common], help="evict least recently used prompts")
    prune_p.add_argument(
        "--max-gb", type=_gigabytes, required=True, help="size to prune down to (1 GB = 1e9 B)"
    )
    prune_p.add_argument("-n", "--dry-run", action="store_true", help="only say what would go")
    clear = sub.add_parser("clear", parents=[common], help="remove one model")
    clear.add_argument("-m", "--model", required=True, help="the model to remove")
    return p


def _gigabytes(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


_SAVE_HELP = "the store (default: $LENS_CACHE_DIR, else lens_cache_data)"
COMMANDS = {
    "info": cmd_info,
    "list": cmd_list,
    "verify": cmd_verify,
    "prune": cmd_prune,
    "clear": cmd_clear,
}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(run_cli(main))
