"""Start-up: the commands that never run a model never import torch or TransformerLens.

Each command runs in a fresh interpreter (a module imported by an earlier test would hide an
import), and the child reports which of the heavy modules ended up in `sys.modules`.
"""

import json
import subprocess
import sys

import pytest

from lens_cache.synthetic import SMALL_MODEL, write_store

HEAVY = ("torch", "transformer_lens", "transformers")
CHILD = """
import json, runpy, sys
target, argv = sys.argv[1], sys.argv[2:]
try:
    if target == "lens-cache":  # the console script
        from lens_cache.cli.main import console_script
        sys.argv = [target, *argv]
        code = console_script()
    else:  # python -m target
        sys.argv = [target, *argv]
        runpy.run_module(target, run_name="__main__", alter_sys=True)
        code = 0
except SystemExit as e:
    code = e.code or 0
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
print("HEAVY " + json.dumps({{"code": code, "heavy": heavy}}), file=sys.stderr)
""".format(heavy=HEAVY)

COMMANDS = [
    ("lens-cache", ["--help"]),
    ("lens-cache", ["export", "--help"]),
    ("lens_cache.activations", ["--help"]),
    ("lens-cache", ["pool", "--help"]),
    ("lens-cache", ["hub", "--help"]),
    ("lens-cache", ["hub", "push", "--help"]),
    ("lens-cache", ["hub", "pull", "--help"]),
    ("lens-cache", ["serve", "--help"]),
    ("lens-cache", ["cache", "info", "-s", "{store}"]),
    ("lens-cache", ["cache", "list", "-s", "{store}"]),
    ("lens-cache", ["cache", "verify", "-s", "{store}"]),
    ("lens-cache", ["view", "-s", "{store}"]),
]


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    save = tmp_path_factory.mktemp("startup-store")
    write_store(save, models=[SMALL_MODEL], n_prompts=2, special=False)
    return save


@pytest.mark.parametrize(("module", "argv"), COMMANDS, ids=[" ".join(a) for _, a in COMMANDS])
def test_command_imports_no_model_library(module, argv, small_store, cli_env):
    argv = [a.format(store=small_store) for a in argv]
    result = subprocess.run(
        [sys.executable, "-c", CHILD, module, *argv],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = [line for line in result.stderr.splitlines() if line.startswith("HEAVY ")]
    assert report, result.stderr
    found = json.loads(report[-1].removeprefix("HEAVY "))
    assert found["code"] == 0, result.stderr
    if "--help" in argv:
        assert "usage:" in result.stdout  # the command really ran
    assert found["heavy"] == [], f"{module} {' '.join(argv)} imported {found['heavy']}"
