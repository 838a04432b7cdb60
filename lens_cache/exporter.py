"""Orchestration: prompts -> batches -> capture -> store -> indexes, for each model."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from lens_cache import distributed, store
from lens_cache.adapter import LensModel, tl_major
from lens_cache.batcher import plan_batches
from lens_cache.capture import Capture, capture_batch, capture_in_layer_groups
from lens_cache.errors import (
    BatchingError,
    InvalidOptionError,
    LayerSelectionError,
    PromptsError,
    PromptTooLongError,
    SettingsMismatchError,
    TopKError,
)
from lens_cache.faults import fault_point
from lens_cache.hooks import hooks_width, pool_sites, resolve_hooks, split_hook_requests
from lens_cache.layout import (
    DEFAULT_DTYPE,
    DEFAULT_TOP_K,
    DEFAULT_TOPK_KEYS,
    DTYPES,
    HEAD_CONTRIBUTIONS,
    HEAD_METRICS,
    HOOK_KINDS,
    MODEL_CFG_NAME,
    PATTERN,
    PATTERN_DTYPES,
    PATTERN_TOPK,
    POOLS,
    PREDICTION_KINDS,
    RESID_KINDS,
    VOCAB_NAME,
    check_layer_syntax,
    default_save_path,
    prompts_folder,
    resolve_layers,
)
from lens_cache.locking import store_lock
from lens_cache.models import DEFAULT_MODEL, load_model
from lens_cache.pooled import DEFAULT_SHARD_MAX_BYTES, write_pooled
from lens_cache.predictions import mean_loss, readout_layers
from lens_cache.progress import Progress, log, warn
from lens_cache.prompts import DEFAULT_PROMPTS, make_prompt, read_prompts, select_prompts
from lens_cache.records import stored_record
from lens_cache.upgrade import upgrade_model
from lens_cache.viewer import PromptDataProducer, refresh_store
from lens_cache.writer import WriterPool

DEFAULT_HOOKS = (PATTERN, "resid_post")


@dataclass
class ModelReport:
    """What one model's export did."""

    model: str
    path: Path
    exported: int = 0
    cached: int = 0
    skipped_long: list[str] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0
    pooled: list[Path] = field(default_factory=list)
    extra_hooks: tuple[str, ...] = ()  # the per-token hooks `hooks` resolved to for this model


