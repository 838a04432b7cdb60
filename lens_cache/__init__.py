"""lens_cache: export TransformerLens attention patterns and residual streams, browse them
offline, share them on the Hugging Face Hub."""

import importlib

from lens_cache.errors import LensCacheError
from lens_cache.exporter import export
from lens_cache.models import load_model
from lens_cache.prompts import prompt_hash

# Imported on first use: these modules are also run as `python -m lens_cache.<name>`, which
# warns when the package has already imported the module it is about to run.
_LAZY = {
    "open": ("lens_cache.reader", "open_store"),
    "open_store": ("lens_cache.reader", "open_store"),
    "load_pooled": ("lens_cache.pooled", "load_pooled"),
    "read_dataset": ("lens_cache.sources", "read_dataset"),
    "iter_dataset": ("lens_cache.sources", "iter_dataset"),
    "push_to_hub": ("lens_cache.hub", "push_to_hub"),
    "pull": ("lens_cache.hub", "pull"),
}

__all__ = ["LensCacheError", "export", "load_model", "prompt_hash", *_LAZY]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'lens_cache' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    return getattr(importlib.import_module(module), attribute)
