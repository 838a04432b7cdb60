"""Per-head attention metrics for one prompt: one implementation for the export (kind
``head_metrics``, computed from the patterns in memory) and the viewer
(`lens_cache.viewer.metrics`).

Every function takes one prompt's patterns as ``Float[np.ndarray, "n_heads query_pos key_pos"]``
(causal, rows summing to 1, as stored in ``activations.npz`` after dropping the batch axis) and
returns ``Float[np.ndarray, " n_heads"]`` in float64. Elementwise work stays in the input's
float32 (a 1,024-token layer is 9 x 1M values; a float64 copy would double the memory) and every
sum and mean accumulates in float64, so rankings do not depend on float32 rounding.

Pure numpy. Tokens may be given as ids or as strings: only equality between them is used.

Labels are never absolute thresholds: a head is labelled only when its score clears the score
that uniform attention over the causal prefix would get on the same prompt (see
:func:`baseline_metrics` and :func:`label_heads`). A naive absolute threshold labels most heads
"first-token" on real models, because early rows have few keys to choose from.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence

import numpy as np

#: Metric names in the order the viewer shows them.
METRIC_NAMES = ("entropy", "entropy_norm", "first", "prev", "diag", "dup", "induction", "max")

#: Metrics that are "scores" in [0, 1] where higher means "does this more".
SCORE_NAMES = ("first", "prev", "diag", "dup", "induction", "max")

#: Label given to a head whose score clears its baseline; see :func:`label_heads`.
LABELS = {
    "first": "first-token",
    "prev": "previous-token",
    "diag": "self",
    "dup": "duplicate-token",
    "induction": "induction",
}


def _as_patterns(patterns: np.ndarray) -> np.ndarray:
    """Return `patterns` as float32/float64 ``[n_heads, T, T]``; a clear error on bad shapes."""
    arr = np.asarray(patterns)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]  # accept the stored [1, n_heads, T, T] layout as well
    if arr.ndim != 3 or arr.shape[1] != arr.shape[2]:
        raise ValueError(
            f"patterns must have shape [n_heads, T, T], got {tuple(np.shape(patterns))}"
        )
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float32)  # float16 / bfloat16-as-float32 / ints
    return arr


def _row_entropy(a: np.ndarray) -> np.ndarray:
    """``[n_heads, T]`` entropy of every row in nats (float64), with 0 log 0 = 0."""
    logs = np.zeros_like(a)
    np.log(a, out=logs, where=a > 0)
    return -np.einsum("hij,hij->hi", a, logs, dtype=np.float64)


def _entropy_from_rows(rows: np.ndarray, normalize: bool) -> np.ndarray:
    if not normalize:
        return rows.mean(axis=-1)
    t = rows.shape[-1]
    if t < 2:
        return np.full(rows.shape[0], np.nan)
    return (rows[:, 1:] / np.log(np.arange(2, t + 1))).mean(axis=-1)


def entropy(patterns: np.ndarray, *, normalize: bool = False) -> np.ndarray:
    """Mean over query rows of each row's entropy, in nats.

    Row ``i`` can attend to ``i + 1`` keys, so its entropy is at most ``log(i + 1)``. With
    `normalize` each row's entropy is divided by that maximum, giving a value in [0, 1] that
    is comparable across prompt lengths (1 = uniform over the prefix); row 0 (one key, entropy
    always 0) is then left out.

    Args:
        patterns (`np.ndarray`): ``[n_heads, T, T]`` attention patterns.
        normalize (`bool`, *optional*, defaults to `False`): divide by ``log(i + 1)``.

    Returns:
        `np.ndarray`: ``[n_heads]`` float64; NaN for a normalised 1-token prompt.
    """
    return _entropy_from_rows(_row_entropy(_as_patterns(patterns)), normalize)


def first_token(patterns: np.ndarray) -> np.ndarray:
    """Mean over query rows of the attention paid to position 0 (usually BOS).

    Row 0 always scores 1 (it can only see itself), which the baseline accounts for.
    """
    return _as_patterns(patterns)[:, :, 0].mean(axis=-1, dtype=np.float64)


def previous_token(patterns: np.ndarray) -> np.ndarray:
    """Mean of ``A[i, i - 1]`` over query rows ``i >= 1``; NaN for a 1-token prompt."""
    a = _as_patterns(patterns)
    if a.shape[-1] < 2:
        return np.full(a.shape[0], np.nan)
    return np.diagonal(a, offset=-1, axis1=1, axis2=2).mean(axis=-1, dtype=np.float64)


def diagonal(patterns: np.ndarray) -> np.ndarray:
    """Mean of ``A[i, i]`` (attention to the query's own position) over all rows."""
    return np.diagonal(_as_patterns(patterns), axis1=1, axis2=2).mean(axis=-1, dtype=np.float64)


def max_attention(patterns: np.ndarray) -> np.ndarray:
    """Mean over query rows of the row maximum: how peaked the head is, whatever it attends to."""
    return _as_patterns(patterns).max(axis=-1).mean(axis=-1, dtype=np.float64)


def induction_targets(tokens: Sequence) -> np.ndarray:
    """Boolean ``[T, T]`` mask of induction targets.

    ``mask[i, j + 1]`` is set when ``tokens[j] == tokens[i]`` for some ``j < i`` and
    ``j + 1 < i``: an induction head at query ``i`` looks back to an earlier occurrence of the
    current token and attends to the token that followed it. ``j + 1 == i`` (the same token
    twice in a row) is skipped, because that target is the query itself and would reward
    self-attention. This is where the viewer's ``induction`` differs from the detector of
    the same name (`lens_cache.detectors.induction_target`, TransformerLens's target), which
    keeps that cell: the two scores agree on prompts without a token repeated twice in a row.
    """
    seen: dict = {}
    t = len(tokens)
    mask = np.zeros((t, t), dtype=bool)
    for i, tok in enumerate(tokens):
        key = tok.item() if isinstance(tok, np.generic) else tok
        earlier = seen.setdefault(key, [])
        targets = [j + 1 for j in earlier if j + 1 < i]
        mask[i, targets] = True
        earlier.append(i)
    return mask


def duplicate_targets(tokens: Sequence) -> np.ndarray:
    """Boolean ``[T, T]`` mask: ``mask[i, j]`` when ``j < i`` holds the same token as ``i``."""
    codes: dict = {}
    ids = np.array(
        [
            codes.setdefault(t.item() if isinstance(t, np.generic) else t, len(codes))
            for t in tokens
        ],
        dtype=np.int64,
    )
    return np.tril(ids[:, None] == ids[None, :], k=-1)


def duplicate_token(patterns: np.ndarray, tokens: Sequence) -> np.ndarray:
    """Duplicate-token score: attention from each query to earlier occurrences of its token.

    For every query ``i`` whose token appeared before, sum the attention to all earlier
    positions holding the same token, then average over those queries.

    Returns:
        `np.ndarray`: ``[n_heads]``; all NaN when no token repeats.
    """
    a = _as_patterns(patterns)
    _check_tokens(a, tokens)
    return _mean_over_target_rows(a, _target_cells(duplicate_targets, _hashable(tokens)))


def induction(patterns: np.ndarray, tokens: Sequence) -> np.ndarray:
    """Induction score: attention from each query to the token after an earlier occurrence of it.

    For every query ``i`` whose token appeared before (see :func:`induction_targets`), sum the
    attention to all such targets, then average over those queries. On a prompt made of a
    random span repeated twice this is the usual score of TransformerLens tutorials (mean
    attention to ``i - span + 1`` over the second copy).

    Args:
        patterns (`np.ndarray`): ``[n_heads, T, T]`` attention patterns.
        tokens (`Sequence`): the ``T`` tokens of the prompt, ids or strings.

    Returns:
        `np.ndarray`: ``[n_heads]``; all NaN when no token repeats (no query qualifies).
    """
    a = _as_patterns(patterns)
    _check_tokens(a, tokens)
    return _mean_over_target_rows(a, _target_cells(induction_targets, _hashable(tokens)))


def _hashable(tokens: Sequence) -> tuple:
    return tuple(t.item() if isinstance(t, np.generic) else t for t in tokens)


@functools.lru_cache(maxsize=32)
def _target_cells(targets, tokens: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The cells of ``targets(tokens)`` (row-major) and where each row's run starts: a
    prompt's layers share them, and making them was a third of a layer's metrics."""
    qi, ki = np.nonzero(targets(tokens))  # row-major: qi is sorted
    _, starts = np.unique(qi, return_index=True)
    for cells in (qi, ki, starts):
        cells.flags.writeable = False  # shared by every caller of the cache
    return qi, ki, starts


def _mean_over_target_rows(a: np.ndarray, cells: tuple) -> np.ndarray:
    """Per head: the attention each row puts on its target cells, averaged over the rows that
    have any (float64); NaN when no row has one."""
    qi, ki, starts = cells
    if qi.size == 0:
        return np.full(a.shape[0], np.nan)
    per_row = np.add.reduceat(a[:, qi, ki].astype(np.float64), starts, axis=1)
    return per_row.mean(axis=-1)


def _check_tokens(a: np.ndarray, tokens: Sequence) -> None:
    if len(tokens) != a.shape[-1]:
        raise ValueError(
            f"got {len(tokens)} tokens for patterns over {a.shape[-1]} positions; pass the "
            "prompt's stored tokens (BOS included when the model prepends one)"
        )


def head_metrics(patterns: np.ndarray, tokens: Sequence) -> dict[str, np.ndarray]:
    """All metrics of :data:`METRIC_NAMES` for one layer, each ``[n_heads]`` float64."""
    a = _as_patterns(patterns)
    rows = _row_entropy(a)  # the costliest step: shared by both entropies
    return {
        "entropy": _entropy_from_rows(rows, False),
        "entropy_norm": _entropy_from_rows(rows, True),
        "first": first_token(a),
        "prev": previous_token(a),
        "diag": diagonal(a),
        "dup": duplicate_token(a, tokens),
        "induction": induction(a, tokens),
        "max": max_attention(a),
    }


def uniform_patterns(n_tokens: int, n_heads: int = 1) -> np.ndarray:
    """Uniform attention over the causal prefix, ``[n_heads, T, T]``: the baseline head."""
    rows = np.tril(np.ones((n_tokens, n_tokens))) / np.arange(1, n_tokens + 1)[:, None]
    return np.broadcast_to(rows, (n_heads, n_tokens, n_tokens))


def baseline_metrics(tokens: Sequence) -> dict[str, float]:
    """Each metric for uniform causal attention on this prompt (one float per metric).

    A score means something only above this: on a 5-token prompt uniform attention already
    gives first-token 0.46, which a fixed 0.3 threshold would call a first-token head.
    """
    base = head_metrics(uniform_patterns(len(tokens)), tokens)
    return {name: float(values[0]) for name, values in base.items()}


def label_heads(
    metrics: dict[str, np.ndarray], baseline: dict[str, float], *, margin: float = 0.5
) -> list[list[str]]:
    """Labels per head from :data:`SCORE_NAMES` scores relative to `baseline`.

    A head gets ``LABELS[name]`` when its score covers at least `margin` of the gap between the
    uniform baseline and a perfect 1: ``(score - base) / (1 - base) >= margin``. Works on one
    prompt's metrics or on averages across prompts (pass averaged baselines too).

    Returns:
        `list[list[str]]`: one list of labels per head, in head order.
    """
    n_heads = len(next(iter(metrics.values())))
    labels: list[list[str]] = [[] for _ in range(n_heads)]
    for name, label in LABELS.items():
        base = baseline.get(name)
        if base is None or not np.isfinite(base) or base >= 1:
            continue
        excess = (np.asarray(metrics[name], dtype=np.float64) - base) / (1.0 - base)
        for h in np.flatnonzero(np.nan_to_num(excess, nan=-1.0) >= margin):
            labels[h].append(label)
    return labels


def metric_matrix(patterns: np.ndarray, tokens: Sequence) -> np.ndarray:
    """:func:`head_metrics` of one layer as ``[n_heads, len(METRIC_NAMES)]`` float64, the
    metrics in :data:`METRIC_NAMES` order: one row per head, as the kind ``head_metrics``
    stores it."""
    metrics = head_metrics(patterns, tokens)
    return np.stack([metrics[name] for name in METRIC_NAMES], axis=-1)


def watch(patterns, tokens: Sequence, found: dict) -> Iterator[tuple[str, np.ndarray]]:
    """Pass `patterns` (``(name, [1, H, T, T])`` pairs, as an export writes them) through
    unchanged, putting each one's :func:`metric_matrix` in ``found[name]`` on the way: the
    metrics are taken from the pattern in hand, whether or not it is then written."""
    for name, array in patterns:
        found[name] = metric_matrix(array, tokens)
        yield name, array
