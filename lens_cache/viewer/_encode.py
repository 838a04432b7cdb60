"""How the viewer's data scripts encode values (see the format in `lens_cache.viewer`'s
docstring): JSON made safe for a script context, arrays deflated and base64-encoded, and the
per-layer chunks and thumbnails drawn from a prompt's patterns."""

from __future__ import annotations

import base64
import functools
import json
import re
import sys
from itertools import pairwise
from pathlib import Path

import numpy as np
from isal import isal_zlib

THUMB_SIZE = 48
# ISA-L writes standard zlib-format deflate (what the page's DecompressionStream reads) ~19x
# faster than zlib at level 6, for ~3% more bytes on float16 patterns: this compression was
# most of the viewer data's cost in an export (measured, README: Speed). Level 1 deflates
# SmolLM2's float16 patterns to the same 0.86 as level 2, ~10% faster.
DEFLATE_LEVEL = 1


_JS_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


class Base64Text(str):
    """Base64 made by :func:`encode_array`: only ``A-Z a-z 0-9 + / =``, so it is a JSON string
    and safe in a script as it is, between quotes, with no scan for characters to escape."""


def js_literal(obj) -> str:
    """JSON for a script context: valid JS, and no ``</script>``, ``<!--`` or line separators.

    The escaped characters can only occur inside JSON strings, where ``\\uXXXX`` means the
    same character, so the value is unchanged. NaN (not JSON) must already be ``None``.
    The text is ``json.dumps``'s, but a :class:`Base64Text` inside dicts is copied between
    quotes instead of scanned twice (escaping, then ``<>&``): a layer's base64 is most of
    the viewer data, and the scans took as long as encoding it.
    """
    if isinstance(obj, Base64Text):
        return f'"{obj}"'
    if isinstance(obj, dict) and all(isinstance(k, str) for k in obj):
        if any(isinstance(v, (dict, Base64Text)) for v in obj.values()):
            items = (f"{_json_leaf(k)}:{js_literal(v)}" for k, v in obj.items())
            return "{" + ",".join(items) + "}"
    return _json_leaf(obj)


def _json_leaf(obj) -> str:
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    # `in` scans ~100x faster than the regex, and most texts hold none
    if not any(c in text for c in _JS_ESCAPES):
        return text
    return re.sub("[<>&\u2028\u2029]", lambda m: _JS_ESCAPES[m.group()], text)


def script_call(func: str, *args) -> bytes:
    """One data script: ``LENS.<func>(<arg>, ...);`` with every argument a JSON literal."""
    return f"LENS.{func}({','.join(js_literal(a) for a in args)});\n".encode()


def encode_array(arr: np.ndarray, dtype: str) -> dict:
    """``{"dtype", "shape", "b64"}``: little-endian values of `dtype`, deflated, base64."""
    dtypes = {"f2": "<f2", "f4": "<f4", "u1": "u1", "i4": "<i4"}
    values = np.ascontiguousarray(arr, dtype=dtypes[dtype])
    packed = isal_zlib.compress(values.tobytes(), DEFLATE_LEVEL)
    b64 = Base64Text(base64.b64encode(packed).decode("ascii"))
    return {"dtype": dtype, "shape": list(values.shape), "b64": b64}


def nan_to_none(values):
    """Floats (or nested lists of them) rounded to 6 decimals, NaN as None, for JSON."""
    arr = np.round(np.asarray(values, dtype=np.float64), 5)
    return np.where(np.isfinite(arr), arr, None).tolist()


def thumbnail(patterns: np.ndarray, size: int = THUMB_SIZE) -> np.ndarray:
    """Max-pool ``[H, T, T]`` to ``[H, S, S]``, ``S = min(T, size)``; return the lower triangle
    ``[H, S(S+1)/2]`` scaled to uint8 0..255.

    Max, not mean: a one-cell-wide diagonal (previous-token head) must survive pooling.
    """
    t = patterns.shape[-1]
    if t > size:
        rows = _max_pool_rows(patterns, size)  # [H, S, T]
        patterns = _max_pool_rows(rows.transpose(0, 2, 1).copy(), size).transpose(0, 2, 1)
    h, s, _ = patterns.shape
    # pooled blocks right of the diagonal block are all masked
    lower = np.take(patterns.reshape(h, s * s), lower_triangle(s), axis=1)
    return np.clip(np.rint(lower * 255.0), 0, 255).astype(np.uint8)


