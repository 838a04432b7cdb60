"""Writing the on-disk store, pattern-lens compatible (its names are in `lens_cache.layout`;
reading is `lens_cache.reader`). Every write in lens_cache goes through `atomic_write` (or
`atomic_dir` for a folder): a temporary name, then `os.replace`, so a reader or a crash never
sees a half-written file. A prompt folder's `prompt.json` is written last: it means complete.

Writes are durable, as SQLite makes its own: the temporary file is flushed to disk before
the rename and its folder after it, so a power cut never leaves a name pointing at data that
was never written, and a finished export stays finished. `LENS_CACHE_NO_FSYNC=1` (`--no-fsync`)
skips the flushes, for scratch stores where speed matters more.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import threading
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

try:  # optional speed-up: standard deflate, written faster (see _use_fast_deflate)
    from isal import isal_zlib as _isal_zlib
except ImportError:  # pragma: no cover - isal is a dependency, but the fallback stays correct
    _isal_zlib = None

from lens_cache import attention_metrics, formats, top_examples, topk
from lens_cache.damage import refuse_links
from lens_cache.errors import (
    WRITE_ERRNOS,
    LensCacheError,
    ModelNameError,
    SavePathError,
    StoreWriteError,
)
from lens_cache.faults import fault_point
from lens_cache.layout import (
    DATA_NAMES,
    DEFAULT_DTYPE,
    DEFAULT_TOP_K,
    DEFAULT_TOPK_KEYS,
    DTYPES,
    HEAD_CONTRIBUTIONS,
    HEAD_METRICS,
    HEAD_METRICS_NAME,
    HEADS_NAME,
    HOOK_KINDS,
    HOOKS_NAME,
    LOGIT_LENS_NAME,
    METRICS_LAYERS_MEMBER,
    METRICS_MEMBER,
    NO_FSYNC_ENV,
    NPZ_NAME,
    PATTERN,
    PATTERN_DTYPES,
    PATTERN_TOPK,
    PATTERN_TOPK_NAME,
    PREDICTION_KINDS,
    PREDICTIONS_NAME,
    PROMPT_NAME,
    PROMPTS_DIR,
    RESID_KINDS,
    RESIDUALS_NAME,
    ROOT_ENTRIES,
    STACKED_NAME,
    hook_name,
    parse_hook_name,
)

if TYPE_CHECKING:  # only the writers need torch; `cache` and `view` never import it
    import torch

FORMAT_VERSION = 1
# ZipInfo's per-entry compression level: public from Python 3.13, private before.
_LEVEL_ATTR = "compress_level" if hasattr(zipfile.ZipInfo, "compress_level") else "_compresslevel"
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same arrays give the same bytes


@dataclass(frozen=True)
class ExportSettings:
    """What an export stores. Two runs with the same fingerprint write the same data."""

    hooks: tuple[str, ...] = ("pattern", "resid_post")
    layers: tuple[int, ...] = (0,)
    resid_dtype: str = DEFAULT_DTYPE
    pattern_dtype: str = DEFAULT_DTYPE  # float16 halves the bytes; lossy (abs error <= 2.4e-4)
    stacked_heads: bool = False
    model_dtype: str = DEFAULT_DTYPE  # what the model computed in: float16/bfloat16 move patterns
    predictions: tuple[str, ...] = ()  # `logits`, `logit_lens` (lens_cache.predictions)
    top_k: int = DEFAULT_TOP_K  # top tokens stored per position by the prediction kinds
    lens_layers: tuple[int, ...] | None = None  # of `layers`, those read out by `logit_lens`
    extra_hooks: tuple[str, ...] = ()  # any other per-token hooks, resolved (lens_cache.hooks)
    compress_level: int = 1  # how, not what: left out of the fingerprint
    chunk_mb: float = 1024  # how: most MB of vocabulary rows read out at once; not fingerprinted
    topk_keys: int = DEFAULT_TOPK_KEYS  # keys kept per query row by `pattern_topk`

    def __post_init__(self):
        object.__setattr__(self, "hooks", tuple(k for k in HOOK_KINDS if k in self.hooks))
        kinds = tuple(k for k in PREDICTION_KINDS if k in self.predictions)
        object.__setattr__(self, "predictions", kinds)
        object.__setattr__(self, "layers", tuple(sorted(set(self.layers))))
        if self.lens_layers is not None:
            object.__setattr__(self, "lens_layers", tuple(sorted(set(self.lens_layers))))

    @property
    def lens_read_layers(self) -> tuple[int, ...]:
        """The layers `logit_lens` reads out: `lens_layers`, or every stored layer."""
        return self.layers if self.lens_layers is None else self.lens_layers

    @property
    def torch_resid_dtype(self) -> torch.dtype:
        return DTYPES[self.resid_dtype]

    @property
    def torch_pattern_dtype(self) -> torch.dtype:
        return PATTERN_DTYPES[self.pattern_dtype]

    @property
    def captures_patterns(self) -> bool:
        """Whether the forward caches every layer's dense pattern and brings it to the host: to
        store it, or for `head_metrics` (`pattern_topk` then reads the cached one too; alone,
        it compacts each layer as it fires instead)."""
        return PATTERN in self.hooks or HEAD_METRICS in self.hooks

    @property
    def compacts_as_it_fires(self) -> bool:
        """`pattern_topk` without anything else needing the dense pattern: each layer is
        compacted in a hook as its pattern fires and let go, in one forward pass."""
        return PATTERN_TOPK in self.hooks and not self.captures_patterns

    def hook_names(self) -> list[str]:
        """The hooks kept as they fire (head_contributions are computed from others; the
        patterns `head_metrics` reads are kept even when not stored)."""
        kinds = [PATTERN] if self.captures_patterns else []
        kinds += [k for k in self.hooks if k in RESID_KINDS]
        return [hook_name(kind, layer) for kind in kinds for layer in self.layers]

    def describe(self) -> dict:
        d = asdict(self)
        d.pop("compress_level")
        d.pop("chunk_mb")
        if not self.predictions:  # stores without predictions keep their fingerprint
            d.pop("predictions")
            d.pop("top_k")
        if self.lens_layers is None:  # stores reading out every layer keep their fingerprint
            d.pop("lens_layers")
        else:
            d["lens_layers"] = list(self.lens_layers)
        if PATTERN_TOPK not in self.hooks:  # stores without the kind keep their fingerprint
            d.pop("topk_keys")
        if d["model_dtype"] == "float32":  # stores from before the field keep their fingerprint
            d.pop("model_dtype")
        d.update(hooks=list(self.hooks), layers=list(self.layers), format=FORMAT_VERSION)
        if self.predictions:
            d["predictions"] = list(self.predictions)
        d["extra_hooks"] = list(self.extra_hooks)
        if not self.extra_hooks:  # the same: a store without other hooks keeps its fingerprint
            d.pop("extra_hooks")
        return d

    def fingerprint(self) -> str:
        blob = json.dumps(self.describe(), sort_keys=True).encode()
        return hashlib.sha1(blob).hexdigest()[:16]

    def files(self) -> list[str]:
        """The data files a complete prompt directory holds (prompt.json aside)."""
        names = []
        if PATTERN in self.hooks:
            names.append(STACKED_NAME if self.stacked_heads else NPZ_NAME)
        if any(kind in RESID_KINDS for kind in self.hooks):
            names.append(RESIDUALS_NAME)
        if "logits" in self.predictions:
            names.append(PREDICTIONS_NAME)
        if "logit_lens" in self.predictions:
            names.append(LOGIT_LENS_NAME)
        if self.extra_hooks:
            names.append(HOOKS_NAME)
        if HEAD_CONTRIBUTIONS in self.hooks:
            names.append(HEADS_NAME)
        if HEAD_METRICS in self.hooks:
            names.append(HEAD_METRICS_NAME)
        if PATTERN_TOPK in self.hooks:
            names.append(PATTERN_TOPK_NAME)
        return names


def model_dir(save_path: Path, model_name: str) -> Path:
    """`<save>/<model>`. Raises `ModelNameError` for a name that is not a plain folder name or
    is one of the store's own `ROOT_ENTRIES`."""
    if model_name in ROOT_ENTRIES or model_name in ("", ".", "..") or "/" in model_name:
        raise ModelNameError(
            f"a model cannot be stored under the name {model_name!r}: the store's root keeps "
            f"{', '.join(sorted(ROOT_ENTRIES))} for itself, and a name must be one folder name; "
            "rename the model's directory"
        )
    return Path(save_path) / model_name


