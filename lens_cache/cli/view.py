"""`lens-cache view`: rebuild the viewer of a store, with its indexes (what every export, pull,
prune and clear does last)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lens_cache.cli.args import (
    SAVE_HELP,
    Parser,
    add_metrics_module,
    add_no_fsync,
    load_metrics_modules,
)
from lens_cache.errors import StoreNotFoundError
from lens_cache.layout import INDEX_HTML, default_save_path
from lens_cache.reader import open_store
from lens_cache.viewer import refresh_store


def build_parser(prog: str = "lens-cache view") -> argparse.ArgumentParser:
    p = Parser(
        prog=prog,
        description="Rebuild models.jsonl, each prompts.jsonl and the static viewer of a store "
        "(only prompts whose files changed are rebuilt); prints the page's path.",
    )
    p.add_argument(
        "-s",
        "--save-path",
        default=default_save_path(),
        help=SAVE_HELP,
    )
    add_metrics_module(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    add_no_fsync(p)
    return p


def main(argv=None, prog: str = "lens-cache view") -> int:
    args = build_parser(prog).parse_args(argv)
    store = open_store(args.save_path)  # a missing store is an error, not an empty viewer
    load_metrics_modules(args.metrics_module)
    if refresh_store(store.path, quiet=args.quiet)["viewer"] is None:
        raise StoreNotFoundError(f"{store.path} holds no model; export one first")
    print(Path(args.save_path) / INDEX_HTML)
    return 0
