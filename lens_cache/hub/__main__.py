"""`python -m lens_cache.hub`: the same as `lens-cache hub` (`lens_cache.cli.hub`), run by name
(runpy): the library never imports its command line, a layer above it."""

import runpy

runpy.run_module("lens_cache.cli.hub", run_name="__main__")
