"""The files of a push: shards planned from prompt lengths, streamed to disk by `ShardWriter`
(safetensors headers written here) and read back one tensor at a time by `ShardReader`; built
from a local store, with pooled files staged as is. See `lens_cache.hub._layout` for the layout.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lens_cache import formats
from lens_cache.damage import refuse_links
from lens_cache.errors import FileFormatError, HubIntegrityError, StoreLinkError
from lens_cache.hub._layout import (
    FOLDER_MAX_FILES,
    FORMAT,
    FORMAT_VERSION,
    MODEL_FILE,
    PATTERNS,
    POOLED,
    PROMPT_KINDS,
    REPO_MAX_FILES,
    ModelPlan,
    PromptKind,
    model_file_path,
    pooled_path,
    split_pooled_name,
    tensor_path,
)
from lens_cache.layout import (
    ITEMSIZE,
    PATTERN,
    POOLED_DIR,
    SAFETENSORS_DTYPES,
    TENSOR_DTYPES,
    hook_name,
    prompt_folder,
)
from lens_cache.progress import warn
from lens_cache.reader import Store

if TYPE_CHECKING:  # imported where tensors are made: `hub --help` stays light
    import torch

# --- shards ----------------------------------------------------------------------------------


_DTYPE_NAMES = {code: name for name, code in SAFETENSORS_DTYPES.items()}  # "F32" -> "float32"
Member = tuple[str, str, tuple[int, ...]]  # (key, dtype, shape) of one tensor of a shard


@dataclass(frozen=True)
class Shard:
    """One safetensors file: one head (or one residual layer, or one layer of a per-prompt
    kind) of a run of prompts.

    Patterns and residuals hold one tensor per prompt, keyed by its hash, of `shapes[i]` in
    `dtype`; a per-prompt kind holds several per prompt, listed in `members` (keys
    `<hash>/<field>`, each in its stored dtype).
    """

    model: str
    kind: str
    layer: int | None
    head: int | None
    index: int
    hashes: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtype: str
    metadata: tuple[tuple[str, str], ...] = field(default=())
    members: tuple[Member, ...] = ()

    @property
    def path(self) -> str:
        return tensor_path(self.model, self.kind, self.layer, self.head, self.index)

    def tensors(self) -> tuple[Member, ...]:
        """Every tensor of the file, in file order."""
        if self.kind in PROMPT_KINDS:
            return self.members
        return tuple((h, self.dtype, s) for h, s in zip(self.hashes, self.shapes, strict=True))

    def header(self) -> bytes:
        return safetensors_header(self.tensors(), dict(self.metadata))

    @property
    def size(self) -> int:
        data = sum(math.prod(shape) * ITEMSIZE[dtype] for _, dtype, shape in self.tensors())
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


def fitting_runs(sizes: list[int], max_bytes: int, max_runs: int) -> list[range]:
    """`group_prompts`, its byte limit doubled until there are at most `max_runs` runs: a
    folder of the dataset then holds fewer files than the Hub allows, however many prompts
    (or however small `--shard-max-bytes`), and the runs still depend on the sizes alone."""
    runs = group_prompts(sizes, max_bytes)
    while len(runs) > max(1, max_runs):
        max_bytes *= 2
        runs = group_prompts(sizes, max_bytes)
    return runs


def max_runs(kind: str, layers: dict, max_files: int = REPO_MAX_FILES) -> int:
    """The most runs of prompts a kind may be cut into: its shards of one run share a folder
    (a pattern layer's heads, a kind's layers), the kinds without layers share the model's
    folder (`FOLDER_MAX_FILES` split evenly between them), and the kind makes at most
    `max_files` files in all (so a push's commits are bounded too)."""
    if kind == PATTERNS:
        per_folder = max((len(heads) for heads in layers.values()), default=1)
        per_run = sum(len(heads) for heads in layers.values())
    else:
        per_folder = sum(1 for layer in layers if layer is not None)
        per_run = len(layers)
    most = min(FOLDER_MAX_FILES // max(1, per_folder), max_files // max(1, per_run))
    if None in layers or not layers:
        most = min(most, FOLDER_MAX_FILES // (len(PROMPT_KINDS) + 1))
    return most


def plan_shards(
    plan: ModelPlan,
    dtype: str,
    shard_max_bytes: int,
    save_path: Path | None = None,
    max_files: int = REPO_MAX_FILES,
) -> list[Shard]:
    """Every shard of one model, at most `max_files` of them. Prompts are cut into runs by
    size alone, so every head and layer of a kind shares the same runs and a rerun plans the
    same shards; a kind that would put `FOLDER_MAX_FILES` or more in one folder, or more than
    its share of `max_files` in all, gets larger shards (`fitting_runs`). Per-prompt kinds
    are planned from the headers of the files in `save_path`."""
    shards = []
    share = max_files // max(1, len(plan.tensors))
    lengths = [int(r["n_tokens"]) for r in plan.records]
    for kind, layers in plan.tensors.items():
        if kind in PROMPT_KINDS:
            limits = (shard_max_bytes, max_runs(kind, layers, share))
            shards += _plan_prompt_kind(plan, PROMPT_KINDS[kind], layers, save_path, limits, dtype)
            continue
        shapes = [(t, t if kind == PATTERNS else plan.d_model) for t in lengths]
        sizes = [math.prod(s) * ITEMSIZE[dtype] for s in shapes]
        runs = fitting_runs(sizes, shard_max_bytes, max_runs(kind, layers, share))
        for index, run in enumerate(runs):
            hashes = tuple(plan.records[i]["hash"] for i in run)
            run_shapes = tuple(shapes[i] for i in run)
            for layer, heads in layers.items():
                for head in heads or (None,):
                    meta = _shard_metadata(plan.name, kind, layer, head, dtype)
                    shard = Shard(plan.name, kind, layer, head, index, hashes, run_shapes, dtype)
                    shards.append(dataclasses.replace(shard, metadata=meta))
    return shards


def _plan_prompt_kind(
    plan, kind: PromptKind, layers: dict, save_path, limits: tuple[int, int], dtype: str
) -> list[Shard]:
    """The shards of a per-prompt kind: one per layer (or one, without layers) and run of
    prompts, holding each prompt's fields of that layer (a named kind: those the plan lists)
    as stored, or in `dtype` for a kind that is cast."""
    stored = []
    for record in plan.records:
        members = prompt_members(save_path, plan.name, record["hash"], kind)
        stored.append(_planned_members(members, layers, kind, dtype))
        absent = sorted(set(layers) - set(stored[-1]), key=str)
        if absent:
            where = _prompt_file(save_path, plan.name, record["hash"], kind)
            raise HubIntegrityError(f"{where}: no layer {absent[0]}; the store changed?")
    first = next(iter(layers))
    sizes = [sum(math.prod(sh) * ITEMSIZE[dt] for _, dt, sh in m[first]) for m in stored]
    shards = []
    for index, run in enumerate(fitting_runs(sizes, *limits)):
        hashes = tuple(plan.records[i]["hash"] for i in run)
        for layer in layers:
            members = tuple(
                (f"{plan.records[i]['hash']}/{f}", dt, sh)
                for i in run
                for f, dt, sh in stored[i][layer]
            )
            meta = _shard_metadata(plan.name, kind.name, layer, None, dtype if kind.cast else None)
            shards.append(
                Shard(plan.name, kind.name, layer, None, index, hashes, (), "", meta, members)
            )
    return shards


def prompt_members(save_path: Path, model: str, hash_: str, kind: PromptKind) -> dict:
    """`{layer: ((field, dtype, shape), ...)}` of one stored prompt's file of a per-prompt kind,
    fields sorted, read from its safetensors header alone.

    Raises:
        HubIntegrityError: the file is missing or unreadable, or lacks a field.
    """
    path = _prompt_file(save_path, model, hash_, kind)
    refuse_links(path, Path(save_path))
    try:
        header = read_safetensors_header(path, str(path))
    except OSError as e:
        raise HubIntegrityError(f"{path}: cannot read it ({e.strerror or e})") from None
    found: dict = {}
    for name, info in sorted(header.items()):
        parsed = kind.parse(name)
        if parsed is not None and info.get("dtype") in _DTYPE_NAMES:
            found.setdefault(parsed[0], []).append(
                (parsed[1], _DTYPE_NAMES[info["dtype"]], tuple(info["shape"]))
            )
    for layer, members in found.items():
        if not set(kind.fields) <= {m[0] for m in members}:
            raise HubIntegrityError(f"{path}: layer {layer} lacks some of {list(kind.fields)}")
    return {layer: tuple(sorted(m)) for layer, m in found.items()}


def _planned_members(members: dict, layers: dict, kind: PromptKind, dtype: str) -> dict:
    """A prompt's `{layer: members}` cut to the plan: a named kind's layers keep the fields
    the plan lists (a layer lacking one is left out, so the caller names it), and a kind
    that is cast takes `dtype`."""
    out = {}
    for layer, found in members.items():
        if kind.named:
            found = tuple(m for m in found if m[0] in layers.get(layer, ()))
            if len(found) != len(layers.get(layer, ())):
                continue
        out[layer] = tuple((f, dtype, sh) for f, _, sh in found) if kind.cast else found
    return out


def _prompt_file(save_path: Path, model: str, hash_: str, kind: PromptKind) -> Path:
    return prompt_folder(save_path, model, hash_) / kind.filename


def read_safetensors_header(path: Path, where: str) -> dict:
    """The checked header of a safetensors file (`formats.safetensors_header`: every entry's
    extent inside the file and overlapping no other), its `__metadata__` left out.

    Raises:
        HubIntegrityError: not a safetensors file, or one whose header lies (names `where`).
    """
    return _checked_header(path, where)[0]


def _checked_header(path: Path, where: str) -> tuple[dict, int]:
    """`(header, position of the data)` of a safetensors file, every entry checked."""
    try:
        header, start, _ = formats.safetensors_header(path)
    except FileFormatError as e:
        raise HubIntegrityError(f"{where}: not a safetensors file we can read ({e})") from None
    return header, start


def _shard_metadata(model, kind, layer, head, dtype) -> tuple[tuple[str, str], ...]:
    meta = {"format": f"{FORMAT}/{FORMAT_VERSION}", "model": model, "kind": kind}
    optional = {"layer": layer, "head": head, "dtype": dtype}
    meta.update({k: str(v) for k, v in optional.items() if v is not None})
    return tuple(sorted(meta.items()))


def safetensors_header(entries, metadata: dict) -> bytes:
    """The 8-byte length + JSON header of a safetensors file holding `entries`
    (`(key, dtype, shape)`) in this order.

    Keys are sorted in the JSON and the header is space-padded to 8 bytes, as
    `store.write_safetensors` does, so equal content gives equal bytes.
    """
    header: dict = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for key, dtype, shape in entries:
        n = math.prod(shape) * ITEMSIZE[dtype]
        header[key] = {
            "dtype": SAFETENSORS_DTYPES[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + n],
        }
        offset += n
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text


def tensor_bytes(array, dtype: str) -> memoryview:
    """The little-endian bytes of `array` (numpy or torch) cast to `dtype`."""
    import torch

    tensor = torch.as_tensor(
        np.ascontiguousarray(array) if isinstance(array, np.ndarray) else array
    )
    tensor = tensor.to(TENSOR_DTYPES[dtype]).contiguous()
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
        """Append the tensor for `key`; its shape (and, for a per-prompt kind, its dtype) must
        be the planned one."""
        planned, dtype, shape = self.shard.tensors()[self._next]
        spec = PROMPT_KINDS.get(self.shard.kind)
        exact = spec is not None and not spec.cast  # stored dtypes go as they are, never cast
        got = str(array.dtype).removeprefix("torch.")
        if key != planned or tuple(array.shape) != shape or (exact and got != dtype):
            raise HubIntegrityError(
                f"{self.shard.path}: expected {planned} {shape}, got {key} "
                f"{tuple(array.shape)} {got}; the store changed while pushing"
            )
        self._write(tensor_bytes(array, dtype))
        self._next += 1

    def close(self) -> BuiltFile:
        self._file.close()
        if self._next != len(self.shard.tensors()):
            raise HubIntegrityError(f"{self.shard.path}: shard left incomplete")
        size = self.local.stat().st_size
        entry = self.shard.entry()
        return BuiltFile(self.shard.path, self.local, size, self._sha.hexdigest(), entry)


class ShardReader:
    """Reads single tensors of a downloaded shard, checking the header against expectations."""

    def __init__(self, local: Path, dtype: str, where: str):
        self.local, self.dtype, self.where = Path(local), dtype, where
        # every extent is checked here, against the file's size and the other entries, so a
        # read below never asks for more bytes than the file holds
        self.header, self.base = _checked_header(self.local, where)

    def get(self, key: str, shape: tuple[int, ...], dtype: str | None = None) -> torch.Tensor:
        """The tensor stored under `key`; it must have `shape` and `dtype` (by default the
        dataset's)."""
        dtype = dtype or self.dtype
        info = self.header.get(key)
        if info is None or info["dtype"] != SAFETENSORS_DTYPES[dtype]:
            raise HubIntegrityError(f"{self.where}: no {dtype} tensor for prompt {key}")
        start, end = info["data_offsets"]
        if info["shape"] != list(shape):
            raise HubIntegrityError(f"{self.where}: {key} is not {list(shape)} as its prompt says")
        with open(self.local, "rb") as f:
            f.seek(self.base + start)
            raw = bytearray(f.read(end - start))
        import torch

        return torch.frombuffer(raw, dtype=TENSOR_DTYPES[dtype]).reshape(shape)

    def fields(
        self,
        hash_: str,
        kind: PromptKind,
        n_tokens: int,
        names: tuple[str, ...] = (),
        cfg: dict | None = None,
    ) -> dict[str, torch.Tensor]:
        """One prompt's tensors of a per-prompt kind, `{field: tensor}` in their stored
        dtypes: exactly the kind's fields (a named kind: `names`), each with the prompt's
        positions on the kind's `position_axis` (or a shape its `check` takes for the model
        `cfg`), and the side fields it has.

        Raises:
            HubIntegrityError: a field missing or of another length, or an unknown dtype.
        """
        out = {}
        for name in (*(names or kind.fields), *kind.side_fields):
            info = self.header.get(f"{hash_}/{name}")
            if info is None and name in kind.side_fields:
                continue  # a side field the prompt did not have
            shape = tuple(info.get("shape", [])) if isinstance(info, dict) else ()
            dtype = _DTYPE_NAMES.get(info.get("dtype")) if isinstance(info, dict) else None
            if dtype is None or not _fits(kind, name, shape, n_tokens, cfg):
                raise HubIntegrityError(
                    f"{self.where}: no {name} of {n_tokens} positions for prompt {hash_}"
                    if kind.position_axis is not None
                    else f"{self.where}: {name} {list(shape)} of prompt {hash_} does not fit "
                    "the model"
                )
            out[name] = self.get(f"{hash_}/{name}", shape, dtype)
        if kind.check_values and not kind.check_values(out, cfg or {}):
            raise HubIntegrityError(f"{self.where}: prompt {hash_}'s {kind.name} do not agree")
        return out


def _fits(kind: PromptKind, name: str, shape: tuple, n_tokens: int, cfg: dict | None) -> bool:
    """Whether a field's shape is one the prompt (its tokens) or the model (`kind.check`)
    allows, judged before its bytes are read."""
    if name not in kind.fields:
        return True  # side fields: bounded by the checked header's extents alone
    if kind.check is not None and not (cfg and kind.check(name, shape, cfg)):
        return False
    axis = kind.position_axis
    return axis is None or (len(shape) > axis and shape[axis] == n_tokens)


# --- building the files of a push ------------------------------------------------------------


class _LocalPrompt:
    """One stored prompt's patterns and residuals, read through `lens_cache.reader.Store`."""

    def __init__(self, save_path: Path, plan: ModelPlan, record: dict):
        self.store, self.model, self.hash = Store(save_path), plan.name, record["hash"]

    def pattern(self, layer: int) -> np.ndarray:
        """`[n_heads, T, T]` float32."""
        read = self.store.patterns
        return self._read(hook_name(PATTERN, layer), lambda: read(self.model, self.hash, [layer]))

    def residual(self, kind: str, layer: int):
        """`[T, d_model]` in the stored dtype (a torch tensor)."""
        read = self.store.residuals
        key = hook_name(kind, layer)
        return self._read(key, lambda: read(self.model, self.hash, kind, [layer]))

    def _read(self, key: str, read):
        try:
            return read()[0]
        except (OSError, KeyError, ValueError, RuntimeError) as e:
            where = self.store.prompt_dir(self.model, self.hash)
            raise HubIntegrityError(f"{where}: cannot read {key} ({e})") from None


def _fill_prompt_kind(save_path: Path, plan: ModelPlan, writer: ShardWriter) -> None:
    """Copy one layer of each prompt's per-prompt-kind file into its shard, as stored."""
    kind, layer = PROMPT_KINDS[writer.shard.kind], writer.shard.layer
    planned: dict[str, list[str]] = {}  # the shard's fields of each prompt, in file order
    for key, _, _ in writer.shard.members:
        hash_, name = key.split("/", 1)
        planned.setdefault(hash_, []).append(name)
    for hash_ in writer.shard.hashes:
        path = _prompt_file(save_path, plan.name, hash_, kind)
        refuse_links(path, Path(save_path))
        names = planned.get(hash_, [])
        members = [kind.member(layer, name) for name in names]
        try:
            for name, (_, tensor) in zip(
                names, formats.iter_tensors(path, members, "pt"), strict=True
            ):
                writer.add(f"{hash_}/{name}", tensor)
        except (OSError, RuntimeError, ValueError) as e:
            raise HubIntegrityError(f"{path}: cannot read it ({e})") from None


def model_file_sources(save_path: Path, plans: list[ModelPlan]) -> list[tuple[str, Path, dict]]:
    """`(repo path, local file, manifest fields)` of the model folders' files (`vocab.json`)
    that the plans' per-prompt kinds take along; a missing one is left out with a warning."""
    sources = []
    for plan in plans:
        names = sorted(
            {f for k in plan.tensors if k in PROMPT_KINDS for f in PROMPT_KINDS[k].model_files}
        )
        for name in names:
            local = Path(save_path) / plan.name / name
            try:  # a link would send a file from outside the store
                refuse_links(local, Path(save_path))
            except StoreLinkError as e:
                warn(f"hub push: {e}; not pushed")
                continue
            if not local.is_file():
                warn(f"{local} is missing: the pulled store will show token ids, not strings")
                continue
            entry = {"model": plan.name, "kind": MODEL_FILE, "name": name}
            sources.append((model_file_path(plan.name, name), local, entry))
    return sources


def built_file(path: str, data: bytes, stage: Path) -> BuiltFile:
    local = stage / path
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_bytes(data)
    return BuiltFile(path, local, len(data), hashlib.sha256(data).hexdigest())


def pooled_sources(save_path: Path, plans: list[ModelPlan]) -> list[tuple[str, Path, dict]]:
    """`(repo path, local file, manifest fields)` of every pooled file the plans take along."""
    sources = []
    for plan in plans:
        for name in plan.pooled:
            hook, pool = split_pooled_name(name)
            entry = {"model": plan.name, "kind": POOLED, "hook": hook, "pool": pool}
            for f in sorted(
                (Path(save_path) / plan.name / POOLED_DIR / name).glob("data-*.parquet")
            ):
                sources.append((pooled_path(plan.name, name, f.name), f, entry))
    return sources


def stage_copy(path: str, source: Path, stage: Path, entry: dict) -> BuiltFile:
    """Copy a store file into the stage, hashing it: the upload (which deletes staged files
    once they are up) then sends these bytes even if `write_pooled` replaces the original."""
    local = stage / path
    local.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    try:
        with open(source, "rb") as src, open(local, "wb") as dst:
            for chunk in iter(lambda: src.read(2**20), b""):
                h.update(chunk)
                dst.write(chunk)
    except OSError as e:
        raise HubIntegrityError(f"{source}: cannot read it ({e}); the store changed?") from None
    return BuiltFile(path, local, local.stat().st_size, h.hexdigest(), dict(entry))


def shard_groups(shards: list[Shard]) -> list[list[Shard]]:
    """Shards built together: every head of one (model, layer, run of prompts), so each
    prompt's layer is read (and decompressed) once, not once per head."""
    groups: dict[tuple, list[Shard]] = {}
    for s in shards:
        groups.setdefault((s.model, s.kind, s.layer, s.index), []).append(s)
    return list(groups.values())


def build_group(save_path: Path, plan: ModelPlan, group: list[Shard], stage: Path):
    """Write one group of shards to `stage`; yields a `BuiltFile` per shard."""
    writers = [ShardWriter(s, stage / s.path) for s in group]
    first = group[0]
    if first.kind in PROMPT_KINDS:
        _fill_prompt_kind(save_path, plan, writers[0])
        yield writers[0].close()
        return
    records = {r["hash"]: r for r in plan.records}
    for key in first.hashes:
        source = _LocalPrompt(save_path, plan, records[key])
        if first.kind == PATTERNS:
            layer = source.pattern(first.layer)
            for w in writers:
                w.add(key, layer[w.shard.head])
        else:
            writers[0].add(key, source.residual(first.kind, first.layer))
    for w in writers:
        yield w.close()
