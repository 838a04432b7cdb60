"""Rewrite the `prompt.json` files of a store written before pattern-lens's own fields were
kept at their top level (see `lens_cache.records`), then its `prompts.jsonl`.

Only records change: the arrays, the settings fingerprint and the viewer's data stay, so an
upgraded store is not re-exported and its viewer is not rebuilt. Each `prompt.json` is replaced
atomically and the ones already upgraded are skipped, so an interrupted upgrade is finished by
running it again; until then the store reads the same (the reader takes both layouts).

pattern-lens's `tokens` are `tokenizer.tokenize(text)`, which needs the model's tokenizer: an
export brings its model's (it upgrades the prompts it finds cached), `lens-cache cache upgrade`
loads each model's from `tokenizer_name` in its `model_cfg.json` (or the one it is given).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from lens_cache.errors import ModelLoadError
from lens_cache.formats import MAX_JSON_BYTES
from lens_cache.indexer import write_indexes
from lens_cache.layout import (
    DEFAULT_MODEL,
    MODEL_CFG_NAME,
    PROMPT_NAME,
    PROMPTS_INDEX,
    prompts_folder,
)
from lens_cache.locking import store_lock
from lens_cache.reader import model_names
from lens_cache.records import is_old_layout, reader_record, stored_record
from lens_cache.store import read_json, remove_orphaned_tmps, write_json

Tokenize = Callable[[str], list[str]]  # text -> tokenizer.tokenize(text)


def old_prompt_dirs(model_path: Path) -> list[Path]:
    """The prompt folders of one model whose `prompt.json` is in the old layout."""
    folders = sorted(prompts_folder(model_path).glob(f"*/{PROMPT_NAME}"))
    return [p.parent for p in folders if _is_old(p)]


def _is_old(path: Path) -> bool:
    try:
        return is_old_layout(read_json(path))
    except (OSError, ValueError):  # unreadable: `cache verify` names it; nothing to upgrade
        return False


def upgrade_prompt(directory: Path, tokenize: Tokenize) -> bool:
    """Rewrite one `prompt.json` in the current layout; False when it already was."""
    path = Path(directory) / PROMPT_NAME
    remove_orphaned_tmps(Path(directory))  # an upgrade killed while writing this one
    stored = read_json(path)
    if not is_old_layout(stored):
        return False
    record = reader_record(stored)
    write_json(path, stored_record(record, tokenize(record["text"])))
    return True


def upgrade_model(model_path: Path, tokenize: Tokenize, folders=None) -> int:
    """Upgrade the old records of one model (or only `folders`); how many were rewritten."""
    todo = old_prompt_dirs(model_path) if folders is None else folders
    return sum(upgrade_prompt(d, tokenize) for d in todo)


def upgrade_store(
    save_path: Path, tokenizers: dict[str, str] | None = None, log=print
) -> dict[str, int]:
    """Upgrade every model of a store, then rewrite its indexes if anything changed.

    Args:
        tokenizers: model name -> tokenizer to load (a local folder or a Hub name) for models
            whose `model_cfg.json` names none that loads.

    Returns:
        model name -> prompts rewritten.

    Raises:
        ModelLoadError: a model has old records and its tokenizer cannot be loaded.
    """
    save_path, done = Path(save_path), {}
    with store_lock(save_path, "upgrading prompt.json files"):
        for name in model_names(save_path):
            folders = old_prompt_dirs(save_path / name)
            if folders:
                tokenize = load_tokenize(save_path / name, (tokenizers or {}).get(name))
                done[name] = upgrade_model(save_path / name, tokenize, folders)
                log(f"{name}: {done[name]} prompt.json files upgraded")
        if done:
            write_indexes(save_path)
    return done


def indexed_old_prompts(save_path: Path) -> dict[str, int]:
    """model name -> how many records its `prompts.jsonl` lists in the old layout, read
    cheaply enough for every `view`: a line is parsed only when its text has `"token_ids"`
    before `"lens_cache"` (the old layout's order; in the current one `token_ids` sits inside
    `lens_cache`, and JSON escapes every quote inside a string). Old records without ids or
    outside the index are left to `lens-cache cache upgrade`, which reads every folder."""
    counts = {}
    for name in model_names(save_path):
        index = Path(save_path) / name / PROMPTS_INDEX
        if index.is_symlink() or not index.is_file():
            continue  # a link is never followed; a missing index is made by `view`
        try:  # bytes, a line at most MAX_JSON_BYTES: an index from elsewhere is untrusted
            with open(index, "rb") as f:
                lines = iter(lambda: f.readline(MAX_JSON_BYTES + 1), b"")
                n = sum(_old_line(line) for line in lines)
        except OSError:
            continue
        counts.update({name: n} if n else {})
    return counts


def _old_line(line: bytes) -> bool:
    ids = line.find(b'"token_ids"')
    if not 0 <= ids < line.find(b'"lens_cache"'):
        return False
    try:
        return is_old_layout(json.loads(line))
    except ValueError:
        return False


def load_tokenize(model_path: Path, source: str | None = None) -> Tokenize:
    """`tokenizer.tokenize` of a model's tokenizer: `source`, else the first that loads of its
    cfg's `tokenizer_name` (TransformerLens 3), the folder or Hub name it was exported from."""
    cfg = read_json(Path(model_path) / MODEL_CFG_NAME)
    name = Path(model_path).name
    tried = [source] if source else _tokenizer_sources(name, cfg)
    from transformers import AutoTokenizer  # only an upgrade needs it

    errors = []
    for candidate in tried:
        try:
            return AutoTokenizer.from_pretrained(candidate).tokenize
        except (OSError, ValueError) as e:
            errors.append(f"{candidate!r}: {str(e).splitlines()[0] if str(e) else e}")
    why = "; ".join(errors) or "its model_cfg.json names none"
    raise ModelLoadError(f"cannot load {name}'s tokenizer ({why}); {_HINT.format(name)}")


def _tokenizer_sources(name: str, cfg: dict) -> list[str]:
    # here, not at the top: `view` and `cache` import this module and must not import torch
    from lens_cache.models import SMOLLM2_SOURCE, smollm2_dir

    source = (cfg.get("lens_cache") or {}).get("source")
    found = [cfg.get("tokenizer_name"), source if source != SMOLLM2_SOURCE else None]
    if name == DEFAULT_MODEL:
        found.append(str(smollm2_dir()))
    return [s for s in dict.fromkeys(found) if s and not str(s).endswith(".gguf")]


_HINT = "give it with --tokenizer {0}=PATH_OR_NAME (the folder or Hub name the model came from)"
