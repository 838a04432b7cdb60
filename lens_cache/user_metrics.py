"""User functions over attention patterns: per-head metrics and small matrices of your own.

Register a function of one head's pattern on one prompt; the viewer then computes it for every
stored head of every prompt, beside the built-in metrics::

    import numpy as np
    import lens_cache

    @lens_cache.metric
    def bos_share_late(pattern, tokens):
        \"\"\"Attention to position 0 from the second half of the rows.\"\"\"
        return float(pattern[len(tokens) // 2 :, 0].mean())

    @lens_cache.metric(kind="matrix")
    def squared(pattern, tokens):
        return pattern**2

`pattern` is ``Float[np.ndarray, "query_pos key_pos"]``: float32, read-only, causal, each row
summing to 1, exactly as stored. `tokens` are the prompt's stored string tokens, BOS included
when the model prepends one (stores written by pattern-lens: ``<bos>`` stands in for it).

- A ``"scalar"`` metric returns one number (NaN is allowed and shown as empty). The metrics page
  shows it as a sortable column and a heat map, averaged over prompts or for one prompt.
- A ``"matrix"`` metric returns a 2-D array. It is stored max-pooled to at most
  :data:`MATRIX_SIZE` cells a side (max, as the viewer's thumbnails: a one-cell diagonal
  survives), in float32, and the head view draws it beside the pattern.

Where it runs: `lens_cache.write_viewer` (``lens-cache view``) and an export's own viewer data.
On the command line, ``--metrics-module my_metrics`` (an import path or a ``.py`` file) on
``export`` and ``view`` imports your module, which registers its metrics as it is imported.
`lens_cache.read_user_metrics` reads the stored values back.

A prompt's viewer data is rebuilt when the registered metrics change: their names, kinds, or
their functions' code (a digest of the function's own bytecode and constants is recorded). A
change only in what the function calls is not seen: rebuild with ``write_viewer(..., force=True)``.

pattern-lens figure functions (``@register_attn_figure_func``) that return a matrix run
unchanged through :func:`from_pattern_lens`.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from jaxtyping import Float

from lens_cache.errors import UserMetricError

#: Largest side of a stored matrix; larger results are max-pooled down to it.
MATRIX_SIZE = 32
KINDS = ("scalar", "matrix")
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")

MetricFunc = Callable[[Float[np.ndarray, "query_pos key_pos"], list[str]], object]


@dataclass(frozen=True)
class UserMetric:
    """One registered metric: its `name`, `kind` ("scalar" or "matrix") and function."""

    name: str
    kind: str
    fn: MetricFunc
    digest: str

    def signature(self) -> str:
        """What a prompt's stamp records of this metric: rebuilt when it changes."""
        return f"{self.name}:{self.kind}:{self.digest}"


_REGISTRY: dict[str, UserMetric] = {}


def metric(fn: MetricFunc | None = None, *, name: str | None = None, kind: str = "scalar"):
    """Register `fn(pattern, tokens)` as a per-head metric; usable bare or with arguments.

    Args:
        fn (`Callable`): ``(pattern [T, T] float32, tokens list[str]) -> float | 2-D array``.
        name (`str`, *optional*, defaults to the function's ``__name__``): the column's name;
            letters, digits, ``_.-``, starting with a letter. Registering a name again
            replaces the earlier function (re-importing a module is harmless).
        kind (`str`, *optional*, defaults to ``"scalar"``): ``"scalar"`` or ``"matrix"``.

    Returns:
        The function itself (so it stays callable as written), or a decorator.

    Raises:
        `UserMetricError` (a `ValueError`): a bad name or kind, or `fn` not callable.

    Example:
        >>> @lens_cache.metric(kind="matrix")
        ... def squared(pattern, tokens):
        ...     return pattern**2
    """

    def register(func: MetricFunc) -> MetricFunc:
        _REGISTRY[_checked_name(func, name)] = _make(func, name, kind)
        return func

    return register if fn is None else register(fn)


