"""Run one batch and trim each prompt's tensors back to its own length.

Why right padding without a mask is exact: in a causal model, position t attends only to
positions <= t. Pads sit after every real token, so no real position ever attends to one, and
the rows and columns we keep are the ones a single-prompt run would produce (to float
rounding: a batched matmul may sum in another order, ~1e-7 in float32). What we drop is
exactly what pads touched: rows and columns >= the prompt's length.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from lens_cache import heads, topk
from lens_cache.adapter import LensModel
from lens_cache.errors import HookNotFiredError, OutOfMemoryError
from lens_cache.layout import (
    HEAD_CONTRIBUTIONS,
    PATTERN,
    PATTERN_TOPK,
    RESID_KINDS,
    hook_depth,
    hook_name,
    lens_member,
    parse_hook_name,
)
from lens_cache.predictions import next_tokens, readout, readout_layers
from lens_cache.store import ExportSettings


@dataclass
class Capture:
    """One prompt's exported tensors, already trimmed to its `n_tokens`."""

    prompt: dict
    ids: list[int]
    # name -> [1, H, T, T]; for a prompt captured in layer groups, an iterator of (name, array)
    patterns: dict[str, np.ndarray] = field(default_factory=dict)
    residuals: dict[str, torch.Tensor] = field(default_factory=dict)  # [T, d_model]
    predictions: dict[str, torch.Tensor] = field(default_factory=dict)  # field -> [T] or [T, k]
    logit_lens: dict[str, torch.Tensor] = field(default_factory=dict)  # member -> [T] or [T, k]
    hooks: dict[str, torch.Tensor] = field(default_factory=dict)  # any other hook: [T, ...]
    contributions: dict[str, torch.Tensor] = field(default_factory=dict)  # [H, T] (heads.py)
    topk: dict[str, torch.Tensor] = field(default_factory=dict)  # the compact pattern (topk.py)
    head_metrics: dict[str, torch.Tensor] = field(default_factory=dict)  # as a Hub pull brings
    written: bool = False  # already on disk (captured and written layer group by layer group)

    @property
    def nbytes(self) -> int:
        pattern_bytes = sum(a.nbytes for a in self.patterns.values())
        tensors = [
            *self.residuals.values(),
            *self.predictions.values(),
            *self.logit_lens.values(),
            *self.contributions.values(),
            *self.topk.values(),
            *self.hooks.values(),
        ]
        return pattern_bytes + sum(t.numel() * t.element_size() for t in tensors)


def capture_batch(
    model: LensModel, items: list[tuple[dict, list[int]]], settings: ExportSettings
) -> list[Capture]:
    """Capture a batch of `(prompt, token_ids)`; on out-of-memory, halve the batch and go on.

    Raises:
        OutOfMemoryError: a single prompt does not fit.
        HookNotFiredError: a hook did not fire or had an unexpected shape.
    """
    try:
        return _run(model, items, settings)
    except (torch.OutOfMemoryError, RuntimeError) as e:
        if not _is_oom(e):
            raise
        if len(items) == 1:
            raise OutOfMemoryError(
                f"prompt {items[0][0]['hash']} ({len(items[0][1])} tokens) does not fit in "
                "memory even alone; export fewer --layers or --hooks, or skip long prompts"
            ) from e
        _free_cuda()
        half = len(items) // 2
        return capture_batch(model, items[:half], settings) + capture_batch(
            model, items[half:], settings
        )


def capture_in_layer_groups(
    model: LensModel, item: tuple[dict, list[int]], settings: ExportSettings, layers_per_pass: int
) -> Capture:
    """One prompt too large to cache whole: a forward pass per group of layers, each stopping
    after its group's last layer, yielding patterns as the store writes them.

    Memory then holds one group's cache and one layer being written, not every layer at once.
    The patterns come out as a generator that runs the passes: consume it in the thread that
    owns the model. Residuals, other hooks and predictions (small) fill the capture as the
    groups run; the model's own prediction and the other hooks (`extra_hooks`, whatever their
    layer) are read in the last group, which runs to the last layer.
    """
    prompt, ids = item
    capture = Capture(prompt=prompt, ids=ids)
    layers = settings.layers
    groups = [layers[i : i + layers_per_pass] for i in range(0, len(layers), layers_per_pass)]

    def patterns():
        for i, group in enumerate(groups):
            last = i == len(groups) - 1
            kinds = tuple(k for k in settings.predictions if k == "logit_lens" or last)
            extra = settings.extra_hooks if last else ()
            lens = tuple(layer for layer in settings.lens_read_layers if layer in group)
            part_settings = replace(
                settings, layers=group, lens_layers=lens, predictions=kinds, extra_hooks=extra
            )
            (part,) = capture_batch(model, [item], part_settings)
            capture.residuals.update(part.residuals)
            capture.hooks.update(part.hooks)
            capture.predictions.update(part.predictions)
            capture.logit_lens.update(part.logit_lens)
            capture.contributions.update(part.contributions)
            capture.topk.update(part.topk)
            yield from part.patterns.items()
            del part  # free this group before the next pass

    capture.patterns = patterns()
    return capture


