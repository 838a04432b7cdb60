"""Start-up: the commands that never run a model never import torch or TransformerLens.

docs/benchmarks.md (Speed) claims exactly COMMANDS: `--help` everywhere, `cache info/list/verify`
(this store holds no bfloat16 file, which verify reads with torch) and `view`. `hub pull`,
`hub push` of residual and hook kinds and `pool` import torch once they convert data.

Each command runs in a fresh interpreter (a module imported by an earlier test would hide an
import), and the child reports which of the heavy modules ended up in `sys.modules`.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

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


def test_readme_claims_what_this_test_runs():
    """docs/benchmarks.md's start-up sentence names the commands above, no more (`--help`)."""
    readme = (Path(__file__).parent.parent / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    sentence = readme.split("Start-up: ", 1)[1].split("import neither torch", 1)[0]
    claimed = set(re.findall(r"`([^`]+)`", sentence))
    runs = {" ".join(a for a in argv if not a.startswith(("-s", "{"))) for _, argv in COMMANDS}
    assert claimed == {"--help"} | {r for r in runs if "--help" not in r}, sentence
