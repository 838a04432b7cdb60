"""Build the static viewer of a store: read it through `lens_cache.reader.Store`, write each
prompt's data scripts (only those whose source changed), then the index and the page. The
format is described in `lens_cache.viewer`."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from hashlib import md5
from pathlib import Path

import numpy as np

from lens_cache import formats
from lens_cache.damage import reading, refuse_links
from lens_cache.errors import StoreCorruptError, StoreLinkError, StoreNotFoundError
from lens_cache.indexer import write_indexes
from lens_cache.layout import (
    DATA_NAMES,
    HEAD_METRICS_NAME,
    HEADS_NAME,
    INDEX_HTML,
    MODEL_CFG_NAME,
    MODELS_INDEX,
    NPZ_NAME,
    PATTERN,
    PATTERN_LENS_PAGE,
    PATTERN_TOPK_NAME,
    PROMPT_NAME,
    RESID_KINDS,
    RESIDUALS_NAME,
    STACKED_NAME,
    VIEWER_APP_DIR,
    VIEWER_DATA_DIR,
    hook_layers,
    hook_name,
    parse_hook_name,
)
from lens_cache.locking import store_lock_unless
from lens_cache.progress import log as progress_log
from lens_cache.progress import warn
from lens_cache.reader import Store, pattern_length
from lens_cache.store import make_dirs, remove_orphaned_tmps, write_bytes
from lens_cache.user_metrics import compute_layer, registered_metrics
from lens_cache.viewer import _corpus as viewer_corpus
from lens_cache.viewer import _heads as viewer_heads
from lens_cache.viewer import _topk as viewer_topk
from lens_cache.viewer import _user as viewer_user
from lens_cache.viewer import metrics as M
from lens_cache.viewer._encode import (
    THUMB_SIZE,
    encode_array,
    layer_chunk,
    nan_to_none,
    numpy_only,
    read_data_script,
    script_call,
    thumbnail,
)
from lens_cache.viewer._manifest import MANIFEST_NAME, Manifest, write_manifest
from lens_cache.viewer._predictions import prediction_data

FORMAT_VERSION = 6  # 4: predictions; 5: the duplicate-token metric; 6: head contributions
MANIFEST_VERSION = {"format": FORMAT_VERSION, "thumb_size": THUMB_SIZE}
DATA_DIR = VIEWER_DATA_DIR
# The viewer's classic scripts (not ES modules: those do not load from file:// in Chromium), in
# the order index.html loads them: core.js first, router.js (which boots the page) last.
SCRIPTS = (
    "core.js",
    "tokens.js",
    "head_canvas.js",
    "views_home.js",
    "views_prompt.js",
    "views_head.js",
    "views_metrics.js",
    "views_lens.js",
    "views_top.js",
    "views_topk.js",
    "router.js",
)
ASSETS = (*SCRIPTS, "viewer.css")
APP_DIR = VIEWER_APP_DIR  # the ASSETS' folder, so a store's root holds only index.html of them
OLD_ASSETS = ("viewer.js", "viewer.css")  # where earlier versions wrote the viewer; removed


def print_to_stderr(message: str) -> None:
    """Default `log` of :func:`write_viewer`: progress goes to stderr, never stdout."""
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- small helpers


def assets_dir():
    """The folder holding ``index.html.j2`` and the :data:`ASSETS` (scripts and ``viewer.css``).

    Installed, that is the package data ``lens_cache.web``; in a source checkout before the
    package is installed it is the repository's ``web/`` folder beside ``lens_cache/``.
    """
    try:
        from importlib.resources import files

        folder = files("lens_cache.web")
        if all(folder.joinpath(name).is_file() for name in ("index.html.j2", *ASSETS)):
            return folder
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parents[2] / "web"


def write_atomic(path: Path, data: bytes) -> int:
    """`store.write_bytes` into a folder made on demand: a reader (the browser, or a second
    write_viewer) never sees a half-written file. Returns the size."""
    make_dirs(path.parent)
    return write_bytes(path, data, stage="viewer")


def write_if_changed(path: Path, data: bytes) -> int:
    """Like :func:`write_atomic`, but skip (and return 0) when the file already holds `data`."""
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return 0
    return write_atomic(path, data)


def model_slug(name: str) -> str:
    """A file-name-safe folder name for a model; a short hash keeps changed names unique."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
    if slug != name or slug.startswith("."):
        slug = f"{slug.lstrip('.')}-{md5(name.encode()).hexdigest()[:8]}"
    return slug


# ---------------------------------------------------------------- reading the store


def read_models(save: Path) -> list[dict]:
    """Every model's `model_cfg.json`, sorted by name, as the reader lists them."""
    models = [read_model(save, name) for name in Store(save).models()]
    for cfg in models:
        if cfg["model_name"] == DATA_DIR:
            raise StoreCorruptError(
                f"a model is named {DATA_DIR!r}, the viewer's own data folder; rename the model"
            )
    return models


def read_prompts(save: Path, model: str) -> list[dict]:
    """A model's prompt records (the reader's form: metadata in `meta`), sorted by hash."""
    return sorted(Store(save).prompts(model), key=lambda r: r["hash"])


def source_dir(save: Path, cfg: dict, prompt: dict) -> Path:
    """A prompt's folder in the store, refused (`StoreLinkError`) when it is a link."""
    path = Store(save).prompt_dir(cfg["model_name"], prompt["hash"])
    refuse_links(path, save)
    return path


