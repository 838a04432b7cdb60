"""Errors by meaning: named classes, each with the exit code the command line ends with, and
the `lens-cache` command, whose subcommands are the `python -m` commands."""

from __future__ import annotations

import inspect
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import lens_cache
from lens_cache import errors
from lens_cache.cli import run_cli
from lens_cache.cli import serve as serve_cli
from lens_cache.synthetic import SMALL_MODEL, write_store
from lens_cache.viewer import write_viewer

ERRORS = [
    c
    for _, c in inspect.getmembers(errors, inspect.isclass)
    if issubclass(c, errors.LensCacheError)
]


def test_every_error_has_an_exit_code_and_a_builtin():
    codes = {errors.EXIT_BAD_INPUT, errors.EXIT_ENVIRONMENT, errors.EXIT_NETWORK}
    assert codes == {2, 3, 4}
    for cls in ERRORS:
        assert cls.exit_code in codes, cls
        if cls not in (errors.LensCacheError, errors.EnvironmentFailure, errors.NetworkFailure):
            builtins = [b for b in cls.__mro__ if b.__module__ == "builtins"]
            assert builtins[0] is not Exception, f"{cls.__name__} subclasses no specific builtin"
    assert errors.HubTransferError.exit_code == 4 and errors.ServeError.exit_code == 3
    assert errors.PromptsFileNotFoundError.exit_code == 2


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"hooks": ["pattern", "attn_out"]}, "unknown hooks ['attn_out']"),
        ({"on_long": "truncate"}, "on_long must be 'skip' or 'fail'"),
        ({"resid_dtype": "int8"}, "resid_dtype must be one of"),
        ({"pool": "median"}, "unknown pool ['median']"),
        ({"min_chars": 0}, "min_chars must be at least 1"),
    ],
)
def test_an_invalid_option_raises_invalid_option_error(kwargs, fragment, tmp_path):
    with pytest.raises(errors.InvalidOptionError, match=fragment.replace("[", r"\[")) as info:
        lens_cache.export("no-model-needed", ["text"], tmp_path / "store", **kwargs)
    assert isinstance(info.value, ValueError) and info.value.exit_code == 2
    assert not (tmp_path / "store").exists()  # refused before anything is written


def test_run_cli_exits_with_the_errors_code(tmp_path, capsys):
    store = write_store(tmp_path / "s", models=[SMALL_MODEL])["save_path"]
    write_viewer(store, log=lambda _: None)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = run_cli(serve_cli.main, ["-s", str(store), "--port", str(port)])
    err = capsys.readouterr().err
    assert code == 3 and err.startswith(f"error: cannot serve on 127.0.0.1:{port}")
    assert run_cli(serve_cli.main, ["-s", str(tmp_path / "none")]) == 2


def test_lens_cache_command_runs_each_subcommand(tmp_path):
    exe = shutil.which("lens-cache", path=str(Path(sys.executable).parent))
    assert exe, "the lens-cache console script is not installed ([project.scripts])"
    store = write_store(tmp_path / "s", models=[SMALL_MODEL])["save_path"]
    view = subprocess.run([exe, "view", "-s", str(store), "-q"], capture_output=True, text=True)
    assert view.returncode == 0, view.stderr
    assert view.stdout.strip() == str(store / "index.html") and (store / "index.html").is_file()
    listed = subprocess.run(
        [exe, "cache", "list", "-s", str(store)], capture_output=True, text=True
    )
    old = subprocess.run(
        [sys.executable, "-m", "lens_cache.cache", "list", "-s", str(store)],
        capture_output=True,
        text=True,
    )
    assert listed.returncode == old.returncode == 0 and listed.stdout == old.stdout != ""
    for sub in ("export", "pool", "cache", "hub", "serve", "view"):
        helped = subprocess.run([exe, sub, "--help"], capture_output=True, text=True)
        assert helped.returncode == 0 and f"usage: lens-cache {sub}" in helped.stdout
    missing = subprocess.run([exe, "view", "-s", str(tmp_path / "none")], capture_output=True)
    assert missing.returncode == 2 and missing.stderr.startswith(b"error: no store at")
