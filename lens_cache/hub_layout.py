"""What a lens_cache dataset on the Hugging Face Hub holds, and where: no network in here.

    README.md                      dataset card: YAML `configs:` for `datasets`, then prose
    lens_cache.json                manifest: format, models, selection, every file's size+sha256
    data/prompts-00000-of-00001.parquet   model, hash, text, n_tokens, tokens, token_ids, meta
    data/models-00000-of-00001.parquet    model_name, n_layers, n_heads, d_model, config
    tensors/<model>/patterns/layer_05/head_03-00000.safetensors   {<hash>: [T, T]}
    tensors/<model>/resid_post/layer_05-00000.safetensors         {<hash>: [T, d_model]}
    pooled/<model>/resid_post-mean/data-00000-of-00001.parquet    a pooled dataset, as stored

One head (or one residual layer) is fetched without the rest. Each shard holds a contiguous run
of the model's prompts in hash order, at most `shard_max_bytes` of tensor data; the boundaries
depend only on the prompts' lengths, so every head of a model shares them and a rerun builds
the same bytes. Safetensors headers are written here (sorted keys, space-padded like
`store.write_safetensors`), which lets a shard be streamed to disk one prompt at a time and its
size be known before it is built.

Pooled datasets (`lens_cache.pooled`, kind `pooled`) go up whole and byte for byte: their rows
cover every prompt their model had when they were written, whatever the prompt or layer
selection. A manifest that lists one says format version 2, so an older lens_cache refuses the
dataset with "upgrade" instead of taking `pooled/` for a foreign file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lens_cache.errors import (
    HubIntegrityError,
    HubSelectionError,
    LayerSelectionError,
    UnsafeRepoPathError,
)
from lens_cache.pooled import POOLS

FORMAT = "lens_cache"
FORMAT_VERSION = 1  # of shards, and of manifests that list no pooled file
POOLED_FORMAT_VERSION = 2  # of manifests that list pooled files; the newest this module reads
MANIFEST_NAME = "lens_cache.json"
CARD_NAME = "README.md"
PROMPTS_TABLE = "data/prompts-00000-of-00001.parquet"
MODELS_TABLE = "data/models-00000-of-00001.parquet"
PATTERNS = "patterns"
RESID_KINDS = ("resid_pre", "resid_mid", "resid_post")
KINDS = (PATTERNS, *RESID_KINDS)  # tensor kinds, sharded by prompt
POOLED = "pooled"
SELECTABLE_KINDS = (*KINDS, POOLED)  # what --kinds takes
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_ST_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
_ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2}
PARTIAL_HEADS_NAME = "partial_heads.safetensors"
_ST = ".safetensors"

# Model names and prompt hashes become directory names on pull: keep them to one plain path
# component (no separators, no leading dot) and free of glob characters (allow_patterns).
_MODEL_RE = r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}"
_HASH_RE = re.compile(r"[A-Za-z0-9_-]{22}")  # urlsafe base64 of an md5, padding stripped
_TENSOR_RE = re.compile(
    rf"tensors/(?P<model>{_MODEL_RE})/(?:patterns/layer_(?P<pl>\d+)/head_(?P<head>\d+)"
    rf"|(?P<kind>resid_pre|resid_mid|resid_post)/layer_(?P<rl>\d+))-(?P<index>\d{{5}})"
    r"\.safetensors"
)
_DATA_RE = re.compile(r"data/(?:prompts|models)-\d{5}-of-\d{5}\.parquet")
# A pooled dataset's folder is `<hook>-<pool>` (as `lens_cache.pooled.pooled_dir` names it).
_POOLED_NAME_RE = re.compile(rf"(?P<hook>{'|'.join(RESID_KINDS)})-(?P<pool>{'|'.join(POOLS)})")
_POOLED_FILE_RE = re.compile(r"data-(?P<index>\d{5})-of-(?P<count>\d{5})\.parquet")
_POOLED_RE = re.compile(
    rf"pooled/(?P<model>{_MODEL_RE})/(?P<name>{_POOLED_NAME_RE.pattern})/"
    rf"(?P<file>{_POOLED_FILE_RE.pattern})"
)


# --- names and paths -------------------------------------------------------------------------


def check_model_name(name: str, where: str = "the store") -> str:
    """Refuse a model name that is not one plain path component.

    Raises:
        UnsafeRepoPathError: the name has a separator, a leading dot, or unusual characters.
    """
    if not isinstance(name, str) or not re.fullmatch(_MODEL_RE, name):
        raise UnsafeRepoPathError(
            f"model name {name!r} in {where} is not a plain directory name (letters, digits, "
            "'.', '_', '+', '-'; no path separators); refusing it",
            str(name),
        )
    return name


def check_hash(hash_: str, where: str) -> str:
    """Refuse a prompt hash that is not pattern-lens's 22-character urlsafe base64."""
    if not isinstance(hash_, str) or not _HASH_RE.fullmatch(hash_):
        raise UnsafeRepoPathError(
            f"prompt hash {hash_!r} in {where} is not a 22-character urlsafe base64 name; "
            "refusing it",
            str(hash_),
        )
    return hash_


