"""Per-head metrics on hand-made patterns whose values are known exactly."""

import numpy as np
import pytest

from lens_cache.viewer import metrics as M


def one_hot_rows(targets: list[int]) -> np.ndarray:
    """A [1, T, T] head whose row i puts all its attention on key targets[i]."""
    t = len(targets)
    out = np.zeros((1, t, t), dtype=np.float32)
    out[0, np.arange(t), targets] = 1.0
    return out


def test_uniform_head_matches_closed_forms():
    t = 6
    u = M.uniform_patterns(t, n_heads=2).astype(np.float32)
    inv = 1.0 / np.arange(1, t + 1)
    np.testing.assert_allclose(M.entropy(u), np.mean(np.log(np.arange(1, t + 1))))
    np.testing.assert_allclose(M.entropy(u, normalize=True), 1.0)
    np.testing.assert_allclose(M.first_token(u), inv.mean())
    np.testing.assert_allclose(M.diagonal(u), inv.mean())
    np.testing.assert_allclose(M.previous_token(u), inv[1:].mean())
    np.testing.assert_allclose(M.max_attention(u), inv.mean())
    assert M.entropy(u).shape == (2,)


def test_one_hot_heads_score_one_on_their_metric():
    t = 5
    first = one_hot_rows([0] * t)
    prev = one_hot_rows([0] + list(range(t - 1)))
    diag = one_hot_rows(list(range(t)))
    assert M.first_token(first)[0] == 1.0
    assert M.previous_token(prev)[0] == 1.0
    assert M.diagonal(diag)[0] == 1.0
    for head in (first, prev, diag):
        assert M.entropy(head)[0] == 0.0
        assert M.max_attention(head)[0] == 1.0
    assert M.previous_token(first)[0] == pytest.approx(0.25)  # only row 1's prev is BOS


def test_induction_exact_on_repeated_span():
    span = [11, 12, 13, 14]
    tokens = [0, *span, *span]  # BOS, then the span twice
    t = len(tokens)
    targets = [0] * t
    for i in range(5, t):  # second copy: attend to the token after the first occurrence
        targets[i] = i - len(span) + 1
    head = one_hot_rows(targets)
    assert M.induction(head, tokens)[0] == pytest.approx(1.0)
    # a previous-token head scores ~0 on the same prompt
    prev = one_hot_rows([0] + list(range(t - 1)))
    assert M.induction(prev, tokens)[0] == pytest.approx(0.0)


def test_induction_rows_are_the_second_copy_and_skip_adjacent_repeats():
    mask = M.induction_targets(["<bos>", "a", "b", "a", "b"])
    assert mask.sum() == 2
    assert mask[3, 2] and mask[4, 3]
    # "x x": the target j+1 == i would be the query itself, so no induction row
    assert not M.induction_targets(["x", "x"]).any()


def test_induction_is_nan_without_a_repeat():
    head = M.uniform_patterns(4)
    assert np.isnan(M.induction(head, ["<bos>", "a", "b", "c"])).all()


def test_tokens_as_ids_or_strings_agree():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 9, 9))
    logits = np.where(np.tril(np.ones((9, 9), bool)), logits, -np.inf)
    pat = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    ids = np.array([1, 5, 6, 7, 5, 6, 7, 5, 6])
    strs = [f"t{i}" for i in ids]
    np.testing.assert_allclose(M.induction(pat, ids), M.induction(pat, strs))


def test_float32_input_is_computed_in_float64():
    pat = M.uniform_patterns(7, 3).astype(np.float32)
    out = M.head_metrics(pat, list(range(7)))
    assert set(out) == set(M.METRIC_NAMES)
    assert all(v.dtype == np.float64 and v.shape == (3,) for v in out.values())


def test_stored_layout_with_batch_axis_is_accepted():
    pat = M.uniform_patterns(4, 2)[None]
    assert M.diagonal(pat).shape == (2,)


def test_bad_shapes_and_token_counts_raise_clear_errors():
    with pytest.raises(ValueError, match=r"shape \[n_heads, T, T\]"):
        M.entropy(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="got 2 tokens for patterns over 3 positions"):
        M.induction(M.uniform_patterns(3), ["a", "b"])


def test_one_token_prompt_gives_nan_where_undefined():
    pat = np.ones((2, 1, 1))
    assert np.isnan(M.previous_token(pat)).all()
    assert np.isnan(M.entropy(pat, normalize=True)).all()
    assert (M.first_token(pat) == 1).all()


def test_baseline_is_uniform_attention():
    tokens = ["<bos>", "a", "b", "a", "b"]
    base = M.baseline_metrics(tokens)
    assert base["first"] == pytest.approx(np.mean(1 / np.arange(1, 6)))
    assert base["induction"] == pytest.approx(np.mean([1 / 4, 1 / 5]))


def test_labels_are_relative_to_the_baseline():
    t = 5
    tokens = list(range(t))
    heads = np.concatenate([one_hot_rows([0] * t), M.uniform_patterns(t)[None, 0]])
    labels = M.label_heads(M.head_metrics(heads, tokens), M.baseline_metrics(tokens))
    assert labels[0] == ["first-token"]
    # uniform attention scores first-token 0.46 on 5 tokens: above a naive 0.3 threshold,
    # but exactly the baseline, so it gets no label
    assert labels[1] == []


def test_labels_skip_nan_scores():
    metrics = {name: np.array([np.nan]) for name in M.SCORE_NAMES}
    assert M.label_heads(metrics, {name: 0.1 for name in M.SCORE_NAMES}) == [[]]
