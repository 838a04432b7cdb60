"""Pooled residuals: one float32 vector per prompt and layer, as a sharded parquet dataset.

    <save>/<model>/pooled/<hook>-<pool>/data-00000-of-00002.parquet
    <save>/<model>/pooled/<hook>-<pool>/data-00001-of-00002.parquet

One row per prompt (in the order of the model's prompts.jsonl, i.e. by hash): `hash`, `text`,
`n_tokens`, `mean_loss` (when the model's logits were exported: the prompt's mean next-token
loss), one column per `meta` key (lists and objects JSON-encoded; a key that clashes with
these names gets a `meta_` prefix), and `layer_{i}`, a fixed-size list of `d_model` float32,
for every stored layer. The parquet schema's metadata (`lens_cache` key) records the model,
hook, pool and layers. `datasets.load_dataset("parquet", data_dir=...)`, pyarrow and pandas
read it as is; `load_pooled` returns `(X, y)` ready for scikit-learn.

Pools, all computed in float32 over the prompt's stored tokens (padding is never stored):

- `last_token`: the last token.
- `first_token`: position 0, which is the BOS token when the model prepends one (then it is
  the same vector for every prompt: useless for probing, kept for completeness).
- `first_real`: the first token of the text: position 1 when the model prepends a BOS
  (`default_prepend_bos` in its config), else 0.
- `mean`: the mean over every stored position, BOS included.
- `mean_real`: the mean over the text's tokens, BOS left out.

Example:
    >>> write_pooled("store", "gpt2", pool="mean")
    >>> X, y = load_pooled("store", "gpt2", pool="mean", layer=6, label="kind")
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np

from lens_cache.damage import refuse_links
from lens_cache.errors import (
    InvalidOptionError,
    MissingLabelError,
    PooledMissingError,
    StoreCorruptError,
)
from lens_cache.faults import fault_point
from lens_cache.layout import POOLED_DIR, POOLS, pool_site, pooled_name
from lens_cache.locking import store_lock_unless
from lens_cache.progress import log, warn
from lens_cache.reader import open_store, select_layers
from lens_cache.store import atomic_dir

DEFAULT_SHARD_MAX_BYTES = 500 * 10**6  # what `datasets` uses for Hub uploads
FIXED_COLUMNS = ("hash", "text", "n_tokens", "mean_loss")
LAYER_PREFIX = "layer_"


def pooled_dir(save_path, model: str, hook: str = "resid_post", pool: str = "last_token") -> Path:
    """Where `write_pooled` puts one model's pooled dataset for one hook and pool."""
    return Path(save_path) / model / POOLED_DIR / pooled_name(hook, pool)


def pool_residuals(resid: np.ndarray, pool: str, bos: bool) -> np.ndarray:
    """Pool one prompt's residuals.

    Args:
        resid (`Float[np.ndarray, "layers pos d_model"]`): float32 residuals of one prompt.
        pool (`str`): one of `POOLS`.
        bos (`bool`): whether position 0 is a BOS token the model prepended.

    Returns:
        `Float[np.ndarray, "layers d_model"]`, float32.
    """
    start = 1 if bos and resid.shape[1] > 1 else 0  # a lone BOS is all there is to take
    if pool == "last_token":
        return resid[:, -1]
    if pool == "first_token":
        return resid[:, 0]
    if pool == "first_real":
        return resid[:, start]
    if pool == "mean":
        return resid.mean(axis=1, dtype=np.float32)
    if pool == "mean_real":
        return resid[:, start:].mean(axis=1, dtype=np.float32)
    raise InvalidOptionError(f"unknown pool {pool!r}; choose from {', '.join(POOLS)}")


