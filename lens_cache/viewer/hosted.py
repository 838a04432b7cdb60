"""What the hosted viewer's index (`lens_cache.hub._viewer_index`) takes from the local viewer:
a prompt's page data built as `write_viewer` builds it, and the index's model and prompt entries.
One public door, so the hub package reads none of this package's private modules."""

from __future__ import annotations

from pathlib import Path

from lens_cache.viewer._build import (
    StoredArrays,
    build_prompt,
    emit_script,
    entry_of,
    index_payload,
    model_entry,
    read_prompts,
)
from lens_cache.viewer._encode import read_data_script
from lens_cache.viewer._heads import TOP_DIR, write_top

__all__ = [
    "HOSTED_SCRIPTS",
    "StoredArrays",
    "entry_of",
    "index_payload",
    "model_entry",
    "page_data",
    "read_prompts",
]

# The hosted page's own scripts, loaded right after core.js (lens_cache.hub._space); the
# local page never loads them.
HOSTED_SCRIPTS = ("hub_source.js",)


def page_data(save: Path, cfg: dict, prompt: dict, folder: Path, arrays):
    """`(stamp, prompt.js object, lens.js object or None)` of one prompt, built into `folder`
    (a scratch folder) from the patterns and residual norms `arrays` gives (see
    `_build.StoredArrays`)."""
    stamp = build_prompt(save, cfg, prompt, folder, lambda _: None, arrays)
    lens = read_data_script(folder / "lens.js")[1] if (folder / "lens.js").is_file() else None
    return stamp, read_data_script(folder / "prompt.js")[1], lens


def top_examples(save: Path, cfg: dict, prompts, stamps, folder: Path) -> dict[int, dict]:
    """`{layer: top/L<layer>.js object}` of a model's top examples over `prompts` (their
    stamps from `page_data`), merged into `folder` (a scratch folder) as `write_viewer` does."""
    _, layers = write_top(save, folder, cfg, prompts, stamps, emit_script)
    return {layer: read_data_script(folder / TOP_DIR / f"L{layer}.js")[1] for layer in layers}
