"""The hosted viewer's files of a push: `viewer/index.json` and one `viewer/prompts-NNNNN.json`
per model, written beside the manifest so a static page can browse the dataset straight from
the Hub (`web/hub_source.js`).

`index.json` holds what the local viewer's `lens_index.js` holds (models with their per-head
metrics, prompts with their text, meta and per-prompt metrics) for the pushed selection only,
and where everything else lies:

    {"format": "lens_cache-viewer", "version": 1, "dtype": ..., "kinds": [...],
     "viewer": {...the local viewer's index...},
     "payloads": {"<model>|<hash>": [path, start, end]},   # a prompt's page data, by range
     "lens": {"<model>|<hash>": [path, start, end]},       # its logit lens, when pushed
     "top": {"<model>|<layer>": [path, start, end]},       # top examples, with head_contributions
     "runs": {"<model>": {"patterns": {"heads": {layer: [heads]},
                                      "runs": [{"index": i, "hashes": [...],
                                                "offsets": [[start, end], ...]}]}}}}

A pattern of (model, hash, layer, head) lies in the shard `tensor_path(model, "patterns",
layer, head, run index)` under the key `hash`, at `offsets` past the shard's header (every head
of a run has the same tensors in the same order). The page checks each shard's own header
against these before it shows a value.

A prompt's page data is the local viewer's `prompt.js` object, less what was not pushed (its
predictions, head contributions and residual norms go only with those kinds), with the
metrics of heads that were not pushed blanked.
"""

from __future__ import annotations

import itertools
import json
import math
import tempfile
from pathlib import Path

from lens_cache.hub._layout import PATTERNS, PREDICTIONS, ModelPlan
from lens_cache.hub._shards import Shard
from lens_cache.layout import HEAD_CONTRIBUTIONS, ITEMSIZE, LOGIT_LENS, RESID_KINDS

VIEWER_INDEX = "viewer/index.json"
VIEWER_FORMAT = "lens_cache-viewer"
VIEWER_VERSION = 1


def payload_path(m_index: int) -> str:
    return f"viewer/prompts-{m_index:05d}.json"


class _PushedArrays:
    """The store's patterns of the pushed layers only; residual norms only when pushed."""

    def __init__(self, src: Path, layers, resid: bool):
        from lens_cache.viewer.hosted import StoredArrays

        self.stored, self.layers, self.resid = StoredArrays(src), set(layers), resid

    def patterns(self, prompt: dict, n_heads: int, n_tokens: int):
        for layer, pat in self.stored.patterns(prompt, n_heads, n_tokens):
            if layer in self.layers:
                yield layer, pat

    def resid_norms(self, n_tokens: int, log):
        return self.stored.resid_norms(n_tokens, log) if self.resid else None


def viewer_files(save_path: Path, plans: list[ModelPlan], shards: list[Shard], dtype: str):
    """`{repo path: bytes}` of the hosted viewer's files for this push."""
    from lens_cache.viewer import hosted as vb

    models, entries, texts, payloads, lenses, tops, files = [], [], {}, {}, {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="lens_cache-hosted-") as tmp:
        for m_index, plan in enumerate(plans):
            prompts, stamps, blob = _model_prompts(save_path, plan, Path(tmp) / str(m_index))
            models.append(vb.model_entry(plan.cfg, prompts, stamps))
            path, lines = payload_path(m_index), []
            for prompt, stamp, (payload, lens) in zip(prompts, stamps, blob, strict=True):
                entries.append(vb.entry_of(m_index, prompt, stamp))
                meta = prompt.get("meta") or {}
                texts[prompt["hash"]] = {"text": prompt.get("text", ""), "meta": meta}
                key = f"{plan.name}|{prompt['hash']}"
                payloads[key] = _line(lines, path, payload)
                if lens is not None:  # the logit lens view's data, a line of its own
                    lenses[key] = _line(lines, path, lens)
            top = _top(save_path, plan, prompts, stamps, Path(tmp) / f"top-{m_index}")
            for layer, obj in top.items():  # the top-examples page's data, a line a layer
                tops[f"{plan.name}|{layer}"] = _line(lines, path, obj)
            models[-1]["top"] = sorted(top) or None
            files[path] = b"".join(b + b"\n" for b in lines)
    index = {
        "format": VIEWER_FORMAT,
        "version": VIEWER_VERSION,
        "dtype": dtype,
        "kinds": sorted({k for p in plans for k in p.tensors}),
        "viewer": vb.index_payload(models, entries, texts),
        "payloads": payloads,
        "lens": lenses,
        "top": tops,
        "runs": {p.name: _runs(p, shards) for p in plans},
    }
    files[VIEWER_INDEX] = json.dumps(index, separators=(",", ":"), sort_keys=True).encode()
    return files


