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

import contextlib
import datetime
import decimal
import json
import math
from collections.abc import Callable, Iterator
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
from lens_cache.prompts import is_unicode, make_prompt

TABLE_SUFFIXES = (".parquet", ".csv", ".tsv", ".jsonl", ".ndjson", ".json")
ROWS_PER_BATCH = 1024  # rows decoded at a time from parquet, arrow and `datasets`


@dataclass
class _Source:
    """An opened split: its column names and a way to walk its rows, reading as it goes.

    `rows(columns)` yields one `{column: value}` dict per row with just those columns, so a
    caller that stops early (say `-n 100` of a large Hub dataset) never reads the rest.
    """

    name: str
    columns: list[str]
    rows: Callable[[list[str]], Iterator[dict]]


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
    return list(
        iter_dataset(
            name_or_path,
            split=split,
            text_column=text_column,
            label_columns=label_columns,
            config=config,
        )
    )


def iter_dataset(
    name_or_path,
    *,
    split: str | None = "train",
    text_column: str = "text",
    label_columns=(),
    config: str | None = None,
    streaming: bool = False,
) -> Iterator[dict]:
    """`read_dataset`, one prompt at a time: rows are read only as far as they are consumed.

    Opening the source and checking its columns and split happen in this call, so those errors
    come before any prompt does. Parquet files, JSON lines and `save_to_disk` folders are read
    batch by batch; CSV files whole. With `streaming=True`, Hub datasets and folders of data
    files are streamed (`datasets`' `streaming=True`), so taking the first 100 prompts of a
    terabyte dataset downloads only the start of its first file; without it they are
    downloaded whole into the `datasets` cache first, which a resumed run then reuses.

    Example:
        >>> prompts = iter_dataset("monology/pile-uncopyrighted", streaming=True)
        >>> lens_cache.export("gpt2", prompts=prompts, n_samples=100)

    In a JSON lines file, columns are those of the first row; a later row without one counts
    as empty text or a missing (`None`) label.
    """
    labels = _label_list(label_columns)
    source = _load(name_or_path, split, config, streaming)
    for column in (text_column, *labels):
        if column not in source.columns:
            raise MissingColumnError(
                f"{source.name} has no column {column!r}; its columns: {', '.join(source.columns)}"
            )
    return _prompts(source, text_column, labels)


def _label_list(label_columns) -> list[str]:
    if isinstance(label_columns, str):
        label_columns = label_columns.split(",")
    return [c.strip() for c in label_columns if c.strip()]


def _prompts(source: _Source, text_column: str, labels: list[str]) -> Iterator[dict]:
    produced = skipped = 0
    try:
        for row_number, row in enumerate(source.rows(list(dict.fromkeys([text_column, *labels])))):
            text = row.get(text_column)
            if text is None or (isinstance(text, str) and not text.strip()):
                skipped += 1
                continue
            if not isinstance(text, str):
                raise DatasetSourceError(
                    f"{source.name}: column {text_column!r} holds {type(text).__name__} at row "
                    f"{row_number}, not text; choose the text column with --text-column"
                )
            if not is_unicode(text):
                raise DatasetSourceError(
                    f"{source.name}: row {row_number} holds a lone surrogate escape "
                    f"(\\ud800-\\udfff) in {text_column!r}, not Unicode text"
                )
            where = f"{source.name} row {row_number}"
            meta = {c: _jsonable(row.get(c), f"{where} column {c!r}") for c in labels}
            produced += 1
            yield make_prompt(text, meta)
    finally:  # also when the consumer stops early: say what was skipped so far
        if skipped:
            warn(f"{source.name}: skipped {skipped} rows with empty {text_column!r}")
    if not produced:
        raise DatasetSourceError(f"{source.name}: no row has text in column {text_column!r}")


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


def _load(name_or_path, split: str | None, config: str | None, streaming: bool) -> _Source:
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return _load_file(path, split)
    if path.is_dir():
        return _load_folder(path, split, streaming)
    if _looks_like_path(str(name_or_path)):
        raise DatasetNotFoundError(f"dataset file or folder not found: {path}")
    return _load_with_datasets(str(name_or_path), split, config, streaming)


def _looks_like_path(name: str) -> bool:
    """A Hub name is `name` or `org/name`; anything with a file suffix or a path prefix is a
    local path that does not exist, and asking the Hub for it would only confuse the error."""
    return name.startswith(("/", ".", "~")) or name.lower().endswith(TABLE_SUFFIXES)


def _load_file(path: Path, split: str | None) -> _Source:
    if split not in (None, "train"):
        raise MissingSplitError(f"{path} is a single file, which holds one split: train")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _parquet_source(path)
    if suffix in (".csv", ".tsv"):
        return _csv_source(path, delimiter="\t" if suffix == ".tsv" else ",")
    if suffix in (".jsonl", ".ndjson"):
        return _json_lines_source(path)
    if suffix == ".json":
        return _json_source(path)
    raise DatasetSourceError(
        f"cannot read {path}: unknown file type {suffix!r}; use {', '.join(TABLE_SUFFIXES)}, "
        "a save_to_disk folder, or a Hub dataset name"
    )


@contextlib.contextmanager
def _arrow_errors(path: Path):
    """Turn pyarrow's read errors (ArrowInvalid is a ValueError) into a named one."""
    try:
        yield
    except (OSError, ValueError) as e:
        raise DatasetSourceError(f"cannot read {path}: {e}") from e


