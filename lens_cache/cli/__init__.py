"""The command lines, one module per command (`lens-cache COMMAND` is `main.py`), and the one
place where errors become messages: `run_cli(main)` for every command."""

from __future__ import annotations

import os
import sys

from lens_cache.errors import WRITE_ERRNOS, LensCacheError, StoreWriteError


def run_cli(main, argv=None) -> int:
    """Run `main(argv)`; a `LensCacheError` becomes one line on stderr and its `exit_code`
    (2 bad input, 3 environment, 4 network: see `lens_cache.errors`).

    `LENS_CACHE_DEBUG=1` re-raises instead, to show the traceback.
    """
    debug = bool(os.environ.get("LENS_CACHE_DEBUG"))
    try:
        return main(argv) or 0
    except LensCacheError as e:
        if debug:
            raise
        return _report(e)
    except OSError as e:
        if debug or e.errno not in WRITE_ERRNOS:
            raise
        return _report(StoreWriteError.from_oserror(e.filename or "a file", e))
    except KeyboardInterrupt:
        print(f"{_rank_prefix()}interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


def _report(error: LensCacheError) -> int:
    print(f"{_rank_prefix()}error: {error}", file=sys.stderr)
    return error.exit_code


def _rank_prefix() -> str:
    """`rank N: ` under torchrun with several processes (their lines interleave), else ''."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"rank {os.environ.get('RANK', '?')}: "
    return ""
