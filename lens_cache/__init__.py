"""lens_cache: export TransformerLens attention patterns and residual streams, browse them
offline, share them on the Hugging Face Hub."""

from lens_cache.errors import LensCacheError as LensCacheError
from lens_cache.exporter import export as export
from lens_cache.models import load_model as load_model
from lens_cache.prompts import prompt_hash as prompt_hash

__version__ = "0.1.0"
