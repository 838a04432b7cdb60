"""The small files of a dataset: the `prompts` and `models` parquet tables, the dataset card,
and the `lens_cache.json` manifest (written on push, validated on pull)."""

from __future__ import annotations

import io
import json
import os
import re

from lens_cache.errors import NotALensCacheDatasetError, UnsafeRepoPathError
from lens_cache.hub._layout import (
    CARD_NAME,
    FORMAT,
    HOOKS,
    KINDS,
    MANIFEST_NAME,
    MODEL_FILE,
    MODEL_FILES,
    MODELS_TABLE,
    NEWEST_FORMAT_VERSION,
    PATTERNS,
    POOLED,
    PREDICTIONS,
    PROMPT_KINDS,
    PROMPTS_TABLE,
    ModelPlan,
    check_hash,
    check_model_name,
    check_repo_path,
    manifest_version,
    model_file_path,
    pooled_entries,
    pooled_files_complete,
    pooled_path,
    split_pooled_name,
    tensor_path,
)
from lens_cache.hub._select import Selection
from lens_cache.hub._shards import BuiltFile
from lens_cache.layout import DTYPES, HEAD_CONTRIBUTIONS, LOGIT_LENS, RESID_KINDS
from lens_cache.records import TOKENIZER_TOKENS

# --- tables, card, manifest ------------------------------------------------------------------


def small_files(plans: list[ModelPlan], dtype: str, repo_id: str) -> dict[str, bytes]:
    """The parquet tables and the card (the manifest comes last, once every sha256 is known)."""
    return {
        PROMPTS_TABLE: prompts_table(plans),
        MODELS_TABLE: models_table(plans),
        CARD_NAME: card_bytes(repo_id, plans, dtype),
    }


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
            ("mean_loss", pa.float64()),  # null where the model's logits were not exported
            # tokenizer.tokenize(text), pattern-lens's `tokens` (no BOS); null from old stores
            (TOKENIZER_TOKENS, pa.list_(pa.string())),
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
        "mean_loss": r.get("mean_loss"),
        TOKENIZER_TOKENS: r.get(TOKENIZER_TOKENS),
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


