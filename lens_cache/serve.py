"""Serve a store's viewer over HTTP, for a store on a remote machine (ssh -L 8000:...:8000).

The viewer needs no server: open ``<save>/index.html`` straight from disk. This is only for
when the files are not on your own disk. It binds 127.0.0.1 unless told otherwise, and serves
the folder through the handler's ``directory=`` (the process's working directory is left
alone).

Example:
    python -m lens_cache.serve -s runs/gpt2 --port 8000
"""

from __future__ import annotations

import argparse
import functools
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from lens_cache.activations import default_save_path
from lens_cache.cli import run_cli
from lens_cache.errors import LensCacheError, ServeError, StoreNotFoundError


def make_server(save_path: Path, *, host: str = "127.0.0.1", port: int = 8000):
    """A `ThreadingHTTPServer` serving `save_path` (not started; call ``serve_forever``).

    Raises:
        `FileNotFoundError`: when `save_path` has no ``index.html`` (run write_viewer first).
    """
    root = Path(save_path).resolve()
    if not (root / "index.html").is_file():
        raise StoreNotFoundError(
            f"{root}: no index.html; build the viewer first (lens_cache.viewer.write_viewer)"
        )
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    return ThreadingHTTPServer((host, port), handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lens_cache.serve", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "-s",
        "--save-path",
        type=Path,
        default=Path(default_save_path()),
        help="the store folder (default: $LENS_CACHE_DIR, else lens_cache_data)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    try:
        server = make_server(args.save_path, host=args.host, port=args.port)
    except LensCacheError:
        raise
    except OSError as err:  # the port is taken, the address is not ours, ...
        raise ServeError(f"cannot serve on {args.host}:{args.port}: {err.strerror or err}") from err
    host, port = server.server_address[:2]
    print(f"serving {args.save_path.resolve()} at http://{host}:{port}/index.html", file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
