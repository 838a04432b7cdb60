"""The viewer's data about what the model predicts (export kinds `logits` and `logit_lens`).

``prompt.js`` gains ``pred`` (``null`` without logits)::

    {"k": k, "loss": f4 [T], "entropy": f4 [T], "rank": i4 [T], "top_ids": i4 [T, k],
     "top_lp": f4 [T, k], "vocab": {id: token string}}

and the prompt's folder a ``lens.js``, ``LENS.lens(key, obj)``, when the logit lens is stored::

    {"layers": [...], "k": k, "loss": f4 [L, T], "top_ids": i4 [L, T, k], "top_lp": f4 [L, T, k],
     "vocab": {...}}

Values are the stored float32 numbers, never quantised; `vocab` holds only the strings of the
ids the prompt's top-k lists use (from the model's ``vocab.json``), so nothing vocabulary-sized
is copied per prompt. The probability of the actual next token is ``exp(-loss)``.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from lens_cache import formats
from lens_cache.layout import (
    LOGIT_LENS_NAME,
    PREDICTIONS_NAME,
    VOCAB_NAME,
    lens_member,
    parse_lens_member,
)
from lens_cache.layout import PREDICTION_FIELDS as FIELDS


def prediction_data(prompt_dir: Path, encode) -> tuple[dict | None, dict | None]:
    """``(pred, lens)`` payloads of one stored prompt (each None when not stored).

    Args:
        prompt_dir: the prompt's folder in the store.
        encode: `lens_cache.viewer._encode.encode_array`.
    """
    vocab = _vocab(prompt_dir.parent.parent / VOCAB_NAME)
    pred = _read(prompt_dir / PREDICTIONS_NAME, None)
    lens = _read(prompt_dir / LOGIT_LENS_NAME, "lens")
    pred_payload = None if pred is None else _payload(pred, vocab, encode)
    lens_payload = None
    if lens is not None:
        layers, fields = lens
        lens_payload = {"layers": layers, **_payload(fields, vocab, encode)}
        lens_payload.pop("entropy")
        lens_payload.pop("rank")
    return pred_payload, lens_payload


def _payload(fields: dict[str, np.ndarray], vocab: list[str] | None, encode) -> dict:
    ids = fields["top_ids"]
    used = np.unique(ids).tolist()
    loss = fields["loss"]
    known = loss[np.isfinite(loss)]
    return {
        "k": int(ids.shape[-1]),
        "loss": encode(loss, "f4"),
        "entropy": encode(fields["entropy"], "f4"),
        "rank": encode(fields["target_rank"], "i4"),
        "top_ids": encode(ids, "i4"),
        "top_lp": encode(fields["top_logprobs"], "f4"),
        "vocab": {str(i): _token(vocab, i) for i in used},
        "mean_loss": round(float(known.mean()), 6) if known.size else None,
    }


def _token(vocab: list[str] | None, i: int) -> str:
    return vocab[i] if vocab is not None and 0 <= i < len(vocab) else f"#{i}"


def _read(path: Path, kind: str | None):
    """The stored fields of a predictions file; for the lens, ``(layers, {field: [L, ...]})``."""
    if not path.is_file():
        return None
    tensors = dict(formats.iter_tensors(path))
    if kind is None:
        return tensors
    members = (parse_lens_member(k) for k in tensors)
    layers = sorted(m[0] for m in members if m and m[1] == "loss")
    fields = {f: np.stack([tensors[lens_member(i, f)] for i in layers]) for f in FIELDS}
    return layers, fields


def _vocab(path: Path) -> list[str] | None:
    if path.is_symlink():  # links are not followed: a store from elsewhere could aim one anywhere
        return None
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return _read_vocab(str(path), st.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _read_vocab(path: str, _mtime_ns: int) -> list[str]:
    """One read per model and build (the mtime in the key notices a rewritten file)."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)
