"""Prompts from datasets: local parquet / jsonl / csv files, `save_to_disk` folders, Hub names.

`read_dataset` turns each row into a prompt dict (`lens_cache.prompts.make_prompt`) whose
`meta` holds the chosen label columns, ready for `lens_cache.export(prompts=...)`.

Local files are read with pyarrow and the standard library, so they need nothing beyond
lens_cache's own dependencies. `save_to_disk` folders, folders of data files and Hub names go
through the `datasets` package, imported only then (it is a test extra: `pip install datasets`).

Example:
    >>> prompts = read_dataset("reviews.parquet", label_columns=["label"])
    >>> lens_cache.export("gpt2", prompts=prompts, save_path="store")
"""

from __future__ import annotations

import datetime
import decimal
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lens_cache.errors import (
    DatasetNotFoundError,
    DatasetsNotInstalledError,
    DatasetSourceError,
    MissingColumnError,
    MissingSplitError,
)
from lens_cache.progress import warn
from lens_cache.prompts import make_prompt

TABLE_SUFFIXES = (".parquet", ".csv", ".tsv", ".jsonl", ".ndjson", ".json")


@dataclass
class _Source:
    """A loaded split: its column names and a way to fetch one column as Python values."""

    name: str
    columns: list[str]
    column: Callable[[str], list]


def read_dataset(
    name_or_path,
    *,
    split: str | None = "train",
    text_column: str = "text",
    label_columns=(),
    config: str | None = None,
) -> list[dict]:
    """Read prompts from a dataset, one per row, with label columns in `meta`.

    Args:
        name_or_path (`str` or `Path`): a `.parquet`, `.jsonl` / `.ndjson` / `.json`, `.csv` or
            `.tsv` file; a folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`;
            a folder of data files; or a Hugging Face Hub dataset name (needs the network).
        split (`str`, *optional*, defaults to `"train"`): the split to read. A single file holds
            one split, `train`; `None` takes a folder's only split.
        text_column (`str`, *optional*, defaults to `"text"`): the column holding the prompt text.
        label_columns (list of `str`, or a comma-separated `str`, *optional*): columns copied
            into each prompt's `meta`. Values become JSON-ready: numpy scalars become Python
            numbers, dates ISO strings, NaN `None`.
        config (`str`, *optional*): the dataset configuration, for Hub datasets that have several.

    Returns:
        Prompt dicts `{"text", "hash", "meta"}` in row order. Rows whose text is empty or missing
        are left out, with a warning on stderr.

    Raises:
        DatasetNotFoundError: no such file or folder, and no such Hub dataset (or offline).
        MissingColumnError: the text or a label column is missing (the message lists columns).
        MissingSplitError: the split is missing (the message lists splits).
        DatasetsNotInstalledError: the source needs `datasets`, which is not installed.
        DatasetSourceError: the file cannot be read, or a label cannot be stored as JSON.
    """
    labels = _label_list(label_columns)
    source = _load(name_or_path, split, config)
    for column in (text_column, *labels):
        if column not in source.columns:
            raise MissingColumnError(
                f"{source.name} has no column {column!r}; its columns: {', '.join(source.columns)}"
            )
    return _to_prompts(source, text_column, labels)


def _label_list(label_columns) -> list[str]:
    if isinstance(label_columns, str):
        label_columns = label_columns.split(",")
    return [c.strip() for c in label_columns if c.strip()]


def _to_prompts(source: _Source, text_column: str, labels: list[str]) -> list[dict]:
    texts = source.column(text_column)
    values = {c: source.column(c) for c in labels}
    prompts, skipped = [], 0
    for row, text in enumerate(texts):
        if text is None or (isinstance(text, str) and not text.strip()):
            skipped += 1
            continue
        if not isinstance(text, str):
            raise DatasetSourceError(
                f"{source.name}: column {text_column!r} holds {type(text).__name__} at row {row}, "
                "not text; choose the text column with --text-column"
            )
        meta = {
            c: _jsonable(values[c][row], f"{source.name}: column {c!r} row {row}") for c in labels
        }
        prompts.append(make_prompt(text, meta))
    if skipped:
        warn(f"{source.name}: skipped {skipped} rows with empty {text_column!r}")
    if not prompts:
        raise DatasetSourceError(f"{source.name}: no row has text in column {text_column!r}")
    return prompts