def check_repo_path(path: str) -> str:
    """Refuse a repo path that could escape a directory or is not part of our layout.

    Raises:
        UnsafeRepoPathError: absolute, `..`, backslashes, empty parts, or an unknown file.
    """
    parts = path.split("/") if isinstance(path, str) else [""]
    if (
        not isinstance(path, str)
        or path.startswith("/")
        or "\\" in path
        or "\0" in path
        or any(p in ("", ".", "..") for p in parts)
        or re.match(r"[A-Za-z]:", path)
    ):
        raise UnsafeRepoPathError(
            f"the manifest lists {path!r}, which would escape the target directory; "
            "refusing this repo",
            str(path),
        )
    known = path in (CARD_NAME,) or is_layout_path(path)
    if not known:
        raise UnsafeRepoPathError(
            f"the manifest lists {path!r}, which is not a lens_cache file; refusing this repo",
            path,
        )
    return path


def is_layout_path(path: str) -> bool:
    """Whether a repo path is one of ours (so a new push may replace or delete it)."""
    return bool(
        _DATA_RE.fullmatch(path) or _TENSOR_RE.fullmatch(path) or _POOLED_RE.fullmatch(path)
    )


def _layer_dir(layer: int) -> str:
    return f"layer_{layer:02d}"


def tensor_path(model: str, kind: str, layer: int, head: int | None, index: int) -> str:
    """The repo path of one shard."""
    if kind == PATTERNS:
        return f"tensors/{model}/{PATTERNS}/{_layer_dir(layer)}/head_{head:02d}-{index:05d}{_ST}"
    return f"tensors/{model}/{kind}/{_layer_dir(layer)}-{index:05d}{_ST}"


def pooled_path(model: str, name: str, filename: str) -> str:
    """The repo path of one file of a pooled dataset (`name` is `<hook>-<pool>`)."""
    return f"{POOLED}/{model}/{name}/{filename}"


def split_pooled_name(name: str) -> tuple[str, str] | None:
    """`"resid_post-mean_real"` -> `("resid_post", "mean_real")`; `None` for any other name."""
    m = _POOLED_NAME_RE.fullmatch(name) if isinstance(name, str) else None
    return (m["hook"], m["pool"]) if m else None


def pooled_files_complete(filenames: list[str]) -> bool:
    """Whether names are exactly `data-00000-of-NNNNN.parquet` ... `data-<N-1>-of-NNNNN`."""
    found = [_POOLED_FILE_RE.fullmatch(f) for f in filenames]
    if not found or not all(found):
        return False
    counts = {int(m["count"]) for m in found}
    indexes = sorted(int(m["index"]) for m in found)
    return len(counts) == 1 and indexes == list(range(counts.pop()))


