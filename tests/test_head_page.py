"""The head page across prompts (#/top/<model>/<layer>/<head>) in headless Chromium: the
histogram, top prompts and quantile samples of a head's per-prompt score, checked against the
per-prompt files read here, and the same from a store exported in another order."""

import json

import numpy as np
import pytest

import lens_cache
from tests.browser import Page
from tests.helpers import REPO, read_safetensors, safetensors_metadata

LAYER, HEAD, N = 1, 2, 13


def _texts() -> list[str]:
    with open(REPO / "data" / "prompts.jsonl", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f if line.strip()]
    return sorted(texts, key=len)[:N]


@pytest.fixture(scope="module")
def stores(gpt2_model, tmp_path_factory) -> list:
    """The same prompts exported in two orders, with head_metrics and head_contributions."""
    out = []
    for name, texts in (("forward", _texts()), ("backward", _texts()[::-1])):
        path = tmp_path_factory.mktemp(name)
        hooks = ["head_metrics", "head_contributions"]
        lens_cache.export(gpt2_model, prompts=texts, save_path=path, hooks=hooks, quiet=True)
        out.append(path)
    return out


def _scores(save, model: str, score: str) -> dict[str, float]:
    """hash -> the head's score, from the prompt folders (rounded as the viewer rounds)."""
    found = {}
    for folder in (save / model / "prompts").iterdir():
        if score == "dla":
            dla = read_safetensors(folder / "head_contributions.safetensors")
            row = dla[f"blocks.{LAYER}.attn.dla"][HEAD].double().numpy()
            value = float(np.mean(row[~np.isnan(row)]))
        else:
            path = folder / "head_metrics.safetensors"
            names = json.loads(safetensors_metadata(path)["metrics"])
            stored = read_safetensors(path)
            k = stored["layers"].tolist().index(LAYER)
            value = float(stored["metrics"][k, HEAD, names.index(score)])
        if not np.isnan(value):
            found[folder.name] = round(value, 5)
    return found


def _shown(browser, save, model: str, score: str, artifacts) -> dict:
    page = Page(browser, {"save_path": save}, artifacts)
    page.open(f"#/top/{model}/{LAYER}/{HEAD}?score={score}")
    pg = page.page
    pg.wait_for_selector(".dist-sample")

    def rows(sel):
        return pg.eval_on_selector_all(sel, "rs => rs.map(r => [r.dataset.hash, +r.dataset.value])")

    groups = pg.eval_on_selector_all(
        ".dist-q",
        "qs => qs.map(q => [+q.dataset.lo, +q.dataset.hi, [...q.querySelectorAll('.dist-sample')]"
        ".map(r => [r.dataset.hash, +r.dataset.value])])",
    )
    counts = pg.eval_on_selector_all(".hist-bar", "bs => bs.map(b => +b.dataset.count)")
    shown = {"top": rows(".dist-top"), "groups": groups, "counts": counts}
    page.shot(f"head-page-{score}")
    pg.close()
    page.check_clean()
    return shown


@pytest.mark.browser
@pytest.mark.parametrize("score", ["prev", "dla"])
def test_head_page_shows_the_stored_scores(browser, stores, gpt2_model, artifacts, score):
    model = gpt2_model.name
    want = _scores(stores[0], model, score)
    ranked = sorted(want.items(), key=lambda kv: (kv[1], kv[0]))  # by value, then hash
    shown = _shown(browser, stores[0], model, score, artifacts)
    assert sum(shown["counts"]) == len(want) == N
    best = sorted(want.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    assert [h for h, _ in shown["top"]] == [h for h, _ in best]
    np.testing.assert_allclose([v for _, v in shown["top"]], [v for _, v in best], atol=1e-9)
    cuts = [round(k * N / 5) for k in range(6)]
    assert len(shown["groups"]) == 5
    for (lo, hi, samples), a, b in zip(shown["groups"], cuts[:-1], cuts[1:], strict=True):
        interval = ranked[a:b]
        assert lo == interval[0][1] and hi == interval[-1][1]
        assert [h for h, _ in samples] == [h for h, _ in interval]  # 2-3 prompts: every one
        assert all(lo <= v <= hi for _, v in samples)
    assert _shown(browser, stores[1], model, score, artifacts) == shown


def test_quantile_samples_are_deterministic_and_inside_their_interval():
    """103 prompts (ties included) in two orders: the same samples, five per interval, each
    within its interval's range, the intervals covering the ranks in equal shares."""
    from lens_cache.viewer._corpus import head_summary

    rng = np.random.default_rng(5)
    values = np.round(rng.normal(size=103), 1)  # one decimal: many ties, broken by hash
    values[[3, 50]] = np.nan  # undefined on two prompts
    hashes = np.array([f"h{i:03d}" for i in range(103)], dtype=object)
    one = head_summary(values, hashes)
    flip = np.arange(103)[::-1]
    assert head_summary(values[flip], hashes[flip]) == one
    ranked = sorted((v, h) for v, h in zip(values, hashes, strict=True) if not np.isnan(v))
    sizes = [20, 20, 21, 20, 20]  # round(k * 101 / 5)
    start = 0
    for q, size in zip(one["quantiles"], sizes, strict=True):
        interval = ranked[start : start + size]
        assert (q["lo"], q["hi"]) == (interval[0][0], interval[-1][0])
        assert len(q["samples"]) == 5
        assert all(pair in [[h, v] for v, h in interval] for pair in q["samples"])
        start += size
    assert sum(one["counts"]) == 101
    assert one["top"] == [[h, v] for v, h in sorted(ranked, key=lambda p: (-p[0], p[1]))[:10]]