def prompt_dir(save_path: Path, model_name: str, hash_: str) -> Path:
    """`<save>/<model>/prompts/<hash>`, refused (`StoreLinkError`) when it or a folder above
    it in the store is a link: an export never writes outside the store through one."""
    path = model_dir(save_path, model_name) / PROMPTS_DIR / hash_
    refuse_links(path, save_path)
    return path


# --- atomic writes ---------------------------------------------------------------------------


# Temp files carry their writer's host and pid: a process removes only those whose writer is
# gone (an interrupted run on this host), never another live process's, which it is about to
# rename (two exports into one store at once) or one written from another host (NFS).
_HOST = socket.gethostname().replace(".", "_").replace("-", "_")


def tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{_HOST}-{os.getpid()}-{threading.get_ident()}")


def is_orphaned_tmp(path: Path) -> bool:
    """A temp file of ours whose writer on this host has died (so nobody will rename it)."""
    stem, sep, tag = path.name.rpartition(".tmp-")
    parts = tag.split("-")
    if not (path.name.startswith(".") and sep and len(parts) == 3 and parts[1].isdigit()):
        return False
    return parts[0] == _HOST and not _process_alive(int(parts[1]))


def remove_orphaned_tmps(folder: Path) -> None:
    """Remove the orphaned temp files (see `is_orphaned_tmp`) directly inside `folder`."""
    for path in folder.iterdir() if folder.is_dir() else ():
        if path.is_file() and is_orphaned_tmp(path):
            path.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def fsync_enabled() -> bool:
    """False under `LENS_CACHE_NO_FSYNC=1`: read at each write, so worker processes and a
    `--no-fsync` given after import agree."""
    return os.environ.get(NO_FSYNC_ENV, "") in ("", "0")