# --- selection -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """What to push or pull. `None` means everything there is.

    Args:
        models (`tuple[str]`, *optional*): model names.
        prompts (`tuple[str]`, *optional*): prompt hashes.
        search (`str`, *optional*): a substring the prompt text must contain.
        meta (`tuple[tuple[str, str]]`): `(key, value)` pairs the prompt's meta must match.
        layers (`str | list[int]`, *optional*): the exporter's `--layers` syntax.
        heads (`str | list`, *optional*): `"5.1,5.3"` or `[(5, 1), (5, 3)]`.
        kinds (`tuple[str]`, *optional*): any of `patterns`, `resid_pre`, `resid_mid`,
            `resid_post`, `pooled` (every pooled dataset of the selected models, whole).
    """

    models: tuple[str, ...] | None = None
    prompts: tuple[str, ...] | None = None
    search: str | None = None
    meta: tuple[tuple[str, str], ...] = ()
    layers: object = None
    heads: object = None
    kinds: tuple[str, ...] | None = None

    def describe(self) -> dict:
        """JSON-ready, for the manifest."""
        return {
            "models": list(self.models) if self.models else None,
            "prompts": sorted(self.prompts) if self.prompts else None,
            "search": self.search,
            "meta": dict(self.meta) or None,
            "layers": self.layers if self.layers is None else str(self.layers),
            "heads": None if self.heads is None else str(self.heads),
            "kinds": list(self.kinds) if self.kinds else None,
        }


def make_selection(
    models=None, prompts=None, search=None, meta=None, layers=None, heads=None, kinds=None
) -> Selection:
    """Normalise the selection arguments of `push_to_hub` / `pull` (strings or lists).

    Raises:
        HubSelectionError: an unknown kind, a `--meta` item without `=`, or `--layers` /
            `--heads` with no kind they could select.
    """

    def as_tuple(v):
        return None if v is None else ((v,) if isinstance(v, str) else tuple(v))

    kinds = as_tuple(kinds)
    unknown = [k for k in kinds or () if k not in SELECTABLE_KINDS]
    if unknown or kinds == ():
        raise HubSelectionError(
            f"--kinds: unknown {unknown}; choose from {', '.join(SELECTABLE_KINDS)}"
        )
    if heads is not None and kinds is not None and PATTERNS not in kinds:
        raise HubSelectionError("--heads selects attention heads: add patterns to --kinds")
    if layers is not None and kinds is not None and set(kinds) <= {POOLED}:
        raise HubSelectionError(
            "--layers selects tensors, and a pooled dataset goes whole (every layer it holds): "
            "drop --layers or add patterns or a resid kind to --kinds"
        )
    return Selection(
        models=as_tuple(models),
        prompts=as_tuple(prompts),
        search=search or None,
        meta=parse_meta(meta),
        layers=layers,
        heads=heads,
        kinds=None if kinds is None else tuple(k for k in SELECTABLE_KINDS if k in kinds),
    )


def parse_meta(meta) -> tuple[tuple[str, str], ...]:
    """`["kind=code", ...]` or `{"kind": "code"}` -> sorted `(key, value)` pairs."""
    if not meta:
        return ()
    if isinstance(meta, dict):
        return tuple(sorted((str(k), str(v)) for k, v in meta.items()))
    pairs = []
    for item in [meta] if isinstance(meta, str) else meta:
        key, sep, value = str(item).partition("=")
        if not sep or not key:
            raise HubSelectionError(f"--meta {item!r}: expected KEY=VALUE, e.g. kind=code")
        pairs.append((key, value))
    return tuple(sorted(pairs))


def parse_heads(spec, n_layers: int, n_heads: int) -> dict[int, tuple[int, ...]]:
    """`"5.1,5.3"` (or `[(5, 1), "5.3"]`) -> `{5: (1, 3)}`; negative layers count from the end.

    Raises:
        LayerSelectionError: an unreadable item, or a layer or head the model does not have.
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    chosen: dict[int, set[int]] = {}
    for item in items:
        layer, head = _head_item(item)
        if not -n_layers <= layer < n_layers or not 0 <= head < n_heads:
            raise LayerSelectionError(
                f"--heads {layer}.{head}: the model has layers 0-{n_layers - 1} and heads "
                f"0-{n_heads - 1}"
            )
        chosen.setdefault(layer % n_layers, set()).add(head)
    if not chosen:
        raise LayerSelectionError(f"--heads {spec!r} selects no head")
    return {layer: tuple(sorted(h)) for layer, h in sorted(chosen.items())}


def _head_item(item) -> tuple[int, int]:
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return int(item[0]), int(item[1])
    m = re.fullmatch(r"\s*(-?\d+)\.(\d+)\s*", str(item))
    if not m:
        raise LayerSelectionError(f"--heads: cannot read {item!r}; write LAYER.HEAD, e.g. 5.1,5.3")
    return int(m[1]), int(m[2])


def parse_size(value) -> int:
    """`1000`, `"500MB"`, `"2GiB"` -> bytes (decimal units for kB/MB/GB, binary for KiB/...).

    Raises:
        HubSelectionError: unreadable or not positive.
    """
    units = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9}
    units.update(kib=2**10, mib=2**20, gib=2**30, k=10**3, m=10**6, g=10**9)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(value))
    if not m or m[2].lower() not in units or float(m[1]) <= 0:
        raise HubSelectionError(f"size {value!r}: write bytes or e.g. 500MB, 2GiB")
    return int(float(m[1]) * units[m[2].lower()])


