"""The compact pattern's viewer data (kind `pattern_topk`, `lens_cache.topk`): what the page
needs to open a long prompt's head on its overview and zoom into a region of it.

    <save>/viewer_data/<model>/<hash>/K<layer>.js      LENS.topk(key, {...}): the layer's
                                                       overview, max and sum per block, float32
    <save>/viewer_data/<model>/<hash>/K<layer>_<b>.js  LENS.topkband(key, {...}): rows
                                                       b*BAND_ROWS onwards, every head's keys,
                                                       values and rest

A zoomed region loads only the bands its rows cross, so no script holds a whole layer: at
8,192 tokens a band of 9 heads is about 0.6 MB before deflate, the overview 2.4 MB.
"""

from __future__ import annotations

from pathlib import Path

from lens_cache import topk
from lens_cache.layout import PATTERN_TOPK_NAME
from lens_cache.viewer._encode import encode_array, script_call

BAND_ROWS = 256  # query rows per band script


def write_topk(src: Path, out: Path, key: str, n_heads: int, n_tokens: int, write) -> tuple:
    """Write the compact pattern's scripts of one prompt (`write(path, bytes) -> size`).

    Returns:
        `(part, files, bytes)`: `part` for `prompt.js` (`None` when the prompt has no compact
        pattern), the file names written, their total size.
    """
    path = src / PATTERN_TOPK_NAME
    if not path.is_file():
        return None, [], 0
    compact = topk.CompactFile(path, n_heads, n_tokens)
    files, written, k = [], 0, 0
    for layer in compact.layers:
        c = compact.read([layer])
        k = c["keys"].shape[-1]
        overview = {
            "max": encode_array(c["overview_max"][0], "f4"),
            "sum": encode_array(c["overview_sum"][0], "f4"),
        }
        name = f"K{layer}.js"
        written += write(out / name, script_call("topk", f"{key}/{layer}", overview))
        files.append(name)
        for band, lo in enumerate(range(0, n_tokens, BAND_ROWS)):
            rows = slice(lo, lo + BAND_ROWS)
            data = {
                "lo": lo,
                "keys": encode_array(c["keys"][0][:, rows], "i4"),
                "values": encode_array(c["values"][0][:, rows], "f4"),
                "rest": encode_array(c["rest"][0][:, rows], "f4"),
            }
            name = f"K{layer}_{band}.js"
            written += write(out / name, script_call("topkband", f"{key}/{layer}/{band}", data))
            files.append(name)
    part = {"layers": compact.layers, "block": compact.block, "k": k, "band": BAND_ROWS}
    return part, files, written
