"""`python -m lens_cache.hub` (`lens-cache hub`): push a selection of a store to the Hub, or
pull one into a store (see `lens_cache.hub`)."""

from __future__ import annotations

import argparse

from lens_cache.cli.args import ListOption, Parser, add_save_path
from lens_cache.hub import (
    DEFAULT_COMMIT_MAX_BYTES,
    DEFAULT_PUSH_KINDS,
    DEFAULT_SHARD_MAX_BYTES,
    KIND_ALIASES,
    SELECTABLE_KINDS,
    PushReport,
    pull,
    push_space,
    push_to_hub,
)
from lens_cache.layout import DTYPES, INDEX_HTML
from lens_cache.progress import log


def build_parser(prog: str = "python -m lens_cache.hub") -> argparse.ArgumentParser:
    p = Parser(
        prog=prog,
        description="Share a selection of a lens_cache store as a Hugging Face dataset, or pull "
        "one into a store. The token comes from `hf auth login` or HF_TOKEN. Lists take "
        "commas or spaces.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    push = sub.add_parser("push", help="upload a selection (reruns resume)")
    pull_p = sub.add_parser("pull", help="download a dataset (or a selection) into a store")
    for sp in (push, pull_p):
        _common_args(sp)
    push.add_argument(
        "--kinds",
        action=ListOption,
        choices=SELECTABLE_KINDS,
        aliases=KIND_ALIASES,
        default=list(DEFAULT_PUSH_KINDS),
        help="what to upload (logits is predictions); pooled: every pooled dataset of the "
        "selected models, whole",
    )
    push.add_argument("--dtype", choices=list(DTYPES), default="float32", help="uploaded dtype")
    push.add_argument("--private", action="store_true", help="make the repo private")
    push.add_argument("--message", help="commit message")
    push.add_argument(
        "--shard-max-bytes",
        default=str(DEFAULT_SHARD_MAX_BYTES),
        help="most bytes per uploaded shard (suffixes: 500MB, 2GB)",
    )
    push.add_argument(
        "--commit-max-bytes",
        default=str(DEFAULT_COMMIT_MAX_BYTES),
        help="most bytes per commit (suffixes: 500MB, 2GB)",
    )
    push.add_argument("--dry-run", action="store_true", help="list what would go up; no upload")
    push.add_argument(
        "--space",
        metavar="ORG/NAME",
        help="also create or update this static Space: a viewer of the dataset, read from the Hub",
    )
    space = sub.add_parser("space", help="create or update a static Space viewing a dataset")
    space.add_argument("space", metavar="ORG/NAME", help="the Space repo")
    space.add_argument("--dataset", required=True, metavar="ORG/NAME", help="the dataset repo")
    space.add_argument("--revision", help="the dataset's branch or commit (default: main now)")
    space.add_argument("--endpoint", help="the Hub's URL (default: $HF_ENDPOINT or huggingface.co)")
    space.add_argument("--private", action="store_true", help="make a new Space private")
    pull_p.add_argument(
        "--kinds",
        action=ListOption,
        choices=SELECTABLE_KINDS,
        aliases=KIND_ALIASES,
        help="what to download (default: all the dataset has)",
    )
    return p


def _common_args(sp: argparse.ArgumentParser) -> None:
    a = sp.add_argument
    a("--repo", required=True, help="the dataset repo, ORG/NAME")
    add_save_path(sp, default=None)
    a("-m", "--model", action=ListOption, dest="models", help="models (default: all)")
    a("--prompts", action=ListOption, metavar="HASH", help="prompt hashes")
    a("--search", help="keep prompts whose text contains this")
    a("--meta", action="append", metavar="KEY=VALUE", help="keep prompts with this meta")
    a(
        "--layers",
        action=ListOption,
        join=True,
        help="all, first, middle, last, 3, -1, 0,2,4, 2-5 (default: all stored)",
    )
    a("--heads", action=ListOption, join=True, help="only these heads, LAYER.HEAD, e.g. 5.1,5.3")
    a(
        "--hooks",
        action=ListOption,
        help="only these hook points of --kinds hooks: names, globs or block sites, "
        "e.g. blocks.*.hook_mlp_out attn.hook_z (default: all stored)",
    )
    a("--revision", help="branch (push) or branch/tag/commit (pull)")
    a("--endpoint", help="the Hub's URL (default: $HF_ENDPOINT or huggingface.co)")
    a("-q", "--quiet", action="store_true", help="no progress on stderr")


def _selection_kwargs(args) -> dict:
    return dict(
        models=args.models,
        prompts=args.prompts,
        search=args.search,
        meta=args.meta,
        layers=args.layers,
        heads=args.heads,
        kinds=args.kinds,
        hooks=args.hooks,
        revision=args.revision,
        endpoint=args.endpoint,
        quiet=args.quiet,
    )


def main(argv=None, prog: str = "python -m lens_cache.hub") -> int:
    args = build_parser(prog).parse_args(argv)
    if args.command == "space":
        print(_space(args.space, args.dataset, args.revision, args.endpoint, args.private))
        return 0
    if args.command == "pull":
        report = pull(args.repo, args.save_path, **_selection_kwargs(args))
        print(report.save_path / INDEX_HTML)
        return 0
    report = push_to_hub(
        args.repo,
        args.save_path,
        dtype=args.dtype,
        private=args.private,
        message=args.message,
        shard_max_bytes=args.shard_max_bytes,
        commit_max_bytes=args.commit_max_bytes,
        dry_run=args.dry_run,
        **_selection_kwargs(args),
    )
    _print_push(report, args.quiet)
    if args.space and not report.dry_run:
        print(_space(args.space, args.repo, report.revision, args.endpoint, args.private))
    return 0


def _space(space: str, dataset: str, revision, endpoint, private: bool) -> str:
    return push_space(space, dataset, revision=revision, endpoint=endpoint, private=private)


def _print_push(report: PushReport, quiet: bool) -> None:
    if report.dry_run:
        for path, size in report.files:
            print(f"{size:>14,}  {path}")
        print(f"{len(report.files)} files, {report.total_bytes:,} bytes (dry run: nothing sent)")
        return
    log(
        f"[{report.repo_id}] {len(report.uploaded)} files uploaded "
        f"({report.bytes_uploaded:,} bytes) in {report.commits} commits, "
        f"{len(report.skipped)} already there, {len(report.deleted)} stale removed",
        quiet=quiet,
    )
    print(report.url)


if __name__ == "__main__":  # `python -m lens_cache.hub` hands over here
    from lens_cache.cli import run_cli

    raise SystemExit(run_cli(main))
