"""Share curated slices of a store on the Hugging Face Hub, and pull them back.

    python -m lens_cache.hub push --repo ORG/NAME --layers 5 --heads 5.1,5.3 --kinds patterns
    python -m lens_cache.hub pull --repo ORG/NAME --save-path store/

A push builds every file deterministically (see `lens_cache.hub._layout`), compares each with
what the repo already holds (LFS size + sha256, or the git blob id of small files), and sends
only the difference in batched commits; the dataset card and the `lens_cache.json` manifest go
last, so an interrupted push never looks complete and a rerun finishes it. A pull reads the
manifest, refuses any name that could escape the save path, downloads only the files the
selection needs, checks their sha256 and rebuilds the pattern-lens-compatible layout.

With kind `pooled`, every pooled dataset of the selected models (`<save>/<model>/pooled/
<hook>-<pool>/data-*.parquet`, see `lens_cache.pooled`) goes up as is, whole, to
`pooled/<model>/<hook>-<pool>/`, and a pull puts it back where it was: prompt, layer and head
selections never filter its rows or columns.

With kind `hooks`, each prompt's other hook points (`hooks.safetensors`: what the export's
`--hooks` named) go by layer, all of them or those `--hooks` chooses, and come back as that
file, which `Store.hooks` and `Store.activation_cache` read.

The public surface is this module: `push_to_hub`, `pull`, `Selection` (what both take), the
report types and the errors they raise; the private modules behind it are `_layout` (the
dataset's files and names), `_select` (the selection), `_shards` (building and reading shards),
`_card` (tables, card, manifest), `_client` (the Hub client and its errors), `_push` and
`_pull`. The command line is `lens_cache.cli.hub`.

`push_space` makes a static Space holding the hosted viewer of a pushed dataset (the page reads
the dataset's `viewer/index.json` and its shards by range, `lens_cache.hub._space`), and
`write_hosted_page` writes the same page into a local folder.

The token comes from `hf auth login` or `HF_TOKEN` (or the `token=` argument); it is never
printed or written anywhere by this module.
"""

from lens_cache.errors import (
    HubIntegrityError,
    HubPermissionError,
    HubRepoIdError,
    HubRepoNotFoundError,
    HubSelectionError,
    HubTokenError,
    HubTransferError,
    NotALensCacheDatasetError,
    NothingSelectedError,
    UnsafeRepoPathError,
)
from lens_cache.hub._layout import KIND_ALIASES, SELECTABLE_KINDS
from lens_cache.hub._pull import pull
from lens_cache.hub._push import (
    DEFAULT_COMMIT_MAX_BYTES,
    DEFAULT_COMMIT_MAX_FILES,
    DEFAULT_PUSH_KINDS,
    DEFAULT_SHARD_MAX_BYTES,
    push_to_hub,
)
from lens_cache.hub._reports import PullReport, PushReport
from lens_cache.hub._select import Selection
from lens_cache.hub._space import push_space
from lens_cache.hub._space import write_page as write_hosted_page

__all__ = [
    "push_to_hub",
    "pull",
    "push_space",
    "write_hosted_page",
    "Selection",
    "PushReport",
    "PullReport",
    "SELECTABLE_KINDS",
    "KIND_ALIASES",
    "DEFAULT_SHARD_MAX_BYTES",
    "DEFAULT_COMMIT_MAX_BYTES",
    "DEFAULT_COMMIT_MAX_FILES",
    "DEFAULT_PUSH_KINDS",
    "HubTokenError",
    "HubPermissionError",
    "HubRepoNotFoundError",
    "HubTransferError",
    "HubRepoIdError",
    "HubSelectionError",
    "NothingSelectedError",
    "NotALensCacheDatasetError",
    "UnsafeRepoPathError",
    "HubIntegrityError",
]
