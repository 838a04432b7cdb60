"""Head detectors: score every stored head against a target attention pattern.

A detector is a function ``tokens -> [T, T]`` target pattern (0/1, lower triangular). A head's
score on one prompt is TransformerLens's ``head_detector`` "mul" score: the share of the head's
attention that falls on the target cells,

    score = sum_ij A[i, j] * D[i, j] / sum_ij A[i, j]

(``sum A`` is ``T`` when nothing is excluded, since every row sums to 1). With `exclude_bos`
column 0 of ``A`` is zeroed first, with `exclude_current_token` its diagonal, in both sums, as
TransformerLens does. :func:`head_scores` averages the per-prompt scores over every stored
prompt of a model, as ``detect_head`` averages over a list of prompts.

The built-in targets are TransformerLens's, built the same way from token ids:

- ``previous_token``: ``D[i, i-1] = 1`` for ``i >= 1``;
- ``duplicate_token``: ``D[i, j] = 1`` for ``j < i`` with ``tokens[j] == tokens[i]``;
- ``induction``: the duplicate-token target shifted one key to the right,
  ``D[i, j+1] = 1`` for ``j < i`` with ``tokens[j] == tokens[i]`` (so ``j + 1 == i``, a token
  repeated twice in a row, targets the query itself, as in TransformerLens). The viewer's
  ``induction`` column (`lens_cache.viewer.metrics.induction_targets`) is not this target: it
  leaves that cell out, so that attending to oneself never counts as induction there.

Example:
    >>> store = lens_cache.open("store")
    >>> scores = lens_cache.head_scores(store, "gpt2", "induction")   # [n_layers, n_heads]
    >>> mine = lens_cache.head_scores(store, "gpt2", lambda ids: my_target(ids))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from jaxtyping import Bool, Float

from lens_cache.errors import DetectorError

Detector = Callable[[Sequence], np.ndarray]


def _same_token(tokens: Sequence) -> np.ndarray:
    ids = np.asarray([str(t) if isinstance(t, str) else int(t) for t in tokens], dtype=object)
    return ids[:, None] == ids[None, :]


def previous_token_target(tokens: Sequence) -> Bool[np.ndarray, "query_pos key_pos"]:
    """``D[i, i - 1] = 1`` for every ``i >= 1``."""
    return np.eye(len(tokens), k=-1, dtype=bool)


def duplicate_token_target(tokens: Sequence) -> Bool[np.ndarray, "query_pos key_pos"]:
    """``D[i, j] = 1`` for every earlier position ``j < i`` holding the same token."""
    return np.tril(_same_token(tokens), k=-1)


def induction_target(tokens: Sequence) -> Bool[np.ndarray, "query_pos key_pos"]:
    """``D[i, j + 1] = 1`` for every earlier ``j < i`` holding the query's token."""
    dup = duplicate_token_target(tokens)
    out = np.zeros_like(dup)
    out[:, 1:] = dup[:, :-1]
    return np.tril(out)


BUILTIN: dict[str, Detector] = {
    "previous_token": previous_token_target,
    "duplicate_token": duplicate_token_target,
    "induction": induction_target,
}


def mul_scores(
    patterns: Float[np.ndarray, "n_heads query_pos key_pos"],
    target: Float[np.ndarray, "query_pos key_pos"],
    *,
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
) -> Float[np.ndarray, " n_heads"]:
    """TransformerLens's "mul" score of every head of one layer on one prompt (float64)."""
    a = np.asarray(patterns, dtype=np.float64)
    if exclude_bos or exclude_current_token:
        a = a.copy()
        if exclude_bos:
            a[:, :, 0] = 0
        if exclude_current_token:
            a[:, np.arange(a.shape[-1]), np.arange(a.shape[-1])] = 0
    d = np.asarray(target, dtype=np.float64)
    return np.einsum("hij,ij->h", a, d) / a.sum(axis=(1, 2))


def resolve(detector) -> Detector:
    """A built-in name (TransformerLens's ``*_head`` names too) or a callable, as a callable."""
    if callable(detector):
        return detector
    name = str(detector).removesuffix("_head")
    if name not in BUILTIN:
        raise DetectorError(
            f"unknown detector {detector!r}: pass one of {', '.join(BUILTIN)} or a function "
            "tokens -> [T, T] target pattern"
        )
    return BUILTIN[name]


def target_for(detector: Detector, tokens: Sequence) -> np.ndarray:
    """The detector's target on these tokens, checked: ``[T, T]``, lower triangular."""
    t = len(tokens)
    target = np.asarray(detector(list(tokens)))
    if target.shape != (t, t):
        raise DetectorError(f"the detector returned shape {target.shape}, expected ({t}, {t})")
    if np.any(np.triu(target, k=1)):
        raise DetectorError(
            "the detector's target has cells above the diagonal (keys after the query)"
        )
    return target


def head_scores(
    store,
    model: str,
    detector,
    *,
    layers=None,
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
) -> Float[np.ndarray, "n_layers n_heads"]:
    """Score every stored head of a model on every stored prompt; the mean over prompts.

    Args:
        store (`Store` or path): a store (`lens_cache.open(...)`) or its path.
        model (`str`): the model's name in the store.
        detector (`str` or callable): ``"previous_token"``, ``"duplicate_token"``,
            ``"induction"`` (or TransformerLens's names with ``_head``), or a function taking
            the prompt's token ids (strings for stores without ids) and returning a ``[T, T]``
            0/1 lower-triangular target.
        layers (*optional*): layers to score (the reader's syntax); defaults to every stored one.
        exclude_bos, exclude_current_token (`bool`, *optional*, default `False`): as in
            ``transformer_lens.head_detector.detect_head``.

    Returns:
        `np.ndarray`: ``[n_layers, n_heads]`` float64 over all the model's layers; NaN for a
        layer no prompt stores. Prompts of one token are left out (``detect_head`` refuses them).

    Raises:
        DetectorError: an unknown name, or a target of the wrong shape.
    """
    from lens_cache.reader import Store, open_store

    store = store if isinstance(store, Store) else open_store(store)
    detect = resolve(detector)
    cfg = store.model_cfg(model)
    sums = np.zeros((int(cfg["n_layers"]), int(cfg["n_heads"])))
    counts = np.zeros(int(cfg["n_layers"]))
    for record in store.prompts(model):
        tokens = record.get("token_ids") or record["tokens"]
        if len(tokens) < 2:
            continue
        target = target_for(detect, tokens)
        chosen = store.stored_layers(model, record) if layers is None else layers
        pats = store.patterns(model, record, layers=chosen)
        for layer, pat in zip(_layer_ids(chosen, len(counts)), pats, strict=True):
            sums[layer] += mul_scores(
                pat, target, exclude_bos=exclude_bos, exclude_current_token=exclude_current_token
            )
            counts[layer] += 1
    with np.errstate(invalid="ignore"):
        return sums / counts[:, None]


def _layer_ids(layers, n_layers: int) -> list[int]:
    layers = [layers] if isinstance(layers, int) else list(layers)
    return [int(i) % n_layers for i in layers]