def _parquet_source(path: Path) -> _Source:
    import pyarrow.parquet as pq

    with _arrow_errors(path):
        file = pq.ParquetFile(path)
        columns = list(file.schema_arrow.names)

    def rows(wanted: list[str]) -> Iterator[dict]:
        with _arrow_errors(path):
            for batch in file.iter_batches(batch_size=ROWS_PER_BATCH, columns=wanted):
                yield from batch.to_pylist()

    return _Source(str(path), columns, rows)


def _csv_source(path: Path, delimiter: str) -> _Source:
    """CSV is read whole: its column types are inferred from every row, not the first block."""
    import pyarrow.csv as pcsv

    with _arrow_errors(path):
        table = pcsv.read_csv(path, parse_options=pcsv.ParseOptions(delimiter=delimiter))

    def rows(wanted: list[str]) -> Iterator[dict]:
        for batch in table.select(wanted).to_batches(ROWS_PER_BATCH):
            yield from batch.to_pylist()

    return _Source(str(path), list(table.column_names), rows)


def _json_lines_source(path: Path) -> _Source:
    first = next(_json_lines(path), None)
    columns = list(first[1]) if first else []

    def rows(wanted: list[str]) -> Iterator[dict]:
        for _, row in _json_lines(path):
            yield {c: row.get(c) for c in wanted}

    return _Source(str(path), columns, rows)


def _json_lines(path: Path) -> Iterator[tuple[int, dict]]:
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    yield lineno, _json_object(line, f"{path}:{lineno}")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetSourceError(f"cannot read {path}: {e}") from e


def _json_source(path: Path) -> _Source:
    """A `.json` file: one array of objects (read whole), or JSON lines under that suffix."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetSourceError(f"cannot read {path}: {e}") from e
    if not text.lstrip().startswith("["):
        return _json_lines_source(path)
    records = _parse_json(text, str(path))
    if not all(isinstance(row, dict) for row in records):
        raise DatasetSourceError(f"cannot read {path}: every row must be a JSON object")
    columns = list(dict.fromkeys(k for row in records for k in row))  # union, first-seen order

    def rows(wanted: list[str]) -> Iterator[dict]:
        return ({c: row.get(c) for c in wanted} for row in records)

    return _Source(str(path), columns, rows)


def _json_object(text: str, where: str) -> dict:
    value = _parse_json(text, where)
    if not isinstance(value, dict):
        raise DatasetSourceError(f"{where}: every row must be a JSON object")
    return value


def _parse_json(text: str, where: str):
    try:
        return json.loads(text)
    # json raises a plain ValueError for integers of over 4,300 digits and RecursionError for
    # deep nesting: both are an unreadable row too.
    except (ValueError, RecursionError) as e:
        why = getattr(e, "msg", "a number too long or nesting too deep")
        raise DatasetSourceError(f"{where}: not valid JSON ({why})") from e


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


def _load_folder(path: Path, split: str | None, streaming: bool) -> _Source:
    datasets = _datasets()
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        try:
            loaded = datasets.load_from_disk(str(path))  # memory-mapped: rows read lazily
        except (OSError, ValueError) as e:
            raise DatasetSourceError(f"cannot read the saved dataset {path}: {e}") from e
        return _dataset_source(str(path), _pick_split(loaded, split, str(path)))
    return _load_with_datasets(str(path), split, None, streaming)


def _load_with_datasets(name: str, split: str | None, config: str | None, streaming: bool):
    """`datasets.load_dataset` on a Hub name or a folder of data files."""
    datasets = _datasets()
    try:
        loaded = datasets.load_dataset(name, config, split=split, streaming=streaming)
        return _dataset_source(name, _pick_split(loaded, split, name))
    except ValueError as e:
        if "split" in str(e).lower():
            raise MissingSplitError(f"{name}: no split {split!r} ({e})") from e
        raise DatasetSourceError(f"cannot load {name}: {e}") from e
    except (OSError, ConnectionError) as e:  # datasets' not-found and offline errors
        raise DatasetNotFoundError(
            f"{name} is not a local file or folder, and the Hugging Face Hub could not give it "
            f"({type(e).__name__}: {e}); check the name, the network, or HF_HUB_OFFLINE"
        ) from e


def _pick_split(loaded, split: str | None, name: str):
    """A `Dataset` / `IterableDataset` from what `datasets` returned (one split or a dict)."""
    if not hasattr(loaded, "keys"):  # a single split
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
    """A `datasets.Dataset` or, streamed, an `IterableDataset`. A stream may not know its
    columns until it has read a row, so then the first row names them."""
    columns = dataset.column_names
    if columns is None:
        first = next(iter(dataset), None)
        columns = list(first) if first else []

    def rows(wanted: list[str]) -> Iterator[dict]:
        if isinstance(dataset, _datasets().IterableDataset):
            yield from ({c: row.get(c) for c in wanted} for row in dataset)
            return
        for batch in dataset.select_columns(wanted).iter(batch_size=ROWS_PER_BATCH):
            n_rows = len(batch[wanted[0]])
            yield from ({c: batch[c][i] for c in wanted} for i in range(n_rows))

    return _Source(name, list(columns), rows)