def export(
    models=(DEFAULT_MODEL,),
    prompts=DEFAULT_PROMPTS,
    save_path=None,
    *,
    hooks=DEFAULT_HOOKS,
    layers="all",
    resid_dtype: str = DEFAULT_DTYPE,
    pattern_dtype: str = DEFAULT_DTYPE,
    stacked_heads: bool = False,
    top_k: int = DEFAULT_TOP_K,
    lens_layers=None,
    topk_keys: int = DEFAULT_TOPK_KEYS,
    batch_size: int = 8,
    token_budget: int | None = None,
    max_batch_mb: float = 1024,
    force: bool = False,
    on_long: str = "skip",
    device: str | None = None,
    model_dtype: str = DEFAULT_DTYPE,
    writers: int = 2,
    compress_level: int = 1,
    index_html: bool = True,
    pool=None,
    shard_max_bytes: int | None = None,
    quiet: bool = False,
    **prompt_options,
) -> list[ModelReport]:
    """Export attention patterns and residuals of each model over the prompts.

    Args:
        models: model specs (see `load_model`) or loaded TransformerLens models; a single one
            may be passed bare.
        prompts: a `.jsonl` / `.txt` path, `"default"` (the embedded set), or an iterable of
            strings or `{"text": ..., "meta": {...}}` dicts (such as `iter_dataset(...)`: with
            `n_samples` and no `shuffle` it is read only as far as needed).
        save_path: the store's root directory; defaults to `$LENS_CACHE_DIR`, else
            `lens_cache_data`.
        hooks: any of `pattern`, `resid_pre`, `resid_mid`, `resid_post`, and the predictions
            `logits` (the model's next-token prediction) and `logit_lens` (the same read out of
            each selected layer's `resid_post`; see `lens_cache.predictions`), and any per-token
            TransformerLens hook by name, glob or block site
            (`blocks.*.hook_mlp_out`, `blocks.{3,5}.attn.hook_z`, `mlp.hook_post` at each of
            `layers`; see `lens_cache.hooks`), stored in `hooks.safetensors`.
        layers: `"all"`, `"first"`, `"middle"`, `"last"`, a list of ints, or a string such as
            `"0,3,5"` or `"2-5"`.
        resid_dtype: dtype of stored residuals (`float32`, `float16`, `bfloat16`).
        pattern_dtype: dtype of stored patterns: `float32` (default, exact) or `float16`
            (half the bytes, absolute error up to 2.4e-4: lossy, opt-in).
        stacked_heads: store patterns as one `[1, L, H, T, T]` `.npy` instead of the npz.
        top_k: most likely tokens stored per position by `logits` and `logit_lens`.
        lens_layers: of `layers`, those `logit_lens` reads out (the same forms as `layers`);
            `None`: every one. Each read-out layer projects every position onto the vocabulary,
            which costs more than the forward pass on a large vocabulary.
        topk_keys: keys kept per query row by `pattern_topk` (the compact pattern for long
            prompts: each row's strongest keys, its remaining mass and a block-pooled
            overview; see `lens_cache.topk`).
        batch_size: most prompts per forward pass.
        token_budget: most padded tokens (`n_prompts * longest`) per forward pass.
        max_batch_mb: most megabytes of cached activations per forward pass.
        force: recompute prompts already in the store.
        on_long: `"skip"` (warn) or `"fail"` for prompts longer than the model's context.
        writers: writer threads behind the forward pass (0 writes in the main thread).
        compress_level: deflate level of the npz (0 stores it uncompressed).
        pool: one or more of `lens_cache.pooled.POOLS`: after the export, pool each stored
            residual hook of every prompt of the model into a sharded parquet dataset.
        shard_max_bytes: most bytes per pooled parquet shard.
        **prompt_options: `min_chars`, `max_chars`, `raw`, `n_samples`, `shuffle`, `seed`.

    Returns:
        One `ModelReport` per model.

    Raises:
        LensCacheError: a subclass naming what is wrong with the input.
    """
    if on_long not in ("skip", "fail"):
        raise InvalidOptionError(f"on_long must be 'skip' or 'fail', got {on_long!r}")
    _check_limits(batch_size=batch_size, token_budget=token_budget, max_batch_mb=max_batch_mb)
    if writers < 0 or not 0 <= compress_level <= 9:
        raise InvalidOptionError(
            f"writers must be >= 0 and compress-level 0-9, got {writers} and {compress_level}"
        )
    hooks, requests = split_hook_requests(hooks, kinds=HOOK_KINDS + PREDICTION_KINDS)
    hooks, predictions = _check_hooks(hooks)
    pools = _check_pools(pool, hooks, requests)
    if predictions and top_k < 1:
        raise TopKError(f"--top-k must be at least 1, got {top_k}")
    if PATTERN_TOPK in hooks and topk_keys < 1:
        raise TopKError(f"--topk-keys must be at least 1, got {topk_keys}")
    _check_choice("resid_dtype", resid_dtype, DTYPES)
    _check_choice("pattern_dtype", pattern_dtype, PATTERN_DTYPES)
    check_layer_syntax(layers)
    if lens_layers is not None:
        _check_lens_layers(lens_layers, predictions)
    prompt_list = select_prompts(_as_prompts(prompts), **prompt_options)
    save_path = Path(save_path or default_save_path())
    new_store = not save_path.exists()
    store.ensure_writable(save_path)
    if isinstance(models, (str, Path)) or not isinstance(models, (list, tuple)):
        models = [models]
    plan = _Plan(batch_size, token_budget, max_batch_mb, writers, on_long, force, quiet, index_html)
    rank = distributed.join(device)
    try:
        reports = []
        for spec in models:
            model = load_model(spec, device=distributed.device_for(rank, device), dtype=model_dtype)
            if predictions:
                _check_readout(model, top_k)
            chosen_layers = resolve_layers(layers, model.n_layers)
            settings = store.ExportSettings(
                hooks=hooks,
                layers=chosen_layers,
                extra_hooks=resolve_hooks(model, requests, chosen_layers) if requests else (),
                resid_dtype=resid_dtype,
                pattern_dtype=pattern_dtype,
                stacked_heads=stacked_heads,
                model_dtype=model.dtype_name,  # of the model as loaded, or as the caller passed it
                predictions=predictions,
                top_k=top_k,
                lens_layers=_lens_layers(lens_layers, chosen_layers, model.n_layers),
                topk_keys=topk_keys,
                compress_level=compress_level,
                chunk_mb=max_batch_mb,
            )
            reports.append(_export_model(model, prompt_list, save_path, settings, plan, rank))
        rank.barrier()  # every rank's prompts are on disk before the indexes are rebuilt
        if rank.is_main:  # refresh_store holds the lock: another export may finish now too
            with store_lock(save_path, "writing the indexes and the viewer"):
                refresh_store(save_path, html=index_html, quiet=quiet, held=True)
                for report in reports:
                    sites = pool_sites(hooks, report.extra_hooks)
                    report.pooled = _pool(
                        save_path, report.model, sites, pools, shard_max_bytes, quiet
                    )
    except BaseException as e:
        rank.report_failure(e)  # the other ranks stop naming this one (see Rank.barrier)
        if new_store and rank.is_main:
            _remove_if_empty(save_path)  # a failed first run leaves no empty store behind
        raise
    finally:
        rank.close()
    return reports


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not empty: keep what was written
        folder.rmdir()


