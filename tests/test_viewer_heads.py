"""The viewer with head contributions, on a real export of both tiny models: the data scripts
hold the stored value norms and DLA, the value-weighted metrics equal the metrics of the
value-weighted pattern computed here, the top-example scripts equal a brute-force scan; and in
Chromium from file://, the value-weighted toggle, the DLA row and grid, the metrics view's DLA
column and the top-examples page show the stored numbers. (Firefox: test_viewer_firefox.py.)"""

import numpy as np
import pytest

from lens_cache.viewer import metrics as M
from lens_cache.viewer import model_slug, read_data_script
from tests.browser import (
    DLA_CELL_POINT,
    DLA_TOKEN_POINT,
    TOP_ROWS,
    Page,
    check_dla_tip,
    check_top_rows,
    check_weighted_tip,
    chromium_point,
    hover_cell,
    wait_head,
)
from tests.helpers import brute_force_top

BY = ("attention", "value_weighted", "dla")


def _data(s, model, *parts):
    root = s["save_path"] / "viewer_data" / model_slug(model)
    return read_data_script(root.joinpath(*parts))


def _decode(desc):
    import base64
    import zlib

    raw = zlib.decompress(base64.b64decode(desc["b64"]))
    return np.frombuffer(raw, dtype={"f4": "<f4", "u1": "u1"}[desc["dtype"]]).reshape(desc["shape"])


def _shares(a, norms):
    """Value-weighted rows as shares, computed here in float64; a row that moves nothing (the
    Llama-like model's BOS is its pad token, whose embedding is zero) stays zero."""
    w = a.astype(np.float64) * norms.astype(np.float64)[:, None, :]
    sums = w.sum(axis=-1, keepdims=True)
    return np.divide(w, sums, out=np.zeros_like(w), where=sums > 0)


def test_prompt_data_holds_the_stored_contributions(heads_store):
    s, store = heads_store, heads_store["store"]
    for model in (s["model"], s["other"]):
        for record in store.prompts(model):
            h = record["hash"]
            heads = _data(s, model, h, "prompt.js")[1]["heads"]
            norms, dla = store.value_norms(model, h), store.head_dla(model, h)
            np.testing.assert_array_equal(_decode(heads["value_norms"]), norms)
            np.testing.assert_array_equal(_decode(heads["dla"]), dla)
            a = store.patterns(model, h)
            for li in range(a.shape[0]):
                want = M.head_metrics(_shares(a[li], norms[li]), record["tokens"])
                for name in ("first", "prev", "diag", "entropy"):
                    np.testing.assert_allclose(heads["metrics"][name][li], want[name], atol=2e-5)
            np.testing.assert_allclose(heads["dla_mean"], np.nanmean(dla, -1), atol=2e-5)
            assert (heads["thumb"] is None) == (record["n_tokens"] <= 48)


def test_top_example_scripts_equal_a_brute_force_scan(heads_store):
    s, store = heads_store, heads_store["store"]
    model = s["other"]  # grouped-query attention
    for layer in (0, 1):
        key, body = _data(s, model, "top", f"L{layer}.js")
        assert key == f"{model_slug(model)}/{layer}"
        for by in BY:
            for head, rows in enumerate(body["by"][by]):
                want = brute_force_top(store, model, layer, head, by, 32)
                assert [(r[0], r[1], r[2]) for r in rows] == [(h, q, k) for _, h, q, k in want]
                np.testing.assert_array_equal([r[3] for r in rows], [-w[0] for w in want])


def test_top_scripts_follow_the_store_after_a_clear_and_a_prune(heads_store, tmp_path):
    """The top-example scripts are rebuilt from the prompts the store holds: a cleared model's
    go, and a prune of every prompt leaves none."""
    import shutil

    from lens_cache.cache import clear_model, prune

    save = tmp_path / "store"
    shutil.copytree(heads_store["save_path"], save)
    model, other = heads_store["model"], heads_store["other"]
    tops = {m: save / "viewer_data" / model_slug(m) / "top" for m in (model, other)}
    clear_model(save, other)
    assert not tops[other].exists()
    assert sorted(p.name for p in tops[model].glob("L*.js")) == ["L0.js", "L1.js"]
    removed, _ = prune(save, max_bytes=1)
    assert len(removed) == 3 and not tops[model].exists()


