"""The store's vocabulary: every file and member name, hook kind, dtype and default that more
than one stage needs. Nothing else in lens_cache spells these out; a new kind of stored data
adds its names here first.

    <save>/models.jsonl                                  MODELS_INDEX
    <save>/index.html, viewer/, viewer_data/             INDEX_HTML, VIEWER_APP_DIR, VIEWER_DATA_DIR
    <save>/<model>/model_cfg.json                        MODEL_CFG_NAME
    <save>/<model>/prompts.jsonl                         PROMPTS_INDEX
    <save>/<model>/prompts/<hash>/prompt.json            PROMPTS_DIR, PROMPT_NAME (written last)
    <save>/<model>/prompts/<hash>/activations.npz        NPZ_NAME: blocks.{i}.attn.hook_pattern
    <save>/<model>/prompts/<hash>/activations-blocks.-.attn.hook_pattern.npy   STACKED_NAME
    <save>/<model>/prompts/<hash>/residuals.safetensors  RESIDUALS_NAME: blocks.{i}.hook_resid_*
    <save>/<model>/prompts/<hash>/partial_heads.safetensors   PARTIAL_HEADS_NAME (Hub pulls)
    <save>/<model>/prompts/<hash>/predictions.safetensors     PREDICTIONS_NAME: kind `logits`
    <save>/<model>/prompts/<hash>/logit_lens.safetensors      LOGIT_LENS_NAME: lens_member()
    <save>/<model>/prompts/<hash>/hooks.safetensors      HOOKS_NAME: any per-token hook [T, ...]
    <save>/<model>/prompts/<hash>/head_contributions.safetensors   HEADS_NAME: heads_member()
    <save>/<model>/prompts/<hash>/head_metrics.safetensors   HEAD_METRICS_NAME: kind `head_metrics`
    <save>/<model>/head_metrics.parquet                  HEAD_METRICS_TABLE: every prompt's rows
    <save>/<model>/prompts/<hash>/pattern_topk.safetensors   PATTERN_TOPK_NAME: topk_member()
    <save>/<model>/vocab.json                            VOCAB_NAME: token strings by id
    <save>/.lens_cache.lock                              LOCK_NAME (see lens_cache.locking)
    <save>/<model>/pooled/<hook>-<pool>/data-*.parquet   POOLED_DIR, pooled_name()

The names are pattern-lens's where the two overlap, and they never change: stores written by
earlier versions read with these.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Mapping
from pathlib import Path

from lens_cache.errors import LayerSelectionError, UnknownHookError

# --- files and folders -----------------------------------------------------------------------

MODELS_INDEX = "models.jsonl"
INDEX_HTML = "index.html"
# pattern-lens's own page, when its index writer replaced ours (lens_cache.viewer keeps it here)
PATTERN_LENS_PAGE = "pattern-lens.html"
VIEWER_APP_DIR = "viewer"  # the viewer's scripts and stylesheet
VIEWER_DATA_DIR = "viewer_data"  # the viewer's data scripts
# What a store's root holds beside its model folders; no model may take these names.
ROOT_ENTRIES = frozenset({MODELS_INDEX, INDEX_HTML, VIEWER_APP_DIR, VIEWER_DATA_DIR})

MODEL_CFG_NAME = "model_cfg.json"
PROMPTS_INDEX = "prompts.jsonl"
PROMPTS_DIR = "prompts"
POOLED_DIR = "pooled"

PROMPT_NAME = "prompt.json"
# prompt.json keys that are not metadata; pattern-lens keeps metadata beside them.
RECORD_KEYS = ("text", "hash", "n_tokens", "tokens", "token_ids", "meta", "lens_cache", "mean_loss")
NPZ_NAME = "activations.npz"
STACKED_NAME = "activations-blocks.-.attn.hook_pattern.npy"  # pattern-lens's stacked name
RESIDUALS_NAME = "residuals.safetensors"
PARTIAL_HEADS_NAME = "partial_heads.safetensors"
PREDICTIONS_NAME = "predictions.safetensors"  # kind `logits`
LOGIT_LENS_NAME = "logit_lens.safetensors"  # kind `logit_lens`
HOOKS_NAME = "hooks.safetensors"  # any other per-token hook, by its 3.x name (lens_cache.hooks)
HEADS_NAME = "head_contributions.safetensors"  # kind `head_contributions`
# kind `head_metrics`: `[layers, heads, metrics]` float32 (lens_cache.attention_metrics)
HEAD_METRICS_NAME = "head_metrics.safetensors"
HEAD_METRICS_TABLE = "head_metrics.parquet"  # <model>/head_metrics.parquet: one row per head
PATTERN_TOPK_NAME = "pattern_topk.safetensors"  # kind `pattern_topk` (lens_cache.topk)
LOCK_NAME = ".lens_cache.lock"  # <save>/.lens_cache.lock: the advisory lock (lens_cache.locking)
VOCAB_NAME = "vocab.json"  # <model>/vocab.json: each token id's string, beside model_cfg.json
# What an export writes beside prompt.json.
DATA_NAMES = (
    NPZ_NAME,
    STACKED_NAME,
    RESIDUALS_NAME,
    PREDICTIONS_NAME,
    LOGIT_LENS_NAME,
    HOOKS_NAME,
    HEADS_NAME,
    HEAD_METRICS_NAME,
    PATTERN_TOPK_NAME,
)

DEFAULT_MODEL = "smollm2-135m"  # the embedded model: `-m` when none is given
# Set to 1 (or `--no-fsync`) to skip flushing writes to disk: for scratch stores (lens_cache.store)
NO_FSYNC_ENV = "LENS_CACHE_NO_FSYNC"


def prompts_folder(model_path) -> Path:
    """`<save>/<model>/prompts` of the model folder `model_path` (a path, nothing checked)."""
    return Path(model_path) / PROMPTS_DIR


def prompt_folder(save_path, model: str, hash_: str) -> Path:
    """`<save>/<model>/prompts/<hash>` (a path, nothing checked: `store.prompt_dir` refuses
    names and links for writing, `reader.Store` for reading)."""
    return prompts_folder(Path(save_path) / model) / hash_


def default_save_path() -> str:
    """The store when none is given: `$LENS_CACHE_DIR`, else `lens_cache_data`."""
    return os.environ.get("LENS_CACHE_DIR", "lens_cache_data")


# --- hooks -----------------------------------------------------------------------------------

PATTERN = "pattern"
RESID_KINDS = ("resid_pre", "resid_mid", "resid_post")
# value norms and direct logit attribution per head (lens_cache.heads): computed from hooks, not
# stored as one; a kind of --hooks all the same
HEAD_CONTRIBUTIONS = "head_contributions"
# the attention metrics of every head (lens_cache.attention_metrics), taken from the patterns in
# memory: stored without them unless `pattern` is asked too
HEAD_METRICS = "head_metrics"
# the members of head_metrics.safetensors: values [layers, heads, metrics] and the layers [L]
METRICS_MEMBER, METRICS_LAYERS_MEMBER = "metrics", "layers"
# the compact pattern for long prompts (lens_cache.topk): each row's strongest keys, the rest
# of its mass, and a block-pooled overview; made from the dense pattern while it is in memory
PATTERN_TOPK = "pattern_topk"
HOOK_KINDS = (PATTERN, *RESID_KINDS, HEAD_CONTRIBUTIONS, HEAD_METRICS, PATTERN_TOPK)
_HOOK_RE = re.compile(
    rf"^blocks\.(\d+)\.(?:attn\.hook_({PATTERN})|hook_({'|'.join(RESID_KINDS)}))$"
)


def hook_name(kind: str, layer: int) -> str:
    """The stored (TransformerLens 3.x) hook name of one hook kind at one layer."""
    if kind == PATTERN:
        return f"blocks.{layer}.attn.hook_pattern"
    return f"blocks.{layer}.hook_{kind}"


# What the model predicts (lens_cache.predictions): one file per kind, the same fields in each.
LOGITS = "logits"
LOGIT_LENS = "logit_lens"
PREDICTION_KINDS = (LOGITS, LOGIT_LENS)
PREDICTION_FILES = {LOGITS: PREDICTIONS_NAME, LOGIT_LENS: LOGIT_LENS_NAME}
PREDICTION_FIELDS = ("loss", "entropy", "top_ids", "top_logprobs", "target_rank")
DEFAULT_TOP_K = 10  # top tokens stored per position when `--top-k` is not given


def lens_member(layer: int, field: str) -> str:
    """The logit-lens file's member name of one field at one layer."""
    return f"blocks.{layer}.logit_lens.{field}"