@dataclass
class _Plan:
    batch_size: int
    token_budget: int | None
    max_batch_mb: float
    writers: int
    on_long: str
    force: bool
    quiet: bool
    viewer: bool  # make each prompt's viewer data in the writers (the page is built at the end)


def _check_limits(**values) -> None:
    for name, value in values.items():
        if value is not None and value <= 0:
            raise BatchingError(f"{name.replace('_', '-')} must be positive, got {value}")


def _check_pools(pool, hooks, requests=()) -> tuple[str, ...]:
    pools = () if pool is None else (pool,) if isinstance(pool, str) else tuple(pool)
    unknown = [p for p in pools if p not in POOLS]
    if unknown:
        raise InvalidOptionError(f"unknown pool {unknown}; choose from {', '.join(POOLS)}")
    if pools and not any(h in RESID_KINDS for h in hooks) and not requests:
        raise InvalidOptionError("--pool needs a residual hook in --hooks (e.g. resid_post)")
    return pools


def _pool(save_path, model_name, sites, pools, shard_max_bytes, quiet) -> list[Path]:
    """Pooled parquet datasets over every prompt stored for the model, not only this run's."""
    limit = shard_max_bytes or DEFAULT_SHARD_MAX_BYTES
    return [
        write_pooled(
            save_path, model_name, site, pool, shard_max_bytes=limit, quiet=quiet, held=True
        )
        for site in sites
        for pool in pools
    ]


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise InvalidOptionError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def _check_lens_layers(lens_layers, predictions) -> None:
    if "logit_lens" not in predictions:
        raise LayerSelectionError("--lens-layers needs logit_lens among --hooks")
    check_layer_syntax(lens_layers)


def _lens_layers(spec, layers: tuple[int, ...], n_layers: int) -> tuple[int, ...] | None:
    """The layers `logit_lens` reads out, which must be stored layers (its file sits beside
    theirs, and a reader takes a stored layer's readout to mean that layer's resid_post)."""
    if spec is None:
        return None
    chosen = resolve_layers(spec, n_layers)
    if not set(chosen) <= set(layers):
        raise LayerSelectionError(
            f"--lens-layers {_ranges(list(chosen))} holds layers not among --layers "
            f"{_ranges(list(layers))}"
        )
    return chosen


