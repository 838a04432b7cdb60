"""Write a synthetic lens_cache store without a model, for the viewer's tests and `make bench`.

The layout is the exporter's (pattern-lens compatible), so the viewer can be tested without
TransformerLens or the exporter:

    <save>/models.jsonl
    <save>/<model>/model_cfg.json
    <save>/<model>/prompts.jsonl
    <save>/<model>/prompts/<hash>/{prompt.json, activations.npz[, residuals.safetensors]}

Patterns are random row-stochastic causal matrices plus planted heads whose metrics are known:
layer 0 head 0 is a previous-token head, and each model has one exact induction head
(``PLANTED_INDUCTION``): on rows whose token appeared before it puts all its attention on the
token(s) that followed the earlier occurrence(s), on other rows all on position 0.

Example:
    >>> info = write_store(tmp_path)                       # the default test store
    >>> info = write_store(tmp_path, models=[BENCH_MODEL], n_prompts=1000, special=False)
"""

from __future__ import annotations

import json
import multiprocessing
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from lens_cache import formats
from lens_cache.layout import (
    MODEL_CFG_NAME,
    MODELS_INDEX,
    NPZ_NAME,
    PATTERN,
    PROMPT_NAME,
    PROMPTS_INDEX,
    RESID_KINDS,
    RESIDUALS_NAME,
    hook_name,
    prompt_folder,
)
from lens_cache.prompts import prompt_hash
from lens_cache.store import write_jsonl

XSS_TEXT = "<img src=x onerror=alert(1)> </script> \"quotes\" & 'apostrophes'"
BOS = "<bos>"
WORDS = (
    "the a lighthouse keeper island kept two logbooks weather ships hours lamp burned second "
    "bird glass night pencil drawing river froze mill stood idle bakers flour chestnuts bread "
    "water heat pan rises cooler surface sinks convection rock mantle thunderheads summer"
).split()


@dataclass(frozen=True)
class ModelSpec:
    name: str
    n_layers: int
    n_heads: int
    d_model: int
    induction_head: tuple[int, int]
    resid_dtype: str | None = "float32"  # float32, float16, bfloat16, or None for no residuals
    partial_layers_for: tuple[str, ...] = field(default=())  # prompt kinds stored with few layers


SMALL_MODEL = ModelSpec("toy-3x2", 3, 2, 16, induction_head=(1, 1), resid_dtype="float32")
GRID_MODEL = ModelSpec(
    "toy-12x12",
    12,
    12,
    48,
    induction_head=(5, 7),
    resid_dtype="bfloat16",
    partial_layers_for=("long",),
)
BENCH_MODEL = ModelSpec("bench-30x9", 30, 9, 64, induction_head=(12, 4), resid_dtype=None)
DEFAULT_MODELS = (GRID_MODEL, SMALL_MODEL)


def tokenize(text: str) -> list[str]:
    """Whitespace-attached word tokens with a BOS, like GPT-2's leading-space tokens."""
    return [BOS, *re.findall(r"\s*\S+", text)]


def special_prompts(rng: np.random.Generator) -> list[tuple[str, dict]]:
    """The prompts every default store has: prose, a repeated span, the XSS text, a long one."""
    span = " ".join(rng.choice(WORDS, size=12))
    long_text = " ".join(rng.choice(WORDS, size=299))  # 299 words + BOS = 300 tokens
    return [
        ("The lighthouse keeper kept two logbooks.", {"kind": "prose", "id": "prose-01"}),
        ("Heat rises and cooler water sinks.", {"kind": "prose", "id": "prose-02"}),
        (f"{span} {span}", {"kind": "induction", "id": "repeat-01"}),
        (XSS_TEXT, {"kind": "xss", "id": "xss-01"}),
        (long_text, {"kind": "long", "id": "long-01"}),
    ]


def random_prompts(rng: np.random.Generator, n: int, lengths: tuple[int, int]):
    """`n` random word prompts with token counts (BOS included) drawn from `lengths`."""
    out = []
    for k in range(n):
        n_words = int(rng.integers(lengths[0], lengths[1] + 1)) - 1
        text = f"{k}: " + " ".join(rng.choice(WORDS, size=max(n_words - 1, 1)))
        out.append((text, {"kind": ("prose", "code", "dialog")[k % 3], "id": f"rand-{k:04d}"}))
    return out


