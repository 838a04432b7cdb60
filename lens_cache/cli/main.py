"""`lens-cache`: one command with a subcommand per stage, each the same as its `python -m` form.

lens-cache export ...   python -m lens_cache.activations ...
lens-cache pool ...     python -m lens_cache.pooled ...
lens-cache cache ...    python -m lens_cache.cache ...
lens-cache hub ...      python -m lens_cache.hub ...
lens-cache serve ...    python -m lens_cache.serve ...
lens-cache view ...     rebuild the viewer of a store (and its indexes)
"""

from __future__ import annotations

import argparse
import importlib
import sys

from lens_cache.cli import run_cli
from lens_cache.cli.args import Parser

# subcommand -> (module under lens_cache.cli whose `main(argv, prog)` runs it, one-line help)
SUBCOMMANDS = {
    "export": ("export", "run models over prompts and store patterns and residuals"),
    "pool": ("pool", "pool stored residuals into a parquet dataset per model"),
    "cache": ("cache", "look after a store: info, list, verify, prune, clear"),
    "hub": ("hub", "push a selection of a store to the Hugging Face Hub, or pull one"),
    "serve": ("serve", "serve a store's viewer over HTTP on 127.0.0.1"),
    "view": ("view", "rebuild the viewer (and indexes) of a store"),
}


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="lens-cache",
        description="Export TransformerLens attention patterns and residual streams, browse "
        "them offline, share them on the Hub. `lens-cache COMMAND --help` for each command.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Only the first word is ours: everything after it belongs to the subcommand's own parser
    # (so `lens-cache export --help` shows the exporter's flags).
    args = build_parser().parse_args(argv[:1])
    module = importlib.import_module(f"lens_cache.cli.{SUBCOMMANDS[args.command][0]}")
    return module.main(argv[1:], prog=f"lens-cache {args.command}")


def console_script() -> int:
    """The `lens-cache` entry point (`[project.scripts]`)."""
    return run_cli(main)