def _check_hooks(hooks) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The stored hook kinds and the prediction kinds asked for (`split_hook_requests` has
    refused the words that are neither a kind nor a hook point)."""
    return (
        tuple(h for h in hooks if h in HOOK_KINDS),
        tuple(h for h in hooks if h in PREDICTION_KINDS),
    )


def _check_readout(model: LensModel, top_k: int) -> None:
    """Before anything is written: the model has a final norm and unembedding, and `top_k`
    fits its vocabulary."""
    model.check_unembedding()
    if top_k > model.d_vocab:
        raise TopKError(f"--top-k {top_k} is more than {model.name}'s {model.d_vocab} tokens")


def _as_prompts(prompts) -> Iterator[dict]:
    """Prompt dicts from a path or an iterable of texts / dicts, lazily (see select_prompts)."""
    if isinstance(prompts, (str, Path)):
        yield from read_prompts(prompts)
        return
    for i, p in enumerate(prompts):
        text, meta = (p, {}) if isinstance(p, str) else (p.get("text"), p.get("meta", {}))
        if not isinstance(text, str) or not text.strip():
            raise PromptsError(f"prompt {i}: empty or missing text")
        yield make_prompt(text, meta)


def _export_model(model: LensModel, prompts, save_path: Path, settings, plan: _Plan, rank):
    start = time.perf_counter()
    mdir = store.model_dir(save_path, model.name)
    report = ModelReport(model=model.name, path=mdir, extra_hooks=settings.extra_hooks)
    fitting = []
    for prompt in prompts:
        ids = model.tokenize(prompt["text"])
        if len(ids) <= model.n_ctx:
            fitting.append((prompt, ids))
            continue
        report.skipped_long.append(prompt["hash"])
        if rank.is_main:  # one warning, not one per rank
            _too_long(prompt, len(ids), model, plan.on_long)
    todo, cached = [], []
    for i in distributed.share([len(ids) for _, ids in fitting], rank):
        prompt, ids = fitting[i]
        directory = store.prompt_dir(save_path, model.name, prompt["hash"])
        if not plan.force and store.prompt_is_complete(directory, settings):
            cached.append(directory)
        else:
            todo.append((prompt, ids))
    report.cached = len(cached)
    with store_lock(save_path, f"claiming {model.name}'s folder"):
        _claim_model_dir(mdir, model, settings, plan.force, write=rank.is_main)
    # prompts kept from an older version get pattern-lens's fields now that the tokenizer is here
    upgrade_model(mdir, model.tokenizer_tokens, cached)
    rank.barrier()  # model_cfg.json (and any --force clean-up) before any prompt is written
    label = model.name if rank.world == 1 else f"{model.name} rank {rank.rank}/{rank.world}"
    log(f"[{label}] {len(todo)} to export, {report.cached} already in the store", quiet=plan.quiet)
    _run_batches(model, todo, save_path, settings, plan, report, label)
    report.seconds = time.perf_counter() - start
    return report


def _run_batches(model, todo, save_path, settings, plan: _Plan, report: ModelReport, label):
    lengths = [len(ids) for _, ids in todo]
    batches = plan_batches(
        lengths,
        batch_size=plan.batch_size,
        token_budget=plan.token_budget,
        max_batch_bytes=int(plan.max_batch_mb * 2**20),
        bytes_per_prompt=lambda t: _cache_bytes(model, settings, t),
    )
    progress = Progress(label, len(todo), sum(lengths), quiet=plan.quiet)
    viewer_data = None
    if plan.viewer:
        viewer_data = PromptDataProducer(save_path, model.name, quiet=plan.quiet)

    def write(capture: Capture) -> None:
        directory = store.prompt_dir(save_path, model.name, capture.prompt["hash"])
        if not plan.force and store.prompt_is_complete(directory, settings):
            return  # another export into this store finished it meanwhile: the same bytes
        record = _prompt_record(model, capture, settings)
        store.write_prompt_dir(directory, record, capture, settings, model.name)
        if viewer_data:  # from the tensors in hand, not re-read from disk at the end
            viewer_data(record, capture, directory)

    # Bytes waiting for writers are capped at one batch's worth: memory stays ~2 batches.
    pool = WriterPool(write, workers=plan.writers, max_bytes=int(plan.max_batch_mb * 2**20))
    try:
        for batch in batches:
            for capture in _captures(model, [todo[i] for i in batch], settings, plan, write):
                if not capture.written:
                    pool.submit(capture, capture.nbytes)
                progress.update(1, len(capture.ids))
                report.exported += 1
                report.tokens += len(capture.ids)
    finally:
        pool.close()
    progress.close()


def _captures(model, items, settings, plan: _Plan, write):
    """The batch's captures, or for a single prompt whose cache alone is over the byte cap,
    one written here layer group by layer group (see `capture_in_layer_groups`)."""
    fault_point("forward")
    cap = int(plan.max_batch_mb * 2**20)
    n_tokens = len(items[0][1])
    if len(items) > 1 or not settings.captures_patterns or len(settings.layers) == 1:
        return capture_batch(model, items, settings)
    if _cache_bytes(model, settings, n_tokens) <= cap:
        return capture_batch(model, items, settings)
    one_layer = replace(settings, layers=settings.layers[:1])
    per_pass = max(1, cap // _cache_bytes(model, one_layer, n_tokens))
    capture = capture_in_layer_groups(model, items[0], settings, per_pass)
    # Marked before the write: its patterns are a generator the write consumes, so the viewer
    # data made in that write must read them back from disk, not from the capture.
    capture.written = True
    write(capture)  # in this thread, which owns the model: writing runs the forward passes
    return [capture]


def _cache_bytes(model: LensModel, settings, t: int) -> int:
    """Bytes one prompt of `t` tokens occupies in the forward's cache (float32)."""
    n_layers = len(settings.layers)
    per_layer = 0
    for kind in settings.hooks:
        if kind in (HEAD_METRICS, PATTERN_TOPK):
            continue  # the dense pattern they read is counted once, below
        per_layer += model.n_heads * t * t if kind == PATTERN else t * model.d_model
        per_layer += t * model.d_model if kind == HEAD_CONTRIBUTIONS else 0  # v and z
    if settings.captures_patterns and PATTERN not in settings.hooks:
        per_layer += model.n_heads * t * t
    # compacted as it fires: no layer's pattern is cached, the forward holds the one it computes
    once = model.n_heads * t * t if settings.compacts_as_it_fires else 0
    read = readout_layers(settings.predictions, settings.lens_read_layers, model.n_layers)
    extra = hooks_width(model, settings.extra_hooks)
    return 4 * (n_layers * per_layer + once + len(read) * t * model.d_model + t * extra)