def causal_softmax(logits: np.ndarray) -> np.ndarray:
    """Row softmax over the causal prefix; the upper triangle is exactly 0."""
    t = logits.shape[-1]
    masked = np.where(np.tril(np.ones((t, t), dtype=bool)), logits, -np.inf)
    e = np.exp(masked - masked.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def induction_pattern(tokens: list[str]) -> np.ndarray:
    """The exact induction head: all attention on the induction targets, else on position 0."""
    t = len(tokens)
    out = np.zeros((t, t))
    seen: dict[str, list[int]] = {}
    for i, tok in enumerate(tokens):
        targets = [j + 1 for j in seen.get(tok, []) if j + 1 < i]
        if targets:
            out[i, targets] = 1.0 / len(targets)
        else:
            out[i, 0] = 1.0
        seen.setdefault(tok, []).append(i)
    return out


def layer_patterns(rng, spec: ModelSpec, layer: int, tokens: list[str]) -> np.ndarray:
    """``[1, n_heads, T, T]`` float32 patterns for one layer, with the planted heads."""
    t = len(tokens)
    pat = causal_softmax(rng.normal(scale=2.0, size=(spec.n_heads, t, t)))
    if layer == 0:
        prev = np.eye(t, k=-1) * 0.85 + pat[0] * 0.15
        prev[0, 0] = 1.0
        pat[0] = prev / prev.sum(axis=-1, keepdims=True)
    if layer == spec.induction_head[0]:
        pat[spec.induction_head[1]] = induction_pattern(tokens)
    return pat[None].astype(np.float32)


def write_bf16_safetensors(tensors: dict[str, np.ndarray], path: Path) -> None:
    """Write float32 arrays as BF16 safetensors (numpy has no bfloat16 dtype to hand over)."""
    path.write_bytes(formats.bf16_safetensors_bytes(tensors))


def residuals(rng, spec: ModelSpec, layers: list[int], t: int) -> dict[str, np.ndarray]:
    """Random residuals whose norms grow with depth; position 0 (BOS) is large, as in models."""
    out = {}
    for i in layers:
        for k, kind in enumerate(RESID_KINDS):
            arr = rng.normal(scale=1.0 + i + k / 3, size=(t, spec.d_model))
            arr[0] *= 8.0
            out[hook_name(kind, i)] = arr.astype(np.float32)
    return out


def write_resid(tensors: dict[str, np.ndarray], path: Path, dtype: str) -> None:
    if dtype == "bfloat16":
        write_bf16_safetensors(tensors, path)
    else:
        save_file({k: v.astype(dtype) for k, v in tensors.items()}, str(path))


def model_cfg(spec: ModelSpec) -> dict:
    return {
        "model_name": spec.name,
        "n_layers": spec.n_layers,
        "n_heads": spec.n_heads,
        "d_model": spec.d_model,
        "n_ctx": 1024,
        "d_vocab": len(WORDS) + 1,
        "act_fn": "gelu",
        "synthetic": True,
    }


def write_prompt(
    save: Path, rng, spec: ModelSpec, text: str, meta: dict, compress: bool, dtype: str = "float32"
) -> dict:
    """Write one prompt's folder for one model (patterns stored as `dtype`) and return its
    prompt.json object."""
    tokens = tokenize(text)
    layers = list(range(spec.n_layers))
    if meta.get("kind") in spec.partial_layers_for:
        layers = sorted({0, spec.induction_head[0], spec.n_layers - 1})
    h = prompt_hash(text)
    folder = prompt_folder(save, spec.name, h)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        hook_name(PATTERN, i): layer_patterns(rng, spec, i, tokens).astype(dtype, copy=False)
        for i in layers
    }
    (np.savez_compressed if compress else np.savez)(folder / NPZ_NAME, **arrays)
    if spec.resid_dtype and meta.get("kind") != "xss":  # the XSS prompt has no residuals
        write_resid(
            residuals(rng, spec, layers, len(tokens)),
            folder / RESIDUALS_NAME,
            spec.resid_dtype,
        )
    prompt = {
        "text": text,
        "hash": h,
        "n_tokens": len(tokens),
        "tokens": tokens,
        "meta": meta,
        "lens_cache": {"layers": layers, "hooks": ["attn.hook_pattern"], "settings": "0f1e2d3c"},
    }
    (folder / PROMPT_NAME).write_text(json.dumps(prompt))
    return prompt