def manifest_bytes(
    plans: list[ModelPlan], sel: Selection, dtype: str, files: list[BuiltFile]
) -> bytes:
    """`lens_cache.json`: what identifies the dataset and lets a pull check every file.

    The format version is the oldest that reads what is listed (`manifest_version`): 1, 2 with
    a pooled dataset, 3 with a per-prompt kind; older lens_cache versions refuse a newer one
    as "newer" instead of taking its files for foreign ones.
    """
    kinds = {k for p in plans for k in p.tensors}
    manifest = {
        "format": FORMAT,
        "format_version": manifest_version(kinds, any(p.pooled for p in plans)),
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
    kinds = sorted({k for p in plans for k in p.tensors if k not in PROMPT_KINDS})
    kinds += [
        k for k in PROMPT_KINDS if PROMPT_KINDS[k].cast and any(k in p.tensors for p in plans)
    ]
    per_prompt = [
        k for k in PROMPT_KINDS if not PROMPT_KINDS[k].cast and any(k in p.tensors for p in plans)
    ]
    stored = [f"{', '.join(kinds)}, as `{dtype}`"] if kinds else []
    stored += [f"{' and '.join(per_prompt)} (as exported)"] if per_prompt else []
    stored += ["pooled residuals (float32)"] if any(p.pooled for p in plans) else []
    rows = "\n".join(_card_row(p) for p in plans)
    with_tensors = [p for p in plans if set(p.tensors) - set(PROMPT_KINDS)]
    fetch = ""
    if with_tensors:
        fetch = _CARD_FETCH.format(repo_id=repo_id, example=_example_path(with_tensors[0]))
    fetch += _card_prompt_kinds(repo_id, plans)
    if any(HEAD_CONTRIBUTIONS in p.tensors for p in plans):
        fetch += _CARD_HEADS
    fetch += _card_hooks(repo_id, plans, dtype)
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
    resid = ", ".join(
        f"{k} ({_ranges(sorted(v))})" for k, v in p.tensors.items() if k in RESID_KINDS
    )
    per_prompt = ", ".join(_per_prompt_cell(p, k) for k in p.tensors if k in PROMPT_KINDS)
    cells = [p.name, str(p.n_layers), str(p.n_heads), str(p.d_model), str(len(p.records))]
    return "| " + " | ".join([*cells, heads, resid or "none", per_prompt or "none"]) + " |"


def _per_prompt_cell(p: ModelPlan, kind: str) -> str:
    if PROMPT_KINDS[kind].named:
        return f"{kind} ({len(p.named_members(kind))} hook points)"
    layers = p.tensors[kind]
    return kind if None in layers else f"{kind} ({_ranges(sorted(layers))})"


def _card_hooks(repo_id: str, plans: list[ModelPlan], dtype: str) -> str:
    """The card's section naming the hook points pushed ("" when there are none)."""
    with_hooks = [p for p in plans if HOOKS in p.tensors]
    if not with_hooks:
        return ""
    items = "\n".join(
        f"- `{p.name}`: " + ", ".join(f"`{n}`" for n in p.named_members(HOOKS)) for p in with_hooks
    )
    first = with_hooks[0]
    layer, sites = next(iter(sorted(first.tensors[HOOKS].items(), key=lambda x: x[0] is None)))
    return _CARD_HOOKS.format(
        repo_id=repo_id,
        items=items,
        dtype=dtype,
        example=tensor_path(first.name, HOOKS, layer, None, 0),
        site=sites[0],
    )


def _card_prompt_kinds(repo_id: str, plans: list[ModelPlan]) -> str:
    """The card's section on predictions and the logit lens ("" when there are none)."""
    predicting = [PREDICTIONS, LOGIT_LENS]
    first = next((p for p in plans if set(p.tensors) & set(predicting)), None)
    if first is None:
        return ""
    kind = next(k for k in predicting if k in first.tensors)
    layer = next(iter(first.tensors[kind]))
    return _CARD_PROMPT_KINDS.format(
        repo_id=repo_id,
        model=first.name,
        example=tensor_path(first.name, kind, layer, None, 0),
        top_k=first.top_k,
    )


def _example_path(p: ModelPlan) -> str:
    """The first shard of a model's patterns or residuals."""
    kind, layers = next((k, v) for k, v in p.tensors.items() if k not in PROMPT_KINDS)
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

| model | layers | heads | d_model | prompts | attention patterns | residual streams | other |
|---|---|---|---|---|---|---|---|
{rows}

## Load the prompts

```python
from datasets import load_dataset

prompts = load_dataset("{repo_id}", split="train")          # model, hash, text, tokens, meta
models = load_dataset("{repo_id}", "models", split="train")  # each model's config (JSON)
```

`tokens` are the model's string tokens, BOS included when the model prepends one, so
`len(tokens) == n_tokens`, the side of each pattern; `tokenizer_tokens` are the tokenizer's own
strings without the BOS, as pattern-lens keeps them; `meta` is a JSON string.

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
- `tensors/<model>/predictions-NNNNN.safetensors` and
  `tensors/<model>/logit_lens/layer_LL-NNNNN.safetensors`: keys `<hash>/<field>` (see above);
  `models/<model>/vocab.json`: the model's token strings by id.
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

_CARD_HEADS = """## What each head moves

`head_contributions` holds, per layer, under `<hash>/<field>`: `value_norms` (float32
`[heads, T]`, the norm of what each key position writes through each head, `||v_j W_O^h||`),
`dla` (float32 `[heads, T]`, each head's direct logit attribution toward the actual next token;
NaN at the last position) and each prompt's top-example candidates `top_attention`,
`top_value_weighted`, `top_dla` (float32 `[heads, k, 3]` rows of `(value, query, key)`). Pulled
with lens_cache, they come back as each prompt's `head_contributions.safetensors`, bit for bit.

"""

_CARD_HOOKS = """## Other hook points

Each prompt's activations at these TransformerLens hook points (3.x names), one vector per
token, as `{dtype}`:

{items}

A hook inside the blocks, `blocks.<L>.<site>`, is in
`tensors/<model>/hooks/layer_LL-NNNNN.safetensors` under `<hash>/<site>`; one outside them
(`ln_final.hook_normalized`) in
`tensors/<model>/hooks-NNNNN.safetensors` under `<hash>/<name>`; each `[T, ...]` (e.g.
`[T, heads, d_head]` for `attn.hook_z`).

```python
from datasets import load_dataset
from huggingface_hub import hf_hub_download
from safetensors.torch import load_file

prompt = load_dataset("{repo_id}", split="train")[0]
shard = load_file(hf_hub_download("{repo_id}", "{example}", repo_type="dataset"))
values = shard[prompt["hash"] + "/{site}"]  # [T, ...]
```

Pulled with lens_cache, they come back as each prompt's `hooks.safetensors`, which
`store.hooks(...)` and `store.activation_cache(...)` (a TransformerLens `ActivationCache`) read.

"""

_CARD_PROMPT_KINDS = """## What the model predicts

`predictions` (the model's own next-token prediction) and `logit_lens` (the same read out of
each layer's residual stream through the model's final norm and unembedding) hold, for every
position of a prompt, under `<hash>/<field>`: `loss` (`-log p` of the actual next token, NaN
at the last position) and `entropy`, float32 `[T]`; `top_ids` (int32) and `top_logprobs`
(float32), `[T, {top_k}]`, the most likely next tokens; `target_rank`, int32 `[T]` (0: the
actual token was the top prediction; -1 at the last position). `models/<model>/vocab.json`
lists the token strings by id. The prompts table's `mean_loss` is each prompt's mean loss.

```python
import json
from datasets import load_dataset
from huggingface_hub import hf_hub_download
from safetensors.torch import load_file

prompt = load_dataset("{repo_id}", split="train")[0]
shard = load_file(hf_hub_download("{repo_id}", "{example}", repo_type="dataset"))
vocab_file = hf_hub_download("{repo_id}", "models/{model}/vocab.json", repo_type="dataset")
vocab = json.load(open(vocab_file, encoding="utf-8"))
top1 = [vocab[i] for i in shard[prompt["hash"] + "/top_ids"][:, 0]]  # prompt of {model}
```

Pulled with lens_cache, they come back as each prompt's `predictions.safetensors` and
`logit_lens.safetensors`, bit for bit; the viewer shows the token strip coloured by loss and
the logit-lens view.

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


# --- reading a manifest ----------------------------------------------------------------------


def validate_manifest(manifest: dict, repo_id: str) -> dict:
    """Check the manifest's format and every name in it before anything is downloaded.

    Raises:
        NotALensCacheDatasetError: another format, or a newer version.
        UnsafeRepoPathError: a path, model name or hash that could escape the save path.
    """
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise NotALensCacheDatasetError(f"{repo_id}: {MANIFEST_NAME} is not a lens_cache manifest")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > NEWEST_FORMAT_VERSION:
        raise NotALensCacheDatasetError(
            f"{repo_id} was made by a newer lens_cache (format {version}); upgrade lens_cache"
        )
    if manifest.get("dtype") not in DTYPES:
        raise NotALensCacheDatasetError(f"{repo_id}: unknown dtype {manifest.get('dtype')!r}")
    if not isinstance(manifest.get("models"), dict) or not isinstance(manifest.get("files"), list):
        raise NotALensCacheDatasetError(f"{repo_id}: {MANIFEST_NAME} lacks models or files")
    for name, summary in manifest["models"].items():
        check_model_name(name, f"{repo_id}'s manifest")
        _check_summary(summary)
    for entry in manifest["files"]:
        _check_entry(entry, manifest["models"], repo_id)
    for (model, name), files in pooled_entries(manifest).items():
        if not pooled_files_complete([e["path"].rsplit("/", 1)[1] for e in files]):
            raise NotALensCacheDatasetError(
                f"{repo_id}: the manifest's files of pooled dataset {model}/{name} are not a "
                "complete data-XXXXX-of-NNNNN set"
            )
    return manifest


def _check_summary(summary: dict) -> None:
    """A model's summary holds what the selection reads from it, in the types it reads them:
    layers and heads as counts (a layer key as its digits), a per-prompt kind's layers as
    counts or, for a named kind, hook names.

    Raises:
        ValueError, TypeError, KeyError: a part that is not so (`read_manifest` names them).
    """
    patterns, residuals = summary["patterns"], summary["residuals"]
    kinds = summary.get("prompt_kinds") or {}
    if not all(isinstance(part, dict) for part in (patterns, residuals, kinds)):
        raise TypeError("a model's patterns, residuals or prompt_kinds is not a map")
    words = [k for k in patterns if not (isinstance(k, str) and k.isdigit())]
    if words:
        raise ValueError(f"a pattern layer {words[0]!r} is not a number")
    counts = [h for heads in patterns.values() for h in heads]
    counts += [x for layers in residuals.values() for x in layers]
    for kind, layers in kinds.items():
        named = kind in PROMPT_KINDS and PROMPT_KINDS[kind].named
        if named and not all(isinstance(x, str) for x in layers or ()):
            raise TypeError(f"{kind} lists a member that is not a hook name")
        counts += [] if named else list(layers or ())
    for value in counts:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{value!r} is not a layer or head number")


def _check_entry(entry: dict, models: dict, repo_id: str) -> None:
    path = check_repo_path(entry["path"])
    if not isinstance(entry["size"], int) or not isinstance(entry["sha256"], str):
        raise NotALensCacheDatasetError(f"{repo_id}: manifest entry {path} lacks size/sha256")
    if path.startswith(f"{POOLED}/"):
        _check_pooled_entry(entry, path, models, repo_id)
        return
    if entry.get("kind") == MODEL_FILE or path.startswith("models/"):
        _check_model_file_entry(entry, path, models, repo_id)
        return
    if not path.startswith("tensors/"):
        return
    model = check_model_name(entry["model"], f"{repo_id}'s manifest")
    index = int(path.rsplit("-", 1)[1].split(".")[0])
    head = entry["head"] if entry["kind"] == PATTERNS else None
    layer = None if entry["layer"] is None else int(entry["layer"])
    expected = tensor_path(model, entry["kind"], layer, head, index)
    if expected != path or model not in models:
        raise UnsafeRepoPathError(
            f"{repo_id}: manifest entry {path!r} does not match its fields ({expected!r})", path
        )
    check_hash(entry["first"], f"{repo_id}'s manifest")
    check_hash(entry["last"], f"{repo_id}'s manifest")
    if entry["kind"] not in KINDS or entry["first"] > entry["last"]:
        raise NotALensCacheDatasetError(f"{repo_id}: manifest entry {path} is inconsistent")


def _check_model_file_entry(entry: dict, path: str, models: dict, repo_id: str) -> None:
    """A model file's path must be exactly what its model and name fields make."""
    model = check_model_name(entry.get("model"), f"{repo_id}'s manifest")
    name = entry.get("name")
    if entry.get("kind") != MODEL_FILE or name not in MODEL_FILES:
        raise UnsafeRepoPathError(f"{repo_id}: manifest entry {path!r} is not a model file", path)
    if model_file_path(model, name) != path or model not in models:
        raise UnsafeRepoPathError(
            f"{repo_id}: manifest entry {path!r} does not match its fields", path
        )


def _check_pooled_entry(entry: dict, path: str, models: dict, repo_id: str) -> None:
    """A pooled file's path must be exactly what its model, hook and pool fields make."""
    model = check_model_name(entry["model"], f"{repo_id}'s manifest")
    name = f"{entry['hook']}-{entry['pool']}"
    expected = pooled_path(model, name, path.rsplit("/", 1)[1])
    if entry["kind"] != POOLED or split_pooled_name(name) is None or expected != path:
        raise UnsafeRepoPathError(
            f"{repo_id}: manifest entry {path!r} does not match its fields ({expected!r})", path
        )
    if model not in models:
        raise NotALensCacheDatasetError(f"{repo_id}: manifest entry {path} names no listed model")
