"""The viewer inline in a notebook: Jupyter (lab and classic), VS Code, Colab.

`show(store, model, prompt, ...)` shows a stored prompt; `show_patterns(tokens, patterns)`
shows patterns straight from memory (a tensor or a TransformerLens `ActivationCache`), without
exporting. Both return an `InlineView`, which notebooks display through `_repr_html_`: an
`<iframe srcdoc>` holding the static viewer's own page for that one prompt, every script and
all its data inlined (`lens_cache.viewer.inline_page`), so the same views, keys and hover work
with no network and no server.

Each display is a document of its own: its keys, address and decoded data never reach another
display or the notebook, so several in one notebook do not interfere. `sandbox="allow-scripts"`
gives it an opaque origin (it cannot touch the notebook's page). IPython is never imported:
notebooks find `_repr_html_` themselves.

Example:
    >>> lens_cache.show("store", "gpt2", "The cat sat.", layer=5, head=1, view="head")
    >>> lens_cache.show_patterns(model.to_str_tokens(text), cache)   # every layer's patterns
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np

from lens_cache.errors import InvalidOptionError
from lens_cache.layout import PATTERN, hook_name
from lens_cache.prompts import prompt_hash
from lens_cache.reader import Store, normalize_record, open_store, select_layers
from lens_cache.records import stored_record
from lens_cache.viewer import CapturedArrays, inline_page

VIEWS = ("prompt", "head", "lens", "metrics")
MEMORY = "patterns"  # the model name `show_patterns` shows its patterns under


@dataclass(frozen=True, repr=False)
class InlineView:
    """A self-contained viewer page that displays itself in a notebook.

    Args:
        page: the whole HTML page (`save()` writes it to a file that opens from disk too).
        height: the display's height in CSS pixels.
    """

    page: str
    height: int = 560

    def __repr__(self) -> str:  # a notebook's text/plain beside the HTML: short, not the page
        return f"<lens_cache view, {len(self.page) / 1e3:.0f} kB>"

    def _repr_html_(self) -> str:
        return (
            f'<iframe class="lens-cache-view" sandbox="allow-scripts" title="lens_cache view" '
            f'style="width:100%;height:{int(self.height)}px;border:0" '
            f'srcdoc="{html.escape(self.page, quote=True)}"></iframe>'
        )

    def save(self, path) -> Path:
        """Write the page to `path` (an `.html` file that opens from disk)."""
        from lens_cache.store import write_text

        write_text(Path(path), self.page)
        return Path(path)


def show(store, model: str, prompt, layer=None, head=None, view="prompt", height=560):
    """One stored prompt in the viewer, inline.

    Args:
        store (`str`, `Path` or `Store`): the store.
        model (`str`): the model's name in the store.
        prompt (`str` or `dict`): text, hash, or a record.
        layer (`int`, *optional*): the layer to open (`head` view; defaults to the first
            stored); negative counts from the model's end. Its data is always carried.
        head (`int`, *optional*, defaults to 0): the head to open (`head` view).
        view (`str`, *optional*, defaults to `"prompt"`): `prompt` (layer x head grid), `head`,
            `lens` (logit lens, when stored) or `metrics` (per-head metrics of this prompt).
        height (`int`, *optional*, defaults to 560): pixels.

    Returns:
        An `InlineView`.

    Raises:
        InvalidOptionError: an unknown view.
        ActivationsMissingError: the prompt or its patterns are not stored.
        LayerNotStoredError: `layer` is not stored.
    """
    if view not in VIEWS:
        raise InvalidOptionError(f"view must be one of {', '.join(VIEWS)}, got {view!r}")
    store = store if isinstance(store, Store) else open_store(store)
    record = store.prompt(model, prompt)
    if layer is not None or view == "head":
        stored = store.stored_layers(model, record)
        (layer,) = _one_layer(store, model, stored, stored[0] if layer is None else layer)
    route = _route(view, model, record["hash"], layer, head or 0)
    page = inline_page(store.path, store.model_cfg(model), record, route, keep_layer=layer)
    return InlineView(page, height)


def _one_layer(store: Store, model: str, stored: list[int], layer) -> list[int]:
    n_layers = int(store.model_cfg(model).get("n_layers") or max(stored) + 1)
    return select_layers(layer, stored, n_layers, f"model {model} (patterns)")


def show_patterns(tokens, patterns, layer=None, head=None, view="prompt", height=560):
    """Attention patterns from memory, inline, without exporting (as CircuitsVis's
    `attention_patterns`), with the viewer's per-head metrics.

    Args:
        tokens (list of `str`): one string per position (`model.to_str_tokens(text)`).
        patterns: `Float[Tensor | np.ndarray, "heads pos pos"]` or `"layers heads pos pos"`,
            or a TransformerLens `ActivationCache` of one prompt (every `hook_pattern` in it).
        layer, head, view, height: as for `show`.

    Returns:
        An `InlineView`.

    Raises:
        InvalidOptionError: shapes that do not fit the tokens.
    """
    layers = _pattern_layers(patterns)
    tokens = [str(t) for t in tokens]
    for i, value in layers.items():
        if value.ndim != 3 or value.shape[1:] != (len(tokens), len(tokens)):
            raise InvalidOptionError(
                f"patterns of layer {i} have shape {value.shape}; expected [heads, "
                f"{len(tokens)}, {len(tokens)}] for {len(tokens)} tokens"
            )
    if view not in VIEWS:
        raise InvalidOptionError(f"view must be one of {', '.join(VIEWS)}, got {view!r}")
    cfg, record = _in_memory_prompt(tokens, layers)
    if layer is not None or view == "head":
        stored = sorted(layers)
        layer = stored[0] if layer is None else layer
        (layer,) = select_layers(layer, stored, cfg["n_layers"], f"model {MEMORY} (patterns)")
    arrays = CapturedArrays(
        {hook_name(PATTERN, i): v[None] for i, v in layers.items()}, {}, Path(MEMORY)
    )
    route = _route(view, MEMORY, record["hash"], layer, head or 0)
    return InlineView(inline_page(None, cfg, record, route, layer, arrays=arrays), height)


def _pattern_layers(patterns) -> dict[int, np.ndarray]:
    """`{layer: [heads, T, T] float32}` from a tensor, an array or an ActivationCache."""
    if hasattr(patterns, "cache_dict"):  # a TransformerLens ActivationCache
        names = [(int(k.split(".")[1]), k) for k in patterns.keys() if k.endswith(PATTERN)]
        if not names:
            raise InvalidOptionError("the ActivationCache holds no hook_pattern")
        return {i: _array(patterns[name])[0] for i, name in sorted(names)}
    array = _array(patterns)
    array = array[None] if array.ndim == 3 else array
    if array.ndim != 4:
        raise InvalidOptionError(f"patterns must be [layers?, heads, T, T], got {array.shape}")
    return dict(enumerate(array))


def _array(value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().float().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


def _in_memory_prompt(tokens: list[str], layers: dict[int, np.ndarray]) -> tuple[dict, dict]:
    """The model config and prompt record of model `patterns`, as a reader of a store the
    exporter wrote would give them."""
    text = "".join(tokens)
    n_heads = next(iter(layers.values())).shape[0]
    cfg = {"model_name": MEMORY, "n_layers": max(layers) + 1, "n_heads": n_heads}
    record = {"text": text, "hash": prompt_hash(text), "n_tokens": len(tokens)}
    record |= {"tokens": tokens, "meta": {}}
    record["lens_cache"] = {"layers": sorted(layers), "hooks": [PATTERN]}
    # no tokenizer and no BOS here: pattern-lens's fields get the given tokens as they are
    return cfg, normalize_record(json.loads(json.dumps(stored_record(record, tokens))))


def _route(view: str, model: str, hash_: str, layer, head: int) -> str:
    """The viewer address a display opens on (the static viewer's `#/...` scheme)."""
    m = quote(model, safe="")
    if view == "head":
        return f"#/head/{m}/{hash_}/{layer}/{head}"
    if view == "metrics":
        return f"#/metrics/{m}?prompt={hash_}"
    return f"#/{view}/{m}/{hash_}"
