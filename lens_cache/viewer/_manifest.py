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
import struct
import zipfile
from pathlib import Path

import numpy as np

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
        except (OSError, ValueError, KeyError, struct.error, zipfile.BadZipFile):
            self.entries = {}  # a missing or damaged manifest: every stamp is checked as before

    def _read(self) -> None:
        with np.load(self.path) as z:
            head = json.loads(z["manifest"].tobytes())
            if {k: head.get(k) for k in self.version} != self.version:
                return
            for i, (model, prompts) in enumerate(head["models"].items()):
                metrics = stored_member(self.path, f"metrics_{i}")
                if metrics is None:
                    metrics = z[f"metrics_{i}"]
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


def stored_member(path: Path, name: str) -> np.ndarray | None:
    """The uncompressed array `name` of the npz at `path`, memory-mapped in place (read-only),
    or None when it is compressed: at 10,000 prompts the metrics are 180 MB, which a read into
    fresh memory takes over a second to copy and an unchanged rebuild only sums."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(f"{name}.npy")
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)  # the zip local file header; its name and extra field follow
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        read_header = {
            (1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0,
        }.get(version)
        if read_header is None:
            return None
        shape, fortran, dtype = read_header(f)
        offset = f.tell()
    if fortran or dtype.hasobject:
        return None
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)


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
