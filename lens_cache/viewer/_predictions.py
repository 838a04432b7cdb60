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

from pathlib import Path

import numpy as np

from lens_cache import formats
from lens_cache.errors import ActivationsMissingError, DamagedFileError
from lens_cache.layout import LOGIT_LENS_NAME, lens_member, parse_lens_member
from lens_cache.layout import PREDICTION_FIELDS as FIELDS
from lens_cache.reader import Store


def prediction_data(store: Store, model: str, prompt_dir: Path, encode) -> tuple:
    """``(pred, lens)`` payloads of one stored prompt (each None when not stored).

    Args:
        store: the store; `model` the model's name in it.
        prompt_dir: the prompt's folder in the store (`Store.prompt_dir`).
        encode: `lens_cache.viewer._encode.encode_array`.
    """
    hash_ = prompt_dir.name
    pred = store.predictions(model, hash_) if store.exists(model, hash_, "logits") else None
    lens = _read(prompt_dir / LOGIT_LENS_NAME, "lens")
    vocab = None if pred is None and lens is None else _vocab(store, model)
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


def _read(path: Path, kind: str):
    """The stored fields of the logit lens, ``(layers, {field: [L, ...]})``."""
    if not path.is_file():
        return None
    tensors = dict(formats.iter_tensors(path))
    members = (parse_lens_member(k) for k in tensors)
    layers = sorted(m[0] for m in members if m and m[1] == "loss")
    fields = {f: np.stack([tensors[lens_member(i, f)] for i in layers]) for f in FIELDS}
    return layers, fields


def _vocab(store: Store, model: str) -> list[str] | None:
    try:
        return store.vocab(model)
    except (ActivationsMissingError, DamagedFileError):  # ids are then shown as #<id>; a link
        # to elsewhere is never followed
        return None