def meta_matches(meta: dict, wanted: tuple[tuple[str, str], ...]) -> bool:
    """Every `(key, value)` matches: a string equal to it, or another value whose JSON is."""
    for key, value in wanted:
        if key not in meta:
            return False
        got = meta[key]
        if (got if isinstance(got, str) else json.dumps(got)) != value:
            return False
    return True


def choose_prompts(records: list[dict], sel: Selection) -> list[dict]:
    """The records that pass the prompt filters, sorted by hash."""
    keep = []
    for r in records:
        if sel.prompts is not None and r["hash"] not in sel.prompts:
            continue
        if sel.search is not None and sel.search not in r["text"]:
            continue
        if not meta_matches(r.get("meta") or {}, sel.meta):
            continue
        keep.append(r)
    return sorted(keep, key=lambda r: r["hash"])


def choose_tensors(
    name: str,
    n_layers: int,
    n_heads: int,
    available: dict[str, dict[int, tuple[int, ...]]],
    sel: Selection,
    where: str,
) -> dict[str, dict[int, tuple[int, ...]]]:
    """Which tensors of one model: `{kind: {layer: heads}}` (heads `()` for residuals).

    `available` has the same shape and says what the store (push) or the dataset (pull) holds.
    Layers default to every available one, or to the layers `--heads` names; `--heads`
    restricts only the layers it mentions.

    Raises:
        LayerSelectionError: a layer or head that is not available.
    """
    from lens_cache.exporter import resolve_layers

    kinds = [k for k in (sel.kinds or available) if k in available]
    have_layers = sorted({layer for k in kinds for layer in available[k]})
    heads = parse_heads(sel.heads, n_layers, n_heads) if sel.heads is not None else {}
    if sel.layers is not None:
        layers = list(resolve_layers(sel.layers, n_layers))
    else:
        layers = sorted(heads) if heads else have_layers
    missing = sorted(set(layers) - set(have_layers))
    if missing:
        raise LayerSelectionError(
            f"{name}: layers {missing} are not in {where} for {'/'.join(kinds) or 'any kind'}"
            f" (it has layers {have_layers})"
        )
    outside = sorted(set(heads) - set(layers))
    if outside:
        raise LayerSelectionError(f"--heads names layers {outside}, which --layers leaves out")
    chosen = {}
    for kind in kinds:
        chosen[kind] = _kind_tensors(name, kind, layers, available[kind], heads, where)
    return {k: v for k, v in chosen.items() if v}


def _kind_tensors(name, kind, layers, have: dict, heads: dict, where: str) -> dict:
    out = {}
    for layer in layers:
        if layer not in have:
            continue
        if kind != PATTERNS:
            out[layer] = ()
            continue
        wanted = heads.get(layer, have[layer])
        absent = sorted(set(wanted) - set(have[layer]))
        if absent:
            raise LayerSelectionError(
                f"{name}: heads {[f'{layer}.{h}' for h in absent]} are not in {where}"
            )
        out[layer] = tuple(wanted)
    return out


# --- what a model contributes ----------------------------------------------------------------


@dataclass
class ModelPlan:
    """One model's share of a push or pull.

    Args:
        name (`str`): the model's store name.
        cfg (`dict`): its `model_cfg.json`.
        records (`list[dict]`): the selected prompts' records, sorted by hash.
        tensors (`dict`): `{kind: {layer: heads}}`, heads `()` for residual kinds.
        pooled (`tuple[str]`): the pooled datasets that go along, by folder name
            (`<hook>-<pool>`), sorted; each goes whole, whatever `records` and `tensors` say.
    """

    name: str
    cfg: dict
    records: list[dict]
    tensors: dict[str, dict[int, tuple[int, ...]]]
    pooled: tuple[str, ...] = ()

    @property
    def n_layers(self) -> int:
        return int(self.cfg["n_layers"])

    @property
    def n_heads(self) -> int:
        return int(self.cfg["n_heads"])

    @property
    def d_model(self) -> int:
        return int(self.cfg["d_model"])

    def summary(self) -> dict:
        """JSON-ready counts, for the manifest and the card."""
        pats = self.tensors.get(PATTERNS, {})
        return {
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "d_model": self.d_model,
            "n_prompts": len(self.records),
            "n_tokens": sum(int(r["n_tokens"]) for r in self.records),
            "patterns": {str(layer): list(h) for layer, h in pats.items()},
            "residuals": {k: sorted(v) for k, v in self.tensors.items() if k != PATTERNS},
            "pooled": list(self.pooled),
        }


