"""Top examples per head: the strongest (prompt, query, key) cells across a model's prompts.

Each prompt keeps its own candidates, written with its head contributions
(``head_contributions.safetensors``, member ``blocks.{i}.attn.top_<by>``, float32
``[n_heads, k, 3]`` rows of ``(value, query, key)``, best first), so the model-level list is a
merge over whatever prompts the store holds now: it stays right under resume, ``--force``,
``cache prune``/``clear``, torchrun ranks, and anything else that adds or removes prompt folders.

Three rankings (``by``), each keeping the ``K = 32`` largest values per prompt and head:

- ``attention``: ``A[i, j]`` over causal cells with key ``j >= 1`` (position 0 is the usual
  attention sink, so it is left out);
- ``value_weighted``: ``A[i, j] * ||v_j W_O^h||`` over all causal cells (weighting by what the
  key writes already discounts a sink whose value vector is small);
- ``dla``: the head's direct logit attribution toward the actual next token at query ``i``
  (key ``-1``: no key); the last position (NaN) is left out.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

import numpy as np
from jaxtyping import Float

from lens_cache.layout import TOP_BY, heads_member, parse_heads_member, parse_hook_name
from lens_cache.layout import top_member as member_name

K = 32
BY = TOP_BY


def top_cells(
    scores: Float[np.ndarray, "n_heads query_pos key_pos"], k: int = K
) -> Float[np.ndarray, "n_heads k 3"]:
    """Per head, the `k` largest finite cells as ``(value, query, key)`` rows, best first
    (ties: the earlier cell first). Cells to leave out must be ``-inf`` or NaN."""
    n_heads, _, t = scores.shape
    flat = scores.reshape(n_heads, -1).astype(np.float64)
    flat[np.isnan(flat)] = -np.inf
    k = min(k, int(np.isfinite(flat[0]).sum()))  # the same mask for every head
    order = np.stack([_best(row, k) for row in flat]) if k else np.zeros((n_heads, 0), int)
    values = np.take_along_axis(flat, order, axis=1)
    return np.stack([values, order // t, order % t], axis=-1).astype(np.float32)


def _best(row: np.ndarray, k: int) -> np.ndarray:
    """The indices of the `k` largest values of `row`, largest first, ties by index: what a
    stable descending sort gives, found by a partition (a full sort of a layer's T^2 cells
    per head cost more than the forward pass)."""
    kth = np.partition(row, row.size - k)[row.size - k]  # the k-th largest value
    above = np.flatnonzero(row > kth)
    chosen = np.concatenate([above, np.flatnonzero(row == kth)[: k - above.size]])
    return chosen[np.lexsort((chosen, -row[chosen]))]


def pattern_candidates(
    pattern: Float[np.ndarray, "n_heads query_pos key_pos"],
    norms: Float[np.ndarray, "n_heads key_pos"] | None,
) -> dict[str, np.ndarray]:
    """``{"attention": ..., "value_weighted": ...}`` candidates of one layer's pattern."""
    a = np.asarray(pattern, dtype=np.float32)
    t = a.shape[-1]
    causal = np.tril(np.ones((t, t), dtype=bool))
    keys_after_first = causal & (np.arange(t)[None, :] >= 1)
    out = {"attention": top_cells(np.where(keys_after_first, a, -np.inf))}
    if norms is not None:
        out["value_weighted"] = top_cells(np.where(causal, a * norms[:, None, :], -np.inf))
    return out


def dla_candidates(dla: Float[np.ndarray, "n_heads pos"]) -> np.ndarray:
    """DLA candidates: ``(value, query, -1)`` rows; NaN positions (the last) left out."""
    rows = top_cells(np.asarray(dla, dtype=np.float32)[:, :, None])  # query = flat index
    rows[:, :, 2] = -1  # no key
    return rows


def dla_members(contributions: dict) -> dict[str, np.ndarray]:
    """The DLA candidates of every layer in a prompt's contributions, by member name."""
    found = {}
    for name, dla in contributions.items():
        parsed = parse_heads_member(name)
        if parsed and parsed[1] == "dla":
            found[member_name(parsed[0], "dla")] = dla_candidates(_np(dla))
    return found


def watch(patterns, contributions: dict, found: dict) -> Iterator[tuple[str, np.ndarray]]:
    """Pass `patterns` (``(name, [1, H, T, T])`` pairs) through unchanged,
    adding each layer's attention and value-weighted candidates to `found` on the way."""
    for name, array in patterns:
        _, layer = parse_hook_name(name)
        norms = contributions.get(heads_member(layer, "value_norms"))
        norms = None if norms is None else _np(norms)
        for by, rows in pattern_candidates(array[0], norms).items():
            found[member_name(layer, by)] = rows
        yield name, array


def _np(tensor) -> np.ndarray:
    return tensor.numpy() if hasattr(tensor, "numpy") else np.asarray(tensor)


def merge(per_prompt: Iterator[tuple[str, np.ndarray]], k: int = K) -> list[dict]:
    """The `k` best rows over every prompt's candidates of one head, best first, as dicts
    ``{"hash", "query", "key", "value"}`` (ties: by hash, then query, then key)."""
    rows = ((-float(v), h, int(q), int(key)) for h, cells in per_prompt for v, q, key in cells)
    best = heapq.nsmallest(k, rows)
    return [{"hash": h, "query": q, "key": key, "value": -v} for v, h, q, key in best]