def write_pooled(
    save_path,
    model: str,
    hook: str = "resid_post",
    pool: str = "last_token",
    *,
    shard_max_bytes: int = DEFAULT_SHARD_MAX_BYTES,
    out_dir=None,
    quiet: bool = True,
    held: bool = False,
) -> Path:
    """Pool the stored residuals of every prompt of a model into a sharded parquet dataset.

    Every stored layer of `hook` is pooled. The dataset is built in a temporary folder and
    renamed into place, replacing an older one: readers never see a half-written dataset.

    Args:
        save_path (`str` or `Path`): the store.
        model (`str`): the model's name in the store.
        hook (`str`, *optional*, defaults to `"resid_post"`): `resid_pre`, `resid_mid`,
            `resid_post`, or the site of any other per-token hook exported at several layers
            (`hook_mlp_out`, `attn.hook_z`: `[heads, d_head]` is pooled as one vector).
        pool (`str`, *optional*, defaults to `"last_token"`): one of `POOLS` (see the module
            docstring).
        shard_max_bytes (`int`, *optional*, defaults to 500 MB): most bytes of row data per
            parquet file (measured uncompressed; a single larger row gets a file of its own).
        out_dir (`str` or `Path`, *optional*): defaults to `<save>/<model>/pooled/<hook>-<pool>`.
        quiet (`bool`, *optional*, defaults to `True`): no progress line on stderr.
        held (`bool`, *optional*, defaults to `False`): the caller holds the store's lock.

    Returns:
        The dataset's folder.

    Raises:
        ActivationsMissingError: the model, its prompts, or their residuals are not stored.
        InvalidOptionError: an unknown pool or a bad `shard_max_bytes`.
    """
    if pool not in POOLS:
        raise InvalidOptionError(f"unknown pool {pool!r}; choose from {', '.join(POOLS)}")
    if shard_max_bytes < 1:
        raise InvalidOptionError(f"shard_max_bytes must be at least 1, got {shard_max_bytes}")
    store = open_store(save_path)
    kind = pool_site(hook)
    records = store.prompts(model)
    if not records:
        raise _no_prompts(store, model)
    out = Path(out_dir) if out_dir is not None else pooled_dir(save_path, model, kind, pool)
    if out_dir is None:
        refuse_links(out, store.path)  # a received store cannot aim the write outside it
    layers = _stored_layers(store, model, records, kind)
    bos = bool(store.model_cfg(model).get("default_prepend_bos", True))
    meta = {**_loss_column(records), **_meta_columns(records)}

    def rows():
        """`(index in records, record, pooled)`; a prompt whose file is damaged (or a link) is
        left out with one line naming the file, as the viewer build leaves it out."""
        for i, record in enumerate(records):
            try:
                value = store.activations(model, record["hash"], kind, layers=layers)
            except StoreCorruptError as e:
                warn(f"pool: skipped a prompt: {e}")
                continue
            flat = value.float().reshape(*value.shape[:2], -1)  # [heads, d_head] -> one vector
            yield i, record, pool_residuals(flat.numpy(), pool, bos)

    info = {"model": model, "hook": kind, "pool": pool, "layers": layers, "bos": bos}
    task = f"writing {out.name} of {model}"
    with store_lock_unless(held, save_path, task):  # see lens_cache.locking
        atomic_dir(out, lambda tmp: _write_shards(tmp, rows(), meta, info, shard_max_bytes))
    log(f"[{model}] pooled {len(records)} prompts ({kind}, {pool}) -> {out}", quiet=quiet)
    return out


def _stored_layers(store, model: str, records: list[dict], kind: str) -> list[int]:
    """The layers of the first prompt whose file can be read (a damaged one is skipped)."""
    for record in records[:-1]:
        try:
            return store.stored_layers(model, record, kind)
        except StoreCorruptError:
            continue
    return store.stored_layers(model, records[-1], kind)


def _no_prompts(store, model: str) -> Exception:
    from lens_cache.errors import ActivationsMissingError

    return ActivationsMissingError(
        f"model {model} in {store.path} has no prompts; run: {store.export_command(model)}"
    )


# --- columns and shards ----------------------------------------------------------------------


def _loss_column(records: list[dict]) -> dict:
    """`{"mean_loss": float64 array}` when logits were exported (None where a prompt has none)."""
    import pyarrow as pa

    if not any("mean_loss" in r for r in records):
        return {}
    return {"mean_loss": pa.array([r.get("mean_loss") for r in records], pa.float64())}


def _meta_columns(records: list[dict]) -> dict:
    """`{column name: pyarrow array of that meta key over all prompts}`.

    Types are decided over every prompt at once, so all shards share one schema (`datasets`
    refuses shards whose schemas differ). A key whose values mix types is stored as strings.
    """
    keys = dict.fromkeys(k for r in records for k in r["meta"])
    columns = {}
    for key in keys:
        name = (
            key if key not in FIXED_COLUMNS and not key.startswith(LAYER_PREFIX) else f"meta_{key}"
        )
        columns[name] = _arrow_values([_cell(r["meta"].get(key)) for r in records])
    return columns


def _cell(value):
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else value


def _arrow_values(values: list):
    import pyarrow as pa

    try:
        array = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        array = None
    if array is None or not (
        pa.types.is_boolean(array.type)
        or pa.types.is_integer(array.type)
        or pa.types.is_floating(array.type)
        or pa.types.is_string(array.type)
    ):
        strings = [v if isinstance(v, str) or v is None else json.dumps(v) for v in values]
        array = pa.array(strings, type=pa.string())
    return array


def _write_shards(directory: Path, rows, meta: dict, info: dict, max_bytes: int) -> None:
    """Write rows into `shard-*.parquet` files of at most `max_bytes`, then name them
    `data-XXXXX-of-NNNNN.parquet` once the count is known."""
    shards, batch, size = [], [], 0
    for index, record, vectors in rows:
        row_bytes = vectors.nbytes + len(record["text"].encode()) + 64
        if batch and size + row_bytes > max_bytes:
            shards.append(_write_shard(directory, len(shards), batch, meta, info))
            batch, size = [], 0
        batch.append((index, record, vectors))
        size += row_bytes
    if not batch:
        raise StoreCorruptError("no prompt of the model could be read (each is named above)")
    shards.append(_write_shard(directory, len(shards), batch, meta, info))
    for i, path in enumerate(shards):
        path.rename(directory / f"data-{i:05d}-of-{len(shards):05d}.parquet")


