"""`python -m lens_cache.serve`: the same as `lens-cache serve` (`lens_cache.cli.serve`)."""

from lens_cache.cli import run_cli
from lens_cache.cli.serve import main

if __name__ == "__main__":
    raise SystemExit(run_cli(main))
