"""The viewer's manifest: what every prompt's viewer data was built from, in one file, so that
a rebuild with nothing changed reads it instead of every prompt's `stamp.json` and `prompt.js`.

``viewer_data/manifest.npz`` (uncompressed, written atomically by each build that changed
something) holds ``manifest`` (JSON as bytes: format, thumbnail size, and per model and prompt
hash the prompt's stamp, less its per-head metrics, plus its home-table summary) and
``metrics_<i>`` per model: float64 ``[prompts, metrics, n_layers, n_heads]``, the per-head
metrics (NaN where not defined or the layer is not stored), rows in the manifest's prompt
order. A prompt's entry is used when its source files still have the recorded sizes and
mtimes and its viewer files are all there (one stat per source file, one listing of its
folder); otherwise it is rebuilt, as before. Every build rewrites the manifest from what it
kept, built and pruned, so removing, pruning or re-exporting prompts updates it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from lens_cache import formats
from lens_cache.store import write_npz

MANIFEST_NAME = "manifest.npz"
STAMP_ONLY = ("metrics", "metrics_array", "summary", "bytes_written")  # not in an entry


class Manifest:
    """The manifest of `data_root` as read (empty when missing, damaged or of another format)."""

    def __init__(self, data_root: Path, version: dict):
        self.path = data_root / MANIFEST_NAME
        self.version = version  # {"format": ..., "thumb_size": ...} this code builds
        self.entries: dict[tuple[str, str], dict] = {}
        try:
            self._read()
        except (OSError, ValueError, KeyError, IndexError, TypeError, formats.BadZipFile):
            self.entries = {}  # a missing or damaged manifest: every stamp is checked as before

    def _read(self) -> None:
        """Only members stored uncompressed are read (as written): their sizes are bounded by
        the file's, whatever a damaged header claims."""
        raw = formats.read_stored_npz_member(self.path, "manifest", (None,), (np.dtype(np.uint8),))
        if raw is None:
            return
        head = json.loads(raw.tobytes())
        if {k: head.get(k) for k in self.version} != self.version:
            return
        for i, (model, prompts) in enumerate(head["models"].items()):
            metrics = formats.stored_npz_member(self.path, f"metrics_{i}")
            if metrics is None:
                return  # not as this code writes it: rebuilt
            for row, (hash_, entry) in enumerate(prompts.items()):
                self.entries[model, hash_] = {**entry, "metrics_array": metrics[row]}

    def fresh(self, model: str, hash_: str, source: dict, out: Path) -> dict | None:
        """The recorded stamp (with `metrics_array` and `summary`) when the prompt's sources
        still match `source` and every viewer file it lists is in `out`; else None."""
        entry = self.entries.get((model, hash_))
        if entry is None or entry["source"] != source:
            return None
        try:
            present = set(os.listdir(out))
        except OSError:
            return None
        return entry if present.issuperset([*entry["files"], "stamp.json"]) else None

    def gave_all(self, stamps: dict) -> bool:
        """Whether every stamp of this build came from the manifest, and only those: else it
        is rewritten (a prompt built here, or by an export's writers since, or removed)."""
        return set(self.entries) == set(stamps) and all(
            stamp is self.entries[key] for key, stamp in stamps.items()
        )


def write_manifest(
    path: Path, version: dict, models: list[tuple[str, list[str], list[dict]]]
) -> int:
    """Write the manifest of `models`: `(model name, prompt hashes, stamps)` with each stamp's
    `metrics_array` (`[metrics, n_layers, n_heads]`) and `summary` filled in. Returns its size."""
    head = {**version, "models": {}}
    arrays = {}
    for model, hashes, stamps in models:
        if not stamps:
            continue
        head["models"][model] = {
            h: {k: v for k, v in s.items() if k not in STAMP_ONLY} | {"summary": s["summary"]}
            for h, s in zip(hashes, stamps, strict=True)
        }
        arrays[f"metrics_{len(arrays)}"] = np.stack([s["metrics_array"] for s in stamps])
    blob = np.frombuffer(json.dumps(head, separators=(",", ":")).encode(), dtype=np.uint8)
    write_npz(path, {"manifest": blob, **arrays}, level=0)
    return path.stat().st_size
