"""lens_cache: export TransformerLens attention patterns and residual streams, browse them
offline, share them on the Hugging Face Hub.

The whole public API is here, imported on first use (so `import lens_cache` stays light, and
`python -m lens_cache.<module>` never finds its module imported before it runs):

- export: `export`, `ModelReport`, `load_model`, `list_hooks`, `HookPoint`, `prompt_hash`,
  `read_dataset`, `iter_dataset`
- read: `open` (`open_store`), `Store`
- pooled residuals: `write_pooled`, `load_pooled`, `pool_residuals`, `POOLS`
- viewer: `write_viewer`, `refresh_store`, `make_server`; in notebooks `show`, `show_patterns`
  (`InlineView`)
- Hub: `push_to_hub`, `pull`, `Selection`, `PushReport`, `PullReport`
- heads: `head_scores`; your own per-head metrics: `metric`, `from_pattern_lens` (pattern-lens
  figure functions), `load_metrics_module`, `read_user_metrics`
- errors: `LensCacheError` and every named error of `lens_cache.errors`
"""

import importlib
from typing import TYPE_CHECKING

from lens_cache import errors as _errors

# What IDEs and type checkers see: the names of _LAZY, imported for real only on first use
# (tests/test_api.py keeps the two lists equal). __all__ is built below, so F401 cannot see it.
if TYPE_CHECKING:
    from lens_cache.detectors import head_scores  # noqa: F401
    from lens_cache.exporter import ModelReport, export  # noqa: F401
    from lens_cache.hooks import HookPoint, list_hooks  # noqa: F401
    from lens_cache.hub import PullReport, PushReport, Selection, pull, push_to_hub  # noqa: F401
    from lens_cache.layout import POOLS  # noqa: F401
    from lens_cache.models import load_model  # noqa: F401
    from lens_cache.notebook import InlineView, show, show_patterns  # noqa: F401
    from lens_cache.pooled import load_pooled, pool_residuals, write_pooled  # noqa: F401
    from lens_cache.prompts import prompt_hash  # noqa: F401
    from lens_cache.reader import Store, open_store  # noqa: F401
    from lens_cache.reader import open_store as open  # noqa: F401
    from lens_cache.sources import iter_dataset, read_dataset  # noqa: F401
    from lens_cache.user_metrics import from_pattern_lens, load_metrics_module, metric  # noqa: F401
    from lens_cache.viewer import read_user_metrics, refresh_store, write_viewer  # noqa: F401
    from lens_cache.viewer.serve import make_server  # noqa: F401

_LAZY = {
    "export": "lens_cache.exporter",
    "ModelReport": "lens_cache.exporter",
    "load_model": "lens_cache.models",
    "list_hooks": "lens_cache.hooks",
    "HookPoint": "lens_cache.hooks",
    "prompt_hash": "lens_cache.prompts",
    "read_dataset": "lens_cache.sources",
    "iter_dataset": "lens_cache.sources",
    "open": ("lens_cache.reader", "open_store"),
    "open_store": "lens_cache.reader",
    "Store": "lens_cache.reader",
    "write_pooled": "lens_cache.pooled",
    "load_pooled": "lens_cache.pooled",
    "pool_residuals": "lens_cache.pooled",
    "POOLS": "lens_cache.layout",
    "write_viewer": "lens_cache.viewer",
    "show": "lens_cache.notebook",
    "show_patterns": "lens_cache.notebook",
    "InlineView": "lens_cache.notebook",
    "refresh_store": "lens_cache.viewer",
    "make_server": "lens_cache.viewer.serve",
    "push_to_hub": "lens_cache.hub",
    "pull": "lens_cache.hub",
    "Selection": "lens_cache.hub",
    "PushReport": "lens_cache.hub",
    "PullReport": "lens_cache.hub",
    "head_scores": "lens_cache.detectors",
    "metric": "lens_cache.user_metrics",
    "from_pattern_lens": "lens_cache.user_metrics",
    "load_metrics_module": "lens_cache.user_metrics",
    "read_user_metrics": "lens_cache.viewer",
}
_ERRORS = [
    name
    for name, value in vars(_errors).items()
    if isinstance(value, type) and issubclass(value, _errors.LensCacheError)
]

__all__ = [*_LAZY, *_ERRORS]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _ERRORS:
        return getattr(_errors, name)
    if name not in _LAZY:
        raise AttributeError(f"module 'lens_cache' has no attribute {name!r}")
    module, attribute = _LAZY[name] if isinstance(_LAZY[name], tuple) else (_LAZY[name], name)
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