def sync_file(path: Path) -> None:
    """Flush a file's data to disk (fdatasync: also the size, which a reader needs)."""
    if fsync_enabled():
        _flush(path, os.O_RDONLY, getattr(os, "fdatasync", os.fsync))


def sync_dir(path: Path) -> None:
    """Flush a folder's entries to disk, so a rename or a new name in it survives a power cut."""
    if fsync_enabled() and hasattr(os, "O_DIRECTORY"):  # Windows opens no folder: nothing to do
        _flush(path, os.O_RDONLY | os.O_DIRECTORY, os.fsync)


def _flush(path: Path, flags: int, flush) -> None:
    fd = os.open(path, flags)
    try:
        flush(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path) -> None:
    """`mkdir -p`, flushing the folder above each one made: the files later renamed into a new
    folder are durable only once the folder's own name is."""
    made, p = [], Path(path)
    while not p.is_dir():
        made.append(p)
        p = p.parent
    if not made:
        return
    Path(path).mkdir(parents=True, exist_ok=True)
    for p in reversed(made):
        sync_dir(p.parent)


def atomic_write(path: Path, write, stage: str = "write") -> None:
    """Call `write(tmp_path)`, flush it, rename it over `path`, flush the folder: a crash or a
    power cut never leaves `path` half-written, and the write is on disk when this returns.
    `stage` names the write for fault injection (`lens_cache.faults`).

    Raises:
        StoreWriteError: the write or the rename failed (a full disk, a read-only folder); the
            temp file is gone and `path` is as it was.
    """
    tmp = tmp_name(path)
    try:
        write(tmp)
        sync_file(tmp)  # the data first: a name must never point at blocks not yet written
        # after the flush, so the fault's crash comes right before the rename: a flush in
        # between let another writer thread, past its own fault point, lose its rename
        fault_point(stage, tmp)
        os.replace(tmp, path)
        sync_dir(path.parent)  # then the name itself
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, LensCacheError):
            raise StoreWriteError.from_oserror(path, e) from e
        raise


def atomic_dir(out: Path, write) -> None:
    """Call `write(tmp_dir)`, flush everything in it, then put `tmp_dir` where the folder `out`
    was, replacing it, and flush the folder above.

    Raises:
        StoreWriteError: a full disk or a read-only folder; `out` is as it was, no temp left.
    """
    make_dirs(out.parent)
    _remove_orphaned_dirs(out.parent)
    tmp, old = tmp_name(out), tmp_name(out.with_name(f"{out.name}.old"))
    tmp.mkdir()
    try:
        write(tmp)
        sync_tree(tmp)
        if out.exists():
            os.replace(out, old)  # a folder cannot be renamed over a non-empty one
        try:
            os.replace(tmp, out)
        except BaseException:
            if old.exists():
                os.replace(old, out)
            raise
        sync_dir(out.parent)
    except OSError as e:
        if e.errno not in WRITE_ERRNOS:  # a read error is the reader's to name
            raise
        raise StoreWriteError.from_oserror(out, e) from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)


def sync_tree(root: Path) -> None:
    """Flush every file and folder under `root` (files before the folders naming them)."""
    if not fsync_enabled():
        return
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            sync_file(Path(folder, name))
        sync_dir(Path(folder))


