"""Damaged store files: whatever a decoder raises on a truncated or garbled file becomes one
`DamagedFileError` that names the file and the cure.

A disk that filled up, a copy cut short or a flipped bit shows up as `BadZipFile`, `zlib.error`,
`EOFError`, a `ValueError` from numpy or json, or safetensors' own error: none of which says
which file, nor what to do. A missing file is not damage (`FileNotFoundError` passes through,
as do our own named errors).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import zipfile
import zlib
from pathlib import Path

from lens_cache.errors import DamagedFileError, LensCacheError, StoreLinkError


def _decode_errors() -> tuple[type[BaseException], ...]:
    from safetensors import SafetensorError

    return (zipfile.BadZipFile, zlib.error, EOFError, ValueError, SafetensorError, OSError)


@contextlib.contextmanager
def reading(path: Path, store: Path):
    """Refuse `path` when it is a link (see `refuse_links`), then turn a decoding error met
    inside the block into `DamagedFileError` naming `path`."""
    refuse_links(path, store)
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


def refuse_links(path: Path, store: Path) -> None:
    """Raise `StoreLinkError` when `path`, or a folder between the store's root and it, is a
    symbolic link, or `path` is not inside the store at all. Nothing is followed: a store
    from elsewhere cannot point a reader at a file outside it (one `lstat` per component).
    """
    relative = os.path.relpath(path, store)
    if relative == os.pardir or relative.startswith(os.pardir + os.sep):
        raise StoreLinkError(f"{path} is outside the store {store}; refused", path)
    current = Path(store)
    for part in Path(relative).parts:
        current = current / part
        if current.is_symlink():
            raise StoreLinkError(
                f"{current} is a symbolic link (to {os.readlink(current)}); lens_cache never "
                "follows links inside a store, so that a store from elsewhere cannot make it "
                "read or write outside its folder: replace the link by the file itself",
                current,
            )