def file_sig(path: Path | str) -> list[int] | None:
    """``[size, mtime_ns]`` of a file, or None when absent: what "up to date" compares. A
    link's own (never its target's), so a file replaced by a link is read again, and refused."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return [st.st_size, st.st_mtime_ns]


def source_sig(prompt_dir: Path) -> dict:
    """:func:`file_sig` of prompt.json and each data file: one listing of the folder and a
    stat of each file there (an unchanged rebuild does this for every prompt, so it skips the
    stats of files that are not there and pathlib's overhead)."""
    try:
        present = set(os.listdir(prompt_dir))
    except FileNotFoundError:
        present = set()
    folder = str(prompt_dir)
    sig = {
        name: file_sig(os.path.join(folder, name)) if name in present else None
        for name in (PROMPT_NAME, *DATA_NAMES)
    }
    figures = viewer_user.figure_sig(prompt_dir, present)  # pattern-lens's figures_main's
    if figures:
        sig["figures"] = figures
    return sig


def resid_norms(path: Path, n_tokens: int, log: Callable[[str], None]) -> dict | None:
    """``{"layers": [...], "norms": {hook: [layers, T] float32}}`` from residuals.safetensors.

    Norms are taken in float32 whatever the stored dtype. Returns None when there is no file
    or no residual tensor in it.
    """
    if not path.is_file():
        return None
    return norms_of(formats.iter_tensors(path), n_tokens, log, path)


def norms_of(tensors, n_tokens: int, log, where) -> dict | None:
    """:func:`resid_norms` of the residual tensors among `tensors`, `(key, array)` pairs (from
    the file, or from the tensors an export holds in memory: the same numbers)."""
    found: dict[str, dict[int, np.ndarray]] = {}
    for key, arr in tensors:
        parsed = parse_hook_name(key)
        if not parsed or parsed[0] == PATTERN:
            continue
        arr = np.asarray(arr, dtype=np.float32).reshape(-1, arr.shape[-1])
        if arr.shape[0] != n_tokens:
            log(f"viewer: skipping {key} in {where}: {arr.shape[0]} rows, {n_tokens} tokens")
            continue
        kind, layer = parsed
        found.setdefault(kind, {})[layer] = np.linalg.norm(arr, axis=-1)
    return _stack_norms(found)


def _stack_norms(found: dict[str, dict[int, np.ndarray]]) -> dict | None:
    if not found:
        return None
    layers = sorted({i for per_layer in found.values() for i in per_layer})
    norms = {}
    for hook in RESID_KINDS:
        if hook in found:
            rows = [found[hook].get(i) for i in layers]
            t = next(r for r in rows if r is not None).shape[0]
            full = [r if r is not None else np.full(t, np.nan) for r in rows]
            norms[hook] = np.stack(full).astype(np.float32)
    return {"layers": layers, "norms": norms}


# ---------------------------------------------------------------- one prompt


def iter_patterns(src: Path, prompt: dict, n_heads: int, n_tokens: int):
    """Yield ``(layer, [n_heads, T, T] float32)`` for each stored layer, one at a time.

    Reads ``activations.npz``, or the stacked ``[1, L, H, T, T]`` .npy that replaces it when the
    store was exported with stacked heads (memory-mapped: one layer in memory at a time). Each
    layer's header is checked against `n_heads` and `n_tokens` before its data is read.
    """
    shape = (1, n_heads, n_tokens, n_tokens)
    if (src / NPZ_NAME).is_file():
        names = formats.npz_file_names(src / NPZ_NAME)
        keys = [hook_name(PATTERN, layer) for layer in stored_layers(prompt, names)]
        # the layers before a missing one are read (and checked) first, as they come
        readable = list(itertools.takewhile(names.__contains__, keys))
        for key, array in formats.iter_npz(src / NPZ_NAME, readable, shape):
            yield parse_hook_name(key)[1], check_layer(array, key, n_heads, n_tokens, src)
        if len(readable) < len(keys):
            missing = keys[len(readable)]
            raise StoreCorruptError(f"{src}: no array {missing!r}; prompt.json lists it as stored")
    elif (src / STACKED_NAME).is_file():
        listed = (prompt.get("lens_cache") or {}).get("layers")
        stacked = formats.open_npy(
            src / STACKED_NAME, lambda found: formats.check_stacked(found, shape)
        )
        layers = sorted(listed) if listed is not None else range(stacked.shape[1])
        for k, layer in enumerate(layers):
            yield layer, check_layer(stacked[0, k], f"layer {layer}", n_heads, n_tokens, src)
    elif any(h == PATTERN for h in (prompt.get("lens_cache") or {}).get("hooks") or []):
        raise StoreNotFoundError(
            f"{src}: no {NPZ_NAME} (nor {STACKED_NAME}) but prompt.json "
            "lists patterns as stored; export this prompt again"
        )
    # else: an export of residuals only; the viewer shows their norms and no patterns


def check_layer(arr, key: str, n_heads: int, n_tokens: int, where: Path) -> np.ndarray:
    """One ``[n_heads, T, T]`` float32 layer, with errors that name the file."""
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.shape != (n_heads, n_tokens, n_tokens):
        raise StoreCorruptError(
            f"{where}: {key} has shape {arr.shape}, expected [1, {n_heads}, {n_tokens}, "
            f"{n_tokens}] from model_cfg n_heads and prompt.json n_tokens"
        )
    return np.asarray(arr, dtype=np.float32)


def prompt_tokens(prompt: dict, n_tokens: int) -> list[str]:
    """The stored string tokens (BOS included when present); never guessed from the text."""
    tokens = [str(t) for t in prompt.get("tokens") or []]
    if len(tokens) != n_tokens:
        tokens = (tokens + [f"#{i}" for i in range(len(tokens), n_tokens)])[:n_tokens]
    return tokens


PATTERN_LENS_BOS = "<bos>"  # pattern-lens does not store the BOS string; a label stands in


def pattern_axis(prompt: dict) -> tuple[int, list[str]]:
    """The length and string tokens of a prompt's pattern axes.

    pattern-lens's prompt.json (the one without a ``lens_cache`` block) counts its tokens
    without the BOS its patterns include (see `lens_cache.reader`), so there the axis is one
    longer and starts with a stand-in for the BOS.
    """
    n_tokens = pattern_length(prompt)
    if "lens_cache" in prompt:
        return n_tokens, prompt_tokens(prompt, n_tokens)
    return n_tokens, [PATTERN_LENS_BOS, *prompt_tokens(prompt, n_tokens - 1)]


def stored_layers(prompt: dict, keys: list[str]) -> list[int]:
    layers = (prompt.get("lens_cache") or {}).get("layers")
    if layers is None:  # pattern-lens stores: every pattern key in the npz
        layers = hook_layers(keys, PATTERN)
    return sorted(int(i) for i in layers)


class StoredArrays:
    """Where :func:`build_prompt` takes a prompt's patterns and residual norms from: its files
    in the store. (`lens_cache.viewer._produce.CapturedArrays` takes the same numbers from the
    tensors an export has just written.)"""

    def __init__(self, src: Path):
        self.src = src

    def patterns(self, prompt: dict, n_heads: int, n_tokens: int):
        return iter_patterns(self.src, prompt, n_heads, n_tokens)

    def resid_norms(self, n_tokens: int, log) -> dict | None:
        return resid_norms(self.src / RESIDUALS_NAME, n_tokens, log)


def build_prompt(save: Path, cfg: dict, prompt: dict, out: Path, log, arrays=None) -> dict:
    """Write the data scripts of one prompt of one model; return its stamp plus its metrics.

    ``stamp.json`` (written last, so an interrupted build is redone) records the source files'
    sizes and mtimes; the metrics live in ``prompt.js``, where a later run reads them back.
    `arrays` (default: :class:`StoredArrays` of the prompt's folder) gives the patterns and
    residual norms; every other kind of data is read from the prompt's files.
    """
    src = source_dir(save, cfg, prompt)
    if out.is_relative_to(save):  # a notebook builds one prompt into a folder of its own
        refuse_links(out, save)
    sig = source_sig(src)  # before reading: a file changed while we read gets rebuilt next time
    key = f"{out.parent.name}/{prompt['hash']}"
    n_heads = int(cfg["n_heads"])
    n_tokens, tokens = pattern_axis(prompt)
    arrays = arrays or StoredArrays(src)
    remove_orphaned_tmps(out)  # of an interrupted build of this prompt
    layers, per_layer, thumbs, written = [], [], [], 0
    pattern_file = src / (NPZ_NAME if (src / NPZ_NAME).is_file() else STACKED_NAME)
    with reading(src / HEADS_NAME, save):
        contributions = viewer_heads.read_contributions(
            Store(save), cfg["model_name"], prompt["hash"]
        )
    heads = contributions and viewer_heads.PromptHeads(contributions)
    thumbs_too = n_tokens > THUMB_SIZE  # shorter prompts: the page draws from the chunks
    user, user_layers = registered_metrics(), []
    stored = stored_metrics(save, src, prompt)
    with reading(pattern_file, save):
        for layer, pat in arrays.patterns(prompt, n_heads, n_tokens):
            layers.append(layer)
            per_layer.append(stored.get(layer) or M.head_metrics(pat, tokens))
            if user:
                user_layers.append(compute_layer(user, pat, tokens))
            if thumbs_too:
                thumbs.append(thumbnail(pat))
            if heads:
                heads.add_layer(layer, pat, tokens, thumbnail if thumbs_too else None)
            chunk = script_call("chunk", f"{key}/{layer}", layer_chunk(pat))
            written += write_atomic(out / f"L{layer}.js", chunk)
    chunks = list(layers)  # the layers whose patterns are drawn (an L<layer>.js each)
    if not chunks and stored:  # kind head_metrics without patterns: the stored metrics alone
        layers, per_layer = metrics_only(stored, heads, n_heads)
    summary = metric_summary(per_layer, tokens)
    with reading(src / RESIDUALS_NAME, save):
        resid = arrays.resid_norms(n_tokens, log)
    payload = prompt_payload(prompt, tokens, layers, summary, thumbs, resid)
    payload["pred"], lens = prediction_data(Store(save), cfg["model_name"], src, encode_array)
    payload["heads"] = heads.payload(encode_array, nan_to_none) if heads else None
    metrics_alone = bool(layers) and not chunks
    if metrics_alone:  # only then: a store with patterns keeps its bytes
        payload["patterns"] = False
    add_user_parts(payload, save, src, sig, () if metrics_alone else user, user_layers)
    if lens is not None:
        written += write_atomic(out / "lens.js", script_call("lens", key, lens))
    with reading(src / PATTERN_TOPK_NAME, save):
        compact, compact_files, size = viewer_topk.write_topk(
            src, out, key, n_heads, n_tokens, write_atomic
        )
    if compact:  # only then: a store without the compact pattern keeps its bytes
        payload["topk"], written = compact, written + size
    written += write_atomic(out / "prompt.js", script_call("prompt", key, payload))
    stamp = {
        "format": FORMAT_VERSION,
        "thumb_size": THUMB_SIZE,
        "source": sig,
        "files": [*(f"L{layer}.js" for layer in chunks), "prompt.js"]
        + (["lens.js"] if lens is not None else [])
        + compact_files,
        "layers": layers,
        "n_tokens": n_tokens,
        "resid": resid is not None,
        "lens": lens is not None,
        "mean_loss": payload["pred"]["mean_loss"] if payload["pred"] else None,
    }
    if user:  # only then: a store without user metrics keeps its bytes
        stamp["user_metrics"] = [m.signature() for m in user]
    written += write_atomic(out / "stamp.json", json.dumps(stamp).encode())
    return {**stamp, **stamp_metrics(payload), "bytes_written": written}


def stored_metrics(save: Path, src: Path, prompt: dict) -> dict[int, dict]:
    """``{layer: {metric: [heads]}}`` of the prompt's stored kind ``head_metrics`` (the same
    functions as `M.head_metrics`, taken by the export from the patterns in memory), or {}."""
    if not (src / HEAD_METRICS_NAME).is_file():
        return {}
    return Store(save).prompt_head_metrics(src.parent.parent.name, prompt["hash"])


def metrics_only(stored: dict, heads, n_heads: int) -> tuple[list[int], list[dict]]:
    """The layers and per-layer metrics of a prompt whose stored metrics stand in for its
    patterns; its value-weighted metrics (which need patterns) are NaN."""
    layers = sorted(stored)
    if heads:
        heads.without_patterns(layers, n_heads)
    return layers, [stored[layer] for layer in layers]


def add_user_parts(payload: dict, save: Path, src: Path, sig: dict, user, user_layers) -> None:
    """The user metrics and pattern-lens's figures of a prompt (`_user`), each only when
    there are any: a store without them keeps its bytes."""
    if user:
        payload["user"] = viewer_user.prompt_part(user, user_layers, encode_array)
    figures = viewer_user.figures_part(save, src, sig.get("figures"))
    if figures:
        payload["figures"] = figures


def stamp_metrics(payload: dict) -> dict:
    """What the index needs of a ``prompt.js`` payload beside its stamp."""
    part = {
        "metrics": payload["metrics"],
        "baseline": payload["baseline"],
        "heads": viewer_heads.stamp_part(payload.get("heads")),
    }
    if payload.get("user"):
        part["user"] = viewer_user.stamp_part(payload["user"])
    return part


def same_user_metrics(stamp: dict) -> bool:
    """Whether a prompt's viewer data holds the metrics registered now (names, kinds, code)."""
    return stamp.get("user_metrics", []) == viewer_user.signatures()


def metric_summary(per_layer: list[dict], tokens: list[str]) -> dict:
    """``metrics`` (name -> [layer][head], None for NaN), ``baseline`` and ``labels``."""
    base = M.baseline_metrics(tokens)
    return {
        "metrics": {n: nan_to_none([m[n] for m in per_layer]) for n in M.METRIC_NAMES},
        "baseline": {n: nan_to_none(v) for n, v in base.items()},
        "labels": [M.label_heads(m, base) for m in per_layer],
    }


def prompt_payload(prompt, tokens, layers, summary, thumbs, resid) -> dict:
    """The object of ``prompt.js`` (see the module docstring)."""
    return {
        "text": prompt.get("text", ""),
        "tokens": tokens,
        "n_tokens": len(tokens),
        "layers": layers,
        "meta": prompt.get("meta") or {},
        **summary,
        "thumb": encode_array(np.stack(thumbs), "u1") if thumbs else None,
        "thumb_size": min(len(tokens), THUMB_SIZE),
        "resid": None
        if resid is None
        else {
            "layers": resid["layers"],
            "norms": {h: encode_array(v, "f4") for h, v in resid["norms"].items()},
        },
    }


def emit_script(path: Path, func: str, *args) -> int:
    """Write the data script ``LENS.<func>(<args>);`` unless `path` already holds it."""
    return write_if_changed(path, script_call(func, *args))


def fresh_stamp(save: Path, cfg: dict, prompt: dict, out: Path) -> dict | None:
    """The recorded stamp, with the metrics from ``prompt.js``, when the prompt's viewer data
    is up to date; else None."""
    try:
        stamp = json.loads((out / "stamp.json").read_text())
    except (FileNotFoundError, ValueError):
        return None
    src = source_dir(save, cfg, prompt)
    up_to_date = (
        stamp.get("format") == FORMAT_VERSION
        and stamp.get("thumb_size") == THUMB_SIZE
        and same_user_metrics(stamp)
        and stamp.get("source") == source_sig(src)
        and all((out / name).is_file() for name in stamp.get("files", []))
    )
    if not up_to_date:
        return None
    try:
        payload = read_data_script(out / "prompt.js")[1]
    except (ValueError, IndexError):
        return None  # damaged: rebuild
    return {**stamp, **stamp_metrics(payload)}


# ---------------------------------------------------------------- the index


def prompt_summary(stamp: dict) -> dict:
    """Per-prompt numbers for the home table: the max over heads of each score (is there a
    head doing this on this prompt?) and the mean over heads of the entropies."""
    if "summary" in stamp:  # kept in the manifest
        return stamp["summary"]
    out = {}
    for name in M.METRIC_NAMES:
        values = np.array(stamp["metrics"][name], dtype=np.float64).ravel()
        values = values[np.isfinite(values)]
        if values.size == 0:
            out[name] = None
        else:
            out[name] = round(float(values.max() if name in M.SCORE_NAMES else values.mean()), 6)
    return out


def average_metrics(cfg: dict, per_prompt) -> tuple[dict, dict]:
    """Per-head means over prompts, NaN-skipping: `per_prompt` is ``[(metrics, layers)]``
    with ``metrics`` name -> per listed layer, per head (None for NaN).

    Returns:
        ``({name: [n_layers, n_heads] float64 mean}, {name: [n_layers, n_heads] count})``.
    """
    n_layers, n_heads = int(cfg["n_layers"]), int(cfg["n_heads"])
    sums, counts = {}, {}
    for metrics, layers in per_prompt:
        for name, per_layer in metrics.items():
            s = sums.setdefault(name, np.zeros((n_layers, n_heads)))
            c = counts.setdefault(name, np.zeros((n_layers, n_heads)))
            values = np.array(per_layer, dtype=np.float64).reshape(-1, n_heads)
            for row, layer in zip(values, layers, strict=True):
                ok = np.isfinite(row)
                s[layer, ok] += row[ok]
                c[layer, ok] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return {n: sums[n] / counts[n] for n in sums}, counts


def model_summary(cfg: dict, stamps: list[dict]) -> dict:
    """Per-head metrics averaged over the model's prompts (NaN-skipping), with labels.

    A head's average covers the prompts that stored its layer and where the metric is defined
    (induction needs a repeated token); ``count`` says how many prompts that was.
    """
    n_layers, n_heads = int(cfg["n_layers"]), int(cfg["n_heads"])
    shape = (len(M.METRIC_NAMES), n_layers, n_heads)
    every = stacked([metrics_array(s, shape) for s in stamps], shape)
    finite = np.isfinite(every)
    # summed prompt after prompt (a reduction over the outer axis), whichever path the stamps
    # came by: the same numbers from the manifest as from a full build
    sums, count = every.sum(axis=0, where=finite), finite.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        avg = {n: sums[k] / count[k] for k, n in enumerate(M.METRIC_NAMES)}
    counts = {n: count[k] for k, n in enumerate(M.METRIC_NAMES)}
    base = {n: _nanmean([s["baseline"].get(n) for s in stamps]) for n in M.METRIC_NAMES}
    labels = [
        M.label_heads({n: avg[n][layer] for n in M.SCORE_NAMES}, base) for layer in range(n_layers)
    ]
    heads = viewer_heads.model_part(cfg, stamps, average_metrics)
    user = viewer_user.model_part(cfg, stamps, average_metrics)
    summary = {
        "avg": {n: nan_to_none(v) for n, v in avg.items()},
        "count": counts.get("first", np.zeros((n_layers, n_heads))).astype(int).tolist(),
        "baseline": {n: nan_to_none(v) for n, v in base.items()},
        "labels": labels,
        "heads": None
        if heads is None
        else {
            "avg": {n: nan_to_none(v) for n, v in heads["avg"].items()},
            "dla": nan_to_none(heads["dla"]),
        },
    }
    if user:  # only then: a store without user metrics keeps its bytes
        summary["user"] = {"avg": {n: nan_to_none(v) for n, v in user["avg"].items()}}
    return summary


def model_dist(out_dir: Path, cfg: dict, prompts: list[dict], stamps: list[dict], entry) -> int:
    """Write the model's per-head score distributions (`viewer._corpus`); list their layers
    in its index entry as ``dist``. Returns the bytes written."""
    n_layers, n_heads = int(cfg["n_layers"]), int(cfg["n_heads"])
    shape = (len(M.METRIC_NAMES), n_layers, n_heads)
    every = stacked([metrics_array(s, shape) for s in stamps], shape)
    scores = viewer_corpus.scores_of(stamps, every, n_layers, n_heads)
    hashes = [p["hash"] for p in prompts]
    written, entry["dist"] = viewer_corpus.write_dist(out_dir, hashes, scores, emit_script)
    return written


def metrics_array(stamp: dict, shape: tuple[int, int, int]) -> np.ndarray:
    """A stamp's per-head metrics as float64 ``[metrics, n_layers, n_heads]``, NaN where not
    defined or the layer not stored (kept as is in the manifest)."""
    if "metrics_array" not in stamp:
        arr = np.full(shape, np.nan)
        for k, name in enumerate(M.METRIC_NAMES):
            values = np.array(stamp["metrics"][name], dtype=np.float64).reshape(-1, shape[-1])
            arr[k, stamp["layers"]] = values
        stamp["metrics_array"] = arr
    return stamp["metrics_array"]


def stacked(rows: list[np.ndarray], shape: tuple) -> np.ndarray:
    """`np.stack(rows)`, or a read-only view without a copy when the rows already lie one after
    the other in one buffer: the manifest's, on an unchanged rebuild (at 10,000 prompts a
    180 MB copy)."""
    if not rows:
        return np.zeros((0, *shape))
    first, base = rows[0], rows[0].base
    start, step = first.ctypes.data, first.nbytes
    in_place = base is not None and all(
        row.base is base
        and row.dtype == first.dtype
        and row.shape == first.shape
        and row.flags.c_contiguous
        and row.ctypes.data == start + k * step
        for k, row in enumerate(rows)
    )
    if not in_place:
        return np.stack(rows)
    return np.lib.stride_tricks.as_strided(
        first, (len(rows), *first.shape), (step, *first.strides), writeable=False
    )


def _nanmean(values) -> float:
    arr = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return float(np.nanmean(arr)) if np.isfinite(arr).any() else float("nan")


def index_payload(models: list[dict], entries: list[dict], texts: dict, user=()) -> dict:
    payload = {
        "format": FORMAT_VERSION,
        "data_dir": DATA_DIR,
        "metrics": list(M.METRIC_NAMES),
        "scores": list(M.SCORE_NAMES),
        "label_names": M.LABELS,
        "models": models,
        "texts": texts,
        "entries": entries,
    }
    if user:  # only then: a store without user metrics keeps its bytes
        payload["user_metrics"] = list(user)
    return payload


# ---------------------------------------------------------------- page and assets


def render_page(assets) -> bytes:
    """index.html from the jinja2 template; autoescaped, and it carries no store data."""
    import jinja2

    source = assets.joinpath("index.html.j2").read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    html = env.from_string(source).render(
        data_dir=DATA_DIR,
        stylesheet=f"{APP_DIR}/viewer.css",
        scripts=[f"{APP_DIR}/{name}" for name in SCRIPTS],
        index_script=f"{DATA_DIR}/lens_index.js",
        format=FORMAT_VERSION,
    )
    return html.encode()


def write_page(save: Path, log: Callable[[str], None] = lambda _: None) -> int:
    assets = assets_dir()
    keep_pattern_lens_page(save, log)
    written = write_if_changed(save / INDEX_HTML, render_page(assets))
    make_dirs(save / APP_DIR)
    for name in ASSETS:
        written += write_if_changed(save / APP_DIR / name, assets.joinpath(name).read_bytes())
    for name in OLD_ASSETS:
        (save / name).unlink(missing_ok=True)
    return written


def keep_pattern_lens_page(save: Path, log: Callable[[str], None]) -> None:
    """pattern-lens's `write_html_index` (and its `activations_main`) write its page over our
    index.html. Its page loads the store's files by relative paths, so it works under another
    name: it is moved to pattern-lens.html before ours is written, and neither is lost."""
    try:
        page = (save / INDEX_HTML).read_bytes().lower()  # tens of kB
    except FileNotFoundError:
        return
    if b"pattern-lens" not in page or b"lens_index.js" in page:
        return
    os.replace(save / INDEX_HTML, save / PATTERN_LENS_PAGE)
    log(f"index.html was pattern-lens's page: kept as {PATTERN_LENS_PAGE}, ours written again")


def prune(data_root: Path, keep: set[Path]) -> int:
    """Remove viewer data of prompts (or models) no longer in the store; return how many.

    Only folders inside ``viewer_data`` that look like ours are touched.
    """
    removed = 0
    if not data_root.is_dir():
        return 0
    models = {out.parent for out in keep}
    for model_dir in _folders(data_root):
        for prompt_dir in _folders(model_dir):
            if prompt_dir not in keep and (prompt_dir / "stamp.json").is_file():
                shutil.rmtree(prompt_dir)
                removed += 1
        if model_dir not in models:  # a model that is gone: its top examples go too
            shutil.rmtree(model_dir / viewer_heads.TOP_DIR, ignore_errors=True)
            shutil.rmtree(model_dir / viewer_corpus.DIST_DIR, ignore_errors=True)
        if not any(model_dir.iterdir()):
            model_dir.rmdir()
    return removed


def _folders(root: Path) -> list[Path]:
    """The folders in `root`. A link found there is unlinked, never followed: the viewer's data
    is ours to rewrite, and a store from elsewhere cannot aim its writes outside the store."""
    for path in root.iterdir():
        if path.is_symlink():
            path.unlink()
    return [p for p in root.iterdir() if p.is_dir()]


def remove_build_orphans(app_dir: Path, data_root: Path) -> None:
    """Temp files an interrupted build left (their writer is dead; see `store.tmp_name`) in the
    page's folders and each model's: not a walk over every prompt's folder, which an unchanged
    rebuild must not pay. A prompt's own are removed when it is built again, which an
    interrupted prompt always is (its stamp.json is written last)."""
    models = _folders(data_root) if data_root.is_dir() else []
    # each model's top-example and distribution pages are rewritten whole by every build
    pages = [m / sub for m in models for sub in (viewer_heads.TOP_DIR, viewer_corpus.DIST_DIR)]
    for folder in (app_dir, data_root, *models, *pages):
        remove_orphaned_tmps(folder)


def dir_bytes(root: Path, pattern: str, recursive: bool = True) -> int:
    found = root.rglob(pattern) if recursive else root.glob(pattern)
    return sum(p.stat().st_size for p in found if p.is_file())


def pattern_bytes(stamp: dict) -> int:
    """The size of the pattern file a prompt's viewer data was built from (as its stamp
    recorded, and checked still true)."""
    return sum(
        stamp["source"][name][0] for name in (NPZ_NAME, STACKED_NAME) if stamp["source"].get(name)
    )


def data_bytes(out: Path, stamp: dict) -> int:
    """The size of a prompt's viewer files (those its stamp lists, and the stamp)."""
    return sum((out / name).stat().st_size for name in [*stamp["files"], "stamp.json"])


# ---------------------------------------------------------------- entry point


def write_viewer(
    save_path: Path,
    *,
    log: Callable[[str], None] = print_to_stderr,
    workers: int | None = None,
    force: bool = False,
) -> dict:
    """Build (or bring up to date) the static viewer of the store at `save_path`.

    Prompts whose viewer data is newer than their source files (same sizes and mtimes as
    recorded in ``stamp.json``) are skipped; data of prompts no longer in the store is removed.
    Every file is written to a temporary name and renamed into place.

    Args:
        save_path (`Path`): the store folder (the exporter's ``save_path``).
        log (`Callable[[str], None]`, *optional*, defaults to printing to stderr): progress.
        workers (`int`, *optional*): threads building prompts in parallel (zlib and numpy
            release the GIL); by default one process per core when there are many prompts
            to build, else ``min(4, os.cpu_count())`` threads.
        force (`bool`, *optional*, defaults to `False`): rebuild every prompt.

    Returns:
        `dict`: ``index_html`` (path), ``models``, ``prompts`` (model x prompt entries),
        ``built``, ``skipped``, ``pruned``, ``bytes_written`` (this run), ``viewer_bytes``
        (all viewer files now), ``npz_bytes`` (the pattern files they derive from:
        activations.npz, or the stacked .npy),
        ``seconds``.

    Raises:
        `StoreNotFoundError` (a `FileNotFoundError`): when `save_path` holds no store.
        `StoreCorruptError` (a `ValueError`): when a stored array does not match its
            prompt.json / model_cfg.json.
    """
    start = time.perf_counter()
    save = Path(save_path)
    if not (save / MODELS_INDEX).is_file() and not any(save.glob(f"*/{MODEL_CFG_NAME}")):
        raise StoreNotFoundError(f"{save}: no models.jsonl; is this a lens_cache save_path?")
    data_root = save / DATA_DIR
    for path in (save / INDEX_HTML, save / APP_DIR, data_root):
        refuse_links(path, save)  # a store from elsewhere cannot aim our writes outside it
    remove_build_orphans(save / APP_DIR, data_root)
    jobs, keep = plan_jobs(save, data_root)
    manifest = Manifest(data_root, MANIFEST_VERSION)
    stamps, built, written = run_jobs(save, jobs, log, workers, force, manifest)
    models, entries, texts, kept = [], [], {}, []
    for m_index, (cfg, prompts) in enumerate(jobs_by_model(jobs, stamps)):
        model_stamps = [stamps[(cfg["model_name"], p["hash"])] for p in prompts]
        models.append(model_entry(cfg, prompts, model_stamps))
        top_bytes, models[-1]["top"] = viewer_heads.write_top(
            save, data_root / models[-1]["slug"], cfg, prompts, model_stamps, emit_script
        )
        written += top_bytes
        written += model_dist(
            data_root / models[-1]["slug"], cfg, prompts, model_stamps, models[-1]
        )
        kept.append((cfg["model_name"], [p["hash"] for p in prompts], model_stamps))
        for prompt, stamp in zip(prompts, model_stamps, strict=True):
            entries.append(entry_of(m_index, prompt, stamp))
            texts[prompt["hash"]] = {
                "text": prompt.get("text", ""),
                "meta": prompt.get("meta") or {},
            }
    user = viewer_user.index_list(stamps.values())
    index = script_call("index", index_payload(models, entries, texts, user))
    written += write_if_changed(data_root / "lens_index.js", index)
    written += write_page(save, log)
    pruned = prune(data_root, keep)
    if pruned or not manifest.gave_all(stamps):
        written += write_manifest(data_root / MANIFEST_NAME, MANIFEST_VERSION, kept)
    report = {
        "index_html": save / INDEX_HTML,
        "models": len(models),
        "prompts": len(entries),
        "built": built,
        "skipped": len(entries) - built,
        "pruned": pruned,
        "bytes_written": written,
        # from the stamps, not a walk over every file: an unchanged rebuild stays cheap
        "viewer_bytes": sum(s["data_bytes"] for s in stamps.values())
        + dir_bytes(data_root, "*", recursive=False)
        + sum(dir_bytes(data_root / m["slug"] / viewer_corpus.DIST_DIR, "*") for m in models)
        + dir_bytes(save / APP_DIR, "*")
        + (save / INDEX_HTML).stat().st_size,
        "npz_bytes": sum(pattern_bytes(s) for s in stamps.values()),
        "seconds": round(time.perf_counter() - start, 3),
    }
    log(
        f"viewer: {report['prompts']} prompts ({built} built, {report['skipped']} up to date, "
        f"{pruned} removed) in {report['seconds']} s -> {report['index_html']}"
    )
    return report


def read_model(save: Path, name: str) -> dict:
    """One model's `model_cfg.json` in :func:`read_models`' form."""
    return {**Store(save).model_cfg(name), "model_name": name}


def plan_jobs(save: Path, data_root: Path):
    """``[(cfg, prompt, out_dir)]`` for every model x prompt, and the set of out_dirs."""
    jobs = []
    for cfg in read_models(save):
        out_model = data_root / model_slug(cfg["model_name"])
        for prompt in read_prompts(save, cfg["model_name"]):
            jobs.append((cfg, prompt, out_model / prompt["hash"]))
    return jobs, {out for _, _, out in jobs}


def jobs_by_model(jobs, stamps: dict):
    """`[(cfg, prompts)]` per model, of the prompts that were built (those with a stamp)."""
    grouped: dict[str, tuple[dict, list[dict]]] = {}
    for cfg, prompt, _ in jobs:
        if (cfg["model_name"], prompt["hash"]) not in stamps:
            continue
        grouped.setdefault(cfg["model_name"], (cfg, []))[1].append(prompt)
    return list(grouped.values())


def run_jobs(save: Path, jobs, log, workers: int | None, force: bool, manifest: Manifest):
    """Build what is stale, in threads; return ``({(model, hash): stamp}, built, bytes)``.
    Each stamp comes with its home-table `summary` (from the manifest, or computed)."""
    stamps, todo = {}, []
    for cfg, prompt, out in jobs:
        stamp = None if force else known_stamp(save, cfg, prompt, out, manifest)
        if stamp is None:
            todo.append((cfg, prompt, out))
        else:
            stamps[(cfg["model_name"], prompt["hash"])] = stamp
    written = 0
    with build_pool(len(todo), workers) as pool:
        # a callable that crosses into worker processes; what they log is a tensor left out
        skips = warn if isinstance(pool, ProcessPoolExecutor) else log
        futures = [pool.submit(build_prompt, save, cfg, p, out, skips) for cfg, p, out in todo]
        for k, ((cfg, prompt, _), fut) in enumerate(zip(todo, futures, strict=True)):
            stamp = _built_or_skipped(fut, save)
            if stamp is None:
                continue
            stamp["data_bytes"] = stamp.pop("bytes_written")
            written += stamp["data_bytes"]
            stamp["summary"] = prompt_summary(stamp)
            stamps[(cfg["model_name"], prompt["hash"])] = stamp
            if (k + 1) % 100 == 0:
                log(f"viewer: built {k + 1}/{len(todo)} prompts")
    return stamps, len(todo), written


PROCESSES_FROM = 200  # prompts to build from which worker processes pay for their start-up


def build_pool(n_todo: int, workers: int | None):
    """The executor that builds `n_todo` prompts: `workers` threads when given; else, for many
    prompts on several cores in a process with no other thread, one forked process per core
    (most of a prompt's work holds the GIL: threads used 1.2 of 2 cores); else up to 4
    threads. Not spawn: it would re-run a caller's script that lacks a `__main__` guard; not
    fork beside running threads (an export's writers), whose locks a child could inherit held.
    """
    cores = os.cpu_count() or 1
    forkable = "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1
    if workers is None and n_todo >= PROCESSES_FROM and cores > 1 and forkable:
        fork = multiprocessing.get_context("fork")
        return ProcessPoolExecutor(cores, mp_context=fork, initializer=numpy_only)
    return ThreadPoolExecutor(max_workers=max(1, workers or min(4, cores)))


def _built_or_skipped(future, save: Path) -> dict | None:
    """A prompt's stamp, or None (with a warning) where a damaged file (one that cannot be
    decoded, a link, or one that disagrees with prompt.json) kept it from being built: one bad
    file does not stop the viewer of all the others.
    """
    try:
        return future.result()
    except StoreCorruptError as e:
        warn(f"viewer: skipped a prompt: {e}")
        return None


def known_stamp(save: Path, cfg: dict, prompt: dict, out: Path, manifest: Manifest):
    """The up-to-date stamp of a prompt's viewer data, from the manifest (no per-prompt file
    read) or else from its `stamp.json` and `prompt.js`; None when it must be built."""
    try:
        source = source_sig(source_dir(save, cfg, prompt))
    except StoreLinkError:
        return None  # built, where the link is refused and the prompt skipped by name
    stamp = manifest.fresh(cfg["model_name"], prompt["hash"], source, out)
    if stamp is not None and not same_user_metrics(stamp):
        return None
    if stamp is None:
        stamp = fresh_stamp(save, cfg, prompt, out)
        if stamp is not None:
            stamp["summary"] = prompt_summary(stamp)
            stamp["data_bytes"] = data_bytes(out, stamp)
    return stamp


def model_entry(cfg: dict, prompts: list[dict], stamps: list[dict]) -> dict:
    name = cfg["model_name"]
    layers = sorted({i for s in stamps for i in s["layers"]})
    entry = {
        "name": name,
        "slug": model_slug(name),
        "n_layers": int(cfg["n_layers"]),
        "n_heads": int(cfg["n_heads"]),
        "d_model": cfg.get("d_model"),
        "n_ctx": cfg.get("n_ctx"),
        "n_prompts": len(prompts),
        "layers": layers,
    }
    entry.update(model_summary(cfg, stamps))
    return entry


def entry_of(m_index: int, prompt: dict, stamp: dict) -> dict:
    return {
        "m": m_index,
        "h": prompt["hash"],
        "n": stamp["n_tokens"],
        "nl": len(stamp["layers"]),
        "r": int(stamp["resid"]),
        "ml": stamp.get("mean_loss"),
        "lens": int(stamp.get("lens", False)),
        "hc": int(bool(stamp.get("heads"))),
        "s": prompt_summary(stamp),
    }


def refresh_store(
    save_path: Path, *, html: bool = True, quiet: bool = False, held: bool = False
) -> dict:
    """Rewrite the store's indexes (models.jsonl, each prompts.jsonl) and, unless `html=False`,
    its viewer, with the viewer's disk cost reported: what every command that changes a store
    runs last. Takes the store's lock once for both, unless the caller holds it (`held=True`).

    Returns:
        `{"models": n_models, "prompts": n_prompts, "viewer": write_viewer's report or None}`.
    """
    task = "writing the indexes and the viewer"
    with store_lock_unless(held, save_path, task):  # lens_cache.locking
        report = {**write_indexes(save_path, held=True), "viewer": None}
        if html and report["models"]:
            report["viewer"] = write_viewer(
                save_path, log=lambda message: progress_log(message, quiet=quiet)
            )
    if report["viewer"]:
        mb = 2**20
        progress_log(
            f"viewer data: {report['viewer']['viewer_bytes'] / mb:.1f} MB beside "
            f"{report['viewer']['npz_bytes'] / mb:.1f} MB of pattern files",
            quiet=quiet,
        )
    return report