def _write_shard(directory: Path, index: int, batch, meta: dict, info: dict) -> Path:
    """One parquet file of `batch` (`(index in the meta columns, record, pooled)` rows)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = [r for _, r, _ in batch]
    stacked = np.stack([v for _, _, v in batch], axis=1)  # [layers, rows, d_model]
    columns = {
        "hash": pa.array([r["hash"] for r in records], pa.string()),
        "text": pa.array([r["text"] for r in records], pa.string()),
        "n_tokens": pa.array([r.get("n_tokens") for r in records], pa.int64()),
    }
    rows = pa.array([i for i, _, _ in batch], pa.int64())
    columns.update({name: values.take(rows) for name, values in meta.items()})
    d_model = stacked.shape[-1]
    for layer, vectors in zip(info["layers"], stacked, strict=True):
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
        columns[f"{LAYER_PREFIX}{layer}"] = pa.FixedSizeListArray.from_arrays(flat, d_model)
    table = pa.table(columns)
    table = table.replace_schema_metadata({"lens_cache": json.dumps({**info, "d_model": d_model})})
    path = directory / f"shard-{index:05d}.parquet"
    fault_point("pooled", path)
    pq.write_table(table, path)
    return path


# --- reading ---------------------------------------------------------------------------------


def load_pooled(
    save_path,
    model: str,
    hook: str = "resid_post",
    pool: str = "last_token",
    layer: int | None = None,
    label: str | None = None,
    *,
    out_dir=None,
):
    """Load one layer of a pooled dataset as a matrix, with labels, for scikit-learn.

    Args:
        save_path (`str` or `Path`): the store.
        model (`str`): the model's name in the store.
        hook (`str`, *optional*, defaults to `"resid_post"`).
        pool (`str`, *optional*, defaults to `"last_token"`).
        layer (`int`, *optional*, defaults to the last stored layer): a model layer index;
            negative counts from the model's last layer.
        label (`str`, *optional*): a column (usually a `meta` key) to return as `y`.
        out_dir (`str` or `Path`, *optional*): the dataset's folder, if not the default.

    Returns:
        `(X, y)`: `X` is `Float[np.ndarray, "prompts d_model"]` (float32); `y` is a
        `np.ndarray` of the `label` column, or, without `label`, a dict of every column other
        than the layers (`hash`, `text`, `n_tokens`, the meta keys) as lists.

    Raises:
        PooledMissingError: no pooled dataset there (the message says how to write it).
        LayerNotStoredError: the layer was not pooled (the message lists those that were).
        MissingLabelError: no such label column (the message lists them).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory = Path(out_dir) if out_dir is not None else pooled_dir(save_path, model, hook, pool)
    files = sorted(directory.glob("data-*.parquet"))
    if not files:
        raise PooledMissingError(
            f"no pooled dataset at {directory}; run: python -m lens_cache.pooled "
            f"-s {shlex.quote(str(save_path))} -m {shlex.quote(model)} "
            f"--hook {pool_site(hook)} --pool {pool}"
        )
    names = pq.read_schema(files[0]).names
    stored = sorted(int(n[len(LAYER_PREFIX) :]) for n in names if n.startswith(LAYER_PREFIX))
    n_layers = open_store(save_path).model_cfg(model).get("n_layers") or max(stored) + 1
    wanted = stored[-1:] if layer is None else layer
    (chosen,) = select_layers(wanted, stored, int(n_layers), f"pooled dataset {directory}")
    others = [n for n in names if not n.startswith(LAYER_PREFIX)]
    label_column = _label_column(label, others, directory) if label is not None else None
    read = [f"{LAYER_PREFIX}{chosen}", *([label_column] if label_column else others)]
    table = pa.concat_tables(pq.read_table(f, columns=read) for f in files)
    X = _matrix(table.column(read[0]))
    if label_column:
        return X, np.asarray(table.column(label_column).to_pylist())
    return X, {name: table.column(name).to_pylist() for name in others}


def _label_column(label: str, columns: list[str], directory: Path) -> str:
    for name in (label, f"meta_{label}"):
        if name in columns:
            return name
    raise MissingLabelError(
        f"no column {label!r} in the pooled dataset {directory}; its columns: {', '.join(columns)}"
    )


def _matrix(column) -> np.ndarray:
    """A fixed-size-list column as a `[rows, size]` float32 array."""
    array = column.combine_chunks()
    flat = array.flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(len(array), array.type.list_size).astype(np.float32, copy=False)


if __name__ == "__main__":  # `python -m lens_cache.pooled`: the same as `lens-cache pool`
    # by name (runpy): the library never imports its command line, a layer above it
    import runpy

    runpy.run_module("lens_cache.cli.pool", run_name="__main__")
