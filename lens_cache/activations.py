"""`python -m lens_cache.activations`: the same as `lens-cache export` (`lens_cache.cli.export`);
also what `torchrun -m lens_cache.activations` runs."""

from lens_cache.cli import run_cli
from lens_cache.cli.export import main

if __name__ == "__main__":
    raise SystemExit(run_cli(main))