def _max_pool_rows(values: np.ndarray, size: int) -> np.ndarray:
    """``[H, n, m]`` -> ``[H, size, m]``: the max over `size` runs of rows that split them as
    evenly as integers can (run ``i`` starts at row ``i * n // size``). A contiguous slice
    per run is several times faster than ``np.maximum.reduceat``, for the same maxima."""
    n = values.shape[1]
    edges = [(i * n) // size for i in range(size + 1)]
    return np.stack([values[:, a:b].max(axis=1) for a, b in pairwise(edges)], axis=1)


def layer_chunk(patterns: np.ndarray) -> dict:
    """The chunk object of one layer: each head's lower triangle, row by row, as float16."""
    h, t, _ = patterns.shape
    rows = np.take(patterns.reshape(h, t * t), lower_triangle(t), axis=1)  # [H, T(T+1)/2]
    tril = float16_bits(rows).view(np.float16)
    return {"n_heads": h, "n_tokens": t, "layout": "tril", "data": encode_array(tril, "f2")}


_torch_allowed = True


def numpy_only() -> None:
    """Never convert with torch in this process: for a child forked from one that has used
    torch's OpenMP threads, where a parallel region could wait on threads the fork left
    behind (the viewer build's worker processes call this first)."""
    global _torch_allowed
    _torch_allowed = False


@functools.lru_cache(maxsize=8)
def lower_triangle(n: int) -> np.ndarray:
    """Flat indices of an ``n x n`` matrix's lower triangle, row by row (a layer's tokens are
    the same for its heads, and a batch's prompts often share a length): ``np.take`` with
    these is 2.5x faster than indexing with a boolean mask, which finds them every time."""
    rows, cols = np.tril_indices(n)
    flat = rows * n + cols
    flat.flags.writeable = False  # shared by every caller of the cache
    return flat


def float16_bits(values: np.ndarray) -> np.ndarray:
    """float32 values as IEEE float16 bit patterns (uint16, same shape), rounded to nearest
    even as IEEE 754 and numpy's ``astype(np.float16)`` round.

    In a process that has torch loaded (an export) torch converts, ~40x faster than the
    numpy method of :func:`float16_bits_numpy`; a viewer build alone never imports torch
    (start-up). Both are IEEE's one rounding, so the bits are the same (a test compares
    them over every float16 and the midpoints around each).
    """
    torch = sys.modules.get("torch") if _torch_allowed else None
    if torch is None:
        return float16_bits_numpy(values)
    f = np.require(values, dtype=np.float32, requirements=["C", "W"])  # torch wants writable
    return torch.from_numpy(f).to(torch.float16).numpy().view(np.uint16)


def float16_bits_numpy(values: np.ndarray) -> np.ndarray:
    """float32 values as IEEE float16 bit patterns (uint16, same shape): the bits numpy's
    ``astype(np.float16)`` gives (round to nearest even, subnormals, overflow to inf; NaN
    stays NaN), without its per-value slow path for results below float16's normal range,
    which a peaked attention row is full of (6 ms for 126k such values against 0.6 ms here).

    The branch-free method of Maratyszcza's FP16 library (PyTorch's too): scaling by 2**112
    then 2**-110 rounds the magnitude at float16's precision in float32 arithmetic, and
    adding a power of two aligned to the value's exponent puts the float16 bits at the bottom.
    """
    f = np.ascontiguousarray(values, dtype=np.float32)
    w = f.view(np.uint32)
    with np.errstate(over="ignore", invalid="ignore"):  # inf and NaN pass through as such
        base = (np.abs(f) * np.float32(2.0**112)) * np.float32(2.0**-110)
    shl1 = w << np.uint32(1)  # the value without its sign, shifted up one bit
    bias = np.maximum(shl1 & np.uint32(0xFF000000), np.uint32(0x71000000))
    base = ((bias >> np.uint32(1)) + np.uint32(0x07800000)).view(np.float32) + base
    bits = base.view(np.uint32)
    magnitude = ((bits >> np.uint32(13)) & np.uint32(0x7C00)) + (bits & np.uint32(0x0FFF))
    magnitude = np.where(shl1 > np.uint32(0xFF000000), np.uint32(0x7E00), magnitude)  # NaN
    return (((w >> np.uint32(16)) & np.uint32(0x8000)) | magnitude).astype(np.uint16)


def read_data_script(path: Path) -> list:
    """The arguments of a data script ``LENS.f(a, b);`` (JSON literals, comma-joined)."""
    text = path.read_text(encoding="utf-8")
    return json.loads("[" + text[text.index("(") + 1 : text.rindex(")")] + "]")
