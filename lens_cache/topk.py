"""The compact pattern for long prompts (kind `pattern_topk`): made from one layer's dense
pattern while it is in memory, so a prompt whose dense npz would be gigabytes stores megabytes.

Per head and query row it keeps the `k` keys with the most attention and their weights, and the
row's remaining mass `rest = 1 - sum(values)`, so a reader always knows how much attention the
stored keys leave out. Beside it, an overview of the whole pattern pooled over square blocks,
both the maximum (a single strong cell far back stays visible) and the total mass (what the
block carries) per block, with the block size chosen so the overview is at most
`OVERVIEW_SIDE` blocks a side at any length.

The layer's pattern is read in place, every head at once: the top-k and the pooling make no
full-size copy of it (the pooling reduces each row's blocks through a view first).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lens_cache import formats
from lens_cache.errors import FileFormatError
from lens_cache.layout import OVERVIEW_SIDE, TOPK_FIELDS, parse_topk_member, topk_member

if TYPE_CHECKING:  # the reader imports this module for `block_size`; only the export needs torch
    import torch


def block_size(n_tokens: int) -> int:
    """The overview's block side for a prompt of `n_tokens`: 1 up to `OVERVIEW_SIDE` tokens,
    then the smallest size that keeps the overview within `OVERVIEW_SIDE` blocks a side."""
    return max(1, math.ceil(n_tokens / OVERVIEW_SIDE))


def n_blocks(n_tokens: int) -> int:
    """Blocks along each axis of the overview of a prompt of `n_tokens`."""
    return math.ceil(n_tokens / block_size(n_tokens)) if n_tokens else 0


def compact_layer(pattern: torch.Tensor, layer: int, k: int, dtype) -> dict[str, torch.Tensor]:
    """The stored members of one layer, on the CPU, from its pattern `[H, T, T]` (on the
    model's device; read there, only the small results cross to the host).

    Args:
        pattern: one prompt's `Float[torch.Tensor, "n_heads query_pos key_pos"]`, trimmed.
        k: keys kept per row (at most T).
        dtype: the stored dtype of `values` (the export's pattern dtype); `rest` and the
            overview are float32 whatever it is.
    """
    import torch

    n = pattern.shape[-1]
    # every head at once, in the pattern's own dtype: only the [H, T, k] results are widened
    values, keys = torch.topk(pattern, min(k, n), dim=-1)
    values = values.float()
    # A row i has i + 1 keys; the slots past them hold masked zeros at arbitrary key indices:
    # marked -1, so nobody reads a later token as attended.
    later = keys > torch.arange(n, device=pattern.device)[:, None]
    values = values.masked_fill(later, 0.0)
    keys = keys.to(torch.int32).masked_fill(later, -1)
    # summed in float64: with thousands of tiny weights left out, float32 rounding would
    # otherwise be a visible part of `rest`
    rest = (1.0 - values.double().sum(-1)).float()
    overview_max, overview_sum = _pool(pattern, block_size(n))
    fields = {
        "keys": keys,
        "values": values.to(dtype),
        "rest": rest,
        "overview_max": overview_max,
        "overview_sum": overview_sum,
    }
    return {topk_member(layer, name): value.cpu() for name, value in fields.items()}


def _pool(pattern: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Block max and block sum (float32) of `[H, T, T]`: each row's blocks of keys first,
    through a view (no copy of the pattern), then blocks of rows over that `[H, T, B]`; a short
    last block is padded with zeros there (attention is never negative: max and sum keep)."""
    import torch
    import torch.nn.functional as F

    n = pattern.shape[-1]
    whole = n // block * block
    keys = pattern[..., :whole].unflatten(-1, (-1, block))
    row_max, row_sum = keys.amax(-1).float(), keys.sum(-1, dtype=torch.float32)
    if whole < n:
        tail = pattern[..., whole:]
        row_max = torch.cat([row_max, tail.amax(-1, keepdim=True).float()], dim=-1)
        row_sum = torch.cat([row_sum, tail.sum(-1, keepdim=True, dtype=torch.float32)], dim=-1)
    side = row_max.shape[-1]
    pad = side * block - n

    def rows(x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (0, 0, 0, pad)).unflatten(-2, (side, block))

    return rows(row_max).amax(-2), rows(row_sum).sum(-2)


# --- reading ---------------------------------------------------------------------------------

# The stored dtype each field may have (values: the export's pattern dtype).
_DTYPES = {
    "keys": ("I32",),
    "values": ("F32", "F16"),
    "rest": ("F32",),
    "overview_max": ("F32",),
    "overview_sum": ("F32",),
}


class CompactFile:
    """A pattern_topk.safetensors, its header checked against what the prompt must hold before
    any data is read: every layer's members `[H, T, k]`, `[H, T]` and `[H, B, B]` with H the
    model's heads, T the prompt's length, k at most T and B what the block in the header gives.

    Raises:
        FileFormatError: a member of another shape or dtype, a block that does not follow from
            T, or a layer missing a field.
    """

    def __init__(self, path: Path, n_heads: int | None, n_tokens: int):
        self.path = path
        tensors, _, meta = formats.safetensors_header(path)
        self.block = _header_block(meta, n_tokens)
        side = n_blocks(n_tokens)
        found: dict[int, dict[str, dict]] = {}
        for name, entry in tensors.items():
            parsed = parse_topk_member(name)
            if parsed is None:
                raise FileFormatError(f"{name!r} is no member of the compact pattern")
            found.setdefault(parsed[0], {})[parsed[1]] = entry
        self.layers = sorted(found)
        if not self.layers:
            raise FileFormatError("the compact pattern holds no layer")
        k = None
        for layer in self.layers:
            k = _check_layer(layer, found[layer], n_heads, n_tokens, side, k)

    def read(self, layers: list[int]) -> dict:
        """The fields of `layers`, stacked on a leading layer axis (values widened to float32),
        with `block`; every stored key checked to lie in `[-1, T)`."""
        out = {
            name: np.stack([self._member(layer, name) for layer in layers]) for name in TOPK_FIELDS
        }
        keys = out["keys"]
        if keys.size and not (-1 <= keys.min() and keys.max() < keys.shape[-2]):
            raise FileFormatError("a stored key lies outside the prompt")
        out["values"] = out["values"].astype(np.float32)
        return {**out, "block": self.block, "layers": list(layers)}

    def _member(self, layer: int, name: str) -> np.ndarray:
        return formats.read_tensor(self.path, topk_member(layer, name))


def _header_block(meta: dict, n_tokens: int) -> int:
    block = meta.get("block", "")
    if not block.isdigit() or int(block) != block_size(n_tokens):
        raise FileFormatError(
            f"overview block {block!r} in the header; a prompt of {n_tokens} tokens has "
            f"{block_size(n_tokens)}"
        )
    return int(block)


def _check_layer(layer: int, entries: dict, n_heads, n_tokens: int, side: int, k) -> int:
    """Check one layer's members; return its k (the same for every layer)."""
    missing = [f for f in TOPK_FIELDS if f not in entries]
    if missing:
        raise FileFormatError(f"layer {layer} of the compact pattern lacks {', '.join(missing)}")
    keys_shape = entries["keys"]["shape"]
    found_k = keys_shape[-1] if len(keys_shape) == 3 else -1
    if not 0 < found_k <= n_tokens or (k is not None and found_k != k):
        raise FileFormatError(f"layer {layer}: keys of shape {keys_shape}")
    expected = {
        "keys": (n_heads, n_tokens, found_k),
        "values": (n_heads, n_tokens, found_k),
        "rest": (n_heads, n_tokens),
        "overview_max": (n_heads, side, side),
        "overview_sum": (n_heads, side, side),
    }
    for name, shape in expected.items():
        entry = entries[name]
        if not formats.shape_matches(tuple(entry["shape"]), shape) or (
            entry["dtype"] not in _DTYPES[name]
        ):
            raise FileFormatError(
                f"{topk_member(layer, name)}: {entry['dtype']} {tuple(entry['shape'])}, "
                f"expected {' or '.join(_DTYPES[name])} {shape}"
            )
    return found_k


def dense(compact: dict, heads=None) -> np.ndarray:
    """A `[layers, heads, T, T]` float32 pattern holding the stored cells and zeros elsewhere
    (each row's missing mass is `compact["rest"]`, never spread over the zeros)."""
    keys, values = compact["keys"], compact["values"]
    if heads is not None:
        keys, values = keys[:, heads], values[:, heads]
    n_layers, n_heads, n_tokens, _ = keys.shape
    out = np.zeros((n_layers, n_heads, n_tokens, n_tokens), np.float32)
    present = keys >= 0
    index = np.nonzero(present)
    out[(*index[:3], keys[present])] = values[present]
    return out
