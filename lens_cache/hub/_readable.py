"""Which stored prompts a push can read: a prompt whose files would not read is left out before
the shards are planned, with one line naming the file, so one damaged or hostile prompt (a
store from elsewhere) does not stop the push of the others.

The checks read headers only: a prompt's `prompt.json`, a zip's directory and each needed
member's `.npy` header, safetensors headers (`lens_cache.formats`, which checks every length
and extent against the file); nothing is inflated, and a link is never followed. Damage deeper
in a file (a flipped bit in deflated data) still stops the push when its shard is built,
naming the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path

from lens_cache import formats
from lens_cache.damage import damaged, reading
from lens_cache.errors import (
    DamagedFileError,
    FileFormatError,
    HubIntegrityError,
    NothingSelectedError,
    UnsafeRepoPathError,
)
from lens_cache.hub._layout import PATTERNS, PROMPT_KINDS, ModelPlan, check_hash
from lens_cache.hub._shards import prompt_members
from lens_cache.layout import (
    HOOKS_NAME,
    NPZ_NAME,
    PATTERN,
    PROMPT_NAME,
    RESID_KINDS,
    RESIDUALS_NAME,
    STACKED_NAME,
    hook_name,
    prompt_folder,
    prompts_folder,
)
from lens_cache.progress import warn
from lens_cache.reader import prompt_records
from lens_cache.records import TOKENIZER_TOKENS, reader_record
from lens_cache.store import read_json

_SKIPPED = "hub push: skipped a prompt"


# --- records ---------------------------------------------------------------------------------


def local_records(save_path: Path, model: str) -> list[dict]:
    """The stored prompts of `model` a push can describe: `prompt_records` (every complete
    folder) less those whose record lacks a usable hash, text or length, or repeats a hash;
    each left out, and each folder whose `prompt.json` is there but does not read, gets one
    line."""
    kept, seen = [], set()
    for record in prompt_records(Path(save_path) / model):
        problem = _record_problem(record, seen)
        if problem:
            warn(f"{_SKIPPED}: a prompt.json of {model} in {save_path} {problem}")
            continue
        seen.add(record["hash"])
        kept.append(record)
    _name_unreadable(Path(save_path), model, seen)
    return kept


def _record_problem(record, seen: set) -> str | None:
    if not isinstance(record, dict) or not isinstance(record.get("hash"), str):
        return "has no hash"
    try:
        check_hash(record["hash"], "prompt.json")
    except UnsafeRepoPathError:
        return f"has the hash {record['hash'][:40]!r}, not a prompt folder's name"
    if record["hash"] in seen:
        return f"repeats the hash {record['hash']}"
    n = reader_record(record).get("n_tokens")  # the patterns' side (pattern-lens's is one less)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        return f"({record['hash']}) has no token count"
    if not isinstance(record.get("text"), str) or not isinstance(record.get("meta") or {}, dict):
        return f"({record['hash']}) has no text, or meta that is not a map"
    return None


def _name_unreadable(save_path: Path, model: str, listed: set) -> None:
    """One line for each prompt folder whose `prompt.json` is there but does not read
    (`prompt_records` passes over them as if interrupted; a link it has named already)."""
    prompts = prompts_folder(save_path / model)
    if not prompts.is_dir():
        return
    for directory in sorted(prompts.iterdir(), key=lambda p: p.name):
        path = directory / PROMPT_NAME
        if directory.name in listed or directory.is_symlink() or path.is_symlink():
            continue
        if path.is_file():
            try:
                with reading(path, save_path):
                    read_json(path)
            except DamagedFileError as e:
                warn(f"{_SKIPPED}: {e}")


# --- files -----------------------------------------------------------------------------------


def drop_unreadable(save_path: Path, plans: list[ModelPlan]) -> list[ModelPlan]:
    """`plans` less the prompts whose selected tensors would not read (one line each).

    Raises:
        NothingSelectedError: no selected prompt is left.
    """
    kept = []
    for plan in plans:
        records = []
        for record in plan.records:
            try:
                check_prompt(Path(save_path), plan, record)
            except (DamagedFileError, HubIntegrityError) as e:
                warn(f"{_SKIPPED}: {e}")
                continue
            records.append(record)
        if records:
            kept.append(dataclasses.replace(plan, records=records))
    if not kept:
        raise NothingSelectedError(
            f"nothing to push: the files of every selected prompt of {save_path} are damaged"
        )
    return kept


def check_prompt(store: Path, plan: ModelPlan, record: dict) -> None:
    """Raise unless every tensor of `record` that `plan` selects is there, of its shape, in
    a file whose header reads.

    Raises:
        DamagedFileError: names the file (`StoreLinkError` for a link).
        HubIntegrityError: a per-prompt kind's file lacks a planned field.
    """
    directory = prompt_folder(store, plan.name, record["hash"])
    with _file(directory / PROMPT_NAME, store):
        # the record must be its folder's own (the first check, so a folder that is a link is
        # refused before any file in it is looked at)
        own = reader_record(read_json(directory / PROMPT_NAME))
        if own != {k: v for k, v in record.items() if k != TOKENIZER_TOKENS}:
            raise FileFormatError("it is not the record listed under its hash")
    t = record["n_tokens"]
    for kind, layers in plan.tensors.items():
        if kind == PATTERNS:
            _check_patterns(store, directory, list(layers), (1, plan.n_heads, t, t))
        elif kind in RESID_KINDS:
            keys = [hook_name(kind, layer) for layer in layers]
            _check_sites(store, directory, keys, [t, plan.d_model])
        else:
            _check_prompt_kind(store, plan, record, PROMPT_KINDS[kind], layers)


@contextlib.contextmanager
def _file(path: Path, store: Path):
    """`damage.reading`, with a missing file named as damage too (the prompt promised it)."""
    try:
        with reading(path, store):
            yield
    except FileNotFoundError as e:
        raise damaged(path, store, e) from None


def _check_patterns(store: Path, directory: Path, layers: list[int], shape: tuple) -> None:
    npz, stacked = directory / NPZ_NAME, directory / STACKED_NAME
    if not os.path.lexists(npz) and os.path.lexists(stacked):
        with _file(stacked, store):
            formats.open_npy(stacked, lambda found: formats.check_stacked(found, shape))
        return
    names = [hook_name(PATTERN, layer) for layer in layers]
    with _file(npz, store):  # headers only: nothing past them is inflated
        formats.check_npz_headers(npz, names, shape)


def _check_sites(store: Path, directory: Path, keys: list[str], shape: list[int]) -> None:
    """Each of `keys` in the residuals (else in the other hooks' file, where the reader also
    looks), of `shape`."""
    headers = {}
    for path in (directory / RESIDUALS_NAME, directory / HOOKS_NAME):
        if os.path.lexists(path):
            with _file(path, store):
                headers[path] = formats.safetensors_header(path)[0]
    for key in keys:
        where = next((p for p, h in headers.items() if key in h), directory / RESIDUALS_NAME)
        entry = headers.get(where, {}).get(key)
        with _file(where, store):
            if entry is None or entry["shape"] != shape or entry["dtype"] == "BOOL":
                found = "none" if entry is None else entry["shape"]
                raise FileFormatError(f"{key}: shape {found}, expected {shape}")


def _check_prompt_kind(store: Path, plan: ModelPlan, record: dict, kind, layers: dict) -> None:
    """The file of a per-prompt kind has every planned layer's fields, each over the prompt's
    positions (what a pull checks of it)."""
    members = prompt_members(store, plan.name, record["hash"], kind)
    path = prompt_folder(store, plan.name, record["hash"]) / kind.filename
    if kind.check_metadata and not kind.check_metadata(formats.safetensors_header(path)[2]):
        raise HubIntegrityError(f"{path}: its metadata is not what lens_cache writes")
    for layer, names in layers.items():
        found = {f: sh for f, _, sh in members.get(layer, ())}
        for name in names or kind.fields:
            shape = found.get(name)
            if shape is None or len(shape) <= (kind.position_axis or 0):
                raise HubIntegrityError(f"{path}: no {name} at layer {layer}")
            if kind.check is not None and not kind.check(name, shape, plan.cfg):
                raise HubIntegrityError(f"{path}: {name} {list(shape)} does not fit the model")
            axis = kind.position_axis
            if axis is not None and name in kind.fields and shape[axis] != record["n_tokens"]:
                raise HubIntegrityError(f"{path}: {name} is not over the prompt's tokens")
