"""An operation that rewrites a store takes the store's lock once, not once per step.

Counted through the `lens_cache.store_lock` audit event (every entry of `store_lock`, nested
ones too) and the `open` event of the lock file (what another process would wait on).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lens_cache import export
from lens_cache.locking import LOCK_NAME
from lens_cache.viewer import refresh_store

_seen: list[tuple[str, str]] | None = None  # audit hooks cannot be removed: off between tests


def _hook(event: str, args: tuple) -> None:
    if _seen is None:
        return
    if event == "lens_cache.store_lock":
        _seen.append(("enter", args[1]))
    elif event == "open" and str(args[0]).endswith(LOCK_NAME):
        _seen.append(("open", ""))


sys.addaudithook(_hook)


@pytest.fixture
def seen():
    global _seen
    _seen = []
    yield _seen
    _seen = None


def _export(model, save: Path) -> None:
    export(
        model,
        ["one prompt.", "two prompts here."],
        save_path=save,
        pool="last_token",
        hooks=("pattern", "resid_post"),
        quiet=True,
    )


def test_an_export_takes_the_lock_once_to_claim_and_once_to_close(gpt2_model, tmp_path, seen):
    _export(gpt2_model, tmp_path / "s")
    entries = [task.split(" ")[0] for kind, task in seen if kind == "enter"]
    assert entries == ["claiming", "writing"]  # the model's folder; indexes, viewer, pooled
    assert [kind for kind, _ in seen].count("open") == 2


def test_refresh_store_takes_the_lock_once(gpt2_model, tmp_path, seen):
    save = tmp_path / "s"
    _export(gpt2_model, save)
    seen.clear()
    report = refresh_store(save, quiet=True)
    assert report["viewer"] is not None
    assert seen == [("enter", "writing the indexes and the viewer"), ("open", "")]
