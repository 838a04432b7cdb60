"""`python -m lens_cache.hub`: the same as `lens-cache hub` (`lens_cache.cli.hub`)."""

from lens_cache.cli import run_cli
from lens_cache.cli.hub import main

raise SystemExit(run_cli(main))
