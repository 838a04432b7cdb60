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

import functools
from collections.abc import Iterator

import numpy as np
from jaxtyping import Float, Int

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
    cells = np.arange(scores.shape[1] * t)
    return _top_rows(scores.reshape(n_heads, -1), cells // t, cells % t, k)


def _top_rows(
    values: Float[np.ndarray, "n_heads cells"],
    query: Int[np.ndarray, " cells"],
    key: Int[np.ndarray, " cells"],
    k: int,
) -> Float[np.ndarray, "n_heads k 3"]:
    """`top_cells` over a list of cells given in flat (row-major) order, each with its query
    and key: the cell order is the tie order."""
    values = np.asarray(values, dtype=np.float32)  # float32 values rank as they are stored
    if np.isnan(values).any():
        values = np.where(np.isnan(values), np.float32(-np.inf), values)
    n_heads = values.shape[0]
    k = min(k, int(np.isfinite(values[0]).sum()))  # the same mask for every head
    order = _best(values, k) if k else np.zeros((n_heads, 0), int)
    best = np.take_along_axis(values, order, axis=1)
    return np.stack([best, query[order], key[order]], axis=-1).astype(np.float32)


def _best(values: Float[np.ndarray, "n_heads cells"], k: int) -> Int[np.ndarray, "n_heads k"]:
    """Per head, the indices of the `k` largest values, largest first, ties by index: what a
    stable descending sort gives. Only the k-th largest value is found by selection (torch's
    topk, several times faster than `np.partition` here; a full sort of a layer's T^2 cells
    cost more than the forward pass); every cell at or above it is then ordered by value and
    index, and each head keeps its first `k`."""
    import torch  # not at import time: the reader merges candidates without torch

    writable = values if values.flags.writeable else values.copy()  # torch wants writable
    kth = torch.from_numpy(writable).topk(k, dim=1).values[:, -1].numpy()
    head, cell = np.nonzero(values >= kth[:, None])  # at least k per head; more on ties
    ordered = np.lexsort((cell, -values[head, cell], head))
    head, cell = head[ordered], cell[ordered]
    first = np.searchsorted(head, np.arange(values.shape[0]))
    return cell[first[:, None] + np.arange(k)]


@functools.lru_cache(maxsize=8)
def _causal_cells(t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The flat indices, queries and keys of the causal cells (key <= query) of a `[t, t]`
    pattern, in flat order."""
    query, key = np.tril_indices(t)
    return query * t + key, query, key


def pattern_candidates(
    pattern: Float[np.ndarray, "n_heads query_pos key_pos"],
    norms: Float[np.ndarray, "n_heads key_pos"] | None,
) -> dict[str, np.ndarray]:
    """``{"attention": ..., "value_weighted": ...}`` candidates of one layer's pattern.

    Only the causal cells are gathered (about half the pattern), once, in flat order, so
    nothing `[T, T]` is masked or copied whole."""
    n_heads, t, _ = pattern.shape
    flat, query, key = _causal_cells(t)
    causal = np.take(np.asarray(pattern).reshape(n_heads, -1), flat, axis=1).astype(np.float32)
    past_first = key >= 1
    out = {"attention": _top_rows(causal[:, past_first], query[past_first], key[past_first], K)}
    if norms is not None:
        weighted = causal * np.asarray(norms, dtype=np.float32)[:, key]
        out["value_weighted"] = _top_rows(weighted, query, key, K)
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
    ``{"hash", "query", "key", "value"}`` (ties as `best_rows`)."""
    hashes, cells = [], []
    for h, rows in per_prompt:
        hashes.append(h)
        cells.append(np.asarray(rows, dtype=np.float32).reshape(-1, 3))
    width = max((len(c) for c in cells), default=0)
    padded = np.full((len(cells), width, 3), -np.inf, dtype=np.float32)  # -inf rows never win
    for i, rows in enumerate(cells):
        padded[i, : len(rows)] = rows
    best = best_rows(hashes, padded, k)
    return [{"hash": h, "query": q, "key": key, "value": v} for h, q, key, v in best]


def best_rows(
    hashes: list[str], cells: np.ndarray, k: int = K
) -> list[tuple[str, int, int, float]]:
    """The `k` best of every prompt's candidate rows of one head, best first, as
    ``(hash, query, key, value)``: `cells` is ``[prompts, n, 3]`` (value, query, key), prompt
    `i` being `hashes[i]`; rows whose value is not finite are left out. Ties: by hash, then
    query, then key. One sort over every row (the viewer merges 10,000 prompts a head)."""
    if not hashes:
        return []
    rows = cells.reshape(-1, 3).astype(np.float64)
    prompt = np.repeat(np.arange(len(hashes)), cells.shape[1])
    keep = np.isfinite(rows[:, 0])
    rows, prompt = rows[keep], prompt[keep]
    rank = np.argsort(np.argsort(np.asarray(hashes)))  # each prompt's place in hash order
    order = np.lexsort((rows[:, 2], rows[:, 1], rank[prompt], -rows[:, 0]))[:k]
    return [(hashes[prompt[r]], int(rows[r, 1]), int(rows[r, 2]), float(rows[r, 0])) for r in order]
