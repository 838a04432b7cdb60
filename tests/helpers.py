"""Helpers the test modules share (fixtures live in conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest

from lens_cache.adapter import tl_major

REPO = Path(__file__).resolve().parents[1]
TL_MAJOR = tl_major()
REQUIRE_BROWSERS = "LENS_CACHE_REQUIRE_BROWSERS"


def browsers_required() -> bool:
    """`make test` (and so CI) sets LENS_CACHE_REQUIRE_BROWSERS=1: there every browser test must
    run. A bare `pytest` on a machine without the browsers skips them instead."""
    return os.environ.get(REQUIRE_BROWSERS, "") not in ("", "0") or bool(os.environ.get("CI"))


def missing_browser(why: str, install: str) -> NoReturn:
    """Skip a browser test whose browser or driver is missing, or fail it where browsers are
    required, so a CI run can never pass with its browser tests skipped."""
    if browsers_required():
        pytest.fail(f"{why}, and {REQUIRE_BROWSERS}=1 requires the browser tests ({install})")
    pytest.skip(f"{why}; `make test` installs it ({install})")
