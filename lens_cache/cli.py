"""The one place where errors become messages: `run_cli(main)` for every command."""

from __future__ import annotations

import os
import sys

from lens_cache.errors import LensCacheError

EXIT_USAGE = 2


def run_cli(main, argv=None) -> int:
    """Run `main(argv)`; a `LensCacheError` becomes one line on stderr and exit code 2.

    `LENS_CACHE_DEBUG=1` re-raises instead, to show the traceback.
    """
    try:
        return main(argv) or 0
    except LensCacheError as e:
        if os.environ.get("LENS_CACHE_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