def write_prompts(save: Path, rng, spec: ModelSpec, prompts, how: tuple, workers: int) -> list:
    """:func:`write_prompt` of each ``(text, meta)`` in `prompts`; `how` is (compress, dtype)."""
    if workers == 1:
        return [write_prompt(save, rng, spec, t, m, *how) for t, m in prompts]
    seeds = rng.integers(2**63, size=len(prompts))
    jobs = [(save, seed, spec, t, m, *how) for seed, (t, m) in zip(seeds, prompts, strict=True)]
    fork = multiprocessing.get_context("fork")  # spawn would re-run a caller's unguarded script
    with ProcessPoolExecutor(workers, mp_context=fork) as pool:
        return list(pool.map(write_seeded_prompt, jobs, chunksize=64))


def write_seeded_prompt(job: tuple) -> dict:
    save, seed, *rest = job
    return write_prompt(save, np.random.default_rng(seed), *rest)


def write_store(
    save_path: Path,
    *,
    models=DEFAULT_MODELS,
    n_prompts: int = 0,
    special: bool = True,
    lengths: tuple[int, int] = (8, 48),
    seed: int = 0,
    compress: bool = True,
    dtype: str = "float32",
    workers: int = 1,
) -> dict:
    """Write a synthetic store under `save_path` and return what tests need to know about it.

    Args:
        save_path (`Path`): the store folder (created).
        models (*optional*): `ModelSpec`s; defaults to a 12x12 and a 3x2 model.
        n_prompts (`int`, *optional*, defaults to 0): random prompts added to every model.
        special (`bool`, *optional*, defaults to `True`): add :func:`special_prompts`.
        lengths (`tuple[int, int]`, *optional*): token-count range of the random prompts.
        seed (`int`, *optional*, defaults to 0): the store is deterministic given the seed.
        compress (`bool`, *optional*, defaults to `True`): `np.savez_compressed` or `np.savez`.
        dtype (`str`, *optional*, defaults to ``"float32"``): the patterns' stored dtype
            (``"float16"`` halves a bench store's size; the viewer reads float32 either way).
        workers (`int`, *optional*, defaults to 1): above 1, each prompt draws from its own
            seeded generator (the same store for any number of workers, another than with 1)
            and that many processes write them.

    Returns:
        `dict`: ``save_path``, ``hashes`` (prompt id -> hash), ``induction_heads``
        (model -> (layer, head)), ``xss_hash`` when `special`.
    """
    save = Path(save_path)
    save.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    prompts = (special_prompts(rng) if special else []) + random_prompts(rng, n_prompts, lengths)
    for spec in models:
        rows = write_prompts(save, rng, spec, prompts, (compress, dtype), workers)
        (save / spec.name / MODEL_CFG_NAME).write_text(json.dumps(model_cfg(spec)))
        write_jsonl(save / spec.name / PROMPTS_INDEX, sorted(rows, key=lambda r: r["hash"]))
    cfgs = sorted((model_cfg(s) for s in models), key=lambda c: c["model_name"])
    write_jsonl(save / MODELS_INDEX, cfgs)
    info = {
        "save_path": save,
        "hashes": {m["id"]: prompt_hash(t) for t, m in prompts},
        "induction_heads": {s.name: s.induction_head for s in models},
    }
    if special:
        info["xss_hash"] = prompt_hash(XSS_TEXT)
    return info


if __name__ == "__main__":  # python -m lens_cache.synthetic OUT [N_PROMPTS]: a bench store
    import os
    import sys

    out = Path(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    write_store(
        out,
        models=[BENCH_MODEL],
        n_prompts=n,
        special=False,
        compress=False,
        dtype="float16",
        workers=os.cpu_count() or 1,
    )
    print(out)
