"""Every module of lens_cache sits in a layer of the import contract in pyproject.toml.

import-linter checks only the modules a contract names: a module in no layer may import
anything and be imported by anything, so a new module left out of `[tool.importlinter]` would
quietly escape the layering. This test reads the contract itself (not the code under test) and
the package's files.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: import-linter's own dependency reads TOML
    import tomli as tomllib

import pytest

from tests.helpers import REPO

PACKAGE = REPO / "lens_cache"


def contracts() -> list[dict]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return config["tool"]["importlinter"]["contracts"]


def layered_modules() -> set[str]:
    """The modules the layers contract names (`a : b` and `a | b` hold several)."""
    layers = next(c["layers"] for c in contracts() if c["type"] == "layers")
    return {name.strip() for layer in layers for name in re.split(r"[:|]", layer)}


def package_modules() -> set[str]:
    """lens_cache's top-level modules, and its subpackages that hold code (the packages of
    data files, `web` and `data`, hold only an `__init__.py`)."""
    found = {f"lens_cache.{p.stem}" for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    for folder in PACKAGE.iterdir():
        if folder.is_dir() and any(p.name != "__init__.py" for p in folder.glob("*.py")):
            found.add(f"lens_cache.{folder.name}")
    return found


def test_every_module_is_in_a_layer():
    missing = sorted(package_modules() - layered_modules())
    assert not missing, f"add these to a layer of [tool.importlinter] in pyproject.toml: {missing}"


def test_the_layers_name_only_modules_that_exist():
    stale = sorted(layered_modules() - package_modules())
    assert not stale, f"the layers name modules that are gone: {stale}"


def test_no_import_is_ignored():
    """The contracts hold without exceptions: `ignore_imports` would hide a real import."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    ignoring = [
        c["name"] for c in config["tool"]["importlinter"]["contracts"] if "ignore_imports" in c
    ]
    assert not ignoring, f"contracts with ignore_imports: {ignoring}"


@pytest.mark.parametrize("module", ["lens_cache.pooled", "lens_cache.cache", "lens_cache.hub"])
def test_python_m_forms_reach_their_command_line(module):
    """The library modules hand `python -m` over to lens_cache.cli by name: the command line's
    own help must come out."""
    done = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: python -m {module} "), done.stdout[:200]
