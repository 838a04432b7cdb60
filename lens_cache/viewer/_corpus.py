"""Each head described across a model's prompts, for the head page (``#/top/<model>/<layer>/
<head>``): per layer, ``<slug>/dist/L<layer>.js`` calls ``LENS.dist(key, obj)`` with

    {"layer": int, "n": prompts,
     "scores": {score: [per head {"bins": [lo, hi], "counts": [...], "top": [[hash, value]...],
                                  "quantiles": [{"lo", "hi", "samples": [[hash, value]...]}]}]}}

A score is one per-prompt number of the head: each attention metric (`M.METRIC_NAMES`, from
the prompts' patterns or their stored ``head_metrics``), each value-weighted metric
(``vw_<metric>``, with head contributions and patterns) and ``dla`` (the mean direct logit
attribution over the prompt's positions). Over the prompts where the score is defined: a
histogram of ``BINS`` equal bins between its smallest and largest value, the ``TOP`` highest,
and ``SAMPLES`` examples from each of ``INTERVALS`` quantile intervals (equal numbers of
prompts, like SAEDashboard's), taken at evenly spaced ranks inside the interval. Prompts are
ordered by value then hash, so the same store gives the same samples, whatever order its
prompts were exported or merged in.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lens_cache.viewer import metrics as M
from lens_cache.viewer._encode import nan_to_none

DIST_DIR = "dist"  # <viewer_data>/<slug>/dist/L<layer>.js
BINS, TOP, INTERVALS, SAMPLES = 20, 10, 5, 5


def scores_of(stamps: list[dict], every: np.ndarray, n_layers: int, n_heads: int) -> dict:
    """``{score: [prompts, layers, heads] float64}``: `every` is the stamps' attention metrics
    ``[prompts, metrics, layers, heads]``; the others are read from each stamp's ``heads``."""
    out = {name: every[:, k] for k, name in enumerate(M.METRIC_NAMES)}
    shape = (len(stamps), n_layers, n_heads)
    weighted = {name: np.full(shape, np.nan) for name in M.METRIC_NAMES}
    dla = np.full(shape, np.nan)
    for p, stamp in enumerate(stamps):
        heads = stamp.get("heads")
        if not heads:
            continue
        for name in M.METRIC_NAMES:
            _place(weighted[name][p], heads["metrics"][name], stamp["layers"], n_heads)
        _place(dla[p], heads["dla_mean"], heads["layers"], n_heads)
    if any(s.get("heads") for s in stamps):
        out.update({f"vw_{name}": weighted[name] for name in M.METRIC_NAMES}, dla=dla)
    return out


def _place(target: np.ndarray, per_layer, layers: list[int], n_heads: int) -> None:
    values = np.array(per_layer, dtype=np.float64).reshape(-1, n_heads)
    if len(values) == len(layers):
        target[layers] = values


def write_dist(out_dir: Path, hashes: list[str], scores: dict, emit) -> tuple[int, list[int]]:
    """Write ``dist/L<layer>.js`` of one model for every layer where a score is defined;
    remove stale ones. `emit(path, func, key, obj)` writes one data script (unchanged bytes
    are not rewritten) and returns the bytes written.

    Returns:
        (bytes written, layers with a distribution).
    """
    dist_dir, written, layers = out_dir / DIST_DIR, 0, []
    order = np.array(hashes, dtype=object)
    first = next(iter(scores.values())) if scores else np.zeros((0, 0, 0))
    for layer in range(first.shape[1] if first.ndim == 3 else 0):
        body = {"layer": layer, "n": len(hashes), "scores": {}}
        for name, values in scores.items():
            heads = [head_summary(values[:, layer, h], order) for h in range(values.shape[2])]
            if any(heads):
                body["scores"][name] = heads
        if body["scores"]:
            layers.append(layer)
            written += emit(dist_dir / f"L{layer}.js", "dist", f"{out_dir.name}/{layer}", body)
    for old in dist_dir.glob("L*.js"):
        if int(old.stem[1:]) not in layers:
            old.unlink()
    return written, layers


def head_summary(values: np.ndarray, hashes: np.ndarray) -> dict | None:
    """One head's histogram, top prompts and quantile samples of one score (None when it is
    defined on no prompt)."""
    ok = np.isfinite(values)
    if not ok.any():
        return None
    v, h = values[ok], hashes[ok]
    order = np.lexsort((h, v))  # by value, then hash: deterministic whatever the prompt order
    v, h = v[order], h[order]
    counts, edges = np.histogram(v, bins=BINS, range=(v[0], v[-1]) if v[-1] > v[0] else None)
    top = [_pair(h[i], v[i]) for i in _top_ranks(v)]
    return {
        "bins": nan_to_none([edges[0], edges[-1]]),
        "counts": counts.tolist(),
        "top": top,
        "quantiles": [_interval(v, h, lo, hi) for lo, hi in quantile_bounds(len(v))],
    }


def _top_ranks(v: np.ndarray) -> list[int]:
    """The ranks of the `TOP` highest values, highest first (ties: by hash, ascending)."""
    return np.lexsort((np.arange(len(v)), -v))[:TOP].tolist()  # rank ascends with the hash


def quantile_bounds(n: int) -> list[tuple[int, int]]:
    """The rank ranges ``[lo, hi)`` of the quantile intervals of `n` sorted values (empty ones
    left out when there are fewer values than intervals)."""
    cuts = [round(k * n / INTERVALS) for k in range(INTERVALS + 1)]
    return [(lo, hi) for lo, hi in zip(cuts, cuts[1:], strict=False) if hi > lo]


def sample_ranks(lo: int, hi: int) -> list[int]:
    """`SAMPLES` ranks evenly spaced inside ``[lo, hi)`` (all of them when there are fewer)."""
    size = hi - lo
    if size <= SAMPLES:
        return list(range(lo, hi))
    return [lo + int((j + 0.5) * size / SAMPLES) for j in range(SAMPLES)]


def _interval(v: np.ndarray, h: np.ndarray, lo: int, hi: int) -> dict:
    samples = [_pair(h[i], v[i]) for i in sample_ranks(lo, hi)]
    return {"lo": nan_to_none(v[lo]), "hi": nan_to_none(v[hi - 1]), "samples": samples}


def _pair(hash_: str, value: float) -> list:
    return [str(hash_), float(value)]
