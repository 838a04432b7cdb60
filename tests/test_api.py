"""The public API: what `lens_cache/__init__.py` imports lazily (`_LAZY`) is exactly what its
`if TYPE_CHECKING:` block shows IDEs and type checkers, name for name and from the same place."""

import ast
import importlib
from pathlib import Path

import lens_cache

INIT = Path(lens_cache.__file__)


def _type_checking_imports() -> dict[str, tuple[str, str]]:
    """`{public name: (module, attribute)}` of the imports under `if TYPE_CHECKING:`."""
    tree = ast.parse(INIT.read_text())
    block = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
    )
    found = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom), ast.dump(node)
        for alias in node.names:
            found[alias.asname or alias.name] = (node.module, alias.name)
    return found


def test_the_type_checking_block_lists_the_lazy_names():
    lazy = {
        name: target if isinstance(target, tuple) else (target, name)
        for name, target in lens_cache._LAZY.items()
    }
    assert _type_checking_imports() == lazy


def test_each_lazy_name_resolves_to_what_the_block_names():
    for name, (module, attribute) in _type_checking_imports().items():
        assert getattr(lens_cache, name) is getattr(importlib.import_module(module), attribute)
