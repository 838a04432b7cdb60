"""The kind ``head_metrics`` read back: one prompt's file, and every prompt's rows as one long
table (``Store.head_metrics``, ``<model>/head_metrics.parquet``).

``head_metrics.safetensors`` holds ``metrics`` (``[layers, heads, metrics]`` float32, written by
`lens_cache.store`), ``layers`` (``[layers]`` int64) and, in its metadata, the metric names as
a JSON list. The file may come from anywhere: its header is checked by `lens_cache.formats`
before any data is read, and the names, shapes and layers are checked against each other.

The table has one row per prompt, layer and head: ``hash``, ``layer``, ``head``, each metric
under the viewer's name (`attention_metrics.METRIC_NAMES`), ``dla_mean`` (the head's direct
logit attribution averaged over the prompt's positions, null without head contributions),
``n_tokens``, then one column per metadata key of the prompts (a key that would take a column's
name is prefixed ``meta_``; values of mixed types are kept as their JSON text).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from lens_cache import formats
from lens_cache.attention_metrics import METRIC_NAMES
from lens_cache.damage import reading, refuse_links
from lens_cache.errors import DamagedFileError, FileFormatError
from lens_cache.layout import (
    HEAD_METRICS,
    HEAD_METRICS_NAME,
    HEADS_NAME,
    METRICS_LAYERS_MEMBER,
    METRICS_MEMBER,
    heads_member,
    parse_heads_member,
    prompts_folder,
)
from lens_cache.progress import warn

FIXED_COLUMNS = ("hash", "layer", "head", *METRIC_NAMES, "dla_mean", "n_tokens")


def scan(model_path: Path, records: list[dict]):
    """The table of one model folder's prompts that store ``head_metrics`` (`records` in the
    reader's form, in the order the rows take), or None when none does. A record whose hash is
    not a folder name, or whose files are links out of the store, is left out or refused."""
    model_path = Path(model_path)
    parts = []
    for record in records:
        own = record.get("lens_cache") or {}
        hash_ = record.get("hash")
        if HEAD_METRICS not in (own.get("hooks") or []) or not _is_name(hash_):
            continue
        try:
            columns = _prompt_columns(model_path, record, hash_)
        except DamagedFileError as e:  # one damaged prompt is named and left out, not fatal
            warn(f"{e}; that prompt is left out of {model_path.name}'s head metrics table")
            continue
        if columns is not None:
            parts.append((record, columns))
    return build_table(parts) if parts else None


def _prompt_columns(model_path: Path, record: dict, hash_: str) -> dict | None:
    """One prompt's columns, or None when its file is missing or holds no layer."""
    directory = prompts_folder(model_path) / hash_
    path = directory / HEAD_METRICS_NAME
    refuse_links(path, model_path.parent)
    if not path.is_file():
        return None
    with reading(path, model_path.parent):
        metrics = read_head_metrics(path)
    if not metrics:
        return None
    return prompt_rows(record, metrics, _dla(directory, model_path.parent))


def _is_name(hash_) -> bool:
    return isinstance(hash_, str) and hash_.replace("-", "").replace("_", "").isalnum()


def _dla(directory: Path, save: Path) -> tuple[list[int], np.ndarray] | None:
    """``(layers, [layers, heads, pos])`` of a prompt's stored DLA, or None."""
    path = directory / HEADS_NAME
    refuse_links(path, save)
    if not path.is_file():
        return None
    with reading(path, save):
        header, _, _ = formats.safetensors_header(path)
        found = sorted(p[0] for p in map(parse_heads_member, header) if p and p[1] == "dla")
        if not found:
            return None
        return found, np.stack([formats.read_tensor(path, heads_member(i, "dla")) for i in found])


