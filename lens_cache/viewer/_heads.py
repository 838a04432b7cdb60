"""The viewer's data about what each head moves (export kind `head_contributions`).

``prompt.js`` gains ``heads`` (``null`` without the kind)::

    {"layers": [...],                 layers whose contributions are stored
     "value_norms": f4 [L, H, T],     ||v_j W_O^h|| per key position j (the stored float32)
     "dla": f4 [L, H, T],             direct logit attribution per query position (NaN: last)
     "metrics": {name: [layer][head]},  the attention metrics of the value-weighted pattern,
                                      per stored *pattern* layer (``prompt.js``'s ``layers``)
     "dla_mean": [layer][head],       mean DLA over positions, per ``heads.layers`` layer
     "thumb": u1 [layers, H, S(S+1)/2] | null}   value-weighted thumbnails, as ``thumb``

The value-weighted pattern is ``A[i, j] * value_norms[h, j]`` (Kobayashi et al. 2020); the page
computes it from the stored attention and the norms, so nothing ``[T, T]`` is written twice.
Its metrics (and thumbnails) are taken on each row divided by its sum: the share of what the
head moves into position ``i`` that comes from each key, which sums to 1 like attention does.

Per model, ``<viewer_data>/<slug>/top/L<layer>.js`` calls ``LENS.top("<slug>/<layer>", obj)``::

    {"layer": l, "by": {"attention" | "value_weighted" | "dla": [head][rank] =
        [prompt hash, query, key, value, segments]}}

with ``segments`` ``[[start, [token, ...]], ...]``: the tokens around the key and the query
(``CONTEXT`` before, 2 after), so the page shows a snippet without loading the prompt. The
rows are ``store.top_examples`` merged over every prompt the store holds (the same ties).
"""

from __future__ import annotations

import json
from hashlib import md5
from pathlib import Path

import numpy as np

from lens_cache import top_examples as T
from lens_cache.errors import ActivationsMissingError
from lens_cache.layout import HEADS_NAME
from lens_cache.reader import Store
from lens_cache.store import write_bytes
from lens_cache.viewer import metrics as M

CONTEXT = 6  # tokens shown before the key and before the query in a top-example snippet
TOP_DIR = "top"  # <viewer_data>/<slug>/top/L<layer>.js
TOP_SOURCE = "source.json"  # top/source.json: what the top scripts were merged from


def read_contributions(store: Store, model: str, hash_: str) -> dict | None:
    """``{"layers", "value_norms": [L, H, T], "dla": [L, H, T]}`` of one prompt, or None."""
    try:
        return store.head_contributions(model, hash_)
    except ActivationsMissingError:  # a prompt built from memory (show_patterns) has no folder
        return None