# What each head moves (lens_cache.heads, lens_cache.top_examples): per layer, `[n_heads, T]`
# fields, and each prompt's top-example candidates `[n_heads, k, 3]` by three rankings.
HEAD_FIELDS = ("value_norms", "dla")
TOP_BY = ("attention", "value_weighted", "dla")


def heads_member(layer: int, field: str) -> str:
    """A member of head_contributions.safetensors: `blocks.{layer}.attn.{field}`, field one of
    HEAD_FIELDS or `top_<by>` (see top_member)."""
    return f"blocks.{layer}.attn.{field}"


def top_member(layer: int, by: str) -> str:
    """The member holding one layer's top-example candidates by one ranking."""
    return heads_member(layer, f"top_{by}")


# The compact pattern's members, per layer: `keys` `[H, T, k]` (int32, -1 where a row has fewer
# than k keys), `values` `[H, T, k]`, `rest` `[H, T]` (1 - the row's stored mass), and the
# overview `overview_max` / `overview_sum` `[H, B, B]` over blocks of `block` (header metadata).
TOPK_FIELDS = ("keys", "values", "rest", "overview_max", "overview_sum")
DEFAULT_TOPK_KEYS = 32  # keys kept per query row when `--topk-keys` is not given
OVERVIEW_SIDE = 256  # most blocks along each axis of the overview, at any length