def test_unchanged_rebuild_reads_no_candidates_and_a_changed_file_redoes_the_merge(
    heads_store, tmp_path, monkeypatch
):
    """The top-example merge reads every prompt's head-contribution file: an unchanged rebuild
    skips it (constant work per prompt), and a file rewritten since redoes it."""
    import os
    import shutil

    from lens_cache.viewer import _heads, write_viewer

    save = tmp_path / "store"
    shutil.copytree(heads_store["save_path"], save)
    top = save / "viewer_data" / model_slug(heads_store["model"]) / "top"
    before = {p.name: p.read_bytes() for p in top.glob("L*.js")}
    reads, read = [], _heads._read_candidates

    def counted(*args):
        reads.append(args)
        return read(*args)

    monkeypatch.setattr(_heads, "_read_candidates", counted)
    assert write_viewer(save, log=lambda _: None)["built"] == 0
    assert reads == []
    heads_file = save / heads_store["model"] / "prompts" / heads_store["long"]
    heads_file = heads_file / "head_contributions.safetensors"
    stat = heads_file.stat()
    os.utime(heads_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # as a rewrite would
    write_viewer(save, log=lambda _: None)
    assert [a[1] for a in reads] == [heads_store["model"]]  # (store, model, prompts)
    assert {p.name: p.read_bytes() for p in top.glob("L*.js")} == before


# ---------------------------------------------------------------- in Chromium


@pytest.fixture
def page(browser, heads_store, artifacts):
    p = Page(browser, heads_store, artifacts)
    yield p
    p.page.close()
    p.check_clean()


def _tip(pg, starts: str) -> str:
    pg.wait_for_function(
        "s => { const t = document.getElementById('tip'); return !t.hidden && "
        "t.textContent.startsWith(s); }",
        arg=starts,
    )
    return pg.locator("#tip").text_content()


@pytest.mark.browser
def test_value_weighted_toggle_and_dla_row(page, heads_store):
    s, store, pg = heads_store, heads_store["store"], page.page
    model, h, layer, head = s["other"], s["hash"], 1, 2
    pattern = store.patterns(model, h, layers=[layer])[0, head]
    norms = store.value_norms(model, h, layers=[layer])[0, head]
    dla = store.head_dla(model, h, layers=[layer])[0, head]
    wait_head(page, model, h, layer, head)
    assert "value-weighted" not in hover_cell(page, 5, 2)
    pg.keyboard.press("v")
    pg.wait_for_selector("button.weighting[aria-pressed='true']")
    for i, j in ((5, 2), (9, 0), (12, 12)):
        check_weighted_tip(hover_cell(page, i, j), pattern, norms, i, j)
    page.shot("head-value-weighted")
    for i in (0, 3, len(s["tokens"]) - 1):
        pg.mouse.move(*chromium_point(pg, DLA_TOKEN_POINT, i))
        check_dla_tip(_tip(pg, f"position {i}:"), s["tokens"], dla, i)
    pg.keyboard.press("v")  # back to attention; the setting is kept across views
    pg.wait_for_selector("button.weighting[aria-pressed='false']")
    assert "value-weighted" not in hover_cell(page, 5, 2)


@pytest.mark.browser
def test_prompt_dla_grid_and_weighted_thumbnails(page, heads_store):
    s, store, pg = heads_store, heads_store["store"], page.page
    model, h = s["model"], s["hash"]
    dla = store.head_dla(model, h)
    page.open(f"#/prompt/{model}/{h}")
    pg.wait_for_selector("canvas.thumb")
    pos = 4
    pg.locator(".tokens .tok").nth(pos).click()
    pg.wait_for_selector(".dla-cell")
    for layer, head in ((0, 0), (1, 3), (0, 2)):
        pg.mouse.move(*chromium_point(pg, DLA_CELL_POINT, layer, head))
        text = _tip(pg, f"L{layer} H{head}, ")
        check_dla_tip(text, s["tokens"], dla[layer, head], pos, prefix=f"L{layer} H{head}, ")
    page.shot("prompt-dla-grid")
    page.open(f"#/prompt/{model}/{s['long']}")  # long: stored value-weighted thumbnails
    pg.wait_for_selector("canvas.thumb")
    before = pg.evaluate("document.querySelector('canvas.thumb').toDataURL()")
    pg.keyboard.press("v")
    pg.wait_for_selector("button.weighting[aria-pressed='true']")
    changed = "b => document.querySelector('canvas.thumb').toDataURL() !== b"
    pg.wait_for_function(changed, arg=before)


@pytest.mark.browser
def test_metrics_view_sorts_by_mean_dla(page, heads_store):
    s, store, pg = heads_store, heads_store["store"], page.page
    model = s["model"]
    per_prompt = [np.nanmean(store.head_dla(model, r["hash"]), -1) for r in store.prompts(model)]
    means = np.mean(per_prompt, 0)
    page.open(f"#/metrics/{model}?sort=dla&dir=desc")
    pg.wait_for_selector(".mtable tbody tr")
    first = pg.locator(".mtable tbody tr").first
    layer, head = int(first.get_attribute("data-layer")), int(first.get_attribute("data-head"))
    assert (layer, head) == np.unravel_index(np.argmax(means), means.shape)
    cols = pg.locator(".mtable thead th").all_text_contents()
    shown = float(first.locator("td").nth(cols.index("DLA")).text_content())
    assert shown == pytest.approx(means[layer, head], abs=6e-6)


@pytest.mark.browser
def test_top_examples_page_lists_the_brute_force_cells_and_opens_them(page, heads_store):
    s, store, pg = heads_store, heads_store["store"], page.page
    model, layer, head = s["other"], 1, 3
    tokens = {r["hash"]: r["tokens"] for r in store.prompts(model)}
    for by in BY:
        page.open(f"#/top/{model}/{layer}/{head}?by={by}")
        pg.wait_for_selector(".top-row")
        want = brute_force_top(store, model, layer, head, by, 32)
        check_top_rows(pg.evaluate(TOP_ROWS), want, tokens.get)
    page.shot("top-examples")
    _, h, q, k = want[0]  # the last ranking, DLA: the query's row is selected
    pg.locator(".top-row").first.click()
    pg.wait_for_selector(".pane[data-draw-ms]")
    assert pg.evaluate("location.hash") == f"#/head/{model}/{h}/{layer}/{head}?q={q}&k={q}"
    pg.wait_for_function(f"document.querySelector('.sel-panel').textContent.includes('query {q}')")