# --- shards ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shard:
    """One safetensors file: one head (or one residual layer) of a run of prompts."""

    model: str
    kind: str
    layer: int
    head: int | None
    index: int
    hashes: tuple[str, ...]
    shapes: tuple[tuple[int, int], ...]
    dtype: str
    metadata: tuple[tuple[str, str], ...] = field(default=())

    @property
    def path(self) -> str:
        return tensor_path(self.model, self.kind, self.layer, self.head, self.index)

    def header(self) -> bytes:
        return safetensors_header(
            list(zip(self.hashes, self.shapes, strict=True)), self.dtype, dict(self.metadata)
        )

    @property
    def size(self) -> int:
        data = sum(math.prod(s) for s in self.shapes) * _ITEMSIZE[self.dtype]
        return len(self.header()) + data

    def entry(self) -> dict:
        """The shard's fields in the manifest (path, size and sha256 are added)."""
        return {
            "model": self.model,
            "kind": self.kind,
            "layer": self.layer,
            "head": self.head,
            "first": self.hashes[0],
            "last": self.hashes[-1],
            "n": len(self.hashes),
        }


def group_prompts(sizes: list[int], max_bytes: int) -> list[range]:
    """Cut a sequence into contiguous runs of at most `max_bytes` (a larger item stands alone)."""
    groups, start, total = [], 0, 0
    for i, size in enumerate(sizes):
        if i > start and total + size > max_bytes:
            groups.append(range(start, i))
            start, total = i, 0
        total += size
    if sizes:
        groups.append(range(start, len(sizes)))
    return groups


def plan_shards(plan: ModelPlan, dtype: str, shard_max_bytes: int) -> list[Shard]:
    """Every shard of one model. Prompts are cut into runs by size alone, so every head and
    layer of a kind shares the same runs and a rerun plans the same shards."""
    shards = []
    lengths = [int(r["n_tokens"]) for r in plan.records]
    for kind, layers in plan.tensors.items():
        shapes = [(t, t if kind == PATTERNS else plan.d_model) for t in lengths]
        sizes = [math.prod(s) * _ITEMSIZE[dtype] for s in shapes]
        for index, run in enumerate(group_prompts(sizes, shard_max_bytes)):
            hashes = tuple(plan.records[i]["hash"] for i in run)
            run_shapes = tuple(shapes[i] for i in run)
            for layer, heads in layers.items():
                for head in heads or (None,):
                    meta = _shard_metadata(plan.name, kind, layer, head, dtype)
                    shard = Shard(plan.name, kind, layer, head, index, hashes, run_shapes, dtype)
                    shards.append(dataclasses.replace(shard, metadata=meta))
    return shards


def _shard_metadata(model, kind, layer, head, dtype) -> tuple[tuple[str, str], ...]:
    meta = {"format": f"{FORMAT}/{FORMAT_VERSION}", "model": model, "kind": kind}
    meta.update(layer=str(layer), dtype=dtype)
    if head is not None:
        meta["head"] = str(head)
    return tuple(sorted(meta.items()))


def safetensors_header(
    entries: list[tuple[str, tuple[int, ...]]], dtype: str, metadata: dict
) -> bytes:
    """The 8-byte length + JSON header of a safetensors file holding `entries` in this order.

    Keys are sorted in the JSON and the header is space-padded to 8 bytes, as
    `store.write_safetensors` does, so equal content gives equal bytes.
    """
    header: dict = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for key, shape in entries:
        n = math.prod(shape) * _ITEMSIZE[dtype]
        header[key] = {
            "dtype": _ST_DTYPES[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + n],
        }
        offset += n
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text


def tensor_bytes(array, dtype: str) -> memoryview:
    """The little-endian bytes of `array` (numpy or torch) cast to `dtype`."""
    tensor = torch.as_tensor(
        np.ascontiguousarray(array) if isinstance(array, np.ndarray) else array
    )
    tensor = tensor.to(DTYPES[dtype]).contiguous()
    return memoryview(tensor.view(torch.uint8).numpy()).cast("B")


