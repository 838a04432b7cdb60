"""Prompt sources: read, validate, filter, sample. Stage one of the data flow.

A prompt is a plain dict: `{"text": str, "hash": str, "meta": dict}`.
"""

from __future__ import annotations

import base64
import codecs
import hashlib
import importlib.resources
import itertools
import json
import random
from collections.abc import Iterable, Iterator
from pathlib import Path

from lens_cache.errors import (
    InvalidOptionError,
    MalformedPromptError,
    PromptsError,
    PromptsFileNotFoundError,
)
from lens_cache.layout import RECORD_KEYS

DEFAULT_PROMPTS = "default"


def prompt_hash(text: str) -> str:
    """The prompt's directory name; the same hash pattern-lens uses, so stores interoperate."""
    digest = hashlib.md5(text.encode()).digest()  # not for security: a stable short name
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def is_unicode(text: str) -> bool:
    """False for a string with a lone surrogate (JSON's `"\\ud800"` escape reads as one), which
    has no UTF-8 bytes: it could be neither hashed nor written."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def make_prompt(text: str, meta: dict | None = None) -> dict:
    """Build a prompt dict from its text and optional metadata."""
    return {"text": text, "hash": prompt_hash(text), "meta": dict(meta or {})}


def default_prompts_path() -> Path:
    """The embedded default prompt set (`data/prompts.jsonl`, shipped as package data)."""
    return Path(str(importlib.resources.files("lens_cache.data") / "prompts.jsonl"))


def read_prompts(path: str | Path) -> list[dict]:
    """Read prompts from a `.jsonl` file (`text` plus optional metadata) or a text file.

    In a `.jsonl` file, each line is an object with a non-empty `text`; a `meta` object is
    kept as the metadata, and any other keys are merged into it. In any other file, each
    non-blank line is one prompt.

    Raises:
        PromptsFileNotFoundError: the file does not exist.
        MalformedPromptError: the file is not UTF-8, or a line is not JSON, has no `text`, or
            its text is empty or not Unicode (a lone surrogate escape).
    """
    path = default_prompts_path() if str(path) == DEFAULT_PROMPTS else Path(path)
    if not path.is_file():
        raise PromptsFileNotFoundError(f"prompts file not found: {path}")
    lines = _lines(path)
    if path.suffix == ".jsonl":
        return [_parse_json_line(line, path, n) for n, line in enumerate(lines, 1) if line.strip()]
    return [make_prompt(line) for line in lines if line.strip()]


def _lines(path: Path) -> list[str]:
    """The file's lines, split at `\\n`, `\\r\\n` or `\\r` only: `str.splitlines` also splits at
    U+2028, U+0085 and form feeds, which a JSON string may hold unescaped. A UTF-8 byte order
    mark (Windows editors write one) is not part of the first prompt."""
    data = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        lineno = len(_split_lines(data[: e.start].decode("utf-8")))
        raise MalformedPromptError(
            f"{path}:{lineno}: not UTF-8 text (byte {data[e.start]:#04x}); save the file as UTF-8",
            str(path),
            lineno,
        ) from e
    return _split_lines(text)


def _split_lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _parse_json_line(line: str, path: Path, lineno: int) -> dict:
    where = f"{path}:{lineno}"
    try:
        record = json.loads(line)
    # json raises a plain ValueError for integers of over 4,300 digits and RecursionError for
    # deep nesting: both are a malformed line too.
    except (ValueError, RecursionError) as e:
        why = getattr(e, "msg", "a number too long or nesting too deep")
        raise MalformedPromptError(f"{where}: not valid JSON ({why})", str(path), lineno) from e
    if not isinstance(record, dict) or "text" not in record:
        raise MalformedPromptError(f'{where}: no "text" field', str(path), lineno)
    text = record.pop("text")
    if not isinstance(text, str):
        raise MalformedPromptError(f'{where}: "text" is not a string', str(path), lineno)
    if not text.strip():
        raise MalformedPromptError(f"{where}: empty prompt", str(path), lineno)
    if not is_unicode(text):
        raise MalformedPromptError(
            f'{where}: "text" holds a lone surrogate escape (\\ud800-\\udfff), not Unicode text',
            str(path),
            lineno,
        )
    meta = record.pop("meta", None) or {}
    if not isinstance(meta, dict):
        raise MalformedPromptError(f'{where}: "meta" is not an object', str(path), lineno)
    if record.get("hash") == prompt_hash(text):  # a store's record (its prompts.jsonl): what
        record = {k: v for k, v in record.items() if k not in RECORD_KEYS}  # it computed is no meta
    return make_prompt(text, {**meta, **record})


def select_prompts(
    prompts: Iterable[dict],
    *,
    min_chars: int | None = None,
    max_chars: int | None = None,
    raw: bool = False,
    n_samples: int | None = None,
    shuffle: bool = False,
    seed: int = 0,
) -> list[dict]:
    """Filter, split, deduplicate, shuffle and sample prompts, in that order.

    `prompts` may be any iterable, read lazily: without `shuffle`, reading stops as soon as
    `n_samples` prompts are selected, so a long (or streamed) source is read only that far.

    Args:
        min_chars: drop prompts shorter than this (after splitting).
        max_chars: split longer prompts into consecutive chunks of at most this many characters;
            each chunk keeps the metadata plus `chunk` (its index).
        raw: take every prompt exactly as written: no length filtering and no splitting.
        n_samples: keep at most this many (after shuffling, if asked).
        shuffle: shuffle with a `random.Random(seed)`, so a run is repeatable.

    Returns:
        The selected prompts; of several with the same text (one directory), the first.

    Raises:
        InvalidOptionError: a bad numeric argument.
        PromptsError: nothing is left to export.
    """
    for name, value in (
        ("min_chars", min_chars),
        ("max_chars", max_chars),
        ("n_samples", n_samples),
    ):
        if value is not None and value < 1:
            raise InvalidOptionError(f"{name} must be at least 1, got {value}")
    stream = iter(prompts)
    if not raw and max_chars is not None:
        stream = (chunk for p in stream for chunk in _split(p, max_chars))
    if not raw and min_chars is not None:
        stream = (p for p in stream if len(p["text"]) >= min_chars)
    if shuffle:
        selected = list(_unique(stream))
        random.Random(seed).shuffle(selected)
        selected = selected[:n_samples]
    else:
        selected = list(itertools.islice(_unique(stream), n_samples))
    if not selected:
        raise PromptsError("no prompts left to export (check --min-chars / --max-chars / -n)")
    return selected


def _unique(prompts: Iterator[dict]) -> Iterator[dict]:
    """Each text once (same text = same directory), first occurrence kept."""
    seen = set()
    for p in prompts:
        if p["hash"] not in seen:
            seen.add(p["hash"])
            yield p


def _split(prompt: dict, max_chars: int) -> list[dict]:
    text = prompt["text"]
    if len(text) <= max_chars:
        return [prompt]
    pieces = [text[i : i + max_chars] for i in range(0, len(text), max_chars)]
    return [make_prompt(piece, {**prompt["meta"], "chunk": i}) for i, piece in enumerate(pieces)]