def _remove_orphaned_dirs(folder: Path) -> None:
    """Temp folders of an interrupted run (their writer is dead: see `tmp_name`)."""
    for path in folder.iterdir():
        if is_orphaned_tmp(path):
            shutil.rmtree(path, ignore_errors=True)


def write_bytes(path: Path, data: bytes, stage: str = "write") -> int:
    """Write `data` atomically (a reader never sees a half-written file); return its size."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data), stage)
    return len(data)


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: Path, data) -> None:
    write_text(path, json.dumps(data, ensure_ascii=False) + "\n")


def write_jsonl(path: Path, records) -> None:
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def write_npz(path: Path, arrays, level: int = 1) -> None:
    """An `.npz` readable by `np.load`, deflated at `level` (0 = stored), byte-deterministic.

    `arrays` is a dict or an iterator of `(name, array)`: members are written one at a time,
    so an iterator that produces them lazily never needs them all in memory.
    """
    items = arrays.items() if isinstance(arrays, dict) else arrays
    method = zipfile.ZIP_DEFLATED if level > 0 else zipfile.ZIP_STORED

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=method, allowZip64=True) as zf:
            for name, array in items:
                info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
                info.compress_type = method
                setattr(info, _LEVEL_ATTR, level or None)
                fault_point("npz", tmp)
                with zf.open(info, "w", force_zip64=True) as f:
                    _use_fast_deflate(f, level)
                    np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)

    atomic_write(path, write)


def _use_fast_deflate(member, level: int) -> None:
    """Deflate this zip member with ISA-L instead of zlib when it is installed.

    ISA-L writes the same standard deflate streams (any zip reader, np.load included, reads
    them) about 6x faster than zlib at level 1, at the same ratio on attention patterns; the
    compression is what kept the writers behind the forward pass. zipfile has no public hook
    for a compressor, so we swap the one it made for this member before any byte is written.
    """
    if level <= 0 or _isal_zlib is None or not hasattr(member, "_compressor"):
        return
    member._compressor = _isal_zlib.compressobj(min(level, 3), _isal_zlib.DEFLATED, -15)


def write_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)

    atomic_write(path, write)


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict) -> None:
    """A standard safetensors file whose header keys are sorted, so equal data gives equal bytes
    (the library writes its metadata map in hash order, which varies between calls)."""
    from safetensors.torch import save

    write_bytes(path, formats.sorted_safetensors(save(tensors, metadata=metadata)))


# --- prompt directories ----------------------------------------------------------------------


def read_json(path: Path):
    """A store's JSON file, bounded in size (see `lens_cache.formats.read_json`)."""
    return formats.read_json(path)


def prompt_is_complete(directory: Path, settings: ExportSettings) -> bool:
    """Cheap check: prompt.json (written last) carries our fingerprint and every file is there."""
    try:
        record = read_json(directory / PROMPT_NAME)
    except (OSError, ValueError):
        return False
    if record.get("lens_cache", {}).get("settings") != settings.fingerprint():
        return False
    return all((directory / name).is_file() for name in settings.files())


def write_prompt_dir(
    directory: Path, record: dict, capture, settings: ExportSettings, model_name: str
) -> None:
    """Write one prompt's files, prompt.json last, so only a complete directory looks complete."""
    make_dirs(directory)
    (directory / PROMPT_NAME).unlink(missing_ok=True)  # a rewrite is incomplete until it ends
    _remove_stale(directory, keep=settings.files())
    patterns, top, metrics = capture.patterns, {}, {}
    if isinstance(patterns, dict):
        patterns = patterns.items()  # one form for both: (name, array) pairs
    contributing = HEAD_CONTRIBUTIONS in settings.hooks
    if contributing:  # each prompt keeps its top-example candidates (top_examples.py)
        patterns = top_examples.watch(patterns, capture.contributions, top)
    if HEAD_METRICS in settings.hooks:  # the tokens the viewer gives them: one per position
        tokens = [str(t) for t in record["lens_cache"]["tokens"]]
        patterns = attention_metrics.watch(patterns, tokens, metrics)
    if PATTERN not in settings.hooks:
        _drain(patterns)  # metrics or the compact pattern only: run through them, store none
    elif capture.patterns:
        if settings.stacked_heads:
            arrays = (a for _, a in patterns)
            stacked = np.stack(list(arrays), axis=1)  # [1, L, H, T, T]
            write_npy(directory / STACKED_NAME, stacked)
        else:
            write_npz(directory / NPZ_NAME, patterns, settings.compress_level)
    # the hooks file lists its hooks in the settings' order (the order they fire), whoever
    # filled the capture (a Hub pull fills it layer by layer)
    hooks = {n: capture.hooks[n] for n in settings.extra_hooks if n in capture.hooks}
    hooks.update(capture.hooks)
    for name, tensors in ((RESIDUALS_NAME, capture.residuals), (HOOKS_NAME, hooks)):
        if tensors:
            metadata = {
                "model": model_name,
                "hooks": json.dumps(list(tensors)),
                "dtype": settings.resid_dtype,
                "format": f"lens_cache/{FORMAT_VERSION}",
            }
            write_safetensors(directory / name, tensors, metadata)
    for name, tensors in (
        (PREDICTIONS_NAME, capture.predictions),
        (LOGIT_LENS_NAME, capture.logit_lens),
    ):
        if tensors:
            metadata = {
                "model": model_name,
                "top_k": str(settings.top_k),
                "format": f"lens_cache/{FORMAT_VERSION}",
            }
            write_safetensors(directory / name, tensors, metadata)
    if contributing:
        _write_contributions(directory, capture.contributions, top, model_name)
    if HEAD_METRICS in settings.hooks:
        _write_head_metrics(directory, metrics, model_name, capture.head_metrics)
    if capture.topk:
        _write_topk(directory, capture.topk, len(capture.ids), settings, model_name)
    fault_point("renamed", directory)
    write_json(directory / PROMPT_NAME, record)


