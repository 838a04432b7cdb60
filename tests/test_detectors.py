"""Head detectors: the built-in targets and scores against TransformerLens's own head_detector
(present in 3.x and 4.x), on tiny real models exported to a store."""

import numpy as np
import pytest
import torch

import lens_cache
from lens_cache import detectors as D
from lens_cache.errors import DetectorError
from lens_cache.viewer import metrics as M

head_detector = pytest.importorskip("transformer_lens.head_detector")

SPAN = " river mill bread lamp glass night"
PROMPTS = [
    "The lighthouse keeper kept two logbooks." + SPAN + SPAN,
    "a b a b c a b c d",
    "Heat rises; the cooler surface sinks, and the heat rises again.",
]
TL_NAMES = {
    "previous_token": "previous_token_head",
    "duplicate_token": "duplicate_token_head",
    "induction": "induction_head",
}


@pytest.mark.parametrize("name", sorted(TL_NAMES))
def test_builtin_targets_equal_transformer_lens(name):
    ids = torch.tensor([[0, 5, 6, 5, 5, 7, 6, 5, 9, 0]])
    theirs = getattr(head_detector, f"get_{TL_NAMES[name]}_detection_pattern")(ids)
    np.testing.assert_array_equal(D.BUILTIN[name](ids[0].tolist()), theirs.numpy().astype(bool))


@pytest.fixture(scope="module", params=["gpt2", "gqa"])
def stored(request, tmp_path_factory):
    """(live model, store, model name): each tiny model exported over PROMPTS, batched."""
    live = request.getfixturevalue(f"{request.param}_model")
    path = tmp_path_factory.mktemp("detect")
    lens_cache.export(live, prompts=PROMPTS, save_path=path, batch_size=2, quiet=True)
    store = lens_cache.open(path)
    return live, store, store.models()[0]


@pytest.mark.parametrize("name", sorted(TL_NAMES))
@pytest.mark.parametrize("exclude", [False, True])
def test_scores_equal_detect_head_on_the_live_model(stored, name, exclude):
    live, store, model = stored
    ours = lens_cache.head_scores(
        store, model, name, exclude_bos=exclude, exclude_current_token=exclude
    )
    theirs = head_detector.detect_head(
        live.model, PROMPTS, TL_NAMES[name], exclude_bos=exclude, exclude_current_token=exclude
    )
    assert ours.shape == tuple(theirs.shape)
    np.testing.assert_allclose(ours, theirs.double().numpy(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", sorted(TL_NAMES))
def test_detect_head_on_a_stored_activation_cache_equals_a_live_run(stored, name):
    """TransformerLens's own detect_head, handed a stored prompt's ActivationCache (without its
    batch axis, as detect_head's own run makes it) instead of running the model, scores every
    head as it does on a live run of the same prompt."""
    live, store, model = stored
    text = PROMPTS[0]
    cache = store.activation_cache(model, text, tl_model=live.model).remove_batch_dim()
    ours = head_detector.detect_head(live.model, text, TL_NAMES[name], cache=cache)
    theirs = head_detector.detect_head(live.model, text, TL_NAMES[name])
    assert bool((theirs >= 0).all())  # every head was scored (-1 marks one left out)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_a_user_function_scores_like_the_builtin(stored):
    _, store, model = stored
    mine = lens_cache.head_scores(store, model, lambda ids: D.induction_target(ids).astype(int))
    np.testing.assert_array_equal(mine, lens_cache.head_scores(store, model, "induction_head"))


def test_bad_detectors_raise_named_errors(stored):
    _, store, model = stored
    with pytest.raises(DetectorError, match="unknown detector 'copying'"):
        lens_cache.head_scores(store, model, "copying")
    with pytest.raises(DetectorError, match="returned shape"):
        lens_cache.head_scores(store, model, lambda ids: np.ones((2, 2)))
    with pytest.raises(DetectorError, match="above the diagonal"):
        lens_cache.head_scores(store, model, lambda ids: np.ones((len(ids), len(ids))))


def test_duplicate_token_metric_on_hand_made_heads():
    tokens = ["<bos>", "a", "b", "a", "c", "a"]
    dup = np.zeros((1, 6, 6), dtype=np.float32)
    dup[0, :, 0] = 1.0  # rows without an earlier duplicate look at BOS
    dup[0, 3] = 0
    dup[0, 3, 1] = 1.0  # row 3 ("a"): all on the earlier "a"
    dup[0, 5] = 0
    dup[0, 5, [1, 3]] = 0.25  # row 5 ("a"): half on the two earlier "a"s
    dup[0, 5, 0] = 0.5
    assert M.duplicate_token(dup, tokens)[0] == pytest.approx(0.75)
    assert np.isnan(M.duplicate_token(dup, ["<bos>", "x", "y", "z", "u", "v"])[0])