def _is_oom(e: BaseException) -> bool:
    text = str(e).lower()
    return (
        isinstance(e, torch.OutOfMemoryError)
        or "out of memory" in text
        or ("can't allocate memory" in text)
    )


def _free_cuda() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def right_pad(model: LensModel, id_lists: list[list[int]]) -> torch.Tensor:
    """A `[batch, longest]` tensor of the ids, right-padded (see the module docstring)."""
    longest = max(len(ids) for ids in id_lists)
    tokens = torch.full((len(id_lists), longest), model.pad_id, dtype=torch.long)
    for row, ids in enumerate(id_lists):
        tokens[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return tokens.to(model.device)


def _run(model: LensModel, items, settings: ExportSettings) -> list[Capture]:
    names = settings.hook_names() + list(settings.extra_hooks)
    read_layers = readout_layers(settings.predictions, settings.lens_read_layers, model.n_layers)
    read_names = [hook_name("resid_post", layer) for layer in read_layers]
    tokens = right_pad(model, [ids for _, ids in items])
    contributing = HEAD_CONTRIBUTIONS in settings.hooks
    extra = heads.cache_names(settings.layers, model.n_layers) if contributing else []
    last_layer = _last_layer(settings, read_layers)
    if contributing and last_layer is not None:
        last_layer = model.n_layers - 1  # head contributions need the final residual
    captures = [Capture(prompt=prompt, ids=ids) for prompt, ids in items]
    fired: set[int] = set()
    compacting = _topk_hooks(model, captures, settings, tokens.shape, fired)
    cache = model.run(
        tokens, list(dict.fromkeys(names + read_names + extra)), last_layer, compacting
    )
    checked = {name: cache[name] for name in names + read_names}
    _check_shapes(model, checked, tokens.shape, settings.extra_hooks)
    _check_fired(compacting, fired, settings.layers)
    _read_predictions(model, cache, captures, settings, read_layers)
    if contributing:
        _read_contributions(model, cache, tokens, captures, settings.layers)
    if PATTERN_TOPK in settings.hooks and not compacting:
        _read_topk(cache, captures, settings)
    # dense patterns cross to the host only when stored or measured: the compact kind alone
    # leaves them on the device
    kept = [n for n in names if settings.captures_patterns or not _is_pattern(n)]
    host = to_host({name: cache[name] for name in kept})
    for row, capture in enumerate(captures):
        n = len(capture.ids)
        for kind in (PATTERN, *RESID_KINDS):
            if kind not in settings.hooks and not (kind == PATTERN and settings.captures_patterns):
                continue
            for layer in settings.layers:
                name = hook_name(kind, layer)
                if kind == PATTERN:
                    value = host[name][row : row + 1, :, :n, :n]
                    capture.patterns[name] = value.to(settings.torch_pattern_dtype).numpy().copy()
                else:
                    value = host[name][row, :n].to(settings.torch_resid_dtype)
                    capture.residuals[name] = value.clone()
        for name in settings.extra_hooks:  # trimmed like the residuals: [T, ...]
            capture.hooks[name] = _stored(host[name][row, :n], settings.torch_resid_dtype)
    return captures


def _is_pattern(name: str) -> bool:
    parsed = parse_hook_name(name)
    return parsed is not None and parsed[0] == PATTERN


def _read_topk(cache: dict, captures, settings: ExportSettings) -> None:
    """Fill each capture's compact pattern from the patterns still on the model's device."""
    for layer in settings.layers:
        _compact_rows(cache[hook_name(PATTERN, layer)], layer, captures, settings)


def _compact_rows(pattern: torch.Tensor, layer: int, captures, settings: ExportSettings) -> None:
    """Each capture's compact pattern of `layer` from the batch's `[batch, H, pos, pos]`."""
    for row, capture in enumerate(captures):
        n = len(capture.ids)
        part = pattern[row, :, :n, :n]
        k, dtype = settings.topk_keys, settings.torch_pattern_dtype
        capture.topk.update(topk.compact_layer(part, layer, k, dtype))


def _topk_hooks(model: LensModel, captures, settings: ExportSettings, shape, fired) -> list:
    """When only the compact pattern needs it, a hook per layer that compacts the dense
    pattern as it fires: the cache never holds it, so the forward keeps one layer's pattern
    at a time and runs once (cached, every layer's would be in memory together)."""
    if not settings.compacts_as_it_fires:
        return []
    batch, pos = shape
    expected = (batch, model.n_heads, pos, pos)

    def compact(layer: int):
        def hook(pattern: torch.Tensor, hook=None) -> None:
            if tuple(pattern.shape) != expected:
                raise HookNotFiredError(
                    f"hook {hook_name(PATTERN, layer)} fired with shape "
                    f"{tuple(pattern.shape)}, expected {expected}"
                )
            _compact_rows(pattern, layer, captures, settings)
            fired.add(layer)

        return hook

    return [(hook_name(PATTERN, layer), compact(layer)) for layer in settings.layers]


def _check_fired(compacting: list, fired: set[int], layers) -> None:
    missing = [layer for layer in layers if compacting and layer not in fired]
    if missing:
        raise HookNotFiredError(
            f"hook {hook_name(PATTERN, missing[0])} did not fire; this architecture cannot "
            "export pattern_topk"
        )


def _read_contributions(model: LensModel, cache: dict, tokens, captures, layers) -> None:
    """Fill each capture's value norms and direct logit attributions (lens_cache.heads),
    computed on the padded batch and trimmed per prompt."""
    per_head = heads.contributions(model, cache, tokens, layers)
    for row, capture in enumerate(captures):
        capture.contributions = heads.trim(per_head, row, len(capture.ids))


def _read_predictions(model: LensModel, cache: dict, captures, settings, layers) -> None:
    """Fill each capture's predictions and logit lens, reading out every prompt's real
    positions together (pads never enter) one layer at a time, on the model's device."""
    lengths = [len(c.ids) for c in captures]
    targets = torch.cat([next_tokens(c.ids, model.device) for c in captures])
    chunk_bytes = int(settings.chunk_mb * 2**20)
    for layer in layers:
        value = cache[hook_name("resid_post", layer)]
        resid = torch.cat([value[row, :n] for row, n in enumerate(lengths)])
        fields = readout(model, resid, targets, settings.top_k, chunk_bytes)
        for name, tensor in fields.items():
            for capture, part in zip(captures, tensor.cpu().split(lengths), strict=True):
                if "logit_lens" in settings.predictions and layer in settings.lens_read_layers:
                    capture.logit_lens[lens_member(layer, name)] = part.clone()
                if "logits" in settings.predictions and layer == model.n_layers - 1:
                    capture.predictions[name] = part.clone()


def _last_layer(settings: ExportSettings, read_layers) -> int | None:
    """The last block the forward must run; `None`: the whole model (a hook after the blocks)."""
    depths = [hook_depth(name) for name in settings.extra_hooks]
    if None in depths:
        return None
    return max([*settings.layers, *read_layers, *depths])


def _stored(value: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A hook's values as stored: floats in the residual dtype, anything else (ids) as is."""
    value = value.to(dtype) if value.is_floating_point() else value
    return value.clone(memory_format=torch.contiguous_format)  # safetensors wants contiguous


def to_host(cache: dict) -> dict:
    """One device-to-host copy per hook, into pinned memory, all issued before one wait."""
    if all(value.device.type == "cpu" for value in cache.values()):
        return cache
    host = {}
    for name, value in cache.items():
        buffer = torch.empty(value.shape, dtype=value.dtype, pin_memory=True)
        host[name] = buffer.copy_(value, non_blocking=True)
    # A non_blocking copy returns before the bytes arrive: reading before this sync gives
    # silently corrupt data.
    torch.cuda.synchronize()
    return host


def _check_shapes(model: LensModel, cache: dict, shape, extra=()) -> None:
    batch, pos = shape
    for name, value in cache.items():
        if name in extra:  # its own per-token shape, checked when it was resolved
            expected = (batch, pos, *value.shape[2:])
        elif parse_hook_name(name)[0] == PATTERN:
            expected = (batch, model.n_heads, pos, pos)
        else:
            expected = (batch, pos, model.d_model)
        if tuple(value.shape) != expected:
            raise HookNotFiredError(
                f"hook {name} fired with shape {tuple(value.shape)}, expected {expected}"
            )
