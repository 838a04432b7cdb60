"""`python -m lens_cache.cache` (`lens-cache cache`): look after a store. See `lens_cache.cache`
for what each command does."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lens_cache.cache import (
    GB,
    KINDS,
    STORE_ROW,
    clear_model,
    human,
    prune,
    store_sizes,
    verify_store,
)
from lens_cache.cli.args import ListOption, Parser, add_save_path
from lens_cache.progress import log, warn
from lens_cache.reader import open_store
from lens_cache.upgrade import upgrade_store


def _print_table(rows: dict) -> None:
    columns = ("prompts", *KINDS, "total")
    width = max(len(r) for r in [*rows, "model", "total"])
    print(f"{'model':<{width}}  " + "  ".join(f"{c:>10}" for c in columns))
    totals = {c: sum(r[c] for r in rows.values()) for c in columns}
    for name, row in [*rows.items(), ("total", totals)]:
        prompts = "" if name == STORE_ROW else str(row["prompts"])
        cells = [prompts] + [human(row[c]) for c in columns[1:]]
        print(f"{name:<{width}}  " + "  ".join(f"{c:>10}" for c in cells))


def cmd_info(args) -> int:
    rows = store_sizes(Path(args.save_path))
    if args.json:
        print(json.dumps({"save_path": str(args.save_path), "models": rows}, indent=2))
    else:
        _print_table(rows)
    return 0


def cmd_list(args) -> int:
    store = open_store(args.save_path)
    for model in args.models or store.models():
        for record in store.prompts(model):
            if args.json:
                print(json.dumps({"model": model, **record}, ensure_ascii=False))
                continue
            preview = record.get("text", "")[:60].replace("\n", "\\n").replace("\t", "\\t")
            print(f"{model}\t{record['hash']}\t{record.get('n_tokens', '')}\t{preview}")
    return 0


def cmd_verify(args) -> int:
    save = Path(args.save_path)
    problems, n_prompts = verify_store(save, quiet=args.quiet)
    for p in problems:
        print(f"{p.status}\t{p.path}\t{p.reason}")
    status = f"{len(problems)} problems" if problems else "all files readable"
    log(f"verified {n_prompts} prompt folders in {save}: {status}", quiet=args.quiet)
    return 1 if problems else 0


def cmd_prune(args) -> int:
    removed, total = prune(Path(args.save_path), int(args.max_gb * GB), dry_run=args.dry_run)
    for folder in removed:
        print(folder)
    verb = "would remove" if args.dry_run else "removed"
    log(f"{verb} {len(removed)} prompt folders; the store holds {human(total)}", quiet=args.quiet)
    if total > args.max_gb * GB:
        warn(f"still above {args.max_gb} GB: what is left is not prompt data (pooled, viewer)")
    return 0


def cmd_clear(args) -> int:
    print(clear_model(Path(args.save_path), args.model))
    return 0


def cmd_upgrade(args) -> int:
    tokenizers = dict(args.tokenizer or [])
    done = upgrade_store(Path(args.save_path), tokenizers, log=lambda m: log(m, quiet=args.quiet))
    log(f"{sum(done.values())} prompt.json files upgraded", quiet=args.quiet)
    return 0


def _model_tokenizer(text: str) -> tuple[str, str]:
    model, sep, source = text.partition("=")
    if not (model and sep and source):
        raise argparse.ArgumentTypeError(f"expected MODEL=PATH_OR_NAME, got {text!r}")
    return model, source


# --- CLI -------------------------------------------------------------------------------------


def build_parser(prog: str = "python -m lens_cache.cache") -> argparse.ArgumentParser:
    p = Parser(
        prog=prog,
        description="Look after a lens_cache store: sizes, listing, integrity, eviction.",
    )
    add_save_path(p)
    common = Parser(add_help=False)
    # SUPPRESS: given after the command it overrides the one before, else leaves it alone.
    add_save_path(common, default=argparse.SUPPRESS)
    common.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = sub.add_parser("info", parents=[common], help="sizes by model and kind")
    info.add_argument("--json", action="store_true", help="print JSON (bytes) instead of a table")
    ls = sub.add_parser("list", parents=[common], help="the prompts of each model")
    ls.add_argument("-m", "--model", action=ListOption, dest="models", help="only these models")
    ls.add_argument("--json", action="store_true", help="one JSON record per line")
    sub.add_parser("verify", parents=[common], help="re-read every file; exit 1 on problems")
    prune_p = sub.add_parser("prune", parents=[common], help="evict least recently used prompts")
    prune_p.add_argument(
        "--max-gb", type=_gigabytes, required=True, help="size to prune down to (1 GB = 1e9 B)"
    )
    prune_p.add_argument("-n", "--dry-run", action="store_true", help="only say what would go")
    clear = sub.add_parser("clear", parents=[common], help="remove one model")
    clear.add_argument("-m", "--model", required=True, help="the model to remove")
    up = sub.add_parser(
        "upgrade",
        parents=[common],
        help="rewrite prompt.json files of an older lens_cache with pattern-lens's fields",
    )
    up.add_argument(
        "--tokenizer",
        type=_model_tokenizer,
        action="append",
        metavar="MODEL=PATH_OR_NAME",
        help="the tokenizer of MODEL, when its model_cfg.json's tokenizer_name does not load",
    )
    return p


def _gigabytes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of GB: {text!r}") from None
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


COMMANDS = {
    "info": cmd_info,
    "list": cmd_list,
    "verify": cmd_verify,
    "prune": cmd_prune,
    "clear": cmd_clear,
    "upgrade": cmd_upgrade,
}


def main(argv=None, prog: str = "python -m lens_cache.cache") -> int:
    args = build_parser(prog).parse_args(argv)
    return COMMANDS[args.command](args)


if __name__ == "__main__":  # `python -m lens_cache.cache` hands over here
    from lens_cache.cli import run_cli

    raise SystemExit(run_cli(main))
