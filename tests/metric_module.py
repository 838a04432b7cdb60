"""Metrics a user registers in a module of their own, for tests/test_user_metrics.py: imported by
`lens_cache.load_metrics_module` (or `--metrics-module`), which registers them as it imports."""

import numpy as np

import lens_cache

SCALAR, MATRIX = "late_bos", "squared_rows"


@lens_cache.metric(name=SCALAR)
def late_bos(pattern, tokens):
    """Attention to position 0 from the rows of the second half of the prompt."""
    return float(pattern[len(tokens) // 2 :, 0].mean(dtype=np.float64))


@lens_cache.metric(name=MATRIX, kind="matrix")
def squared_rows(pattern, tokens):
    """Every other row of the pattern, squared: a matrix that is not square."""
    return pattern[::2] ** 2