def _jsonable(value, where: str):
    """A label value as plain JSON data (what prompt.json can hold)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # NaN is how pandas and arrow spell "missing"; JSON has no NaN
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v, where) for k, v in value.items()}
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    raise DatasetSourceError(
        f"{where} holds {type(value).__name__}, which JSON cannot hold; leave that column out "
        "of the label columns"
    )


# --- loading ---------------------------------------------------------------------------------


def _load(name_or_path, split: str | None, config: str | None) -> _Source:
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return _load_file(path, split)
    if path.is_dir():
        return _load_folder(path, split)
    if _looks_like_path(str(name_or_path)):
        raise DatasetNotFoundError(f"dataset file or folder not found: {path}")
    return _load_hub(str(name_or_path), split, config)


def _looks_like_path(name: str) -> bool:
    """A Hub name is `name` or `org/name`; anything with a file suffix or a path prefix is a
    local path that does not exist, and asking the Hub for it would only confuse the error."""
    return name.startswith(("/", ".", "~")) or name.lower().endswith(TABLE_SUFFIXES)


def _load_file(path: Path, split: str | None) -> _Source:
    if split not in (None, "train"):
        raise MissingSplitError(f"{path} is a single file, which holds one split: train")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return _table_source(str(path), pq.read_table(path))
        if suffix in (".csv", ".tsv"):
            import pyarrow.csv as pcsv

            parse = pcsv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ",")
            return _table_source(str(path), pcsv.read_csv(path, parse_options=parse))
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise DatasetSourceError(f"cannot read {path}: {e}") from e
    if suffix in (".jsonl", ".ndjson", ".json"):
        return _rows_source(str(path), _read_json_rows(path))
    raise DatasetSourceError(
        f"cannot read {path}: unknown file type {suffix!r}; use {', '.join(TABLE_SUFFIXES)}, "
        "a save_to_disk folder, or a Hub dataset name"
    )


def _table_source(name: str, table) -> _Source:
    return _Source(name, list(table.column_names), lambda c: table.column(c).to_pylist())


def _rows_source(name: str, rows: list[dict]) -> _Source:
    columns = list(dict.fromkeys(k for row in rows for k in row))  # union, first-seen order
    return _Source(name, columns, lambda c: [row.get(c) for row in rows])


def _read_json_rows(path: Path) -> list[dict]:
    """JSON lines, or (for `.json`) one JSON array of objects."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetSourceError(f"cannot read {path}: {e}") from e
    if path.suffix == ".json" and text.lstrip().startswith("["):
        rows = _parse_json(text, f"{path}")
    else:
        lines = enumerate(text.splitlines(), 1)
        rows = [_parse_json(line, f"{path}:{n}") for n, line in lines if line.strip()]
    if not all(isinstance(row, dict) for row in rows):
        raise DatasetSourceError(f"cannot read {path}: every row must be a JSON object")
    return rows


def _parse_json(text: str, where: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetSourceError(f"{where}: not valid JSON ({e.msg})") from e


def _datasets():
    try:
        import datasets
    except ImportError as e:
        raise DatasetsNotInstalledError(
            "reading save_to_disk folders, folders of data files and Hub datasets needs the "
            "`datasets` package: pip install datasets (local .parquet, .jsonl and .csv files "
            "do not)"
        ) from e
    return datasets


def _load_folder(path: Path, split: str | None) -> _Source:
    datasets = _datasets()
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        try:
            loaded = datasets.load_from_disk(str(path))
        except (OSError, ValueError) as e:
            raise DatasetSourceError(f"cannot read the saved dataset {path}: {e}") from e
        return _dataset_source(str(path), _pick_split(loaded, split, str(path)))
    return _load_with_datasets(str(path), split, None)


def _load_hub(name: str, split: str | None, config: str | None) -> _Source:
    return _load_with_datasets(name, split, config)


def _load_with_datasets(name: str, split: str | None, config: str | None) -> _Source:
    """`datasets.load_dataset` on a Hub name or a folder of data files."""
    datasets = _datasets()
    try:
        loaded = datasets.load_dataset(name, config, split=split)
    except ValueError as e:
        if "split" in str(e).lower():
            raise MissingSplitError(f"{name}: no split {split!r} ({e})") from e
        raise DatasetSourceError(f"cannot load {name}: {e}") from e
    except (OSError, ConnectionError) as e:  # datasets' not-found and offline errors
        raise DatasetNotFoundError(
            f"{name} is not a local file or folder, and the Hugging Face Hub could not give it "
            f"({type(e).__name__}: {e}); check the name, the network, or HF_HUB_OFFLINE"
        ) from e
    return _dataset_source(name, _pick_split(loaded, split, name))


def _pick_split(loaded, split: str | None, name: str):
    """A `Dataset` from what `datasets` returned (a `Dataset` or a `DatasetDict`)."""
    if not hasattr(loaded, "keys"):  # a single Dataset
        own = loaded.split
        if split is not None and own is not None and str(own) != split:
            raise MissingSplitError(f"{name} holds one split, {own}; no split {split!r}")
        return loaded
    splits = list(loaded.keys())
    if split is None and len(splits) == 1:
        return loaded[splits[0]]
    if split is None:
        raise MissingSplitError(f"{name} has several splits ({', '.join(splits)}); choose one")
    if split not in loaded:
        raise MissingSplitError(f"{name} has no split {split!r}; its splits: {', '.join(splits)}")
    return loaded[split]


def _dataset_source(name: str, dataset) -> _Source:
    return _Source(
        name, list(dataset.column_names), lambda c: list(dataset.select_columns([c])[:][c])
    )
