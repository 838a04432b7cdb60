"""`lens-cache view`: rebuild the viewer of a store, with its indexes (what every export, pull,
prune and clear does last)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from lens_cache.cli.args import (
    Parser,
    add_metrics_module,
    add_no_fsync,
    add_save_path,
    load_metrics_modules,
)
from lens_cache.errors import ModelLoadError, StoreNotFoundError
from lens_cache.layout import INDEX_HTML
from lens_cache.progress import log, warn
from lens_cache.reader import open_store
from lens_cache.upgrade import indexed_old_prompts, upgrade_store
from lens_cache.viewer import refresh_store


def build_parser(prog: str = "lens-cache view") -> argparse.ArgumentParser:
    p = Parser(
        prog=prog,
        description="Rebuild models.jsonl, each prompts.jsonl and the static viewer of a store "
        "(only prompts whose files changed are rebuilt); prints the page's path.",
    )
    add_save_path(p)
    add_metrics_module(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    add_no_fsync(p)
    p.add_argument(
        "--hub",
        metavar="ORG/NAME",
        help="instead: write the hosted viewer's page, reading this dataset from the Hub, and "
        "print its address (?hub=ORG/NAME)",
    )
    p.add_argument("--endpoint", help="with --hub: the Hub's URL (default: $HF_ENDPOINT)")
    p.add_argument("--page-dir", help="with --hub: where the page goes (default: a cache folder)")
    return p


def main(argv=None, prog: str = "lens-cache view") -> int:
    args = build_parser(prog).parse_args(argv)
    if args.hub:
        print(_hosted_page(args.hub, args.endpoint, args.page_dir))
        return 0
    store = open_store(args.save_path)  # a missing store is an error, not an empty viewer
    load_metrics_modules(args.metrics_module)
    _upgrade_records(store.path, args.quiet)
    if refresh_store(store.path, quiet=args.quiet)["viewer"] is None:
        raise StoreNotFoundError(f"{store.path} holds no model; export one first")
    print(Path(args.save_path) / INDEX_HTML)
    return 0


def _upgrade_records(save: Path, quiet: bool) -> None:
    """Records of an older lens_cache get pattern-lens's fields (`lens_cache.upgrade`), so
    pattern-lens's pages label them right. Without the tokenizer they stay as they are: ours
    reads both layouts, and the note says how to finish."""
    if not indexed_old_prompts(save):
        return
    try:
        upgrade_store(save, log=lambda message: log(message, quiet=quiet))
    except ModelLoadError as e:
        warn(
            f"prompt.json files of an older lens_cache left as they are ({e}); this viewer reads "
            "them, pattern-lens's pages label them one token off until: lens-cache cache "
            f"upgrade -s {shlex.quote(str(save))}"
        )


def _hosted_page(repo: str, endpoint: str | None, page_dir: str | None) -> str:
    """The hosted viewer's page, written to `page_dir` (default: the user's cache folder), for
    a dataset read straight from the Hub; no store is needed."""
    import os

    from lens_cache.hub import write_hosted_page

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = Path(page_dir) if page_dir else cache / "lens_cache" / "hosted"
    return write_hosted_page(folder, endpoint, repo)