@dataclass
class BuiltFile:
    """A file ready to upload: its repo path, where it is on disk, its size and sha256."""

    path: str
    local: Path
    size: int
    sha256: str
    entry: dict = field(default_factory=dict)  # extra manifest fields (shards)


class ShardWriter:
    """Streams one shard to disk, hashing as it goes; tensors must come in the shard's order."""

    def __init__(self, shard: Shard, local: Path):
        self.shard, self.local = shard, local
        self._next = 0
        self._sha = hashlib.sha256()
        local.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(local, "wb")
        self._write(shard.header())

    def _write(self, data) -> None:
        self._file.write(data)
        self._sha.update(data)

    def add(self, key: str, array) -> None:
        """Append the tensor for `key`; its shape must be the planned one."""
        i = self._next
        if key != self.shard.hashes[i] or tuple(array.shape) != self.shard.shapes[i]:
            raise HubIntegrityError(
                f"{self.shard.path}: expected {self.shard.hashes[i]} {self.shard.shapes[i]}, "
                f"got {key} {tuple(array.shape)}; the store changed while pushing"
            )
        self._write(tensor_bytes(array, self.shard.dtype))
        self._next += 1

    def close(self) -> BuiltFile:
        self._file.close()
        if self._next != len(self.shard.hashes):
            raise HubIntegrityError(f"{self.shard.path}: shard left incomplete")
        size = self.local.stat().st_size
        entry = self.shard.entry()
        return BuiltFile(self.shard.path, self.local, size, self._sha.hexdigest(), entry)


