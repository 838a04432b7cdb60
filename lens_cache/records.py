"""A prompt's `prompt.json`: pattern-lens's fields as pattern-lens writes them, ours beside.

pattern-lens 0.6 writes `{"text", <the prompt line's other keys>, "hash", "n_tokens", "tokens"}`
with `tokens = tokenizer.tokenize(text)`: the tokenizer's own strings (`'Ġthe'`), no BOS, so
`n_tokens` is one less than the side of a pattern when the model prepends a BOS. Its pages add
the BOS label themselves, and its index counts `n_tokens`. A lens_cache `prompt.json` holds
exactly those fields, with those values, so its pages label our patterns right, and keeps what is
ours under the one key `lens_cache`:

- `tokens`: one decoded string per pattern position, BOS first (`' the'`);
- `n_tokens`: the side of the patterns; `token_ids`: the ids the model ran on;
- `mean_loss` (when logits were exported), `meta`: only metadata keys that would collide with a
  top-level field (the others sit at the top level, as pattern-lens keeps them);
- the export settings (`settings`, `layers`, `hooks`, dtypes ...).

Readers see one form whatever the store (`reader_record`): `tokens`, `n_tokens` and `token_ids`
aligned with the pattern axes in lens_cache stores, metadata gathered into `meta`. Records
written before this layout (`tokens` aligned at the top level) read the same way and are
rewritten by `lens-cache cache upgrade` (see `lens_cache.upgrade`).
"""

from __future__ import annotations

from lens_cache.layout import RECORD_KEYS

OWN_KEY = "lens_cache"
# the reader's fields that live under OWN_KEY on disk (pattern-lens has its own n_tokens/tokens)
MOVED_KEYS = ("n_tokens", "tokens", "token_ids", "mean_loss")
# a Hub table's column (and a pushed record's key): pattern-lens's `tokens`, which a pull writes
TOKENIZER_TOKENS = "tokenizer_tokens"
_TOP_KEYS = ("text", "hash", "n_tokens", "tokens", OWN_KEY)  # what pattern-lens writes + ours


def stored_record(record: dict, tokenizer_tokens: list[str]) -> dict:
    """The `prompt.json` of a record in the reader's form, given `tokenizer.tokenize(text)`."""
    meta = record.get("meta") or {}
    own = {k: record[k] for k in MOVED_KEYS if k in record}
    clashing = {k: v for k, v in meta.items() if k in RECORD_KEYS}
    if clashing:  # a top-level key of these names would be read as a field, not metadata
        own["meta"] = clashing
    own.update(record.get(OWN_KEY) or {})
    flat = {k: v for k, v in meta.items() if k not in RECORD_KEYS}
    return {
        "text": record["text"],
        **flat,
        "hash": record["hash"],
        "n_tokens": len(tokenizer_tokens),
        "tokens": [str(t) for t in tokenizer_tokens],
        OWN_KEY: own,
    }


def is_old_layout(stored: dict) -> bool:
    """A lens_cache record from before this layout: its aligned `tokens` at the top level."""
    own = stored.get(OWN_KEY)
    return isinstance(own, dict) and "tokens" not in own and "tokens" in stored


def tokenizer_tokens(stored: dict) -> list[str] | None:
    """pattern-lens's `tokens` of a stored record (`tokenizer.tokenize(text)`), or None for an
    old lens_cache record, which did not keep them."""
    if is_old_layout(stored) or not isinstance(stored.get("tokens"), list):
        return None
    return [str(t) for t in stored["tokens"]]


def reader_record(stored: dict) -> dict:
    """The reader's form of a stored record: `text`, `hash`, `n_tokens`, `tokens`,
    `token_ids`, `meta`, `lens_cache`, `mean_loss` (those present), in that order."""
    own = stored.get(OWN_KEY)
    if not (isinstance(own, dict) and "tokens" in own):
        return _gather_meta(stored)  # pattern-lens's own record, or a lens_cache one before
    own = dict(own)
    fields = {k: own.pop(k) for k in MOVED_KEYS if k in own}
    clashing = own.pop("meta", None)
    meta = {k: v for k, v in stored.items() if k not in _TOP_KEYS}
    meta.update(clashing if isinstance(clashing, dict) else {})
    out = {"text": stored.get("text"), "hash": stored.get("hash")}
    out.update({k: fields[k] for k in ("n_tokens", "tokens", "token_ids") if k in fields})
    out.update(meta=meta, lens_cache=own)
    if "mean_loss" in fields:
        out["mean_loss"] = fields["mean_loss"]
    return out


def _gather_meta(record: dict) -> dict:
    """pattern-lens keeps metadata at the top level, older lens_cache records in `meta`; both
    become `meta`. Other fields are kept as stored."""
    meta = record.get("meta")
    extra = {k: v for k, v in record.items() if k not in RECORD_KEYS}
    if meta is not None and not isinstance(meta, dict):
        extra["meta"], meta = meta, None
    out = {k: v for k, v in record.items() if k in RECORD_KEYS}
    out["meta"] = {**(meta or {}), **extra}
    return out
