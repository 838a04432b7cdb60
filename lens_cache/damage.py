"""Damaged store files: whatever a decoder raises on a truncated or garbled file becomes one
`DamagedFileError` that names the file and the cure.

A disk that filled up, a copy cut short or a flipped bit shows up as `BadZipFile`, `zlib.error`,
`EOFError`, a `ValueError` from numpy or json, or safetensors' own error: none of which says
which file, nor what to do. A missing file is not damage (`FileNotFoundError` passes through,
as do our own named errors).
"""

from __future__ import annotations

import contextlib
import shlex
import zipfile
import zlib
from pathlib import Path

from lens_cache.errors import DamagedFileError, LensCacheError


def _decode_errors() -> tuple[type[BaseException], ...]:
    from safetensors import SafetensorError

    return (zipfile.BadZipFile, zlib.error, EOFError, ValueError, SafetensorError, OSError)


@contextlib.contextmanager
def reading(path: Path, store: Path):
    """Turn a decoding error met inside the block into `DamagedFileError` naming `path`."""
    try:
        yield
    except (LensCacheError, FileNotFoundError, PermissionError):
        raise
    except _decode_errors() as e:
        raise damaged(path, store, e) from e


def damaged(path: Path, store: Path, error: BaseException) -> DamagedFileError:
    """The error for a file that cannot be read: what, why, and the two commands that help."""
    return DamagedFileError(
        f"{path} is damaged ({type(error).__name__}: {error}); "
        f"`python -m lens_cache.cache verify -s {shlex.quote(str(store))}` lists every damaged "
        "file, and rerunning the export of that prompt with --force rewrites it",
        path,
    )
