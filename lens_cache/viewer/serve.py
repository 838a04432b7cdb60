"""Serve a store's viewer over HTTP, for a store on a remote machine (ssh -L 8000:...:8000).

The viewer needs no server: open ``<save>/index.html`` straight from disk. This is only for
when the files are not on your own disk. It binds 127.0.0.1 unless told otherwise, and serves
the folder through the handler's ``directory=`` (the process's working directory is left
alone).

Example:
    python -m lens_cache.serve -s runs/gpt2 --port 8000
"""

from __future__ import annotations

import functools
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from lens_cache.errors import StoreNotFoundError
from lens_cache.layout import INDEX_HTML


def make_server(save_path: Path, *, host: str = "127.0.0.1", port: int = 8000):
    """A `ThreadingHTTPServer` serving `save_path` (not started; call ``serve_forever``).

    Raises:
        StoreNotFoundError: `save_path` has no ``index.html`` (run write_viewer first).
    """
    root = Path(save_path).resolve()
    if not (root / INDEX_HTML).is_file():
        raise StoreNotFoundError(
            f"{root}: no index.html; build the viewer first (lens_cache.viewer.write_viewer)"
        )
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    return ThreadingHTTPServer((host, port), handler)