def topk_member(layer: int, field: str) -> str:
    """A member of pattern_topk.safetensors: `blocks.{layer}.attn.topk.{field}`."""
    return f"blocks.{layer}.attn.topk.{field}"


_TOPK_RE = re.compile(rf"^blocks\.(\d+)\.attn\.topk\.({'|'.join(TOPK_FIELDS)})$")


def parse_topk_member(name: str) -> tuple[int, str] | None:
    """`"blocks.3.attn.topk.rest"` -> `(3, "rest")`; `None` for any other name."""
    m = _TOPK_RE.match(name)
    return (int(m.group(1)), m.group(2)) if m else None


_HEADS_RE = re.compile(
    rf"^blocks\.(\d+)\.attn\.({'|'.join(HEAD_FIELDS)}|top_(?:{'|'.join(TOP_BY)}))$"
)


def parse_heads_member(name: str) -> tuple[int, str] | None:
    """`"blocks.3.attn.dla"` -> `(3, "dla")`, `"blocks.3.attn.top_dla"` -> `(3, "top_dla")`;
    `None` for any other name."""
    m = _HEADS_RE.match(name)
    return (int(m.group(1)), m.group(2)) if m else None


_LENS_MEMBER_RE = re.compile(rf"^blocks\.(\d+)\.logit_lens\.({'|'.join(PREDICTION_FIELDS)})$")


def parse_lens_member(name: str) -> tuple[int, str] | None:
    """`"blocks.3.logit_lens.loss"` -> `(3, "loss")`; `None` for any other name."""
    m = _LENS_MEMBER_RE.match(name)
    return (int(m.group(1)), m.group(2)) if m else None


def parse_hook_name(name: str) -> tuple[str, int] | None:
    """`"blocks.3.hook_resid_post"` -> `("resid_post", 3)`; `None` for any other name."""
    m = _HOOK_RE.match(name)
    if not m:
        return None
    return m.group(2) or m.group(3), int(m.group(1))


def hook_layers(names, kind: str) -> list[int]:
    """The sorted layers of one hook kind among stored member names (npz or safetensors keys)."""
    parsed = (parse_hook_name(n) for n in names)
    return sorted(p[1] for p in parsed if p and p[0] == kind)


