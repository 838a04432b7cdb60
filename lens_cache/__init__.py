"""lens_cache: export TransformerLens attention patterns and residual streams, browse them
offline, share them on the Hugging Face Hub."""

from lens_cache.errors import LensCacheError
from lens_cache.exporter import export
from lens_cache.hub import pull, push_to_hub
from lens_cache.models import load_model
from lens_cache.pooled import load_pooled
from lens_cache.prompts import prompt_hash
from lens_cache.reader import open_store
from lens_cache.sources import read_dataset

open = open_store  # noqa: A001 - `lens_cache.open(save_path)` mirrors the builtin on purpose

__all__ = [
    "LensCacheError",
    "export",
    "pull",
    "push_to_hub",
    "load_model",
    "load_pooled",
    "open",
    "open_store",
    "prompt_hash",
    "read_dataset",
]
__version__ = "0.1.0"