def _checked_name(func, name: str | None) -> str:
    if not callable(func):
        raise UserMetricError(f"lens_cache.metric registers functions, got {func!r}", name)
    name = name if name is not None else getattr(func, "__name__", "")
    if not NAME_RE.match(str(name)):
        raise UserMetricError(
            f"metric name {name!r} is not usable: use letters, digits, '_', '.' or '-', starting "
            "with a letter (pass name=... to lens_cache.metric)",
            str(name),
        )
    return name


def _make(func, name: str | None, kind: str) -> UserMetric:
    name = _checked_name(func, name)
    if kind not in KINDS:
        raise UserMetricError(f"metric {name!r}: kind must be one of {KINDS}, got {kind!r}", name)
    return UserMetric(name, kind, func, code_digest(func))


def code_digest(func) -> str:
    """A short digest of a function's own bytecode and constants (of what it wraps, when it
    wraps a function): what tells a stamp that the metric changed."""
    target = getattr(func, "_lens_cache_source", func)
    code = getattr(target, "__code__", None)
    if code is None:
        return "-"
    return hashlib.md5(code.co_code + repr(code.co_consts).encode()).hexdigest()[:12]


def registered_metrics() -> tuple[UserMetric, ...]:
    """The registered metrics, sorted by name (the order of columns and of stored arrays)."""
    return tuple(_REGISTRY[name] for name in sorted(_REGISTRY))


def unregister(name: str) -> None:
    """Remove a registered metric (no error when it is not registered)."""
    _REGISTRY.pop(name, None)


def load_metrics_module(spec: str | Path):
    """Import the module that registers metrics: an import path (``my_pkg.metrics``) or a
    ``.py`` file. Returns the module.

    Raises:
        `UserMetricError`: the module cannot be found or raised while importing.
    """
    try:
        if str(spec).endswith(".py"):
            return _import_file(Path(spec))
        return importlib.import_module(str(spec))
    except UserMetricError:
        raise
    except Exception as e:  # the user's module: any error, reported with its name
        raise UserMetricError(f"--metrics-module {str(spec)!r}: {type(e).__name__}: {e}") from e


def _import_file(path: Path):
    if not path.is_file():
        raise UserMetricError(f"--metrics-module {str(path)!r}: no such file")
    name = "lens_cache_user_metrics_" + hashlib.md5(str(path.resolve()).encode()).hexdigest()[:8]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- pattern-lens functions


def from_pattern_lens(func, *, name: str | None = None, register: bool = True) -> MetricFunc:
    """A pattern-lens figure function as a ``"matrix"`` metric, run unchanged.

    pattern-lens registers ``(attn_matrix, save_dir) -> None`` functions with
    ``@register_attn_figure_func``; those made with its ``save_matrix_wrapper`` wrap a
    ``(attn_matrix) -> matrix`` function (reached through ``__wrapped__``, which
    ``functools.wraps`` sets), and that function is what runs here, on the same ``[T, T]``
    pattern (BOS included) that pattern-lens's ``figures_main`` hands it. A bare
    ``(attn_matrix) -> matrix`` function works too. Functions that draw on a matplotlib axis
    (``matplotlib_figure_saver``) return no matrix: run pattern-lens's ``figures_main`` on the
    store instead, and the head view lists the figures it wrote.

    Args:
        func: the pattern-lens function (as registered, or the function it wraps).
        name (`str`, *optional*, defaults to the figure's name): the metric's name.
        register (`bool`, *optional*, defaults to `True`): also register the metric.

    Returns:
        ``(pattern, tokens) -> matrix``, the function the metric runs.

    Raises:
        `UserMetricError`: when `func` returns no matrix (it draws a figure instead).

    Example:
        >>> from pattern_lens.attn_figure_funcs import ATTENTION_MATRIX_FIGURE_FUNCS
        >>> for f in ATTENTION_MATRIX_FIGURE_FUNCS:
        ...     lens_cache.from_pattern_lens(f)
    """
    inner = _matrix_function(func)
    figure = name or getattr(func, "__name__", None) or getattr(inner, "__name__", "")

    def adapted(pattern, tokens):
        return inner(pattern)

    adapted.__name__ = str(figure)
    adapted.__doc__ = getattr(inner, "__doc__", None)
    adapted._lens_cache_source = inner
    if register:
        metric(adapted, name=figure, kind="matrix")
    return adapted