def resid_kind(hook: str) -> str:
    """`resid_post` from `resid_post` or `hook_resid_post`.

    Raises:
        UnknownHookError: not a residual hook.
    """
    kind = hook.removeprefix("hook_")
    if kind not in RESID_KINDS:
        raise UnknownHookError(
            f"hook {hook!r} is not a residual hook; use one of {', '.join(RESID_KINDS)}"
        )
    return kind


_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")
# Hook points that fire before the first block: a forward stopped after block 0 has them.
_EMBED_PREFIXES = ("hook_embed", "hook_pos_embed", "embed.", "pos_embed.", "rotary_emb.")


_GLOB = re.compile(r"[*?\[{]")


def could_name_hook_point(word: str) -> bool:
    """Whether a `--hooks` word that is no stored kind may name TransformerLens hook points:
    every hook point's name has `hook` in it; a glob or brace list may match some."""
    return "hook" in word or bool(_GLOB.search(word))


MAX_BRACE_PATTERNS = 10_000  # more than any model has hook points
_INNER_BRACES = re.compile(r"\{([^{}]*)\}")


def expand_braces(pattern: str) -> list[str]:
    """`blocks.{3,5}.hook_z` -> `blocks.3.hook_z`, `blocks.5.hook_z` (shell brace lists).

    Raises:
        UnknownHookError: the lists multiply out to more than `MAX_BRACE_PATTERNS` patterns
            (twenty `{a,b}` are a million: built whole they would fill the memory).
    """
    todo, done = [pattern], []
    while todo:
        current = todo.pop()
        m = _INNER_BRACES.search(current)
        if not m:
            done.append(current)
            continue
        # Each step only adds patterns, so the count can be checked before it grows further.
        head, tail = current[: m.start()], current[m.end() :]
        todo += [head + part + tail for part in reversed(m.group(1).split(","))]
        if len(todo) + len(done) > MAX_BRACE_PATTERNS:
            raise UnknownHookError(
                f"hook pattern {pattern!r} expands to more than {MAX_BRACE_PATTERNS} names; "
                "use * or fewer brace lists"
            )
    return done


def matches_hook_request(name: str, request: str) -> bool:
    """Whether a hook point `name` is what a `--hooks` request names: the name itself, its
    block site (`attn.hook_z` names every layer's), or a glob or brace list matching it."""
    if request in (name, hook_site(name)[0]):
        return True
    return bool(_GLOB.search(request)) and any(
        fnmatch.fnmatchcase(name, p) for p in expand_braces(request)
    )


def hook_site(name: str) -> tuple[str, int | None]:
    """`"blocks.3.attn.hook_z"` -> `("attn.hook_z", 3)`; a hook outside the blocks
    (`"ln_final.hook_normalized"`) is its own site, with no layer."""
    m = _BLOCK_RE.match(name)
    return (m.group(2), int(m.group(1))) if m else (name, None)


def site_hook(site: str, layer: int | None) -> str:
    """The inverse of `hook_site`."""
    return site if layer is None else f"blocks.{layer}.{site}"


def hook_depth(name: str) -> int | None:
    """The last block a forward pass must run for `name` to fire: its block, 0 for the
    embeddings, `None` for hooks after the blocks (the final norm, the unembedding)."""
    _, layer = hook_site(name)
    if layer is not None:
        return layer
    return 0 if name.startswith(_EMBED_PREFIXES) else None


# --- dtypes ----------------------------------------------------------------------------------


class _TorchDtypes(Mapping):
    """Dtype name -> `torch.dtype`, importing torch only when a dtype is looked up: the
    commands that only read names (`--help`, `cache`, `hub`, `view`) never pay torch's
    import (about a second)."""

    def __init__(self, *names: str):
        self._names = names

    def __getitem__(self, name: str):
        if name not in self._names:
            raise KeyError(name)
        import torch

        return getattr(torch, name)

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