def _write_contributions(directory: Path, contributions: dict, top: dict, model_name: str) -> None:
    """head_contributions.safetensors: value norms, DLA and the top-example candidates. Written
    after the patterns: a prompt captured in layer groups fills its contributions (and the
    attention candidates in `top`) as the patterns generator runs the passes. Candidates already
    in `contributions` (a Hub pull brings them) are kept as they came."""
    top.update(top_examples.dla_members(contributions))
    import torch

    tensors = {**{n: torch.from_numpy(a) for n, a in top.items()}, **contributions}
    metadata = {"model": model_name, "format": f"lens_cache/{FORMAT_VERSION}"}
    write_safetensors(directory / HEADS_NAME, tensors, metadata)


def _write_head_metrics(directory: Path, metrics: dict, model_name: str, pulled: dict) -> None:
    """head_metrics.safetensors: `[layers, heads, metrics]` float32, the metric names (in
    `attention_metrics.METRIC_NAMES` order) in its metadata. Written after the patterns, which
    a prompt captured in layer groups produces only as they are consumed; members `pulled`
    from the Hub are written as they came."""
    import torch

    names = sorted(metrics, key=lambda name: parse_hook_name(name)[1])
    layers = [parse_hook_name(name)[1] for name in names]
    if pulled:  # as stored where they were computed, even if pulled patterns were cast
        tensors = dict(pulled)
    else:
        values = np.stack([metrics[n] for n in names]).astype(np.float32)
        tensors = {
            METRICS_MEMBER: torch.from_numpy(values),
            METRICS_LAYERS_MEMBER: torch.tensor(layers, dtype=torch.int64),
        }
    metadata = {
        "model": model_name,
        "metrics": json.dumps(list(attention_metrics.METRIC_NAMES)),
        "format": f"lens_cache/{FORMAT_VERSION}",
    }
    write_safetensors(directory / HEAD_METRICS_NAME, tensors, metadata)


def _drain(patterns) -> None:
    for _ in patterns:
        pass


def _write_topk(directory: Path, tensors: dict, n_tokens: int, settings, model_name: str) -> None:
    """pattern_topk.safetensors; the block size of its overview is in the header, so a reader
    checks the overview's shape before reading it."""
    metadata = {
        "model": model_name,
        "topk_keys": str(settings.topk_keys),
        "block": str(topk.block_size(n_tokens)),
        "format": f"lens_cache/{FORMAT_VERSION}",
    }
    write_safetensors(directory / PATTERN_TOPK_NAME, tensors, metadata)


def _remove_stale(directory: Path, keep: list[str]) -> None:
    """Drop temp files of an interrupted run (never a live process's) and data files that
    other settings left behind."""
    remove_orphaned_tmps(directory)
    for name in DATA_NAMES:
        if name not in keep:
            (directory / name).unlink(missing_ok=True)


def remove_prompt_dir(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def ensure_writable(save_path: Path) -> Path:
    """Create the save path if needed and prove we can write there.

    Raises:
        SavePathError: it cannot be created or written.
    """
    save_path = Path(save_path)
    try:
        save_path.mkdir(parents=True, exist_ok=True)
        probe = save_path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise SavePathError(f"cannot write to save path {save_path}: {e.strerror or e}") from e
    return save_path
