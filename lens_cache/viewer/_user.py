"""User metrics (`lens_cache.user_metrics`) and pattern-lens figures in the viewer data.

Present only when there is something to show, so a store without them builds the same bytes.

``prompt.js`` gains ``user``::

    {"metrics": [{"name": str, "kind": "scalar" | "matrix"}, ...],   # sorted by name
     "scalars": {name: [per stored layer [per head float | null]]},  # full float64 precision
     "matrices": {name: f4 array [stored layers, heads, r, c]}}      # pooled, see MATRIX_SIZE

and ``figures``: ``{"dir": the prompt's folder relative to the store's root, "heads":
{"<layer>/<head>": [file names]}}``, the files pattern-lens's ``figures_main`` wrote into
``<prompt folder>/L<layer>/H<head>/`` (any other name is not listed).

A model's entry in ``lens_index.js`` gains ``user``: ``{"avg": {name: [n_layers][n_heads]}}``,
each scalar metric averaged over the prompts that store it (NaN-skipping), and the index
``user_metrics``: every metric any model stores, ``[{"name", "kind"}]``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from lens_cache.user_metrics import registered_metrics

# pattern-lens names figures `<function>.<fmt>` or `<function>.<figure>.<fmt>`, and writes
# `<function>.error.txt` when a function failed on the head
FIGURE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\.(png|svg|svgz|txt)$")
FIGURE_DIR_RE = re.compile(r"^L(\d{1,4})$")
HEAD_DIR_RE = re.compile(r"^H(\d{1,4})$")


def signatures() -> list[str]:
    """What a stamp records of the registered metrics (empty when none)."""
    return [m.signature() for m in registered_metrics()]


def prompt_part(metrics, per_layer: list[dict], encode) -> dict:
    """The ``user`` object of ``prompt.js`` from each stored layer's `compute_layer` output."""
    scalars, matrices = {}, {}
    for m in metrics:
        if m.kind == "scalar":
            scalars[m.name] = [_json_floats(layer[m.name]) for layer in per_layer]
        elif per_layer:
            matrices[m.name] = encode(np.stack([layer[m.name] for layer in per_layer]), "f4")
    return {
        "metrics": [{"name": m.name, "kind": m.kind} for m in metrics],
        "scalars": scalars,
        "matrices": matrices,
    }


def _json_floats(values: np.ndarray) -> list:
    arr = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(arr), arr, None).tolist()


def stamp_part(user: dict) -> dict:
    """What the index needs of a prompt's ``user`` object: the metric list and the scalars."""
    return {"metrics": user["metrics"], "scalars": user["scalars"]}


def model_part(cfg: dict, stamps: list[dict], average) -> dict | None:
    """``{"avg": {name: [L][H]}}`` over the prompts that store user scalars (`average`:
    viewer.average_metrics), or None when none does."""
    parts = [s for s in stamps if s.get("user")]
    if not parts:
        return None
    avg, _ = average(cfg, [(s["user"]["scalars"], s["layers"]) for s in parts])
    return {"avg": avg}


def index_list(stamps) -> list[dict]:
    """Every metric the stamps store, by name: the index's ``user_metrics``."""
    found = {m["name"]: m for s in stamps if s.get("user") for m in s["user"]["metrics"]}
    return [found[name] for name in sorted(found)]


# ---------------------------------------------------------------- pattern-lens figures


def figure_sig(prompt_dir: Path, present: set[str]) -> dict | None:
    """``{"<layer>/<head>": {name: [size, mtime_ns]}}`` of the figures pattern-lens wrote into
    the prompt's folder, or None when it holds no ``L<layer>`` folder (the usual case: then
    nothing more is read). Symlinks are not followed: files are untrusted."""
    layers = sorted(n for n in present if FIGURE_DIR_RE.match(n))
    found = {}
    for layer_dir in layers:
        for head_dir, names in _listing(prompt_dir / layer_dir, HEAD_DIR_RE):
            files = {}
            for name in sorted(n for n in names if FIGURE_RE.match(n)):
                st = os.lstat(prompt_dir / layer_dir / head_dir / name)
                if not os.path.islink(prompt_dir / layer_dir / head_dir / name):
                    files[name] = [st.st_size, st.st_mtime_ns]
            if files:
                found[f"{layer_dir[1:]}/{head_dir[1:]}"] = files
    return found or None


def _listing(folder: Path, pattern: re.Pattern):
    """``(name, [entries])`` of the real (not symlinked) subfolders of `folder` matching
    `pattern`, sorted."""
    if folder.is_symlink() or not folder.is_dir():
        return []
    out = []
    for name in sorted(os.listdir(folder)):
        sub = folder / name
        if pattern.match(name) and not sub.is_symlink() and sub.is_dir():
            out.append((name, os.listdir(sub)))
    return out


def figures_part(save: Path, prompt_dir: Path, sig: dict | None) -> dict | None:
    """The ``figures`` object of ``prompt.js`` from :func:`figure_sig`'s result."""
    if not sig:
        return None
    rel = Path(os.path.relpath(prompt_dir, save)).as_posix()
    return {"dir": rel, "heads": {head: sorted(files) for head, files in sig.items()}}