def read_head_metrics(path: Path) -> dict[int, dict[str, np.ndarray]]:
    """``{layer: {metric: [heads] float64}}`` of one prompt's ``head_metrics.safetensors``, every
    name of `METRIC_NAMES` present (NaN for a metric the file does not hold).

    Raises:
        FileFormatError: a malformed header, names, shape or layers.
    """
    _, _, meta = formats.safetensors_header(path)
    names = _names(meta.get("metrics"))
    values = formats.read_tensor(path, METRICS_MEMBER)
    layers = formats.read_tensor(path, METRICS_LAYERS_MEMBER)
    if values.ndim != 3 or values.shape[2] != len(names) or layers.shape != values.shape[:1]:
        raise FileFormatError(
            f"head metrics of shape {values.shape} for {len(names)} names and {layers.shape} layers"
        )
    if len(set(layers.tolist())) != len(layers) or (layers < 0).any():
        raise FileFormatError(f"head metrics layers {layers.tolist()} repeat or are negative")
    nan = np.full(values.shape[1], np.nan)
    return {
        int(layer): {
            n: values[k, :, names.index(n)].astype(np.float64) if n in names else nan
            for n in METRIC_NAMES
        }
        for k, layer in enumerate(layers.tolist())
    }


def _names(text) -> list[str]:
    try:
        names = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        names = None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise FileFormatError("head metrics metadata 'metrics' is not a JSON list of names")
    return names


def prompt_rows(record: dict, metrics: dict, dla: tuple | None) -> dict[str, np.ndarray]:
    """One prompt's columns (no metadata yet): `metrics` from :func:`read_head_metrics`, `dla`
    ``(layers, [layers, heads, pos])`` from its head contributions or None."""
    layers = sorted(metrics)
    n_heads = len(metrics[layers[0]]["first"])
    n = len(layers) * n_heads
    cols = {
        "layer": np.repeat(np.array(layers, dtype=np.int32), n_heads),
        "head": np.tile(np.arange(n_heads, dtype=np.int32), len(layers)),
    }
    for name in METRIC_NAMES:
        cols[name] = np.concatenate([metrics[layer][name] for layer in layers])
    cols["dla_mean"] = _dla_means(layers, n_heads, dla)
    cols["n_tokens"] = np.full(n, int(record.get("n_tokens") or 0), dtype=np.int32)
    return cols


def _dla_means(layers: list[int], n_heads: int, dla) -> np.ndarray:
    """Each row's mean DLA over the prompt's positions (the last, NaN, left out); NaN where the
    prompt has no contributions for that layer."""
    out = np.full((len(layers), n_heads), np.nan)
    if dla is not None:
        dla_layers, values = dla
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a head whose DLA is all NaN
            means = np.nanmean(values.astype(np.float64), axis=-1)
        for k, layer in enumerate(layers):
            if layer in dla_layers and means.shape[1] == n_heads:
                out[k] = means[dla_layers.index(layer)]
    return out.ravel()


def build_table(parts: list[tuple[dict, dict[str, np.ndarray]]]):
    """One `pyarrow.Table` from ``(record, columns)`` per prompt (see the module docstring);
    an empty table with the fixed columns when there are none."""
    import pyarrow as pa

    counts = [len(cols["layer"]) for _, cols in parts]
    hashes = [r["hash"] for r, _ in parts]
    columns = {"hash": pa.array(hashes, pa.string()).take(_repeat(counts))}
    for name in FIXED_COLUMNS[1:]:
        arrays = [cols[name] for _, cols in parts]
        integer = name in ("layer", "head", "n_tokens")
        merged = np.concatenate(arrays) if arrays else np.zeros(0, np.int32 if integer else float)
        columns[name] = pa.array(merged, from_pandas=not integer)  # NaN -> null for floats
    for key in _meta_keys(parts):
        values = [(r.get("meta") or {}).get(key) for r, _ in parts]
        column = "meta_" + key if key in FIXED_COLUMNS else key
        columns[column] = _meta_column(values, counts)
    return pa.table(columns)


def _meta_keys(parts) -> list[str]:
    keys: dict[str, None] = {}
    for record, _ in parts:
        for key in record.get("meta") or {}:
            keys.setdefault(str(key))
    return sorted(keys)


def _meta_column(values: list, counts: list[int]):
    """One metadata key's column, each prompt's value repeated over its rows."""
    import pyarrow as pa

    try:
        per_prompt = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        per_prompt = pa.array([None if v is None else json.dumps(v) for v in values], pa.string())
    if pa.types.is_null(per_prompt.type):
        per_prompt = per_prompt.cast(pa.string())
    return per_prompt.take(_repeat(counts))


def _repeat(counts: list[int]):
    """The `take` indices repeating each prompt's value over its rows."""
    import pyarrow as pa

    return pa.array(np.repeat(np.arange(len(counts)), counts), pa.int64())