DTYPES = _TorchDtypes("float32", "float16", "bfloat16")
DEFAULT_DTYPE = "float32"  # of residuals, patterns and the model's compute, unless chosen
PATTERN_DTYPES = _TorchDtypes("float32", "float16")  # numpy has no bfloat16
# Every dtype a stored safetensors member has: the floats above, and the predictions' ids and
# ranks (int32), and head_metrics' layers (int64).
TENSOR_DTYPES = _TorchDtypes("float32", "float16", "bfloat16", "int32", "int64")
SAFETENSORS_DTYPES = {
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "int32": "I32",
    "int64": "I64",
}
ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "int32": 4, "int64": 8}


# --- pooled datasets -------------------------------------------------------------------------

POOLS = ("last_token", "first_token", "first_real", "mean", "mean_real")


def pooled_name(hook: str, pool: str) -> str:
    """A pooled dataset's folder name: `<hook>-<pool>`, with a residual kind's short name
    (`resid_post-mean`) or a block site's (`mlp.hook_post-mean`)."""
    return f"{pool_site(hook)}-{pool}"


def pool_site(hook: str) -> str:
    """What a pooled dataset pools: a residual kind (`resid_post`, also from `hook_resid_post`)
    or the block site of any other per-token hook (`attn.hook_z`, also from
    `blocks.3.attn.hook_z`), pooled at every layer it is stored for."""
    site, _ = hook_site(hook)
    kind = site.removeprefix("hook_")
    return kind if kind in RESID_KINDS else site


# --- layer selections ------------------------------------------------------------------------


def resolve_layers(spec, n_layers: int) -> tuple[int, ...]:
    """Turn a layer selection into sorted layer indices.

    Accepts `all`, `first`, `middle`, `last`, ints (negative counts from the end), inclusive
    ranges `a-b`, comma-separated mixtures of those, or a list.

    Raises:
        LayerSelectionError: a layer the model does not have, or an unreadable item.
    """
    items = _layer_items(spec)
    layers: set[int] = set()
    for item in items:
        layers.update(_layer_item(str(item).strip(), n_layers))
    if not layers:
        raise LayerSelectionError(f"--layers {spec!r} selects no layer")
    return tuple(sorted(layers))


def check_layer_syntax(spec) -> None:
    """Read a layer selection without the model (only its range needs the model's depth), so
    `--layers abc` fails before the model loads.

    Raises:
        LayerSelectionError: an unreadable item.
    """
    for item in _layer_items(spec):
        if not re.fullmatch(r"all|first|middle|last|\d+-\d+|-?\d+", str(item).strip()):
            raise _unreadable_layer(str(item).strip())


def _layer_items(spec) -> list:
    """The items of a selection: a comma-separated string, one int (`layers=3`), or a list."""
    if isinstance(spec, str):
        return spec.split(",")
    return [spec] if isinstance(spec, int) else list(spec)


def _unreadable_layer(item: str) -> LayerSelectionError:
    return LayerSelectionError(
        f"--layers: cannot read {item!r}; use all, first, middle, last, 3, -1, 0,2,4 or 2-5"
    )


def _layer_item(item: str, n_layers: int) -> range | list[int]:
    named = {
        "all": range(n_layers),
        "first": [0],
        "middle": [n_layers // 2],
        "last": [n_layers - 1],
    }
    if item in named:
        return named[item]
    if re.fullmatch(r"\d+-\d+", item):
        lo, hi = map(_layer_number, item.split("-"))
        chosen = range(lo, hi + 1)
    elif re.fullmatch(r"-?\d+", item):
        layer = _layer_number(item)
        chosen = range(layer, layer + 1)
    else:
        raise _unreadable_layer(item)
    # Only the ends are checked: `0-99999999999` must fail at once, not list its numbers first.
    if not chosen or chosen[0] < -n_layers or chosen[-1] >= n_layers:
        raise LayerSelectionError(
            f"--layers {item}: the model has layers 0-{n_layers - 1} ({n_layers} layers)"
        )
    return [i % n_layers for i in chosen]


def _layer_number(text: str) -> int:
    """`int(text)`; past 18 digits (no model has that many layers) a stand-in as far out of
    range, since `int()` refuses strings of over 4,300 digits."""
    digits = text.lstrip("-").lstrip("0")
    if len(digits) <= 18:
        return int(text)
    return -(10**19) if text.startswith("-") else 10**19