def _matrix_function(func):
    """The ``(attn_matrix) -> matrix`` function inside a pattern-lens figure function."""
    for candidate in (func, getattr(func, "__wrapped__", None)):
        if candidate is not None and _positional_count(candidate) == 1:
            return candidate
    raise UserMetricError(
        f"{getattr(func, '__name__', func)!r} returns no matrix (pattern-lens's figure functions "
        "drawn with matplotlib save a file instead); run pattern-lens's figures_main on the "
        "store: the head view lists the figures it writes",
        getattr(func, "__name__", None),
    )


def _positional_count(func) -> int | None:
    try:
        params = inspect.signature(func, follow_wrapped=False).parameters.values()
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(p.kind in kinds and p.default is inspect.Parameter.empty for p in params)


# ---------------------------------------------------------------- computing


def compute_layer(
    metrics: Sequence[UserMetric],
    patterns: Float[np.ndarray, "n_heads query_pos key_pos"],
    tokens: list[str],
) -> dict[str, np.ndarray]:
    """Every metric on every head of one layer: ``[n_heads]`` float64 for a scalar,
    ``[n_heads, r, c]`` float32 (pooled to :data:`MATRIX_SIZE`) for a matrix."""
    out = {}
    for m in metrics:
        values = [_evaluate(m, _read_only(patterns[h]), tokens, h) for h in range(len(patterns))]
        if m.kind == "matrix" and len({v.shape for v in values}) > 1:
            raise UserMetricError(
                f"metric {m.name!r} returned matrices of different shapes across heads: "
                f"{sorted({v.shape for v in values})}",
                m.name,
            )
        out[m.name] = np.stack(values) if m.kind == "matrix" else np.array(values)
    return out


def _read_only(pattern: np.ndarray) -> np.ndarray:
    view = pattern.view()
    view.flags.writeable = False  # the stored values: a metric must not change them
    return view


def _evaluate(m: UserMetric, pattern: np.ndarray, tokens: list[str], head: int):
    try:
        value = m.fn(pattern, tokens)
    except Exception as e:  # the user's code: name the metric and the head, keep the cause
        raise UserMetricError(
            f"metric {m.name!r} raised {type(e).__name__} on head {head}: {e}", m.name
        ) from e
    return _as_matrix(m, value) if m.kind == "matrix" else _as_scalar(m, value)


def _as_scalar(m: UserMetric, value) -> float:
    arr = np.asarray(value)
    if arr.size != 1 or not np.issubdtype(arr.dtype, np.number):
        raise UserMetricError(
            f"metric {m.name!r} is a scalar metric but returned {_describe(arr)}; return one "
            "number, or register it with kind='matrix'",
            m.name,
        )
    return float(arr.reshape(()))


def _as_matrix(m: UserMetric, value) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim != 2 or arr.size == 0 or not np.issubdtype(arr.dtype, np.number):
        raise UserMetricError(
            f"metric {m.name!r} is a matrix metric but returned {_describe(arr)}; return a "
            "2-D numeric array",
            m.name,
        )
    return pool_matrix(arr.astype(np.float32))


def _describe(arr: np.ndarray) -> str:
    return f"{arr.dtype} of shape {arr.shape}"


def pool_matrix(m: np.ndarray, size: int = MATRIX_SIZE) -> np.ndarray:
    """Max-pool each side of `m` longer than `size` to `size` blocks (NaN-skipping)."""
    for axis in (0, 1):
        n = m.shape[axis]
        if n > size:
            starts = np.arange(size) * n // size  # strictly increasing when n > size
            m = np.fmax.reduceat(m, starts, axis=axis)
    return m
