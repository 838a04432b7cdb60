"""Top examples per head: store.top_examples equals a brute-force scan over every stored
prompt's patterns, value norms and DLA, also after --force on some prompts and a cache prune."""

import numpy as np
import pytest

import lens_cache
from lens_cache.cache import prune
from lens_cache.errors import ActivationsMissingError, HeadSelectionError
from tests.helpers import brute_force_top

PROMPTS = [
    "The lighthouse keeper kept two logbooks.",
    "a b a b c a b c d e",
    "Heat rises; the cooler surface sinks.",
    "The river froze and the mill stood idle all winter long.",
    "Bakers roasted chestnuts while the bread cooled.",
    "x",
]
HOOKS = ("pattern", "head_contributions")


def check_all_heads(store, model: str, n_layers: int, n_heads: int) -> None:
    for layer in range(n_layers):
        for head in range(n_heads):
            for by in ("attention", "value_weighted", "dla"):
                got = store.top_examples(model, layer, head, by=by)
                want = brute_force_top(store, model, layer, head, by, 32)
                assert [(g["hash"], g["query"], g["key"]) for g in got] == [
                    (h, q, k) for _, h, q, k in want
                ], (layer, head, by)
                np.testing.assert_array_equal([g["value"] for g in got], [-w[0] for w in want])


def test_top_examples_equal_a_brute_force_scan(gqa_model, tmp_path):
    save = tmp_path / "store"
    lens_cache.export(
        gqa_model, prompts=PROMPTS, save_path=save, hooks=HOOKS, batch_size=3, quiet=True
    )
    store = lens_cache.open(save)
    model = store.models()[0]
    shape = (gqa_model.n_layers, gqa_model.n_heads)
    check_all_heads(store, model, *shape)
    assert len(store.top_examples(model, -1, 0, by="dla", k=5)) == 5

    lens_cache.export(
        gqa_model, prompts=PROMPTS[1:3], save_path=save, hooks=HOOKS, force=True, quiet=True
    )
    check_all_heads(store, model, *shape)

    # about a third of the prompt data goes (the viewer's files count towards the store too)
    removed, _ = prune(save, max_bytes=_bytes(save) - _bytes(save / model / "prompts") // 3)
    assert 0 < len(removed) < len(PROMPTS)
    assert len(store.prompts(model)) == len(PROMPTS) - len(removed)
    check_all_heads(store, model, *shape)


def _bytes(path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_top_examples_errors(gqa_model, tmp_path):
    lens_cache.export(
        gqa_model, prompts=PROMPTS[:2], save_path=tmp_path, hooks=("pattern",), quiet=True
    )
    store = lens_cache.open(tmp_path)
    model = store.models()[0]
    with pytest.raises(ActivationsMissingError, match="head_contributions"):
        store.top_examples(model, 0, 0)
    with pytest.raises(HeadSelectionError, match="by must be one of"):
        store.top_examples(model, 0, 0, by="keys")
    with pytest.raises(HeadSelectionError, match="out of range"):
        store.top_examples(model, 0, 99)


def test_left_out_cells_are_never_candidates():
    from lens_cache.top_examples import dla_candidates, pattern_candidates

    a = np.tril(np.full((1, 3, 3), 0.5, dtype=np.float32))
    found = pattern_candidates(a, np.ones((1, 3), dtype=np.float32))
    assert found["attention"].shape == (1, 3, 3)  # (1,1), (2,1), (2,2): key 0 left out
    assert found["value_weighted"].shape == (1, 6, 3)  # every causal cell
    assert dla_candidates(np.array([[1.0, 2.0, np.nan]], dtype=np.float32)).tolist() == [
        [[2.0, 1.0, -1.0], [1.0, 0.0, -1.0]]
    ]


def test_top_cells_equal_a_stable_sort_with_ties():
    """The selection (k-th value, then order) against a stable descending sort of every cell,
    on coarsely rounded values (many ties), with left-out cells (-inf, NaN) and every k."""
    from lens_cache.top_examples import top_cells

    rng = np.random.default_rng(0)
    scores = np.round(rng.random((3, 9, 9)), 1).astype(np.float32)
    scores[:, :, 0] = -np.inf
    scores[:, 8, 8] = np.nan
    flat = np.where(np.isnan(scores), -np.inf, scores).reshape(3, -1)
    for k in (1, 5, 32, 72, 100):
        got = top_cells(scores, k)
        for head in range(3):
            order = np.argsort(-flat[head], kind="stable")
            order = order[np.isfinite(flat[head][order])][:k]
            want = np.stack([flat[head][order], order // 9, order % 9], axis=-1)
            np.testing.assert_array_equal(got[head], want)
