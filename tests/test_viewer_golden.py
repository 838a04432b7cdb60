"""The viewer's bytes of fixed stores, against hashes recorded in tests/data/viewer_golden.json.

The hashes were produced by the code as it stood before the viewer, the Hub, `cache` and
`notebook` were moved onto `reader.Store` and `lens_cache.formats` (the read-path change): that
change must not alter one byte a user's viewer holds, and a refactor of the read path later must
not either. This is a regression guard, not a check of correctness (the browser tests compare the
page with the stored values): when the viewer's output changes on purpose, record the hashes
again with `LENS_CACHE_RECORD_GOLDEN=1 pytest tests/test_viewer_golden.py` and say why in the
commit.

Three stores: the synthetic one (patterns as npz, float32 and bfloat16 residuals, a prompt with
few layers, hostile text), one as pattern-lens writes it (npz and stacked .npy, no BOS), both
made without a model so their bytes are the same under either TransformerLens major; and a real
export of the tiny GPT-2 with every kind the viewer shows, whose floats depend on the major, so
its hashes are kept per major. `stamp.json`, `manifest.npz` and `top/source.json` are left out:
they record the source files' mtimes, which differ from run to run.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from tests.helpers import REPO, TL_MAJOR, quiet, write_pattern_lens_store

GOLDEN = REPO / "tests" / "data" / "viewer_golden.json"
UNSTABLE = {"stamp.json", "manifest.npz", "source.json"}
EXPORT_TEXTS = [
    "The cat sat on the mat. The cat sat on the mat again, and then it slept.",
    "Short one.",
    " ".join(["the lighthouse keeper counted ships and birds"] * 8),
]
EXPORT_HOOKS = ["pattern", "resid_post", "logits", "logit_lens", "head_contributions"]


def viewer_hashes(save: Path) -> dict[str, str]:
    """sha256 of every viewer file under `save` (index.html, viewer/, viewer_data/)."""
    files = [save / "index.html", *(save / "viewer").rglob("*"), *(save / "viewer_data").rglob("*")]
    return {
        p.relative_to(save).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(files)
        if p.is_file() and p.name not in UNSTABLE
    }


def synthetic_viewer(tmp: Path) -> dict[str, str]:
    from lens_cache.synthetic import write_store
    from lens_cache.viewer import write_viewer

    save = write_store(tmp / "synthetic", n_prompts=2)["save_path"]
    write_viewer(save, log=quiet, workers=1)
    return viewer_hashes(save)


def pattern_lens_viewer(tmp: Path) -> dict[str, str]:
    from lens_cache.viewer import write_viewer

    (tmp / "pl").mkdir()
    save, _, _ = write_pattern_lens_store(tmp / "pl")
    write_viewer(save, log=quiet, workers=1)
    return viewer_hashes(save)


def export_viewer(tmp: Path, model) -> dict[str, str]:
    """A real export (viewer data made from the tensors in memory), then the viewer built again
    from disk (`force`): both must give the recorded bytes."""
    from lens_cache import export
    from lens_cache.viewer import write_viewer

    save = tmp / "export"
    export(model, prompts=EXPORT_TEXTS, save_path=save, hooks=EXPORT_HOOKS, quiet=True)
    from_memory = viewer_hashes(save)
    write_viewer(save, log=quiet, workers=1, force=True)
    assert viewer_hashes(save) == from_memory, "from disk and from memory differ"
    return from_memory


def golden() -> dict:
    return json.loads(GOLDEN.read_text(encoding="utf-8")) if GOLDEN.is_file() else {}


def _check(key: str, found: dict[str, str]) -> None:
    if os.environ.get("LENS_CACHE_RECORD_GOLDEN"):
        recorded = golden()
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps({**recorded, key: found}, indent=0, sort_keys=True) + "\n")
        return
    expected = golden()[key]
    changed = sorted(k for k in expected.keys() | found.keys() if expected.get(k) != found.get(k))
    assert not changed, f"viewer files differ from the golden: {changed[:10]}"


def test_synthetic_store_viewer_unchanged(tmp_path):
    _check("synthetic", synthetic_viewer(tmp_path))


def test_pattern_lens_store_viewer_unchanged(tmp_path):
    _check("pattern_lens", pattern_lens_viewer(tmp_path))


def test_export_viewer_unchanged(tmp_path, gpt2_model, one_thread):
    key = f"export-tl{TL_MAJOR}"
    if key not in golden() and not os.environ.get("LENS_CACHE_RECORD_GOLDEN"):
        pytest.skip(f"no hashes recorded under TransformerLens {TL_MAJOR}")
    _check(key, export_viewer(tmp_path, gpt2_model))
