"""`python -m lens_cache.serve` (`lens-cache serve`): serve a store's viewer over HTTP on
127.0.0.1, for a store on a remote machine (see `lens_cache.viewer.serve`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lens_cache.cli.args import Parser, add_save_path
from lens_cache.errors import LensCacheError, ServeError
from lens_cache.layout import INDEX_HTML, default_save_path
from lens_cache.viewer.serve import make_server

DESCRIPTION = (
    "Serve a store's viewer over HTTP, for a store on a remote machine: run this there, then "
    "on your own machine `ssh -L 8000:localhost:8000 user@remote-host` and open "
    "http://localhost:8000/index.html."
)


def build_parser(prog: str = "python -m lens_cache.serve") -> argparse.ArgumentParser:
    parser = Parser(prog=prog, description=DESCRIPTION)
    add_save_path(parser, default=Path(default_save_path()), type=Path)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free)")
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m lens_cache.serve") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        server = make_server(args.save_path, host=args.host, port=args.port)
    except LensCacheError:
        raise
    except OSError as err:  # the port is taken, the address is not ours, ...
        raise ServeError(f"cannot serve on {args.host}:{args.port}: {err.strerror or err}") from err
    host, port = server.server_address[:2]
    url = f"http://{host}:{port}/{INDEX_HTML}"
    print(f"serving {args.save_path.resolve()} at {url}", file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