class ShardReader:
    """Reads single tensors of a downloaded shard, checking the header against expectations."""

    def __init__(self, local: Path, dtype: str, where: str):
        self.local, self.dtype, self.where = Path(local), dtype, where
        with open(self.local, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n <= 100 * 2**20:
                raise HubIntegrityError(f"{where}: not a safetensors file")
            self.header = json.loads(f.read(n))
        self.base = 8 + n
        self.size = self.local.stat().st_size

    def get(self, key: str, shape: tuple[int, int]) -> torch.Tensor:
        """The tensor stored under `key`; it must have `shape` and the dataset's dtype."""
        info = self.header.get(key)
        if not isinstance(info, dict) or info.get("dtype") != _ST_DTYPES[self.dtype]:
            raise HubIntegrityError(f"{self.where}: no {self.dtype} tensor for prompt {key}")
        start, end = info.get("data_offsets", (0, -1))
        expected = math.prod(shape) * _ITEMSIZE[self.dtype]
        if list(info.get("shape", [])) != list(shape) or end - start != expected or start < 0:
            raise HubIntegrityError(f"{self.where}: {key} is not {list(shape)} as its prompt says")
        if self.base + end > self.size:
            raise HubIntegrityError(f"{self.where}: {key} runs past the end of the file")
        with open(self.local, "rb") as f:
            f.seek(self.base + start)
            raw = bytearray(f.read(expected))
        return torch.frombuffer(raw, dtype=DTYPES[self.dtype]).reshape(shape)


# --- tables, card, manifest ------------------------------------------------------------------


def prompts_table(plans: list[ModelPlan]) -> bytes:
    """The `prompts` config's parquet: one row per (model, prompt), sorted by model then hash."""
    import pyarrow as pa

    schema = pa.schema(
        [
            ("model", pa.string()),
            ("hash", pa.string()),
            ("text", pa.string()),
            ("n_tokens", pa.int32()),
            ("tokens", pa.list_(pa.string())),
            ("token_ids", pa.list_(pa.int64())),
            ("meta", pa.string()),
        ]
    )
    rows = [_prompt_row(p.name, r) for p in sorted(plans, key=lambda p: p.name) for r in p.records]
    return _parquet_bytes(pa.Table.from_pylist(rows, schema=schema))


def _prompt_row(model: str, r: dict) -> dict:
    return {
        "model": model,
        "hash": r["hash"],
        "text": r["text"],
        "n_tokens": int(r["n_tokens"]),
        "tokens": [str(t) for t in r.get("tokens") or []],
        "token_ids": [int(i) for i in r.get("token_ids") or []],
        "meta": json.dumps(r.get("meta") or {}, sort_keys=True, ensure_ascii=False),
    }


def models_table(plans: list[ModelPlan]) -> bytes:
    """The `models` config's parquet: one row per model with its config as JSON."""
    import pyarrow as pa

    schema = pa.schema(
        [
            ("model_name", pa.string()),
            ("n_layers", pa.int32()),
            ("n_heads", pa.int32()),
            ("d_model", pa.int32()),
            ("n_prompts", pa.int32()),
            ("config", pa.string()),
        ]
    )
    rows = [
        {
            "model_name": p.name,
            "n_layers": p.n_layers,
            "n_heads": p.n_heads,
            "d_model": p.d_model,
            "n_prompts": len(p.records),
            "config": json.dumps(scrub_local_paths(p.cfg), sort_keys=True, ensure_ascii=False),
        }
        for p in sorted(plans, key=lambda p: p.name)
    ]
    return _parquet_bytes(pa.Table.from_pylist(rows, schema=schema))


def _parquet_bytes(table) -> bytes:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def scrub_local_paths(obj):
    """Replace absolute local paths (e.g. `lens_cache.source`) by their last component, so a
    push does not publish the pusher's directory layout."""
    if isinstance(obj, dict):
        return {k: scrub_local_paths(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [scrub_local_paths(v) for v in obj]
    if isinstance(obj, str) and (obj.startswith(("/", "~")) or re.match(r"[A-Za-z]:\\", obj)):
        return "local:" + os.path.basename(obj.rstrip("/\\"))
    return obj


def read_table(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def manifest_bytes(
    plans: list[ModelPlan], sel: Selection, dtype: str, files: list[BuiltFile]
) -> bytes:
    """`lens_cache.json`: what identifies the dataset and lets a pull check every file.

    The format version is `FORMAT_VERSION` (1) unless a pooled dataset is listed
    (`POOLED_FORMAT_VERSION`, 2): a dataset without one stays readable by lens_cache versions
    that predate pooled files, and those refuse one with pooled files as "newer".
    """
    manifest = {
        "format": FORMAT,
        "format_version": POOLED_FORMAT_VERSION if any(p.pooled for p in plans) else FORMAT_VERSION,
        "dtype": dtype,
        "models": {p.name: p.summary() for p in plans},
        "selection": sel.describe(),
        "files": [
            {"path": f.path, "size": f.size, "sha256": f.sha256, **f.entry}
            for f in sorted(files, key=lambda f: f.path)
        ],
    }
    return (json.dumps(manifest, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode()


def card_bytes(repo_id: str, plans: list[ModelPlan], dtype: str) -> bytes:
    """The dataset card: YAML for `datasets` and the Hub, then how to use the data."""
    kinds = sorted({k for p in plans for k in p.tensors})
    stored = [f"{', '.join(kinds)}, as `{dtype}`"] if kinds else []
    stored += ["pooled residuals (float32)"] if any(p.pooled for p in plans) else []
    rows = "\n".join(_card_row(p) for p in plans)
    with_tensors = [p for p in plans if p.tensors]
    fetch = ""
    if with_tensors:
        fetch = _CARD_FETCH.format(repo_id=repo_id, example=_example_path(with_tensors[0]))
    text = _CARD.format(
        repo_id=repo_id,
        name=repo_id.split("/")[-1],
        n_models=len(plans),
        n_prompts=sum(len(p.records) for p in plans),
        stored=" and ".join(stored),
        rows=rows,
        fetch=fetch,
        pooled=_card_pooled(repo_id, plans),
    )
    return text.encode()


def _card_pooled(repo_id: str, plans: list[ModelPlan]) -> str:
    """The card's section on pooled datasets ("" when there are none)."""
    with_pooled = [p for p in plans if p.pooled]
    if not with_pooled:
        return ""
    items = "\n".join(
        f"- `{p.name}`: " + ", ".join(f"`{n}`" for n in p.pooled) for p in with_pooled
    )
    first = with_pooled[0]
    hook, pool = split_pooled_name(first.pooled[0])
    return _CARD_POOLED.format(
        repo_id=repo_id,
        items=items,
        model=first.name,
        name=first.pooled[0],
        hook=hook,
        pool=pool,
    )


def _card_row(p: ModelPlan) -> str:
    pats = p.tensors.get(PATTERNS, {})
    n_pat = sum(len(h) for h in pats.values())
    heads = f"{n_pat} heads in layers {_ranges(list(pats))}" if pats else "none"
    resid = ", ".join(f"{k} ({_ranges(sorted(v))})" for k, v in p.tensors.items() if k != PATTERNS)
    cells = [p.name, str(p.n_layers), str(p.n_heads), str(p.d_model), str(len(p.records))]
    return "| " + " | ".join([*cells, heads, resid or "none"]) + " |"


def _example_path(p: ModelPlan) -> str:
    """The first shard of a model that has tensors."""
    kind, layers = next(iter(p.tensors.items()))
    layer, heads = next(iter(layers.items()))
    return tensor_path(p.name, kind, layer, heads[0] if heads else None, 0)


def _ranges(values: list[int]) -> str:
    if len(values) > 2 and values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}-{values[-1]}"
    return ",".join(map(str, values))


_CARD = """---
configs:
- config_name: prompts
  data_files: "data/prompts-*.parquet"
  default: true
- config_name: models
  data_files: "data/models-*.parquet"
license: other
tags:
- lens_cache
- interpretability
- attention-patterns
pretty_name: "{name}"
---

# {name}

Activations of {n_models} model(s) over {n_prompts} prompt(s), exported from TransformerLens
with lens_cache. Stored: {stored}. The licence is `other`: the licences of the
prompts' sources and of the models apply.

| model | layers | heads | d_model | prompts | attention patterns | residual streams |
|---|---|---|---|---|---|---|
{rows}

## Load the prompts

```python
from datasets import load_dataset

prompts = load_dataset("{repo_id}", split="train")          # model, hash, text, tokens, meta
models = load_dataset("{repo_id}", "models", split="train")  # each model's config (JSON)
```

`tokens` are the model's string tokens, BOS included when the model prepends one, so
`len(tokens) == n_tokens`, the side of each pattern; `meta` is a JSON string.

## Pull and browse with lens_cache

```sh
python -m lens_cache.hub pull --repo {repo_id} --save-path store/
# then open store/index.html; pattern-lens's load_activations reads store/ too
python -m lens_cache.hub pull --repo {repo_id} --save-path store/ --layers 5 --heads 5.1,5.3
```

A pull rebuilds the pattern-lens-compatible layout (`<model>/prompts/<hash>/activations.npz`,
float32 `[1, n_heads, T, T]` per layer; `residuals.safetensors`) and downloads only the files
the selection needs.

{fetch}{pooled}## Layout

- `tensors/<model>/patterns/layer_LL/head_HH-NNNNN.safetensors`: one key per prompt hash,
  `[T, T]`; `tensors/<model>/<resid_kind>/layer_LL-NNNNN.safetensors`: `[T, d_model]`.
- `lens_cache.json`: format version, models, the selection that made this dataset, and every
  file's size and sha256.
"""

_CARD_FETCH = """## Fetch one head without the rest

```python
from datasets import load_dataset
from huggingface_hub import hf_hub_download
from safetensors.torch import load_file  # torch: numpy has no bfloat16

prompt = load_dataset("{repo_id}", split="train")[0]
path = "{example}"
shard = load_file(hf_hub_download("{repo_id}", path, repo_type="dataset"))
pattern = shard[prompt["hash"]]  # [T, T], T == prompt["n_tokens"], unpadded
```

A shard holds a run of prompts (in hash order); `lens_cache.json` says which run each file
holds (`first`, `last`).

"""

_CARD_POOLED = """## Pooled residuals

One float32 vector per prompt and layer, written by `lens_cache.pooled` (folder
`<hook>-<pool>`), under `pooled/<model>/<hook>-<pool>/data-XXXXX-of-NNNNN.parquet`:

{items}

Columns: `hash`, `text`, `n_tokens`, one per `meta` key, and `layer_{{i}}` (`d_model` float32)
for every pooled layer. Each pooled dataset was pushed whole: its rows cover every prompt its
model had when it was pooled, which can be more than the prompts listed above. They are not a
`configs:` entry; load one with

```python
from datasets import load_dataset

files = "hf://datasets/{repo_id}/pooled/{model}/{name}/data-*.parquet"
pooled = load_dataset("parquet", data_files=files, split="train")
```

or pull it and read it straight into numpy for a probe:

```sh
python -m lens_cache.hub pull --repo {repo_id} --save-path store/ --kinds pooled -m {model}
```

```python
import lens_cache

X, columns = lens_cache.load_pooled("store", "{model}", hook="{hook}", pool="{pool}")  # last layer
```

"""
