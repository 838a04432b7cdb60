"""Reading back the user metrics (`lens_cache.user_metrics`) the viewer stored, as arrays."""

from __future__ import annotations

import base64
import zlib
from pathlib import Path

import numpy as np

from lens_cache.layout import VIEWER_DATA_DIR
from lens_cache.reader import Store
from lens_cache.viewer._build import model_slug
from lens_cache.viewer._encode import read_data_script


def read_user_metrics(save_path, model: str) -> dict[str, dict[str, np.ndarray]]:
    """The user metrics the viewer stored for a model, per prompt.

    Args:
        save_path (`Path` or `str`): the store.
        model (`str`): the model's name in the store.

    Returns:
        ``{prompt hash: {metric name: array}}``: a scalar metric as float64 ``[n_layers,
        n_heads]``, a matrix metric as float32 ``[n_layers, n_heads, r, c]``, NaN for layers
        the prompt does not store. Prompts built without user metrics are left out.

    Example:
        >>> values = lens_cache.read_user_metrics("store", "gpt2")
        >>> values[h]["bos_share_late"][layer, head]
    """
    store = Store(Path(save_path))
    cfg = store.model_cfg(model)
    shape = (int(cfg["n_layers"]), int(cfg["n_heads"]))
    out = {}
    for record in store.prompts(model):
        path = Path(save_path) / VIEWER_DATA_DIR / model_slug(model) / record["hash"] / "prompt.js"
        if not path.is_file():
            continue
        payload = read_data_script(path)[1]
        if payload.get("user"):
            out[record["hash"]] = _unpack(payload["user"], payload["layers"], shape)
    return out


def _unpack(user: dict, layers: list[int], shape: tuple[int, int]) -> dict[str, np.ndarray]:
    values = {}
    for name, per_layer in user["scalars"].items():
        arr = np.full(shape, np.nan)
        for layer, row in zip(layers, per_layer, strict=True):
            arr[layer] = [np.nan if v is None else v for v in row]
        values[name] = arr
    for name, desc in user["matrices"].items():
        stored = decode_array(desc)
        arr = np.full((*shape, *stored.shape[2:]), np.nan, dtype=np.float32)
        arr[layers] = stored
        values[name] = arr
    return values


def decode_array(desc: dict) -> np.ndarray:
    """The inverse of `_encode.encode_array`."""
    dtypes = {"f2": "<f2", "f4": "<f4", "u1": "u1", "i4": "<i4"}
    raw = zlib.decompress(base64.b64decode(desc["b64"]))
    return np.frombuffer(raw, dtype=dtypes[desc["dtype"]]).reshape(desc["shape"])