def _line(lines: list[bytes], path: str, obj) -> list:
    """Append `obj` as a JSON line; where it lies: `[path, start, end]`."""
    at = sum(len(b) + 1 for b in lines)
    lines.append(json.dumps(obj, separators=(",", ":")).encode())
    return [path, at, at + len(lines[-1])]


def _top(save_path: Path, plan: ModelPlan, prompts, stamps, folder: Path) -> dict:
    """The top examples over the pushed prompts, of the layers whose contributions were pushed."""
    from lens_cache.viewer import hosted as vb

    layers = plan.tensors.get(HEAD_CONTRIBUTIONS)
    if not layers:
        return {}
    found = vb.top_examples(save_path, plan.cfg, prompts, stamps, folder)
    return {layer: obj for layer, obj in found.items() if layer in layers}


def _model_prompts(save_path: Path, plan: ModelPlan, out: Path):
    """The model's pushed prompts (reader records), their stamps and page data."""
    from lens_cache.reader import Store
    from lens_cache.viewer import hosted as vb

    wanted = {r["hash"] for r in plan.records}
    prompts = [p for p in vb.read_prompts(save_path, plan.name) if p["hash"] in wanted]
    heads = plan.tensors.get(PATTERNS, {})
    resid = any(k in plan.tensors for k in RESID_KINDS)
    stamps, blob = [], []
    for prompt in prompts:
        src = Store(save_path).prompt_dir(plan.name, prompt["hash"])
        folder = out / prompt["hash"]
        arrays = _PushedArrays(src, heads, resid)
        stamp, payload, lens = vb.page_data(save_path, plan.cfg, prompt, folder, arrays)
        _keep_pushed(payload, stamp, plan)
        stamps.append(stamp)
        blob.append((payload, lens if stamp["lens"] else None))
    return prompts, stamps, blob


def _keep_pushed(payload: dict, stamp: dict, plan: ModelPlan) -> None:
    """Leave out of a prompt's page data what the push does not send, and blank the metrics of
    heads whose patterns stay home: the page shows only what the dataset holds."""
    payload.pop("user", None)
    payload.pop("figures", None)
    if PREDICTIONS not in plan.tensors:
        payload["pred"] = None
        stamp["mean_loss"] = None
    if HEAD_CONTRIBUTIONS not in plan.tensors:
        payload["heads"] = None
        stamp["heads"] = None
    stamp["lens"] = LOGIT_LENS in plan.tensors and stamp.get("lens", False)
    pushed = plan.tensors.get(PATTERNS, {})
    for name, per_layer in payload["metrics"].items():
        for li, layer in enumerate(payload["layers"]):
            keep = set(pushed.get(layer, ()))
            per_layer[li] = [v if h in keep else None for h, v in enumerate(per_layer[li])]
        stamp["metrics"][name] = per_layer
    stamp.pop("metrics_array", None)


def _runs(plan: ModelPlan, shards: list[Shard]) -> dict:
    """Where each pushed pattern lies: the runs of prompts of the model's pattern shards."""
    runs = {}
    for s in shards:
        if s.model == plan.name and s.kind == PATTERNS and s.index not in runs:
            sizes = [math.prod(shape) * ITEMSIZE[s.dtype] for shape in s.shapes]
            ends = list(itertools.accumulate(sizes))
            offsets = [[e - n, e] for e, n in zip(ends, sizes, strict=True)]
            runs[s.index] = {"index": s.index, "hashes": list(s.hashes), "offsets": offsets}
    heads = {str(layer): list(h) for layer, h in plan.tensors.get(PATTERNS, {}).items()}
    return {PATTERNS: {"heads": heads, "runs": [runs[i] for i in sorted(runs)]}}
