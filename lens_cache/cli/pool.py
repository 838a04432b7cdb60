"""`python -m lens_cache.pooled` (`lens-cache pool`): pool the stored residuals of a store."""

from __future__ import annotations

import argparse

from lens_cache.cli.args import Parser, add_no_fsync, add_save_path
from lens_cache.layout import POOLS, RESID_KINDS
from lens_cache.pooled import DEFAULT_SHARD_MAX_BYTES, write_pooled
from lens_cache.reader import open_store


def build_parser(prog: str = "python -m lens_cache.pooled") -> argparse.ArgumentParser:
    p = Parser(
        prog=prog,
        description="Pool stored residuals to one vector per prompt and layer, written as a "
        "sharded parquet dataset under <save>/<model>/pooled/<hook>-<pool>/.",
    )
    add_save_path(p)
    p.add_argument(
        "-m", "--model", action="append", dest="models", help="model to pool (default: all)"
    )
    p.add_argument(
        "--hook",
        default="resid_post",
        help=f"{', '.join(RESID_KINDS)}, or the site of another hook stored per layer "
        "(hook_mlp_out, attn.hook_z, mlp.hook_post)",
    )
    p.add_argument(
        "--pool",
        default="last_token",
        choices=POOLS,
        help="how a prompt's tokens become one vector: one token, or the mean (_real: without "
        "the BOS token)",
    )
    p.add_argument(
        "--shard-max-bytes",
        type=int,
        default=DEFAULT_SHARD_MAX_BYTES,
        help="most bytes per parquet shard",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    add_no_fsync(p)
    return p


def main(argv=None, prog: str = "python -m lens_cache.pooled") -> int:
    args = build_parser(prog).parse_args(argv)
    store = open_store(args.save_path)
    for model in args.models or store.models():
        path = write_pooled(
            args.save_path,
            model,
            args.hook,
            args.pool,
            shard_max_bytes=args.shard_max_bytes,
            quiet=args.quiet,
        )
        print(path)
    return 0


if __name__ == "__main__":  # `python -m lens_cache.pooled` hands over here
    from lens_cache.cli import run_cli

    raise SystemExit(run_cli(main))