def _prompt_record(model: LensModel, capture: Capture, settings) -> dict:
    """The prompt.json of a capture (`lens_cache.records`): pattern-lens's fields, ours under
    `lens_cache`."""
    prompt = capture.prompt
    record = {
        "text": prompt["text"],
        "hash": prompt["hash"],
        "n_tokens": len(capture.ids),
        "tokens": model.str_tokens(capture.ids),
        "token_ids": capture.ids,
        "meta": prompt["meta"],
        "lens_cache": {
            "settings": settings.fingerprint(),
            "model": model.name,
            "layers": list(settings.layers),
            "hooks": list(settings.hooks),
            **({"extra_hooks": list(settings.extra_hooks)} if settings.extra_hooks else {}),
            "resid_dtype": settings.resid_dtype,
            "pattern_dtype": settings.pattern_dtype,
            "model_dtype": settings.model_dtype,
        },
    }
    if settings.predictions:
        record["lens_cache"].update(predictions=list(settings.predictions), top_k=settings.top_k)
    if capture.predictions:
        record["mean_loss"] = mean_loss(capture.predictions["loss"])
    return stored_record(record, model.tokenizer_tokens(prompt["text"]))


def _too_long(prompt: dict, n: int, model: LensModel, on_long: str) -> None:
    label = prompt["meta"].get("id") or repr(prompt["text"][:40])
    message = (
        f"prompt {prompt['hash']} ({label}) has {n} tokens, more than {model.name}'s context of "
        f"{model.n_ctx}"
    )
    if on_long == "fail":
        raise PromptTooLongError(message + "; shorten it, use --max-chars, or --on-long skip")
    warn(message + "; skipped")


