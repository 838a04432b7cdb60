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


# --- what the viewer shows ---------------------------------------------------------------------


def js_to_precision(x: float, digits: int = 6) -> str:
    """JavaScript's `Number(x).toPrecision(digits)`: the nearest `digits`-digit decimal (ties
    away from zero), in fixed notation unless the exponent is below -6 or at least `digits`."""
    from decimal import ROUND_HALF_UP, Decimal

    d = abs(Decimal(x))  # the exact binary value
    e = d.adjusted()
    mantissa = d.scaleb(-e).quantize(Decimal(1).scaleb(1 - digits), rounding=ROUND_HALF_UP)
    if mantissa >= 10:
        mantissa, e = mantissa.scaleb(-1).quantize(Decimal(1).scaleb(1 - digits)), e + 1
    sign, ds = "-" if x < 0 else "", str(mantissa).replace(".", "")
    if e < -6 or e >= digits:
        return f"{sign}{ds[0]}.{ds[1:]}e{'+' if e >= 0 else '-'}{abs(e)}"
    if e < 0:
        return f"{sign}0.{'0' * (-e - 1)}{ds}"
    return sign + ds[: e + 1] + (f".{ds[e + 1 :]}" if e + 1 < digits else "")


def shown_value(stored: float) -> str:
    """The tooltip's value line for a stored pattern value: the viewer holds it as float16 and
    prints six significant digits (web/core.js `fmtValue`)."""
    import numpy as np

    half = float(np.float16(stored))
    return "value 0" if half == 0 else f"value {js_to_precision(half)}"


def small_cells(pattern, limit: int, n: int = 3) -> list[tuple[int, int]]:
    """`n` cells (query i, key j < i) of the lower triangle within the first `limit` rows with the
    smallest non-zero values: where a value read from a colour or rounded too coarsely shows."""
    import numpy as np

    rows, cols = np.tril_indices(min(limit, pattern.shape[0]), k=-1)
    values = pattern[rows, cols]
    order = [k for k in np.argsort(values, kind="stable") if values[k] > 0][:n]
    return [(int(rows[k]), int(cols[k])) for k in order]
