"""Kinds that read the same dense pattern, asked together: `head_metrics` (measured on the host)
and `pattern_topk` (compacted on the device), with no dense pattern stored. Each must store what
it stores when asked alone (each alone is checked against an independent reference in
tests/test_head_metrics.py and tests/test_topk.py), in one pass and in layer groups."""

import numpy as np
import pytest

import lens_cache
from lens_cache.layout import NPZ_NAME
from lens_cache.prompts import prompt_hash

PROMPTS = ["a b a b c a b a b c", "The keeper counted ships, then birds, then ships again."]


def _export(model, path, hooks, **kw):
    # one prompt per pass in every export: a batch sums in another order (~1e-7), which could
    # reorder a near-tie among a row's strongest keys
    kw = {"batch_size": 1, "index_html": False, **kw}
    lens_cache.export(model, prompts=PROMPTS, save_path=path, hooks=hooks, quiet=True, **kw)
    return lens_cache.open(path)


@pytest.mark.parametrize("max_batch_mb", [1024, 0.001], ids=["one pass", "layer groups"])
def test_metrics_and_compact_pattern_together(gpt2_model, tmp_path, max_batch_mb):
    name = gpt2_model.name
    hooks = ["head_metrics", "pattern_topk"]
    both = _export(gpt2_model, tmp_path / "both", hooks, max_batch_mb=max_batch_mb)
    metrics = _export(gpt2_model, tmp_path / "m", ["head_metrics"])
    compact = _export(gpt2_model, tmp_path / "c", ["pattern_topk"])
    for text in PROMPTS:
        got, alone = both.prompt_head_metrics(name, text), metrics.prompt_head_metrics(name, text)
        assert sorted(got) == sorted(alone) == list(range(gpt2_model.n_layers))
        for layer in got:
            for metric, values in alone[layer].items():
                np.testing.assert_allclose(got[layer][metric], values, rtol=1e-6, atol=1e-7)
        got, alone = both.pattern_topk(name, text), compact.pattern_topk(name, text)
        for field in ("keys", "values", "rest", "overview_max", "overview_sum"):
            np.testing.assert_allclose(got[field], alone[field], rtol=0, atol=1e-6)
        assert not (tmp_path / "both" / name / "prompts" / prompt_hash(text) / NPZ_NAME).exists()