def _claim_model_dir(mdir: Path, model: LensModel, settings, force: bool, write: bool) -> None:
    """Write model_cfg.json (if `write`), refusing to mix settings in one model directory."""
    cfg_path = mdir / MODEL_CFG_NAME
    if cfg_path.is_file():
        old = store.read_json(cfg_path).get("lens_cache", {})
        if old.get("settings") not in (None, settings.fingerprint()):
            if not force:
                raise SettingsMismatchError(
                    f"{mdir} holds {model.name} exported with other settings: "
                    f"{_settings_diff(old, settings.describe())}. Use --force to re-export "
                    "(prompts stored with the old settings are removed) or another -s/--save-path"
                )
            if write:
                _drop_other_settings(mdir, settings)
    if not write:
        return
    store.make_dirs(mdir)
    cfg = model.config_dict()
    cfg["lens_cache"] = {
        **settings.describe(),
        "settings": settings.fingerprint(),
        "source": model.source,
        "processing": model.processing or {},
        "transformer_lens_major": tl_major(),
    }
    store.write_json(cfg_path, cfg)
    if settings.predictions:  # top-k ids are only readable with the model's token strings
        store.write_json(mdir / VOCAB_NAME, model.str_tokens(list(range(model.d_vocab))))


def _settings_diff(stored: dict, asked: dict) -> str:
    """The settings that differ, `hooks: stored pattern resid_post, asked pattern; ...`."""
    stored, asked = _settings_words(stored), _settings_words(asked)
    return "; ".join(
        f"{key}: stored {stored[key]}, asked {asked[key]}"
        for key in stored
        if stored[key] != asked[key]
    )


def _settings_words(d: dict) -> dict[str, str]:
    """What a fingerprint stands for, each setting as words (a missing dtype is float32)."""
    d = {"pattern_dtype": DEFAULT_DTYPE, "model_dtype": DEFAULT_DTYPE, **d}
    hooks = [*d.get("hooks", []), *d.get("extra_hooks", []), *d.get("predictions", [])]
    words = {"hooks": " ".join(hooks), "layers": _ranges(d.get("layers", []))}
    if d.get("predictions"):
        words["top_k"] = str(d.get("top_k"))
    if "logit_lens" in d.get("predictions", []):
        words["lens_layers"] = _ranges(d.get("lens_layers") or d.get("layers", []))
    if PATTERN_TOPK in d.get("hooks", []):
        words["topk_keys"] = str(d.get("topk_keys", DEFAULT_TOPK_KEYS))
    keys = ("resid_dtype", "pattern_dtype", "model_dtype", "stacked_heads")
    return words | {k: str(d.get(k)) for k in keys}


def _ranges(layers: list[int]) -> str:
    if layers and layers == list(range(layers[0], layers[-1] + 1)) and len(layers) > 2:
        return f"{layers[0]}-{layers[-1]}"
    return ",".join(map(str, layers))


def _drop_other_settings(mdir: Path, settings) -> None:
    prompts_path = prompts_folder(mdir)
    if not prompts_path.is_dir():
        return
    removed = 0
    for directory in prompts_path.iterdir():
        if not store.prompt_is_complete(directory, settings):
            store.remove_prompt_dir(directory)
            removed += 1
    warn(f"--force: removed {removed} prompts of {mdir.name} stored with other settings")