def value_weighted_shares(pattern: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """``[H, T, T]``: ``A[i, j] * norms[h, j]``, each row divided by its sum (0 rows stay 0)."""
    weighted = pattern * norms[:, None, :].astype(np.float32)
    sums = weighted.sum(axis=-1, keepdims=True, dtype=np.float64).astype(np.float32)
    return np.divide(weighted, sums, out=np.zeros_like(weighted), where=sums > 0)


class PromptHeads:
    """Collects one prompt's value-weighted metrics and thumbnails while the viewer build reads
    its pattern layers one at a time, then makes the ``heads`` payload."""

    def __init__(self, contributions: dict):
        self.c = contributions
        self.metrics: list[dict] = []
        self.thumbs: list[np.ndarray] = []

    def add_layer(self, layer: int, pattern: np.ndarray, tokens, thumbnail) -> None:
        """One stored pattern layer; `thumbnail` (viewer.thumbnail) or None for short prompts."""
        if layer in self.c["layers"]:
            norms = self.c["value_norms"][self.c["layers"].index(layer)]
        else:  # no norms for this layer: blank thumbnails keep the others in place
            norms = np.zeros(pattern.shape[::2], dtype=np.float32)
        shares = value_weighted_shares(pattern, norms)
        metrics = M.head_metrics(shares, tokens)
        if layer not in self.c["layers"]:
            metrics = {n: np.full(pattern.shape[0], np.nan) for n in metrics}
        self.metrics.append(metrics)
        if thumbnail is not None:
            self.thumbs.append(thumbnail(shares / _head_max(shares)))

    def without_patterns(self, layers: list[int], n_heads: int) -> None:
        """A prompt stored without patterns: no value-weighted metrics for its `layers`."""
        nan = np.full(n_heads, np.nan)
        self.metrics = [{n: nan for n in M.METRIC_NAMES} for _ in layers]

    def payload(self, encode, to_json) -> dict:
        """The ``heads`` object of ``prompt.js``; `to_json` is viewer.nan_to_none."""
        with np.errstate(invalid="ignore"):
            dla_mean = np.nanmean(self.c["dla"].astype(np.float64), axis=-1)
        return {
            "layers": self.c["layers"],
            "value_norms": encode(self.c["value_norms"], "f4"),
            "dla": encode(self.c["dla"], "f4"),
            "metrics": {n: to_json([m[n] for m in self.metrics]) for n in M.METRIC_NAMES},
            "dla_mean": to_json(dla_mean),
            "thumb": encode(np.stack(self.thumbs), "u1") if self.thumbs else None,
        }


def _head_max(shares: np.ndarray) -> np.ndarray:
    """Per head, the largest share (at least a tiny positive number), ``[H, 1, 1]``."""
    return np.maximum(shares.max(axis=(1, 2), keepdims=True), np.float32(1e-30))


def stamp_part(payload: dict | None) -> dict | None:
    """What the index needs of a prompt's ``heads`` (kept in its stamp)."""
    if payload is None:
        return None
    return {k: payload[k] for k in ("layers", "metrics", "dla_mean")}


def model_part(cfg: dict, stamps: list[dict], average) -> dict | None:
    """``{"avg": {metric: [L][H]}, "dla": [L][H]}``: the value-weighted metrics and the mean
    DLA averaged over the model's prompts (`average`: viewer.average_metrics, NaN-skipping),
    or None when no prompt stores head contributions."""
    parts = [s for s in stamps if s.get("heads")]
    if not parts:
        return None
    avg, _ = average(cfg, [(s["heads"]["metrics"], s["layers"]) for s in parts])
    dla, _ = average(cfg, [({"dla": s["heads"]["dla_mean"]}, s["heads"]["layers"]) for s in parts])
    return {"avg": avg, "dla": dla["dla"]}


# ---------------------------------------------------------------- top examples per model


def write_top(
    save: Path, out_dir: Path, cfg: dict, prompts: list[dict], stamps: list[dict], emit
) -> tuple[int, list]:
    """Write ``top/L<layer>.js`` of one model (see the module docstring); remove stale ones.
    `stamps` are the prompts' viewer stamps (their `source` holds each file's size and mtime);
    `emit(path, func, key, obj)` writes one data script and returns the bytes written.

    The merge reads every prompt's candidates, so it is skipped when the prompts and their
    head-contribution files are those it was last made from (``top/source.json``): an
    unchanged rebuild then does constant work per prompt here too.

    Returns:
        (bytes written, layers with top examples).
    """
    top_dir = out_dir / TOP_DIR
    made_from = _top_sources(prompts, stamps)
    layers = _unchanged_top(top_dir, made_from)
    if layers is not None:
        return 0, layers
    found = _read_candidates(Store(save), cfg["model_name"], prompts)
    written, layers = 0, sorted({layer for _, layer in found})
    tokens = {p["hash"]: [str(t) for t in p.get("tokens") or []] for p in prompts}
    for layer in layers:
        body = {"layer": layer, "by": {}}
        for by in T.BY:
            hashes, cells = found.get((by, layer), ([], None))
            if cells is not None:
                body["by"][by] = _merged(hashes, cells, tokens)
        key = f"{out_dir.name}/{layer}"
        written += emit(top_dir / f"L{layer}.js", "top", key, body)
    for old in top_dir.glob("L*.js"):
        if int(old.stem[1:]) not in layers:
            old.unlink()
    if layers:  # last: a merge interrupted before this is made again
        record = json.dumps({"source": made_from, "layers": layers}).encode()
        write_bytes(top_dir / TOP_SOURCE, record, stage="viewer")
    else:
        (top_dir / TOP_SOURCE).unlink(missing_ok=True)
    return written, layers


def _top_sources(prompts: list[dict], stamps: list[dict]) -> str:
    """A digest of what the merge reads: each prompt's hash, tokens and head-contribution
    file's size and mtime."""
    parts = [
        [p["hash"], p.get("tokens"), (s.get("source") or {}).get(HEADS_NAME)]
        for p, s in zip(prompts, stamps, strict=True)
    ]
    return md5(json.dumps(parts).encode()).hexdigest()


def _unchanged_top(top_dir: Path, made_from: str) -> list | None:
    """The layers of the top scripts in `top_dir` when they were made from `made_from` and are
    all there; else None."""
    try:
        record = json.loads((top_dir / TOP_SOURCE).read_bytes())
    except (OSError, ValueError):
        return None
    layers = record.get("layers") or []
    if record.get("source") != made_from:
        return None
    if not all((top_dir / f"L{layer}.js").is_file() for layer in layers):
        return None
    return layers


def _read_candidates(store: Store, model: str, prompts: list[dict]) -> dict:
    """``{(by, layer): ([hash per prompt], [P, H, K, 3])}`` over the prompts that store them."""
    per: dict[tuple[str, int], tuple[list, list]] = {}
    for record in prompts:  # sorted by hash: the merge's tie order
        for layer, by, cells in store.head_candidates(model, record["hash"]):
            hashes, arrays = per.setdefault((by, layer), ([], []))
            hashes.append(record["hash"])
            arrays.append(_padded(cells))
    return {key: (h, np.stack(a)) for key, (h, a) in per.items()}


def _padded(cells: np.ndarray) -> np.ndarray:
    """``[H, K, 3]``: a prompt with fewer than K cells gets rows of -inf that never win."""
    out = np.full((cells.shape[0], T.K, 3), -np.inf, dtype=np.float32)
    out[:, : cells.shape[1]] = cells
    return out


def _merged(hashes: list[str], cells: np.ndarray, tokens: dict) -> list[list]:
    """Per head, the K best rows over every prompt, best first (`top_examples.best_rows`, the
    merge `Store.top_examples` uses: the same ties)."""
    heads = []
    for head in range(cells.shape[1]):
        best = T.best_rows(hashes, cells[:, head])
        heads.append(
            [[h, q, key, v, _segments(tokens.get(h, []), q, key)] for h, q, key, v in best]
        )
    return heads


def _segments(tokens: list[str], query: int, key: int) -> list:
    """The runs of tokens around the key and the query: ``[[start, [tokens]], ...]``."""
    wanted = set()
    for at in (query, key):
        if at >= 0:
            wanted.update(range(max(0, at - CONTEXT), min(len(tokens), at + 3)))
    runs: list = []
    for i in sorted(wanted):
        if runs and runs[-1][0] + len(runs[-1][1]) == i:
            runs[-1][1].append(tokens[i])
        else:
            runs.append([i, [tokens[i]]])
    return runs
